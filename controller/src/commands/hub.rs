//! `mcsd hub init`, `mcsd join --hub` and `mcsd leave --hub`: a hub ClusterSet named by
//! kubeconfig contexts (`core/hub.rs` says what lives on the hub).
//!
//! ```text
//!  mcsd hub init ctx-hub            on the hub: manifests/hub.yaml
//!  mcsd join --hub ctx-hub ctx-a    on the hub: namespace mcsd-member-<a> (labelled with a's id),
//!                                   ServiceAccount mcsd-member there, bound to write that
//!                                   namespace and read the hub's records, and a Role
//!                                   mcsd-member-renew: `create` on its own serviceaccounts/token
//!                                   in a: a Role letting a's mcsd patch Secret mcsd-system/hub, and
//!                                   that Secret: a kubeconfig for the hub with a TokenRequest token,
//!                                   its expiry and lifetime (a's mcsd renews it halfway)
//! ```
//!
//! The same checks as `mcsd join` first (every member reachable, mcsd installed, ids set and
//! distinct, one ClusterSet), and the hub initialised; then server-side applies, and a Secret
//! whose token is good for more than half its lifetime is left alone, so a second run writes
//! nothing. `mcsd leave --hub` deletes the Secret and the member's namespace on the hub (its
//! records, its identity and every token issued for it go with it).

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};
use k8s_openapi::{
    api::{
        core::v1::{Namespace, ResourceQuota, Secret, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    jiff::Timestamp,
};
use kube::{Api, Client, ResourceExt as _, config::Kubeconfig};
use mcsd_crds::ClusterId;
use serde_json::{Value, json};

use super::join::{self, Change, JoinOptions, Member};
use crate::{
    cluster::token::request_token,
    core::{
        exchange::DEFAULT_NAMESPACE,
        hub::{
            KEY_KUBECONFIG, MEMBER_SERVICE_ACCOUNT, READ_ROLE, SECRET, WRITE_ROLE, declared_ranges,
            member_namespace, member_objects,
        },
        peer_secret::{ANNOTATION_SERVICE_ACCOUNT, ANNOTATION_TOKEN_EXPIRES, ANNOTATION_TOKEN_LIFETIME},
    },
};

/// The Role on the hub letting a member mint its own tokens.
const RENEW_ROLE: &str = "mcsd-member-renew";
/// The Role in a member letting its mcsd write the renewed token into Secret `hub`.
const SECRET_ROLE: &str = "mcsd-renew-hub";

/// The hub as a context reaches it.
struct Hub {
    context: String,
    client: Client,
    /// The address members are given.
    server: String,
    ca_pem: Option<String>,
}

/// Connects to the hub's `context`; unless `initialising`, checks that `mcsd hub init` has run.
async fn connect_hub(
    kubeconfig: &Kubeconfig,
    context: &str,
    server: Option<&str>,
    initialising: bool,
) -> anyhow::Result<Hub> {
    let (client, url) = join::client_for(kubeconfig, context).await?;
    let ca_pem = join::ca_of(kubeconfig, context)?;
    let server = server.map_or(url.clone(), str::to_string);
    if let Err(e) = join::reachable_as_handed_over(&server, ca_pem.as_deref()).await {
        bail!(
            "context {context}: the hub's address members would be given, {server}, does not answer with its CA from here: {e}; give one that does with --server {context}=https://HOST:PORT"
        );
    }
    if !initialising {
        let roles: Api<ClusterRole> = Api::all(client.clone());
        for role in [READ_ROLE, WRITE_ROLE] {
            let present = roles
                .get_opt(role)
                .await
                .with_context(|| format!("context {context}: reading ClusterRole {role} on the hub"))?
                .is_some();
            if !present {
                bail!(
                    "context {context} has no ClusterRole {role}: it is not a hub yet; run `mcsd hub init {context}` first"
                );
            }
        }
    }
    Ok(Hub {
        context: context.to_string(),
        client,
        server,
        ca_pem,
    })
}

/// `mcsd hub init CONTEXT`: installs what a hub needs. Returns the lines to print.
pub async fn init(kubeconfig: Option<&Path>, context: &str) -> anyhow::Result<Vec<String>> {
    let kubeconfig = join::load_kubeconfig(kubeconfig)?;
    let hub = connect_hub(&kubeconfig, context, None, true).await?;
    crate::cluster::hub::install(&hub.client)
        .await
        .with_context(|| format!("context {context}: installing manifests/hub.yaml"))?;
    Ok(vec![format!(
        "{context}: initialised as a hub (ClusterRoles {WRITE_ROLE}, {READ_ROLE}); enrol members with `mcsd join --hub {context} MEMBER...`"
    )])
}

/// The Role and RoleBinding on the hub that let member `id` mint tokens for its own identity.
fn renew_objects(id: &ClusterId) -> (Role, RoleBinding) {
    let labels = json!({"app.kubernetes.io/name": "mcsd", crate::core::hub::LABEL_MEMBER: id.as_str()});
    join::one_object_role(
        RENEW_ROLE,
        &member_namespace(id),
        &labels,
        ("serviceaccounts/token", MEMBER_SERVICE_ACCOUNT, &["create"]),
        MEMBER_SERVICE_ACCOUNT,
    )
}

/// The Role and RoleBinding in a member that let its mcsd patch Secret `hub` (nothing more).
fn secret_objects() -> (Role, RoleBinding) {
    join::one_object_role(
        SECRET_ROLE,
        DEFAULT_NAMESPACE,
        &json!({"app.kubernetes.io/name": "mcsd"}),
        ("secrets", SECRET, &["get", "patch"]),
        "mcsd",
    )
}

/// Member `member`'s Secret `hub`: a kubeconfig for `hub` as its identity there, with the
/// annotations that ask its mcsd to renew the token.
fn hub_secret(
    hub: &Hub,
    member: &Member,
    token: &str,
    expires: Option<Timestamp>,
    lifetime: Duration,
) -> Secret {
    let ns = member_namespace(&member.id);
    let user = format!("system:serviceaccount:{ns}:{MEMBER_SERVICE_ACCOUNT}");
    let kubeconfig = join::kubeconfig_text("hub", &hub.server, hub.ca_pem.as_deref(), &user, Some(token));
    let mut annotations = json!({
        ANNOTATION_SERVICE_ACCOUNT: format!("{ns}/{MEMBER_SERVICE_ACCOUNT}"),
        ANNOTATION_TOKEN_LIFETIME: lifetime.as_secs().to_string(),
    });
    if let Some(at) = expires {
        annotations[ANNOTATION_TOKEN_EXPIRES] = json!(at.to_string());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": DEFAULT_NAMESPACE,
                     "labels": {"app.kubernetes.io/name": "mcsd"}, "annotations": annotations},
        "stringData": {KEY_KUBECONFIG: kubeconfig},
    }))
    .expect("a Secret")
}

