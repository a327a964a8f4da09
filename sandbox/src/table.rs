//! `meta.k8s.io/v1` Table answers for `kubectl get`: the name, a CRD's
//! `additionalPrinterColumns` (a JSONPath subset: `.a.b`, `[n]`, `[?(@.k=="v")]`), and the age.
//! The built-in kinds a newcomer lists most get kube-apiserver's own default columns (pods,
//! deployments, replica sets, stateful sets, jobs, services, namespaces, endpoint slices,
//! events); the others Name and Age.

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

/// One column of a built-in kind's table: its name, priority (1: only with `-o wide`) and cell.
type Column = (&'static str, u8, fn(&Value) -> Value);

fn int_at(obj: &Value, path: &str) -> i64 {
    obj.pointer(path).and_then(Value::as_i64).unwrap_or(0)
}

fn str_at<'a>(obj: &'a Value, path: &str) -> &'a str {
    obj.pointer(path).and_then(Value::as_str).unwrap_or("")
}

fn name_cell(obj: &Value) -> Value {
    json!(crate::meta::meta_str(obj, "name"))
}

fn age_cell(obj: &Value) -> Value {
    json!(age(crate::meta::meta_str(obj, "creationTimestamp")))
}

/// kube-apiserver's default columns of the built-in kinds the sandbox shows most.
fn builtin_columns(kind: &str) -> Option<Vec<Column>> {
    Some(match kind {
        "Pod" => vec![
            ("Name", 0, name_cell),
            ("Ready", 0, |o| {
                let total = o
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let ready = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                json!(format!("{}/{total}", if ready { total } else { 0 }))
            }),
            ("Status", 0, |o| {
                json!(if crate::meta::is_deleting(o) {
                    "Terminating"
                } else {
                    str_at(o, "/status/phase")
                })
            }),
            ("Restarts", 0, |_| json!(0)),
            ("Age", 0, age_cell),
            ("IP", 1, |o| json!(str_at(o, "/status/podIP"))),
            ("Node", 1, |o| json!(str_at(o, "/spec/nodeName"))),
        ],
        "Deployment" => vec![
            ("Name", 0, name_cell),
            ("Ready", 0, ready_of_replicas),
            ("Up-to-date", 0, |o| json!(int_at(o, "/status/updatedReplicas"))),
            ("Available", 0, |o| json!(int_at(o, "/status/availableReplicas"))),
            ("Age", 0, age_cell),
        ],
        "ReplicaSet" => vec![
            ("Name", 0, name_cell),
            ("Desired", 0, |o| json!(int_at(o, "/spec/replicas"))),
            ("Current", 0, |o| json!(int_at(o, "/status/replicas"))),
            ("Ready", 0, |o| json!(int_at(o, "/status/readyReplicas"))),
            ("Age", 0, age_cell),
        ],
        "StatefulSet" => vec![
            ("Name", 0, name_cell),
            ("Ready", 0, ready_of_replicas),
            ("Age", 0, age_cell),
        ],
        "Job" => vec![
            ("Name", 0, name_cell),
            ("Status", 0, |o| {
                json!(if o.pointer("/status/completionTime").is_some() {
                    "Complete"
                } else {
                    "Running"
                })
            }),
            ("Completions", 0, |o| {
                let want = o
                    .pointer("/spec/completions")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                json!(format!("{}/{want}", int_at(o, "/status/succeeded")))
            }),
            ("Age", 0, age_cell),
        ],
        "Service" => vec![
            ("Name", 0, name_cell),
            ("Type", 0, |o| json!(str_at(o, "/spec/type"))),
            ("Cluster-IP", 0, |o| json!(str_at(o, "/spec/clusterIP"))),
            ("External-IP", 0, |_| json!("<none>")),
            ("Port(s)", 0, |o| {
                let ports: Vec<String> = o
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
                    .collect();
                joined(&ports, "<none>")
            }),
            ("Age", 0, age_cell),
        ],
        "Namespace" => vec![
            ("Name", 0, name_cell),
            ("Status", 0, |o| json!(str_at(o, "/status/phase"))),
            ("Age", 0, age_cell),
        ],
        "EndpointSlice" => vec![
            ("Name", 0, name_cell),
            ("AddressType", 0, |o| json!(str_at(o, "/addressType"))),
            ("Ports", 0, |o| {
                let ports: Vec<String> = o
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| p["port"].to_string())
                    .collect();
                joined(&ports, "<unset>")
            }),
            ("Endpoints", 0, |o| {
                let addrs: Vec<&str> = o
                    .get("endpoints")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
                    .filter_map(Value::as_str)
                    .collect();
                joined(&addrs, "<unset>")
            }),
            ("Age", 0, age_cell),
        ],
        "Event" => vec![
            ("Last Seen", 0, |o| json!(age(str_at(o, "/lastTimestamp")))),
            ("Type", 0, |o| json!(str_at(o, "/type"))),
            ("Reason", 0, |o| json!(str_at(o, "/reason"))),
            ("Object", 0, |o| {
                let kind = str_at(o, "/involvedObject/kind").to_lowercase();
                json!(format!("{kind}/{}", str_at(o, "/involvedObject/name")))
            }),
            ("Message", 0, |o| json!(str_at(o, "/message"))),
            ("Name", 1, name_cell),
        ],
        _ => return None,
    })
}

/// A Table of `items` (already at `version`), with a list's `metadata` (resourceVersion,
/// continue).
pub fn table(info: &ResourceInfo, version: &str, items: &[Arc<Value>], metadata: Value) -> Value {
    if info.builtin
        && let Some(columns) = builtin_columns(&info.kind)
    {
        let defs: Vec<Value> = columns
            .iter()
            .map(|(name, priority, _)| {
                let format = if *name == "Name" { "name" } else { "" };
                json!({"name": name, "type": "string", "format": format, "description": name, "priority": priority})
            })
            .collect();
        let rows: Vec<Value> = items
            .iter()
            .map(|item| {
                let cells: Vec<Value> = columns.iter().map(|(_, _, cell)| cell(item)).collect();
                json!({"cells": cells, "object": **item})
            })
            .collect();
        return json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": defs, "rows": rows});
    }
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

/// `READY` of a workload: ready replicas of those wanted (`2/3`).
fn ready_of_replicas(o: &Value) -> Value {
    json!(format!(
        "{}/{}",
        int_at(o, "/status/readyReplicas"),
        int_at(o, "/spec/replicas")
    ))
}

/// A cell listing `items` comma-separated, or `empty` when there are none (as kubectl prints).
fn joined<S: AsRef<str>>(items: &[S], empty: &str) -> Value {
    if items.is_empty() {
        json!(empty)
    } else {
        json!(items.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(","))
    }
}
