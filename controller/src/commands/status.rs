//! `mcsd status`: the ClusterSet as each cluster's mcsd sees it, read with nothing but a
//! kubeconfig: what the leader publishes in the Lease `mcsd-system/mcsd-status` (`daemon/status.rs`: its
//! peers' states, why, since when they are current, when their credentials expire, the hub it
//! follows and when it last wrote there) and the cluster's exports, imports and conflicts,
//! counted from the API. A context that is a hub (`mcsd hub init`) shows the hub as its admin
//! sees it: each member, its records and slices there, when it last wrote, its declared ranges.

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

/// What one context says: a member cluster's status, or a hub's.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Status {
    /// A cluster running mcsd.
    Cluster(ClusterStatus),
    /// A hub.
    Hub(HubStatus),
}

/// A hub as its admin sees it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubStatus {
    /// The kubeconfig context it was read through.
    pub context: String,
    /// Its API server.
    pub server: String,
    /// Every member enrolled there.
    pub members: Vec<HubMember>,
}

/// One member of a hub.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubMember {
    /// Its cluster id.
    pub name: String,
    /// Its export records there.
    pub records: usize,
    /// Its endpoint records there.
    pub slices: usize,
    /// When it last wrote there (RFC 3339): the latest write the hub recorded on its records.
    pub last_write: Option<String>,
    /// The ranges declared for it.
    pub ranges: Option<String>,
    /// Whether it is being removed (its namespace deleted).
    pub leaving: bool,
}

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
pub async fn read(kubeconfig: Option<&Path>, contexts: &[String], all: bool) -> anyhow::Result<Vec<Status>> {
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

async fn read_one(config: &kube::config::Kubeconfig, context: &str) -> anyhow::Result<Status> {
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
        .map_err(reach)?;
    if published.is_none()
        && let Some(hub) = read_hub(&client, context, &url).await.map_err(reach)?
    {
        return Ok(Status::Hub(hub));
    }
    let published = published.with_context(|| {
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
    Ok(Status::Cluster(ClusterStatus {
        context: context.to_string(),
        mcsd,
        exports: exports.items.len(),
        imports: imports.items.len(),
        conflicts,
    }))
}

/// The hub behind `client`, if it is one (it has members, or the roles `mcsd hub init`
/// installs).
async fn read_hub(client: &kube::Client, context: &str, url: &str) -> kube::Result<Option<HubStatus>> {
    use k8s_openapi::api::{
        core::v1::{ConfigMap, Namespace},
        discovery::v1::EndpointSlice,
        rbac::v1::ClusterRole,
    };
    use kube::ResourceExt as _;

    use crate::core::hub::{ANNOTATION_RANGES, LABEL_MEMBER, WRITE_ROLE, member_of};
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(LABEL_MEMBER))
        .await?;
    if namespaces.items.is_empty()
        && Api::<ClusterRole>::all(client.clone())
            .get_opt(WRITE_ROLE)
            .await?
            .is_none()
    {
        return Ok(None);
    }
    let mut members: std::collections::BTreeMap<String, HubMember> = namespaces
        .items
        .iter()
        .filter_map(|ns| {
            let member = member_of(&ns.name_any())?;
            Some((
                ns.name_any(),
                HubMember {
                    name: member.to_string(),
                    ranges: ns.annotations().get(ANNOTATION_RANGES).cloned(),
                    leaving: ns.metadata.deletion_timestamp.is_some(),
                    ..HubMember::default()
                },
            ))
        })
        .collect();
    let records = ListParams::default().labels(crate::core::exchange::LABEL_EXCHANGE);
    // When the hub last recorded a write of `meta`'s object (its field managers' times).
    let written = |meta: &kube::api::ObjectMeta| -> Option<Timestamp> {
        meta.managed_fields
            .iter()
            .flatten()
            .filter_map(|f| f.time.as_ref().map(|t| t.0))
            .chain(meta.creation_timestamp.as_ref().map(|t| t.0))
            .max()
    };
    let mut note = |meta: &kube::api::ObjectMeta, slice: bool| {
        let Some(member) = meta.namespace.as_ref().and_then(|ns| members.get_mut(ns)) else {
            return;
        };
        if slice {
            member.slices += 1;
        } else {
            member.records += 1;
        }
        let at = written(meta).map(|t| t.to_string());
        if at > member.last_write {
            member.last_write = at;
        }
    };
    for map in Api::<ConfigMap>::all(client.clone()).list(&records).await?.items {
        note(&map.metadata, false);
    }
    for slice in Api::<EndpointSlice>::all(client.clone())
        .list(&records)
        .await?
        .items
    {
        note(&slice.metadata, true);
    }
    Ok(Some(HubStatus {
        context: context.to_string(),
        server: url.to_string(),
        members: members.into_values().collect(),
    }))
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

/// `rows` under `header`, each column as wide as its widest cell, indented by two spaces.
fn table<const N: usize>(out: &mut String, header: [&str; N], rows: Vec<[String; N]>) {
    use std::fmt::Write as _;
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(header.map(str::to_string)).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == N {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  "));
    }
}

/// "<span> ago" from an RFC 3339 time to `now`, or `none`.
fn ago(at: Option<&str>, now: Timestamp, none: &str) -> String {
    at.and_then(|t| seconds_between(t, now))
        .map_or(none.into(), |s| format!("{} ago", span(s)))
}

/// The statuses as text: a line per cluster, then a row per peer; a line per hub, then a row
/// per member.
pub fn render(statuses: &[Status], now: Timestamp) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for s in statuses {
        let s = match s {
            Status::Cluster(s) => s,
            Status::Hub(hub) => {
                let _ = writeln!(
                    out,
                    "hub (context {}) at {}: {} members",
                    hub.context,
                    hub.server,
                    hub.members.len()
                );
                if hub.members.is_empty() {
                    let _ = writeln!(out, "  no members: enrol clusters with `mcsd join --hub`");
                    continue;
                }
                let rows = hub
                    .members
                    .iter()
                    .map(|m| {
                        [
                            m.name.clone(),
                            m.records.to_string(),
                            m.slices.to_string(),
                            if m.leaving {
                                "leaving".into()
                            } else {
                                ago(m.last_write.as_deref(), now, "never")
                            },
                            m.ranges.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table(
                    &mut out,
                    ["MEMBER", "RECORDS", "SLICES", "LAST WRITE", "RANGES"],
                    rows,
                );
                continue;
            }
        };
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
        if let Some(hub) = &m.hub {
            let last = ago(hub.last_write.as_deref(), now, "none yet");
            let _ = match &hub.problem {
                Some(problem) => writeln!(
                    out,
                    "  hub {}: last write {last}; writing fails: {problem}",
                    hub.server
                ),
                None => writeln!(out, "  hub {}: last write {last}", hub.server),
            };
        }
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
        table(
            &mut out,
            ["PEER", "STATE", "VIA", "SYNC LAG", "CREDENTIALS EXPIRE", "REASON"],
            rows,
        );
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
                hub: Some(crate::core::status_lease::HubEntry {
                    server: "https://hub.example:6443/".into(),
                    last_write: Some("2026-11-28T11:59:30Z".into()),
                    problem: None,
                }),
                written: "2026-11-28T11:59:59Z".into(),
            },
            exports: 2,
            imports: 3,
            conflicts: 1,
        };
        let text = render(&[Status::Cluster(status)], now);
        assert_eq!(
            text,
            "cluster-c (context ctx-c), ClusterSet prod, leader mcsd-7f9; 2 exports, 3 imports, 1 in conflict; published 1 s ago\n\
             \x20 hub https://hub.example:6443/: last write 30 s ago\n\
             \x20 PEER       STATE        VIA   SYNC LAG  CREDENTIALS EXPIRE  REASON\n\
             \x20 cluster-a  synced       mesh  2 s       in 12 h 0 m         -\n\
             \x20 cluster-d  synced       mesh  1 s       in 1 h 0 m          renewal refused\n\
             \x20 cluster-b  unreachable  hub   5 m       -                   cannot reach the API server\n"
        );
    }

    #[test]
    fn a_hub_says_each_member_its_records_last_write_and_ranges() {
        let now: Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let hub = HubStatus {
            context: "hub".into(),
            server: "https://hub.example:6443/".into(),
            members: vec![
                HubMember {
                    name: "cluster-a".into(),
                    records: 2,
                    slices: 3,
                    last_write: Some("2026-11-28T11:59:50Z".into()),
                    ranges: Some("10.1.0.0/16".into()),
                    leaving: false,
                },
                HubMember {
                    name: "cluster-b".into(),
                    ..HubMember::default()
                },
            ],
        };
        assert_eq!(
            render(&[Status::Hub(hub)], now),
            "hub (context hub) at https://hub.example:6443/: 2 members\n\
             \x20 MEMBER     RECORDS  SLICES  LAST WRITE  RANGES\n\
             \x20 cluster-a  2        3       10 s ago    10.1.0.0/16\n\
             \x20 cluster-b  0        0       never       -\n"
        );
    }
}
