//! An explanation as text, for `mcsd why` (the JSON form is the model itself).

use std::fmt::Write as _;

use super::{Explanation, Form};

/// The explanation as text, for a person.
pub fn render(e: &Explanation) -> String {
    let mut s = String::new();
    answers(&mut s, e);
    let Some((ns, name)) = &e.service else {
        let _ = writeln!(s);
        let what = match e.form {
            Form::OutsideZone => "The name is outside the zone this server answers for; it refuses it.",
            _ => "The name is not a service's name (<service>.<namespace>.svc.<zone>).",
        };
        let _ = writeln!(s, "{what}");
        return s;
    };
    let _ = writeln!(s);
    match &e.form {
        Form::Srv { port, protocol } => {
            let _ = writeln!(s, "SRV name of port {port}/{protocol} of service {ns}/{name}.");
        }
        Form::Hostname { hostname, cluster } => {
            let _ = writeln!(s, "Endpoint {hostname} in {cluster} of service {ns}/{name}.");
        }
        _ => {
            let _ = writeln!(s, "Service {ns}/{name}.");
        }
    }
    here(&mut s, e, ns, name);
    clusters(&mut s, e, ns, name);
    slices(&mut s, e);
    left_out(&mut s, e);
    s
}

/// Who was asked, and what its DNS server answers now.
fn answers(s: &mut String, e: &Explanation) {
    let role = match (e.ready, e.leader) {
        (false, _) => "still listing, not ready",
        (true, true) => "leader",
        (true, false) => "standby: serves DNS, does not write",
    };
    let _ = writeln!(s, "{}  (asked of {}'s mcsd, {role})", e.name, e.cluster);
    let _ = writeln!(s);
    let _ = writeln!(s, "Answers now:");
    for a in &e.answers {
        if a.records.is_empty() {
            let none = if a.rcode == "NOERROR" {
                "  (no records)"
            } else {
                ""
            };
            let _ = writeln!(s, "  {:<5} {}{none}", a.qtype, a.rcode);
        }
        for (i, r) in a.records.iter().enumerate() {
            let rcode = if i == 0 { a.rcode.as_str() } else { "" };
            let _ = writeln!(s, "  {:<5} {:<8} {r}", if i == 0 { &a.qtype } else { "" }, rcode);
        }
    }
}

/// The import here, and this cluster's own export or Service.
fn here(s: &mut String, e: &Explanation, ns: &str, name: &str) {
    match &e.import {
        Some(i) => {
            let ips = if i.ips.is_empty() {
                "no IPs".to_string()
            } else {
                i.ips.join(", ")
            };
            let _ = writeln!(
                s,
                "ServiceImport {ns}/{name}: {}, {ips}; ports {}; from {}",
                i.type_,
                or_none(&i.ports),
                or_none(&i.clusters)
            );
            for c in &i.conditions {
                let _ = writeln!(s, "  {}={} {}: {}", c.type_, c.status, c.reason, c.message);
            }
        }
        None => {
            let why = if !e.namespace_exists {
                format!("namespace {ns} does not exist here")
            } else if e.clusters.iter().all(|c| !c.exports || c.excluded.is_some()) {
                "no cluster exports the service (that is not left out)".to_string()
            } else {
                "not written yet".to_string()
            };
            let _ = writeln!(s, "No ServiceImport {ns}/{name} in {}: {why}.", e.cluster);
        }
    }
    match &e.export_here {
        Some(conditions) => {
            let _ = writeln!(s, "This cluster exports it:");
            for c in conditions {
                let _ = writeln!(s, "  {}={} {}: {}", c.type_, c.status, c.reason, c.message);
            }
        }
        None if e.local_service => {
            let _ = writeln!(
                s,
                "A Service {ns}/{name} exists in {} but has no ServiceExport: it is not exported from here.",
                e.cluster
            );
        }
        None => {}
    }
}

/// Each cluster's part, and the conflicts.
fn clusters(s: &mut String, e: &Explanation, ns: &str, name: &str) {
    let _ = writeln!(s);
    let _ = writeln!(s, "Clusters:");
    if e.clusters.is_empty() {
        let _ = writeln!(s, "  none exports {ns}/{name}");
    }
    for c in &e.clusters {
        let peer = c
            .peer
            .as_deref()
            .map(|p| format!(" [peer {p}]"))
            .unwrap_or_default();
        let state = match (&c.excluded, c.exports, c.contributes) {
            (Some(why), _, _) => format!("LEFT OUT: {why}"),
            (None, false, _) => "publishes slices but no export record".to_string(),
            (None, true, true) => format!(
                "exports since {}, serving {}",
                c.since.as_deref().unwrap_or("?"),
                or_none(&c.serving)
            ),
            (None, true, false) => format!(
                "exports since {}, serves none of the import's ports",
                c.since.as_deref().unwrap_or("?")
            ),
        };
        let _ = writeln!(s, "  {:<12} {state}{peer}", c.cluster);
        if c.exports && c.ports != c.serving {
            let _ = writeln!(s, "  {:<12} exported ports: {}", "", or_none(&c.ports));
        }
    }
    for c in &e.conflicts {
        let _ = writeln!(s, "  conflict {c}");
    }
}

/// The EndpointSlices, imported and withheld.
fn slices(s: &mut String, e: &Explanation) {
    if !e.slices.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "EndpointSlices:");
    }
    for slice in &e.slices {
        let ready = slice.endpoints.iter().filter(|e| e.ready).count();
        let whose = if slice.imported {
            ""
        } else {
            " (published, not imported)"
        };
        let _ = writeln!(
            s,
            "  {} from {}{whose}: {} endpoint{}, {ready} ready; ports {}",
            slice.name,
            slice.cluster,
            slice.endpoints.len(),
            if slice.endpoints.len() == 1 { "" } else { "s" },
            or_none(&slice.ports)
        );
    }
}

/// What is left out and why, and what is at risk.
fn left_out(s: &mut String, e: &Explanation) {
    let _ = writeln!(s);
    if e.left_out.is_empty() {
        let _ = writeln!(s, "Left out: nothing.");
    } else {
        let _ = writeln!(s, "Left out:");
        for l in &e.left_out {
            let _ = writeln!(s, "  {l}");
        }
    }
    if !e.at_risk.is_empty() {
        let _ = writeln!(
            s,
            "At risk (still imported; left out once the peer's grace period after the time given ends):"
        );
        for l in &e.at_risk {
            let _ = writeln!(s, "  {l}");
        }
    }
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
