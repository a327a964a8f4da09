//! The ClusterSet view: every cluster's exchange records, indexed by service.
//!
//! ```text
//!  peer watches (one per cluster, this one included)
//!     │ apply / delete / reset(cluster, records)
//!     ▼
//!  View: (namespace, name) ─▶ cluster ─▶ { export record, mirrored slices }
//!     │ changed keys
//!     ▼
//!  exporter (Conflict conditions) and importer (imports, derived Services, slices)
//! ```
//!
//! Synchronous and I/O-free: watch plumbing stays outside. Every mutation returns the service
//! keys whose view changed, so callers reconcile only those: the work for one changed service
//! does not grow with the number of services.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use mcsd_crds::ClusterId;

pub use crate::core::exchange::{Key, Kind, Object};
use crate::core::{
    exchange::{ExportRecord, MirroredSlice, key_of},
    gate::{Admitted, Gate, Held, Verdict},
    guard::{Guard, Refusal},
    merge::{Merged, merge},
};

/// What one cluster publishes about one service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Published {
    /// The export record, while the cluster exports the service.
    pub record: Option<ExportRecord>,
    /// When the exporting cluster wrote that record (its `mcsd.io/written-at`).
    pub record_written: Option<k8s_openapi::jiff::Timestamp>,
    /// The cluster's mirrored EndpointSlices, by name (boxed: a B-tree node holds eleven values
    /// inline, and most services have one slice).
    pub slices: BTreeMap<String, Arc<MirroredSlice>>,
}

/// The index of every cluster's exchange records.
#[derive(Debug, Default)]
pub struct View {
    /// Boxed for the same reason as [`Published::slices`]: most services have one cluster.
    services: BTreeMap<Key, BTreeMap<ClusterId, Box<Published>>>,
    /// Clusters whose records are kept but not merged (a stale peer), or never read (a refused
    /// peer), with why and the services they publish.
    excluded: BTreeMap<ClusterId, Exclusion>,
    /// Clusters still merged with something wrong ahead (credentials that cannot be renewed),
    /// with the one line saying what.
    warnings: BTreeMap<ClusterId, String>,
    /// What peers' objects must pass before they get here, and what they were refused.
    gate: Gate,
    /// Export records held per cluster (for the limit on records).
    record_counts: BTreeMap<ClusterId, usize>,
}

/// Why a cluster's records are left out, and which services they concern.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Exclusion {
    reason: String,
    /// Services the cluster is known to publish beyond what the view holds (a refused peer's).
    keys: BTreeSet<Key>,
}

impl View {
    /// A view that holds the records of `local` as they are and every peer's through `guard`.
    pub fn guarded(local: ClusterId, guard: Guard) -> Self {
        Self {
            gate: Gate::guarded(local, guard),
            ..Self::default()
        }
    }

    /// An empty view with the same gate policy (guard, local cluster and ranges).
    fn same_policy(&self) -> Self {
        Self {
            gate: self.gate.same_policy(),
            ..Self::default()
        }
    }

    /// Declares the only ranges `peer`'s endpoint addresses may be in (empty: any allowed
    /// address). Takes effect for the records it publishes from now on.
    pub fn set_ranges(&mut self, peer: &ClusterId, ranges: Vec<ipnet::IpNet>) {
        self.gate.set_ranges(peer, ranges);
    }

    /// What the gate left out of `key`, one line each (for `mcsd why`).
    pub fn refused_lines(&self, key: &Key) -> Vec<String> {
        self.gate.refused_lines(key)
    }

    /// Refusals so far, per peer and reason.
    pub fn refusal_counts(&self) -> &BTreeMap<(ClusterId, Refusal), u64> {
        self.gate.refusal_counts()
    }

