//! An index from a service to the EndpointSlices that concern it, beside the reflector's store.
//!
//! The reflector's store can only be scanned whole; a reconcile that scanned it for one
//! service's slices would do work proportional to every slice in the cluster. The watch callback
//! notes, for each slice event, which service it concerns; a lookup then visits only the slices
//! noted for that service, reads each from the store (so it always sees the current object) and
//! keeps those that still match. Entries for slices that were deleted, or relabelled to another
//! service, are pruned by the lookup that finds them stale. One index serves one kind of lookup
//! (one `matches`), so a slice that does not match is of no use to it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::core::view::Key;

/// The three lookups the controllers make, each with its own index.
#[derive(Clone, Debug, Default)]
pub struct Slices {
    /// A local Service's own slices (`kubernetes.io/service-name`), for the exporter.
    pub local: SliceIndex,
    /// This cluster's mirrored slices in the exchange namespace, by exported service.
    pub mirrors: SliceIndex,
    /// The MCS slices of an import in this cluster, for the importer.
    pub imported: SliceIndex,
}

/// A slice, by namespace and name.
type SliceRef = (String, String);

/// Service → the slices noted for it. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct SliceIndex {
    by_service: Arc<Mutex<HashMap<Key, HashSet<SliceRef>>>>,
}

impl SliceIndex {
    /// Notes that the slice `namespace/name` concerns `service`. Call before the service is queued.
    pub fn note(&self, service: Key, namespace: String, name: String) {
        self.lock().entry(service).or_default().insert((namespace, name));
    }

    /// The slices in `store` noted for `service` that satisfy `matches`, read from the store now.
    pub fn get(
        &self,
        store: &Store<EndpointSlice>,
        service: &Key,
        matches: impl Fn(&EndpointSlice) -> bool,
    ) -> Vec<Arc<EndpointSlice>> {
        let mut index = self.lock();
        let Some(refs) = index.get_mut(service) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut stale = Vec::new();
        for r in refs.iter() {
            match store.get(&ObjectRef::new(&r.1).within(&r.0)) {
                Some(slice) if matches(&slice) => found.push(slice),
                // Deleted, or relabelled away (an event notes it again if it comes back).
                _ => stale.push(r.clone()),
            }
        }
        for r in &stale {
            refs.remove(r);
        }
        if refs.is_empty() {
            index.remove(service);
        }
        found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        found
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, HashSet<SliceRef>>> {
        self.by_service.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn slice(ns: &str, name: &str, service: &str) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some([("svc".to_string(), service.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![],
            ports: None,
        }
    }

    fn key(ns: &str, name: &str) -> Key {
        Key::new(ns, name)
    }

    fn labelled(service: &'static str) -> impl Fn(&EndpointSlice) -> bool {
        move |s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("svc"))
                .map(String::as_str)
                == Some(service)
        }
    }

    #[test]
    fn finds_only_the_slices_noted_for_a_service_that_still_match() {
        let (store, mut writer) = reflector::store::<EndpointSlice>();
        let index = SliceIndex::default();
        for (name, svc) in [("a-1", "a"), ("a-2", "a"), ("b-1", "b")] {
            writer.apply_watcher_event(&watcher::Event::Apply(slice("ns", name, svc)));
            index.note(key("ns", svc), "ns".into(), name.into());
        }
        let names = |v: Vec<Arc<EndpointSlice>>| -> Vec<String> {
            v.iter().map(|s| s.metadata.name.clone().unwrap()).collect()
        };
        assert_eq!(
            names(index.get(&store, &key("ns", "a"), labelled("a"))),
            ["a-1", "a-2"]
        );
        assert_eq!(names(index.get(&store, &key("ns", "b"), labelled("b"))), ["b-1"]);
        assert!(index.get(&store, &key("other", "a"), labelled("a")).is_empty());

        // Relabelled to b: found under b once noted there, never under a.
        writer.apply_watcher_event(&watcher::Event::Apply(slice("ns", "a-2", "b")));
        index.note(key("ns", "b"), "ns".into(), "a-2".into());
        assert_eq!(names(index.get(&store, &key("ns", "a"), labelled("a"))), ["a-1"]);
        assert_eq!(
            names(index.get(&store, &key("ns", "b"), labelled("b"))),
            ["a-2", "b-1"]
        );

        // Deleted (no event needed: a relist drops objects silently): gone and pruned.
        writer.apply_watcher_event(&watcher::Event::Delete(slice("ns", "a-1", "a")));
        assert!(index.get(&store, &key("ns", "a"), labelled("a")).is_empty());
        assert!(!index.lock().contains_key(&key("ns", "a")));
    }
}
