//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A field set is a set of paths; a path is a list of steps: a struct field or map key (`f:`), a
//! list-map item by its key fields (`k:`), or a set item by value (`v:`). The sets are stored in
//! the `FieldsV1` format real API servers use, so `kubectl get --show-managed-fields` and client
//! libraries read them as they would from a real cluster.
//!
//! Simplifications against structured-merge-diff: lists are atomic unless the CRD schema says
//! `x-kubernetes-list-type: map|set` or the built-in table in [`crate::schema::builtin_list_type`]
//! names them; maps are always granular; a conflict is a field another manager owns whose value
//! the applied configuration changes; managers are told apart by name (and subresource), so one
//! manager's `Update` and `Apply` entries never conflict with each other.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::schema::ListType;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// A struct field or map key.
    Field(String),
    /// A list-map item, by its key fields as canonical JSON.
    Key(String),
    /// A set item, by its value as JSON.
    Value(String),
}

/// A path from the object's root.
pub type Path = Vec<Step>;
/// A set of owned fields.
pub type FieldSet = BTreeSet<Path>;

/// Which part of the object a write touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource: everything but `status` when a status subresource exists.
    Main,
    /// The `status` subresource: only `status`.
    Status,
    /// Everything (kinds without a status subresource).
    All,
}

impl Scope {
    fn subresource(self) -> &'static str {
        match self {
            Self::Status => "status",
            _ => "",
        }
    }

    fn includes_top(self, key: &str) -> bool {
        match (self, key) {
            (_, "apiVersion" | "kind") => false,
            (Self::Status, k) => k == "status",
            (Self::Main, "status") => false,
            _ => true,
        }
    }
}

/// Resolves the list type of the list at a path of field names (`"[]"` steps into items).
pub type ListTypes<'a> = &'a dyn Fn(&[&str]) -> ListType;

/// The set of leaf fields (and list-map items) an object sets, within a scope.
pub fn fields_of(obj: &Value, scope: Scope, lt: ListTypes<'_>) -> FieldSet {
    let mut set = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return set;
    };
    for (k, v) in map {
        if !scope.includes_top(k) {
            continue;
        }
        if k == "metadata" {
            if scope == Scope::Status {
                continue;
            }
            for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if let Some(mv) = v.get(mk) {
                    let path = vec![Step::Field("metadata".into()), Step::Field(mk.into())];
                    collect(mv, path, &mut vec!["metadata", mk], lt, &mut set);
                }
            }
            continue;
        }
        collect(
            v,
            vec![Step::Field(k.clone())],
            &mut vec![k.as_str()],
            lt,
            &mut set,
        );
    }
    set
}

fn key_of(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    Value::Object(m).to_string()
}

fn collect<'a>(v: &'a Value, path: Path, names: &mut Vec<&'a str>, lt: ListTypes<'_>, set: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, sub) in m {
                let mut p = path.clone();
                p.push(Step::Field(k.clone()));
                names.push(k.as_str());
                collect(sub, p, names, lt, set);
                names.pop();
            }
        }
        Value::Array(items) => match lt(names) {
            ListType::Atomic => {
                set.insert(path);
            }
            ListType::Set => {
                for item in items {
                    let mut p = path.clone();
                    p.push(Step::Value(item.to_string()));
                    set.insert(p);
                }
            }
            ListType::Map(keys) => {
                for item in items {
                    let mut p = path.clone();
                    p.push(Step::Key(key_of(item, &keys)));
                    set.insert(p.clone());
                    names.push("[]");
                    if let Some(m) = item.as_object() {
                        for (k, sub) in m {
                            let mut q = p.clone();
                            q.push(Step::Field(k.clone()));
                            names.push(k.as_str());
                            collect(sub, q, names, lt, set);
                            names.pop();
                        }
                    }
                    names.pop();
                }
            }
        },
        _ => {
            set.insert(path);
        }
    }
}

/// The value at a path, if present.
pub fn value_at<'a>(obj: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut cur = obj;
    for step in path {
        cur = match step {
            Step::Field(k) => cur.get(k)?,
            Step::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).ok()?;
                cur.as_array()?
                    .iter()
                    .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))?
            }
            Step::Value(j) => {
                let want: Value = serde_json::from_str(j).ok()?;
                cur.as_array()?.iter().find(|item| **item == want)?
            }
        };
    }
    Some(cur)
}

