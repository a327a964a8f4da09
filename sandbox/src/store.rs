//! The store: every object of one cluster, one resourceVersion sequence, and the event log that
//! watches read.
//!
//! ```text
//!  write ──lock──▶ rv += 1 ─▶ objects[gr][(ns, name)] = Arc<Value>
//!                          └▶ log.push(Event{rv, ..}) ─▶ head.send(rv) ─▶ watchers wake and read
//!                                                                        log entries after their rv
//! ```
//!
//! Writes and their events are ordered by the one lock; watchers never block writers (they copy
//! `Arc`s out of the log). The log keeps the last `capacity` events; a watch from before them is
//! `410 Gone`. So is a later page of a list begun before them: a page after the first is the
//! snapshot at the first page's resourceVersion, the current objects with the logged writes since
//! undone.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;

use crate::meta;

/// A resource type: API group (`""` for core) and plural resource name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    /// API group, `""` for core.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl GroupResource {
    /// A group and resource.
    pub fn new(group: &str, resource: &str) -> Self {
        Self {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

/// Where one object lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Its resource type.
    pub gr: GroupResource,
    /// Its namespace (`""` for cluster-scoped objects).
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed from the store.
    Deleted,
}

impl EventType {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One write, as the log keeps it.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion the write made.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Which object.
    pub key: ObjectKey,
    /// The object after the write (for deletions: the last state, at the deletion's rv).
    pub object: Arc<Value>,
    /// The object before the write (modifications and deletions).
    pub old: Option<Arc<Value>>,
}

/// Why a store write failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Create of an object that exists.
    AlreadyExists,
    /// Update or delete of an object that does not exist.
    NotFound,
    /// The object's resourceVersion is not the expected one.
    Conflict,
}

/// A watch or a list's later page asked for events older than the log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The oldest resourceVersion a watch (or a paged list) may still start from.
    pub oldest: u64,
}

/// Where a paged list resumes: after the object `namespace`/`name` of the snapshot at `rv`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resume {
    /// The resourceVersion of the list's first page.
    pub rv: u64,
    /// The namespace of the last object served.
    pub namespace: String,
    /// The name of the last object served.
    pub name: String,
}

/// One page of a list, from [`Store::page`].
#[derive(Debug)]
pub struct Page {
    /// The objects, in key order.
    pub items: Vec<Arc<Value>>,
    /// The resourceVersion the page is a snapshot of.
    pub rv: u64,
    /// How many more objects the list has after this page.
    pub remaining: usize,
}

/// One cluster's objects.
#[derive(Debug)]
pub struct Store {
    state: Mutex<State>,
    head: watch::Sender<u64>,
}

#[derive(Debug)]
struct State {
    rv: u64,
    objects: HashMap<GroupResource, BTreeMap<(String, String), Arc<Value>>>,
    log: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Every event with a larger rv is in the log.
    oldest: u64,
    uids: HashMap<String, ObjectKey>,
    dependents: HashMap<String, HashSet<ObjectKey>>,
}

