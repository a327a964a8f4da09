//! The record catalogue and response-code matrix of the MCS DNS spec (§5.2, §5.3), the transport
//! rules CoreDNS `forward` relies on (§5.5), and the agreement of the fast and full paths.

mod common;

use std::sync::Arc;

use common::*;
use hickory_proto::{
    op::{Edns, Message, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};
use mcsd_dns::{
    Endpoint, ImportKind, Outcome, Port, Protocol, ServiceRef, Transport, Zone, ZoneInput, ZoneWriter,
    answer, answer_fast, answer_full,
};

fn n(rel: &str) -> String {
    if rel.is_empty() {
        "clusterset.local.".into()
    } else {
        format!("{rel}.clusterset.local.")
    }
}

#[test]
fn apex_a_is_nodata_with_soa() {
    assert_negative(
        &ask(&coredns_zone(), &n(""), RecordType::A),
        ResponseCode::NoError,
    );
}

#[test]
fn apex_soa_follows_coredns_fields() {
    let z = coredns_zone();
    let m = ask(&z, &n(""), RecordType::SOA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    let RData::SOA(soa) = &m.answers[0].data else {
        panic!("not an SOA: {m}")
    };
    assert_eq!(soa.mname.to_ascii(), "ns.dns.clusterset.local.");
    assert_eq!(soa.rname.to_ascii(), "hostmaster.clusterset.local.");
    assert_eq!(
        (soa.refresh, soa.retry, soa.expire, soa.minimum),
        (7200, 1800, 86400, 5)
    );
    assert_eq!(soa.serial, z.serial());
    assert_eq!(m.answers[0].ttl, 5);
}

#[test]
fn apex_ns_names_our_server_with_glue() {
    let m = ask(&coredns_zone(), &n(""), RecordType::NS);
    assert_answers(&m, &["ns.dns.clusterset.local."]);
    assert_eq!(sorted(&m.additionals), vec!["127.0.0.1"]);
    assert_eq!(m.additionals[0].name.to_ascii(), "ns.dns.clusterset.local.");
    assert_answers(&ask(&coredns_zone(), &n("ns.dns"), RecordType::A), &["127.0.0.1"]);
}

#[test]
fn name_outside_svc_and_pod_is_nxdomain() {
    assert_negative(
        &ask(&coredns_zone(), &n("foo"), RecordType::A),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&coredns_zone(), &n("svc1.testns.foo"), RecordType::A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn dns_version_with_another_type_is_nodata() {
    assert_negative(
        &ask(&coredns_zone(), &n("dns-version"), RecordType::A),
        ResponseCode::NoError,
    );
}

#[test]
fn missing_namespace_is_nxdomain_and_existing_namespace_nodata() {
    let z = coredns_zone();
    assert_negative(&ask(&z, &n("nope.svc"), RecordType::A), ResponseCode::NXDomain);
    assert_negative(&ask(&z, &n("testns.svc"), RecordType::SRV), ResponseCode::NoError);
}

fn zone_with(imports: Vec<mcsd_dns::Import>, endpoints: Vec<(ServiceRef, String, Vec<Endpoint>)>) -> Zone {
    Zone::build(
        &config(),
        &ZoneInput {
            namespaces: vec!["ns".into()],
            imports,
            endpoints,
            synced: true,
        },
    )
    .unwrap()
}

#[test]
fn clustersetip_import_without_ips_is_nodata() {
    let z = zone_with(
        vec![mk_import("ns", "s", ImportKind::ClusterSetIp, &[], vec![http()])],
        vec![],
    );
    assert_negative(&ask(&z, &n("s.ns.svc"), RecordType::A), ResponseCode::NoError);
    assert_negative(&ask(&z, &n("s.ns.svc"), RecordType::AAAA), ResponseCode::NoError);
}

#[test]
fn existing_import_with_other_types_is_nodata() {
    let z = coredns_zone();
    for t in [
        RecordType::MX,
        RecordType::CNAME,
        RecordType::NS,
        RecordType::PTR,
        RecordType::HINFO,
    ] {
        assert_negative(&ask(&z, &n("svc1.testns.svc"), t), ResponseCode::NoError);
    }
}

#[test]
fn headless_import_without_ready_endpoints_is_nxdomain() {
    let not_ready = Endpoint {
        addresses: vec![ip("10.1.0.1")],
        hostname: None,
        ready: false,
    };
    let z = zone_with(
        vec![mk_import("ns", "h", ImportKind::Headless, &[], vec![http()])],
        vec![(ServiceRef::new("ns", "h"), "c1".into(), vec![not_ready])],
    );
    assert_negative(&ask(&z, &n("h.ns.svc"), RecordType::A), ResponseCode::NXDomain);
    assert_negative(
        &ask(&z, &n("_http._tcp.h.ns.svc"), RecordType::SRV),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&z, &n("10-1-0-1.c1.h.ns.svc"), RecordType::A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn endpoint_name_in_the_wrong_cluster_is_nxdomain() {
    assert_negative(
        &ask(
            &coredns_zone(),
            &n("172-0-0-2.other.hdls1.testns.svc"),
            RecordType::A,
        ),
        ResponseCode::NXDomain,
    );
}

#[test]
fn clustersetip_imports_have_no_per_endpoint_names() {
    // CoreDNS also answers these; the spec defines them for Headless only, and so do we.
    assert_negative(
        &ask(
            &coredns_zone(),
            &n("ep1a.clusterid.svc1.testns.svc"),
            RecordType::A,
        ),
        ResponseCode::NXDomain,
    );
}

#[test]
fn port_srv_without_a_matching_port_is_nxdomain() {
    let z = coredns_zone();
    assert_negative(
        &ask(&z, &n("_https._tcp.svc1.testns.svc"), RecordType::SRV),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&z, &n("_http._udp.svc1.testns.svc"), RecordType::SRV),
        ResponseCode::NXDomain,
    );
}

#[test]
fn more_than_two_labels_before_a_service_is_nxdomain() {
    assert_negative(
        &ask(&coredns_zone(), &n("a.b.c.hdls1.testns.svc"), RecordType::A),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&coredns_zone(), &n("x._http._tcp.svc1.testns.svc"), RecordType::A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn one_label_before_a_service_is_nxdomain() {
    assert_negative(
        &ask(&coredns_zone(), &n("_tcp.svc1.testns.svc"), RecordType::SRV),
        ResponseCode::NXDomain,
    );
}

#[test]
fn reverse_zones_and_other_zones_are_refused() {
    let z = coredns_zone();
    for (name, t) in [
        ("1.0.0.10.in-addr.arpa.", RecordType::PTR),
        ("example.com.", RecordType::A),
        ("local.", RecordType::SOA),
    ] {
        let m = ask(&z, name, t);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(!m.metadata.authoritative);
        assert!(m.answers.is_empty() && m.authorities.is_empty());
        assert_eq!(m.queries[0].name().to_ascii(), name);
    }
}

#[test]
fn coredns_health_probe_root_ns_gets_a_reply() {
    let m = ask(&coredns_zone(), ".", RecordType::NS);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(m.queries[0].query_type(), RecordType::NS);
}

#[test]
fn zone_transfers_are_refused() {
    let z = coredns_zone();
    for t in [RecordType::AXFR, RecordType::IXFR] {
        let m = ask_with(&z, &query(&n(""), t, None), Transport::Tcp);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }
}

#[test]
fn loop_plugin_hinfo_probe_is_nxdomain_and_not_recursed() {
    let m = ask(&coredns_zone(), &n("1234567.8901234"), RecordType::HINFO);
    assert_negative(&m, ResponseCode::NXDomain);
    assert!(!m.metadata.recursion_available);
    assert!(m.metadata.recursion_desired, "RD is copied from the query");
}

#[test]
fn matching_is_case_insensitive_and_echoes_the_query_spelling() {
    let z = coredns_zone();
    let m = ask(&z, "SVC1.TestNS.Svc.ClusterSet.LOCAL.", RecordType::A);
    assert_answers(&m, &["10.0.0.1"]);
    assert_eq!(
        m.queries[0].name().to_ascii(),
        "SVC1.TestNS.Svc.ClusterSet.LOCAL."
    );
    assert_eq!(m.answers[0].name.to_ascii(), "SVC1.TestNS.Svc.ClusterSet.LOCAL.");
    let m = ask(&z, "Missing.TestNS.svc.clusterset.local.", RecordType::A);
    assert_negative(&m, ResponseCode::NXDomain);
    let m = ask(
        &z,
        "_HTTP._Tcp.hdls1.testns.svc.clusterset.local.",
        RecordType::SRV,
    );
    assert_eq!(m.answers.len(), 5);
}

#[test]
fn any_gets_a_minimal_answer_of_one_rrset() {
    let z = coredns_zone();
    let m = ask(&z, &n("svc-dual-stack.testns.svc"), RecordType::ANY);
    assert_answers(&m, &["10.0.0.3"]);
    let m = ask(&z, &n(""), RecordType::ANY);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    assert_negative(&ask(&z, &n("testns.svc"), RecordType::ANY), ResponseCode::NoError);
}

#[test]
fn bare_srv_deduplicates_ports_by_target_and_number() {
    let ports = vec![
        Port {
            name: Some("tcp".into()),
            protocol: Protocol::Tcp,
            port: 42,
        },
        Port {
            name: Some("udp".into()),
            protocol: Protocol::Udp,
            port: 42,
        },
    ];
    let z = zone_with(
        vec![mk_import(
            "ns",
            "hello",
            ImportKind::ClusterSetIp,
            &["10.9.0.1"],
            ports,
        )],
        vec![],
    );
    let m = ask(&z, &n("hello.ns.svc"), RecordType::SRV);
    assert_eq!(m.answers.len(), 1, "{m}");
    assert!(rdata(&m.answers[0]).ends_with(" 42 hello.ns.svc.clusterset.local."));
    assert_eq!(
        ask(&z, &n("_udp._udp.hello.ns.svc"), RecordType::SRV)
            .answers
            .len(),
        1
    );
}

#[test]
fn unnamed_ports_get_no_port_srv_name_but_count_in_the_bare_srv() {
    let ports = vec![Port {
        name: None,
        protocol: Protocol::Tcp,
        port: 8080,
    }];
    let z = zone_with(
        vec![mk_import(
            "ns",
            "s",
            ImportKind::ClusterSetIp,
            &["10.9.0.2"],
            ports,
        )],
        vec![],
    );
    assert_answers(
        &ask(&z, &n("s.ns.svc"), RecordType::SRV),
        &["0 100 8080 s.ns.svc.clusterset.local."],
    );
}

#[test]
fn headless_bare_srv_has_one_record_per_ready_address_across_clusters() {
    let eps = |c: &str, ips: &[&str]| -> (ServiceRef, String, Vec<Endpoint>) {
        (
            ServiceRef::new("ns", "h"),
            c.into(),
            ips.iter().map(|i| mk_endpoint(i, None)).collect(),
        )
    };
    let z = zone_with(
        vec![mk_import("ns", "h", ImportKind::Headless, &[], vec![http()])],
        vec![eps("c1", &["10.1.0.1", "10.1.0.2"]), eps("c2", &["10.2.0.1"])],
    );
    let m = ask(&z, &n("h.ns.svc"), RecordType::SRV);
    assert_answers(
        &m,
        &[
            "0 33 80 10-1-0-1.c1.h.ns.svc.clusterset.local.",
            "0 33 80 10-1-0-2.c1.h.ns.svc.clusterset.local.",
            "0 33 80 10-2-0-1.c2.h.ns.svc.clusterset.local.",
        ],
    );
    assert_answers(
        &ask(&z, &n("h.ns.svc"), RecordType::A),
        &["10.1.0.1", "10.1.0.2", "10.2.0.1"],
    );
    assert_answers(&ask(&z, &n("10-2-0-1.c2.h.ns.svc"), RecordType::A), &["10.2.0.1"]);
}

#[test]
fn edns_reply_carries_our_payload_only_when_the_query_had_opt() {
    let z = coredns_zone();
    let m = ask_with(
        &z,
        &query(&n("svc1.testns.svc"), RecordType::A, None),
        Transport::Udp,
    );
    assert!(m.edns.is_none());
    let m = ask_with(
        &z,
        &query(&n("svc1.testns.svc"), RecordType::A, Some(4096)),
        Transport::Udp,
    );
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
}

fn big_headless(n_eps: usize) -> Zone {
    let eps = (0..n_eps)
        .map(|i| mk_endpoint(&format!("10.200.{}.{}", i / 250, i % 250 + 1), None))
        .collect();
    zone_with(
        vec![mk_import("ns", "big", ImportKind::Headless, &[], vec![http()])],
        vec![(ServiceRef::new("ns", "big"), "cluster-a".into(), eps)],
    )
}

#[test]
fn udp_answer_too_big_for_512_bytes_is_truncated_and_tcp_has_all_200() {
    let z = big_headless(200);
    let q = query(&n("big.ns.svc"), RecordType::A, None);
    let m = ask_with(&z, &q, Transport::Udp);
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    let mut out = Vec::new();
    answer(&z, &q, Transport::Udp, &mut out);
    assert!(out.len() <= 512);
    let m = ask_with(&z, &q, Transport::Tcp);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 200);
    // With a large enough EDNS buffer a mid-size answer fits over UDP.
    let z = big_headless(40);
    let m = ask_with(
        &z,
        &query(&n("big.ns.svc"), RecordType::A, Some(1232)),
        Transport::Udp,
    );
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 40);
    let m = ask_with(&z, &query(&n("big.ns.svc"), RecordType::A, None), Transport::Udp);
    assert!(m.metadata.truncation);
}

#[test]
fn malformed_query_with_a_header_is_formerr_and_garbage_is_dropped() {
    let z = coredns_zone();
    let mut q = query(&n("svc1.testns.svc"), RecordType::A, None);
    q.truncate(q.len() - 3); // cut inside the question
    let mut out = Vec::new();
    let o = answer(&z, &q, Transport::Udp, &mut out);
    assert!(matches!(o, Outcome::Reply { rcode: 1, .. }), "{o:?}");
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, u16::from_be_bytes([q[0], q[1]]));
    assert_eq!(answer(&z, &[1, 2, 3], Transport::Udp, &mut out), Outcome::Drop);
    let mut resp = query(&n("svc1.testns.svc"), RecordType::A, None);
    resp[2] |= 0x80; // a response, not a query
    assert_eq!(answer(&z, &resp, Transport::Udp, &mut out), Outcome::Drop);
}

#[test]
fn two_questions_are_formerr_and_other_opcodes_notimp() {
    let z = coredns_zone();
    let mut msg = Message::query();
    msg.add_query(Query::query(
        Name::from_ascii(n("svc1.testns.svc")).unwrap(),
        RecordType::A,
    ));
    msg.add_query(Query::query(
        Name::from_ascii(n("svc6.testns.svc")).unwrap(),
        RecordType::A,
    ));
    assert_eq!(ask_formless(&z, &msg.to_vec().unwrap()), ResponseCode::FormErr);
    let mut msg = Message::query();
    msg.metadata.op_code = OpCode::Notify;
    msg.add_query(Query::query(Name::from_ascii(n("")).unwrap(), RecordType::SOA));
    assert_eq!(ask_formless(&z, &msg.to_vec().unwrap()), ResponseCode::NotImp);
}

fn ask_formless(z: &Zone, q: &[u8]) -> ResponseCode {
    let mut out = Vec::new();
    answer(z, q, Transport::Udp, &mut out);
    Message::from_vec(&out).unwrap().metadata.response_code
}

#[test]
fn edns_version_1_is_badvers() {
    let mut msg = Message::query();
    msg.add_query(Query::query(
        Name::from_ascii(n("svc1.testns.svc")).unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_version(1);
    msg.set_edns(e);
    // BADVERS is 16 (hickory decodes the shared value 16 as BADSIG).
    assert_eq!(
        u16::from(ask_formless(&coredns_zone(), &msg.to_vec().unwrap())),
        16
    );
}

#[test]
fn other_classes_are_refused() {
    let mut msg = Message::query();
    let mut q = Query::query(Name::from_ascii(n("svc1.testns.svc")).unwrap(), RecordType::A);
    q.set_query_class(DNSClass::CH);
    msg.add_query(q);
    assert_eq!(
        ask_formless(&coredns_zone(), &msg.to_vec().unwrap()),
        ResponseCode::Refused
    );
}

/// Every catalogue name, with plenty of qtypes, EDNS sizes, flags and IDs.
fn agreement_queries() -> Vec<Vec<u8>> {
    let names = [
        "",
        "dns-version",
        "ns.dns",
        "dns",
        "svc",
        "pod",
        "testns.svc",
        "nope.svc",
        "foo",
        "svc1.testns.svc",
        "svcempty.testns.svc",
        "svc6.testns.svc",
        "hdls1.testns.svc",
        "hdlsprtls.testns.svc",
        "svc-dual-stack.testns.svc",
        "_http._tcp.svc1.testns.svc",
        "_http._tcp.hdls1.testns.svc",
        "_http._udp.svc1.testns.svc",
        "172-0-0-2.clusterid.hdls1.testns.svc",
        "dup-name.clusterid.hdls1.testns.svc",
        "5678-abcd--1.clusterid.hdls1.testns.svc",
        "clusterid.hdls1.testns.svc",
        "svc0.svc-nons.svc",
        "x.ns.dns",
        "hostmaster",
        "a.hostmaster",
        "big.ns.svc",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::TXT,
        RecordType::SOA,
        RecordType::NS,
        RecordType::ANY,
        RecordType::MX,
        RecordType::AXFR,
        RecordType::IXFR,
        RecordType::PTR,
    ];
    let mut out = Vec::new();
    let mut id: u16 = 7;
    for name in names {
        for t in types {
            for edns in [None, Some(512), Some(1232), Some(4096), Some(100)] {
                for rd in [false, true] {
                    let mut q = query(&n(name), t, edns);
                    id = id.wrapping_mul(31).wrapping_add(17);
                    q[0..2].copy_from_slice(&id.to_be_bytes());
                    if !rd {
                        q[2] &= !0x01;
                    }
                    q[3] |= u8::from(id.is_multiple_of(3)) * 0x10; // CD sometimes
                    out.push(q);
                }
            }
        }
    }
    for other in ["example.com.", ".", "1.0.0.10.in-addr.arpa."] {
        out.push(query(other, RecordType::NS, None));
        out.push(query(other, RecordType::A, Some(1232)));
    }
    out
}

fn zone_for_agreement(synced: bool) -> Zone {
    let mut input = coredns_input(synced);
    input.namespaces.push("ns".into());
    input
        .imports
        .push(mk_import("ns", "big", ImportKind::Headless, &[], vec![http()]));
    let eps = (0..200)
        .map(|i| mk_endpoint(&format!("10.200.{}.{}", i / 250, i % 250 + 1), None))
        .collect();
    input
        .endpoints
        .push((ServiceRef::new("ns", "big"), "cluster-a".into(), eps));
    Zone::build(&config(), &input).unwrap()
}

#[test]
fn fast_path_and_hickory_full_path_agree_byte_for_byte() {
    for synced in [true, false] {
        let z = zone_for_agreement(synced);
        for q in agreement_queries() {
            for transport in [Transport::Udp, Transport::Tcp] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let full = answer_full(&z, &q, transport, &mut b);
                let fast = answer_fast(&z, &q, transport, &mut a);
                let name = Message::from_vec(&q).unwrap().queries[0].name().to_ascii();
                // The only names the fast path hands over: negatives whose SOA names could
                // compress into the question (`…dns.<zone>`, `…hostmaster.<zone>`).
                let may_hand_over =
                    name.ends_with("dns.clusterset.local.") || name.ends_with("hostmaster.clusterset.local.");
                assert!(fast.is_some() || may_hand_over, "fast path handed over {name}");
                if let Some(fast) = fast {
                    assert_eq!(
                        fast,
                        full,
                        "outcome for {:?}",
                        Message::from_vec(&q).map(|m| m.queries)
                    );
                    assert_eq!(
                        a,
                        b,
                        "bytes for {:?} over {transport:?}",
                        Message::from_vec(&q).map(|m| m.queries)
                    );
                }
            }
        }
    }
}

#[test]
fn mixed_case_queries_take_the_full_path() {
    let z = coredns_zone();
    let q = query("Svc1.testns.svc.clusterset.local.", RecordType::A, None);
    let mut out = Vec::new();
    assert!(answer_fast(&z, &q, Transport::Udp, &mut out).is_none());
    assert!(matches!(
        answer(&z, &q, Transport::Udp, &mut out),
        Outcome::Reply { rcode: 0, .. }
    ));
}

/// A small deterministic generator for the robustness run.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub fn malformed_inputs() -> Vec<Vec<u8>> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut v: Vec<Vec<u8>> = Vec::new();
    for len in 0..64 {
        v.push((0..len).map(|_| rng.next() as u8).collect());
    }
    for _ in 0..2000 {
        let len = (rng.next() % 600) as usize;
        v.push((0..len).map(|_| rng.next() as u8).collect());
    }
    let base = query(&n("svc1.testns.svc"), RecordType::A, Some(1232));
    // short headers and cut questions
    for cut in 0..base.len() {
        v.push(base[..cut].to_vec());
    }
    // bad counts
    for (i, count) in [
        (4, 0u16),
        (4, 2),
        (4, 0xFFFF),
        (6, 1),
        (8, 3),
        (10, 0),
        (10, 2),
        (10, 0xFFFF),
    ] {
        let mut q = base.clone();
        q[i..i + 2].copy_from_slice(&count.to_be_bytes());
        v.push(q);
    }
    // compression loops: a name that points at itself, and two pointers pointing at each other
    let mut header = base[..12].to_vec();
    header[10..12].copy_from_slice(&[0, 0]);
    v.push([header.clone(), vec![0xC0, 12, 0, 1, 0, 1]].concat());
    v.push([header.clone(), vec![1, b'a', 0xC0, 12, 0, 1, 0, 1]].concat());
    v.push([header.clone(), vec![0xC0, 14, 0xC0, 12, 0, 1, 0, 1]].concat());
    // oversize labels and names
    v.push([header.clone(), vec![64], vec![b'a'; 64], vec![0, 0, 1, 0, 1]].concat());
    let mut long = header.clone();
    for _ in 0..60 {
        long.extend_from_slice(&[5, b'a', b'b', b'c', b'd', b'e']);
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    v.push(long);
    // reserved label types, random bit flips of a valid query
    v.push([header.clone(), vec![0x80, 1, 0, 0, 1, 0, 1]].concat());
    for _ in 0..3000 {
        let mut q = base.clone();
        let flips = 1 + rng.next() % 4;
        for _ in 0..flips {
            let i = (rng.next() as usize) % q.len();
            q[i] ^= 1 << (rng.next() % 8);
        }
        v.push(q);
    }
    v
}

#[test]
fn malformed_packets_never_panic_and_the_zone_still_answers() {
    let z = coredns_zone();
    let mut out = Vec::new();
    for q in malformed_inputs() {
        for t in [Transport::Udp, Transport::Tcp] {
            let outcome = answer(&z, &q, t, &mut out);
            if q.len() < 12 {
                assert_eq!(outcome, Outcome::Drop, "no header must be silence");
            }
            if let Outcome::Reply { .. } = outcome {
                let m = Message::from_vec(&out).expect("every reply decodes");
                assert_eq!(m.metadata.id, u16::from_be_bytes([q[0], q[1]]));
            }
        }
    }
    assert_answers(&ask(&z, &n("svc1.testns.svc"), RecordType::A), &["10.0.0.1"]);
}

#[test]
fn writer_publishes_only_what_changed_and_removals_become_nxdomain() {
    let mut w = ZoneWriter::new(config()).unwrap();
    w.apply_namespace("ns");
    w.apply_import(mk_import(
        "ns",
        "a",
        ImportKind::ClusterSetIp,
        &["10.0.0.1"],
        vec![http()],
    ));
    w.apply_import(mk_import(
        "ns",
        "b",
        ImportKind::ClusterSetIp,
        &["10.0.0.2"],
        vec![http()],
    ));
    w.mark_synced();
    let z1 = w.publish().expect("first publish");
    assert!(w.publish().is_none(), "nothing changed, nothing published");
    w.apply_import(mk_import(
        "ns",
        "b",
        ImportKind::ClusterSetIp,
        &["10.0.0.2"],
        vec![http()],
    ));
    assert!(w.publish().is_none(), "an identical import is not a change");
    w.apply_import(mk_import(
        "ns",
        "a",
        ImportKind::ClusterSetIp,
        &["10.0.0.9"],
        vec![http()],
    ));
    let z2 = w.publish().unwrap();
    assert!(z2.generation() > z1.generation());
    assert!(z2.serial() > z1.serial());
    assert_answers(&ask(&z1, &n("a.ns.svc"), RecordType::A), &["10.0.0.1"]);
    assert_answers(&ask(&z2, &n("a.ns.svc"), RecordType::A), &["10.0.0.9"]);
    w.delete_import(&ServiceRef::new("ns", "a"));
    let z3 = w.publish().unwrap();
    assert_negative(&ask(&z3, &n("a.ns.svc"), RecordType::A), ResponseCode::NXDomain);
    assert_negative(
        &ask(&z3, &n("_http._tcp.a.ns.svc"), RecordType::SRV),
        ResponseCode::NXDomain,
    );
    w.delete_namespace("ns");
    let z4 = w.publish().unwrap();
    assert_negative(&ask(&z4, &n("b.ns.svc"), RecordType::A), ResponseCode::NXDomain);
    assert_negative(&ask(&z4, &n("ns.svc"), RecordType::A), ResponseCode::NXDomain);
    w.apply_namespace("ns");
    let z5 = w.publish().unwrap();
    assert_answers(&ask(&z5, &n("b.ns.svc"), RecordType::A), &["10.0.0.2"]);
    assert_eq!(
        z5.record_count(),
        z1.record_count() - 3,
        "a's A, bare SRV and port SRV are gone"
    );
}

#[test]
fn endpoints_turning_unready_remove_the_headless_service() {
    let mut w = ZoneWriter::new(config()).unwrap();
    w.apply_namespace("ns");
    w.mark_synced();
    w.apply_import(mk_import("ns", "h", ImportKind::Headless, &[], vec![http()]));
    let svc = ServiceRef::new("ns", "h");
    w.apply_endpoints(svc.clone(), "c1", vec![mk_endpoint("10.1.0.1", Some("web-0"))]);
    let z = w.publish().unwrap();
    assert_answers(&ask(&z, &n("web-0.c1.h.ns.svc"), RecordType::A), &["10.1.0.1"]);
    w.apply_endpoints(
        svc.clone(),
        "c1",
        vec![Endpoint {
            ready: false,
            ..mk_endpoint("10.1.0.1", Some("web-0"))
        }],
    );
    let z = w.publish().unwrap();
    assert_negative(&ask(&z, &n("h.ns.svc"), RecordType::A), ResponseCode::NXDomain);
    assert_negative(
        &ask(&z, &n("web-0.c1.h.ns.svc"), RecordType::A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn endpoint_changes_republish_only_the_answers_made_of_endpoints() {
    let mut w = ZoneWriter::new(config()).unwrap();
    w.apply_namespace("ns");
    w.mark_synced();
    w.apply_import(mk_import(
        "ns",
        "vip",
        ImportKind::ClusterSetIp,
        &["10.0.0.1"],
        vec![http()],
    ));
    let svc = ServiceRef::new("ns", "vip");
    let first = w.publish().unwrap();
    // A ClusterSetIP answer is the VIP: its endpoints moving costs no new zone.
    w.apply_endpoints(svc.clone(), "c1", vec![mk_endpoint("10.1.0.1", Some("web-0"))]);
    w.apply_endpoints(svc.clone(), "c2", vec![mk_endpoint("10.2.0.1", None)]);
    assert!(
        !w.has_changes(),
        "a ClusterSetIP service's endpoints are not in its answers"
    );
    assert!(w.publish().is_none());
    assert_eq!(w.publish_now().generation(), first.generation());
    // ...but they are kept: the import turning headless answers them at once.
    w.apply_import(mk_import("ns", "vip", ImportKind::Headless, &[], vec![http()]));
    let z = w.publish().unwrap();
    assert_answers(
        &ask(&z, &n("vip.ns.svc"), RecordType::A),
        &["10.1.0.1", "10.2.0.1"],
    );
    assert_answers(&ask(&z, &n("web-0.c1.vip.ns.svc"), RecordType::A), &["10.1.0.1"]);
    // Headless: an endpoint change is a new zone.
    w.apply_endpoint_sets(
        svc.clone(),
        "c2",
        vec![
            Arc::from(vec![mk_endpoint("10.2.0.1", None)]),
            Arc::from(vec![mk_endpoint("10.2.0.2", None)]),
        ],
    );
    let z = w
        .publish()
        .expect("a headless service's endpoints are its answers");
    assert_answers(
        &ask(&z, &n("vip.ns.svc"), RecordType::A),
        &["10.1.0.1", "10.2.0.1", "10.2.0.2"],
    );
    // The same endpoints in new sets are no change, and the writer keeps the new sets (so the
    // caller's old copies are not kept alive beside them).
    let same: Arc<[Endpoint]> = Arc::from(vec![mk_endpoint("10.2.0.1", None), mk_endpoint("10.2.0.2", None)]);
    w.apply_endpoint_sets(svc.clone(), "c2", vec![same.clone()]);
    assert!(w.publish().is_none());
    assert_eq!(
        Arc::strong_count(&same),
        2,
        "the writer holds the set it was given"
    );
    // Endpoints of a service without an import are forgotten once they are gone.
    let orphan = ServiceRef::new("ns", "orphan");
    w.apply_endpoints(orphan.clone(), "c1", vec![mk_endpoint("10.3.0.1", None)]);
    assert!(w.publish().is_none(), "no import, nothing to answer");
    assert!(w.services().any(|s| *s == orphan));
    w.delete_endpoints(&orphan, "c1");
    assert!(!w.services().any(|s| *s == orphan), "nothing left of it");
    assert!(w.publish().is_none());
}
