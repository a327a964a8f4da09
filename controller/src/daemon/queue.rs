//! A de-duplicating work queue of service keys with retry after failures.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;

use crate::view::Key;

/// The sending side: mark services for reconciliation.
#[derive(Clone, Debug)]
pub struct Queue {
    tx: mpsc::UnboundedSender<Key>,
    /// Keys waiting out a retry delay: they are still work to do.
    retrying: Arc<AtomicUsize>,
}

/// The receiving side, owned by one worker.
#[derive(Debug)]
pub struct Worker {
    rx: mpsc::UnboundedReceiver<Key>,
    queue: Queue,
}

/// A new queue and its worker.
pub fn queue() -> (Queue, Worker) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queue = Queue {
        tx,
        retrying: Arc::default(),
    };
    (queue.clone(), Worker { rx, queue })
}

impl Queue {
    /// Marks `key` dirty.
    pub fn push(&self, key: Key) {
        let _ = self.tx.send(key);
    }

    /// Marks every key dirty.
    pub fn extend(&self, keys: impl IntoIterator<Item = Key>) {
        for key in keys {
            self.push(key);
        }
    }

    /// Marks `key` dirty again after `delay` (a failed reconcile).
    pub fn retry(&self, key: Key, delay: Duration) {
        let q = self.clone();
        q.retrying.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.push(key);
            q.retrying.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

impl Worker {
    /// The next batch of distinct dirty keys; `None` when every sender is gone.
    pub async fn next_batch(&mut self) -> Option<BTreeSet<Key>> {
        let first = self.rx.recv().await?;
        let mut batch = BTreeSet::from([first]);
        while let Ok(key) = self.rx.try_recv() {
            batch.insert(key);
        }
        Some(batch)
    }

    /// Whether no key is waiting: none queued, none waiting out a retry.
    pub fn is_drained(&self) -> bool {
        self.rx.is_empty() && self.queue.retrying.load(Ordering::SeqCst) == 0
    }

    /// A sender for this worker's own queue (for retries).
    pub fn queue(&self) -> &Queue {
        &self.queue
    }
}
