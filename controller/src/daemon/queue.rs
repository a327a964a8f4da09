//! A de-duplicating work queue of service keys with retry after failures. A key marked many
//! times before it is worked is held once: a replica that does not lead (and so works nothing)
//! holds at most one entry per service, however much changes.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;

use crate::core::view::Key;

/// The keys waiting, and the work not done yet.
#[derive(Debug, Default)]
struct State {
    /// Keys marked and not yet taken.
    pending: BTreeSet<Key>,
    /// Keys of the batch being worked.
    working: usize,
    /// Retries waiting out their delay.
    retrying: usize,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    marked: Notify,
}

/// The sending side: mark services for reconciliation.
#[derive(Clone, Debug)]
pub struct Queue {
    inner: Arc<Inner>,
}

/// The receiving side, owned by one worker.
#[derive(Debug)]
pub struct Worker {
    queue: Queue,
}

/// A new queue and its worker.
pub fn queue() -> (Queue, Worker) {
    let queue = Queue {
        inner: Arc::default(),
    };
    (queue.clone(), Worker { queue })
}

impl Queue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `key` dirty.
    pub fn push(&self, key: Key) {
        self.state().pending.insert(key);
        self.inner.marked.notify_one();
    }

    /// Marks every key dirty.
    pub fn extend(&self, keys: impl IntoIterator<Item = Key>) {
        self.state().pending.extend(keys);
        self.inner.marked.notify_one();
    }

    /// Marks `key` dirty again after `delay` (a failed reconcile).
    pub fn retry(&self, key: Key, delay: Duration) {
        let q = self.clone();
        q.state().retrying += 1;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut state = q.state();
            state.retrying -= 1;
            state.pending.insert(key);
            drop(state);
            q.inner.marked.notify_one();
        });
    }

    /// Whether every key marked so far has been worked through: none waiting, none in the batch
    /// being worked, none waiting out a retry.
    pub fn is_idle(&self) -> bool {
        let state = self.state();
        state.pending.is_empty() && state.working == 0 && state.retrying == 0
    }
}

impl Worker {
    /// The next batch of distinct dirty keys, once there is one. The keys count as work not done
    /// until [`Self::worked`] (or the next batch).
    pub async fn next_batch(&mut self) -> BTreeSet<Key> {
        loop {
            // Registered before looking, so that a key marked meanwhile wakes it.
            let marked = self.queue.inner.marked.notified();
            {
                let mut state = self.queue.state();
                if !state.pending.is_empty() {
                    let batch = std::mem::take(&mut state.pending);
                    state.working = batch.len();
                    return batch;
                }
                state.working = 0;
            }
            marked.await;
        }
    }

    /// The batch from [`Self::next_batch`] has been worked through (each key reconciled, or
    /// queued again for a retry).
    pub fn worked(&mut self) {
        self.queue.state().working = 0;
    }

    /// Whether no key is waiting: none marked, none waiting out a retry (the batch taken last
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
        let batch = w.next_batch().await;
        assert_eq!(batch.len(), 1, "one key, marked twice");
        assert!(!q.is_idle(), "being worked");
        w.queue().retry(Key::new("ns", "a"), Duration::ZERO);
        w.worked();
        assert!(!q.is_idle(), "a retry waits");
        assert_eq!(w.next_batch().await.len(), 1, "the retry comes back");
        assert!(!w.queue().is_idle());
        assert!(w.is_drained(), "worked through");
        assert!(q.is_idle());
    }
}
