//! The other members' records, read from the hub into the view: one cluster-wide watch per kind,
//! selected by the service namespaces this cluster has (the hub's API server filters, so a
//! member is sent only what it can import), started again with a new selector when those change.
//! Each object's cluster is the hub namespace it lives in. The hub is probed like a peer: while
//! it cannot be reached every record read from it stays, for the grace period.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    runtime::{reflector::Store, watcher},
};
use mcsd_crds::ClusterId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::interest;
use crate::{
    cluster::{driver, preflight},
    core::{
        exchange::{LABEL_EXCHANGE, LABEL_SERVICE_NAMESPACE, MirroredSlice},
        guard::NamespacePolicy,
        hub::{LABEL_MEMBER, Selection, declared_ranges, member_namespace, member_of, selection},
        view::{Key, Kind, Object},
    },
    daemon::{
        metrics::PeerState,
        peers::{Shared, change_view},
    },
};

/// How long the namespaces must be quiet before the watches are started again for a new set:
/// a burst of namespace changes costs one re-list.
const RESCOPE_DELAY: Duration = Duration::from_millis(300);

pub(in crate::daemon) struct Reader<F> {
    pub hub: Client,
    pub url: String,
    pub cluster: ClusterId,
    pub shared: Shared<F>,
    pub local_namespaces: Store<Namespace>,
    pub namespaces_changed: watch::Receiver<u64>,
    pub policy: NamespacePolicy,
    /// Spreads this member's retries after the hub fails (shared with the publisher).
    pub spread: driver::Spread,
}

impl<F> Reader<F>
where
    F: Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
{
    /// Reads the hub until `stop`; sets `listed` once the records of this cluster's namespaces
    /// have been listed (or the hub has been found refusing or unreachable past the first try).
    /// Returns once every task it started has stopped: nothing it read arrives after.
    pub(in crate::daemon) async fn run(mut self, stop: CancellationToken, listed: Arc<watch::Sender<bool>>) {
        let _ = self.local_namespaces.wait_until_ready().await;
        let (members, mut members_listed) = members(
            self.hub.clone(),
            self.cluster.clone(),
            self.shared.clone(),
            &self.spread,
            stop.clone(),
        );
        let mut tasks = vec![
            tokio::spawn(members),
            tokio::spawn(probe(
                self.hub.clone(),
                self.url.clone(),
                self.cluster.clone(),
                self.shared.clone(),
                self.spread.clone(),
                listed.clone(),
                stop.clone(),
            )),
        ];
        // The members' declared ranges first: the gate judges each object as it arrives.
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = members_listed.wait_for(|l| *l) => {}
        }
        while !stop.is_cancelled() {
            let wanted = interest(&self.local_namespaces, &self.policy);
            let scope = stop.child_token();
            let mut scoped = Vec::new();
            let (selector, only) = match selection(&wanted) {
                Selection::Nothing => (None, None),
                Selection::ByHub(selector) => (Some(selector), None),
                Selection::ByMember(selector, keep) => (Some(selector), Some(Arc::new(keep))),
            };
            match selector {
                Some(selector) => {
                    let (records, r) =
                        self.watch::<ConfigMap>(&selector, &only, Kind::Record, Object::Record, &scope);
                    let (slices, s) =
                        self.watch::<MirroredSlice>(&selector, &only, Kind::Slice, Object::Slice, &scope);
                    scoped.extend([r, s]);
                    let (listed, scope) = (listed.clone(), scope.clone());
                    scoped.push(tokio::spawn(async move {
                        for mut rx in [records, slices] {
                            tokio::select! {
                                _ = scope.cancelled() => return,
                                _ = rx.wait_for(|l| *l) => {}
                            }
                        }
                        listed.send_replace(true);
                    }));
                }
                None => {
                    // No namespace here may import: nothing on the hub concerns this cluster.
                    for kind in [Kind::Record, Kind::Slice] {
                        relisted(&self.shared, &self.cluster, kind, Vec::new());
                    }
                    listed.send_replace(true);
                }
            }
            // Until the set of namespaces changes (and stays changed for a moment).
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    r = self.namespaces_changed.changed() => if r.is_err() { break },
                }
                tokio::time::sleep(RESCOPE_DELAY).await;
                if interest(&self.local_namespaces, &self.policy) != wanted {
                    break;
                }
            }
            // The old watches stop before the new ones start: nothing of theirs comes late.
            scope.cancel();
            for task in scoped {
                let _ = task.await;
            }
            if self.namespaces_changed.has_changed().is_err() {
                break;
            }
        }
        stop.cancel();
        for task in tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// Starts the watch of one kind across the hub with `selector`; returns its "listed" signal
    /// and its task.
    fn watch<K>(
        &self,
        selector: &str,
        only: &Option<Arc<BTreeSet<String>>>,
        kind: Kind,
        wrap: fn(K) -> Object,
        scope: &CancellationToken,
    ) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>)
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let watch = driver::Watch::with_backoff(
            Api::<K>::all(self.hub.clone()),
            watcher::Config::default().labels(selector),
            crate::daemon::local::slim,
            &K::kind(&()),
            self.spread.backoff(),
        );
        let listed = watch.listed();
        let feed = Feed {
            kind,
            wrap,
            own: self.cluster.clone(),
            only: only.clone(),
            shared: self.shared.clone(),
            relisting: Vec::new(),
        };
        (listed, tokio::spawn(watch.run(feed, scope.clone())))
    }
}

