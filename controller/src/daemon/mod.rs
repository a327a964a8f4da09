//! `mcsd run`: the controllers of one cluster, wired together.
//!
//! ```text
//!  local watches ──keys──▶ exporter ──▶ exchange records (own namespace)
//!                                         │ followed, like every peer's, into
//!  peer watches ────────────────────────▶ View ──keys──▶ importer ──▶ imports, derived Services, slices
//!                                                   └──▶ exporter (Conflict conditions)
//! ```
//!
//! Start-up order: identity is established by the caller; then every local watch lists, this
//! cluster's own exchange records are listed, peers get a bounded time to list theirs, and only
//! then do the writers start, so the first pass sees complete data and rewrites nothing that is
//! already right.

pub(crate) mod apply;
pub mod dns;
mod driver;
mod exporter;
mod importer;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod peers;
mod queue;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::{
    core::v1::{ConfigMap, Namespace, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        reflector::{self, Store},
        watcher,
    },
};
use mcsd_crds::{
    ClusterId,
    mcs::v1beta1::{ServiceExport, ServiceImport},
    names,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use self::apply::Writes;
use self::{exporter::Exporter, importer::Importer};
use crate::{
    exchange::LABEL_EXCHANGE,
    identity::Identity,
    import::LABEL_DERIVED_FROM,
    view::{Key, View},
};

/// A peer: a cluster id and a client whose credentials may read its exchange namespace.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Peer {
    /// The peer's cluster id, as configured.
    pub cluster: ClusterId,
    /// A client for its API server.
    pub client: Client,
    /// Its API server's address, for messages.
    pub url: String,
    /// How to give it fresh credentials, for the message when they are rejected ("put … in
    /// Secret mcsd-system/peer-b").
    pub renew: String,
}

/// Everything the controllers of one cluster need.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Config {
    /// The local API server.
    pub client: Client,
    /// This cluster's identity.
    pub identity: Identity,
    /// The exchange namespace (the same name in every cluster).
    pub exchange_namespace: String,
    /// The other clusters of the ClusterSet.
    pub peers: Vec<Peer>,
    /// How long to wait for peers to list their records before the writers start anyway.
    pub peer_sync_timeout: Duration,
    /// How long a peer may be unreachable before its exports are left out.
    pub peer_grace: Duration,
    /// Leader election among this cluster's replicas; `None`: this replica always writes.
    pub election: Option<leader::Election>,
    /// What peers' records may bring, and which local namespaces may export.
    pub guard: crate::guard::Guard,
    /// Per peer given on the command line: the only ranges its endpoint addresses may be in.
    pub peer_ranges: BTreeMap<ClusterId, Vec<ipnet::IpNet>>,
}

/// What a running daemon exposes.
#[derive(Clone, Debug)]
pub struct Handle {
    /// Writes made so far.
    pub writes: Writes,
    /// True once every watch has listed and the writers run.
    pub ready: watch::Receiver<bool>,
    /// Local ServiceImports (the DNS index reads the same objects).
    pub imports: Store<ServiceImport>,
    /// Every peer's state.
    pub peers: metrics::Peers,
    /// Propagation latency and conflicts.
    pub flow: metrics::Flow,
    /// True while this replica holds the Lease (always, without leader election).
    pub leader: watch::Receiver<bool>,
    /// True once the first full pass of the writers (as leader) has been worked through: every
    /// service known at start reconciled, nothing left queued or waiting to be retried. What
    /// that pass did not write is not going to be written without a new event.
    pub converged: watch::Receiver<bool>,
    /// What `mcsd why` reads.
    pub why: crate::why::Sources,
    stopped: watch::Receiver<bool>,
}

