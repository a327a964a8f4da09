//! Peers given as Secrets in the exchange namespace: each Secret's peer gets a supervisor,
//! replaced when its credentials change and stopped when the Secret goes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, runtime::watcher};
use mcsd_crds::ClusterId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{
    Shared, change_view,
    renew::{Target, renew},
    supervise,
};
use crate::{
    cluster::driver,
    core::{
        peer_secret::{KEY_KUBECONFIG, LABEL as LABEL_PEER, PeerSecret, Renewal},
        view::Key,
    },
    daemon::Peer,
};

/// A peer as a Secret describes it: the peer (with a client built from its kubeconfig), its
/// ranges, the fingerprint of what the Secret says, and the renewal it asks for.
async fn peer_from_secret(
    secret: &Secret,
) -> Result<(Peer, Vec<ipnet::IpNet>, String, Option<Renewal>), String> {
    let read = PeerSecret::read(secret)?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&read.kubeconfig)
        .map_err(|e| format!("key {KEY_KUBECONFIG:?} is not a kubeconfig: {e}"))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| format!("key {KEY_KUBECONFIG:?} is not usable: {e}"))?;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
    let fingerprint = read.fingerprint();
    Ok((
        Peer {
            cluster: read.cluster,
            client,
            url,
            renew: read.fix,
        },
        read.ranges,
        fingerprint,
        read.renewal,
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
    shared.sources.set_mesh(&cluster, false);
    // What the hub holds of the cluster (if this cluster reads one) takes over in the same
    // change: a ClusterSet moving from mesh to hub loses nothing on the way.
    change_view(shared, |view| {
        let mut keys = view.warn(&cluster, None);
        keys.extend(shared.sources.take_over(&cluster, view));
        keys.extend(view.include(&cluster));
        keys
    });
    tracing::info!(peer = %cluster, %secret, "peer removed");
}

/// The peer Secrets as the watch last had them, by name: what the follower makes its supervisors
/// match. A re-list replaces them all, so a Secret deleted while the watch was down (and
/// re-listed, after a `410 Gone` or an API server restart) is gone from here too.
#[derive(Debug, Default)]
struct Wanted {
    secrets: BTreeMap<String, Secret>,
    /// The re-list being delivered.
    relisting: Option<BTreeMap<String, Secret>>,
    /// Secrets added, changed or gone since last taken.
    changed: BTreeSet<String>,
}

impl driver::Index<Secret> for Wanted {
    fn begin_relist(&mut self) {
        self.relisting = Some(BTreeMap::new());
    }

    fn relisted(&mut self, secret: Secret) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        self.relisting.get_or_insert_default().insert(name, secret);
    }

    fn end_relist(&mut self) {
        let listed = self.relisting.take().unwrap_or_default();
        // Everything either side names: what is unchanged keeps its supervisor (same fingerprint).
        self.changed.extend(self.secrets.keys().cloned());
        self.changed.extend(listed.keys().cloned());
        self.secrets = listed;
    }

    fn apply(&mut self, secret: Secret) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        self.changed.insert(name.clone());
        self.secrets.insert(name, secret);
    }

    fn delete(&mut self, secret: Secret) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        self.secrets.remove(&name);
        self.changed.insert(name);
    }
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
    let api: Api<Secret> = Api::namespaced(client.clone(), &shared.namespace);
    let mut secrets = driver::Watch::new(api, watcher::Config::default().labels(LABEL_PEER), |_| {});
    let mut wanted = Wanted::default();
    let mut follower = Follower {
        client,
        shared,
        reserved,
        running: BTreeMap::new(),
        initial: Some(Vec::new()),
    };
    let mut listed = Some(listed);
    loop {
        let event = tokio::select! {
            _ = follower.shared.shutdown.cancelled() => return,
            e = secrets.next() => match e { Some(e) => e, None => return },
        };
        if secrets.feed(&mut wanted, event) == driver::Step::Listing {
            continue;
        }
        for name in std::mem::take(&mut wanted.changed) {
            match wanted.secrets.get(&name) {
                Some(secret) => follower.start(secret).await,
                None => remove(&mut follower.running, &name, &follower.shared).await,
            }
        }
        if secrets.is_listed()
            && let Some(tx) = listed.take()
        {
            let _ = tx.send(follower.initial.take().unwrap_or_default());
        }
    }
}

/// The peers started from Secrets.
struct Follower<F> {
    client: Client,
    shared: Shared<F>,
    /// Ids that no Secret may take: `--peer`'s and this cluster's.
    reserved: BTreeSet<ClusterId>,
    /// By Secret name.
    running: BTreeMap<String, Running>,
    /// Until the first list is complete: the peers started, with their "listed" signals.
    initial: Option<Vec<(ClusterId, watch::Receiver<bool>)>>,
}