/// One kind of the hub's records, into the sources and (for members not followed as mesh
/// peers) the view.
struct Feed<K, F> {
    kind: Kind,
    wrap: fn(K) -> Object,
    own: ClusterId,
    /// When the hub sends every record ([`Selection::ByMember`]): the service namespaces kept.
    only: Option<Arc<BTreeSet<String>>>,
    shared: Shared<F>,
    relisting: Vec<(ClusterId, String, Object)>,
}

impl<K: kube::Resource, F> Feed<K, F> {
    /// The member that wrote `object` (the hub namespace it lives in), its name, and the object;
    /// `None` for this cluster's own copy and for anything outside member namespaces.
    fn read(&self, object: K) -> Option<(ClusterId, String, Object)> {
        self.shared.sources.received();
        let cluster = member_of(object.meta().namespace.as_deref()?)?;
        if cluster == self.own {
            return None;
        }
        if let Some(only) = &self.only {
            let namespace = object.meta().labels.as_ref()?.get(LABEL_SERVICE_NAMESPACE)?;
            if !only.contains(namespace) {
                return None;
            }
        }
        let name = object.meta().name.clone()?;
        Some((cluster, name, (self.wrap)(object)))
    }
}

impl<K: kube::Resource, F: Fn(BTreeSet<Key>)> driver::Index<K> for Feed<K, F> {
    fn begin_relist(&mut self) {
        self.relisting.clear();
    }

    fn relisted(&mut self, object: K) {
        if let Some(read) = self.read(object) {
            self.relisting.push(read);
        }
    }

    fn end_relist(&mut self) {
        let listed = std::mem::take(&mut self.relisting);
        relisted(&self.shared, &self.own, self.kind, listed);
    }

    fn apply(&mut self, object: K) {
        let Some((cluster, name, object)) = self.read(object) else {
            return;
        };
        self.shared
            .sources
            .lock()
            .hub
            .entry(cluster.clone())
            .or_default()
            .insert((self.kind, name), object.clone());
        // Whether the cluster is read from the mesh instead is decided under the view's lock,
        // where a mesh peer's start and removal change it too.
        let sources = &self.shared.sources;
        change_view(&self.shared, |view| {
            if sources.is_mesh(&cluster) {
                return BTreeSet::new();
            }
            view.apply(&cluster, object).into_iter().collect()
        });
    }

