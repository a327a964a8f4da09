//! `mcsd why NAME`: explains a DNS name of the zone.
//!
//! ```text
//!  mcsd why NAME ──GET /why?name=NAME──▶ admin listener of a running mcsd
//!                                          │ Sources::explain: the daemon's own view
//!                                          │   (every cluster's records, exclusions, peer states,
//!                                          │   this cluster's import and slices) and the zone
//!  text (or -o json) ◀── Explanation (JSON) ┘
//! ```
//!
//! The explanation is computed inside the daemon because only it knows what the API objects do
//! not say: which peers are excluded and why, what a refused peer publishes, and what its own DNS
//! server answers at this moment (asked of the very zone it serves, through the same handler).

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr, sync::Arc};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RecordType},
};
use k8s_openapi::api::{
    core::v1::{Namespace, Service},
    discovery::v1::{Endpoint, EndpointSlice},
};
use kube::runtime::reflector::{ObjectRef, Store};
use mcsd_crds::{
    ClusterId,
    mcs::{
        ServicePort,
        v1beta1::{ServiceExport, ServiceImport},
    },
    names,
};
use serde::{Deserialize, Serialize};

use crate::{
    daemon::{
        index::SliceIndex,
        metrics::{PeerState, Peers},
    },
    merge::Merged,
    view::{Key, View},
};

/// What a name of the zone is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Form {
    /// `<service>.<namespace>.svc.<zone>`.
    Service,
    /// `_<port>._<protocol>.<service>.<namespace>.svc.<zone>`.
    Srv {
        /// The port name.
        port: String,
        /// `tcp`, `udp` or `sctp`.
        protocol: String,
    },
    /// `<hostname>.<cluster>.<service>.<namespace>.svc.<zone>`: one endpoint of a headless service.
    Hostname {
        /// The endpoint's hostname.
        hostname: String,
        /// Its cluster.
        cluster: String,
    },
    /// A name of the zone that is not a service's (the apex, `<namespace>.svc`, …).
    Other,
    /// Not in the zone: the server refuses it.
    OutsideZone,
}

