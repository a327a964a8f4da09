//! Following one cluster's exchange namespace (a peer's, or this cluster's own) into the view.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, runtime::watcher};
use mcsd_crds::ClusterId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::driver,
    core::exchange::LABEL_EXCHANGE,
    core::view::{Key, Kind, Object, View},
    daemon::metrics::PeerState,
};

/// Follows `cluster`'s exchange records into `view` until `shutdown`; calls `changed` with the
/// keys each event changed, and, once both kinds have been listed, sets `synced` and calls
/// `on_state` with `Synced`.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    cluster: ClusterId,
    client: Client,
    namespace: String,
    view: Arc<Mutex<View>>,
    changed: impl Fn(BTreeSet<Key>) + Send + Sync + Clone + 'static,
    synced: watch::Sender<bool>,
    on_state: impl Fn(PeerState),
    shutdown: CancellationToken,
) {
    let records = driver::Watch::<ConfigMap>::new(
        Api::namespaced(client.clone(), &namespace),
        watcher::Config::default().labels(LABEL_EXCHANGE),
        crate::daemon::local::slim,
    );
    let slices = driver::Watch::<crate::core::exchange::MirroredSlice>::new(
        Api::namespaced(client, &namespace),
        watcher::Config::default().labels(LABEL_EXCHANGE),
        crate::daemon::local::slim,
    );
    let (mut records_done, mut slices_done) = (records.listed(), slices.listed());
    let records = records.run(
        Follower::new(&cluster, Kind::Record, Object::Record, &view, &changed),
        shutdown.clone(),
    );
    let slices = slices.run(
        Follower::new(&cluster, Kind::Slice, Object::Slice, &view, &changed),
        shutdown.clone(),
    );
    let sync = async {
        let _ = records_done.wait_for(|d| *d).await;
        let _ = slices_done.wait_for(|d| *d).await;
        on_state(PeerState::Synced);
        let _ = synced.send(true);
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = records => {}
        _ = slices => {}
        _ = sync => {}
        _ = shutdown.cancelled() => {}
    }
}

/// One kind of one cluster's exchange records, fed into the View: a re-list replaces that
/// cluster's objects of the kind at once, when it is complete.
struct Follower<K, F> {
    cluster: ClusterId,
    kind: Kind,
    wrap: fn(K) -> Object,
    view: Arc<Mutex<View>>,
    /// Called with the keys whose view changed.
    changed: F,
    relisting: Vec<Object>,
}

impl<K, F: Fn(BTreeSet<Key>) + Clone> Follower<K, F> {
    fn new(
        cluster: &ClusterId,
        kind: Kind,
        wrap: fn(K) -> Object,
        view: &Arc<Mutex<View>>,
        changed: &F,
    ) -> Self {
        Self {
            cluster: cluster.clone(),
            kind,
            wrap,
            view: view.clone(),
            changed: changed.clone(),
            relisting: Vec::new(),
        }
    }

    fn change(&self, f: impl FnOnce(&mut View) -> BTreeSet<Key>) {
        let keys = f(&mut self.view.lock().unwrap_or_else(|e| e.into_inner()));
        if !keys.is_empty() {
            (self.changed)(keys);
        }
    }
}

impl<K, F: Fn(BTreeSet<Key>) + Clone> driver::Index<K> for Follower<K, F> {
    fn begin_relist(&mut self) {
        self.relisting.clear();
    }
    fn relisted(&mut self, object: K) {
        self.relisting.push((self.wrap)(object));
    }
    fn end_relist(&mut self) {
        let objects = std::mem::take(&mut self.relisting);
        self.change(|view| view.reset(&self.cluster, self.kind, objects));
    }
    fn apply(&mut self, object: K) {
        let object = (self.wrap)(object);
        self.change(|view| view.apply(&self.cluster, object).into_iter().collect());
    }
    fn delete(&mut self, object: K) {
        let object = (self.wrap)(object);
        self.change(|view| view.delete(&self.cluster, &object).into_iter().collect());
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;
    use crate::{
        cluster::driver,
        core::fixtures::{id, record},
    };

    fn config_map(name: &str) -> ConfigMap {
        match record("cluster-b", "demo", name, 0) {
            Object::Record(cm) => cm,
            Object::Slice(_) => unreachable!("a record"),
        }
    }

    #[test]
    fn a_peers_records_a_relist_no_longer_has_leave_the_view() {
        let view = Arc::new(Mutex::new(View::default()));
        let mut follower = Follower::new(
            &id("cluster-b"),
            Kind::Record,
            Object::Record,
            &view,
            &|_keys: BTreeSet<Key>| {},
        );
        driver::check_relist_drops_a_missed_deletion(
            &mut follower,
            config_map("kept"),
            config_map("missed"),
            |f, cm| {
                let name =
                    cm.metadata.labels.as_ref().unwrap()[crate::core::exchange::LABEL_SERVICE_NAME].clone();
                f.view.lock().unwrap().merged(&Key::new("demo", name)).is_some()
            },
        );
    }
}
