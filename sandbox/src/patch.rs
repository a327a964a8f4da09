//! Strategic merge patch for the built-in kinds (what `kubectl apply`, `edit`, `label` and
//! `patch` send): maps merge, `null` deletes, keyed lists merge by their merge key, lists of
//! scalars named as sets merge, other lists are replaced. Directives: `$patch: replace|delete`,
//! `$retainKeys`, `$deleteFromPrimitiveList/<field>`, `$setElementOrder/<field>`.

use serde_json::{Map, Value};

use crate::schema::{ListType, builtin_list_type};

/// Applies a strategic merge patch to `target` of kind `kind`.
pub fn strategic_merge(kind: &str, target: &mut Value, patch: &Value) {
    let mut names = Vec::new();
    merge_value(kind, target, patch, &mut names);
}

fn merge_value(kind: &str, target: &mut Value, patch: &Value, names: &mut Vec<String>) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => merge_map(kind, t, p, names),
        _ => *target = strip_directives(patch),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn merge_map(kind: &str, t: &mut Map<String, Value>, p: &Map<String, Value>, names: &mut Vec<String>) {
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *t = match strip_directives(&Value::Object(p.clone())) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            return;
        }
        Some("delete") => {
            t.clear();
            return;
        }
        _ => {}
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (t.get_mut(field), pv.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            t.remove(k);
            continue;
        }
        names.push(k.clone());
        match (t.get_mut(k), pv) {
            (Some(Value::Array(tl)), Value::Array(pl)) => {
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let lt = builtin_list_type(kind, &refs);
                merge_list(kind, tl, pl, lt, names);
            }
            (Some(tv), pv) if tv.is_object() && pv.is_object() => merge_value(kind, tv, pv, names),
            (_, pv) => {
                t.insert(k.clone(), strip_directives(pv));
            }
        }
        names.pop();
    }
    for (k, order) in p {
        if let (Some(field), Some(order)) = (k.strip_prefix("$setElementOrder/"), order.as_array())
            && let Some(Value::Array(list)) = t.get_mut(field)
        {
            let refs: Vec<String> = names.iter().cloned().chain([field.to_string()]).collect();
            let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
            let key = match builtin_list_type(kind, &refs) {
                ListType::Map(keys) => keys.first().cloned(),
                _ => None,
            };
            let pos = |item: &Value| {
                order
                    .iter()
                    .position(|o| match &key {
                        Some(k) => o.get(k) == item.get(k),
                        None => o == item,
                    })
                    .unwrap_or(usize::MAX)
            };
            list.sort_by_key(pos);
        }
    }
}

fn merge_list(kind: &str, tl: &mut Vec<Value>, pl: &[Value], lt: ListType, names: &mut Vec<String>) {
    match lt {
        ListType::Atomic => *tl = pl.iter().map(strip_directives).collect(),
        ListType::Set => {
            for item in pl {
                if !tl.contains(item) {
                    tl.push(item.clone());
                }
            }
        }
        ListType::Map(keys) => {
            let Some(key) = keys.first() else {
                *tl = pl.to_vec();
                return;
            };
            if pl
                .iter()
                .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                *tl = pl
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .map(strip_directives)
                    .collect();
                return;
            }
            names.push("[]".into());
            for item in pl {
                let k = item.get(key);
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                if delete {
                    tl.retain(|x| x.get(key) != k);
                    continue;
                }
                match tl.iter_mut().find(|x| x.get(key) == k && k.is_some()) {
                    Some(existing) => merge_value(kind, existing, item, names),
                    None => tl.push(strip_directives(item)),
                }
            }
            names.pop();
        }
    }
}
