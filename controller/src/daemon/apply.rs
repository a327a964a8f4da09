//! Writing through server-side apply, and only when something changed.
//!
//! Every object mcsd writes carries the annotation `mcsd.io/applied` with a hash of what was
//! applied. Before writing, the desired object's hash is compared with the observed annotation:
//! equal means the cluster already holds exactly this, so nothing is written — also after a
//! restart, since the hash lives on the object, not in memory.

use std::fmt::{Debug, Write as _};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use super::metrics::{Flow, Writes};

/// The annotation holding the hash of what mcsd applied.
pub const ANNOTATION_APPLIED: &str = "mcsd.io/applied";

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

/// The annotation saying when mcsd last wrote the object (RFC 3339). Not part of the hash: it
/// changes only when the object does. A peer's copy of it dates the change for the propagation
/// histogram.
pub const ANNOTATION_WRITTEN_AT: &str = "mcsd.io/written-at";

/// When mcsd wrote `object`, if it says.
pub fn written_at<K: Resource>(object: &K) -> Option<Timestamp> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(ANNOTATION_WRITTEN_AT)?
        .parse()
        .ok()
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
    super::slim(&mut written);
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
    super::slim(&mut written);
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
