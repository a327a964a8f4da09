//! The hub's copy of this cluster's own exchange records: every record and mirrored slice in the
//! local exchange namespace is kept, the same, in this member's hub namespace, and what the local
//! namespace no longer has is deleted there. Only the leader writes; a copy the hub already holds
//! is not written again, so a restart writes nothing.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::api::{core::v1::ConfigMap, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams},
    runtime::watcher,
};
use mcsd_crds::{ClusterId, names::FIELD_MANAGER};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::{driver, preflight},
    core::{
        exchange::LABEL_EXCHANGE,
        hub::{hub_copy, member_namespace},
        view::Kind,
    },
};

/// How many writes to the hub are in flight at once.
const CONCURRENCY: usize = 16;

/// Copies this cluster's exchange records to its hub namespace.
pub(super) struct Publisher {
    pub local: Client,
    pub hub: Client,
    pub exchange_namespace: String,
    pub cluster: ClusterId,
    pub leader: watch::Receiver<bool>,
    /// Where the last write and its failures are noted (`mcsd status`).
    pub states: crate::daemon::metrics::Peers,
    /// Spreads the retries of its watches of the hub (shared with the reader).
    pub spread: driver::Spread,
}

/// One side's exchange objects (local, or the hub's copy), by kind and name, as JSON.
#[derive(Clone, Default)]
struct Objects {
    held: Arc<Mutex<BTreeMap<(Kind, String), Value>>>,
    /// Woken by every change of either side.
    changed: Arc<Notify>,
    /// Of the hub's copy: what the publisher wrote whose echo has not come back yet (`None`:
    /// deleted). A write counts as done at once; the hub's word on an object (its echo, or
    /// anyone else's change, or a re-list) replaces the publisher's.
    written: Arc<Mutex<Written>>,
}

/// Feeds one kind of one side into [`Objects`].
struct Feed {
    objects: Objects,
    kind: Kind,
    /// Whether this is the hub's copy (whose changes overrule what the publisher wrote).
    hub_side: bool,
    relisting: BTreeMap<String, Value>,
}

impl Feed {
    fn change(&self, f: impl FnOnce(&mut BTreeMap<(Kind, String), Value>)) {
        f(&mut self.objects.held.lock().unwrap_or_else(|e| e.into_inner()));
        self.objects.changed.notify_one();
    }

    /// The hub's word on `name` replaces what the publisher remembers writing.
    fn heard(&self, name: &str) {
        if self.hub_side {
            self.objects
                .written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(self.kind, name.to_string()));
        }
    }
}

fn name_and_json(object: &DynamicObject) -> (String, Value) {
    (
        object.metadata.name.clone().unwrap_or_default(),
        serde_json::to_value(object).unwrap_or_default(),
    )
}

impl driver::Index<DynamicObject> for Feed {
    fn begin_relist(&mut self) {
        self.relisting.clear();
    }
    fn relisted(&mut self, object: DynamicObject) {
        let (name, json) = name_and_json(&object);
        self.relisting.insert(name, json);
    }
    fn end_relist(&mut self) {
        let kind = self.kind;
        let listed = std::mem::take(&mut self.relisting);
        if self.hub_side {
            let mut written = self.objects.written.lock().unwrap_or_else(|e| e.into_inner());
            written.retain(|(k, _), _| *k != kind);
        }
        self.change(|held| {
            held.retain(|(k, _), _| *k != kind);
            held.extend(listed.into_iter().map(|(name, json)| ((kind, name), json)));
        });
    }
    fn apply(&mut self, object: DynamicObject) {
        let (name, json) = name_and_json(&object);
        let kind = self.kind;
        self.heard(&name);
        self.change(|held| {
            held.insert((kind, name), json);
        });
    }
    fn delete(&mut self, object: DynamicObject) {
        let (name, _) = name_and_json(&object);
        let kind = self.kind;
        self.heard(&name);
        self.change(|held| {
            held.remove(&(kind, name));
        });
    }
}

fn resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::Record => ApiResource::erase::<ConfigMap>(&()),
        Kind::Slice => ApiResource::erase::<EndpointSlice>(&()),
    }
}

