//! Events (`core/v1`), as the controllers record them: what `kubectl get events` and the end of
//! `kubectl describe` show. Each call records one event; there is no aggregation into `count`.

use serde_json::{Value, json};

use crate::api::{Api, Ctx};
use crate::meta;

/// Records an event about `obj` (`type_` is `Normal` or `Warning`), in `obj`'s namespace.
pub fn record(api: &Api, obj: &Value, type_: &str, reason: &str, message: &str) {
    let Some(info) = api.resource("", "events") else {
        return;
    };
    let ns = match meta::meta_str(obj, "namespace") {
        "" => "default",
        ns => ns,
    };
    let name = meta::meta_str(obj, "name");
    let now = meta::now();
    let component = match obj.get("kind").and_then(Value::as_str) {
        Some("Deployment") => "deployment-controller",
        Some("ReplicaSet") => "replicaset-controller",
        Some("StatefulSet") => "statefulset-controller",
        Some("Job") => "job-controller",
        Some("Pod") => "default-scheduler",
        _ => "sandbox",
    };
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{}", hex_now()), "namespace": ns},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion").cloned().unwrap_or(json!("v1")),
            "kind": obj.get("kind").cloned().unwrap_or(Value::Null),
            "name": name, "namespace": meta::meta_str(obj, "namespace"),
            "uid": meta::meta_str(obj, "uid"),
            "resourceVersion": meta::meta_str(obj, "resourceVersion"),
        },
        "reason": reason, "message": message, "type": type_,
        "source": {"component": component},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": component, "reportingInstance": "",
    });
    if let Err(e) = api.create(&info, "v1", ns, event, &Ctx::system(component))
        && e.code != 404
    {
        tracing::debug!(error = %e, reason, "recording an event failed");
    }
}

/// The event name suffix kube-apiserver's recorders use: the time, in hexadecimal nanoseconds.
fn hex_now() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}")
}