impl Handle {
    /// Waits, after `shutdown`, until the writers have finished their batch and the Lease has
    /// been given up.
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// The daemon's part of `/metrics` and `/readyz`: writes and peer states; ready once every
    /// watch has listed and the writers run.
    pub fn admin_extras(&self) -> mcsd_dns::AdminExtras {
        let (writes, peers, ready) = (self.writes.clone(), self.peers.clone(), self.ready.clone());
        let (why, flow) = (self.why.clone(), self.flow.clone());
        let view = self.why.view.clone();
        mcsd_dns::AdminExtras {
            why: Some(Arc::new(move |name: &str, zone: &mcsd_dns::Zone| {
                serde_json::to_string(&why.explain(name, zone)).unwrap_or_default()
            })),
            metrics: Some(Arc::new(move |out: &mut String| {
                writes.render(out);
                peers.render(out);
                flow.render(out);
                metrics::render_refusals(&view.lock().unwrap_or_else(|e| e.into_inner()), out);
            })),
            not_ready: Some(Arc::new(move || {
                (!*ready.borrow()).then(|| "controllers not started: watches still listing".to_string())
            })),
        }
    }
}

/// The client-side annotation `kubectl apply` keeps: a copy of the whole object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what mcsd never reads from an object before it is kept: `managedFields` (often half of
/// an object's size) and kubectl's copy of the object in its last-applied annotation.
pub(crate) fn slim<K: Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// [`slim`], for an EndpointSlice kept in the controllers' store. Of the slices mcsd writes
/// itself (mirrors and imports) only the metadata and ports are kept: the controllers compare the
/// hash in their annotation, never their endpoints, and `mcsd why` reads those from the View.
/// Other slices lose the spare capacity decoding left in their endpoint list.
pub(crate) fn slim_slice(slice: &mut EndpointSlice) {
    slim(slice);
    let ours = slice.labels().get(names::LABEL_MANAGED_BY).map(String::as_str) == Some(names::MANAGED_BY);
    if ours {
        slice.endpoints = Vec::new();
    } else {
        slice.endpoints.shrink_to_fit();
    }
}

/// A reflector's store fed by the watch driver: each event is applied to the store first, then
/// `on_event` sees the object (so whatever it queues reads the store with the event in it).
struct Feed<K, F>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    writer: reflector::store::Writer<K>,
    on_event: F,
}

impl<K, F> Feed<K, F>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    F: Fn(&K),
{
    fn store(&mut self, event: watcher::Event<K>) {
        self.writer.apply_watcher_event(&event);
        if let watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) = &event {
            (self.on_event)(o);
        }
    }
}

impl<K, F> driver::Index<K> for Feed<K, F>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    F: Fn(&K),
{
    fn begin_relist(&mut self) {
        self.store(watcher::Event::Init);
    }
    fn relisted(&mut self, object: K) {
        self.store(watcher::Event::InitApply(object));
    }
    fn end_relist(&mut self) {
        self.store(watcher::Event::InitDone);
    }
    fn apply(&mut self, object: K) {
        self.store(watcher::Event::Apply(object));
    }
    fn delete(&mut self, object: K) {
        self.store(watcher::Event::Delete(object));
    }
}

fn store_and_feed<K>(
    api: Api<K>,
    config: watcher::Config,
    prepare: fn(&mut K),
    on_event: impl Fn(&K) + Send + 'static,
    shutdown: CancellationToken,
) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let span = tracing::info_span!("watch", kind = %K::kind(&Default::default()));
    let feed = Feed { writer, on_event };
    tokio::spawn(
        driver::Watch::new(api, config, prepare)
            .run(feed, shutdown)
            .instrument(span),
    );
    store
}

fn key_of<K: ResourceExt>(o: &K) -> Key {
    Key::new(o.namespace().unwrap_or_default(), o.name_any())
}

/// Reconciles the worker's batches until `shutdown` (a batch in progress is finished first).
/// A key that fails is retried after 0.5 s, doubling up to 30 s while it keeps failing.
/// `drained` is set whenever nothing is waiting (nothing queued, nothing to retry).
async fn work<F, Fut>(
    worker: &mut queue::Worker,
    shutdown: &CancellationToken,
    drained: &watch::Sender<bool>,
    reconcile: F,
) where
    F: Fn(Key) -> Fut,
    Fut: std::future::Future<Output = kube::Result<()>>,
{
    let mut failures: std::collections::HashMap<Key, u32> = std::collections::HashMap::new();
    loop {
        if worker.is_drained() {
            drained.send_replace(true);
        }
        let batch = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            b = worker.next_batch() => match b { Some(b) => b, None => return },
        };
        for key in batch {
            match reconcile(key.clone()).await {
                Ok(()) => {
                    failures.remove(&key);
                }
                Err(error) => {
                    let n = failures.entry(key.clone()).or_default();
                    *n = n.saturating_add(1);
                    let delay = Duration::from_millis(500)
                        .saturating_mul(1 << (*n - 1).min(6))
                        .min(Duration::from_secs(30));
                    tracing::warn!(namespace = %key.namespace, name = %key.name, %error, retry_in = ?delay, "reconcile failed");
                    worker.queue().retry(key, delay);
                }
            }
        }
    }
}