/// Watches both kinds of exchange object in `namespace` into `objects`; returns the receivers
/// that say when each has listed.
fn watch_side(
    client: &Client,
    namespace: &str,
    objects: &Objects,
    hub: Option<&driver::Spread>,
    stop: &CancellationToken,
) -> [watch::Receiver<bool>; 2] {
    let hub_side = hub.is_some();
    [Kind::Record, Kind::Slice].map(|kind| {
        let resource = resource(kind);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let config = watcher::Config::default().labels(LABEL_EXCHANGE);
        let slim = crate::daemon::local::slim;
        let watch = match hub {
            Some(spread) => driver::Watch::with_backoff(api, config, slim, &resource.kind, spread.backoff()),
            None => driver::Watch::of_kind(api, config, slim, &resource.kind),
        };
        let listed = watch.listed();
        let feed = Feed {
            objects: objects.clone(),
            kind,
            hub_side,
            relisting: BTreeMap::new(),
        };
        tokio::spawn(watch.run(feed, stop.clone()));
        listed
    })
}

/// One change to the hub's copy.
enum Op {
    Put(Kind, String, Value),
    Delete(Kind, String),
}

impl Publisher {
    /// Keeps the hub's copy equal to the local records until `stop`.
    pub(super) async fn run(mut self, stop: CancellationToken) {
        let hub_namespace = member_namespace(&self.cluster);
        let local = Objects::default();
        let copy = Objects {
            changed: local.changed.clone(),
            ..Objects::default()
        };
        let mut listed: Vec<watch::Receiver<bool>> =
            watch_side(&self.local, &self.exchange_namespace, &local, None, &stop)
                .into_iter()
                .chain(watch_side(
                    &self.hub,
                    &hub_namespace,
                    &copy,
                    Some(&self.spread),
                    &stop,
                ))
                .collect();
        let everything_listed = async {
            for rx in &mut listed {
                let _ = rx.wait_for(|l| *l).await;
            }
        };
        tokio::select! { _ = stop.cancelled() => return, _ = everything_listed => {} }
        let mut failing: Option<String> = None;
        let mut retry = Duration::from_secs(1);
        loop {
            // Only the leader writes. A replica that becomes leader starts from what the hub
            // says, not from what it wrote when it last led.
            if !*self.leader.borrow() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = self.leader.wait_for(|l| *l) => if r.is_err() { return },
                }
                copy.written.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
            let ops = {
                let written = copy.written.lock().unwrap_or_else(|e| e.into_inner());
                diff(&local, &copy, &written, &hub_namespace)
            };
            let writing = !ops.is_empty();
            // Stopped (new credentials, the Secret gone, shutdown): a write hanging on the hub
            // is dropped.
            let error = tokio::select! {
                _ = stop.cancelled() => return,
                e = self.write(&hub_namespace, ops, &copy.written) => e,
            };
            if let Some(error) = error {
                self.states.hub_wrote(Err(error.clone()));
                if failing.as_ref() != Some(&error) {
                    tracing::warn!(%error, retry_in = ?retry, "cannot copy this cluster's records to the hub; retrying");
                    failing = Some(error);
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(Duration::from_secs(30));
                continue;
            }
            retry = Duration::from_secs(1);
            if writing {
                self.states.hub_wrote(Ok(()));
            }
            if failing.take().is_some() {
                tracing::info!("this cluster's records are copied to the hub again");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = local.changed.notified() => {}
            }
        }
    }

