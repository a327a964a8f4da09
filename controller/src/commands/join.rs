//! `mcsd join` and `mcsd leave`: connecting clusters named by kubeconfig contexts.
//!
//! ```text
//!  mcsd join ctx-a ctx-b      for each ordered pair (exporter E, importer I):
//!    in E: ServiceAccount mcsd-system/mcsd-peer-<I>, bound to the Role mcsd-peer (read the
//!          exchange records) and the ClusterRole mcsd-peer-identity (read the two ClusterProperties),
//!          and a Role mcsd-peer-<I>-renew: `create` on its own `serviceaccounts/token`, nothing else
//!    in I: a Role mcsd-renew-peer-<E> letting I's mcsd patch that one Secret (nothing more), and
//!          Secret mcsd-system/peer-<E> (label mcsd.io/peer): E's id and a kubeconfig holding a
//!          TokenRequest token of that ServiceAccount, with its expiry and lifetime; I's mcsd renews
//!          it halfway through its life (`daemon/peers/renew.rs`)
//! ```
//!
//! Every context is checked before anything is written ([`survey`]): reachable, mcsd installed,
//! cluster ids set and distinct, one ClusterSet, clocks that agree. Writes are server-side
//! applies, and a Secret whose token is still good for more than half its lifetime is left as it
//! is, so a second run writes nothing. `mcsd leave` deletes the Secrets and the ServiceAccounts:
//! every token issued for them stops working at once.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Context as _, bail};
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Secret, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use mcsd_crds::{
    ClusterId,
    about::v1beta1::ClusterProperty,
    mcs::v1beta1::{ServiceExport, ServiceImport},
    names::{PROPERTY_CLUSTER_ID, PROPERTY_CLUSTERSET, mcsd},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use crate::{
    cluster::{
        preflight::{self, Access, Hints},
        token::{Minted, request_token},
    },
    core::{
        exchange::DEFAULT_NAMESPACE,
        peer_secret::{
            self, ANNOTATION_SERVICE_ACCOUNT, ANNOTATION_TOKEN_EXPIRES, ANNOTATION_TOKEN_LIFETIME,
            KEY_KUBECONFIG, KEY_NAME,
        },
    },
};

/// The field manager of what `mcsd join` writes.
const MANAGER: &str = "mcsd-join";
/// The Role and ClusterRole `manifests/rbac.yaml` installs for peers.
const PEER_ROLE: &str = "mcsd-peer";
const PEER_IDENTITY_ROLE: &str = "mcsd-peer-identity";
/// The largest clock difference between two clusters `mcsd join` accepts: tokens carry expiry
/// times, and a peer's clock decides when they stop working.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// The kubeconfig as kubectl finds it: `--kubeconfig`, else `KUBECONFIG` (several files merged),
/// else `~/.kube/config`.
pub fn load_kubeconfig(explicit: Option<&Path>) -> anyhow::Result<Kubeconfig> {
    match explicit {
        Some(path) => Kubeconfig::read_from(path).with_context(|| {
            format!(
                "cannot read kubeconfig {} (give the file with every context to join)",
                path.display()
            )
        }),
        None => Kubeconfig::read().context(
            "cannot read the kubeconfig from KUBECONFIG or ~/.kube/config: give one with --kubeconfig FILE",
        ),
    }
}

/// One cluster, by its context, as `mcsd join` found it.
#[allow(missing_debug_implementations)]
pub struct Member {
    /// The context's name.
    pub context: String,
    /// A client with the context's credentials.
    pub client: Client,
    /// The API server's address as this machine reaches it.
    pub url: String,
    /// The address written into the other clusters' kubeconfigs (`--server`, else `url`).
    pub server: String,
    /// The API server's CA, PEM (none: the system's roots).
    pub ca_pem: Option<String>,
    /// The cluster's id (its ClusterProperty).
    pub id: ClusterId,
    /// Its ClusterSet.
    pub clusterset: String,
    /// Its API server's clock minus this machine's, from the `Date` of a response.
    pub clock_offset: Option<i64>,
}

/// Connects to `context` and checks that mcsd can be joined there: reachable, the CRDs served,
/// mcsd's namespace and peer roles installed, the cluster's id and ClusterSet set. Every failure
/// is one line that names the context and the fix.
pub async fn connect(kubeconfig: &Kubeconfig, context: &str, server: Option<&str>) -> anyhow::Result<Member> {
    let (client, url) = client_for(kubeconfig, context).await?;
    let ca_pem = ca_of(kubeconfig, context)?;
    let clock_offset = clock_offset(&client)
        .await
        .map_err(|e| anyhow::anyhow!("context {context}: cannot reach the API server at {url}: {e}; check that the cluster is up and the kubeconfig's server address"))?;
    let handed_over = server.unwrap_or(&url);
    if let Err(e) = reachable_as_handed_over(handed_over, ca_pem.as_deref()).await {
        bail!(
            "context {context}: the address its peers would be given, {handed_over}, does not answer with the cluster's CA from here: {e}; give one that does with --server {context}=https://HOST:PORT"
        );
    }
    let hints = Hints {
        forbidden: " and use an admin context: `mcsd join` creates ServiceAccounts, bindings and Secrets",
        renew: "give the context fresh credentials",
    };
    let who = format!("context {context}");
    for (access, result) in [
        (
            "serviceexports.multicluster.x-k8s.io",
            preflight::check(
                Api::<ServiceExport>::all(client.clone()),
                &url,
                &who,
                None,
                crd("serviceexports.multicluster.x-k8s.io"),
                hints,
            )
            .await,
        ),
        (
            "serviceimports.multicluster.x-k8s.io",
            preflight::check(
                Api::<ServiceImport>::all(client.clone()),
                &url,
                &who,
                None,
                crd("serviceimports.multicluster.x-k8s.io"),
                hints,
            )
            .await,
        ),
        (
            "clusterproperties.about.k8s.io",
            preflight::check(
                Api::<ClusterProperty>::all(client.clone()),
                &url,
                &who,
                None,
                crd("clusterproperties.about.k8s.io"),
                hints,
            )
            .await,
        ),
    ] {
        result.map_err(|e| match e {
            preflight::Error::CrdMissing { .. } => anyhow::anyhow!(
                "context {context} lacks the CRD {access}: mcsd is not installed there; run `kubectl apply -k manifests/` in it first"
            ),
            other => anyhow::anyhow!(other),
        })?;
    }
    let installed = async {
        let namespace = Api::<Namespace>::all(client.clone())
            .get_opt(DEFAULT_NAMESPACE)
            .await?;
        let role = Api::<Role>::namespaced(client.clone(), DEFAULT_NAMESPACE)
            .get_opt(PEER_ROLE)
            .await?;
        let identity = Api::<ClusterRole>::all(client.clone())
            .get_opt(PEER_IDENTITY_ROLE)
            .await?;
        kube::Result::<[(bool, String); 3]>::Ok([
            (namespace.is_some(), format!("namespace {DEFAULT_NAMESPACE}")),
            (role.is_some(), format!("Role {DEFAULT_NAMESPACE}/{PEER_ROLE}")),
            (identity.is_some(), format!("ClusterRole {PEER_IDENTITY_ROLE}")),
        ])
    };
    for (present, what) in installed
        .await
        .with_context(|| format!("context {context}: reading mcsd's installation"))?
    {
        if !present {
            bail!(
                "context {context} has no {what}: mcsd is not installed there; run `kubectl apply -k manifests/` in it first"
            );
        }
    }
    let id = cluster_id(&client, context).await?;
    let clusterset = property(&client, context, PROPERTY_CLUSTERSET).await?;
    Ok(Member {
        context: context.to_string(),
        client,
        server: server.map_or_else(|| url.clone(), str::to_string),
        url,
        ca_pem,
        id,
        clusterset,
        clock_offset,
    })
}

/// Connects to `context` to undo a join: only its API server and its cluster id are needed (the
/// objects to delete are named after it), so that a cluster whose mcsd is half removed, whose
/// clock drifted or that moved to another ClusterSet can still be left.
pub async fn connect_to_leave(kubeconfig: &Kubeconfig, context: &str) -> anyhow::Result<Member> {
    let (client, url) = client_for(kubeconfig, context).await?;
    let id = cluster_id(&client, context).await?;
    Ok(Member {
        context: context.to_string(),
        client,
        server: url.clone(),
        url,
        ca_pem: None,
        id,
        clusterset: String::new(),
        clock_offset: None,
    })
}

/// The value of the ClusterProperty `name` of `context`'s cluster; its absence is one line
/// naming the fix.
async fn property(client: &Client, context: &str, name: &'static str) -> anyhow::Result<String> {
    match Api::<ClusterProperty>::all(client.clone()).get_opt(name).await {
        Ok(Some(p)) if !p.spec.value.is_empty() => Ok(p.spec.value),
        Ok(_) => bail!(
            "context {context} has no ClusterProperty {name}: set it (README, \"Naming the cluster\") before joining"
        ),
        Err(e) => bail!(
            "context {context}: reading ClusterProperty {name}: {}",
            preflight::one_line(&e)
        ),
    }
}

/// The cluster id of `context`'s cluster.
async fn cluster_id(client: &Client, context: &str) -> anyhow::Result<ClusterId> {
    let text = property(client, context, PROPERTY_CLUSTER_ID).await?;
    text.parse().map_err(|e| {
        anyhow::anyhow!("context {context}: its cluster id {text:?} is not usable ({e}): set a DNS label")
    })
}

/// A client for `context`, and its API server's address; an unknown context is one line listing
/// the known ones.
pub async fn client_for(kubeconfig: &Kubeconfig, context: &str) -> anyhow::Result<(Client, String)> {
    if !kubeconfig.contexts.iter().any(|c| c.name == context) {
        let known: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
        bail!(
            "the kubeconfig has no context {context:?} (it has {}): name contexts as `kubectl config get-contexts` lists them",
            known.join(", ")
        );
    }
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
        .await
        .with_context(|| format!("context {context}: the kubeconfig entry is not usable"))?;
    let url = config.cluster_url.to_string();
    let client =
        Client::try_from(config).with_context(|| format!("context {context}: cannot build a client"))?;
    Ok((client, url))
}

fn crd(resource: &'static str) -> Access {
    Access { resource, crd: true }
}

/// The CA of `context`'s cluster, PEM, from `certificate-authority-data` or the file
/// `certificate-authority` names.
pub(crate) fn ca_of(kubeconfig: &Kubeconfig, context: &str) -> anyhow::Result<Option<String>> {
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let Some(cluster) = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
    else {
        bail!("context {context}: the kubeconfig has no cluster {cluster_name:?}");
    };
    if let Some(data) = &cluster.certificate_authority_data {
        use base64::Engine as _;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .with_context(|| format!("context {context}: certificate-authority-data is not base64"))?;
        return Ok(Some(String::from_utf8_lossy(&pem).into_owned()));
    }
    if let Some(path) = &cluster.certificate_authority {
        return std::fs::read_to_string(path)
            .map(Some)
            .with_context(|| format!("context {context}: reading its certificate-authority {path}"));
    }
    Ok(None)
}

/// Whether an API server answers at `server` over TLS verified with `ca_pem` (what a peer's
/// kubeconfig will hold), without credentials: any HTTP answer (401 included) will do.
pub(crate) async fn reachable_as_handed_over(server: &str, ca_pem: Option<&str>) -> Result<(), String> {
    let text = kubeconfig_text("peer", server, ca_pem, "anonymous", None);
    let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    match client.apiserver_version().await {
        Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
        Err(e) => Err(preflight::one_line(&e)),
    }
}

/// The API server's clock minus ours, in seconds, from the `Date` of its `/version` answer
/// (`None` when it sends none). Fails when the server cannot be reached.
async fn clock_offset(client: &Client) -> Result<Option<i64>, String> {
    let request = http::Request::get("/version")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let sent = Timestamp::now();
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .map_err(|e| preflight::one_line(&e))?;
    let received = Timestamp::now();
    let Some(date) = response
        .headers()
        .get(http::header::DATE)
        .and_then(|d| d.to_str().ok())
    else {
        return Ok(None);
    };
    let Ok(theirs) = k8s_openapi::jiff::fmt::rfc2822::parse(date).map(|z| z.timestamp()) else {
        return Ok(None);
    };
    let ours = (sent.as_millisecond() + received.as_millisecond()) / 2;
    Ok(Some((theirs.as_millisecond() - ours) / 1000))
}

/// Checks what holds between the clusters: distinct ids, one ClusterSet, clocks within
/// [`MAX_CLOCK_SKEW`].
pub fn check_together(members: &[Member]) -> anyhow::Result<()> {
    distinct_ids(members)?;
    if let Some(first) = members.first() {
        for m in &members[1..] {
            if m.clusterset != first.clusterset {
                bail!(
                    "context {} is in ClusterSet {:?} and {} in {:?}: only clusters of one ClusterSet can be joined (ClusterProperty {PROPERTY_CLUSTERSET})",
                    first.context,
                    first.clusterset,
                    m.context,
                    m.clusterset
                );
            }
        }
    }
    let offsets: Vec<(i64, &str)> = members
        .iter()
        .filter_map(|m| m.clock_offset.map(|o| (o, m.context.as_str())))
        .collect();
    if let (Some(min), Some(max)) = (offsets.iter().min(), offsets.iter().max())
        && (max.0 - min.0).unsigned_abs() > MAX_CLOCK_SKEW.as_secs()
    {
        bail!(
            "the clocks of contexts {} and {} differ by {} s (more than {} s): peer tokens expire by the clock of the cluster that issued them; synchronise the clocks (NTP) first",
            min.1,
            max.1,
            max.0 - min.0,
            MAX_CLOCK_SKEW.as_secs()
        );
    }
    Ok(())
}

/// Every member is a different cluster.
fn distinct_ids(members: &[Member]) -> anyhow::Result<()> {
    let mut by_id: BTreeMap<&ClusterId, &str> = BTreeMap::new();
    for m in members {
        if let Some(other) = by_id.insert(&m.id, &m.context) {
            bail!(
                "contexts {other} and {} both say they are cluster {}: each cluster needs its own id (ClusterProperty {PROPERTY_CLUSTER_ID})",
                m.context,
                m.id
            );
        }
    }
    Ok(())
}

/// The ordered pairs (exporter, importer) to join: every pair both ways, or with `one_way` from
/// the first context to each of the others (the others import from the first).
pub fn pairs(count: usize, one_way: bool) -> Vec<(usize, usize)> {
    if one_way {
        (1..count).map(|i| (0, i)).collect()
    } else {
        (0..count)
            .flat_map(|e| (0..count).filter(move |i| *i != e).map(move |i| (e, i)))
            .collect()
    }
}

/// The name of the ServiceAccount in an exporting cluster that `importer` reads it as.
pub fn peer_account(importer: &ClusterId) -> String {
    format!("mcsd-peer-{importer}")
}

/// The name of the Secret in an importing cluster that holds `exporter`'s credentials.
pub fn peer_secret(exporter: &ClusterId) -> String {
    format!("peer-{exporter}")
}

/// The name of the Role (and its binding) in an exporting cluster that lets `importer` renew its
/// own token.
pub fn renew_role(importer: &ClusterId) -> String {
    format!("mcsd-peer-{importer}-renew")
}

/// A Role `name` in `namespace` with one rule (`verbs` on the one object `object` of core
/// `resource`), and its RoleBinding to the ServiceAccount `account` of that namespace.
pub(crate) fn one_object_role(
    name: &str,
    namespace: &str,
    labels: &serde_json::Value,
    (resource, object, verbs): (&str, &str, &[&str]),
    account: &str,
) -> (Role, RoleBinding) {
    let role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "rules": [{"apiGroups": [""], "resources": [resource], "resourceNames": [object], "verbs": verbs}],
    }))
    .expect("a Role");
    let binding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }))
    .expect("a RoleBinding");
    (role, binding)
}

