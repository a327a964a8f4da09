//! Building one service's names and their pre-encoded answers, per the MCS DNS record catalogue.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use hickory_proto::{
    op::{Message, OpCode, Query},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, SRV},
    },
};

use super::{
    Origin, key_of,
    snapshot::{Answer, Node},
    wire_len,
};
use crate::{
    Error, Result,
    model::{Endpoint, Import, ImportKind, Port, dashed_ip},
};

pub(super) fn split_families(ips: &[IpAddr]) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ip in ips {
        let list = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
        if !list.contains(ip) {
            list.push(*ip);
        }
    }
    (v4, v6)
}

pub(super) fn address_records(owner: &Name, ttl: u32, ips: &[IpAddr]) -> Vec<Record> {
    ips.iter()
        .map(|ip| {
            let rdata = match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            Record::from_rdata(owner.clone(), ttl, rdata)
        })
        .collect()
}

/// Encodes a response to `owner qtype` and keeps what follows the question.
pub(crate) fn encode(
    owner: &Name,
    qtype: RecordType,
    answers: Vec<Record>,
    additionals: Vec<Record>,
) -> Result<Answer> {
    let mut msg = Message::response(0, OpCode::Query);
    msg.add_query(Query::query(owner.clone(), qtype));
    msg.add_answers(answers);
    msg.add_additionals(additionals);
    let bytes = msg.to_vec().map_err(|e| Error::Encode {
        name: owner.to_string(),
        reason: e.to_string(),
    })?;
    let question_end = 12 + wire_len(&owner.to_ascii()) + 4;
    let count = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    Ok(Answer {
        qtype: qtype.into(),
        answers: count(6),
        authorities: count(8),
        additionals: count(10),
        body: bytes[question_end..].into(),
    })
}

/// One (cluster, hostname label, address) triple of a ready endpoint address.
struct Ready<'a> {
    cluster: &'a str,
    host: String,
    ip: IpAddr,
}

fn srv_label(port: &Port) -> Option<String> {
    port.name
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(|n| format!("_{}._{}", n.to_ascii_lowercase(), port.protocol.label()))
}

/// SRV answer records and their additional address records. `candidates` is a list of (target,
/// address) pairs, `ports` the ports; weight = floor(100 / (candidates × ports)), at least 1.
fn srv_records(
    owner: &Name,
    ttl: u32,
    candidates: &[(Name, Option<IpAddr>)],
    ports: &[&Port],
) -> (Vec<Record>, Vec<Record>) {
    let n = candidates.len() * ports.len();
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let weight = u16::try_from((100 / n).max(1)).unwrap_or(1);
    let mut seen_srv: Vec<(&Name, u16)> = Vec::new();
    let mut seen_addr: Vec<(&Name, IpAddr)> = Vec::new();
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    for port in ports {
        for (target, ip) in candidates {
            if !seen_srv.contains(&(target, port.port)) {
                seen_srv.push((target, port.port));
                answers.push(Record::from_rdata(
                    owner.clone(),
                    ttl,
                    RData::SRV(SRV::new(0, weight, port.port, target.clone())),
                ));
            }
            if let Some(ip) = ip
                && !seen_addr.contains(&(target, *ip))
            {
                seen_addr.push((target, *ip));
                additionals.extend(address_records(target, ttl, &[*ip]));
            }
        }
    }
    (answers, additionals)
}

/// The nodes of the service name itself (A, AAAA, bare-name SRV) and of its `_port._proto`
/// names, shared by ClusterSetIP and Headless imports.
#[allow(clippy::too_many_arguments)]
fn push_service_name(
    out: &mut Vec<(Arc<[u8]>, Node)>,
    origin: &Origin,
    base: &str,
    svc_name: &Name,
    (v4, v6): (&[IpAddr], &[IpAddr]),
    candidates: &[(Name, Option<IpAddr>)],
    all_ports: &[&Port],
    named_ports: &BTreeMap<String, Vec<&Port>>,
) -> Result<()> {
    let ttl = origin.ttl;
    let mut answers = Vec::new();
    if !v4.is_empty() {
        answers.push(encode(
            svc_name,
            RecordType::A,
            address_records(svc_name, ttl, v4),
            vec![],
        )?);
    }
    if !v6.is_empty() {
        answers.push(encode(
            svc_name,
            RecordType::AAAA,
            address_records(svc_name, ttl, v6),
            vec![],
        )?);
    }
    let (srv, extra) = srv_records(svc_name, ttl, candidates, all_ports);
    if !srv.is_empty() {
        answers.push(encode(svc_name, RecordType::SRV, srv, extra)?);
    }
    out.push((
        key_of(base),
        Node {
            answers: answers.into(),
        },
    ));
    for (label, ports) in named_ports {
        let rel = format!("{label}.{base}");
        let owner = origin.fqdn(&rel)?;
        let (srv, extra) = srv_records(&owner, ttl, candidates, ports);
        out.push((
            key_of(&rel),
            Node {
                answers: vec![encode(&owner, RecordType::SRV, srv, extra)?].into(),
            },
        ));
    }
    Ok(())
}

