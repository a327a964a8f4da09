//! `mcsd status`: the ClusterSet as each cluster's mcsd sees it, read with nothing but a
//! kubeconfig: what the leader publishes in the Lease `mcsd-system/mcsd-status` (`daemon/status.rs`: its
//! peers' states, why, since when they are current, when their credentials expire) and the
//! cluster's exports, imports and conflicts, counted from the API.

use std::path::Path;

use anyhow::Context as _;
use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{Api, api::ListParams};
use mcsd_crds::mcs::v1beta1::{ServiceExport, ServiceImport};
use serde::Serialize;

use crate::{
    core::exchange::DEFAULT_NAMESPACE,
    core::status_lease::{KEY, NAME, Published},
};

/// One cluster's status.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The kubeconfig context it was read through.
    pub context: String,
    /// What its mcsd published.
    pub mcsd: Published,
    /// ServiceExports in the cluster.
    pub exports: usize,
    /// ServiceImports in the cluster.
    pub imports: usize,
    /// ServiceExports with `Conflict=True`.
    pub conflicts: usize,
}

/// The status of each of `contexts` (none: the kubeconfig's current context; `all`: every
/// context in it).
pub async fn read(
    kubeconfig: Option<&Path>,
    contexts: &[String],
    all: bool,
) -> anyhow::Result<Vec<ClusterStatus>> {
    let config = crate::commands::join::load_kubeconfig(kubeconfig)?;
    let contexts: Vec<String> = if all {
        config.contexts.iter().map(|c| c.name.clone()).collect()
    } else if contexts.is_empty() {
        vec![
            config
                .current_context
                .clone()
                .context("the kubeconfig has no current context: name one with --context")?,
        ]
    } else {
        contexts.to_vec()
    };
    let mut out = Vec::new();
    for context in contexts {
        out.push(read_one(&config, &context).await?);
    }
    Ok(out)
}

async fn read_one(config: &kube::config::Kubeconfig, context: &str) -> anyhow::Result<ClusterStatus> {
    let (client, url) = crate::commands::join::client_for(config, context).await?;
    let reach = |e: kube::Error| {
        anyhow::anyhow!(
            "context {context}: cannot read from the API server at {url}: {}",
            crate::cluster::preflight::one_line(&e)
        )
    };
    let published = Api::<Lease>::namespaced(client.clone(), DEFAULT_NAMESPACE)
        .get_opt(NAME)
        .await
        .map_err(reach)?
        .with_context(|| {
            format!(
                "context {context}: mcsd has not published {DEFAULT_NAMESPACE}/{NAME}: is it installed and running (its leader writes it within seconds)?"
            )
        })?;
    let text = published
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(KEY))
        .with_context(|| format!("context {context}: {DEFAULT_NAMESPACE}/{NAME} has no {KEY}"))?;
    let mcsd: Published = serde_json::from_str(text)
        .with_context(|| format!("context {context}: {DEFAULT_NAMESPACE}/{NAME} does not parse"))?;
    let exports = Api::<ServiceExport>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(reach)?;
    let conflicts = exports
        .items
        .iter()
        .filter(|e| {
            e.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == mcsd_crds::names::conditions::CONFLICT && c.status == "True")
            })
        })
        .count();
    let imports = Api::<ServiceImport>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(reach)?;
    Ok(ClusterStatus {
        context: context.to_string(),
        mcsd,
        exports: exports.items.len(),
        imports: imports.items.len(),
        conflicts,
    })
}

/// Seconds from `from` (RFC 3339) to `to`.
fn seconds_between(from: &str, to: Timestamp) -> Option<i64> {
    let from: Timestamp = from.parse().ok()?;
    Some(to.as_second() - from.as_second())
}