/// The Role and RoleBinding that let `importer`'s ServiceAccount mint tokens for itself, and only
/// for itself (`create` on `serviceaccounts/token`, by name).
fn renewal_objects(importer: &ClusterId) -> (Role, RoleBinding) {
    let account = peer_account(importer);
    let labels = json!({"app.kubernetes.io/name": "mcsd", mcsd::PEER_FOR: importer.as_str()});
    one_object_role(
        &renew_role(importer),
        DEFAULT_NAMESPACE,
        &labels,
        ("serviceaccounts/token", &account, &["create"]),
        &account,
    )
}

/// The name of the Role (and its binding) in an importing cluster that lets its mcsd write the
/// renewed token into the Secret for `exporter`.
pub fn secret_role(exporter: &ClusterId) -> String {
    format!("mcsd-renew-peer-{exporter}")
}

/// The Role and RoleBinding that let the importing cluster's mcsd (ServiceAccount `mcsd`) read and
/// patch the one peer Secret for `exporter`: its RBAC from `manifests/` reads Secrets and writes
/// none.
fn secret_objects(exporter: &ClusterId) -> (Role, RoleBinding) {
    let labels = json!({"app.kubernetes.io/name": "mcsd", mcsd::PEER_OF: exporter.as_str()});
    one_object_role(
        &secret_role(exporter),
        DEFAULT_NAMESPACE,
        &labels,
        ("secrets", &peer_secret(exporter), &["get", "patch"]),
        "mcsd",
    )
}

