//! The one watch → index driver. Every watch the daemon keeps (the local stores, the View's
//! followers of exchange records, the DNS index, the peer Secrets) runs through [`Watch`]: it
//! turns kube's watcher events into apply / delete / re-list calls on an [`Index`], logs a
//! failing watch once (and once more when it recovers, not at every retry), and says when the
//! first complete list has been applied.

use std::{
    hash::BuildHasher as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream::BoxStream};
use kube::{
    Api, Resource,
    runtime::{WatchStreamExt, utils::Backoff, watcher, watcher::DefaultBackoff},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Spreads the retries of a hub's watches over time, so that a hub that restarts is not asked to
/// list by all its members at once: each retry waits kube-rs's backoff plus a random share of
/// [`Spread::PER_MEMBER`] per member the hub has, at most [`Spread::MAX`]. Shared by a member's
/// watches of one hub; told how many members there are as it learns.
#[derive(Clone, Debug, Default)]
pub struct Spread(Arc<AtomicU64>);

impl Spread {
    /// The window each member adds. At 1,000 members a restarted hub is listed again over 25 s:
    /// about 200 lists a second, where all at once overwhelmed a 2-core hub (`benches/hub.rs`).
    pub const PER_MEMBER: Duration = Duration::from_millis(25);
    /// The widest window: well inside the grace period.
    pub const MAX: Duration = Duration::from_secs(60);

    /// The hub has `members` members.
    pub fn set_members(&self, members: usize) {
        self.0.store(members as u64, Ordering::Relaxed);
    }

    /// The window retries are spread over now.
    pub fn window(&self) -> Duration {
        (Self::PER_MEMBER * u32::try_from(self.0.load(Ordering::Relaxed)).unwrap_or(u32::MAX)).min(Self::MAX)
    }

    /// A backoff for one watch: kube-rs's default, each delay lengthened by a random share of
    /// [`Spread::window`].
    pub fn backoff(&self) -> SpreadBackoff {
        SpreadBackoff {
            inner: DefaultBackoff::default(),
            spread: self.clone(),
        }
    }
}

/// The backoff of [`Spread::backoff`].
pub struct SpreadBackoff {
    inner: DefaultBackoff,
    spread: Spread,
}

impl std::fmt::Debug for SpreadBackoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpreadBackoff")
            .field("window", &self.spread.window())
            .finish_non_exhaustive()
    }
}

impl Iterator for SpreadBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // A random fraction from the standard library's randomly keyed hasher.
        let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
        let share = (bits >> 11) as f64 / (1u64 << 53) as f64;
        let delay = self.inner.next()?;
        Some(delay + self.spread.window().mul_f64(share))
    }
}

impl Backoff for SpreadBackoff {
    fn reset(&mut self) {
        self.inner.reset();
    }
}

/// What a watch feeds: an in-memory index of one kind of object.
pub(crate) trait Index<K> {
    /// A re-list begins: the objects that follow, through [`Index::relisted`], are everything
    /// there is. Nothing is removed yet.
    fn begin_relist(&mut self);
    /// One object of a re-list.
    fn relisted(&mut self, object: K);
    /// The re-list is complete: whatever it did not deliver is gone.
    fn end_relist(&mut self);
    /// An object was added or changed.
    fn apply(&mut self, object: K);
    /// An object was deleted.
    fn delete(&mut self, object: K);
}

/// What applying one event did to an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Part of a re-list in progress: the index is not complete yet.
    Listing,
    /// The index changed and is complete (an apply, a delete or the end of a re-list).
    Changed,
}

/// Applies one watcher event to `index`.
fn apply<K>(index: &mut impl Index<K>, event: watcher::Event<K>) -> Step {
    match event {
        watcher::Event::Init => {
            index.begin_relist();
            Step::Listing
        }
        watcher::Event::InitApply(o) => {
            index.relisted(o);
            Step::Listing
        }
        watcher::Event::InitDone => {
            index.end_relist();
            Step::Changed
        }
        watcher::Event::Apply(o) => {
            index.apply(o);
            Step::Changed
        }
        watcher::Event::Delete(o) => {
            index.delete(o);
            Step::Changed
        }
    }
}

/// A watch of one kind, with backoff, failures logged once, and a "listed" signal.
pub(crate) struct Watch<K> {
    stream: BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>,
    kind: String,
    failing: bool,
    listed: watch::Sender<bool>,
}

impl<K> std::fmt::Debug for Watch<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("kind", &self.kind)
            .field("failing", &self.failing)
            .field("listed", &*self.listed.borrow())
            .finish()
    }
}

impl<K> Watch<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    /// Watches `api` with `config`; `prepare` trims each object before anything holds it.
    pub(crate) fn new(api: Api<K>, config: watcher::Config, prepare: fn(&mut K)) -> Self {
        Self::of_kind(api, config, prepare, &K::kind(&Default::default()))
    }
}

impl<K> Watch<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    /// [`Watch::new`] for a kind known only at run time (a `DynamicObject`), named `kind`.
    pub(crate) fn of_kind(api: Api<K>, config: watcher::Config, prepare: fn(&mut K), kind: &str) -> Self {
        Self::with_backoff(api, config, prepare, kind, DefaultBackoff::default())
    }

    /// [`Watch::of_kind`], its failures retried after `backoff` (a hub's: [`Spread::backoff`]).
    pub(crate) fn with_backoff(
        api: Api<K>,
        config: watcher::Config,
        prepare: fn(&mut K),
        kind: &str,
        backoff: impl Backoff + 'static,
    ) -> Self {
        Self {
            stream: watcher(api, config).backoff(backoff).modify(prepare).boxed(),
            kind: kind.to_string(),
            failing: false,
            listed: watch::channel(false).0,
        }
    }
}