/// A span of seconds as people read it (`42 s`, `3 m`, `5 h 2 m`, `2 d 1 h`).
fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} m", s / 60),
        3600..86400 => format!("{} h {} m", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// The statuses as text: a line per cluster, then a row per peer.
pub fn render(statuses: &[ClusterStatus], now: Timestamp) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for s in statuses {
        let m = &s.mcsd;
        let written = seconds_between(&m.written, now).map_or("?".into(), span);
        let _ = writeln!(
            out,
            "{} (context {}), ClusterSet {}, leader {}; {} exports, {} imports, {} in conflict; published {written} ago",
            m.cluster,
            s.context,
            m.clusterset,
            m.leader.as_deref().unwrap_or("-"),
            s.exports,
            s.imports,
            s.conflicts,
        );
        if m.peers.is_empty() {
            let _ = writeln!(out, "  no peers: connect clusters with `mcsd join`");
            continue;
        }
        let rows: Vec<[String; 6]> = m
            .peers
            .iter()
            .map(|p| {
                [
                    p.name.clone(),
                    p.state.clone(),
                    if p.via.is_empty() {
                        "mesh".into()
                    } else {
                        p.via.clone()
                    },
                    p.last_current
                        .as_deref()
                        .and_then(|t| seconds_between(t, now))
                        .map_or("-".into(), span),
                    p.credential_expiry
                        .as_deref()
                        .and_then(|t| seconds_between(t, now))
                        .map_or("-".into(), |s| {
                            if s < 0 {
                                format!("in {}", span(-s))
                            } else {
                                format!("{} ago", span(s))
                            }
                        }),
                    reasons(p),
                ]
            })
            .collect();
        let header = ["PEER", "STATE", "VIA", "SYNC LAG", "CREDENTIALS EXPIRE", "REASON"];
        let widths: Vec<usize> = (0..5)
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in std::iter::once(header.map(str::to_string)).chain(rows) {
            let _ = writeln!(
                out,
                "  {:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:<w4$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4],
            );
        }
    }
    out
}

/// A peer's REASON column: what is wrong now, then what will be (credentials that cannot be
/// renewed); `-` for neither.
fn reasons(peer: &crate::core::status_lease::PeerEntry) -> String {
    let all: Vec<&str> = peer
        .reason
        .iter()
        .chain(&peer.credential_problem)
        .map(String::as_str)
        .collect();
    if all.is_empty() {
        "-".into()
    } else {
        all.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::status_lease::PeerEntry;

    #[test]
    fn a_peer_row_says_its_state_lag_expiry_and_reason() {
        let now: Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let status = ClusterStatus {
            context: "ctx-c".into(),
            mcsd: Published {
                cluster: "cluster-c".into(),
                clusterset: "prod".into(),
                leader: Some("mcsd-7f9".into()),
                peers: vec![
                    PeerEntry {
                        name: "cluster-a".into(),
                        state: "synced".into(),
                        reason: None,
                        last_current: Some("2026-11-28T11:59:58Z".into()),
                        credential_expiry: Some("2026-11-29T00:00:00Z".into()),
                        credential_problem: None,
                        via: "mesh".into(),
                    },
                    PeerEntry {
                        name: "cluster-d".into(),
                        state: "synced".into(),
                        reason: None,
                        last_current: Some("2026-11-28T11:59:59Z".into()),
                        credential_expiry: Some("2026-11-28T13:00:00Z".into()),
                        credential_problem: Some("renewal refused".into()),
                        via: "mesh".into(),
                    },
                    PeerEntry {
                        name: "cluster-b".into(),
                        state: "unreachable".into(),
                        reason: Some("cannot reach the API server".into()),
                        last_current: Some("2026-11-28T11:55:00Z".into()),
                        credential_expiry: None,
                        credential_problem: None,
                        via: "hub".into(),
                    },
                ],
                written: "2026-11-28T11:59:59Z".into(),
            },
            exports: 2,
            imports: 3,
            conflicts: 1,
        };
        let text = render(&[status], now);
        assert_eq!(
            text,
            "cluster-c (context ctx-c), ClusterSet prod, leader mcsd-7f9; 2 exports, 3 imports, 1 in conflict; published 1 s ago\n\
             \x20 PEER       STATE        VIA   SYNC LAG  CREDENTIALS EXPIRE  REASON\n\
             \x20 cluster-a  synced       mesh  2 s       in 12 h 0 m         -\n\
             \x20 cluster-d  synced       mesh  1 s       in 1 h 0 m          renewal refused\n\
             \x20 cluster-b  unreachable  hub   5 m       -                   cannot reach the API server\n"
        );
    }
}