/// The objects one pair needs in the exporting cluster.
fn exporter_objects(importer: &ClusterId) -> (ServiceAccount, RoleBinding, ClusterRoleBinding) {
    let account = peer_account(importer);
    let labels = json!({"app.kubernetes.io/name": "mcsd", mcsd::PEER_FOR: importer.as_str()});
    let subject = json!([{"kind": "ServiceAccount", "name": account, "namespace": DEFAULT_NAMESPACE}]);
    let sa = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": account, "namespace": DEFAULT_NAMESPACE, "labels": labels},
        "automountServiceAccountToken": false,
    }))
    .expect("a ServiceAccount");
    let rb = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": account, "namespace": DEFAULT_NAMESPACE, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PEER_ROLE},
        "subjects": subject,
    }))
    .expect("a RoleBinding");
    let crb = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{PEER_IDENTITY_ROLE}-{importer}"), "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": PEER_IDENTITY_ROLE},
        "subjects": subject,
    }))
    .expect("a ClusterRoleBinding");
    (sa, rb, crb)
}

/// A kubeconfig for `exporter` with `token`, as the importing cluster's mcsd uses it.
pub fn peer_kubeconfig(exporter: &Member, user: &str, token: &str) -> String {
    kubeconfig_text(
        exporter.id.as_str(),
        &exporter.server,
        exporter.ca_pem.as_deref(),
        user,
        Some(token),
    )
}

