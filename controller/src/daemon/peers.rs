//! Following one cluster's exchange namespace (a peer's, or this cluster's own) into the view.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{core::v1::ConfigMap, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use mcsd_crds::{
    ClusterId,
    about::v1beta1::ClusterProperty,
    names::{PROPERTY_CLUSTER_ID, PROPERTY_CLUSTERSET},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    Peer,
    metrics::{PeerState, Peers},
};
use crate::{
    exchange::{LABEL_EXCHANGE, LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE},
    preflight,
    view::{Key, Kind, Object, View},
};

/// Why a peer is not followed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The peer names itself differently from how it was configured.
    #[error("peer configured as {configured:?} says it is cluster {actual:?}; refusing it")]
    WrongId {
        /// The configured name.
        configured: String,
        /// Its `cluster.clusterset.k8s.io`.
        actual: String,
    },
    /// The peer belongs to another ClusterSet.
    #[error("peer {peer:?} is a member of ClusterSet {theirs:?}, not {ours:?}; refusing it")]
    OtherClusterSet {
        /// The peer.
        peer: String,
        /// Its `clusterset.k8s.io`.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The peer has no identity.
    #[error("peer {peer:?} has no ClusterProperty {property}; refusing it")]
    NoIdentity {
        /// The peer.
        peer: String,
        /// The missing property.
        property: &'static str,
    },
}

/// Checks that `client` reaches the cluster `expected` of ClusterSet `clusterset`.
pub async fn verify(
    client: &Client,
    expected: &ClusterId,
    clusterset: &str,
) -> Result<Result<(), Refusal>, kube::Error> {
    let api: Api<ClusterProperty> = Api::all(client.clone());
    let Some(id) = api.get_opt(PROPERTY_CLUSTER_ID).await? else {
        return Ok(Err(Refusal::NoIdentity {
            peer: expected.to_string(),
            property: PROPERTY_CLUSTER_ID,
        }));
    };
    if id.spec.value != expected.as_str() {
        return Ok(Err(Refusal::WrongId {
            configured: expected.to_string(),
            actual: id.spec.value,
        }));
    }
    let Some(set) = api.get_opt(PROPERTY_CLUSTERSET).await? else {
        return Ok(Err(Refusal::NoIdentity {
            peer: expected.to_string(),
            property: PROPERTY_CLUSTERSET,
        }));
    };
    if set.spec.value != clusterset {
        return Ok(Err(Refusal::OtherClusterSet {
            peer: expected.to_string(),
            theirs: set.spec.value,
            ours: clusterset.to_string(),
        }));
    }
    Ok(Ok(()))
}

/// Follows `cluster`'s exchange records into `view` until `shutdown`; calls `changed` with the
/// keys each event changed, and, once both kinds have been listed, sets `synced` and calls
/// `on_state` with `Synced`.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    cluster: ClusterId,
    client: Client,
    namespace: String,
    view: Arc<Mutex<View>>,
    changed: impl Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
    synced: watch::Sender<bool>,
    on_state: impl Fn(PeerState),
    shutdown: CancellationToken,
) {
    let (records_done_tx, mut records_done) = watch::channel(false);
    let (slices_done_tx, mut slices_done) = watch::channel(false);
    let records = follow_kind::<ConfigMap>(
        cluster.clone(),
        Api::namespaced(client.clone(), &namespace),
        Kind::Record,
        Object::Record,
        view.clone(),
        changed.clone(),
        records_done_tx,
    );
    let slices = follow_kind::<EndpointSlice>(
        cluster.clone(),
        Api::namespaced(client, &namespace),
        Kind::Slice,
        Object::Slice,
        view,
        changed,
        slices_done_tx,
    );
    let sync = async {
        let _ = records_done.wait_for(|d| *d).await;
        let _ = slices_done.wait_for(|d| *d).await;
        on_state(PeerState::Synced);
        let _ = synced.send(true);
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = records => {}
        _ = slices => {}
        _ = sync => {}
        _ = shutdown.cancelled() => {}
    }
}

