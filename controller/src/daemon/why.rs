//! The daemon's side of `mcsd why`: an explanation of a name, from the daemon's own view and the
//! zone it serves.

use std::{collections::BTreeMap, sync::Arc};

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
use serde::Serialize;

use crate::core::why::{
    ClusterFacts, Cond, DnsAnswer, EndpointFacts, Explanation, Form, ImportFacts, SliceFacts, parse,
};
use crate::{
    core::merge::Merged,
    core::view::{Key, View},
    daemon::{
        index::SliceIndex,
        metrics::{PeerState, Peers},
    },
};

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
            at_risk: Vec::new(),
        };
        if let Some(key) = key {
            self.explain_service(&key, &mut out);
        }
        out
    }

    fn explain_service(&self, key: &Key, out: &mut Explanation) {
        self.explain_local(key, out);
        let held = self.view_facts(key, out);
        let withheld = self.explain_clusters(&held, out);
        if let Some(m) = &held.merged {
            out.conflicts = m
                .conflicts
                .iter()
                .map(|c| format!("{}: {}", c.reason, c.message))
                .collect();
        }
        self.explain_slices(key, &held, out);
        out.slices.extend(withheld);
        if !out.namespace_exists && held.merged.is_some() {
            out.left_out.insert(
                0,
                format!(
                    "everything: namespace {} does not exist in {}, so nothing is imported here",
                    key.namespace, out.cluster
                ),
            );
        }
    }

    /// What this cluster's own objects say: the namespace, the Service, its export, the import.
    fn explain_local(&self, key: &Key, out: &mut Explanation) {
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
    }

    /// What the view holds of `key`, taken under one lock; its warnings and what the gate
    /// refused go straight into `out`.
    fn view_facts(&self, key: &Key, out: &mut Explanation) -> ViewFacts {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        out.at_risk = view
            .warnings(key)
            .into_iter()
            .map(|(cluster, why)| format!("{cluster}: {why}"))
            .collect();
        let excluded: BTreeMap<ClusterId, String> = view.excluded(key).into_iter().collect();
        let mut published = BTreeMap::new();
        for cluster in view.clusters_of(key).chain(excluded.keys().cloned()) {
            if let Some(p) = view.published(&cluster, key) {
                published.insert(cluster, p.clone());
            } else {
                published.entry(cluster).or_default();
            }
        }
        ViewFacts {
            merged: view.merged(key),
            excluded,
            published,
            refused: view.refused_lines(key),
        }
    }

    /// Each cluster's part (what it exports, what of it serves, what is left out and why), in
    /// `out`; the slices of excluded clusters, which are withheld.
    fn explain_clusters(&self, held: &ViewFacts, out: &mut Explanation) -> Vec<SliceFacts> {
        let peers = self.peers.snapshot();
        let merged = held.merged.as_ref();
        let mut withheld = Vec::new();
        for (cluster, p) in &held.published {
            let record = p.record.as_ref();
            let serving = serving_ports(merged, cluster);
            let facts = ClusterFacts {
                cluster: cluster.to_string(),
                exports: record.is_some(),
                since: record.map(|r| r.export_created.0.to_string()),
                ports: record.iter().flat_map(|r| &r.ports).map(port).collect(),
                serving: serving.clone(),
                contributes: merged.is_some_and(|m| m.contributes(cluster)),
                excluded: held.excluded.get(cluster).cloned(),
                peer: peers.get(cluster.as_str()).map(|s| peer_text(&s.state)),
            };
            if let Some(why) = &facts.excluded {
                let n: usize = p.slices.values().map(|s| s.endpoints.len()).sum();
                out.left_out.push(format!(
                    "{cluster}: all of its endpoints ({n} published) and ports are left out: {why}"
                ));
                withheld.extend(
                    p.slices
                        .values()
                        .map(|s| slice_facts(&EndpointSlice::from(&**s), cluster.as_str(), false)),
                );
            } else if let (Some(m), Some(_)) = (merged, record) {
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
        }
        out.left_out.extend(held.refused.iter().cloned());
        withheld
    }

    /// The MCS EndpointSlices imported here, with their endpoints as their source slices have
    /// them, and a line for each endpoint that is not ready.
    fn explain_slices(&self, key: &Key, held: &ViewFacts, out: &mut Explanation) {
        let Key { namespace: ns, name } = key;
        let imported = self.imported_slices.get(&self.slices, key, |s| {
            s.metadata.namespace.as_deref() == Some(ns.as_str())
                && label(s, names::LABEL_SERVICE_NAME) == Some(name)
                && label(s, names::LABEL_MANAGED_BY).map(String::as_str) == Some(names::MANAGED_BY)
        });
        let headless = held
            .merged
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
                let p = held.published.get(&id)?;
                p.slices
                    .values()
                    .find(|s| {
                        s.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| crate::core::import::slice_name(name, &id, n) == facts.name)
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
    }
}

/// What the view holds of one service, for an explanation.
struct ViewFacts {
    merged: Option<Merged>,
    excluded: BTreeMap<ClusterId, String>,
    published: BTreeMap<ClusterId, crate::core::view::Published>,
    refused: Vec<String>,
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