impl<K> Watch<K> {
    /// Becomes true once the first complete list has been delivered.
    pub(crate) fn listed(&self) -> watch::Receiver<bool> {
        self.listed.subscribe()
    }

    /// Whether the first complete list has been delivered.
    pub(crate) fn is_listed(&self) -> bool {
        *self.listed.borrow()
    }

    /// The next event; `None` once the watch has ended. Failures are retried with backoff and
    /// logged: the first of a run as a warning, the rest at debug, the recovery once.
    pub(crate) async fn next(&mut self) -> Option<watcher::Event<K>> {
        loop {
            match self.stream.next().await? {
                Ok(event) => {
                    if std::mem::take(&mut self.failing) {
                        tracing::info!(kind = %self.kind, "watching again");
                    }
                    return Some(event);
                }
                Err(error) => {
                    if std::mem::replace(&mut self.failing, true) {
                        tracing::debug!(kind = %self.kind, %error, "watch failed again");
                    } else {
                        tracing::warn!(kind = %self.kind, %error, "watch failed; retrying with backoff");
                    }
                }
            }
        }
    }

    /// Applies `event` (from [`Watch::next`]) to `index`; once the first complete list is in it,
    /// [`Watch::listed`] becomes true.
    pub(crate) fn feed<I: Index<K>>(&self, index: &mut I, event: watcher::Event<K>) -> Step {
        let relisted = matches!(event, watcher::Event::InitDone);
        let step = apply(index, event);
        if relisted {
            self.listed.send_replace(true);
        }
        step
    }

    /// Feeds `index` until the watch ends or `shutdown` (after which it feeds nothing more).
    pub(crate) async fn run(mut self, mut index: impl Index<K>, shutdown: CancellationToken) {
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                e = self.next() => match e { Some(e) => e, None => return },
            };
            self.feed(&mut index, event);
        }
    }
}

/// The re-list case every index must get right: `kept` and `missed` applied, then a re-list that
/// delivers `kept` alone (`missed` was deleted while the watch was down: a `410 Gone` or an API
/// server restart later, no delete event ever comes). Nothing is dropped before the re-list
/// ends; after it, `missed` is gone and `kept` is there. `holds` says whether the index has an
/// object, as its readers would see it.
#[cfg(test)]
pub(crate) fn check_relist_drops_a_missed_deletion<K: Clone, I: Index<K>>(
    index: &mut I,
    kept: K,
    missed: K,
    holds: impl Fn(&mut I, &K) -> bool,
) {
    index.apply(kept.clone());
    index.apply(missed.clone());
    assert!(
        holds(index, &kept) && holds(index, &missed),
        "both are held once applied"
    );
    index.begin_relist();
    index.relisted(kept.clone());
    assert!(
        holds(index, &missed),
        "nothing is dropped before the re-list is complete"
    );
    index.end_relist();
    assert!(holds(index, &kept), "what the re-list delivered is held");
    assert!(!holds(index, &missed), "what the re-list did not deliver is gone");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the calls it gets.
    #[derive(Default)]
    struct Calls(Vec<String>);

    impl Index<&'static str> for Calls {
        fn begin_relist(&mut self) {
            self.0.push("begin".into());
        }
        fn relisted(&mut self, object: &'static str) {
            self.0.push(format!("relisted {object}"));
        }
        fn end_relist(&mut self) {
            self.0.push("end".into());
        }
        fn apply(&mut self, object: &'static str) {
            self.0.push(format!("apply {object}"));
        }
        fn delete(&mut self, object: &'static str) {
            self.0.push(format!("delete {object}"));
        }
    }

    #[test]
    fn a_relist_is_listing_until_it_ends_and_each_change_is_complete() {
        let mut calls = Calls::default();
        let steps: Vec<Step> = [
            watcher::Event::Init,
            watcher::Event::InitApply("a"),
            watcher::Event::InitApply("b"),
            watcher::Event::InitDone,
            watcher::Event::Apply("c"),
            watcher::Event::Delete("a"),
        ]
        .into_iter()
        .map(|e| apply(&mut calls, e))
        .collect();
        assert_eq!(
            steps,
            [
                Step::Listing,
                Step::Listing,
                Step::Listing,
                Step::Changed,
                Step::Changed,
                Step::Changed
            ]
        );
        assert_eq!(
            calls.0,
            ["begin", "relisted a", "relisted b", "end", "apply c", "delete a"]
        );
    }

    #[test]
    fn a_hubs_retries_are_spread_over_a_window_that_grows_with_its_members_up_to_a_minute() {
        let spread = Spread::default();
        assert_eq!(spread.window(), Duration::ZERO);
        spread.set_members(1000);
        assert_eq!(spread.window(), Duration::from_secs(25));
        spread.set_members(1_000_000);
        assert_eq!(spread.window(), Spread::MAX);
        spread.set_members(1000);
        // Each first retry: kube-rs's (800 ms plus a jitter of up to as much again) plus a share
        // of 25 s, different each time.
        let mut backoff = spread.backoff();
        let delays: Vec<Duration> = (0..100)
            .map(|_| {
                backoff.reset();
                backoff.next().unwrap()
            })
            .collect();
        assert!(
            delays.iter().all(|d| *d < Duration::from_millis(25_000 + 1_600)),
            "{delays:?}"
        );
        let late = delays.iter().filter(|d| **d > Duration::from_secs(13)).count();
        assert!(
            (20..=80).contains(&late),
            "about half past the middle: {delays:?}"
        );
    }
}