async fn follow_kind<K>(
    cluster: ClusterId,
    api: Api<K>,
    kind: Kind,
    wrap: fn(K) -> Object,
    view: Arc<Mutex<View>>,
    changed: impl Fn(BTreeSet<Key>),
    done: watch::Sender<bool>,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config = watcher::Config::default().labels(LABEL_EXCHANGE);
    let mut stream = watcher(api, config).default_backoff().modify(super::slim).boxed();
    let mut buffer: Option<Vec<Object>> = None;
    while let Some(event) = stream.next().await {
        let keys = match event {
            Ok(watcher::Event::Init) => {
                buffer = Some(Vec::new());
                continue;
            }
            Ok(watcher::Event::InitApply(object)) => {
                buffer.get_or_insert_with(Vec::new).push(wrap(object));
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let objects = buffer.take().unwrap_or_default();
                let keys = view
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .reset(&cluster, kind, objects);
                let _ = done.send(true);
                keys
            }
            Ok(watcher::Event::Apply(object)) => view
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .apply(&cluster, wrap(object))
                .into_iter()
                .collect(),
            Ok(watcher::Event::Delete(object)) => view
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .delete(&cluster, &wrap(object))
                .into_iter()
                .collect(),
            Err(error) => {
                tracing::warn!(%cluster, kind = ?kind, %error, "watching exchange records failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if !keys.is_empty() {
            changed(keys);
        }
    }
}

/// What every peer's supervisor shares with the daemon.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Shared<F> {
    /// The exchange namespace.
    pub namespace: String,
    /// Our ClusterSet.
    pub clusterset: String,
    /// The ClusterSet view.
    pub view: Arc<Mutex<View>>,
    /// Called with the keys whose view changed.
    pub changed: F,
    /// Every peer's state.
    pub states: Peers,
    /// How often a followed peer is probed.
    pub probe_interval: Duration,
    /// How long a peer may be unreachable before its records are left out.
    pub grace: Duration,
    /// Stops everything.
    pub shutdown: CancellationToken,
}

/// Whether a peer may be followed.
enum Admission {
    Admitted,
    Refused(String),
    Unreachable(String),
}

/// Classifies a failed request to a peer: credentials rejected or rights missing are a refusal
/// (configuration to fix), anything else is the peer being unreachable.
fn classify(error: &kube::Error) -> Admission {
    match error {
        kube::Error::Api(s) if s.code == 401 => Admission::Refused(
            "its API server rejected the credentials (401): the peer kubeconfig's token has expired or been revoked"
                .into(),
        ),
        kube::Error::Api(s) if s.code == 403 => Admission::Refused(format!(
            "the peer kubeconfig's credentials lack a right (403): {}",
            s.message
        )),
        other => Admission::Unreachable(preflight::one_line(other)),
    }
}

async fn admit<F>(peer: &Peer, shared: &Shared<F>) -> Admission {
    match verify(&peer.client, &peer.cluster, &shared.clusterset).await {
        Ok(Err(refusal)) => return Admission::Refused(refusal.to_string()),
        Err(error) => return classify(&error),
        Ok(Ok(())) => {}
    }
    probe(peer, shared).await
}

/// Can the peer's exchange records be listed right now?
async fn probe<F>(peer: &Peer, shared: &Shared<F>) -> Admission {
    match preflight::peer(&peer.client, &peer.url, peer.cluster.as_str(), &shared.namespace).await {
        Ok(()) => Admission::Admitted,
        Err(e @ (preflight::Error::Forbidden { .. } | preflight::Error::Unauthorized { .. })) => {
            Admission::Refused(e.to_string())
        }
        Err(e) => Admission::Unreachable(e.to_string()),
    }
}

/// The services a refused peer publishes, read without merging anything (best effort).
async fn known_keys(peer: &Peer, namespace: &str) -> BTreeSet<Key> {
    let api: Api<ConfigMap> = Api::namespaced(peer.client.clone(), namespace);
    let Ok(list) = api
        .list_metadata(&kube::api::ListParams::default().labels(LABEL_EXCHANGE))
        .await
    else {
        return BTreeSet::new();
    };
    list.items
        .into_iter()
        .filter_map(|cm| {
            let labels = cm.metadata.labels?;
            Some((
                labels.get(LABEL_SERVICE_NAMESPACE)?.clone(),
                labels.get(LABEL_SERVICE_NAME)?.clone(),
            ))
        })
        .collect()
}

fn set_state(states: &Peers, peer: &ClusterId, state: PeerState) {
    if !states.set(peer.as_str(), state.clone()) {
        return;
    }
    match &state {
        PeerState::Refused(why) => tracing::error!(%peer, %why, "peer refused; its exports are left out"),
        PeerState::Unreachable(why) => tracing::warn!(%peer, %why, "peer unreachable"),
        PeerState::Synced => tracing::info!(%peer, "peer synced"),
        PeerState::Connecting => {}
    }
}

/// Runs one peer until `shutdown`: checks its identity and rights, follows its records, probes
/// it, and leaves its records out of every merge while it is refused or has been unreachable for
/// longer than the grace period (taking them back, unchanged, when it recovers). `synced` is set
/// once its records have been listed, or once it has been refused (nothing to wait for).
pub async fn supervise<F>(peer: Peer, shared: Shared<F>, synced: watch::Sender<bool>)
where
    F: Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
{
    let view = |f: &dyn Fn(&mut View) -> BTreeSet<Key>| {
        let keys = f(&mut shared.view.lock().unwrap_or_else(|e| e.into_inner()));
        if !keys.is_empty() {
            (shared.changed)(keys);
        }
    };
    set_state(&shared.states, &peer.cluster, PeerState::Connecting);
    let mut delay = Duration::from_secs(1);
    // Admission: identity, ClusterSet and rights.
    loop {
        match admit(&peer, &shared).await {
            Admission::Admitted => break,
            Admission::Refused(why) => {
                set_state(&shared.states, &peer.cluster, PeerState::Refused(why.clone()));
                let known = known_keys(&peer, &shared.namespace).await;
                view(&|v| v.exclude(&peer.cluster, format!("refused: {why}"), known.clone()));
                let _ = synced.send(true);
                // Checked again as often as a followed peer is probed: the refusal may be fixed,
                // and the services it publishes may change.
                delay = shared.probe_interval;
            }
            Admission::Unreachable(why) => {
                set_state(&shared.states, &peer.cluster, PeerState::Unreachable(why));
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    view(&|v| v.include(&peer.cluster));

    // Follow, and probe alongside: the watches alone cannot tell a quiet peer from a dead one.
    let states = shared.states.clone();
    let name = peer.cluster.clone();
    let follower = follow(
        peer.cluster.clone(),
        peer.client.clone(),
        shared.namespace.clone(),
        shared.view.clone(),
        shared.changed.clone(),
        synced,
        move |state| set_state(&states, &name, state),
        shared.shutdown.clone(),
    );
    let prober = async {
        let mut unreachable_since: Option<tokio::time::Instant> = None;
        let mut excluded = false;
        loop {
            tokio::time::sleep(shared.probe_interval).await;
            match probe(&peer, &shared).await {
                Admission::Admitted => {
                    unreachable_since = None;
                    if shared
                        .states
                        .get(peer.cluster.as_str())
                        .is_some_and(|s| s.state != PeerState::Synced)
                    {
                        set_state(&shared.states, &peer.cluster, PeerState::Synced);
                    }
                    shared.states.contact(peer.cluster.as_str());
                    if excluded {
                        tracing::info!(peer = %peer.cluster, "peer back; its exports are included again");
                        view(&|v| v.include(&peer.cluster));
                        excluded = false;
                    }
                }
                Admission::Refused(why) | Admission::Unreachable(why) => {
                    let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                    set_state(&shared.states, &peer.cluster, PeerState::Unreachable(why.clone()));
                    let down = since.elapsed();
                    if !excluded && down >= shared.grace {
                        tracing::warn!(peer = %peer.cluster, ?down, "peer unreachable past its grace period; its exports are left out");
                        let reason = format!(
                            "unreachable for {}s (grace period {}s): {why}",
                            down.as_secs(),
                            shared.grace.as_secs()
                        );
                        view(&|v| v.exclude(&peer.cluster, reason.clone(), BTreeSet::new()));
                        excluded = true;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = follower => {}
        _ = prober => {}
        _ = shared.shutdown.cancelled() => {}
    }
}

/// The label that marks a Secret in mcsd's namespace as a peer's credentials.
pub const LABEL_PEER: &str = "mcsd.io/peer";
/// The Secret key holding the peer's cluster id.
pub const SECRET_KEY_NAME: &str = "name";
/// The Secret key holding the peer's kubeconfig.
pub const SECRET_KEY_KUBECONFIG: &str = "kubeconfig";

/// A peer as a Secret describes it.
async fn peer_from_secret(secret: &k8s_openapi::api::core::v1::Secret) -> Result<(Peer, String), String> {
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| format!("has no key {key:?}"))
    };
    let name = text(SECRET_KEY_NAME)?;
    let cluster = ClusterId::new(name.trim()).map_err(|e| format!("key {SECRET_KEY_NAME:?}: {e}"))?;
    let yaml = text(SECRET_KEY_KUBECONFIG)?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml)
        .map_err(|e| format!("key {SECRET_KEY_KUBECONFIG:?} is not a kubeconfig: {e}"))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| format!("key {SECRET_KEY_KUBECONFIG:?} is not usable: {e}"))?;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
    // A fingerprint of what the Secret says, to restart the peer only when it changes.
    let fingerprint = format!("{}\n{yaml}", cluster.as_str());
    Ok((Peer { cluster, client, url }, fingerprint))
}

/// Follows Secrets labelled [`LABEL_PEER`] in `namespace` until `shutdown`: a Secret added
/// starts its peer, changed restarts it, deleted stops it and withdraws its exports at once.
/// Ids already configured with `--peer` (or this cluster's own) are refused with an error.
/// `listed` is set once the Secrets have been listed and their peers started, with the receivers
/// that say when each has listed its records.
pub async fn follow_secrets<F>(
    client: Client,
    shared: Shared<F>,
    reserved: BTreeSet<ClusterId>,
    listed: tokio::sync::oneshot::Sender<Vec<(ClusterId, watch::Receiver<bool>)>>,
) where
    F: Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
{
    use k8s_openapi::api::core::v1::Secret;
    let api: Api<Secret> = Api::namespaced(client, &shared.namespace);
    let mut stream = watcher(api, watcher::Config::default().labels(LABEL_PEER))
        .default_backoff()
        .boxed();
    // Secret name → (peer id, fingerprint, stop).
    let mut running: std::collections::BTreeMap<String, (ClusterId, String, CancellationToken)> =
        Default::default();
    let mut listed = Some(listed);
    let mut initial = Vec::new();
    let stop = |running: &mut std::collections::BTreeMap<String, (ClusterId, String, CancellationToken)>,
                secret: &str| {
        if let Some((cluster, _, token)) = running.remove(secret) {
            token.cancel();
            shared.states.remove(cluster.as_str());
            let keys = {
                let mut view = shared.view.lock().unwrap_or_else(|e| e.into_inner());
                let mut keys = view.forget(&cluster);
                keys.extend(view.include(&cluster));
                keys
            };
            if !keys.is_empty() {
                (shared.changed)(keys);
            }
            tracing::info!(peer = %cluster, %secret, "peer removed");
        }
    };
    loop {
        let event = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            e = stream.next() => match e { Some(e) => e, None => return },
        };
        let (applied, deleted) = match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => (Some(s), None),
            Ok(watcher::Event::Delete(s)) => (None, Some(s)),
            Ok(watcher::Event::Init) => (None, None),
            Ok(watcher::Event::InitDone) => {
                if let Some(tx) = listed.take() {
                    let _ = tx.send(std::mem::take(&mut initial));
                }
                (None, None)
            }
            Err(error) => {
                tracing::warn!(%error, "watching peer Secrets failed; retrying");
                (None, None)
            }
        };
        if let Some(secret) = deleted {
            stop(&mut running, &secret.metadata.name.unwrap_or_default());
        }
        let Some(secret) = applied else { continue };
        let secret_name = secret.metadata.name.clone().unwrap_or_default();
        let (peer, fingerprint) = match peer_from_secret(&secret).await {
            Ok(p) => p,
            Err(why) => {
                tracing::error!(secret = %secret_name, %why, "peer Secret ignored");
                stop(&mut running, &secret_name);
                continue;
            }
        };
        if running
            .get(&secret_name)
            .is_some_and(|(_, f, _)| *f == fingerprint)
        {
            continue;
        }
        stop(&mut running, &secret_name);
        let taken = reserved.contains(&peer.cluster) || running.values().any(|(c, _, _)| *c == peer.cluster);
        if taken {
            tracing::error!(secret = %secret_name, peer = %peer.cluster, "peer Secret ignored: that id is already a peer (or this cluster)");
            continue;
        }
        tracing::info!(peer = %peer.cluster, secret = %secret_name, "peer added");
        let token = shared.shutdown.child_token();
        let (tx, rx) = watch::channel(false);
        if listed.is_some() {
            initial.push((peer.cluster.clone(), rx));
        }
        running.insert(secret_name, (peer.cluster.clone(), fingerprint, token.clone()));
        let mut own = shared.clone();
        own.shutdown = token;
        tokio::spawn(supervise(peer, own, tx));
    }
}