/// What the server answers for one query type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// `A`, `AAAA`, `SRV`.
    pub qtype: String,
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`.
    pub rcode: String,
    /// The answer section's data, one record a line (`10.96.0.10`).
    pub records: Vec<String>,
}

/// A condition, as the API object carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cond {
    /// Type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// This cluster's ServiceImport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportFacts {
    /// `ClusterSetIP` or `Headless`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `spec.ips`.
    pub ips: Vec<String>,
    /// `spec.ports`, as `name 80/TCP`.
    pub ports: Vec<String>,
    /// `status.clusters`.
    pub clusters: Vec<String>,
    /// `status.conditions`.
    pub conditions: Vec<Cond>,
}

/// What one cluster of the ClusterSet contributes to the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// The cluster id.
    pub cluster: String,
    /// Whether this daemon holds an export record of the service from the cluster.
    pub exports: bool,
    /// When the cluster's ServiceExport was created (the conflict precedence key).
    pub since: Option<String>,
    /// The ports it exports.
    pub ports: Vec<String>,
    /// Of those, the ports its endpoints serve in the import (strict routing).
    pub serving: Vec<String>,
    /// Whether its endpoints are part of the import.
    pub contributes: bool,
    /// Why the cluster is left out of the merge, when it is.
    pub excluded: Option<String>,
    /// The peer's connection state (`None` for this cluster).
    pub peer: Option<String>,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointFacts {
    /// Its addresses.
    pub addresses: Vec<String>,
    /// Its hostname.
    pub hostname: Option<String>,
    /// Ready (nil counts as ready).
    pub ready: bool,
}

/// One EndpointSlice of the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceFacts {
    /// The slice's name.
    pub name: String,
    /// The cluster its endpoints are in.
    pub cluster: String,
    /// Whether the slice is written in this cluster (false: a left-out cluster's published one).
    pub imported: bool,
    /// Its ports.
    pub ports: Vec<String>,
    /// Its endpoints.
    pub endpoints: Vec<EndpointFacts>,
}

/// Everything `mcsd why` says about a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The name asked about, as a fully qualified name.
    pub name: String,
    /// The cluster whose mcsd answers.
    pub cluster: String,
    /// Whether that mcsd holds its cluster's Lease (only the leader writes).
    pub leader: bool,
    /// Whether its watches have listed and its writers run.
    pub ready: bool,
    /// What kind of name it is.
    pub form: Form,
    /// The service the name belongs to.
    pub service: Option<(String, String)>,
    /// What the DNS server answers now.
    pub answers: Vec<DnsAnswer>,
    /// Whether the service's namespace exists in this cluster (imports exist only there).
    pub namespace_exists: bool,
    /// Whether a Service of that name exists in this cluster.
    pub local_service: bool,
    /// This cluster's ServiceExport's conditions, when it exports the service.
    pub export_here: Option<Vec<Cond>>,
    /// This cluster's ServiceImport.
    pub import: Option<ImportFacts>,
    /// Every cluster that exports the service, or is known to and is left out.
    pub clusters: Vec<ClusterFacts>,
    /// The conflicts between the exports.
    pub conflicts: Vec<String>,
    /// The slices: this cluster's imported ones, then what left-out clusters publish.
    pub slices: Vec<SliceFacts>,
    /// What is left out and why, one line each.
    pub left_out: Vec<String>,
}

/// Splits `name` into its form and service, for a zone named `origin`.
pub fn parse(name: &str, origin: &str) -> (Form, Option<Key>) {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let origin = origin.trim_end_matches('.').to_ascii_lowercase();
    let relative = if name == origin {
        ""
    } else if let Some(r) = name.strip_suffix(&format!(".{origin}")) {
        r
    } else {
        return (Form::OutsideZone, None);
    };
    let labels: Vec<&str> = relative.split('.').collect();
    let key = |i: usize| Key::new(labels[i + 1], labels[i]);
    match labels.as_slice() {
        [_, _, "svc"] => (Form::Service, Some(key(0))),
        [port, protocol, _, _, "svc"] if port.starts_with('_') && protocol.starts_with('_') => (
            Form::Srv {
                port: port[1..].to_string(),
                protocol: protocol[1..].to_string(),
            },
            Some(key(2)),
        ),
        [hostname, cluster, _, _, "svc"] => (
            Form::Hostname {
                hostname: hostname.to_string(),
                cluster: cluster.to_string(),
            },
            Some(key(2)),
        ),
        _ => (Form::Other, None),
    }
}

/// What the daemon reads to explain a name. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Sources {
    /// This cluster.
    pub cluster: ClusterId,
    /// The ClusterSet view.
    pub view: Arc<std::sync::Mutex<View>>,
    /// Every peer's state.
    pub peers: Peers,
    /// Local ServiceExports.
    pub exports: Store<ServiceExport>,
    /// Local ServiceImports.
    pub imports: Store<ServiceImport>,
    /// Local Services.
    pub services: Store<Service>,
    /// Local EndpointSlices.
    pub slices: Store<EndpointSlice>,
    /// The MCS slices of each import.
    pub imported_slices: SliceIndex,
    /// Local Namespaces.
    pub namespaces: Store<Namespace>,
    /// Whether this replica leads.
    pub leader: tokio::sync::watch::Receiver<bool>,
    /// Whether the controllers run.
    pub ready: tokio::sync::watch::Receiver<bool>,
}

impl Sources {
    /// Explains `name`, asking `zone` what it answers.
    pub fn explain(&self, name: &str, zone: &mcsd_dns::Zone) -> Explanation {
        let fqdn = format!("{}.", name.trim_end_matches('.').to_ascii_lowercase());
        let (form, key) = parse(&fqdn, zone.origin());
        let qtypes: &[RecordType] = match form {
            Form::Service => &[RecordType::A, RecordType::AAAA, RecordType::SRV],
            Form::Srv { .. } => &[RecordType::SRV],
            _ => &[RecordType::A, RecordType::AAAA],
        };
        let answers = qtypes.iter().map(|&t| ask(zone, &fqdn, t)).collect();
        let mut out = Explanation {
            name: fqdn,
            cluster: self.cluster.to_string(),
            leader: *self.leader.borrow(),
            ready: *self.ready.borrow(),
            form,
            service: key.as_ref().map(|k| (k.namespace.clone(), k.name.clone())),
            answers,
            namespace_exists: false,
            local_service: false,
            export_here: None,
            import: None,
            clusters: Vec::new(),
            conflicts: Vec::new(),
            slices: Vec::new(),
            left_out: Vec::new(),
        };
        if let Some(key) = key {
            self.explain_service(&key, &mut out);
        }
        out
    }

    fn explain_service(&self, key: &Key, out: &mut Explanation) {
        let Key { namespace: ns, name } = key;
        out.namespace_exists = self
            .namespaces
            .get(&ObjectRef::new(ns))
            .is_some_and(|n| n.metadata.deletion_timestamp.is_none());
        out.local_service = self.services.get(&ObjectRef::new(name).within(ns)).is_some();
        out.export_here = self.exports.get(&ObjectRef::new(name).within(ns)).map(|e| {
            conditions(
                e.status
                    .as_ref()
                    .map(|s| s.conditions.as_slice())
                    .unwrap_or_default(),
            )
        });
        out.import = self
            .imports
            .get(&ObjectRef::new(name).within(ns))
            .map(|i| ImportFacts {
                type_: text(&i.spec.type_),
                ips: i.spec.ips.clone(),
                ports: i.spec.ports.iter().map(port).collect(),
                clusters: i
                    .status
                    .iter()
                    .flat_map(|s| &s.clusters)
                    .map(|c| c.cluster.clone())
                    .collect(),
                conditions: conditions(
                    i.status
                        .as_ref()
                        .map(|s| s.conditions.as_slice())
                        .unwrap_or_default(),
                ),
            });
        let (merged, excluded, published) = {
            let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
            let excluded: BTreeMap<ClusterId, String> = view.excluded(key).into_iter().collect();
            let mut published = BTreeMap::new();
            for cluster in view.clusters_of(key).chain(excluded.keys().cloned()) {
                if let Some(p) = view.published(&cluster, key) {
                    published.insert(cluster, p.clone());
                } else {
                    published.entry(cluster).or_default();
                }
            }
            (view.merged(key), excluded, published)
        };
        let peers = self.peers.snapshot();
        let mut withheld = Vec::new();
        for (cluster, p) in &published {
            let record = p.record.as_ref();
            let serving = serving_ports(merged.as_ref(), cluster);
            let facts = ClusterFacts {
                cluster: cluster.to_string(),
                exports: record.is_some(),
                since: record.map(|r| r.export_created.0.to_string()),
                ports: record.iter().flat_map(|r| &r.ports).map(port).collect(),
                serving: serving.clone(),
                contributes: merged.as_ref().is_some_and(|m| m.contributes(cluster)),
                excluded: excluded.get(cluster).cloned(),
                peer: peers.get(cluster.as_str()).map(|s| peer_text(&s.state)),
            };
            if let Some(why) = &facts.excluded {
                let n: usize = p.slices.values().map(|s| s.endpoints.len()).sum();
                out.left_out.push(format!(
                    "{cluster}: all of its endpoints ({n} published) and ports are left out: {why}"
                ));
            } else if let (Some(m), Some(_)) = (&merged, record) {
                if !facts.contributes {
                    out.left_out.push(format!(
                        "{cluster}: none of its endpoints are imported: its ports lost a port conflict \
                         (import ports: {})",
                        m.spec.ports.iter().map(port).collect::<Vec<_>>().join(", ")
                    ));
                } else {
                    for lost in facts.ports.iter().filter(|p| !serving.contains(p)) {
                        out.left_out.push(format!(
                            "{cluster}: its port {lost} is not routed to it: that definition lost a port \
                             conflict to an older export"
                        ));
                    }
                }
            }
            if let Some(state) = peers.get(cluster.as_str())
                && facts.excluded.is_none()
                && let Some(why) = state.state.problem()
            {
                out.left_out.push(format!(
                    "{cluster}: nothing yet: the peer is {} ({why}); its last known records are \
                     kept until its grace period ends",
                    state.state.name()
                ));
            }
            out.clusters.push(facts);
            if excluded.contains_key(cluster) {
                withheld.extend(
                    p.slices
                        .values()
                        .map(|s| slice_facts(&EndpointSlice::from(&**s), cluster.as_str(), false)),
                );
            }
        }
        out.left_out.extend(
            self.view
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .refused_lines(key),
        );
        if let Some(m) = &merged {
            out.conflicts = m
                .conflicts
                .iter()
                .map(|c| format!("{}: {}", c.reason, c.message))
                .collect();
        }
        let imported = self.imported_slices.get(&self.slices, key, |s| {
            s.metadata.namespace.as_deref() == Some(ns.as_str())
                && label(s, names::LABEL_SERVICE_NAME) == Some(name)
                && label(s, names::LABEL_MANAGED_BY).map(String::as_str) == Some(names::MANAGED_BY)
        });
        let headless = merged
            .as_ref()
            .is_some_and(|m| m.spec.type_ == mcsd_crds::mcs::ServiceImportType::Headless);
        for slice in &imported {
            let cluster = label(slice, names::LABEL_SOURCE_CLUSTER)
                .cloned()
                .unwrap_or_default();
            let mut facts = slice_facts(slice, &cluster, true);
            // mcsd keeps its own slices without their endpoints (see `daemon::slim_slice`):
            // they are the source slice's, which the view holds.
            let source = cluster.parse::<ClusterId>().ok().and_then(|id| {
                let p = published.get(&id)?;
                p.slices
                    .values()
                    .find(|s| {
                        s.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| crate::import::slice_name(name, &id, n) == facts.name)
                    })
                    .cloned()
            });
            if let Some(source) = source {
                let source = EndpointSlice::from(&*source);
                facts.endpoints = source.endpoints.iter().map(endpoint_facts).collect();
            }
            for e in facts.endpoints.iter().filter(|e| !e.ready) {
                let what = if headless {
                    "left out of DNS answers and of traffic"
                } else {
                    "receives no traffic"
                };
                out.left_out.push(format!(
                    "{} ({cluster}{}): not ready: {what}",
                    e.addresses.join(", "),
                    e.hostname
                        .as_deref()
                        .map(|h| format!(", {h}"))
                        .unwrap_or_default()
                ));
            }
            out.slices.push(facts);
        }
        out.slices.extend(withheld);
        if !out.namespace_exists && merged.is_some() {
            out.left_out.insert(
                0,
                format!(
                    "everything: namespace {ns} does not exist in {}, so nothing is imported here",
                    out.cluster
                ),
            );
        }
    }
}

/// The ports of `cluster` that serve in the import (all of the import's when it has none).
fn serving_ports(merged: Option<&Merged>, cluster: &ClusterId) -> Vec<String> {
    let Some(m) = merged else { return Vec::new() };
    let Some(names) = m.serving_ports.get(cluster) else {
        return Vec::new();
    };
    m.spec
        .ports
        .iter()
        .filter(|p| names.contains(&p.name.clone().filter(|n| !n.is_empty())))
        .map(port)
        .collect()
}

fn label<'a>(slice: &'a EndpointSlice, key: &str) -> Option<&'a String> {
    slice.metadata.labels.as_ref()?.get(key)
}

fn slice_facts(slice: &EndpointSlice, cluster: &str, imported: bool) -> SliceFacts {
    SliceFacts {
        name: slice.metadata.name.clone().unwrap_or_default(),
        cluster: cluster.to_string(),
        imported,
        ports: slice
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let number = p.port.map(|n| n.to_string()).unwrap_or_else(|| "*".into());
                let proto = p.protocol.as_deref().unwrap_or("TCP");
                match p.name.as_deref().filter(|n| !n.is_empty()) {
                    Some(n) => format!("{n} {number}/{proto}"),
                    None => format!("{number}/{proto}"),
                }
            })
            .collect(),
        endpoints: slice.endpoints.iter().map(endpoint_facts).collect(),
    }
}

fn endpoint_facts(e: &Endpoint) -> EndpointFacts {
    EndpointFacts {
        addresses: e.addresses.clone(),
        hostname: e.hostname.clone(),
        ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
    }
}

fn conditions(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> Vec<Cond> {
    conditions
        .iter()
        .map(|c| Cond {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

/// A serde enum's name (`ClusterSetIP`, `TCP`).
fn text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn port(p: &ServicePort) -> String {
    match p.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => format!("{n} {}/{}", p.port, text(&p.protocol)),
        None => format!("{}/{}", p.port, text(&p.protocol)),
    }
}

fn peer_text(state: &PeerState) -> String {
    match state.problem() {
        Some(why) => format!("{}: {why}", state.name()),
        None => state.name().into(),
    }
}

/// Asks `zone` for `name`/`qtype` through the server's own handler.
fn ask(zone: &mcsd_dns::Zone, name: &str, qtype: RecordType) -> DnsAnswer {
    let mut answer = DnsAnswer {
        qtype: qtype.to_string(),
        rcode: String::new(),
        records: Vec::new(),
    };
    let Ok(qname) = Name::from_ascii(name) else {
        answer.rcode = "not a valid DNS name".into();
        return answer;
    };
    let mut query = Message::query();
    query.add_query(Query::query(qname, qtype));
    let Ok(bytes) = query.to_vec() else {
        answer.rcode = "not a valid DNS name".into();
        return answer;
    };
    let mut reply = Vec::new();
    mcsd_dns::answer(zone, &bytes, mcsd_dns::Transport::Tcp, &mut reply);
    match Message::from_vec(&reply) {
        Ok(m) => {
            answer.rcode = rcode_text(m.metadata.response_code);
            answer.records = m.answers.iter().map(|r| r.data.to_string()).collect();
        }
        Err(error) => answer.rcode = format!("unreadable reply: {error}"),
    }
    answer
}

fn rcode_text(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// The explanation as text, for a person.
pub fn render(e: &Explanation) -> String {
    let mut s = String::new();
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
    let _ = writeln!(s);
    if e.left_out.is_empty() {
        let _ = writeln!(s, "Left out: nothing.");
    } else {
        let _ = writeln!(s, "Left out:");
        for l in &e.left_out {
            let _ = writeln!(s, "  {l}");
        }
    }
    s
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Asks the mcsd whose admin listener is at `admin` to explain `name`.
pub async fn fetch(admin: SocketAddr, name: &str) -> anyhow::Result<Explanation> {
    use anyhow::Context as _;
    let path = format!("/why?name={}", percent_encode(name));
    let reply = crate::admin_client::get(admin, &path, crate::admin_client::TIMEOUT).await?;
    anyhow::ensure!(
        reply.status == 200,
        "mcsd at {admin} answered {}: {} (is it an mcsd run or mcsd sandbox admin listener?)",
        reply.status,
        reply.body.trim()
    );
    serde_json::from_str(&reply.body)
        .with_context(|| format!("mcsd at {admin} sent an unreadable explanation"))
}

/// `%`-encodes everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The admin listener of `cluster`'s mcsd, from `DIR/sandbox.json` (as `mcsd sandbox` and
/// `tests/kube/up.sh` write it).
pub fn admin_of(dir: &std::path::Path, cluster: &str) -> anyhow::Result<SocketAddr> {
    use anyhow::Context as _;
    let path = dir.join("sandbox.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is `mcsd sandbox --dir {}` or `tests/kube/up.sh --dir {}` running?)",
            path.display(),
            dir.display(),
            dir.display()
        )
    })?;
    let members: Vec<serde_json::Value> =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let names: Vec<&str> = members.iter().filter_map(|m| m["name"].as_str()).collect();
    let member = members
        .iter()
        .find(|m| m["name"].as_str() == Some(cluster))
        .with_context(|| {
            format!(
                "no cluster {cluster} in {} (it has {})",
                path.display(),
                names.join(", ")
            )
        })?;
    member["admin"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("{} names no admin address for {cluster}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_into_form_and_service() {
        let svc = |ns: &str, n: &str| Some(Key::new(ns, n));
        let origin = "clusterset.local";
        assert_eq!(
            parse("hello.demo.svc.clusterset.local.", origin),
            (Form::Service, svc("demo", "hello"))
        );
        assert_eq!(
            parse("Hello.Demo.svc.clusterset.local", origin),
            (Form::Service, svc("demo", "hello"))
        );
        assert_eq!(
            parse("_http._tcp.hello.demo.svc.clusterset.local", origin),
            (
                Form::Srv {
                    port: "http".into(),
                    protocol: "tcp".into()
                },
                svc("demo", "hello")
            )
        );
        assert_eq!(
            parse("web-0.cluster-a.hello.demo.svc.clusterset.local", origin),
            (
                Form::Hostname {
                    hostname: "web-0".into(),
                    cluster: "cluster-a".into()
                },
                svc("demo", "hello")
            )
        );
        assert_eq!(parse("demo.svc.clusterset.local", origin), (Form::Other, None));
        assert_eq!(parse("clusterset.local", origin), (Form::Other, None));
        assert_eq!(
            parse("hello.demo.svc.cluster.local", origin),
            (Form::OutsideZone, None)
        );
        assert_eq!(parse("xclusterset.local", origin), (Form::OutsideZone, None));
    }

    #[test]
    fn names_survive_percent_encoding() {
        assert_eq!(
            percent_encode("hello.demo.svc.clusterset.local."),
            "hello.demo.svc.clusterset.local."
        );
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }
}