    /// Adds or replaces one object published by `cluster`, once the gate has admitted it.
    /// Returns the key it changed, if any. What the gate refuses (or cannot read) is dropped as
    /// if it were absent.
    pub fn apply(&mut self, cluster: &ClusterId, object: Object) -> Option<Key> {
        let (services, counts) = (&self.services, &self.record_counts);
        let held = |key: &Key, slice: &str| {
            let published = services.get(key).and_then(|m| m.get(cluster));
            Held {
                record: published.is_some_and(|p| p.record.is_some()),
                records: counts.get(cluster).copied().unwrap_or(0),
                other_endpoints: published.map_or(0, |p| {
                    p.slices
                        .iter()
                        .filter(|(n, _)| n.as_str() != slice)
                        .map(|(_, s)| s.endpoints.len())
                        .sum()
                }),
            }
        };
        match self.gate.admit(cluster, object, held) {
            Verdict::Ignore => None,
            Verdict::Drop { key, slice: None } => self.remove_record(cluster, &key),
            Verdict::Drop {
                key,
                slice: Some(name),
            } => self.remove_slice(cluster, &key, &name),
            Verdict::Take(Admitted::Record { key, record, written }) => {
                let record = *record;
                let entry = self.entry(&key, cluster);
                if entry.record.as_ref() == Some(&record) {
                    return None;
                }
                if entry.record.is_none() {
                    *self.record_counts.entry(cluster.clone()).or_default() += 1;
                }
                let entry = self.entry(&key, cluster);
                entry.record = Some(record);
                entry.record_written = written;
                Some(key)
            }
            Verdict::Take(Admitted::Slice { key, name, mut slice }) => {
                // Decoding leaves up to twice the room the endpoints need; the view keeps every
                // peer's slices for as long as they exist.
                slice.endpoints.shrink_to_fit();
                let entry = self.entry(&key, cluster);
                if entry
                    .slices
                    .get(&name)
                    .is_some_and(|old| same_content(old, &slice))
                {
                    return None;
                }
                entry.slices.insert(name, Arc::new(*slice));
                Some(key)
            }
        }
    }

    /// Removes one object published by `cluster`. Returns the key it changed, if any.
    pub fn delete(&mut self, cluster: &ClusterId, object: &Object) -> Option<Key> {
        self.gate.forget(cluster, object);
        match object {
            Object::Record(cm) => self.remove_record(cluster, &key_of(cm.metadata.labels.as_ref())?),
            Object::Slice(slice) => {
                let key = key_of(slice.metadata.labels.as_ref())?;
                self.remove_slice(cluster, &key, slice.metadata.name.as_ref()?)
            }
        }
    }