/// A kubeconfig of one context `name`: `server` verified with `ca_pem`, as `user` with `token`
/// (none: no credentials).
pub(crate) fn kubeconfig_text(
    name: &str,
    server: &str,
    ca_pem: Option<&str>,
    user: &str,
    token: Option<&str>,
) -> String {
    use base64::Engine as _;
    let mut cluster = json!({"server": server});
    if let Some(pem) = ca_pem {
        cluster["certificate-authority-data"] = json!(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    let credentials = token.map_or_else(|| json!({}), |t| json!({"token": t}));
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
    });
    serde_yaml::to_string(&config).expect("a kubeconfig serialises")
}

/// The peer Secret for `exporter` in an importing cluster.
fn peer_secret_object(
    exporter: &Member,
    account: &str,
    kubeconfig: &str,
    expires: Option<Timestamp>,
    lifetime: Duration,
) -> Secret {
    peer_secret::secret(
        &peer_secret(&exporter.id),
        DEFAULT_NAMESPACE,
        &exporter.id,
        kubeconfig,
        &format!("{DEFAULT_NAMESPACE}/{account}"),
        expires,
        lifetime,
    )
}

/// What was done to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// It did not exist and was created.
    Created,
    /// It existed and was changed.
    Updated,
    /// It was already right.
    Unchanged,
    /// It existed and was deleted.
    Deleted,
    /// `--dry-run`: it does not exist and would be created.
    WouldCreate,
    /// `--dry-run`: it exists and would be changed.
    WouldUpdate,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::Deleted => "deleted",
            Self::WouldCreate => "would be created",
            Self::WouldUpdate => "would be updated",
        })
    }
}