impl<F> Follower<F>
where
    F: Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
{
    /// Starts the peer of `secret`, or restarts it if what the Secret says has changed.
    async fn start(&mut self, secret: &Secret) {
        let (running, shared) = (&mut self.running, &self.shared);
        let secret_name = secret.metadata.name.clone().unwrap_or_default();
        let (peer, ranges, fingerprint, renewal) = match peer_from_secret(secret).await {
            Ok(p) => p,
            Err(why) => {
                tracing::error!(secret = %secret_name, %why, "peer Secret ignored");
                remove(running, &secret_name, shared).await;
                return;
            }
        };
        let previous = running.get(&secret_name);
        if previous.is_some_and(|r| r.fingerprint == fingerprint) {
            return;
        }
        // The same peer with new credentials: its supervisor is replaced, its records stay.
        let renewed = previous.is_some_and(|r| r.cluster == peer.cluster);
        if renewed {
            if let Some(old) = running.remove(&secret_name) {
                old.stopped().await;
            }
        } else {
            remove(running, &secret_name, shared).await;
        }
        let taken =
            self.reserved.contains(&peer.cluster) || running.values().any(|r| r.cluster == peer.cluster);
        if taken {
            tracing::error!(secret = %secret_name, peer = %peer.cluster, "peer Secret ignored: that id is already a peer (or this cluster)");
            return;
        }
        if renewed {
            tracing::info!(peer = %peer.cluster, secret = %secret_name, "peer credentials changed");
        } else {
            tracing::info!(peer = %peer.cluster, secret = %secret_name, "peer added");
        }
        // Its records come from it from now on, not from the hub; the ranges apply to what the
        // new supervisor lists.
        shared.sources.set_mesh(&peer.cluster, true);
        shared.states.set_via_hub(peer.cluster.as_str(), false);
        change_view(shared, |view| {
            view.set_ranges(&peer.cluster, ranges);
            BTreeSet::new()
        });
        let stop = shared.shutdown.child_token();
        let (tx, rx) = watch::channel(false);
        if let Some(initial) = &mut self.initial {
            initial.push((peer.cluster.clone(), rx));
        }
        let cluster = peer.cluster.clone();
        shared
            .states
            .set_credential_expiry(cluster.as_str(), renewal.as_ref().map(|r| r.expires.as_second()));
        // New credentials: whatever was wrong with renewing the old ones is no longer.
        shared.states.set_credential_problem(cluster.as_str(), None);
        change_view(shared, |view| view.warn(&cluster, None));
        let report = {
            let (shared, cluster, fix) = (shared.clone(), cluster.clone(), peer.renew.clone());
            move |problem: Option<String>| {
                let problem = problem.map(|p| format!("{p}; {fix}"));
                shared
                    .states
                    .set_credential_problem(cluster.as_str(), problem.clone());
                change_view(&shared, |view| view.warn(&cluster, problem));
            }
        };
        let renewing = renewal.map(|r| {
            let target = Target {
                peer: peer.client.clone(),
                local: self.client.clone(),
                namespace: shared.namespace.clone(),
                secret: secret_name.clone(),
            };
            renew(target, r, report, shared.leader.clone(), stop.clone())
        });
        let mut own = shared.clone();
        own.shutdown = stop.clone();
        let span = tracing::info_span!("peer", peer = %peer.cluster);
        let task = tokio::spawn(
            async move {
                let renewing = async {
                    if let Some(r) = renewing {
                        r.await;
                    }
                };
                tokio::join!(supervise(peer, own, tx), renewing);
            }
            .instrument(span),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::driver::Index as _;

    fn secret(name: &str, version: &str) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.into());
        secret.metadata.resource_version = Some(version.into());
        secret
    }

    #[test]
    fn a_relist_without_a_secret_whose_deletion_was_missed_stops_its_peer() {
        let mut wanted = Wanted::default();
        driver::check_relist_drops_a_missed_deletion(
            &mut wanted,
            secret("peer-a", "1"),
            secret("peer-b", "2"),
            |w, s| w.secrets.contains_key(s.metadata.name.as_deref().unwrap()),
        );
        // And the follower is told, so it stops peer-b's supervisor and withdraws its exports.
        assert!(wanted.changed.contains("peer-b"));
    }

    #[test]
    fn each_change_names_its_secret() {
        let mut wanted = Wanted::default();
        wanted.apply(secret("peer-a", "1"));
        wanted.delete(secret("peer-a", "1"));
        assert!(wanted.secrets.is_empty());
        assert_eq!(wanted.changed.iter().collect::<Vec<_>>(), ["peer-a"]);
    }
}