    /// Replaces every object of `kind` that `cluster` publishes with `objects` (a re-list of that
    /// kind). Returns every key whose view changed; keys that did not change are not returned.
    pub fn reset(&mut self, cluster: &ClusterId, kind: Kind, mut objects: Vec<Object>) -> BTreeSet<Key> {
        let mut fresh = self.same_policy();
        // In name order, so that a peer past its limits is cut at the same place every time.
        objects.sort_by_cached_key(|o| match o {
            Object::Record(cm) => cm.metadata.name.clone(),
            Object::Slice(s) => s.metadata.name.clone(),
        });
        for object in objects {
            fresh.apply(cluster, object);
        }
        // What the gate refused of this kind is what it refused in this list.
        let fresh_gate = std::mem::take(&mut fresh.gate);
        self.gate.absorb(cluster, kind, fresh_gate);
        // Keep what this re-list does not cover: the other kind's objects.
        for (key, by_cluster) in &self.services {
            if let Some(old) = by_cluster.get(cluster) {
                let entry = fresh.entry(key, cluster);
                match kind {
                    Kind::Record => entry.slices = old.slices.clone(),
                    Kind::Slice => {
                        entry.record = old.record.clone();
                        entry.record_written = old.record_written;
                    }
                }
                if entry.record.is_none() && entry.slices.is_empty() {
                    fresh.prune(key, cluster);
                }
            }
        }
        let mut changed = BTreeSet::new();
        let keys: BTreeSet<Key> = self
            .services
            .iter()
            .filter(|(_, by_cluster)| by_cluster.contains_key(cluster))
            .map(|(k, _)| k.clone())
            .chain(fresh.services.keys().cloned())
            .collect();
        for key in keys {
            let new = fresh.services.get_mut(&key).and_then(|m| m.remove(cluster));
            let old = self.services.get(&key).and_then(|m| m.get(cluster));
            let same = match (&new, old) {
                (Some(a), Some(b)) => a.record == b.record && same_slices(&a.slices, &b.slices),
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            match new {
                Some(p) => {
                    self.services
                        .entry(key.clone())
                        .or_default()
                        .insert(cluster.clone(), p);
                }
                None => {
                    if let Some(m) = self.services.get_mut(&key) {
                        m.remove(cluster);
                    }
                    self.prune(&key, cluster);
                }
            }
            changed.insert(key);
        }
        let held = self
            .services
            .values()
            .filter(|m| m.get(cluster).is_some_and(|p| p.record.is_some()))
            .count();
        self.record_counts.insert(cluster.clone(), held);
        changed
    }

    /// Forgets everything `cluster` publishes (a peer removed, or stale past its grace period).
    pub fn forget(&mut self, cluster: &ClusterId) -> BTreeSet<Key> {
        let mut changed = self.reset(cluster, Kind::Record, Vec::new());
        changed.extend(self.reset(cluster, Kind::Slice, Vec::new()));
        changed
    }

    /// Leaves `cluster`'s records out of every merge, saying `reason`, until [`Self::include`].
    /// The records stay, so that including the cluster again changes nothing it had published.
    /// `known` names services the cluster publishes that the view does not hold (a refused
    /// peer's, read without merging them). Returns the keys whose merge or exclusions changed.
    pub fn exclude(&mut self, cluster: &ClusterId, reason: String, known: BTreeSet<Key>) -> BTreeSet<Key> {
        let exclusion = Exclusion { reason, keys: known };
        if self.excluded.get(cluster) == Some(&exclusion) {
            return BTreeSet::new();
        }
        let mut changed = self.keys_of(cluster);
        if let Some(old) = self.excluded.get(cluster) {
            changed.extend(old.keys.iter().cloned());
        }
        changed.extend(exclusion.keys.iter().cloned());
        self.excluded.insert(cluster.clone(), exclusion);
        changed
    }

    /// Merges `cluster`'s records again. Returns the keys whose merge or exclusions changed.
    pub fn include(&mut self, cluster: &ClusterId) -> BTreeSet<Key> {
        let Some(old) = self.excluded.remove(cluster) else {
            return BTreeSet::new();
        };
        let mut changed = self.keys_of(cluster);
        changed.extend(old.keys);
        changed
    }

    /// Sets (`Some`) or clears the warning about `cluster`: something that will go wrong with it
    /// unless fixed (its credentials cannot be renewed), while its records are still merged.
    /// Returns the keys whose warnings changed.
    pub fn warn(&mut self, cluster: &ClusterId, warning: Option<String>) -> BTreeSet<Key> {
        let changed = match warning {
            Some(w) => self.warnings.insert(cluster.clone(), w.clone()).as_ref() != Some(&w),
            None => self.warnings.remove(cluster).is_some(),
        };
        if !changed {
            return BTreeSet::new();
        }
        let mut keys = self.keys_of(cluster);
        if let Some(e) = self.excluded.get(cluster) {
            keys.extend(e.keys.iter().cloned());
        }
        keys
    }

    /// The warnings about clusters that publish `key` and are still merged (once left out, the
    /// exclusion says what happened), with the cluster each concerns.
    pub fn warnings(&self, key: &Key) -> Vec<(ClusterId, String)> {
        let holds = self.services.get(key);
        self.warnings
            .iter()
            .filter(|(c, _)| holds.is_some_and(|m| m.contains_key(*c)) && !self.excluded.contains_key(*c))
            .map(|(c, w)| (c.clone(), w.clone()))
            .collect()
    }

    /// The clusters left out of `key`'s merge that publish (or are known to publish) it, with why.
    pub fn excluded(&self, key: &Key) -> Vec<(ClusterId, String)> {
        let holds = self.services.get(key);
        self.excluded
            .iter()
            .filter(|(c, e)| e.keys.contains(key) || holds.is_some_and(|m| m.contains_key(*c)))
            .map(|(c, e)| (c.clone(), e.reason.clone()))
            .collect()
    }

    /// Every key `cluster` publishes something for.
    fn keys_of(&self, cluster: &ClusterId) -> BTreeSet<Key> {
        self.services
            .iter()
            .filter(|(_, m)| m.contains_key(cluster))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The clusters that publish something for `key` (excluded ones included).
    pub fn clusters_of(&self, key: &Key) -> impl Iterator<Item = ClusterId> + '_ {
        self.services.get(key).into_iter().flat_map(|m| m.keys().cloned())
    }

    /// What `cluster` publishes for `key`.
    pub fn published(&self, cluster: &ClusterId, key: &Key) -> Option<&Published> {
        self.services.get(key)?.get(cluster).map(|p| &**p)
    }

    /// The merged import of `key`, from every cluster that exports it and is not excluded.
    pub fn merged(&self, key: &Key) -> Option<Merged> {
        let exports: Vec<_> = self
            .services
            .get(key)?
            .iter()
            .filter(|(c, _)| !self.excluded.contains_key(*c))
            .filter_map(|(_, p)| p.record.as_ref().map(ExportRecord::to_export))
            .collect();
        merge(&exports)
    }

    /// When the newest export record of `key` of a cluster that is not excluded was written.
    pub fn record_written(&self, key: &Key) -> Option<k8s_openapi::jiff::Timestamp> {
        self.services
            .get(key)?
            .iter()
            .filter(|(c, _)| !self.excluded.contains_key(*c))
            .filter_map(|(_, p)| p.record_written)
            .max()
    }

    /// The mirrored slices for `key` of every cluster that is not excluded.
    pub fn slices(&self, key: &Key) -> BTreeMap<ClusterId, Vec<Arc<MirroredSlice>>> {
        self.services
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(c, p)| !p.slices.is_empty() && !self.excluded.contains_key(*c))
            .map(|(c, p)| (c.clone(), p.slices.values().cloned().collect()))
            .collect()
    }

