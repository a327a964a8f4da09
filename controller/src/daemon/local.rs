//! The local caches every controller reads, each fed by its own watch; every event marks the
//! services it concerns in the export and import queues.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::{
    core::v1::{ConfigMap, Namespace, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        reflector::{self, Store},
        watcher,
    },
};
use mcsd_crds::{
    mcs::v1beta1::{ServiceExport, ServiceImport},
    names,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{index, key_of, queue};
use crate::cluster::driver;
use crate::{
    core::exchange::LABEL_EXCHANGE,
    core::import::LABEL_DERIVED_FROM,
    core::view::{Key, View},
};

/// The client-side annotation `kubectl apply` keeps: a copy of the whole object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what mcsd never reads from an object before it is kept: `managedFields` (often half of
/// an object's size) and kubectl's copy of the object in its last-applied annotation.
pub(crate) fn slim<K: Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// [`slim`], for an EndpointSlice kept in the controllers' store. Of the slices mcsd writes
/// itself (mirrors and imports) only the metadata and ports are kept: the controllers compare the
/// hash in their annotation, never their endpoints, and `mcsd why` reads those from the View.
/// Other slices lose the spare capacity decoding left in their endpoint list.
pub(crate) fn slim_slice(slice: &mut EndpointSlice) {
    slim(slice);
    let ours = slice.labels().get(names::LABEL_MANAGED_BY).map(String::as_str) == Some(names::MANAGED_BY);
    if ours {
        slice.endpoints = Vec::new();
    } else {
        slice.endpoints.shrink_to_fit();
    }
}

/// The local caches every controller reads, each fed by its own watch. Every event marks the
/// services it concerns in the export and import queues.
#[derive(Clone)]
pub(super) struct Local {
    pub(super) exports: Store<ServiceExport>,
    pub(super) services: Store<Service>,
    pub(super) slices: Store<EndpointSlice>,
    pub(super) slice_index: index::Slices,
    pub(super) imports: Store<ServiceImport>,
    pub(super) namespaces: Store<Namespace>,
    /// Counts the namespace events: changes whenever a namespace comes, changes or goes.
    pub(super) namespaces_changed: tokio::sync::watch::Receiver<u64>,
    pub(super) own_records: Store<ConfigMap>,
}

impl Local {
    pub(super) fn watch(
        client: &Client,
        exchange_namespace: &str,
        view: &Arc<Mutex<View>>,
        export_queue: &queue::Queue,
        import_queue: &queue::Queue,
        shutdown: &CancellationToken,
    ) -> Self {
        let q = export_queue.clone();
        let exports = store_and_feed(
            Api::<ServiceExport>::all(client.clone()),
            watcher::Config::default(),
            slim,
            move |o| q.push(key_of(o)),
            shutdown.clone(),
        );
        let (qe, qi) = (export_queue.clone(), import_queue.clone());
        let services = store_and_feed(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            slim,
            move |o: &Service| {
                qe.push(key_of(o));
                if let Some(from) = o.labels().get(LABEL_DERIVED_FROM) {
                    qi.push(Key::new(o.namespace().unwrap_or_default(), from.clone()));
                }
            },
            shutdown.clone(),
        );
        let (qe, qi) = (export_queue.clone(), import_queue.clone());
        let slice_index = index::Slices::default();
        let idx = slice_index.clone();
        let slices = store_and_feed(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
            slim_slice,
            move |o: &EndpointSlice| {
                let ns = o.namespace().unwrap_or_default();
                let name = o.name_any();
                let labels = o.labels();
                if labels.get(names::LABEL_MANAGED_BY).map(String::as_str) == Some(names::MANAGED_BY) {
                    if let Some(svc) = labels.get(names::LABEL_SERVICE_NAME) {
                        let key = Key::new(ns.clone(), svc.clone());
                        idx.imported.note(key.clone(), ns, name);
                        qi.push(key);
                    } else if let (Some(sns), Some(svc)) = (
                        labels.get(crate::core::exchange::LABEL_SERVICE_NAMESPACE),
                        labels.get(crate::core::exchange::LABEL_SERVICE_NAME),
                    ) {
                        let key = Key::new(sns.clone(), svc.clone());
                        idx.mirrors.note(key.clone(), ns, name);
                        qe.push(key);
                    }
                } else if let Some(svc) = labels.get(names::LABEL_KUBERNETES_SERVICE_NAME) {
                    let key = Key::new(ns.clone(), svc.clone());
                    idx.local.note(key.clone(), ns, name);
                    qe.push(key);
                }
            },
            shutdown.clone(),
        );
        let qi = import_queue.clone();
        let imports = store_and_feed(
            Api::<ServiceImport>::all(client.clone()),
            watcher::Config::default(),
            slim,
            move |o| qi.push(key_of(o)),
            shutdown.clone(),
        );
        let (qi, v) = (import_queue.clone(), view.clone());
        let (namespaces_tx, namespaces_changed) = tokio::sync::watch::channel(0u64);
        let namespaces = store_and_feed(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            slim,
            move |o: &Namespace| {
                let ns = o.name_any();
                let keys: Vec<Key> = v
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .filter(|k| k.namespace == ns)
                    .cloned()
                    .collect();
                qi.extend(keys);
                namespaces_tx.send_modify(|n| *n += 1);
            },
            shutdown.clone(),
        );
        let qe = export_queue.clone();
        let own_records = store_and_feed(
            Api::<ConfigMap>::namespaced(client.clone(), exchange_namespace),
            watcher::Config::default().labels(LABEL_EXCHANGE),
            slim,
            move |o: &ConfigMap| {
                let labels = o.labels();
                if let (Some(ns), Some(svc)) = (
                    labels.get(crate::core::exchange::LABEL_SERVICE_NAMESPACE),
                    labels.get(crate::core::exchange::LABEL_SERVICE_NAME),
                ) {
                    qe.push(Key::new(ns.clone(), svc.clone()));
                }
            },
            shutdown.clone(),
        );
        Self {
            exports,
            services,
            slices,
            slice_index,
            imports,
            namespaces,
            namespaces_changed,
            own_records,
        }
    }

    /// Waits until every local watch has listed.
    pub(super) async fn listed(&self) {
        let _ = self.exports.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.imports.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.own_records.wait_until_ready().await;
    }
}

/// A reflector's store fed by the watch driver: each event is applied to the store first, then
/// `on_event` sees the object (so whatever it queues reads the store with the event in it).
struct Feed<K, F>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    writer: reflector::store::Writer<K>,
    on_event: F,
}