impl Store {
    /// An empty store whose log keeps the last `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                rv: 0,
                objects: HashMap::new(),
                log: VecDeque::with_capacity(capacity.min(65_536)),
                capacity: capacity.max(1),
                oldest: 0,
                uids: HashMap::new(),
                dependents: HashMap::new(),
            }),
            head: watch::channel(0).0,
        }
    }

    /// The latest resourceVersion.
    pub fn head(&self) -> u64 {
        self.state.lock().rv
    }

    /// A receiver that changes whenever a write lands.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        let state = self.state.lock();
        state
            .objects
            .get(&key.gr)?
            .get(&(key.namespace.clone(), key.name.clone()))
            .cloned()
    }

    /// The key of the object with this uid, if it exists.
    pub fn key_of_uid(&self, uid: &str) -> Option<ObjectKey> {
        self.state.lock().uids.get(uid).cloned()
    }

    /// The objects whose ownerReferences name this uid.
    pub fn dependents_of(&self, uid: &str) -> Vec<ObjectKey> {
        let state = self.state.lock();
        let mut keys: Vec<ObjectKey> = state
            .dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// The objects of a resource, in one namespace or all (`None`), ordered by namespace and name,
    /// with the store's resourceVersion at the time of the read.
    pub fn list(&self, gr: &GroupResource, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let state = self.state.lock();
        let items = walk(state.objects.get(gr), &BTreeMap::new(), namespace, None)
            .cloned()
            .collect();
        (items, state.rv)
    }

    /// One page of a list: up to `limit` (0: no limit) of the objects `keep` accepts, in the order
    /// of [`Store::list`]. Without `resume`, the first page, of the current state; with it, the
    /// objects after its key in the snapshot at its resourceVersion (the current objects with
    /// the writes logged since undone), or [`Expired`] when the log no longer reaches back.
    pub fn page(
        &self,
        gr: &GroupResource,
        namespace: Option<&str>,
        resume: Option<&Resume>,
        limit: usize,
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Page, Expired> {
        let state = self.state.lock();
        let rv = resume.map_or(state.rv, |r| r.rv);
        let mut undone = BTreeMap::new();
        let in_scope = |key: &ObjectKey| key.gr == *gr && namespace.is_none_or(|ns| key.namespace == ns);
        for event in state.log_since(rv)?.filter(|e| in_scope(&e.key)) {
            let slot = (event.key.namespace.clone(), event.key.name.clone());
            undone.entry(slot).or_insert_with(|| event.old.clone());
        }
        let after = resume.map(|r| (r.namespace.clone(), r.name.clone()));
        let mut rest = walk(state.objects.get(gr), &undone, namespace, after).filter(|o| keep(o));
        let items = rest
            .by_ref()
            .take(if limit == 0 { usize::MAX } else { limit })
            .cloned()
            .collect();
        Ok(Page {
            items,
            rv,
            remaining: rest.count(),
        })
    }

    /// The keys of every object in a namespace, of every resource.
    pub fn keys_in_namespace(&self, namespace: &str) -> Vec<ObjectKey> {
        let state = self.state.lock();
        let mut keys = Vec::new();
        for (gr, objects) in &state.objects {
            for (ns, name) in objects
                .range((namespace.to_string(), String::new())..)
                .map(|(k, _)| k)
                .take_while(|(ns, _)| ns == namespace)
            {
                keys.push(ObjectKey {
                    gr: gr.clone(),
                    namespace: ns.clone(),
                    name: name.clone(),
                });
            }
        }
        keys.sort();
        keys
    }

    /// Stores a new object, giving it the next resourceVersion.
    pub fn create(&self, key: ObjectKey, mut object: Value) -> Result<Arc<Value>, StoreError> {
        let mut state = self.state.lock();
        let slot = (key.namespace.clone(), key.name.clone());
        if state.objects.get(&key.gr).is_some_and(|m| m.contains_key(&slot)) {
            return Err(StoreError::AlreadyExists);
        }
        let (rv, object) = state.store(key, slot, &mut object, EventType::Added, None);
        drop(state);
        self.head.send_replace(rv);
        Ok(object)
    }

    /// Replaces an object whose resourceVersion is still `expected`.
    pub fn update(&self, key: ObjectKey, expected: u64, mut object: Value) -> Result<Arc<Value>, StoreError> {
        let mut state = self.state.lock();
        let slot = (key.namespace.clone(), key.name.clone());
        let old = state.current(&key.gr, &slot)?;
        if meta::resource_version(&old) != expected {
            return Err(StoreError::Conflict);
        }
        state.unindex(&key, &old);
        let (rv, object) = state.store(key, slot, &mut object, EventType::Modified, Some(old));
        drop(state);
        self.head.send_replace(rv);
        Ok(object)
    }

    /// Removes an object (whose resourceVersion is `expected`, when given).
    pub fn delete(&self, key: &ObjectKey, expected: Option<u64>) -> Result<Arc<Value>, StoreError> {
        let mut state = self.state.lock();
        let slot = (key.namespace.clone(), key.name.clone());
        let old = state.current(&key.gr, &slot)?;
        if expected.is_some_and(|rv| rv != meta::resource_version(&old)) {
            return Err(StoreError::Conflict);
        }
        let rv = state.rv + 1;
        state.rv = rv;
        if let Some(m) = state.objects.get_mut(&key.gr) {
            m.remove(&slot);
        }
        state.unindex(key, &old);
        let mut last = (*old).clone();
        meta::metadata_mut(&mut last).insert("resourceVersion".into(), rv.to_string().into());
        let last = Arc::new(last);
        state.push(Event {
            rv,
            kind: EventType::Deleted,
            key: key.clone(),
            object: last.clone(),
            old: Some(old),
        });
        drop(state);
        self.head.send_replace(rv);
        Ok(last)
    }

    /// The events after `rv` and the store's resourceVersion at the time of the read, or
    /// [`Expired`] when the log no longer reaches back to `rv`.
    pub fn events_since(&self, rv: u64) -> Result<(Vec<Arc<Event>>, u64), Expired> {
        let state = self.state.lock();
        let events = state.log_since(rv)?.cloned().collect();
        Ok((events, state.rv))
    }
}

type Slot = (String, String);

/// The objects of one resource in key order, in `namespace` or all, after `after`: `current`,
/// with the entries of `undone` (an object's earlier state, `None` for absent) in their place.
fn walk<'a>(
    current: Option<&'a BTreeMap<Slot, Arc<Value>>>,
    undone: &'a BTreeMap<Slot, Option<Arc<Value>>>,
    namespace: Option<&'a str>,
    after: Option<Slot>,
) -> impl Iterator<Item = &'a Arc<Value>> {
    let from = match after {
        Some(slot) => Bound::Excluded(slot),
        None => Bound::Included((namespace.unwrap_or_default().to_string(), String::new())),
    };
    let range = (from, Bound::Unbounded);
    let mut current = current
        .map(|m| m.range(range.clone()))
        .into_iter()
        .flatten()
        .peekable();
    let mut undone = undone.range(range).peekable();
    std::iter::from_fn(move || {
        loop {
            let take_undone = match (current.peek(), undone.peek()) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((c, _)), Some((u, _))) => {
                    let (c, u) = (*c, *u);
                    if c == u {
                        current.next();
                    }
                    u <= c
                }
            };
            if !take_undone {
                return current.next();
            }
            if let Some((slot, Some(object))) = undone.next() {
                return Some((slot, object));
            }
        }
    })
    .take_while(move |((ns, _), _)| namespace.is_none_or(|want| ns == want))
    .map(|(_, object)| object)
}