    /// Every service some cluster publishes something for.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.services.keys()
    }

    /// What `cluster` publishes for `key`, created empty when missing.
    fn entry(&mut self, key: &Key, cluster: &ClusterId) -> &mut Published {
        self.services
            .entry(key.clone())
            .or_default()
            .entry(cluster.clone())
            .or_default()
    }

    fn remove_slice(&mut self, cluster: &ClusterId, key: &Key, name: &str) -> Option<Key> {
        let entry = self.services.get_mut(key)?.get_mut(cluster)?;
        entry.slices.remove(name)?;
        self.prune(key, cluster);
        Some(key.clone())
    }

    fn remove_record(&mut self, cluster: &ClusterId, key: &Key) -> Option<Key> {
        let entry = self.services.get_mut(key)?.get_mut(cluster)?;
        entry.record.take()?;
        entry.record_written = None;
        if let Some(n) = self.record_counts.get_mut(cluster) {
            *n = n.saturating_sub(1);
        }
        self.prune(key, cluster);
        Some(key.clone())
    }

    fn prune(&mut self, key: &Key, cluster: &ClusterId) {
        if let Some(by_cluster) = self.services.get_mut(key) {
            if by_cluster
                .get(cluster)
                .is_some_and(|p| p.record.is_none() && p.slices.is_empty())
            {
                by_cluster.remove(cluster);
            }
            if by_cluster.is_empty() {
                self.services.remove(key);
            }
        }
    }
}

/// Two slices with the same endpoints and ports (metadata such as resourceVersion aside).
fn same_content(a: &MirroredSlice, b: &MirroredSlice) -> bool {
    a.address_type == b.address_type && a.endpoints == b.endpoints && a.ports == b.ports
}