impl<K, F> Feed<K, F>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    F: Fn(&K),
{
    fn store(&mut self, event: watcher::Event<K>) {
        self.writer.apply_watcher_event(&event);
        if let watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) = &event {
            (self.on_event)(o);
        }
    }
}

impl<K, F> driver::Index<K> for Feed<K, F>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    F: Fn(&K),
{
    fn begin_relist(&mut self) {
        self.store(watcher::Event::Init);
    }
    fn relisted(&mut self, object: K) {
        self.store(watcher::Event::InitApply(object));
    }
    fn end_relist(&mut self) {
        self.store(watcher::Event::InitDone);
    }
    fn apply(&mut self, object: K) {
        self.store(watcher::Event::Apply(object));
    }
    fn delete(&mut self, object: K) {
        self.store(watcher::Event::Delete(object));
    }
}

fn store_and_feed<K>(
    api: Api<K>,
    config: watcher::Config,
    prepare: fn(&mut K),
    on_event: impl Fn(&K) + Send + 'static,
    shutdown: CancellationToken,
) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let span = tracing::info_span!("watch", kind = %K::kind(&Default::default()));
    let feed = Feed { writer, on_event };
    tokio::spawn(
        driver::Watch::new(api, config, prepare)
            .run(feed, shutdown)
            .instrument(span),
    );
    store
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::ObjectRef;

    use super::*;

    fn config_map(name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("demo".into());
        cm
    }

    #[test]
    fn a_local_store_drops_what_a_relist_no_longer_has() {
        let (store, writer) = reflector::store();
        let mut feed = Feed {
            writer,
            on_event: |_: &ConfigMap| {},
        };
        driver::check_relist_drops_a_missed_deletion(
            &mut feed,
            config_map("kept"),
            config_map("missed"),
            |_, cm| {
                store
                    .get(&ObjectRef::new(cm.metadata.name.as_deref().unwrap()).within("demo"))
                    .is_some()
            },
        );
    }
}