    fn delete(&mut self, object: K) {
        let Some((cluster, name, object)) = self.read(object) else {
            return;
        };
        if let Some(objects) = self.shared.sources.lock().hub.get_mut(&cluster) {
            objects.remove(&(self.kind, name));
        }
        let sources = &self.shared.sources;
        change_view(&self.shared, |view| {
            if sources.is_mesh(&cluster) {
                return BTreeSet::new();
            }
            view.delete(&cluster, &object).into_iter().collect()
        });
    }
}

/// A complete list of one kind across the hub: every member's objects of that kind become what
/// it holds (none, for a member it no longer has), in one change of the view.
fn relisted<F: Fn(BTreeSet<Key>)>(
    shared: &Shared<F>,
    own: &ClusterId,
    kind: Kind,
    listed: Vec<(ClusterId, String, Object)>,
) {
    let mut by_cluster: BTreeMap<ClusterId, Vec<(String, Object)>> = BTreeMap::new();
    for (cluster, name, object) in listed {
        by_cluster.entry(cluster).or_default().push((name, object));
    }
    let resets: Vec<(ClusterId, Vec<Object>)> = {
        let mut sources = shared.sources.lock();
        let clusters: BTreeSet<ClusterId> = sources
            .hub
            .keys()
            .cloned()
            .chain(by_cluster.keys().cloned())
            .filter(|c| c != own)
            .collect();
        let mut resets = Vec::new();
        for cluster in clusters {
            let objects = by_cluster.remove(&cluster).unwrap_or_default();
            let held = sources.hub.entry(cluster.clone()).or_default();
            held.retain(|(k, _), _| *k != kind);
            for (name, object) in &objects {
                held.insert((kind, name.clone()), object.clone());
            }
            if held.is_empty() {
                sources.hub.remove(&cluster);
            }
            resets.push((cluster, objects.into_iter().map(|(_, o)| o).collect::<Vec<_>>()));
        }
        resets
    };
    change_view(shared, |view| {
        let mut keys = BTreeSet::new();
        for (cluster, objects) in resets {
            // Decided under the view's lock, as in `Feed::apply`.
            if !shared.sources.is_mesh(&cluster) {
                keys.extend(view.reset(&cluster, kind, objects));
            }
        }
        keys
    });
}

/// Ends reading the hub: every member read from it (and not followed as a mesh peer) leaves the
/// view at once, with its state and ranges.
pub(super) fn withdraw_all<F: Fn(BTreeSet<Key>)>(shared: &Shared<F>, own: &ClusterId) {
    let members: Vec<ClusterId> = {
        let mut sources = shared.sources.lock();
        let members: BTreeSet<ClusterId> = sources
            .hub
            .keys()
            .chain(sources.hub_ranges.keys())
            .cloned()
            .collect();
        sources.hub.clear();
        sources.hub_ranges.clear();
        members
            .into_iter()
            .filter(|c| c != own && !sources.mesh.contains(c))
            .collect()
    };
    change_view(shared, |view| shared.sources.hub_up(view));
    for cluster in &members {
        shared.states.remove(cluster.as_str());
    }
    change_view(shared, |view| {
        let mut keys = BTreeSet::new();
        for cluster in &members {
            view.set_ranges(cluster, Vec::new());
            keys.extend(view.forget(cluster));
            keys.extend(view.include(cluster));
        }
        keys
    });
}

/// Follows the members' namespaces on the hub: each member's declared ranges hold its records,
/// and each member has a state (`mcsd status`, `/metrics`) while its namespace exists. Returns
/// the task, and what says when the members have been listed.
fn members<F>(
    hub: Client,
    own: ClusterId,
    shared: Shared<F>,
    spread: &driver::Spread,
    stop: CancellationToken,
) -> (
    impl std::future::Future<Output = ()> + Send + 'static,
    watch::Receiver<bool>,
)
where
    F: Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
{
    let api: Api<Namespace> = Api::all(hub);
    let watch = driver::Watch::with_backoff(
        api,
        watcher::Config::default().labels(LABEL_MEMBER),
        |_| {},
        "Namespace",
        spread.backoff(),
    );
    let listed = watch.listed();
    // Members known from an earlier session: one that left meanwhile is forgotten at the list.
    let known = shared.sources.lock().hub_ranges.keys().cloned().collect();
    let members = Members {
        own,
        shared,
        known,
        relisting: Vec::new(),
    };
    (watch.run(members, stop), listed)
}

