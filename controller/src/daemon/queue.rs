//! A de-duplicating work queue of service keys with retry after failures, worked by several
//! reconciles at once. A key marked many times before it is worked is held once: a replica that
//! does not lead (and so works nothing) holds at most one entry per service, however much
//! changes. A key is never worked twice at the same time: marked again while it is being worked,
//! it waits until that reconcile ends and is then worked again, so the writes of one object stay
//! in order.

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
    /// Keys being worked.
    working: BTreeSet<Key>,
    /// Retries waiting out their delay.
    retrying: usize,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    /// A key was marked, or a key being worked was finished.
    changed: Notify,
}

/// The sending side: mark services for reconciliation.
#[derive(Clone, Debug)]
pub struct Queue {
    inner: Arc<Inner>,
}

/// The receiving side, owned by one worker (which may run several reconciles at once).
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
        self.inner.changed.notify_one();
    }

    /// Marks every key dirty.
    pub fn extend(&self, keys: impl IntoIterator<Item = Key>) {
        self.state().pending.extend(keys);
        self.inner.changed.notify_one();
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
            q.inner.changed.notify_one();
        });
    }

    /// Whether every key marked so far has been worked through: none waiting, none being
    /// worked, none waiting out a retry.
    pub fn is_idle(&self) -> bool {
        let state = self.state();
        state.pending.is_empty() && state.working.is_empty() && state.retrying == 0
    }
}

/// A key taken from the queue by [`Worker::next`]: it counts as being worked until this is
/// dropped. Dropped after [`Self::finish`] (its reconcile ended, or was queued for a retry), the
/// key is done; dropped without (the writers stop at once when the Lease is lost), it is marked
/// dirty again. Either way, if it is dirty it can be taken again.
#[derive(Debug)]
pub struct Taken {
    queue: Queue,
    key: Key,
    finished: bool,
}

impl Taken {
    /// The key being worked.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Its reconcile ended: dropped now, the key is done (unless marked again meanwhile).
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        let marked_again = {
            let mut state = self.queue.state();
            state.working.remove(&self.key);
            if !self.finished {
                state.pending.insert(self.key.clone());
            }
            state.pending.contains(&self.key)
        };
        if marked_again {
            self.queue.inner.changed.notify_one();
        }
    }
}

impl Worker {
    /// The next dirty key that is not being worked, once there is one. Cancel-safe: a key is
    /// taken only when this returns it.
    pub async fn next(&self) -> Taken {
        loop {
            // Registered before looking, so that a key marked (or finished) meanwhile wakes it.
            let changed = self.queue.inner.changed.notified();
            {
                let mut state = self.queue.state();
                let State { pending, working, .. } = &mut *state;
                if let Some(key) = pending.iter().find(|k| !working.contains(*k)).cloned() {
                    pending.remove(&key);
                    working.insert(key.clone());
                    return Taken {
                        queue: self.queue.clone(),
                        key,
                        finished: false,
                    };
                }
            }
            changed.await;
        }
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
    async fn work_is_outstanding_until_done_or_while_a_retry_waits() {
        let (q, w) = queue();
        assert!(q.is_idle());
        q.push(Key::new("ns", "a"));
        q.push(Key::new("ns", "a"));
        assert!(!q.is_idle(), "queued");
        let a = w.next().await;
        assert!(!q.is_idle(), "being worked");
        w.queue().retry(a.key().clone(), Duration::ZERO);
        a.finish();
        assert!(!q.is_idle(), "a retry waits");
        let again = w.next().await;
        assert_eq!(again.key(), &Key::new("ns", "a"), "the retry comes back");
        assert!(!q.is_idle());
        again.finish();
        assert!(q.is_idle(), "marked twice, worked once");
    }

    #[tokio::test]
    async fn a_key_being_worked_is_not_taken_again_until_it_is_done_or_abandoned() {
        let (q, w) = queue();
        q.push(Key::new("ns", "a"));
        let a = w.next().await;
        // Marked again while being worked: the other key comes first, then nothing…
        q.push(Key::new("ns", "a"));
        q.push(Key::new("ns", "b"));
        let b = w.next().await;
        assert_eq!(b.key(), &Key::new("ns", "b"));
        b.finish();
        assert!(
            futures::FutureExt::now_or_never(w.next()).is_none(),
            "a is still being worked"
        );
        // …until the first reconcile of a ends.
        a.finish();
        let again = w.next().await;
        assert_eq!(again.key(), &Key::new("ns", "a"));
        // Abandoned (the Lease lost), it is dirty again.
        drop(again);
        assert_eq!(w.next().await.key(), &Key::new("ns", "a"));
    }
}