/// Runs the controllers of one cluster until `shutdown`. Returns once every task has started;
/// the work goes on in background tasks.
pub async fn start(config: Config, shutdown: CancellationToken) -> Handle {
    let Config {
        client,
        identity,
        exchange_namespace,
        peers,
        peer_sync_timeout,
        peer_grace,
        election,
        guard,
        peer_ranges,
    } = config;
    let (leader_tx, mut is_leader) = watch::channel(election.is_none());
    let (writers_done_tx, writers_done) = watch::channel(false);
    let (stopped_tx, stopped) = watch::channel(false);
    {
        let (client, shutdown, mut writers_done) = (client.clone(), shutdown.clone(), writers_done.clone());
        tokio::spawn(async move {
            match election {
                Some(election) => match election.connection.clone() {
                    Some(connection) => {
                        leader::run_isolated(connection, election, leader_tx, writers_done, shutdown).await
                    }
                    None => {
                        let span = tracing::info_span!("leader", lease = %election.name, identity = %election.identity);
                        leader::run(client, election, leader_tx, writers_done, shutdown)
                            .instrument(span)
                            .await
                    }
                },
                None => {
                    let _ = writers_done.wait_for(|d| *d).await;
                }
            }
            let _ = stopped_tx.send(true);
        });
    }
    let writes = Writes::default();
    {
        // The recent-write cache drops what is old even when no more writes come.
        let (writes, shutdown) = (writes.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(10)) => writes.prune(),
                }
            }
        });
    }
    let flow = metrics::Flow::default();
    let namespace_policy = guard.namespaces.clone();
    let mut guarded = View::guarded(identity.cluster.clone(), guard);
    for (peer, ranges) in peer_ranges {
        guarded.set_ranges(&peer, ranges);
    }
    let view = Arc::new(Mutex::new(guarded));
    let (export_queue, mut export_worker) = queue::queue();
    let (import_queue, mut import_worker) = queue::queue();
    let (ready_tx, ready) = watch::channel(false);
    let (converged_tx, converged) = watch::channel(false);

    // Local watches. Each event marks the services it concerns.
    let q = export_queue.clone();
    let exports = store_and_feed(
        Api::<ServiceExport>::all(client.clone()),
        watcher::Config::default(),
        slim,
        move |o| q.push(key_of(o)),
        shutdown.clone(),
    );
    let (qe, qi) = (export_queue.clone(), import_queue.clone());
    let services = store_and_feed(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        slim,
        move |o: &Service| {
            qe.push(key_of(o));
            if let Some(from) = o.labels().get(LABEL_DERIVED_FROM) {
                qi.push(Key::new(o.namespace().unwrap_or_default(), from.clone()));
            }
        },
        shutdown.clone(),
    );
    let (qe, qi) = (export_queue.clone(), import_queue.clone());
    let slice_index = index::Slices::default();
    let idx = slice_index.clone();
    let slices = store_and_feed(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        slim_slice,
        move |o: &EndpointSlice| {
            let ns = o.namespace().unwrap_or_default();
            let name = o.name_any();
            let labels = o.labels();
            if labels.get(names::LABEL_MANAGED_BY).map(String::as_str) == Some(names::MANAGED_BY) {
                if let Some(svc) = labels.get(names::LABEL_SERVICE_NAME) {
                    let key = Key::new(ns.clone(), svc.clone());
                    idx.imported.note(key.clone(), ns, name);
                    qi.push(key);
                } else if let (Some(sns), Some(svc)) = (
                    labels.get(crate::exchange::LABEL_SERVICE_NAMESPACE),
                    labels.get(crate::exchange::LABEL_SERVICE_NAME),
                ) {
                    let key = Key::new(sns.clone(), svc.clone());
                    idx.mirrors.note(key.clone(), ns, name);
                    qe.push(key);
                }
            } else if let Some(svc) = labels.get(names::LABEL_KUBERNETES_SERVICE_NAME) {
                let key = Key::new(ns.clone(), svc.clone());
                idx.local.note(key.clone(), ns, name);
                qe.push(key);
            }
        },
        shutdown.clone(),
    );
    let qi = import_queue.clone();
    let imports = store_and_feed(
        Api::<ServiceImport>::all(client.clone()),
        watcher::Config::default(),
        slim,
        move |o| qi.push(key_of(o)),
        shutdown.clone(),
    );
    let (qi, v) = (import_queue.clone(), view.clone());
    let namespaces = store_and_feed(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        slim,
        move |o: &Namespace| {
            let ns = o.name_any();
            let keys: Vec<Key> = v
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .filter(|k| k.namespace == ns)
                .cloned()
                .collect();
            qi.extend(keys);
        },
        shutdown.clone(),
    );
    let qe = export_queue.clone();
    let own_records = store_and_feed(
        Api::<ConfigMap>::namespaced(client.clone(), &exchange_namespace),
        watcher::Config::default().labels(LABEL_EXCHANGE),
        slim,
        move |o: &ConfigMap| {
            let labels = o.labels();
            if let (Some(ns), Some(svc)) = (
                labels.get(crate::exchange::LABEL_SERVICE_NAMESPACE),
                labels.get(crate::exchange::LABEL_SERVICE_NAME),
            ) {
                qe.push(Key::new(ns.clone(), svc.clone()));
            }
        },
        shutdown.clone(),
    );

    // Followers: this cluster's own records, and every peer's.
    let changed = {
        let (qe, qi) = (export_queue.clone(), import_queue.clone());
        move |keys: BTreeSet<Key>| {
            qe.extend(keys.iter().cloned());
            qi.extend(keys);
        }
    };
    let peer_states = metrics::Peers::default();
    let (own_tx, mut own_synced) = watch::channel(false);
    tokio::spawn(
        peers::follow(
            identity.cluster.clone(),
            client.clone(),
            exchange_namespace.clone(),
            view.clone(),
            changed.clone(),
            own_tx,
            |_| {},
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("own_records", cluster = %identity.cluster)),
    );
    let shared = peers::Shared {
        namespace: exchange_namespace.clone(),
        clusterset: identity.clusterset.clone(),
        view: view.clone(),
        changed,
        states: peer_states.clone(),
        probe_interval: (peer_grace / 10).clamp(Duration::from_millis(200), Duration::from_secs(10)),
        grace: peer_grace,
        shutdown: shutdown.clone(),
    };
    let mut peer_synced = Vec::new();
    let mut known = BTreeSet::from([identity.cluster.clone()]);
    for peer in peers {
        if !known.insert(peer.cluster.clone()) {
            let why = if peer.cluster == identity.cluster {
                "it is configured with this cluster's own id".to_string()
            } else {
                format!("another peer is already configured as {}", peer.cluster)
            };
            tracing::error!(peer = %peer.cluster, %why, "peer refused");
            // The first peer of that id keeps its state; the duplicate is only logged.
            continue;
        }
        let (tx, rx) = watch::channel(false);
        peer_synced.push((peer.cluster.clone(), rx));
        let span = tracing::info_span!("peer", peer = %peer.cluster);
        tokio::spawn(peers::supervise(peer, shared.clone(), tx).instrument(span));
    }
    let (secrets_tx, secrets_listed) = tokio::sync::oneshot::channel();
    tokio::spawn(
        peers::follow_secrets(client.clone(), shared.clone(), known, secrets_tx)
            .instrument(tracing::info_span!("peer_secrets")),
    );

    let exporter = Exporter {
        cluster: identity.cluster.clone(),
        client: client.clone(),
        exchange_namespace: exchange_namespace.clone(),
        exports: exports.clone(),
        services: services.clone(),
        slices: slices.clone(),
        local_slices: slice_index.local.clone(),
        mirrors: slice_index.mirrors.clone(),
        own_records: own_records.clone(),
        view: view.clone(),
        writes: writes.clone(),
        namespaces: namespace_policy,
    };
    let importer = Importer {
        client,
        namespaces: namespaces.clone(),
        imports: imports.clone(),
        services,
        slices,
        imported_slices: slice_index.imported,
        view: view.clone(),
        writes: writes.clone(),
        flow: flow.clone(),
    };

    let handle = Handle {
        why: crate::why::Sources {
            cluster: identity.cluster.clone(),
            view: view.clone(),
            peers: peer_states.clone(),
            exports: exports.clone(),
            imports: imports.clone(),
            services: importer.services.clone(),
            slices: importer.slices.clone(),
            imported_slices: importer.imported_slices.clone(),
            namespaces: namespaces.clone(),
            leader: is_leader.clone(),
            ready: ready.clone(),
        },
        writes,
        flow,
        ready,
        imports: imports.clone(),
        peers: peer_states,
        leader: is_leader.clone(),
        converged,
        stopped,
    };
    let writers = async move {
        // Wait for complete data before the first write.
        let local = async {
            let _ = exports.wait_until_ready().await;
            let _ = exporter.services.wait_until_ready().await;
            let _ = exporter.slices.wait_until_ready().await;
            let _ = imports.wait_until_ready().await;
            let _ = namespaces.wait_until_ready().await;
            let _ = own_records.wait_until_ready().await;
            let _ = own_synced.wait_for(|s| *s).await;
        };
        tokio::select! { _ = shutdown.cancelled() => return, _ = local => {} }
        let peers_listed = async {
            // Peers from Secrets count too, once the Secrets have been listed.
            let from_secrets = secrets_listed.await.unwrap_or_default();
            for (peer, mut rx) in peer_synced.into_iter().chain(from_secrets) {
                if rx.wait_for(|s| *s).await.is_err() {
                    tracing::warn!(%peer, "peer follower ended before listing");
                }
            }
        };
        if tokio::time::timeout(peer_sync_timeout, peers_listed)
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?peer_sync_timeout, "not every peer listed its records in time; starting anyway");
        }
        let _ = ready_tx.send(true);
        let (exports_drained, imports_drained) = (watch::channel(false).0, watch::channel(false).0);
        {
            let (mut e, mut i) = (exports_drained.subscribe(), imports_drained.subscribe());
            tokio::spawn(async move {
                if e.wait_for(|d| *d).await.is_ok() && i.wait_for(|d| *d).await.is_ok() {
                    converged_tx.send_replace(true);
                }
            });
        }
        // Write only while leading. Each time leadership is (re)gained: a full pass over
        // everything known (which writes nothing that is already right), then the queues.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = is_leader.wait_for(|l| *l) => if r.is_err() { return },
            }
            let everything: BTreeSet<Key> = {
                let v = view.lock().unwrap_or_else(|e| e.into_inner());
                v.keys()
                    .cloned()
                    .chain(exporter.exports.state().iter().map(|e| key_of(e.as_ref())))
                    .collect()
            };
            export_queue.extend(everything.iter().cloned());
            import_queue.extend(everything);
            import_queue.extend(importer.imports.state().iter().map(|i| key_of(i.as_ref())));
            let export_loop = work(&mut export_worker, &shutdown, &exports_drained, |key| {
                let exporter = &exporter;
                async move { exporter.reconcile(&key).await }
            });
            let import_loop = work(&mut import_worker, &shutdown, &imports_drained, |key| {
                let importer = &importer;
                async move { importer.reconcile(&key).await }
            });
            // Both loops finish their batch on shutdown; losing the Lease stops them at once.
            let both = async { tokio::join!(export_loop, import_loop) };
            tokio::select! {
                _ = both => return,
                _ = is_leader.wait_for(|l| !*l) => {}
            }
        }
    };
    tokio::spawn(
        async move {
            writers.await;
            let _ = writers_done_tx.send(true);
        }
        .instrument(tracing::info_span!("writers")),
    );
    handle
}
