//! The writers: the exporter and the importer with their queues. They start once the data is
//! complete and write only while this replica leads.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

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
            mut export_worker,
            mut import_worker,
            leader: mut is_leader,
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
    }
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
            b = worker.next_batch() => b,
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