/// Whether member `member`'s Secret in place reaches `hub` as its identity with a token good for
/// more than half of `ttl`.
fn still_good(current: &Secret, hub: &Hub, member: &Member, ttl: Duration) -> bool {
    let annotations = current.annotations();
    let fresh = join::token_fresh(current, ttl);
    let account = format!("{}/{MEMBER_SERVICE_ACCOUNT}", member_namespace(&member.id));
    let same_account = annotations.get(ANNOTATION_SERVICE_ACCOUNT) == Some(&account)
        && annotations.get(ANNOTATION_TOKEN_LIFETIME) == Some(&ttl.as_secs().to_string());
    let same_server = current
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_KUBECONFIG))
        .and_then(|b| Kubeconfig::from_yaml(&String::from_utf8_lossy(&b.0)).ok())
        .and_then(|kc| {
            kc.clusters
                .first()
                .and_then(|c| c.cluster.as_ref())
                .and_then(|c| c.server.clone())
        })
        .is_some_and(|s| s == hub.server);
    fresh && same_account && same_server
}

/// Enrols `member` in `hub`; returns the lines to print.
async fn join_member(
    hub: &Hub,
    member: &Member,
    ranges: &[ipnet::IpNet],
    options: &JoinOptions,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let (dry, hc, hctx) = (options.dry_run, hub.client.clone(), hub.context.as_str());
    let ns = member_namespace(&member.id);
    let mut new_account = false;
    for object in member_objects(&member.id, ranges) {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let change = match kind.as_str() {
            "Namespace" => apply_json(Api::<Namespace>::all(hc.clone()), object, dry, &mut out, hctx).await?,
            "ServiceAccount" => {
                apply_json(
                    Api::<ServiceAccount>::namespaced(hc.clone(), &ns),
                    object,
                    dry,
                    &mut out,
                    hctx,
                )
                .await?
            }
            "RoleBinding" => {
                apply_json(
                    Api::<RoleBinding>::namespaced(hc.clone(), &ns),
                    object,
                    dry,
                    &mut out,
                    hctx,
                )
                .await?
            }
            "ClusterRoleBinding" => {
                apply_json(
                    Api::<ClusterRoleBinding>::all(hc.clone()),
                    object,
                    dry,
                    &mut out,
                    hctx,
                )
                .await?
            }
            "ResourceQuota" => {
                apply_json(
                    Api::<ResourceQuota>::namespaced(hc.clone(), &ns),
                    object,
                    dry,
                    &mut out,
                    hctx,
                )
                .await?
            }
            other => bail!("a member's hub objects hold no {other}"),
        };
        // A ServiceAccount made anew revokes every token of the one before it by that name.
        new_account |= kind == "ServiceAccount" && matches!(change, Change::Created | Change::WouldCreate);
    }
    let (role, binding) = renew_objects(&member.id);
    join::apply(Api::namespaced(hc.clone(), &ns), role, dry, &mut out, hctx).await?;
    join::apply(Api::namespaced(hc.clone(), &ns), binding, dry, &mut out, hctx).await?;

    let (mc, mctx) = (member.client.clone(), member.context.as_str());
    let (role, binding) = secret_objects();
    join::apply(
        Api::namespaced(mc.clone(), DEFAULT_NAMESPACE),
        role,
        dry,
        &mut out,
        mctx,
    )
    .await?;
    join::apply(
        Api::namespaced(mc.clone(), DEFAULT_NAMESPACE),
        binding,
        dry,
        &mut out,
        mctx,
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(mc, DEFAULT_NAMESPACE);
    if !new_account
        && let Some(current) = secrets
            .get_opt(SECRET)
            .await
            .with_context(|| format!("context {mctx}: reading Secret {DEFAULT_NAMESPACE}/{SECRET}"))?
        && still_good(&current, hub, member, options.token_ttl)
    {
        out.push(format!("{mctx}: Secret {DEFAULT_NAMESPACE}/{SECRET} unchanged"));
        return Ok(out);
    }
    let (token, expires, lifetime) = if dry {
        (String::new(), None, options.token_ttl)
    } else {
        let accounts: Api<ServiceAccount> = Api::namespaced(hc, &ns);
        let minted = request_token(&accounts, MEMBER_SERVICE_ACCOUNT, options.token_ttl)
            .await
            .map_err(|e| {
                anyhow::anyhow!("context {hctx}: minting a token for {ns}/{MEMBER_SERVICE_ACCOUNT}: {e}")
            })?;
        (minted.token, Some(minted.expires), minted.lifetime)
    };
    let secret = hub_secret(hub, member, &token, expires, lifetime);
    join::apply(secrets, secret, dry, &mut out, mctx).await?;
    Ok(out)
}

/// [`join::apply`] of `object`, one of `core/hub.rs`'s objects as JSON, as a `K`.
async fn apply_json<K>(
    api: Api<K>,
    object: Value,
    dry: bool,
    out: &mut Vec<String>,
    context: &str,
) -> anyhow::Result<Change>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    join::apply(api, serde_json::from_value(object)?, dry, out, context).await
}