/// Whether `current` already holds everything `desired` says: every field of `desired` is in
/// `current` with the same value (lists element by element). What the API server adds (defaults,
/// metadata) does not count as a difference.
fn holds(current: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (current, desired) {
        (Value::Object(c), Value::Object(d)) => d
            .iter()
            .all(|(k, v)| v.is_null() || c.get(k).is_some_and(|cv| holds(cv, v))),
        (Value::Array(c), Value::Array(d)) => {
            c.len() == d.len() && c.iter().zip(d).all(|(cv, dv)| holds(cv, dv))
        }
        (c, d) => c == d,
    }
}

/// Server-side applies `object` unless `dry_run` (then prints it, unless it is in place already);
/// says what changed.
pub(crate) async fn apply<K>(
    api: Api<K>,
    object: K,
    dry_run: bool,
    out: &mut Vec<String>,
    context: &str,
) -> anyhow::Result<Change>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = object.name_any();
    let kind = K::kind(&Default::default()).to_string();
    let what = match object.meta().namespace.as_deref() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    };
    let current = api
        .get_opt(&name)
        .await
        .with_context(|| format!("context {context}: reading {what}"))?;
    if dry_run {
        let mut value = serde_json::to_value(&object)?;
        let change = match &current {
            None => Change::WouldCreate,
            Some(c) if holds(&serde_json::to_value(c)?, &value) => {
                out.push(format!("{context}: {what} unchanged"));
                return Ok(Change::Unchanged);
            }
            Some(_) => Change::WouldUpdate,
        };
        if let Some(data) = value.get_mut("data").and_then(|d| d.as_object_mut())
            && data.contains_key(KEY_KUBECONFIG)
        {
            data.insert(
                KEY_KUBECONFIG.into(),
                json!("<a kubeconfig with a token minted at join time>"),
            );
        }
        out.push(format!(
            "# context {context}: {what} {change}\n{}---",
            serde_yaml::to_string(&value)?
        ));
        return Ok(change);
    }
    let before = current.and_then(|o| o.resource_version());
    let params = PatchParams::apply(MANAGER).force();
    let after = api
        .patch(&name, &params, &Patch::Apply(&object))
        .await
        .with_context(|| format!("context {context}: applying {what}"))?;
    let change = match before {
        None => Change::Created,
        Some(rv) if after.resource_version().as_deref() == Some(rv.as_str()) => Change::Unchanged,
        Some(_) => Change::Updated,
    };
    out.push(format!("{context}: {what} {change}"));
    Ok(change)
}

