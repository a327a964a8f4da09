//! Following one cluster's exchange namespace (a peer's, or this cluster's own) into the view.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, runtime::watcher};
use mcsd_crds::{
    ClusterId,
    about::v1beta1::ClusterProperty,
    names::{PROPERTY_CLUSTER_ID, PROPERTY_CLUSTERSET},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{
    Peer, driver,
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
    let records = driver::Watch::<ConfigMap>::new(
        Api::namespaced(client.clone(), &namespace),
        watcher::Config::default().labels(LABEL_EXCHANGE),
        super::local::slim,
    );
    let slices = driver::Watch::<crate::exchange::MirroredSlice>::new(
        Api::namespaced(client, &namespace),
        watcher::Config::default().labels(LABEL_EXCHANGE),
        super::local::slim,
    );
    let (mut records_done, mut slices_done) = (records.listed(), slices.listed());
    let records = records.run(
        Follower::new(&cluster, Kind::Record, Object::Record, &view, &changed),
        shutdown.clone(),
    );
    let slices = slices.run(
        Follower::new(&cluster, Kind::Slice, Object::Slice, &view, &changed),
        shutdown.clone(),
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

/// One kind of one cluster's exchange records, fed into the View: a re-list replaces that
/// cluster's objects of the kind at once, when it is complete.
struct Follower<K, F> {
    cluster: ClusterId,
    kind: Kind,
    wrap: fn(K) -> Object,
    view: Arc<Mutex<View>>,
    /// Called with the keys whose view changed.
    changed: F,
    relisting: Vec<Object>,
}

impl<K, F: Fn(BTreeSet<Key>) + Clone> Follower<K, F> {
    fn new(
        cluster: &ClusterId,
        kind: Kind,
        wrap: fn(K) -> Object,
        view: &Arc<Mutex<View>>,
        changed: &F,
    ) -> Self {
        Self {
            cluster: cluster.clone(),
            kind,
            wrap,
            view: view.clone(),
            changed: changed.clone(),
            relisting: Vec::new(),
        }
    }

    fn change(&self, f: impl FnOnce(&mut View) -> BTreeSet<Key>) {
        let keys = f(&mut self.view.lock().unwrap_or_else(|e| e.into_inner()));
        if !keys.is_empty() {
            (self.changed)(keys);
        }
    }
}

impl<K, F: Fn(BTreeSet<Key>) + Clone> driver::Index<K> for Follower<K, F> {
    fn begin_relist(&mut self) {
        self.relisting.clear();
    }
    fn relisted(&mut self, object: K) {
        self.relisting.push((self.wrap)(object));
    }
    fn end_relist(&mut self) {
        let objects = std::mem::take(&mut self.relisting);
        self.change(|view| view.reset(&self.cluster, self.kind, objects));
    }
    fn apply(&mut self, object: K) {
        let object = (self.wrap)(object);
        self.change(|view| view.apply(&self.cluster, object).into_iter().collect());
    }
    fn delete(&mut self, object: K) {
        let object = (self.wrap)(object);
        self.change(|view| view.delete(&self.cluster, &object).into_iter().collect());
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

/// The one line for credentials the peer's API server rejects (401): which peer, and how to give
/// it fresh ones.
fn rejected(peer: &Peer) -> String {
    preflight::Error::Unauthorized {
        cluster: format!("peer {}", peer.cluster),
        renew: peer.renew.clone(),
    }
    .to_string()
}

/// Classifies a failed request to a peer: credentials rejected or rights missing are a refusal
/// (configuration to fix), anything else is the peer being unreachable.
fn classify(peer: &Peer, error: &kube::Error) -> Admission {
    match error {
        kube::Error::Api(s) if s.code == 401 => Admission::Refused(rejected(peer)),
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
        Err(error) => return classify(peer, &error),
        Ok(Ok(())) => {}
    }
    probe(peer, shared).await
}

/// Can the peer's exchange records be listed right now?
async fn probe<F>(peer: &Peer, shared: &Shared<F>) -> Admission {
    let checked = preflight::peer(
        &peer.client,
        &peer.url,
        peer.cluster.as_str(),
        &peer.renew,
        &shared.namespace,
    )
    .await;
    match checked {
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
            Some(Key::new(
                labels.get(LABEL_SERVICE_NAMESPACE)?.clone(),
                labels.get(LABEL_SERVICE_NAME)?.clone(),
            ))
        })
        .collect()
}

/// Sets `peer`'s state, logging once per change.
fn set_state(states: &Peers, peer: &ClusterId, state: PeerState) {
    if !states.set(peer.as_str(), state.clone()) {
        return;
    }
    match &state {
        PeerState::Refused(why) => tracing::error!(%why, "peer refused"),
        PeerState::Unreachable(why) => tracing::warn!(%why, "peer unreachable"),
        PeerState::Synced => tracing::info!("peer synced"),
        PeerState::Connecting => {}
    }
}

/// Changes the view with `f`, and passes on the keys that changed; returns whether any did.
fn change_view<F>(shared: &Shared<F>, f: impl FnOnce(&mut View) -> BTreeSet<Key>) -> bool
where
    F: Fn(BTreeSet<Key>),
{
    let keys = f(&mut shared.view.lock().unwrap_or_else(|e| e.into_inner()));
    let any = !keys.is_empty();
    if any {
        (shared.changed)(keys);
    }
    any
}

/// How long a peer has been failing, and whether its records are left out for it.
#[derive(Default)]
struct Failing {
    since: Option<tokio::time::Instant>,
    excluded: bool,
}

impl Failing {
    /// The peer failed a check: it is refused (`refused`) or unreachable, for `why`. Its records
    /// stay merged through the grace period, and are left out past it.
    fn failed<F>(&mut self, peer: &ClusterId, shared: &Shared<F>, refused: bool, why: String)
    where
        F: Fn(BTreeSet<Key>),
    {
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        let (state, what) = if refused {
            (PeerState::Refused(why.clone()), "refused")
        } else {
            (PeerState::Unreachable(why.clone()), "unreachable")
        };
        set_state(&shared.states, peer, state);
        let down = since.elapsed();
        if self.excluded || down < shared.grace {
            return;
        }
        self.excluded = true;
        let reason = format!(
            "{what} for {}s (grace period {}s): {why}",
            down.as_secs(),
            shared.grace.as_secs()
        );
        if change_view(shared, |v| v.exclude(peer, reason, BTreeSet::new())) {
            tracing::warn!(?down, %why, "peer {what} past its grace period; its exports are left out");
        }
    }

    /// The peer answered: its records are merged again if they had been left out.
    fn recovered<F>(&mut self, peer: &ClusterId, shared: &Shared<F>)
    where
        F: Fn(BTreeSet<Key>),
    {
        self.since = None;
        if std::mem::take(&mut self.excluded) && change_view(shared, |v| v.include(peer)) {
            tracing::info!("peer back; its exports are included again");
        }
    }
}

/// Runs one peer until `shutdown`: checks its identity and rights, follows its records, probes
/// it, and leaves its records out of every merge while it is refused at admission, or has been
/// refused or unreachable for longer than the grace period since it was last admitted (taking
/// them back, unchanged, when it recovers). Records the view already holds for it (from the
/// supervisor this one replaces) get the same grace period. `synced` is set once its records
/// have been listed, or once it has been refused (nothing to wait for). Once `shutdown` is
/// cancelled it changes nothing more (a successor may have taken over).
pub async fn supervise<F>(peer: Peer, shared: Shared<F>, synced: watch::Sender<bool>)
where
    F: Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
{
    let shutdown = shared.shutdown.clone();
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {}
        _ = run_peer(peer, shared, synced) => {}
    }
}

async fn run_peer<F>(peer: Peer, shared: Shared<F>, synced: watch::Sender<bool>)
where
    F: Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
{
    set_state(&shared.states, &peer.cluster, PeerState::Connecting);
    let mut delay = Duration::from_secs(1);
    let mut failing = Failing::default();
    // Admission: identity, ClusterSet and rights.
    loop {
        match admit(&peer, &shared).await {
            Admission::Admitted => break,
            Admission::Refused(why) => {
                set_state(&shared.states, &peer.cluster, PeerState::Refused(why.clone()));
                let known = known_keys(&peer, &shared.namespace).await;
                if change_view(&shared, |v| {
                    v.exclude(&peer.cluster, format!("refused: {why}"), known)
                }) {
                    tracing::warn!("its exports are left out while it is refused");
                }
                failing.excluded = true;
                let _ = synced.send(true);
                // Checked again as often as a followed peer is probed: the refusal may be fixed,
                // and the services it publishes may change.
                delay = shared.probe_interval;
            }
            Admission::Unreachable(why) => {
                failing.failed(&peer.cluster, &shared, false, why);
                delay = (delay * 2).min(Duration::from_secs(30));
                if !failing.excluded {
                    // Records held from a predecessor must leave when the grace period ends.
                    delay = delay.min(shared.probe_interval);
                }
            }
        }
        tokio::time::sleep(delay).await;
    }
    change_view(&shared, |v| v.include(&peer.cluster));
    // Followed: the grace period counts from the first failed probe.
    let mut failing = Failing::default();

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
        loop {
            tokio::time::sleep(shared.probe_interval).await;
            match probe(&peer, &shared).await {
                Admission::Admitted => {
                    if shared
                        .states
                        .get(peer.cluster.as_str())
                        .is_some_and(|s| s.state != PeerState::Synced)
                    {
                        set_state(&shared.states, &peer.cluster, PeerState::Synced);
                    }
                    shared.states.contact(peer.cluster.as_str());
                    failing.recovered(&peer.cluster, &shared);
                }
                Admission::Refused(why) => failing.failed(&peer.cluster, &shared, true, why),
                Admission::Unreachable(why) => failing.failed(&peer.cluster, &shared, false, why),
            }
        }
    };
    tokio::select! {
        _ = follower => {}
        _ = prober => {}
    }
}

pub use mcsd_crds::names::mcsd::PEER as LABEL_PEER;
/// The Secret key holding the peer's cluster id.
pub const SECRET_KEY_NAME: &str = "name";
/// The Secret key holding the peer's kubeconfig.
pub const SECRET_KEY_KUBECONFIG: &str = "kubeconfig";
/// The optional Secret key holding the only address ranges the peer's endpoints may be in
/// (`10.2.0.0/16,fd00:2::/64`).
pub const SECRET_KEY_RANGES: &str = "ranges";

/// A peer as a Secret describes it.
async fn peer_from_secret(
    secret: &k8s_openapi::api::core::v1::Secret,
) -> Result<(Peer, Vec<ipnet::IpNet>, String), String> {
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
    let ranges_text = text(SECRET_KEY_RANGES).unwrap_or_default();
    let ranges = ranges_text
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.parse::<ipnet::IpNet>()
                .map_err(|e| format!("key {SECRET_KEY_RANGES:?}: {r:?} is not a CIDR range: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // A fingerprint of what the Secret says, to restart the peer only when it changes.
    let fingerprint = format!("{}\n{ranges_text}\n{yaml}", cluster.as_str());
    let renew = format!(
        "renew the kubeconfig in Secret {}/{}",
        secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret.metadata.name.as_deref().unwrap_or_default()
    );
    Ok((
        Peer {
            cluster,
            client,
            url,
            renew,
        },
        ranges,
        fingerprint,
    ))
}

/// A peer started from a Secret.
struct Running {
    cluster: ClusterId,
    fingerprint: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the peer's supervisor and waits until it has.
    async fn stopped(self) -> ClusterId {
        self.stop.cancel();
        let _ = self.task.await;
        self.cluster
    }
}

/// Stops the peer of Secret `secret` (deleted, unusable, or naming another peer now), forgets its
/// state and withdraws its exports at once.
async fn remove<F>(running: &mut BTreeMap<String, Running>, secret: &str, shared: &Shared<F>)
where
    F: Fn(BTreeSet<Key>),
{
    let Some(peer) = running.remove(secret) else {
        return;
    };
    let cluster = peer.stopped().await;
    shared.states.remove(cluster.as_str());
    change_view(shared, |view| {
        view.set_ranges(&cluster, Vec::new());
        let mut keys = view.forget(&cluster);
        keys.extend(view.include(&cluster));
        keys
    });
    tracing::info!(peer = %cluster, %secret, "peer removed");
}

/// Follows Secrets labelled [`LABEL_PEER`] in `namespace` until `shutdown`: a Secret added
/// starts its peer, deleted stops it and withdraws its exports at once, changed restarts it with
/// the new credentials. A change that keeps the peer's id (renewed credentials) keeps its records
/// merged meanwhile: the new supervisor takes them over, so a peer whose credentials had expired
/// comes back without a restart, and a routine renewal changes nothing imported.
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
    let mut secrets = driver::Watch::new(api, watcher::Config::default().labels(LABEL_PEER), |_| {});
    // By Secret name.
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut listed = Some(listed);
    let mut initial = Vec::new();
    loop {
        let event = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            e = secrets.next() => match e { Some(e) => e, None => return },
        };
        let (applied, deleted) = match event {
            watcher::Event::Apply(s) | watcher::Event::InitApply(s) => (Some(s), None),
            watcher::Event::Delete(s) => (None, Some(s)),
            watcher::Event::Init => (None, None),
            watcher::Event::InitDone => {
                if let Some(tx) = listed.take() {
                    let _ = tx.send(std::mem::take(&mut initial));
                }
                (None, None)
            }
        };
        if let Some(secret) = deleted {
            remove(&mut running, &secret.metadata.name.unwrap_or_default(), &shared).await;
        }
        let Some(secret) = applied else { continue };
        let secret_name = secret.metadata.name.clone().unwrap_or_default();
        let (peer, ranges, fingerprint) = match peer_from_secret(&secret).await {
            Ok(p) => p,
            Err(why) => {
                tracing::error!(secret = %secret_name, %why, "peer Secret ignored");
                remove(&mut running, &secret_name, &shared).await;
                continue;
            }
        };
        let previous = running.get(&secret_name);
        if previous.is_some_and(|r| r.fingerprint == fingerprint) {
            continue;
        }
        // The same peer with new credentials: its supervisor is replaced, its records stay.
        let renewed = previous.is_some_and(|r| r.cluster == peer.cluster);
        if renewed {
            if let Some(old) = running.remove(&secret_name) {
                old.stopped().await;
            }
        } else {
            remove(&mut running, &secret_name, &shared).await;
        }
        let taken = reserved.contains(&peer.cluster) || running.values().any(|r| r.cluster == peer.cluster);
        if taken {
            tracing::error!(secret = %secret_name, peer = %peer.cluster, "peer Secret ignored: that id is already a peer (or this cluster)");
            continue;
        }
        if renewed {
            tracing::info!(peer = %peer.cluster, secret = %secret_name, "peer credentials changed");
        } else {
            tracing::info!(peer = %peer.cluster, secret = %secret_name, "peer added");
        }
        // The ranges apply to what the new supervisor lists.
        change_view(&shared, |view| {
            view.set_ranges(&peer.cluster, ranges);
            BTreeSet::new()
        });
        let stop = shared.shutdown.child_token();
        let (tx, rx) = watch::channel(false);
        if listed.is_some() {
            initial.push((peer.cluster.clone(), rx));
        }
        let cluster = peer.cluster.clone();
        let mut own = shared.clone();
        own.shutdown = stop.clone();
        let span = tracing::info_span!("peer", peer = %peer.cluster);
        let task = tokio::spawn(supervise(peer, own, tx).instrument(span));
        running.insert(
            secret_name,
            Running {
                cluster,
                fingerprint,
                stop,
                task,
            },
        );
    }
}
