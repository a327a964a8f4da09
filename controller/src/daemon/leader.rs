//! Leader election among the replicas of one cluster, with a `coordination.k8s.io/v1` Lease.
//!
//! Only the leader writes; every replica watches and serves DNS. The rules:
//! - a replica takes the Lease when nobody holds it, or when the record it last saw has not
//!   changed for a whole lease duration by its own clock (so clock skew between replicas does
//!   not matter: a holder's `renewTime` is never compared with another machine's clock);
//! - every change is a replace with the `resourceVersion` that was read, so two candidates
//!   cannot both win;
//! - the leader renews every third of the duration, and steps down by itself when it has not
//!   managed to renew for two thirds of it: it stops writing before anyone else may start (a
//!   request that hangs is abandoned after a third of the duration, so it cannot delay that);
//! - on shutdown the leader gives the Lease up, so a successor takes over at once.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

/// How the replicas elect their leader.
#[derive(Clone, Debug)]
pub struct Election {
    /// The Lease's namespace (mcsd's own).
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (unique among the replicas: pod name and a random suffix).
    pub identity: String,
    /// How long a Lease is valid without renewal; also the longest handover.
    pub duration: Duration,
    /// Give the Lease up on shutdown (always, in production; a test turns it off to look like a
    /// crash).
    pub give_up_on_shutdown: bool,
    /// The election's own connection to the API server. With one, the election runs on a thread
    /// and runtime of its own ([`run_isolated`]), so a renewal never waits for a worker thread
    /// or a connection that the controllers' work keeps busy; `None`: the controllers' client.
    pub connection: Option<kube::Config>,
}

impl Election {
    /// Lease `mcsd` in `namespace`, identity from `MCSD_POD_NAME` (the Deployment sets it from
    /// the downward API) or the host name, and a random suffix.
    pub fn new(namespace: &str, duration: Duration) -> Self {
        let host = std::env::var("MCSD_POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "mcsd".to_string());
        Self {
            namespace: namespace.to_string(),
            name: "mcsd".to_string(),
            identity: format!("{host}-{:08x}", rand_u32()),
            duration,
            give_up_on_shutdown: true,
            connection: None,
        }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() as u32
}

/// What one look at the Lease found.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    holder: Option<String>,
    renew: Option<String>,
    /// The holder's own lease duration, as it wrote it.
    duration: Option<i32>,
}

fn seen(lease: &Lease) -> Seen {
    let spec = lease.spec.as_ref();
    Seen {
        holder: spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty()),
        renew: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0.to_string()),
        duration: spec.and_then(|s| s.lease_duration_seconds),
    }
}

/// [`run`] on a thread of its own, with a single-threaded runtime and a client made from
/// `connection`: however busy the controllers keep their runtime and their connections, the
/// renewals go out on time. Returns when the election has ended.
pub async fn run_isolated(
    connection: kube::Config,
    election: Election,
    leader: watch::Sender<bool>,
    writers_done: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let (ended_tx, ended) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("mcsd-lease".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot start the leader election's runtime: this replica never leads");
                    return;
                }
            };
            // The client spawns its connection tasks: it is made inside its runtime.
            let span = tracing::info_span!("leader", lease = %election.name, identity = %election.identity);
            runtime.block_on(tracing::Instrument::instrument(
                async move {
                    match Client::try_from(connection) {
                        Ok(client) => run(client, election, leader, writers_done, shutdown).await,
                        Err(error) => {
                            tracing::error!(%error, "cannot make the leader election's client: this replica never leads")
                        }
                    }
                },
                span,
            ));
            drop(ended_tx);
        });
    match thread {
        Ok(_) => {
            let _ = ended.await;
        }
        Err(error) => {
            tracing::error!(%error, "cannot start the leader election's thread: this replica never leads")
        }
    }
}

