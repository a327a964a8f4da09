//! The writers: the exporter and the importer with their queues. They start once the data is
//! complete and write only while this replica leads.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::ResourceExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Followers, exporter::Exporter, importer::Importer, key_of, local::Local, queue};
use crate::core::view::{Key, View};

/// The exporter and the importer, with their queues: they start once the data is complete and
/// write only while this replica leads.
pub(super) struct Writers {
    pub(super) exporter: Exporter,
    pub(super) importer: Importer,
    pub(super) view: Arc<Mutex<View>>,
    pub(super) export_queue: queue::Queue,
    pub(super) import_queue: queue::Queue,
    pub(super) export_worker: queue::Worker,
    pub(super) import_worker: queue::Worker,
    pub(super) leader: watch::Receiver<bool>,
    pub(super) ready: watch::Sender<bool>,
    pub(super) converged: watch::Sender<bool>,
    pub(super) peer_sync_timeout: Duration,
    /// How many services each of the two writers reconciles at once.
    pub(super) concurrency: usize,
    pub(super) shutdown: CancellationToken,
}

impl Writers {
    pub(super) async fn run(self, local: Local, followers: Followers) {
        // Wait for complete data before the first write.
        let mut own_listed = followers.own_listed;
        let listed = async {
            local.listed().await;
            let _ = own_listed.wait_for(|s| *s).await;
        };
        tokio::select! { _ = self.shutdown.cancelled() => return, _ = listed => {} }
        let peers_listed = async {
            // Peers from Secrets count too, once the Secrets have been listed.
            let from_secrets = followers.secrets_listed.await.unwrap_or_default();
            for (peer, mut rx) in followers.peers_listed.into_iter().chain(from_secrets) {
                if rx.wait_for(|s| *s).await.is_err() {
                    tracing::warn!(%peer, "peer follower ended before listing");
                }
            }
            let mut hub_listed = followers.hub_listed;
            let _ = hub_listed.wait_for(|s| *s).await;
        };
        if tokio::time::timeout(self.peer_sync_timeout, peers_listed)
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?self.peer_sync_timeout, "not every peer listed its records in time; starting anyway");
        }
        let _ = self.ready.send(true);
        self.write_while_leading().await;
    }

    /// Each time leadership is (re)gained: a full pass over everything known (which writes
    /// nothing that is already right), then the queues, until shutdown or the Lease is lost.
    async fn write_while_leading(self) {
        let (exports_drained, imports_drained) = (watch::channel(false).0, watch::channel(false).0);
        {
            let (mut e, mut i) = (exports_drained.subscribe(), imports_drained.subscribe());
            let converged = self.converged.clone();
            tokio::spawn(async move {
                if e.wait_for(|d| *d).await.is_ok() && i.wait_for(|d| *d).await.is_ok() {
                    converged.send_replace(true);
                }
            });
        }
        let Self {
            exporter,
            importer,
            view,
            export_queue,
            import_queue,
            export_worker,
            import_worker,
            leader: mut is_leader,
            concurrency,
            shutdown,
            ..
        } = self;
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
            // A derived Service whose import is gone (mcsd stopped between the two writes, or
            // the import was deleted by hand) is found by its label.
            import_queue.extend(importer.services.state().iter().filter_map(|s| {
                let from = s.labels().get(crate::core::import::LABEL_DERIVED_FROM)?;
                Some(Key::new(s.namespace()?, from.clone()))
            }));
            let export_loop = work(&export_worker, &shutdown, &exports_drained, concurrency, |key| {
                let exporter = &exporter;
                async move { exporter.reconcile(&key).await }
            });
            let import_loop = work(&import_worker, &shutdown, &imports_drained, concurrency, |key| {
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
    }
}

/// How many reconciles each writer (the exporter, the importer) runs at once unless told
/// (`mcsd run --write-concurrency`). Independent services are written side by side, so that the
/// API server's latency, not mcsd, bounds a burst, and one slow or failing service never holds the others back; a service is never
/// reconciled twice at once (the queue sees to it). 16 of each stays well within a
/// kube-apiserver's default limits (`--max-mutating-requests-inflight` 200, and API Priority
/// and Fairness's seats for a workload): the client retries a 429 itself, with the server's
/// `Retry-After`, and a 429 that still comes back halves this writer's concurrency, which then
/// grows back by one per success.
pub const DEFAULT_WRITE_CONCURRENCY: u16 = 16;

/// What the worker loop waits for.
enum Event {
    Shutdown,
    Ended(queue::Taken, kube::Result<()>),
    Taken(queue::Taken),
}

/// Whether `error` says the API server is throttling us (after the client's own retries).
fn throttled(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 429)
}