/// How `mcsd join` runs.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// Print what would be written; write nothing.
    pub dry_run: bool,
    /// How long a minted token lives.
    pub token_ttl: Duration,
}

/// Joins `exporter` to `importer`: the identity in the exporter, the Secret in the importer. The
/// Secret is left alone while its token is good for more than half its lifetime and it points at
/// the same server, CA and ServiceAccount. Returns the lines to print.
pub async fn join_pair(
    exporter: &Member,
    importer: &Member,
    options: &JoinOptions,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let (sa, rb, crb) = exporter_objects(&importer.id);
    let account = sa.name_any();
    let ns = DEFAULT_NAMESPACE;
    let ctx = exporter.context.as_str();
    let (dry, ec) = (options.dry_run, exporter.client.clone());
    // A ServiceAccount made anew revokes every token of the one before it by that name.
    let new_account = matches!(
        apply(Api::namespaced(ec.clone(), ns), sa, dry, &mut out, ctx).await?,
        Change::Created | Change::WouldCreate
    );
    apply(Api::namespaced(ec.clone(), ns), rb, dry, &mut out, ctx).await?;
    apply(
        Api::<ClusterRoleBinding>::all(ec.clone()),
        crb,
        dry,
        &mut out,
        ctx,
    )
    .await?;
    let (role, binding) = renewal_objects(&importer.id);
    apply(Api::namespaced(ec.clone(), ns), role, dry, &mut out, ctx).await?;
    apply(Api::namespaced(ec, ns), binding, dry, &mut out, ctx).await?;

    let ic = importer.client.clone();
    let (role, binding) = secret_objects(&exporter.id);
    apply(
        Api::namespaced(ic.clone(), ns),
        role,
        dry,
        &mut out,
        &importer.context,
    )
    .await?;
    apply(
        Api::namespaced(ic.clone(), ns),
        binding,
        dry,
        &mut out,
        &importer.context,
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(ic, ns);
    let secret_name = peer_secret(&exporter.id);
    let user = format!("system:serviceaccount:{ns}:{account}");
    if !new_account
        && let Some(current) = secrets
            .get_opt(&secret_name)
            .await
            .with_context(|| format!("context {}: reading Secret {ns}/{secret_name}", importer.context))?
        && still_good(&current, exporter, &user, &account, options.token_ttl)
    {
        out.push(format!(
            "{}: Secret {ns}/{secret_name} unchanged",
            importer.context
        ));
        return Ok(out);
    }
    let (token, expires, lifetime) = if options.dry_run {
        (String::new(), None, options.token_ttl)
    } else {
        let minted = mint(exporter, &account, options.token_ttl).await?;
        (minted.token, Some(minted.expires), minted.lifetime)
    };
    let kubeconfig = peer_kubeconfig(exporter, &user, &token);
    let secret = peer_secret_object(exporter, &account, &kubeconfig, expires, lifetime);
    apply(secrets, secret, options.dry_run, &mut out, &importer.context).await?;
    Ok(out)
}

/// Whether the Secret in place already connects to `exporter` (same id, server, CA and
/// ServiceAccount) with a token that lives for more than half of `ttl` yet.
fn still_good(current: &Secret, exporter: &Member, user: &str, account: &str, ttl: Duration) -> bool {
    use base64::Engine as _;
    let annotations = current.annotations();
    let fresh = token_fresh(current, ttl);
    let same_account = annotations.get(ANNOTATION_SERVICE_ACCOUNT)
        == Some(&format!("{DEFAULT_NAMESPACE}/{account}"))
        && annotations.get(ANNOTATION_TOKEN_LIFETIME) == Some(&ttl.as_secs().to_string());
    let data = current.data.as_ref();
    let same_name = data
        .and_then(|d| d.get(KEY_NAME))
        .is_some_and(|b| b.0 == exporter.id.as_str().as_bytes());
    let kubeconfig = data
        .and_then(|d| d.get(KEY_KUBECONFIG))
        .and_then(|b| std::str::from_utf8(&b.0).ok().map(str::to_string))
        .and_then(|text| Kubeconfig::from_yaml(&text).ok());
    let ca = exporter
        .ca_pem
        .as_ref()
        .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem));
    let same_target = kubeconfig.is_some_and(|kc| {
        let cluster = kc.clusters.first().and_then(|c| c.cluster.as_ref());
        cluster.is_some_and(|c| {
            c.server.as_deref() == Some(exporter.server.as_str()) && c.certificate_authority_data == ca
        }) && kc.auth_infos.first().is_some_and(|a| a.name == user)
    });
    fresh && same_account && same_name && same_target
}