    /// Carries out `ops`, noting each done in `written`; returns the first error, in one line.
    async fn write(&self, namespace: &str, ops: Vec<Op>, written: &Mutex<Written>) -> Option<String> {
        let results: Vec<(Op, Result<(), kube::Error>)> = futures::stream::iter(ops)
            .map(|op| async move {
                let result = match &op {
                    Op::Put(kind, name, body) => {
                        let api: Api<DynamicObject> =
                            Api::namespaced_with(self.hub.clone(), namespace, &resource(*kind));
                        let params = PatchParams::apply(FIELD_MANAGER).force();
                        api.patch(name, &params, &Patch::Apply(body)).await.map(|_| ())
                    }
                    Op::Delete(kind, name) => {
                        let api: Api<DynamicObject> =
                            Api::namespaced_with(self.hub.clone(), namespace, &resource(*kind));
                        match api.delete(name, &DeleteParams::default()).await {
                            Ok(_) => Ok(()),
                            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                };
                (op, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut first_error = None;
        let mut written = written.lock().unwrap_or_else(|e| e.into_inner());
        for (op, result) in results {
            match result {
                Ok(()) => match op {
                    Op::Put(kind, name, body) => {
                        written.insert((kind, name), Some(body));
                    }
                    Op::Delete(kind, name) => {
                        written.insert((kind, name), None);
                    }
                },
                Err(e) => {
                    first_error.get_or_insert_with(|| match &e {
                        kube::Error::Api(s) if s.code == 403 || s.code == 404 => format!(
                            "{}; is this cluster enrolled in the hub, its namespace {namespace} there (mcsd join --hub)?",
                            preflight::one_line(&e)
                        ),
                        _ => preflight::one_line(&e),
                    });
                }
            }
        }
        first_error
    }
}

/// What the publisher wrote since the hub's copy was last listed, by kind and name (`None`:
/// deleted).
type Written = BTreeMap<(Kind, String), Option<Value>>;

/// What makes the hub's copy equal to the local records (`local`): the hub holds `copy` as last
/// seen, and since then what `written` says.
fn diff(local: &Objects, copy: &Objects, written: &Written, hub_namespace: &str) -> Vec<Op> {
    let local = local.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let copy = copy.held.lock().unwrap_or_else(|e| e.into_inner());
    let held = |key: &(Kind, String)| -> Option<Value> {
        match written.get(key) {
            Some(body) => body.clone(),
            None => copy.get(key).map(|o| hub_copy(key.0, o, hub_namespace)),
        }
    };
    let mut ops = Vec::new();
    for (key, object) in &local {
        let wanted = hub_copy(key.0, object, hub_namespace);
        if held(key).as_ref() != Some(&wanted) {
            ops.push(Op::Put(key.0, key.1.clone(), wanted));
        }
    }
    let there: std::collections::BTreeSet<&(Kind, String)> = copy.keys().chain(written.keys()).collect();
    for key in there {
        if !local.contains_key(key) && held(key).is_some() {
            ops.push(Op::Delete(key.0, key.1.clone()));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HUB_NS: &str = "mcsd-member-cluster-a";

    fn record(name: &str, value: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "mcsd-system", "uid": "local", "labels": {"mcsd.io/exchange": "v1"}},
            "data": {"export.json": value},
        })
    }

    fn side(objects: &[(&str, Value)]) -> Objects {
        let side = Objects::default();
        side.held.lock().unwrap().extend(
            objects
                .iter()
                .map(|(name, o)| ((Kind::Record, name.to_string()), o.clone())),
        );
        side
    }

    fn names(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                Op::Put(_, name, _) => format!("put {name}"),
                Op::Delete(_, name) => format!("delete {name}"),
            })
            .collect()
    }

    #[test]
    fn the_hub_gets_what_it_lacks_loses_what_the_member_no_longer_has_and_nothing_twice() {
        let local = side(&[("demo.a", record("demo.a", "1"))]);
        // The hub holds a record the member no longer has, and an old copy of one it has.
        let mut stale = hub_copy(Kind::Record, &record("demo.a", "0"), HUB_NS);
        stale["metadata"]["resourceVersion"] = json!("5");
        let copy = side(&[
            ("demo.a", stale),
            (
                "demo.gone",
                hub_copy(Kind::Record, &record("demo.gone", "1"), HUB_NS),
            ),
        ]);
        let mut written = Written::new();
        let ops = diff(&local, &copy, &written, HUB_NS);
        assert_eq!(names(&ops), ["put demo.a", "delete demo.gone"]);
        // Done, before the hub's watch echoes either: nothing is written again meanwhile.
        for op in ops {
            match op {
                Op::Put(kind, name, body) => written.insert((kind, name), Some(body)),
                Op::Delete(kind, name) => written.insert((kind, name), None),
            };
        }
        assert!(diff(&local, &copy, &written, HUB_NS).is_empty());
        // The echo arrives (with what the hub adds): still nothing to do, once `written` is
        // forgotten at the next re-list.
        let mut echoed = hub_copy(Kind::Record, &record("demo.a", "1"), HUB_NS);
        echoed["metadata"]["uid"] = json!("hub");
        let copy = side(&[("demo.a", echoed)]);
        assert!(diff(&local, &copy, &Written::new(), HUB_NS).is_empty());
    }
}
