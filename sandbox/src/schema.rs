//! Structural schemas of custom resources: defaulting, pruning and validation, as the API server
//! does them for CRDs (a subset of OpenAPI v3: `type`, `properties`, `additionalProperties`,
//! `items`, `required`, `enum`, `nullable`, `default`, `minimum`/`maximum`, `maxLength`,
//! `maxItems`, `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string`).
//! `pattern`, `format`, CEL rules and `oneOf`/`anyOf` are not checked.

use serde_json::{Map, Value};

use crate::error::Cause;

/// Fills in `default`s and drops fields the schema does not know, in place.
pub fn default_and_prune(schema: &Value, obj: &mut Value) {
    walk(schema, obj, true);
}

fn walk(schema: &Value, obj: &mut Value, root: bool) {
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    match obj {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(props) = props {
                for (name, sub) in props {
                    if !map.contains_key(name)
                        && let Some(default) = sub.get("default")
                    {
                        map.insert(name.clone(), default.clone());
                    }
                }
            }
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(&key)).or(additional);
                match sub {
                    Some(sub) => {
                        if let Some(v) = map.get_mut(&key) {
                            walk(sub, v, false);
                        }
                    }
                    None if !preserve => {
                        map.remove(&key);
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for item in items {
                    walk(sub, item, false);
                }
            }
        }
        _ => {}
    }
}

/// Checks an object against its schema, returning one cause per violation.
pub fn validate(schema: &Value, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    check(schema, obj, "", &mut causes, true);
    causes
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(schema: &Value, obj: &Value, path: &str, causes: &mut Vec<Cause>, root: bool) {
    if obj.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) && !root {
            causes.push(Cause::new(
                path,
                "FieldValueTypeInvalid",
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    schema.get("type").and_then(Value::as_str).unwrap_or("object")
                ),
            ));
        }
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let got = type_name(obj);
        let ok = got == want || (want == "number" && got == "integer");
        if !ok && !int_or_string {
            causes.push(Cause::new(
                path,
                "FieldValueTypeInvalid",
                format!("Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\""),
            ));
            return;
        }
    } else if int_or_string && !matches!(type_name(obj), "integer" | "string") {
        causes.push(Cause::new(
            path,
            "FieldValueTypeInvalid",
            format!("Invalid value: {obj}: {path} in body must be an integer or a string"),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(obj)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        causes.push(Cause::new(
            path,
            "FieldValueNotSupported",
            format!("Unsupported value: {obj}: supported values: {}", list.join(", ")),
        ));
    }
    match obj {
        Value::Object(map) => check_object(schema, map, path, causes, root),
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                causes.push(Cause::new(
                    path,
                    "FieldValueTooMany",
                    format!("Too many: {}: must have at most {max} items", items.len()),
                ));
            }
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(sub, item, &format!("{path}[{i}]"), causes, false);
                }
            }
        }
        Value::String(s) => {
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && s.chars().count() as u64 > max
            {
                causes.push(Cause::new(
                    path,
                    "FieldValueTooLong",
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                causes.push(Cause::invalid(
                    path,
                    obj,
                    &format!("{path} in body should be greater than or equal to {min}"),
                ));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                causes.push(Cause::invalid(
                    path,
                    obj,
                    &format!("{path} in body should be less than or equal to {max}"),
                ));
            }
        }
        _ => {}
    }
}

fn check_object(schema: &Value, map: &Map<String, Value>, path: &str, causes: &mut Vec<Cause>, root: bool) {
    for req in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(req) {
            causes.push(Cause::required(join(path, req)));
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, value) in map {
        if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(key)).or(additional) {
            check(sub, value, &join(path, key), causes, false);
        }
    }
}

/// How server-side apply treats a list: atomic, a set of scalars, or a map keyed by fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole, owned as one field.
    Atomic,
    /// Items are scalars, each owned separately.
    Set,
    /// Items are objects identified by these key fields.
    Map(Vec<String>),
}

/// The list type a CRD schema declares for the list at `path` (field names; list items are
/// entered through `items`).
pub fn list_type_in_schema(schema: &Value, path: &[&str]) -> Option<ListType> {
    let mut s = schema;
    for seg in path {
        s = if *seg == "[]" {
            s.get("items")?
        } else {
            s.get("properties")
                .and_then(|p| p.get(*seg))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))?
        };
    }
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => Some(ListType::Map(
            s.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
        )),
        Some("set") => Some(ListType::Set),
        _ => Some(ListType::Atomic),
    }
}

/// The list type of a built-in kind's list, by the field's place, as the Kubernetes types declare
/// it (`patchMergeKey` / `listType` markers). Lists not named here are atomic.
pub fn builtin_list_type(kind: &str, path: &[&str]) -> ListType {
    let keys = |k: &[&str]| ListType::Map(k.iter().map(|s| s.to_string()).collect());
    let last = path.last().copied().unwrap_or("");
    let parent = if path.len() >= 2 { path[path.len() - 2] } else { "" };
    match (kind, parent, last) {
        (_, "metadata", "finalizers") => ListType::Set,
        (_, "metadata", "ownerReferences") => keys(&["uid"]),
        (_, _, "conditions") => keys(&["type"]),
        (_, _, "containers" | "initContainers" | "ephemeralContainers") => keys(&["name"]),
        (_, "[]", "env") => keys(&["name"]),
        (_, _, "volumes") => keys(&["name"]),
        (_, _, "volumeMounts") => keys(&["mountPath"]),
        ("Pod", "[]", "ports") => keys(&["containerPort", "protocol"]),
        ("Service", "spec", "ports") => keys(&["port", "protocol"]),
        ("Service", "spec", "ipFamilies" | "clusterIPs") => ListType::Atomic,
        ("Pod", _, "podIPs") => keys(&["ip"]),
        ("Pod", _, "containerStatuses") => keys(&["name"]),
        (_, _, "imagePullSecrets") => keys(&["name"]),
        (_, _, "secrets") => keys(&["name"]),
        (_, "spec", "finalizers") => ListType::Set,
        _ => ListType::Atomic,
    }
}