struct Members<F> {
    own: ClusterId,
    shared: Shared<F>,
    known: BTreeSet<ClusterId>,
    relisting: Vec<Namespace>,
}

impl<F: Fn(BTreeSet<Key>)> Members<F> {
    fn set(&mut self, namespace: &Namespace) {
        let Some(cluster) = member_of(&namespace.name_any()).filter(|c| *c != self.own) else {
            return;
        };
        let (ranges, error) = declared_ranges(&namespace.annotations().clone());
        if let Some(error) = error {
            tracing::error!(member = %cluster, %error, "member's declared ranges partly ignored");
        }
        self.known.insert(cluster.clone());
        let (mesh, changed) = {
            let mut sources = self.shared.sources.lock();
            let old = sources.hub_ranges.insert(cluster.clone(), ranges.clone());
            (sources.mesh.contains(&cluster), old.is_some_and(|o| o != ranges))
        };
        if !mesh {
            change_view(&self.shared, |view| {
                if changed {
                    // What is held was judged under the old ranges: judged again.
                    self.shared.sources.reread(&cluster, view)
                } else {
                    view.set_ranges(&cluster, ranges);
                    BTreeSet::new()
                }
            });
            if self.shared.states.get(cluster.as_str()).is_none() {
                self.shared.states.set(cluster.as_str(), PeerState::Synced);
            }
            self.shared.states.set_via_hub(cluster.as_str(), true);
        }
    }

    fn unset(&mut self, cluster: &ClusterId) {
        self.known.remove(cluster);
        let mesh = {
            let mut sources = self.shared.sources.lock();
            sources.hub_ranges.remove(cluster);
            sources.mesh.contains(cluster)
        };
        if !mesh {
            self.shared.states.remove(cluster.as_str());
        }
    }
}

impl<F: Fn(BTreeSet<Key>)> driver::Index<Namespace> for Members<F> {
    fn begin_relist(&mut self) {
        self.relisting.clear();
    }
    fn relisted(&mut self, namespace: Namespace) {
        self.relisting.push(namespace);
    }
    fn end_relist(&mut self) {
        let listed = std::mem::take(&mut self.relisting);
        let present: BTreeSet<ClusterId> = listed.iter().filter_map(|n| member_of(&n.name_any())).collect();
        for gone in self.known.clone().difference(&present) {
            self.unset(gone);
        }
        for namespace in &listed {
            self.set(namespace);
        }
    }
    fn apply(&mut self, namespace: Namespace) {
        self.set(&namespace);
    }
    fn delete(&mut self, namespace: Namespace) {
        if let Some(cluster) = member_of(&namespace.name_any()) {
            self.unset(&cluster);
        }
    }
}

