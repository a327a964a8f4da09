//! Writing through server-side apply, and only when something changed.
//!
//! Every object mcsd writes carries the annotation `mcsd.io/applied` with a hash of what was
//! applied. Before writing, the desired object's hash is compared with the observed annotation:
//! equal means the cluster already holds exactly this, so nothing is written — also after a
//! restart, since the hash lives on the object, not in memory.

use std::{
    collections::BTreeMap,
    fmt::{Debug, Write as _},
    sync::{Arc, Mutex},
};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter},
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use super::metrics::Flow;

pub use crate::core::exchange::{ANNOTATION_WRITTEN_AT, written_at};
pub use mcsd_crds::names::mcsd::APPLIED as ANNOTATION_APPLIED;

/// The hash of an object's serialised form.
pub fn hash_of<T: Serialize>(object: &T) -> String {
    // Streamed into the digest: no JSON copy of the object is made.
    let mut hasher = Sha256::new();
    serde_json::to_writer(&mut hasher, object).expect("Kubernetes objects serialise");
    let mut hex = String::with_capacity(24);
    for b in hasher.finalize().iter().take(12) {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Applies `desired` unless `observed` already carries its hash. Returns the object the server
/// holds afterwards, or `None` when nothing was written.
pub async fn apply_if_changed<K>(
    api: &Api<K>,
    observed: Option<&K>,
    desired: K,
    writes: &Writes,
) -> kube::Result<Option<K>>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    apply_traced(api, observed, desired, writes, None).await
}

/// [`apply_if_changed`]; when it writes, observes the time since `origin` (the exporting
/// cluster's write of what changed) in `flow`'s propagation histogram.
pub async fn apply_traced<K>(
    api: &Api<K>,
    observed: Option<&K>,
    mut desired: K,
    writes: &Writes,
    origin: Option<(&Flow, Timestamp)>,
) -> kube::Result<Option<K>>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let hash = hash_of(&desired);
    if observed.and_then(|o| o.annotations().get(ANNOTATION_APPLIED)) == Some(&hash) {
        return Ok(None);
    }
    let kind = K::kind(&Default::default()).to_string();
    let object_key = object_key::<K>(
        desired.meta().namespace.as_deref().unwrap_or_default(),
        &desired.name_any(),
    );
    // Our own write of exactly this, not yet delivered by the watch: nothing to do.
    if let Some(object) = writes
        .recent(&object_key, &hash)
        .and_then(|json| serde_json::from_str::<K>(&json).ok())
    {
        return Ok(Some(object));
    }
    tracing::debug!(%kind, name = %desired.name_any(), observed = ?observed.and_then(|o| o.annotations().get(ANNOTATION_APPLIED)), desired = %hash, "applying");
    let now = Timestamp::now();
    let annotations = desired.annotations_mut();
    annotations.insert(ANNOTATION_APPLIED.to_string(), hash.clone());
    annotations.insert(ANNOTATION_WRITTEN_AT.to_string(), now.to_string());
    let name = desired.name_any();
    let params = PatchParams::apply(mcsd_crds::names::FIELD_MANAGER).force();
    let result = api.patch(&name, &params, &Patch::Apply(&desired)).await;
    writes.record(kind.as_ref(), "apply", result.is_ok());
    let mut written = result?;
    if let Some((flow, origin)) = origin {
        flow.propagated(&kind, now.duration_since(origin).as_secs_f64());
    }
    super::local::slim(&mut written);
    if let Ok(json) = serde_json::to_string(&written) {
        writes.remember(object_key, hash, json.into());
    }
    Ok(Some(written))
}

fn object_key<K: Resource>(namespace: &str, name: &str) -> String
where
    K::DynamicType: Default,
{
    format!("{}/{namespace}/{name}", K::kind(&Default::default()))
}

/// The freshest known state of an object mcsd writes: its own write of the last few seconds when
/// there is one (the watch may not have delivered it yet), else what the watch has.
pub fn freshest<K>(writes: &Writes, namespace: &str, name: &str, observed: Option<&K>) -> Option<K>
where
    K: Resource + DeserializeOwned + Clone,
    K::DynamicType: Default,
{
    writes
        .latest(&object_key::<K>(namespace, name))
        .and_then(|json| serde_json::from_str(&json).ok())
        .or_else(|| observed.cloned())
}

/// Remembers `written` (returned by a status write, say) as the freshest state of its object.
pub fn remember<K>(writes: &Writes, mut written: K)
where
    K: Resource + Serialize,
    K::DynamicType: Default,
{
    let Some(hash) = written.annotations().get(ANNOTATION_APPLIED).cloned() else {
        return;
    };
    let key = object_key::<K>(
        written.meta().namespace.as_deref().unwrap_or_default(),
        &written.name_any(),
    );
    super::local::slim(&mut written);
    if let Ok(json) = serde_json::to_string(&written) {
        writes.remember(key, hash, json.into());
    }
}