fn same_slices(a: &BTreeMap<String, Arc<MirroredSlice>>, b: &BTreeMap<String, Arc<MirroredSlice>>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((na, sa), (nb, sb))| na == nb && same_content(sa, sb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::{id, mirrored_slice as slice, record};

    fn key(ns: &str, name: &str) -> Key {
        Key::new(ns, name)
    }

    #[test]
    fn a_peer_past_its_limit_of_records_loses_the_excess_and_a_deletion_makes_room() {
        use crate::core::guard::{Limits, NamespacePolicy};
        let mut view = View::guarded(
            id("cluster-a"),
            Guard {
                namespaces: NamespacePolicy::new("mcsd-system", vec![], vec![]),
                limits: Limits {
                    records: 2,
                    ..Limits::default()
                },
            },
        );
        for name in ["s1", "s2", "s3"] {
            view.apply(&id("cluster-b"), record("cluster-b", "demo", name, 0));
        }
        assert!(view.merged(&key("demo", "s2")).is_some());
        assert!(view.merged(&key("demo", "s3")).is_none());
        assert_eq!(
            view.refusal_counts()[&(id("cluster-b"), Refusal::TooManyRecords)],
            1
        );
        // A record it holds, rewritten, is no new record.
        assert_eq!(
            view.apply(&id("cluster-b"), record("cluster-b", "demo", "s2", 5)),
            Some(key("demo", "s2"))
        );
        view.delete(&id("cluster-b"), &record("cluster-b", "demo", "s1", 0));
        view.apply(&id("cluster-b"), record("cluster-b", "demo", "s3", 0));
        assert!(view.merged(&key("demo", "s3")).is_some());
        assert!(view.refused_lines(&key("demo", "s3")).is_empty());
    }

    #[test]
    fn two_exporters_merge_and_the_import_survives_one_leaving() {
        let mut view = View::default();
        assert_eq!(
            view.apply(&id("cluster-a"), record("cluster-a", "demo", "hello", 0)),
            Some(key("demo", "hello"))
        );
        view.apply(&id("cluster-b"), record("cluster-b", "demo", "hello", 5));
        assert_eq!(
            view.merged(&key("demo", "hello")).unwrap().clusters,
            [id("cluster-a"), id("cluster-b")]
        );
        view.delete(&id("cluster-a"), &record("cluster-a", "demo", "hello", 0));
        assert_eq!(
            view.merged(&key("demo", "hello")).unwrap().clusters,
            [id("cluster-b")]
        );
        view.delete(&id("cluster-b"), &record("cluster-b", "demo", "hello", 5));
        assert!(view.merged(&key("demo", "hello")).is_none());
        assert_eq!(view.keys().count(), 0, "nothing left behind");
    }

    #[test]
    fn reapplying_the_same_record_changes_nothing() {
        let mut view = View::default();
        view.apply(&id("cluster-a"), record("cluster-a", "demo", "hello", 0));
        assert_eq!(
            view.apply(&id("cluster-a"), record("cluster-a", "demo", "hello", 0)),
            None
        );
        view.apply(
            &id("cluster-a"),
            slice("demo", "hello", "demo.hello-1", "10.0.0.1"),
        );
        assert_eq!(
            view.apply(
                &id("cluster-a"),
                slice("demo", "hello", "demo.hello-1", "10.0.0.1")
            ),
            None
        );
        assert!(
            view.apply(
                &id("cluster-a"),
                slice("demo", "hello", "demo.hello-1", "10.0.0.2")
            )
            .is_some()
        );
    }

    #[test]
    fn a_record_claiming_another_cluster_is_ignored() {
        let mut view = View::default();
        assert_eq!(
            view.apply(&id("cluster-b"), record("cluster-a", "demo", "hello", 0)),
            None
        );
        assert!(view.merged(&key("demo", "hello")).is_none());
    }

    #[test]
    fn a_relist_reports_only_what_changed() {
        let mut view = View::default();
        let a = id("cluster-a");
        view.apply(&a, record("cluster-a", "demo", "one", 0));
        view.apply(&a, record("cluster-a", "demo", "two", 0));
        view.apply(&a, slice("demo", "two", "demo.two-1", "10.0.0.1"));
        let records = || {
            vec![
                record("cluster-a", "demo", "one", 0),
                record("cluster-a", "demo", "two", 0),
                record("cluster-a", "demo", "three", 0),
            ]
        };
        let changed = view.reset(&a, Kind::Record, records());
        assert_eq!(
            changed,
            BTreeSet::from([key("demo", "three")]),
            "the slices of two are kept"
        );
        assert_eq!(view.slices(&key("demo", "two")).len(), 1);
        let changed = view.reset(
            &a,
            Kind::Slice,
            vec![slice("demo", "two", "demo.two-1", "10.0.0.9")],
        );
        assert_eq!(changed, BTreeSet::from([key("demo", "two")]));
        assert!(
            view.reset(&a, Kind::Record, records()).is_empty(),
            "a relist of the same data changes nothing"
        );
        assert!(
            view.reset(
                &a,
                Kind::Slice,
                vec![slice("demo", "two", "demo.two-1", "10.0.0.9")]
            )
            .is_empty()
        );
        let changed = view.reset(&a, Kind::Record, vec![record("cluster-a", "demo", "one", 0)]);
        assert_eq!(
            changed,
            BTreeSet::from([key("demo", "two"), key("demo", "three")])
        );
        assert!(view.merged(&key("demo", "two")).is_none());
        assert_eq!(
            view.slices(&key("demo", "two")).len(),
            1,
            "slices stay until their own relist"
        );
    }

    #[test]
    fn forgetting_a_cluster_withdraws_only_its_records() {
        let mut view = View::default();
        view.apply(&id("cluster-a"), record("cluster-a", "demo", "hello", 0));
        view.apply(&id("cluster-b"), record("cluster-b", "demo", "hello", 1));
        view.apply(
            &id("cluster-b"),
            slice("demo", "hello", "demo.hello-b", "10.2.0.1"),
        );
        let changed = view.forget(&id("cluster-b"));
        assert_eq!(changed, BTreeSet::from([key("demo", "hello")]));
        assert_eq!(
            view.merged(&key("demo", "hello")).unwrap().clusters,
            [id("cluster-a")]
        );
        assert!(view.slices(&key("demo", "hello")).is_empty());
    }

    #[test]
    fn a_warning_concerns_the_services_its_cluster_publishes_and_changes_nothing_merged() {
        let mut view = View::default();
        view.apply(&id("cluster-a"), record("cluster-a", "ns", "svc", 0));
        view.apply(&id("cluster-b"), record("cluster-b", "ns", "other", 1));
        let (svc, other) = (Key::new("ns", "svc"), Key::new("ns", "other"));
        let before = view.merged(&svc).unwrap();

        let changed = view.warn(&id("cluster-a"), Some("credentials expire".into()));
        assert_eq!(changed, BTreeSet::from([svc.clone()]));
        assert_eq!(
            view.warnings(&svc),
            [(id("cluster-a"), "credentials expire".to_string())]
        );
        assert!(view.warnings(&other).is_empty());
        assert_eq!(view.merged(&svc).unwrap(), before, "a warning leaves nothing out");
        assert!(
            view.warn(&id("cluster-a"), Some("credentials expire".into()))
                .is_empty(),
            "the same warning again changes nothing"
        );
        assert_eq!(view.warn(&id("cluster-a"), None), BTreeSet::from([svc.clone()]));
        assert!(view.warnings(&svc).is_empty());
        view.warn(&id("cluster-a"), Some("credentials expire".into()));
        view.exclude(&id("cluster-a"), "refused: 401".into(), BTreeSet::new());
        assert!(view.warnings(&svc).is_empty(), "left out: no longer a warning");
        view.include(&id("cluster-a"));
        assert_eq!(view.warnings(&svc).len(), 1);
        assert_eq!(view.warn(&id("cluster-a"), None), BTreeSet::from([svc.clone()]));
        assert!(view.warn(&id("cluster-a"), None).is_empty());
    }

    #[test]
    fn an_excluded_cluster_leaves_the_merge_and_returns_unchanged() {
        let mut view = View::default();
        view.apply(&id("cluster-a"), record("cluster-a", "ns", "svc", 0));
        view.apply(&id("cluster-b"), record("cluster-b", "ns", "svc", 1));
        let key = Key::new("ns", "svc");
        let before = view.merged(&key).unwrap();
        assert_eq!(before.clusters.len(), 2);

        let changed = view.exclude(&id("cluster-b"), "unreachable for 5m".into(), BTreeSet::new());
        assert_eq!(changed, BTreeSet::from([key.clone()]));
        assert_eq!(view.merged(&key).unwrap().clusters, [id("cluster-a")]);
        assert_eq!(
            view.excluded(&key),
            [(id("cluster-b"), "unreachable for 5m".to_string())]
        );
        // Excluding again for the same reason changes nothing.
        assert!(
            view.exclude(&id("cluster-b"), "unreachable for 5m".into(), BTreeSet::new())
                .is_empty()
        );

        assert_eq!(view.include(&id("cluster-b")), BTreeSet::from([key.clone()]));
        assert_eq!(view.merged(&key).unwrap(), before);
        assert!(view.excluded(&key).is_empty());
    }

    #[test]
    fn a_refused_cluster_is_reported_on_the_services_it_is_known_to_publish() {
        let mut view = View::default();
        view.apply(&id("cluster-a"), record("cluster-a", "ns", "svc", 0));
        let key = Key::new("ns", "svc");
        let changed = view.exclude(
            &id("cluster-x"),
            "member of another ClusterSet".into(),
            BTreeSet::from([key.clone()]),
        );
        assert_eq!(changed, BTreeSet::from([key.clone()]));
        assert_eq!(view.merged(&key).unwrap().clusters, [id("cluster-a")]);
        assert_eq!(view.excluded(&key)[0].0, id("cluster-x"));
    }

    fn guarded(records: usize) -> View {
        View::guarded(
            id("cluster-a"),
            Guard {
                namespaces: crate::core::guard::NamespacePolicy::new("mcsd-system", vec![], vec![]),
                limits: crate::core::guard::Limits {
                    records,
                    ..Default::default()
                },
            },
        )
    }

    #[test]
    fn a_peer_past_its_record_limit_keeps_the_first_by_name_and_the_rest_is_reported() {
        let mut view = guarded(2);
        let records: Vec<Object> = ["c", "a", "b"]
            .iter()
            .map(|n| record("cluster-b", "demo", n, 0))
            .collect();
        let changed = view.reset(&id("cluster-b"), Kind::Record, records.clone());
        assert_eq!(changed, [key("demo", "a"), key("demo", "b")].into());
        assert_eq!(
            view.refusal_counts()[&(id("cluster-b"), Refusal::TooManyRecords)],
            1
        );
        assert!(view.refused_lines(&key("demo", "c"))[0].contains("already has 2 exports"));
        // The same list again changes nothing, and one record gone lets the next one in.
        assert!(view.reset(&id("cluster-b"), Kind::Record, records).is_empty());
        view.delete(&id("cluster-b"), &record("cluster-b", "demo", "a", 0));
        assert_eq!(
            view.apply(&id("cluster-b"), record("cluster-b", "demo", "c", 0)),
            Some(key("demo", "c"))
        );
        assert!(view.refused_lines(&key("demo", "c")).is_empty());
        // The local cluster is not held to it, nor to the namespace policy.
        for n in ["x", "y", "z"] {
            assert!(
                view.apply(&id("cluster-a"), record("cluster-a", "demo", n, 0))
                    .is_some()
            );
        }
        assert!(
            view.apply(&id("cluster-a"), record("cluster-a", "kube-system", "dns", 0))
                .is_some()
        );
        assert!(
            view.apply(&id("cluster-b"), record("cluster-b", "kube-system", "dns", 0))
                .is_none()
        );
    }

    #[test]
    fn a_peers_bad_addresses_are_dropped_and_the_good_ones_kept() {
        let mut view = guarded(10);
        view.apply(&id("cluster-b"), record("cluster-b", "demo", "db", 0));
        view.apply(&id("cluster-b"), slice("demo", "db", "db-1", "169.254.169.254"));
        assert!(
            view.slices(&key("demo", "db"))
                .values()
                .flatten()
                .all(|s| s.endpoints.is_empty())
        );
        assert_eq!(
            view.refused_lines(&key("demo", "db")),
            ["cluster-b's endpoint 169.254.169.254 is link-local"]
        );
        view.apply(&id("cluster-b"), slice("demo", "db", "db-1", "10.2.0.5"));
        let held: Vec<String> = view
            .slices(&key("demo", "db"))
            .values()
            .flatten()
            .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.clone()))
            .collect();
        assert_eq!(held, ["10.2.0.5"]);
        assert!(view.refused_lines(&key("demo", "db")).is_empty());
    }
}
