//! Applying manifests (YAML or JSON objects of the kinds mcsd installs) with server-side apply:
//! the sandbox's installation of `manifests/`, and the hub's (`mcsd hub init`, enrolment).

use anyhow::Context as _;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde::Deserialize as _;
use serde_json::Value;

/// The resource of `object` (its apiVersion and kind), for the kinds mcsd installs.
fn resource_of(object: &Value) -> anyhow::Result<ApiResource> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let plural = match kind {
        "Namespace" => "namespaces",
        "ServiceAccount" => "serviceaccounts",
        "Secret" => "secrets",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "ResourceQuota" => "resourcequotas",
        "ValidatingAdmissionPolicy" => "validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding" => "validatingadmissionpolicybindings",
        other => anyhow::bail!("mcsd installs no {other} objects"),
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Ok(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

/// Server-side applies `object` on `client`'s API server as field manager `manager`.
pub async fn apply(client: &Client, manager: &str, object: &Value) -> anyhow::Result<()> {
    let resource = resource_of(object)?;
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.patch(name, &PatchParams::apply(manager).force(), &Patch::Apply(object))
        .await
        .with_context(|| format!("applying {} {name}", resource.kind))?;
    Ok(())
}

/// [`apply`] of every document of a multi-document YAML manifest, in order.
pub async fn apply_all(client: &Client, manager: &str, text: &str) -> anyhow::Result<()> {
    for doc in serde_yaml::Deserializer::from_str(text) {
        let object = Value::deserialize(doc)?;
        if !object.is_null() {
            apply(client, manager, &object).await?;
        }
    }
    Ok(())
}