/// Reconciles the worker's keys, up to `limit` at once, until `shutdown` (the reconciles under
/// way are finished first). A key that fails is retried after 0.5 s, doubling up to 30 s while it
/// keeps failing. `drained` is set whenever nothing is waiting (nothing queued, nothing being
/// worked, nothing to retry).
async fn work<F, Fut>(
    worker: &queue::Worker,
    shutdown: &CancellationToken,
    drained: &watch::Sender<bool>,
    limit: usize,
    reconcile: F,
) where
    F: Fn(Key) -> Fut,
    Fut: std::future::Future<Output = kube::Result<()>>,
{
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut failures: std::collections::HashMap<Key, u32> = std::collections::HashMap::new();
    let mut running = FuturesUnordered::new();
    let mut allowed = limit;
    let mut stopping = false;
    loop {
        if running.is_empty() {
            if stopping {
                return;
            }
            if worker.queue().is_idle() {
                drained.send_replace(true);
            }
        }
        let event = tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !stopping => Event::Shutdown,
            Some((taken, result)) = running.next(), if !running.is_empty() => Event::Ended(taken, result),
            taken = worker.next(), if !stopping && running.len() < allowed => Event::Taken(taken),
        };
        // A key stays taken (never worked twice at once) until its `Taken` is finished, in the arm
        // below that handles its result, or dropped with `running` if the Lease is lost (then it
        // is dirty again).
        match event {
            Event::Shutdown => stopping = true,
            Event::Taken(taken) => {
                let reconciled = reconcile(taken.key().clone());
                running.push(async move { (taken, reconciled.await) });
            }
            Event::Ended(taken, Ok(())) => {
                failures.remove(taken.key());
                allowed = (allowed + 1).min(limit);
                taken.finish();
            }
            Event::Ended(taken, Err(error)) => {
                let key = taken.key().clone();
                if throttled(&error) {
                    allowed = (allowed / 2).max(1);
                }
                let n = failures.entry(key.clone()).or_default();
                *n = n.saturating_add(1);
                let delay = Duration::from_millis(500)
                    .saturating_mul(1 << (*n - 1).min(6))
                    .min(Duration::from_secs(30));
                tracing::warn!(namespace = %key.namespace, name = %key.name, %error, retry_in = ?delay, "reconcile failed");
                // Queued for the retry before it counts as done: the queue is never idle between.
                worker.queue().retry(key, delay);
                taken.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    use super::*;

    /// Runs `work` on `worker` with `limit` until its queue drains, `reconcile` standing in for
    /// a writer; then the queue is idle.
    async fn drain<F, Fut>(worker: &queue::Worker, limit: usize, reconcile: F)
    where
        F: Fn(Key) -> Fut,
        Fut: std::future::Future<Output = kube::Result<()>>,
    {
        let (drained, mut rx) = watch::channel(false);
        let shutdown = CancellationToken::new();
        let stop_when_drained = async {
            let _ = rx.wait_for(|d| *d).await;
            shutdown.cancel();
        };
        tokio::join!(
            work(worker, &shutdown, &drained, limit, reconcile),
            stop_when_drained
        );
        assert!(worker.queue().is_idle());
    }

    /// A queue holding `keys` (in namespace `ns`), and its worker.
    fn queued(keys: &[&str]) -> queue::Worker {
        let (queue, worker) = queue::queue();
        queue.extend(keys.iter().map(|k| Key::new("ns", *k)));
        worker
    }

    #[tokio::test]
    async fn a_slow_service_does_not_hold_the_others_back_and_the_bound_holds() {
        let keys: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (running, most, others_done) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
        let release = Notify::new();
        drain(&queued(&keys), 4, |key| {
            let (running, most, others_done, release) = (&running, &most, &others_done, &release);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                if key.name == "s0" {
                    // Held until every other service is written.
                    release.notified().await;
                } else {
                    tokio::task::yield_now().await;
                    if others_done.fetch_add(1, Ordering::SeqCst) + 1 == 39 {
                        release.notify_one();
                    }
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await;
        assert_eq!(others_done.load(Ordering::SeqCst), 39, "written while s0 hung");
        assert_eq!(
            most.load(Ordering::SeqCst),
            4,
            "side by side, and never more than the bound"
        );
    }

    #[tokio::test]
    async fn a_service_marked_again_while_written_is_written_again_after_never_beside() {
        let worker = queued(&["a"]);
        let (running, writes) = (AtomicUsize::new(0), AtomicUsize::new(0));
        drain(&worker, 8, |_key: Key| {
            let (running, writes, queue) = (&running, &writes, worker.queue());
            async move {
                assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "never two at once");
                if writes.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Changed again while the first write is under way.
                    queue.push(Key::new("ns", "a"));
                }
                tokio::task::yield_now().await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await;
        assert_eq!(writes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_throttled_writer_slows_down_and_drops_nothing() {
        let keys: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (attempts, running, beside_the_next) =
            (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
        let written = Mutex::new(BTreeSet::new());
        drain(&queued(&keys), 8, |key| {
            let (attempts, running, beside_the_next, written) =
                (&attempts, &running, &beside_the_next, &written);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                let attempt = attempts.fetch_add(1, Ordering::SeqCst);
                if attempt == 8 {
                    beside_the_next.store(now, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
                running.fetch_sub(1, Ordering::SeqCst);
                if attempt < 8 {
                    // The first eight, side by side, all come back 429.
                    let status = kube::core::Status::failure("slow down", "TooManyRequests").with_code(429);
                    return Err(kube::Error::Api(Box::new(status)));
                }
                written.lock().unwrap().insert(key);
                Ok(())
            }
        })
        .await;
        assert_eq!(
            written.lock().unwrap().len(),
            20,
            "every service written in the end"
        );
        assert_eq!(
            beside_the_next.load(Ordering::SeqCst),
            1,
            "after eight 429s the next write goes alone"
        );
    }

    #[tokio::test]
    async fn a_reconcile_abandoned_when_the_lease_is_lost_is_worked_again_on_the_next_lead() {
        let worker = queued(&["a"]);
        let (drained, _) = watch::channel(false);
        let shutdown = CancellationToken::new();
        // Leading: the write hangs (an API server that does not answer)…
        let started = Notify::new();
        let hung = work(&worker, &shutdown, &drained, 4, |_key| {
            let started = &started;
            async move {
                started.notify_one();
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        // …and the Lease is lost: the loop is dropped with the write under way.
        tokio::select! {
            _ = hung => unreachable!("a hung write never ends"),
            _ = started.notified() => {}
        }
        assert!(!worker.queue().is_idle(), "abandoned, not done");
        // Leading again, the service is written.
        let written = AtomicUsize::new(0);
        drain(&worker, 4, |_key| {
            let written = &written;
            async move {
                written.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await;
        assert_eq!(written.load(Ordering::SeqCst), 1);
    }
}
