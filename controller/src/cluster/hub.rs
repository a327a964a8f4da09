//! Setting a hub up and enrolling members in it (`core/hub.rs` says what is written): used by
//! `mcsd sandbox --hub` and by `mcsd hub init` / `mcsd join --hub`.

use anyhow::Context as _;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use mcsd_crds::ClusterId;
use serde::Deserialize as _;
use serde_json::Value;

use crate::core::hub::{MANIFEST, member_objects};

/// The field manager of what is written on the hub.
const MANAGER: &str = "mcsd-hub";

/// The resource of `object` (its apiVersion and kind), for the kinds a hub holds.
fn resource_of(object: &Value) -> anyhow::Result<ApiResource> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let plural = match kind {
        "Namespace" => "namespaces",
        "ServiceAccount" => "serviceaccounts",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "ResourceQuota" => "resourcequotas",
        "ValidatingAdmissionPolicy" => "validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding" => "validatingadmissionpolicybindings",
        other => anyhow::bail!("a hub holds no {other} objects"),
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Ok(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

/// Server-side applies `object` on `client`'s API server.
pub async fn apply(client: &Client, object: &Value) -> anyhow::Result<()> {
    let resource = resource_of(object)?;
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object))
        .await
        .with_context(|| format!("applying {} {name}", resource.kind))?;
    Ok(())
}

/// Installs what the hub needs (`manifests/hub.yaml`).
pub async fn install(hub: &Client) -> anyhow::Result<()> {
    for doc in serde_yaml::Deserializer::from_str(MANIFEST) {
        let object = Value::deserialize(doc)?;
        if !object.is_null() {
            apply(hub, &object).await?;
        }
    }
    Ok(())
}

/// Enrols member `cluster` in the hub: its namespace, identity and rights.
pub async fn enrol(hub: &Client, cluster: &ClusterId, ranges: &[ipnet::IpNet]) -> anyhow::Result<()> {
    for object in member_objects(cluster, ranges) {
        apply(hub, &object).await?;
    }
    Ok(())
}
