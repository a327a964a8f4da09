//! Where each cluster's records come from: the clusters followed as mesh peers, and what the hub
//! holds of every member (`hub.rs`). Shared by the peers' followers and the hub's, so that a
//! cluster moves from one to the other in one change of the view.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use mcsd_crds::ClusterId;

use crate::core::view::{Key, Kind, Object, View};

/// Where each cluster's records come from: the clusters followed as mesh peers, and what the hub
/// holds of every member (kept for all, so a mesh peer removed is taken over from the hub's copy
/// at once).
#[derive(Clone, Default)]
#[allow(missing_debug_implementations)]
pub struct Sources(
    Arc<Mutex<SourcesInner>>,
    prometheus_client::metrics::counter::Counter,
);

#[derive(Default)]
pub(in crate::daemon) struct SourcesInner {
    /// The clusters followed as mesh peers.
    pub(in crate::daemon) mesh: BTreeSet<ClusterId>,
    /// Per member: its objects on the hub by kind and name, and the ranges its hub namespace
    /// declares.
    pub(in crate::daemon) hub: BTreeMap<ClusterId, BTreeMap<(Kind, String), Object>>,
    pub(in crate::daemon) hub_ranges: BTreeMap<ClusterId, Vec<ipnet::IpNet>>,
    /// While the hub has failed past the grace period: why, and the members left out for it
    /// (all taken back together, whichever session of the hub sees it answer again).
    pub(in crate::daemon) hub_down: Option<(String, BTreeSet<ClusterId>)>,
}

impl Sources {
    /// Sources counting what is received from the hub in `received`.
    pub fn counting(received: prometheus_client::metrics::counter::Counter) -> Self {
        Self(Arc::default(), received)
    }

    /// What is held, for the hub's follower to change.
    pub(in crate::daemon) fn lock(&self) -> std::sync::MutexGuard<'_, SourcesInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one object received from the hub.
    pub(in crate::daemon) fn received(&self) {
        self.1.inc();
    }

    /// `cluster` is (or no longer is) followed as a mesh peer.
    pub fn set_mesh(&self, cluster: &ClusterId, mesh: bool) {
        let mut inner = self.lock();
        if mesh {
            inner.mesh.insert(cluster.clone());
        } else {
            inner.mesh.remove(cluster);
        }
    }

    /// Whether `cluster` is followed as a mesh peer (its hub records are then not read).
    pub fn is_mesh(&self, cluster: &ClusterId) -> bool {
        self.lock().mesh.contains(cluster)
    }

    /// Takes `cluster`, no longer a mesh peer, over from the hub: its records in `view` become
    /// what the hub holds of it (nothing, if the hub holds nothing), under the ranges its hub
    /// namespace declares, in one change; left out at once if the hub is down past its grace
    /// period. Returns the keys that changed.
    pub fn take_over(&self, cluster: &ClusterId, view: &mut View) -> BTreeSet<Key> {
        let mut keys = self.reread(cluster, view);
        let mut inner = self.lock();
        let held = inner.hub.contains_key(cluster);
        if let Some((reason, excluded)) = &mut inner.hub_down
            && held
        {
            excluded.insert(cluster.clone());
            keys.extend(view.exclude(cluster, reason.clone(), BTreeSet::new()));
        }
        keys
    }

    /// Reads member `cluster`'s records into `view` again from what the hub holds, under the
    /// ranges its hub namespace declares now (the gate judges objects when they arrive, so new
    /// ranges apply to what is already held only this way). Returns the keys that changed.
    pub(in crate::daemon) fn reread(&self, cluster: &ClusterId, view: &mut View) -> BTreeSet<Key> {
        let (records, slices, ranges) = {
            let inner = self.lock();
            let objects = inner.hub.get(cluster);
            let of = |kind: Kind| -> Vec<Object> {
                objects
                    .into_iter()
                    .flatten()
                    .filter(|((k, _), _)| *k == kind)
                    .map(|(_, o)| o.clone())
                    .collect()
            };
            let ranges = inner.hub_ranges.get(cluster).cloned().unwrap_or_default();
            (of(Kind::Record), of(Kind::Slice), ranges)
        };
        view.set_ranges(cluster, ranges);
        let mut keys = view.reset(cluster, Kind::Record, records);
        keys.extend(view.reset(cluster, Kind::Slice, slices));
        keys
    }

    /// The hub answers again: every member left out for it is taken back. Returns the keys that
    /// changed.
    pub(in crate::daemon) fn hub_up(&self, view: &mut View) -> BTreeSet<Key> {
        let excluded = self.lock().hub_down.take().map(|(_, e)| e).unwrap_or_default();
        excluded.iter().flat_map(|c| view.include(c)).collect()
    }
}