/// Probes the hub as a peer is probed: past the grace period without an answer (or with
/// credentials refused), every member read from it is left out of the merges, and taken back,
/// unchanged, when the hub answers again. A hub that refuses or cannot be reached at the first
/// try also sets `listed`: the writers do not wait for it.
async fn probe<F>(
    hub: Client,
    url: String,
    own: ClusterId,
    shared: Shared<F>,
    spread: driver::Spread,
    listed: Arc<watch::Sender<bool>>,
    stop: CancellationToken,
) where
    F: Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
{
    let api: Api<ConfigMap> = Api::namespaced(hub, &member_namespace(&own));
    let mut since: Option<tokio::time::Instant> = None;
    let mut failing_logged = false;
    loop {
        let answer = api
            .list_metadata(&ListParams::default().labels(LABEL_EXCHANGE).limit(1))
            .await;
        let state = match answer {
            Ok(_) => {
                since = None;
                if std::mem::take(&mut failing_logged) {
                    tracing::info!(hub = %url, "hub answers again");
                }
                change_view(&shared, |view| shared.sources.hub_up(view));
                PeerState::Synced
            }
            Err(error) => {
                let why = match &error {
                    kube::Error::Api(s) if s.code == 401 => format!(
                        "the hub ({url}) rejects this cluster's credentials (401): renew the kubeconfig in Secret {}/hub (mcsd join --hub)",
                        shared.namespace
                    ),
                    kube::Error::Api(s) if s.code == 403 => format!(
                        "the hub ({url}) refuses this cluster (403): {}; is it enrolled (mcsd join --hub)?",
                        s.message
                    ),
                    other => format!("the hub ({url}) is unreachable: {}", preflight::one_line(other)),
                };
                if !std::mem::replace(&mut failing_logged, true) {
                    tracing::warn!(%why, "hub failing; what was read from it stays for the grace period");
                }
                listed.send_replace(true);
                let down = since.get_or_insert_with(tokio::time::Instant::now).elapsed();
                let already = shared.sources.lock().hub_down.is_some();
                if !already && down >= shared.grace {
                    let reason = format!(
                        "{why} for {}s (grace period {}s)",
                        down.as_secs(),
                        shared.grace.as_secs()
                    );
                    change_view(&shared, |view| {
                        let members = hub_members(&shared, &own);
                        let keys = members
                            .iter()
                            .flat_map(|c| view.exclude(c, reason.clone(), BTreeSet::new()))
                            .collect();
                        shared.sources.lock().hub_down =
                            Some((reason.clone(), members.into_iter().collect()));
                        keys
                    });
                    tracing::warn!(%why, "hub failing past the grace period; the exports read from it are left out");
                }
                if s_is_refusal(&error) {
                    PeerState::Refused(why)
                } else {
                    PeerState::Unreachable(why)
                }
            }
        };
        // Each member read from the hub is as reachable as the hub; a mesh peer is not read
        // from it.
        let mesh: Vec<ClusterId> = shared.sources.lock().mesh.iter().cloned().collect();
        for peer in mesh {
            shared.states.set_via_hub(peer.as_str(), false);
        }
        let members = hub_members(&shared, &own);
        spread.set_members(members.len() + 1);
        for member in members {
            shared.states.set(member.as_str(), state.clone());
            shared.states.set_via_hub(member.as_str(), true);
            if state == PeerState::Synced {
                shared.states.contact(member.as_str());
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(hub_probe_interval(shared.grace)) => {}
        }
    }
}

/// How often a member probes its hub: a tenth of the grace period, between 200 ms and 30 s. A
/// peer is probed every 10 s at most; a hub is probed by every member, and at 1,000 members the
/// probes (a quorum list, about 1.9 ms of the hub's CPU each) were nine tenths of what an idle
/// hub spent at 10 s (`benches/benches/hub.rs`). With the default 300-s grace period, what was
/// read from an unreachable hub leaves between 300 and 330 s after it stopped answering.
pub(crate) fn hub_probe_interval(grace: Duration) -> Duration {
    (grace / 10).clamp(Duration::from_millis(200), Duration::from_secs(30))
}

/// Whether the hub refused this cluster (credentials or rights), rather than not answering.
fn s_is_refusal(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 401 || s.code == 403)
}

/// The members read from the hub (not followed as mesh peers).
pub(super) fn hub_members<F>(shared: &Shared<F>, own: &ClusterId) -> Vec<ClusterId> {
    let sources = shared.sources.lock();
    sources
        .hub
        .keys()
        .chain(sources.hub_ranges.keys())
        .filter(|c| *c != own && !sources.mesh.contains(*c))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