/// Whether the token in `secret` (as its expiry annotation says) lives for more than half of `ttl`
/// yet: a join run again leaves it alone.
pub(crate) fn token_fresh(secret: &Secret, ttl: Duration) -> bool {
    let half = i64::try_from(ttl.as_secs() / 2).unwrap_or(i64::MAX);
    secret
        .annotations()
        .get(ANNOTATION_TOKEN_EXPIRES)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_some_and(|at| at.duration_since(Timestamp::now()).as_secs() > half)
}

/// A token of `account` in `exporter`, living `ttl` (or what the API server grants).
pub async fn mint(exporter: &Member, account: &str, ttl: Duration) -> anyhow::Result<Minted> {
    let accounts: Api<ServiceAccount> = Api::namespaced(exporter.client.clone(), DEFAULT_NAMESPACE);
    request_token(&accounts, account, ttl)
        .await
        .map_err(|e| anyhow::anyhow!("context {}: minting a token: {e}", exporter.context))
}

/// Undoes `join_pair`: the Secret in the importer, the identity in the exporter (which revokes
/// every token issued for it).
pub async fn leave_pair(exporter: &Member, importer: &Member) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let ns = DEFAULT_NAMESPACE;
    let (i, e) = (&importer.context, &exporter.context);
    let (ic, ec) = (importer.client.clone(), exporter.client.clone());
    let secret = peer_secret(&exporter.id);
    let account = peer_account(&importer.id);
    let crb = format!("{PEER_IDENTITY_ROLE}-{}", importer.id);
    let renew = renew_role(&importer.id);
    let secret_role = secret_role(&exporter.id);
    delete(Api::<Secret>::namespaced(ic.clone(), ns), &secret, i, &mut out).await?;
    delete(
        Api::<RoleBinding>::namespaced(ic.clone(), ns),
        &secret_role,
        i,
        &mut out,
    )
    .await?;
    delete(Api::<Role>::namespaced(ic, ns), &secret_role, i, &mut out).await?;
    delete(
        Api::<RoleBinding>::namespaced(ec.clone(), ns),
        &account,
        e,
        &mut out,
    )
    .await?;
    delete(Api::<ClusterRoleBinding>::all(ec.clone()), &crb, e, &mut out).await?;
    delete(
        Api::<RoleBinding>::namespaced(ec.clone(), ns),
        &renew,
        e,
        &mut out,
    )
    .await?;
    delete(Api::<Role>::namespaced(ec.clone(), ns), &renew, e, &mut out).await?;
    delete(Api::<ServiceAccount>::namespaced(ec, ns), &account, e, &mut out).await?;
    Ok(out)
}

