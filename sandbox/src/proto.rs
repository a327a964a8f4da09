//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), as kube-apiserver takes them
//! from kubectl's typed generators (`kubectl create namespace`, `create deployment`, `create
//! token`, `expose`, `run`, …), turned into the JSON the rest of the sandbox works with.
//!
//! The wire format: the four bytes `k8s\0`, then a `runtime.Unknown` message whose `typeMeta`
//! names the kind and whose `raw` is the object's own protobuf encoding. The object is decoded
//! with [`prost_reflect`] against the descriptors of the published Kubernetes `.proto` files
//! (`sandbox/proto/kubernetes.pb`, made by `sandbox/proto/generate.sh`), then written as the JSON
//! kube-apiserver would have taken: field names as in the API, 64-bit integers as numbers, empty
//! strings left out, and apimachinery's hand-written types (`Time`, `MicroTime`, `Duration`, `IntOrString`,
//! `Quantity`, `RawExtension`, `FieldsV1`) in their JSON forms.

use std::sync::LazyLock;

use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value as Field,
};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};

/// The media type of protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
const MAGIC: &[u8; 4] = b"k8s\0";

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!("../proto/kubernetes.pb")[..])
        .expect("sandbox/proto/kubernetes.pb is a valid descriptor set")
});

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// Decodes a protobuf request body into the object's JSON, `apiVersion` and `kind` included.
/// A body that is not one answers 400 with what is wrong, as kube-apiserver does.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let bad =
        |why: String| ApiError::bad_request(format!("the protobuf request body could not be decoded: {why}"));
    let envelope = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| bad("it does not start with the Kubernetes protobuf prefix \"k8s\\x00\"".into()))?;
    let unknown = message("k8s.io.apimachinery.pkg.runtime.Unknown");
    let unknown = DynamicMessage::decode(unknown, envelope).map_err(|e| bad(e.to_string()))?;
    let type_meta = match unknown.get_field_by_name("typeMeta").as_deref() {
        Some(Field::Message(m)) => m.clone(),
        _ => return Err(bad("its envelope names no type".into())),
    };
    let string = |m: &DynamicMessage, name: &str| match m.get_field_by_name(name).as_deref() {
        Some(Field::String(s)) => s.clone(),
        _ => String::new(),
    };
    let api_version = string(&type_meta, "apiVersion");
    let kind = string(&type_meta, "kind");
    let encoding = string(&unknown, "contentEncoding");
    if !encoding.is_empty() {
        return Err(bad(format!("content encoding {encoding:?} is not supported")));
    }
    let raw = match unknown.get_field_by_name("raw").as_deref() {
        Some(Field::Bytes(b)) => b.clone(),
        _ => Default::default(),
    };
    let descriptor = descriptor_for(&api_version, &kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "no kind \"{kind}\" is registered for version \"{api_version}\""
        ))
    })?;
    let object = DynamicMessage::decode(descriptor, raw).map_err(|e| bad(format!("{kind}: {e}")))?;
    let mut json = to_json(&object);
    if let Value::Object(map) = &mut json {
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!(kind));
    }
    Ok(json)
}

fn message(name: &str) -> MessageDescriptor {
    POOL.get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is in sandbox/proto/kubernetes.pb"))
}

/// The message of `kind` at `apiVersion`: `k8s.io.api.<group's first label, or core>.<version>`,
/// else apimachinery's `meta/v1` (DeleteOptions and the like, sent with any group's version).
fn descriptor_for(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group.split('.').next() {
        Some("") | None => "core",
        Some(first) => first,
    };
    POOL.get_message_by_name(&format!("k8s.io.api.{package}.{version}.{kind}"))
        .or_else(|| POOL.get_message_by_name(&format!("{META}.{kind}")))
}

