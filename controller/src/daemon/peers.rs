//! The peers of this cluster: verifying who a peer is, supervising each (admission, probes, the
//! grace period), following its exchange namespace into the view (`peers/follow.rs`, also used
//! for this cluster's own), and the peers given as Secrets (`peers/secrets.rs`).

mod follow;
pub mod renew;
mod secrets;

pub use self::{follow::follow, secrets::follow_secrets};

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
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
    cluster::preflight,
    core::exchange::{LABEL_EXCHANGE, LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE},
    core::view::{Key, View},
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
    /// True while this replica leads (it alone writes: renewed peer tokens).
    pub leader: watch::Receiver<bool>,
    /// Stops everything.
    pub shutdown: CancellationToken,
    /// Which clusters are followed as mesh peers, and what the hub holds of each member.
    pub sources: super::sources::Sources,
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
pub(super) fn change_view<F>(shared: &Shared<F>, f: impl FnOnce(&mut View) -> BTreeSet<Key>) -> bool
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
    // A supervisor taking over from one with older credentials (a renewal, a rotation) keeps the
    // state it finds until its own admission decides: a routine renewal does not flap.
    if shared.states.get(peer.cluster.as_str()).is_none() {
        set_state(&shared.states, &peer.cluster, PeerState::Connecting);
    }
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