/// Every name one service owns, with its pre-encoded node.
pub(super) fn service_nodes(
    origin: &Origin,
    import: &Import,
    endpoints: &BTreeMap<String, Vec<Arc<[Endpoint]>>>,
) -> Result<Vec<(Arc<[u8]>, Node)>> {
    let ttl = origin.ttl;
    let base = format!(
        "{}.{}.svc",
        import.name.to_ascii_lowercase(),
        import.namespace.to_ascii_lowercase()
    );
    let svc_name = origin.fqdn(&base)?;
    let mut out = Vec::new();
    let mut named_ports: BTreeMap<String, Vec<&Port>> = BTreeMap::new();
    for port in &import.ports {
        if let Some(label) = srv_label(port) {
            named_ports.entry(label).or_default().push(port);
        }
    }
    let all_ports: Vec<&Port> = import.ports.iter().collect();
    // The service name's addresses, its SRV targets and (headless) the per-endpoint names.
    let (v4, v6, candidates, targets) = match import.kind {
        ImportKind::ClusterSetIp => {
            let (v4, v6) = split_families(&import.ips);
            let mut ips = v4.clone();
            ips.extend(&v6);
            let candidates: Vec<(Name, Option<IpAddr>)> = if ips.is_empty() {
                vec![(svc_name.clone(), None)]
            } else {
                ips.iter().map(|ip| (svc_name.clone(), Some(*ip))).collect()
            };
            (v4, v6, candidates, BTreeMap::new())
        }
        ImportKind::Headless => {
            let mut ready = Vec::new();
            for (cluster, sets) in endpoints {
                for ep in sets.iter().flat_map(|set| set.iter()).filter(|e| e.ready) {
                    for ip in &ep.addresses {
                        let host = match ep.hostname.as_deref().filter(|h| !h.is_empty()) {
                            Some(h) => h.to_ascii_lowercase(),
                            None => dashed_ip(ip),
                        };
                        ready.push(Ready {
                            cluster,
                            host,
                            ip: *ip,
                        });
                    }
                }
            }
            if ready.is_empty() {
                // Headless without ready endpoints does not exist: NXDOMAIN.
                return Ok(out);
            }
            let mut targets: BTreeMap<(String, String), Vec<IpAddr>> = BTreeMap::new();
            let mut candidates = Vec::new();
            let mut all_ips = Vec::new();
            for r in &ready {
                let rel = format!("{}.{}.{base}", r.host, r.cluster.to_ascii_lowercase());
                let target = match origin.fqdn(&rel) {
                    Ok(t) => t,
                    Err(error) => {
                        tracing::warn!(%error, service = %base, "endpoint name not served");
                        continue;
                    }
                };
                let ips = targets.entry((rel, r.host.clone())).or_default();
                if !ips.contains(&r.ip) {
                    ips.push(r.ip);
                }
                candidates.push((target, Some(r.ip)));
                all_ips.push(r.ip);
            }
            let (v4, v6) = split_families(&all_ips);
            (v4, v6, candidates, targets)
        }
    };
    push_service_name(
        &mut out,
        origin,
        &base,
        &svc_name,
        (&v4, &v6),
        &candidates,
        &all_ports,
        &named_ports,
    )?;
    for ((rel, _), ips) in targets {
        let owner = origin.fqdn(&rel)?;
        let (v4, v6) = split_families(&ips);
        let mut answers = Vec::new();
        for (qtype, ips) in [(RecordType::A, &v4), (RecordType::AAAA, &v6)] {
            if !ips.is_empty() {
                answers.push(encode(&owner, qtype, address_records(&owner, ttl, ips), vec![])?);
            }
        }
        out.push((
            key_of(&rel),
            Node {
                answers: answers.into(),
            },
        ));
    }
    Ok(out)
}
