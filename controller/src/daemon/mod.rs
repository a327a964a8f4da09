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
//!
//! Where each part is: [`start`] wires them; `local.rs` holds the local watches and their caches,
//! `peers.rs` the followers of exchange records (this cluster's own and every peer's),
//! `writers.rs` the exporter and importer loops with their queues (`queue.rs`), `leader.rs` the
//! election, `dns.rs` the DNS index's watches; every watch runs through `driver.rs`.

pub(crate) mod apply;
mod exporter;
mod hub;
mod importer;
pub mod index;
pub mod leader;
mod local;
pub mod metrics;
pub mod peers;
mod queue;
mod sources;
pub mod status;
pub mod why;
mod writers;
pub use writers::DEFAULT_WRITE_CONCURRENCY;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{Client, ResourceExt, runtime::reflector::Store};
use mcsd_crds::{ClusterId, mcs::v1beta1::ServiceImport};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use self::apply::Writes;
use self::{exporter::Exporter, importer::Importer, local::Local, writers::Writers};
use crate::{
    cluster::identity::Identity,
    core::view::{Key, View},
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
    /// How many services each writer (exports, imports) reconciles at once
    /// ([`writers::DEFAULT_WRITE_CONCURRENCY`] unless told).
    pub write_concurrency: usize,
    /// Leader election among this cluster's replicas; `None`: this replica always writes.
    pub election: Option<leader::Election>,
    /// What peers' records may bring, and which local namespaces may export.
    pub guard: crate::core::guard::Guard,
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
    pub why: why::Sources,
    /// The writers' queues (exports, imports), for [`Self::idle`].
    queues: (queue::Queue, queue::Queue),
    stopped: watch::Receiver<bool>,
}

impl Handle {
    /// Whether the writers have worked through every service marked so far: nothing queued, in
    /// the batch being worked, or waiting out a retry. What the watches delivered until now is
    /// written, or found right. (A replica that does not lead keeps its work until it does.)
    pub fn idle(&self) -> bool {
        self.queues.0.is_idle() && self.queues.1.is_idle()
    }

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
        let (view, converged) = (self.why.view.clone(), self.converged.clone());
        mcsd_dns::AdminExtras {
            why: Some(Arc::new(move |name: &str, zone: &mcsd_dns::Zone| {
                serde_json::to_string(&why.explain(name, zone)).unwrap_or_default()
            })),
            metrics: Some(Arc::new(
                move |registry: &mut prometheus_client::registry::Registry| {
                    metrics::register(registry, &writes, &peers, &flow, &view, &converged)
                },
            )),
            not_ready: Some(Arc::new(move || {
                (!*ready.borrow()).then(|| "controllers not started: watches still listing".to_string())
            })),
        }
    }
}

fn key_of<K: ResourceExt>(o: &K) -> Key {
    Key::new(o.namespace().unwrap_or_default(), o.name_any())
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
        write_concurrency,
        election,
        guard,
        peer_ranges,
    } = config;
    let replica = election.as_ref().map(|e| e.identity.clone());
    let (leader, writers_done, stopped) = lead(client.clone(), election, shutdown.clone());
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
    let (export_queue, export_worker) = queue::queue();
    let (import_queue, import_worker) = queue::queue();
    let (ready_tx, ready) = watch::channel(false);
    let (converged_tx, converged) = watch::channel(false);

    let local = Local::watch(
        &client,
        &exchange_namespace,
        &view,
        &export_queue,
        &import_queue,
        &shutdown,
    );
    let followers = follow_clusterset(
        &client,
        &identity,
        &exchange_namespace,
        peers,
        peer_grace,
        &view,
        (&export_queue, &import_queue),
        &leader,
        (&local, &namespace_policy),
        &flow,
        &shutdown,
    );

    tokio::spawn(
        status::publish(
            client.clone(),
            exchange_namespace.clone(),
            identity.clone(),
            replica,
            followers.states.clone(),
            leader.clone(),
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("status")),
    );
    let exporter = Exporter {
        cluster: identity.cluster.clone(),
        client: client.clone(),
        exchange_namespace: exchange_namespace.clone(),
        exports: local.exports.clone(),
        services: local.services.clone(),
        slices: local.slices.clone(),
        local_slices: local.slice_index.local.clone(),
        mirrors: local.slice_index.mirrors.clone(),
        own_records: local.own_records.clone(),
        view: view.clone(),
        writes: writes.clone(),
        namespaces: namespace_policy,
        statuses_in_flight: Default::default(),
    };
    let importer = Importer {
        client,
        namespaces: local.namespaces.clone(),
        imports: local.imports.clone(),
        services: local.services.clone(),
        slices: local.slices.clone(),
        imported_slices: local.slice_index.imported.clone(),
        view: view.clone(),
        writes: writes.clone(),
        flow: flow.clone(),
    };
    let handle = Handle {
        why: why::Sources {
            cluster: identity.cluster.clone(),
            view: view.clone(),
            peers: followers.states.clone(),
            exports: local.exports.clone(),
            imports: local.imports.clone(),
            services: local.services.clone(),
            slices: local.slices.clone(),
            imported_slices: local.slice_index.imported.clone(),
            namespaces: local.namespaces.clone(),
            leader: leader.clone(),
            ready: ready.clone(),
        },
        writes,
        flow,
        ready,
        imports: local.imports.clone(),
        peers: followers.states.clone(),
        leader: leader.clone(),
        converged,
        queues: (export_queue.clone(), import_queue.clone()),
        stopped,
    };
    let writers = Writers {
        exporter,
        importer,
        view,
        export_queue,
        import_queue,
        export_worker,
        import_worker,
        leader,
        ready: ready_tx,
        converged: converged_tx,
        peer_sync_timeout,
        concurrency: write_concurrency.max(1),
        shutdown,
    };
    tokio::spawn(
        async move {
            writers.run(local, followers).await;
            let _ = writers_done.send(true);
        }
        .instrument(tracing::info_span!("writers")),
    );
    handle
}