/// `mcsd join --hub HUB MEMBER...`: checks the hub and every member, then enrols each member
/// (`ranges`: per member context, the only ranges its endpoint addresses may be in). Returns the
/// lines to print.
pub async fn join(
    kubeconfig: Option<&Path>,
    hub_context: &str,
    contexts: &[String],
    servers: &std::collections::BTreeMap<String, String>,
    ranges: &std::collections::BTreeMap<String, Vec<ipnet::IpNet>>,
    options: &JoinOptions,
) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        !contexts.iter().any(|c| c == hub_context),
        "context {hub_context} is the hub: name the members after it"
    );
    let members = join::survey(kubeconfig, contexts, servers).await?;
    for member in &members {
        let namespace = member_namespace(&member.id);
        anyhow::ensure!(
            namespace.len() <= 63,
            "context {}: cluster id {} is {} characters long, and its hub namespace {namespace} would be longer than the 63 a namespace may have: a hub member's id may have at most {}; give the cluster a shorter id (ClusterProperty cluster.clusterset.k8s.io) or keep it in the mesh",
            member.context,
            member.id,
            member.id.as_str().len(),
            63 - crate::core::hub::MEMBER_NAMESPACE_PREFIX.len()
        );
    }
    let config = join::load_kubeconfig(kubeconfig)?;
    let hub = connect_hub(
        &config,
        hub_context,
        servers.get(hub_context).map(String::as_str),
        false,
    )
    .await?;
    let mut out = Vec::new();
    for member in &members {
        let member_ranges = match ranges.get(&member.context) {
            Some(given) => given.clone(),
            None => kept_ranges(&hub, member, &mut out).await?,
        };
        out.extend(join_member(&hub, member, &member_ranges, options).await?);
        if !options.dry_run {
            out.push(format!(
                "joined: {} ({}) exchanges its records through the hub ({hub_context}), in namespace {}",
                member.id,
                member.context,
                member_namespace(&member.id)
            ));
        }
    }
    Ok(out)
}