pub(crate) async fn delete<K>(
    api: Api<K>,
    name: &str,
    context: &str,
    out: &mut Vec<String>,
) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&Default::default()).to_string();
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => out.push(format!("{context}: {kind} {name} {}", Change::Deleted)),
        Err(kube::Error::Api(s)) if s.code == 404 => out.push(format!("{context}: {kind} {name} not there")),
        Err(e) => return Err(e).with_context(|| format!("context {context}: deleting {kind} {name}")),
    }
    Ok(())
}

/// Checks every context, then joins every pair (see [`pairs`]). Nothing is written unless every
/// check passes. Returns the lines to print: one per object, then one per joined pair.
pub async fn join(
    kubeconfig: Option<&Path>,
    contexts: &[String],
    servers: &BTreeMap<String, String>,
    one_way: bool,
    options: &JoinOptions,
) -> anyhow::Result<Vec<String>> {
    let members = survey(kubeconfig, contexts, servers).await?;
    let mut out = Vec::new();
    for (e, i) in pairs(members.len(), one_way) {
        out.extend(join_pair(&members[e], &members[i], options).await?);
        if !options.dry_run {
            out.push(format!(
                "joined: {} ({}) imports from {} ({})",
                members[i].id, members[i].context, members[e].id, members[e].context
            ));
        }
    }
    Ok(out)
}

/// Undoes [`join`] for the same contexts.
pub async fn leave(
    kubeconfig: Option<&Path>,
    contexts: &[String],
    one_way: bool,
) -> anyhow::Result<Vec<String>> {
    let members = survey_to_leave(kubeconfig, contexts).await?;
    let mut out = Vec::new();
    for (e, i) in pairs(members.len(), one_way) {
        out.extend(leave_pair(&members[e], &members[i]).await?);
        out.push(format!(
            "left: {} ({}) no longer imports from {} ({})",
            members[i].id, members[i].context, members[e].id, members[e].context
        ));
    }
    Ok(out)
}

/// Connects to every context and checks each alone and all together; the first failure is the
/// error.
pub async fn survey(
    kubeconfig: Option<&Path>,
    contexts: &[String],
    servers: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<Member>> {
    let kubeconfig = distinct_contexts(kubeconfig, contexts)?;
    let mut members = Vec::new();
    for context in contexts {
        members.push(connect(&kubeconfig, context, servers.get(context).map(String::as_str)).await?);
    }
    check_together(&members)?;
    Ok(members)
}

/// Connects to every context to undo a join ([`connect_to_leave`]); the ids must differ.
async fn survey_to_leave(kubeconfig: Option<&Path>, contexts: &[String]) -> anyhow::Result<Vec<Member>> {
    let kubeconfig = distinct_contexts(kubeconfig, contexts)?;
    let mut members = Vec::new();
    for context in contexts {
        members.push(connect_to_leave(&kubeconfig, context).await?);
    }
    distinct_ids(&members)?;
    Ok(members)
}

/// The kubeconfig, once each context is known to be named only once.
fn distinct_contexts(kubeconfig: Option<&Path>, contexts: &[String]) -> anyhow::Result<Kubeconfig> {
    let mut seen = std::collections::BTreeSet::new();
    for c in contexts {
        anyhow::ensure!(seen.insert(c), "context {c} is named twice");
    }
    load_kubeconfig(kubeconfig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_in_place_when_it_holds_every_field_asked_for() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}},
            "subjects": [{"kind": "ServiceAccount", "name": "s"}]});
        let served = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}, "uid": "u"},
            "subjects": [{"kind": "ServiceAccount", "name": "s", "apiGroup": ""}]});
        assert!(
            holds(&served, &desired),
            "fields the server adds are no difference"
        );
        let mut relabelled = served.clone();
        relabelled["metadata"]["labels"]["x"] = json!("2");
        assert!(!holds(&relabelled, &desired));
        let mut more = served.clone();
        more["subjects"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kind": "User", "name": "u"}));
        assert!(!holds(&more, &desired), "a list holds exactly what is asked for");
        assert!(!holds(&json!({"metadata": {"name": "a"}}), &desired));
    }
}