impl State {
    /// The logged events after `rv`, or [`Expired`] when the log no longer reaches back to `rv`.
    fn log_since(&self, rv: u64) -> Result<impl Iterator<Item = &Arc<Event>>, Expired> {
        if rv < self.oldest {
            return Err(Expired { oldest: self.oldest });
        }
        let start = self.log.partition_point(|e| e.rv <= rv);
        Ok(self.log.range(start..))
    }

    /// The object in `slot` of `gr`.
    fn current(&self, gr: &GroupResource, slot: &(String, String)) -> Result<Arc<Value>, StoreError> {
        self.objects
            .get(gr)
            .and_then(|m| m.get(slot))
            .cloned()
            .ok_or(StoreError::NotFound)
    }

    /// Stamps the next resourceVersion on `object`, stores and indexes it, and logs the event.
    /// Returns the new resourceVersion and the stored object; the caller wakes the watchers.
    fn store(
        &mut self,
        key: ObjectKey,
        slot: (String, String),
        object: &mut Value,
        kind: EventType,
        old: Option<Arc<Value>>,
    ) -> (u64, Arc<Value>) {
        let rv = self.rv + 1;
        self.rv = rv;
        meta::metadata_mut(object).insert("resourceVersion".into(), rv.to_string().into());
        let object = Arc::new(std::mem::take(object));
        self.index(&key, &object);
        self.objects
            .entry(key.gr.clone())
            .or_default()
            .insert(slot, object.clone());
        self.push(Event {
            rv,
            kind,
            key,
            object: object.clone(),
            old,
        });
        (rv, object)
    }

    fn push(&mut self, event: Event) {
        if self.log.len() >= self.capacity
            && let Some(dropped) = self.log.pop_front()
        {
            self.oldest = dropped.rv;
        }
        self.log.push_back(Arc::new(event));
    }

    fn index(&mut self, key: &ObjectKey, object: &Value) {
        let uid = meta::meta_str(object, "uid");
        if !uid.is_empty() {
            self.uids.insert(uid.to_string(), key.clone());
        }
        for owner in meta::owner_uids(object) {
            self.dependents.entry(owner).or_default().insert(key.clone());
        }
    }

    fn unindex(&mut self, key: &ObjectKey, object: &Value) {
        let uid = meta::meta_str(object, "uid");
        if self.uids.get(uid).is_some_and(|k| k == key) {
            self.uids.remove(uid);
        }
        for owner in meta::owner_uids(object) {
            if let Some(set) = self.dependents.get_mut(&owner) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
    }
}