/// A decoded message as the API's JSON.
fn to_json(message: &DynamicMessage) -> Value {
    let name = message.descriptor().full_name().to_string();
    match name.strip_prefix("k8s.io.apimachinery.pkg.") {
        Some("apis.meta.v1.Time") => time(message, false),
        Some("apis.meta.v1.MicroTime") => time(message, true),
        Some("apis.meta.v1.Duration") => json!(go_duration(int(message, "duration"))),
        Some("util.intstr.IntOrString") => {
            if int(message, "type") == 1 {
                json!(text(message, "strVal"))
            } else {
                json!(int(message, "intVal"))
            }
        }
        Some("api.resource.Quantity") => json!(text(message, "string")),
        Some("runtime.RawExtension") => embedded_json(message, "raw"),
        Some("apis.meta.v1.FieldsV1") => embedded_json(message, "Raw"),
        _ => {
            let mut object = Map::new();
            for (field, value) in message.fields() {
                // Go writes every non-pointer string, empty or not; its JSON leaves the empty ones
                // out (`omitempty`), and so do we, so that "" never stands for "unset".
                if matches!(value, Field::String(s) if s.is_empty()) {
                    continue;
                }
                object.insert(field.json_name().to_string(), field_json(value));
            }
            Value::Object(object)
        }
    }
}

fn field_json(value: &Field) -> Value {
    use base64::Engine as _;
    match value {
        Field::Bool(b) => json!(b),
        Field::I32(n) => json!(n),
        Field::I64(n) => json!(n),
        Field::U32(n) => json!(n),
        Field::U64(n) => json!(n),
        Field::F32(n) => json!(n),
        Field::F64(n) => json!(n),
        Field::String(s) => json!(s),
        Field::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Field::EnumNumber(n) => json!(n),
        Field::Message(m) => to_json(m),
        Field::List(items) => Value::Array(items.iter().map(field_json).collect()),
        Field::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                map.insert(key, field_json(value));
            }
            Value::Object(map)
        }
    }
}

fn int(message: &DynamicMessage, name: &str) -> i64 {
    match message.get_field_by_name(name).as_deref() {
        Some(Field::I64(n)) => *n,
        Some(Field::I32(n)) => i64::from(*n),
        _ => 0,
    }
}

fn text(message: &DynamicMessage, name: &str) -> String {
    match message.get_field_by_name(name).as_deref() {
        Some(Field::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// `metav1.Time` (RFC 3339, seconds) or `MicroTime` (microseconds); Go's zero time is `null`.
fn time(message: &DynamicMessage, micro: bool) -> Value {
    const GO_ZERO_TIME: i64 = -62_135_596_800;
    let seconds = int(message, "seconds");
    if seconds == GO_ZERO_TIME {
        return Value::Null;
    }
    let nanos = int(message, "nanos").clamp(0, 999_999_999) as i32;
    let Ok(at) = jiff::Timestamp::new(seconds, if micro { nanos } else { 0 }) else {
        return Value::Null;
    };
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S.%6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    json!(at.strftime(format).to_string())
}

/// JSON carried as bytes (`RawExtension.raw`, `FieldsV1.Raw`); `null` when it is not JSON.
fn embedded_json(message: &DynamicMessage, name: &str) -> Value {
    match message.get_field_by_name(name).as_deref() {
        Some(Field::Bytes(raw)) => serde_json::from_slice(raw).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Go's `time.Duration.String()` of `nanos`: `1h2m3.5s`, `500ms`, `0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, scale) = match n {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", decimal(n, scale));
    }
    let hours = n / 3_600_000_000_000;
    let minutes = n / 60_000_000_000 % 60;
    let seconds = decimal(n % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

/// `n / scale` with its fraction, trailing zeros dropped.
fn decimal(n: u64, scale: u64) -> String {
    let whole = n / scale;
    let fraction = n % scale;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_prints_them() {
        for (nanos, text) in [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (3_600_000_000_000, "1h0m0s"),
            (90_000_000_000, "1m30s"),
            (500_000_000, "500ms"),
            (1_500, "1.5µs"),
            (-2_000_000_000, "-2s"),
        ] {
            assert_eq!(go_duration(nanos), text);
        }
    }

    #[test]
    fn every_group_the_sandbox_serves_has_its_messages() {
        for (api_version, kind) in [
            ("v1", "Namespace"),
            ("v1", "Secret"),
            ("apps/v1", "Deployment"),
            ("batch/v1", "Job"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding"),
            ("authentication.k8s.io/v1", "TokenRequest"),
            ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
            ("events.k8s.io/v1", "Event"),
            ("v1", "DeleteOptions"),
        ] {
            assert!(
                descriptor_for(api_version, kind).is_some(),
                "{api_version} {kind}"
            );
        }
        assert!(descriptor_for("v1", "NoSuchKind").is_none());
    }
}
