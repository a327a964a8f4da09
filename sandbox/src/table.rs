//! `meta.k8s.io/v1` Table answers for `kubectl get`: the name, a CRD's
//! `additionalPrinterColumns` (a JSONPath subset: `.a.b`, `[n]`, `[?(@.k=="v")]`), and the age.
//! Built-in kinds get Name and Age only (kubectl prints them as a real cluster's short form).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::kinds::ResourceInfo;

fn eval<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let mut rest = path.trim().trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("[?(@.") {
            let end = r.find(")]")?;
            let cond = &r[..end];
            let (field, want) = cond.split_once("==")?;
            let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
            cur = cur
                .as_array()?
                .iter()
                .find(|item| item.get(field.trim()).and_then(Value::as_str) == Some(want))?;
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            cur = cur.get(r[..end].parse::<usize>().ok()?)?;
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(cur)
}

fn age(ts: &str) -> String {
    let Ok(t) = ts.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A Table of `items` (already at `version`), with a list's `metadata` (resourceVersion,
/// continue).
pub fn table(info: &ResourceInfo, version: &str, items: &[Arc<Value>], metadata: Value) -> Value {
    let cols = info.printer_columns.get(version).cloned().unwrap_or_default();
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}),
    ];
    let has_age = cols
        .iter()
        .any(|c| c.get("name").and_then(Value::as_str) == Some("Age"));
    for c in &cols {
        defs.push(json!({
            "name": c.get("name").cloned().unwrap_or(json!("")),
            "type": c.get("type").cloned().unwrap_or(json!("string")),
            "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    if !has_age {
        defs.push(
            json!({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}),
        );
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![json!(crate::meta::meta_str(item, "name"))];
            for c in &cols {
                let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
                let ty = c.get("type").and_then(Value::as_str).unwrap_or("string");
                let v = eval(item, path).cloned();
                cells.push(match (ty, v) {
                    ("date", Some(Value::String(s))) => json!(age(&s)),
                    (_, Some(v)) => v,
                    (_, None) => json!("<none>"),
                });
            }
            if !has_age {
                cells.push(json!(age(crate::meta::meta_str(item, "creationTimestamp"))));
            }
            json!({"cells": cells, "object": **item})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": defs, "rows": rows})
}