/// Deletes `name`; a missing object is not an error.
pub async fn delete<K>(api: &Api<K>, name: &str, writes: &Writes) -> kube::Result<()>
where
    K: Resource + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    writes.forget(&object_key::<K>(api.namespace().unwrap_or_default(), name));
    let result = api.delete(name, &DeleteParams::background()).await;
    let ok = match &result {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
        Err(_) => false,
    };
    writes.record(K::kind(&Default::default()).as_ref(), "delete", ok);
    result.map(|_| ())
}
/// (kind, operation, succeeded).
type WriteKey = (String, &'static str, bool);

/// Writes mcsd made to the API server, by (kind, operation, succeeded); and what was applied
/// recently, so that a reconcile running before the watch has delivered our own last write does
/// not write the same thing again.
#[derive(Clone, Debug, Default)]
pub struct Writes {
    counts: Arc<Mutex<BTreeMap<WriteKey, u64>>>,
    recent: Arc<Mutex<RecentWrites>>,
}

/// Recent applies by object, pruned at most once per [`RECENT_FOR`] so that a lookup stays
/// O(1) while thousands of services converge.
#[derive(Debug)]
struct RecentWrites {
    by_object: std::collections::HashMap<String, Recent>,
    pruned: std::time::Instant,
}

impl Default for RecentWrites {
    fn default() -> Self {
        Self {
            by_object: Default::default(),
            pruned: std::time::Instant::now(),
        }
    }
}

impl RecentWrites {
    /// The entry for `object_key`, if it is still recent.
    fn get(&self, object_key: &str) -> Option<&Recent> {
        self.by_object
            .get(object_key)
            .filter(|r| r.at.elapsed() < RECENT_FOR)
    }
}

/// One recent apply: its hash, the object the server returned (as JSON text, several times
/// smaller than a parsed value: a first convergence holds thousands), and when.
#[derive(Clone, Debug)]
struct Recent {
    hash: String,
    object: Box<str>,
    at: std::time::Instant,
}

/// How long a recent apply stands in for a watch that has not delivered it yet.
const RECENT_FOR: std::time::Duration = std::time::Duration::from_secs(10);

impl Writes {
    /// The object applied with `hash` to `object_key` less than [`RECENT_FOR`] ago, if any.
    pub fn recent(&self, object_key: &str, hash: &str) -> Option<Box<str>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .get(object_key)
            .filter(|r| r.hash == hash)
            .map(|r| r.object.clone())
    }

    /// The object last applied to `object_key` less than [`RECENT_FOR`] ago, whatever its hash.
    pub fn latest(&self, object_key: &str) -> Option<Box<str>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.get(object_key).map(|r| r.object.clone())
    }

    /// Remembers that `object` was applied to `object_key` with `hash`.
    pub fn remember(&self, object_key: String, hash: String, object: Box<str>) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.pruned.elapsed() >= RECENT_FOR {
            recent.by_object.retain(|_, r| r.at.elapsed() < RECENT_FOR);
            recent.pruned = std::time::Instant::now();
        }
        recent.by_object.insert(
            object_key,
            Recent {
                hash,
                object,
                at: std::time::Instant::now(),
            },
        );
    }

    /// Drops the applies older than [`RECENT_FOR`]. `remember` does this as writes go on; after
    /// the last write only this does, so call it periodically, or a burst of writes (a first
    /// convergence) would be held until the next write.
    pub fn prune(&self) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.by_object.retain(|_, r| r.at.elapsed() < RECENT_FOR);
        recent.by_object.shrink_to_fit();
        recent.pruned = std::time::Instant::now();
    }

    /// How many recent applies are held.
    pub fn recent_len(&self) -> usize {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_object
            .len()
    }

    /// Forgets what was applied to `object_key` (it was deleted).
    pub fn forget(&self, object_key: &str) {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_object
            .remove(object_key);
    }

    /// Counts one write.
    pub fn record(&self, kind: &str, operation: &'static str, ok: bool) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((kind.to_string(), operation, ok)).or_default() += 1;
    }

    /// All writes so far.
    pub fn total(&self) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    /// The counts, for `/metrics`.
    pub fn snapshot(&self) -> BTreeMap<WriteKey, u64> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// `mcsd_writes_total{kind,operation,outcome}`: the writes to the API server so far.
impl Collector for Writes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut writes = encoder.encode_descriptor(
            "writes",
            "Writes to the API server, by kind, operation and outcome.",
            None,
            MetricType::Counter,
        )?;
        for ((kind, operation, ok), n) in self.snapshot() {
            let outcome = if ok { "success" } else { "error" };
            let labels = [
                ("kind", kind.as_str()),
                ("operation", operation),
                ("outcome", outcome),
            ];
            ConstCounter::new(n).encode(writes.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_applies_are_dropped_once_old_even_without_further_writes() {
        let writes = Writes::default();
        writes.remember("ConfigMap/ns/a".into(), "h".into(), "{}".into());
        writes.prune();
        assert_eq!(writes.recent_len(), 1, "still recent");
        writes
            .recent
            .lock()
            .unwrap()
            .by_object
            .values_mut()
            .for_each(|r| r.at -= RECENT_FOR);
        writes.prune();
        assert_eq!(writes.recent_len(), 0);
        assert_eq!(writes.latest("ConfigMap/ns/a"), None);
    }

    #[test]
    fn writes_render_by_kind_operation_and_outcome() {
        let writes = Writes::default();
        writes.record("ServiceImport", "apply", true);
        writes.record("ServiceImport", "apply", true);
        writes.record("EndpointSlice", "delete", false);
        let text = super::super::metrics::scraped(&writes, &Default::default(), &Default::default());
        assert!(
            text.contains(
                "mcsd_writes_total{kind=\"ServiceImport\",operation=\"apply\",outcome=\"success\"} 2"
            )
        );
        assert!(
            text.contains(
                "mcsd_writes_total{kind=\"EndpointSlice\",operation=\"delete\",outcome=\"error\"} 1"
            )
        );
        assert_eq!(writes.total(), 3);
    }
}