/// Runs the election until `shutdown`; `leader` is true while this replica holds the Lease.
/// On `shutdown` it waits for the writers to finish (`writers_done`, at most one lease duration)
/// before giving the Lease up.
pub async fn run(
    client: Client,
    election: Election,
    leader: watch::Sender<bool>,
    mut writers_done: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let renew_every = election.duration / 3;
    let step_down_after = election.duration * 2 / 3;
    let mut observed: Option<(Seen, Instant)> = None;
    let mut last_renewed: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // A request that hangs must not keep a leader writing past its step-down time: each
        // round gets at most a third of the duration.
        let round = tokio::time::timeout(
            renew_every,
            try_acquire_or_renew(&api, &election, &mut observed, now),
        );
        let held = match round.await {
            Ok(Ok(held)) => held,
            Ok(Err(error)) => {
                tracing::warn!(%error, lease = %election.name, "leader election request failed");
                false
            }
            Err(_) => {
                tracing::warn!(lease = %election.name, timeout = ?renew_every, "leader election request timed out");
                false
            }
        };
        if held {
            last_renewed = Some(now);
        }
        let is_leader = last_renewed.is_some_and(|t| t.elapsed() < step_down_after);
        if !held && last_renewed.is_some() && !is_leader {
            last_renewed = None;
        }
        if leader.send_if_modified(|l| std::mem::replace(l, is_leader) != is_leader) {
            if is_leader {
                tracing::info!("became the leader: writing");
            } else {
                tracing::warn!("lost the leadership: writing stops");
            }
        }
        // A leader whose renewal failed retries soon, like a candidate: it has a third of the
        // duration left before it must step down.
        let wait = if held {
            renew_every
        } else {
            renew_every.min(Duration::from_secs(2))
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if last_renewed.is_some() && election.give_up_on_shutdown {
        let _ = tokio::time::timeout(election.duration, writers_done.wait_for(|d| *d)).await;
        let _ = leader.send(false);
        release(&api, &election).await;
    }
    let _ = leader.send(false);
}

/// One round: take the Lease if free or expired, renew it if ours. Returns whether we hold it.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    election: &Election,
    observed: &mut Option<(Seen, Instant)>,
    now: Instant,
) -> kube::Result<bool> {
    let seconds = i32::try_from(election.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let stamp = MicroTime(Timestamp::now());
    let Some(mut lease) = api.get_opt(&election.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(election.name.clone()),
                namespace: Some(election.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(election.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(stamp.clone()),
                renew_time: Some(stamp),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let current = seen(&lease);
    let ours = current.holder.as_deref() == Some(election.identity.as_str());
    if !ours {
        // Has the record changed since we last looked? Then its holder is alive: wait.
        let unchanged_since = match observed {
            Some((prev, at)) if *prev == current => *at,
            _ => {
                *observed = Some((current.clone(), now));
                now
            }
        };
        let free = current.holder.is_none();
        // The holder renews within its own duration, which may be longer than ours (replicas
        // mid-way through a rolling change of --lease-duration): wait for the longer of the two.
        let holders = Duration::from_secs(current.duration.unwrap_or(0).max(0) as u64);
        if !free && now.duration_since(unchanged_since) < election.duration.max(holders) {
            return Ok(false);
        }
    }
    let spec = lease.spec.get_or_insert_with(Default::default);
    if !ours {
        spec.acquire_time = Some(stamp.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(election.identity.clone());
    spec.lease_duration_seconds = Some(seconds);
    spec.renew_time = Some(stamp);
    // `replace` carries the resourceVersion we read: a concurrent change makes it fail (409).
    match api.replace(&election.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up (best effort), so that a successor need not wait for it to expire.
async fn release(api: &Api<Lease>, election: &Election) {
    let Ok(Some(mut lease)) = api.get_opt(&election.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(election.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    if let Err(error) = api.replace(&election.name, &PostParams::default(), &lease).await {
        tracing::warn!(%error, "giving the Lease up failed; a successor waits for it to expire");
    } else {
        tracing::info!("gave the leadership up");
    }
}