fn remove_at(obj: &mut Value, path: &[Step]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for step in parent_path {
        let next = match step {
            Step::Field(k) => cur.get_mut(k),
            Step::Key(k) => {
                let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
                    return;
                };
                cur.as_array_mut().and_then(|a| {
                    a.iter_mut()
                        .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))
                })
            }
            Step::Value(j) => {
                let Ok(want) = serde_json::from_str::<Value>(j) else {
                    return;
                };
                cur.as_array_mut()
                    .and_then(|a| a.iter_mut().find(|item| **item == want))
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Step::Field(k) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(k);
            }
        }
        Step::Key(k) => {
            if let (Ok(key), Some(a)) = (serde_json::from_str::<Map<String, Value>>(k), cur.as_array_mut()) {
                a.retain(|item| !key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)));
            }
        }
        Step::Value(j) => {
            if let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(j), cur.as_array_mut()) {
                a.retain(|item| *item != want);
            }
        }
    }
}

/// Encodes a field set as `FieldsV1`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for step in path {
            let key = match step {
                Step::Field(k) => format!("f:{k}"),
                Step::Key(k) => format!("k:{k}"),
                Step::Value(v) => format!("v:{v}"),
            };
            node = node
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("nodes are objects");
        }
        node.insert(".".into(), json!({}));
    }
    // A leaf is written `{}`; `"."` stays only beside children.
    fn tidy(m: &mut Map<String, Value>) {
        if m.len() == 1 && m.contains_key(".") {
            m.clear();
            return;
        }
        for (k, v) in m.iter_mut() {
            if k != "."
                && let Some(sub) = v.as_object_mut()
            {
                tidy(sub);
            }
        }
    }
    tidy(&mut root);
    Value::Object(root)
}

/// Decodes `FieldsV1`.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(m: &Map<String, Value>, path: &mut Path, set: &mut FieldSet) {
        if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
            set.insert(path.clone());
        }
        for (k, sub) in m {
            let step = if let Some(f) = k.strip_prefix("f:") {
                Step::Field(f.to_string())
            } else if let Some(key) = k.strip_prefix("k:") {
                // Canonicalise the key's JSON so it compares equal to ours.
                match serde_json::from_str::<Value>(key) {
                    Ok(j) => Step::Key(j.to_string()),
                    Err(_) => continue,
                }
            } else if let Some(val) = k.strip_prefix("v:") {
                match serde_json::from_str::<Value>(val) {
                    Ok(j) => Step::Value(j.to_string()),
                    Err(_) => continue,
                }
            } else {
                continue;
            };
            if let Some(sm) = sub.as_object() {
                path.push(step);
                walk(sm, path, set);
                path.pop();
            }
        }
    }
    let mut set = FieldSet::new();
    if let Some(m) = v.as_object() {
        walk(m, &mut Vec::new(), &mut set);
    }
    set
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: String,
    fields: FieldSet,
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    Entry {
                        manager: s("manager"),
                        operation: s("operation"),
                        subresource: s("subresource"),
                        api_version: s("apiVersion"),
                        time: s("time"),
                        fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_entries(obj: &mut Value, list: Vec<Entry>) {
    let list: Vec<Value> = list
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    let meta = meta::metadata_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Records a non-apply write (create, update, patch) by `manager` in `new`'s managedFields: the
/// fields it changed become its own (operation `Update`), and no other manager's.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    scope: Scope,
    api_version: &str,
    lt: ListTypes<'_>,
) {
    let mut list = old.map(entries).unwrap_or_default();
    let new_set = fields_of(new, scope, lt);
    let (changed, removed): (FieldSet, FieldSet) = match old {
        None => (new_set.clone(), FieldSet::new()),
        Some(old) => {
            let old_set = fields_of(old, scope, lt);
            let changed = new_set
                .iter()
                .filter(|p| !old_set.contains(*p) || value_at(old, p) != value_at(new, p))
                .cloned()
                .collect();
            let removed = old_set.difference(&new_set).cloned().collect();
            (changed, removed)
        }
    };
    let sub = scope.subresource();
    for e in list.iter_mut() {
        e.fields.retain(|p| !removed.contains(p));
        if !(e.manager == manager && e.operation == "Update" && e.subresource == sub) {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match list
            .iter_mut()
            .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub)
        {
            Some(e) => {
                e.fields.extend(changed);
                e.time = meta::now();
                e.api_version = api_version.to_string();
            }
            None => list.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                subresource: sub.to_string(),
                api_version: api_version.to_string(),
                time: meta::now(),
                fields: changed,
            }),
        }
    }
    write_entries(new, list);
}

