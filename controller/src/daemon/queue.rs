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
    /// Work not done yet: keys sent and not yet worked through (queued or in the batch being
    /// worked), and retries waiting out their delay.
    outstanding: Arc<AtomicUsize>,
}

/// The receiving side, owned by one worker.
#[derive(Debug)]
pub struct Worker {
    rx: mpsc::UnboundedReceiver<Key>,
    queue: Queue,
    /// Keys received for the batch being worked.
    taken: usize,
}

/// A new queue and its worker.
pub fn queue() -> (Queue, Worker) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queue = Queue {
        tx,
        outstanding: Arc::default(),
    };
    (queue.clone(), Worker { rx, queue, taken: 0 })
}

impl Queue {
    /// Marks `key` dirty.
    pub fn push(&self, key: Key) {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(key).is_err() {
            // No worker any more: nothing will be done, and nothing is outstanding.
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
        }
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
        q.outstanding.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.push(key);
            q.outstanding.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Whether every key marked so far has been worked through: none queued, none in the batch
    /// being worked, none waiting out a retry.
    pub fn is_idle(&self) -> bool {
        self.outstanding.load(Ordering::SeqCst) == 0
    }
}

impl Worker {
    /// The next batch of distinct dirty keys; `None` when every sender is gone. The keys count as
    /// outstanding until [`Self::worked`].
    pub async fn next_batch(&mut self) -> Option<BTreeSet<Key>> {
        self.worked();
        let first = self.rx.recv().await?;
        let mut batch = BTreeSet::from([first]);
        self.taken = 1;
        while let Ok(key) = self.rx.try_recv() {
            batch.insert(key);
            self.taken += 1;
        }
        Some(batch)
    }

    /// The batch from [`Self::next_batch`] has been worked through (each key reconciled, or
    /// queued again for a retry).
    pub fn worked(&mut self) {
        let taken = std::mem::take(&mut self.taken);
        self.queue.outstanding.fetch_sub(taken, Ordering::SeqCst);
    }

    /// Whether no key is waiting: none queued, none waiting out a retry (the batch taken last
    /// counts as worked).
    pub fn is_drained(&mut self) -> bool {
        self.worked();
        self.queue.is_idle()
    }

    /// A sender for this worker's own queue (for retries).
    pub fn queue(&self) -> &Queue {
        &self.queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_is_outstanding_until_its_batch_is_worked_or_while_a_retry_waits() {
        let (q, mut w) = queue();
        assert!(q.is_idle());
        q.push(Key::new("ns", "a"));
        q.push(Key::new("ns", "a"));
        assert!(!q.is_idle(), "queued");
        let batch = w.next_batch().await.unwrap();
        assert_eq!(batch.len(), 1, "one key, marked twice");
        assert!(!q.is_idle(), "being worked");
        w.queue().retry(Key::new("ns", "a"), Duration::ZERO);
        w.worked();
        assert!(!q.is_idle(), "a retry waits");
        assert_eq!(w.next_batch().await.unwrap().len(), 1, "the retry comes back");
        assert!(!w.queue().is_idle());
        assert!(w.is_drained(), "worked through");
        assert!(q.is_idle());
    }
}