/// The ranges already declared on the hub for `member`, which a join without `--ranges` for it
/// keeps (so enrolling again never widens what a member may announce); none for a new member.
async fn kept_ranges(hub: &Hub, member: &Member, out: &mut Vec<String>) -> anyhow::Result<Vec<ipnet::IpNet>> {
    let namespace = member_namespace(&member.id);
    let current = Api::<Namespace>::all(hub.client.clone())
        .get_opt(&namespace)
        .await
        .with_context(|| format!("context {}: reading Namespace {namespace}", hub.context))?;
    let Some(current) = current else {
        return Ok(Vec::new());
    };
    let (ranges, error) = declared_ranges(&current.metadata.annotations.unwrap_or_default());
    if let Some(error) = error {
        anyhow::bail!(
            "context {}: Namespace {namespace}: {error}; name {}'s ranges with --ranges {}=CIDR,...",
            hub.context,
            member.id,
            member.context
        );
    }
    if !ranges.is_empty() {
        let text: Vec<String> = ranges.iter().map(ToString::to_string).collect();
        out.push(format!(
            "{}: keeps the ranges declared on the hub: {} (--ranges {}=CIDR,... to change them)",
            member.context,
            text.join(","),
            member.context
        ));
    }
    Ok(ranges)
}

/// `mcsd leave --hub HUB MEMBER...`: each member's Secret `hub` and its Role go, and its namespace
/// and read binding on the hub (its records, identity and every token issued for it with them).
pub async fn leave(
    kubeconfig: Option<&Path>,
    hub_context: &str,
    contexts: &[String],
) -> anyhow::Result<Vec<String>> {
    let config = join::load_kubeconfig(kubeconfig)?;
    let (hub, _) = join::client_for(&config, hub_context).await?;
    let mut out = Vec::new();
    for context in contexts {
        let member = join::connect_to_leave(&config, context).await?;
        let mc = member.client.clone();
        join::delete(
            Api::<Secret>::namespaced(mc.clone(), DEFAULT_NAMESPACE),
            SECRET,
            context,
            &mut out,
        )
        .await?;
        join::delete(
            Api::<RoleBinding>::namespaced(mc.clone(), DEFAULT_NAMESPACE),
            SECRET_ROLE,
            context,
            &mut out,
        )
        .await?;
        join::delete(
            Api::<Role>::namespaced(mc, DEFAULT_NAMESPACE),
            SECRET_ROLE,
            context,
            &mut out,
        )
        .await?;
        let read = format!("{READ_ROLE}-{}", member.id);
        join::delete(
            Api::<ClusterRoleBinding>::all(hub.clone()),
            &read,
            hub_context,
            &mut out,
        )
        .await?;
        join::delete(
            Api::<Namespace>::all(hub.clone()),
            &member_namespace(&member.id),
            hub_context,
            &mut out,
        )
        .await?;
        out.push(format!(
            "left: {} ({}) no longer exchanges its records through the hub ({hub_context})",
            member.id, member.context
        ));
    }
    Ok(out)
}