fn path_string(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Field(k) => {
                s.push('.');
                s.push_str(k);
            }
            Step::Key(k) => {
                s.push('[');
                s.push_str(&k.trim_start_matches('{').trim_end_matches('}').replace(':', "="));
                s.push(']');
            }
            Step::Value(v) => {
                s.push_str("[=");
                s.push_str(v);
                s.push(']');
            }
        }
    }
    s
}

fn merge(live: &mut Value, applied: &Value, names: &mut Vec<String>, lt: ListTypes<'_>) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                names.push(k.clone());
                match l.get_mut(k) {
                    Some(lv) if !av.is_null() => merge(lv, av, names, lt),
                    _ => {
                        l.insert(k.clone(), av.clone());
                    }
                }
                names.pop();
            }
        }
        (Value::Array(l), Value::Array(a)) => {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            match lt(&refs) {
                ListType::Atomic => *l = a.clone(),
                ListType::Set => {
                    for item in a {
                        if !l.contains(item) {
                            l.push(item.clone());
                        }
                    }
                }
                ListType::Map(keys) => {
                    names.push("[]".into());
                    for item in a {
                        let k = key_of(item, &keys);
                        match l.iter_mut().find(|x| key_of(x, &keys) == k) {
                            Some(existing) => merge(existing, item, names, lt),
                            None => l.push(item.clone()),
                        }
                    }
                    names.pop();
                }
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// Server-side apply of `applied` by `manager` onto `live` (`None`: the object is created).
/// Returns the merged object with its managedFields, or a 409 Conflict naming the fields and the
/// managers that own them (unless `force`, which takes them over).
#[allow(clippy::too_many_arguments)]
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    api_version: &str,
    lt: ListTypes<'_>,
    what: (&str, &str, &str),
) -> ApiResult<Value> {
    let sub = scope.subresource();
    let mut list = live.map(entries).unwrap_or_default();
    let applied_set = fields_of(applied, scope, lt);
    let empty = Value::Object(Map::new());
    let live_obj = live.unwrap_or(&empty);

    let mut conflicts: Vec<(Path, String, String)> = Vec::new();
    for e in list.iter() {
        if e.manager == manager {
            continue;
        }
        for p in e.fields.intersection(&applied_set) {
            if matches!(p.last(), Some(Step::Key(_))) {
                continue;
            }
            if value_at(applied, p) != value_at(live_obj, p) {
                conflicts.push((p.clone(), e.manager.clone(), e.api_version.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            let (group, resource, name) = what;
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(p, m, v)| {
                    json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {v}"), "field": path_string(p)})
                })
                .collect();
            let lines: Vec<String> = conflicts
                .iter()
                .map(|(p, m, v)| format!("conflict with \"{m}\" using {v}: {}", path_string(p)))
                .collect();
            let n = conflicts.len();
            let mut err = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {n} conflict{}: {}",
                    if n == 1 { "" } else { "s" },
                    lines.join("\n")
                ),
            )
            .with_details(group, resource, name);
            if let Some(d) = err.details.as_mut() {
                d["causes"] = Value::Array(causes);
            }
            return Err(err);
        }
        for (p, m, _) in &conflicts {
            for e in list.iter_mut().filter(|e| &e.manager == m) {
                e.fields.remove(p);
            }
        }
    }

    let mut merged = live_obj.clone();
    let mut scoped = applied.clone();
    if let Some(m) = scoped.as_object_mut() {
        m.retain(|k, _| k == "metadata" || scope.includes_top(k));
        if scope == Scope::Status {
            m.remove("metadata");
        } else if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            md.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels" | "annotations" | "finalizers" | "ownerReferences"
                )
            });
        }
    }
    merge(&mut merged, &scoped, &mut Vec::new(), lt);

    let previous: FieldSet = list
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply" && e.subresource == sub)
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let others: FieldSet = list
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply" && e.subresource == sub))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut stale: Vec<&Path> = previous
        .iter()
        .filter(|p| !applied_set.contains(*p) && !others.contains(*p))
        .filter(|p| !others.iter().any(|o| o.starts_with(p)) && !applied_set.iter().any(|o| o.starts_with(p)))
        .collect();
    // Outermost first: a list-map item goes whole while its key fields still identify it
    // (removing `.type` first would leave an item no key matches, and a husk behind).
    stale.sort_by_key(|p| p.len());
    for p in stale {
        remove_at(&mut merged, p);
    }

    list.retain(|e| !(e.manager == manager && e.operation == "Apply" && e.subresource == sub));
    list.push(Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        subresource: sub.to_string(),
        api_version: api_version.to_string(),
        time: meta::now(),
        fields: applied_set,
    });
    write_entries(&mut merged, list);
    Ok(merged)
}
