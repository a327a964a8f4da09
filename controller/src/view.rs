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

use k8s_openapi::api::core::v1::ConfigMap;
use mcsd_crds::ClusterId;

use crate::{
    exchange::{ExportRecord, LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE, MirroredSlice},
    merge::{Merged, merge},
};

/// A service, by namespace and name.
pub type Key = (String, String);

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

/// One exchange object, as a peer watch delivers it.
#[derive(Clone, Debug)]
pub enum Object {
    /// An export record.
    Record(ConfigMap),
    /// A mirrored EndpointSlice.
    Slice(MirroredSlice),
}

/// The two kinds of exchange object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Export records (ConfigMaps).
    Record,
    /// Mirrored EndpointSlices.
    Slice,
}

/// The index of every cluster's exchange records.
#[derive(Debug, Default)]
pub struct View {
    /// Boxed for the same reason as [`Published::slices`]: most services have one cluster.
    services: BTreeMap<Key, BTreeMap<ClusterId, Box<Published>>>,
    /// Clusters whose records are kept but not merged (a stale peer), or never read (a refused
    /// peer), with why and the services they publish.
    excluded: BTreeMap<ClusterId, Exclusion>,
}

/// Why a cluster's records are left out, and which services they concern.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Exclusion {
    reason: String,
    /// Services the cluster is known to publish beyond what the view holds (a refused peer's).
    keys: BTreeSet<Key>,
}

fn key_of(labels: Option<&BTreeMap<String, String>>) -> Option<Key> {
    let labels = labels?;
    Some((
        labels.get(LABEL_SERVICE_NAMESPACE)?.clone(),
        labels.get(LABEL_SERVICE_NAME)?.clone(),
    ))
}

impl View {
    /// Adds or replaces one object published by `cluster`. Returns the key it changed, if any.
    /// A record that cannot be read is dropped (with a warning) as if it were absent.
    pub fn apply(&mut self, cluster: &ClusterId, object: Object) -> Option<Key> {
        match object {
            Object::Record(cm) => {
                let key = key_of(cm.metadata.labels.as_ref())?;
                let record = match ExportRecord::from_config_map(&cm) {
                    Ok(r)
                        if r.cluster == *cluster
                            && (r.namespace.as_str(), r.name.as_str())
                                == (key.0.as_str(), key.1.as_str()) =>
                    {
                        r
                    }
                    Ok(r) => {
                        tracing::warn!(%cluster, claimed = %r.cluster, namespace = %key.0, name = %key.1, "exchange record names another cluster or service; ignored");
                        return self.remove_record(cluster, &key);
                    }
                    Err(error) => {
                        tracing::warn!(%cluster, %error, "unreadable exchange record ignored");
                        return self.remove_record(cluster, &key);
                    }
                };
                let entry = self.entry(&key, cluster);
                if entry.record.as_ref() == Some(&record) {
                    return None;
                }
                entry.record = Some(record);
                entry.record_written = crate::daemon::apply::written_at(&cm);
                Some(key)
            }
            Object::Slice(mut slice) => {
                // Decoding leaves up to twice the room the endpoints need; the view keeps every
                // peer's slices for as long as they exist.
                slice.endpoints.shrink_to_fit();
                let key = key_of(slice.metadata.labels.as_ref())?;
                let name = slice.metadata.name.clone()?;
                let entry = self.entry(&key, cluster);
                if entry
                    .slices
                    .get(&name)
                    .is_some_and(|old| same_content(old, &slice))
                {
                    return None;
                }
                entry.slices.insert(name, Arc::new(slice));
                Some(key)
            }
        }
    }

    /// Removes one object published by `cluster`. Returns the key it changed, if any.
    pub fn delete(&mut self, cluster: &ClusterId, object: &Object) -> Option<Key> {
        match object {
            Object::Record(cm) => self.remove_record(cluster, &key_of(cm.metadata.labels.as_ref())?),
            Object::Slice(slice) => {
                let key = key_of(slice.metadata.labels.as_ref())?;
                let name = slice.metadata.name.as_ref()?;
                let entry = self.services.get_mut(&key)?.get_mut(cluster)?;
                entry.slices.remove(name)?;
                self.prune(&key, cluster);
                Some(key)
            }
        }
    }

    /// Replaces every object of `kind` that `cluster` publishes with `objects` (a re-list of that
    /// kind). Returns every key whose view changed; keys that did not change are not returned.
    pub fn reset(&mut self, cluster: &ClusterId, kind: Kind, objects: Vec<Object>) -> BTreeSet<Key> {
        let mut fresh = View::default();
        for object in objects {
            fresh.apply(cluster, object);
        }
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

    fn remove_record(&mut self, cluster: &ClusterId, key: &Key) -> Option<Key> {
        let entry = self.services.get_mut(key)?.get_mut(cluster)?;
        entry.record.take()?;
        entry.record_written = None;
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
    use crate::merge::ExportSpec;
    use k8s_openapi::{
        api::discovery::v1::{Endpoint, EndpointSlice},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    fn id(s: &str) -> ClusterId {
        ClusterId::new(s).unwrap()
    }

    fn record(cluster: &str, ns: &str, name: &str, secs: i64) -> Object {
        let r = ExportRecord::new(
            id(cluster),
            ns,
            name,
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap(),
            ExportSpec::default(),
        );
        Object::Record(r.to_config_map("mcsd-system"))
    }

    fn slice(ns: &str, name: &str, slice: &str, addr: &str) -> Object {
        Object::Slice(MirroredSlice::from(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(slice.into()),
                labels: Some(crate::exchange::record_labels(ns, name)),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec![addr.into()],
                ..Default::default()
            }],
            ports: None,
        }))
    }

    fn key(ns: &str, name: &str) -> Key {
        (ns.into(), name.into())
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
    fn an_excluded_cluster_leaves_the_merge_and_returns_unchanged() {
        let mut view = View::default();
        view.apply(&id("cluster-a"), record("cluster-a", "ns", "svc", 0));
        view.apply(&id("cluster-b"), record("cluster-b", "ns", "svc", 1));
        let key = ("ns".to_string(), "svc".to_string());
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
        let key = ("ns".to_string(), "svc".to_string());
        let changed = view.exclude(
            &id("cluster-x"),
            "member of another ClusterSet".into(),
            BTreeSet::from([key.clone()]),
        );
        assert_eq!(changed, BTreeSet::from([key.clone()]));
        assert_eq!(view.merged(&key).unwrap().clusters, [id("cluster-a")]);
        assert_eq!(view.excluded(&key)[0].0, id("cluster-x"));
    }
}