/// Starts leader election (or none): returns whether this replica leads, the sender the writers
/// use to say they have stopped (the Lease is given up after it), and what says the whole
/// daemon has stopped.
fn lead(
    client: Client,
    election: Option<leader::Election>,
    shutdown: CancellationToken,
) -> (watch::Receiver<bool>, watch::Sender<bool>, watch::Receiver<bool>) {
    let (leader_tx, leader) = watch::channel(election.is_none());
    let (writers_done_tx, mut writers_done) = watch::channel(false);
    let (stopped_tx, stopped) = watch::channel(false);
    tokio::spawn(async move {
        match election {
            Some(election) => match election.connection.clone() {
                Some(connection) => {
                    leader::run_isolated(connection, election, leader_tx, writers_done, shutdown).await
                }
                None => {
                    let span =
                        tracing::info_span!("leader", lease = %election.name, identity = %election.identity);
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
    (leader, writers_done_tx, stopped)
}

/// The followers of the ClusterSet's exchange records: this cluster's own, every configured
/// peer's, every peer's from a Secret, and the hub's.
struct Followers {
    /// Every peer's state.
    states: metrics::Peers,
    /// True once this cluster's own records have been listed.
    own_listed: watch::Receiver<bool>,
    /// Per configured peer: true once it has listed its records.
    peers_listed: Vec<(ClusterId, watch::Receiver<bool>)>,
    /// Once the peer Secrets have been listed: the same for each of their peers.
    secrets_listed: tokio::sync::oneshot::Receiver<Vec<(ClusterId, watch::Receiver<bool>)>>,
    /// True once the hub Secret has been looked for and, if there is one, the hub's records
    /// have been listed.
    hub_listed: watch::Receiver<bool>,
}

#[allow(clippy::too_many_arguments)]
fn follow_clusterset(
    client: &Client,
    identity: &Identity,
    exchange_namespace: &str,
    peers: Vec<Peer>,
    peer_grace: Duration,
    view: &Arc<Mutex<View>>,
    (export_queue, import_queue): (&queue::Queue, &queue::Queue),
    leader: &watch::Receiver<bool>,
    (local, namespace_policy): (&Local, &crate::core::guard::NamespacePolicy),
    flow: &metrics::Flow,
    shutdown: &CancellationToken,
) -> Followers {
    let changed = {
        let (qe, qi) = (export_queue.clone(), import_queue.clone());
        move |keys: BTreeSet<Key>| {
            qe.extend(keys.iter().cloned());
            qi.extend(keys);
        }
    };
    let states = metrics::Peers::default();
    let (own_tx, own_listed) = watch::channel(false);
    tokio::spawn(
        peers::follow(
            identity.cluster.clone(),
            client.clone(),
            exchange_namespace.to_string(),
            view.clone(),
            changed.clone(),
            own_tx,
            |_| {},
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("own_records", cluster = %identity.cluster)),
    );
    let shared = peers::Shared {
        namespace: exchange_namespace.to_string(),
        clusterset: identity.clusterset.clone(),
        view: view.clone(),
        changed,
        states: states.clone(),
        probe_interval: (peer_grace / 10).clamp(Duration::from_millis(200), Duration::from_secs(10)),
        grace: peer_grace,
        leader: leader.clone(),
        shutdown: shutdown.clone(),
        sources: sources::Sources::counting(flow.hub_received.clone()),
    };
    let mut peers_listed = Vec::new();
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
        peers_listed.push((peer.cluster.clone(), rx));
        shared.sources.set_mesh(&peer.cluster, true);
        let span = tracing::info_span!("peer", peer = %peer.cluster);
        tokio::spawn(peers::supervise(peer, shared.clone(), tx).instrument(span));
    }
    let (hub_tx, hub_listed) = watch::channel(false);
    tokio::spawn(hub::follow_hub(
        hub::Context {
            client: client.clone(),
            cluster: identity.cluster.clone(),
            shared: shared.clone(),
            local: local.clone(),
            namespaces: namespace_policy.clone(),
        },
        hub_tx,
    ));
    let (secrets_tx, secrets_listed) = tokio::sync::oneshot::channel();
    tokio::spawn(
        peers::follow_secrets(client.clone(), shared, known, secrets_tx)
            .instrument(tracing::info_span!("peer_secrets")),
    );
    Followers {
        states,
        own_listed,
        peers_listed,
        secrets_listed,
        hub_listed,
    }
}
