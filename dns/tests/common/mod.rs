//! Fixtures shared by the socket-free tests: the CoreDNS multicluster plugin's test data,
//! translated to `clusterset.local`, and a tiny client built on hickory-proto.
#![allow(dead_code)]

use std::net::IpAddr;

use hickory_proto::{
    op::{Edns, Message, OpCode, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType},
};
use mcsd_dns::{
    Endpoint, Import, ImportKind, Outcome, Port, Protocol, ServiceRef, Transport, Zone, ZoneConfig,
    ZoneInput, answer,
};

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn http() -> Port {
    Port {
        name: Some("http".into()),
        protocol: Protocol::Tcp,
        port: 80,
    }
}

pub fn mk_import(ns: &str, name: &str, kind: ImportKind, ips: &[&str], ports: Vec<Port>) -> Import {
    Import {
        namespace: ns.into(),
        name: name.into(),
        kind,
        ips: ips.iter().map(|s| ip(s)).collect(),
        ports,
    }
}

pub fn mk_endpoint(addr: &str, hostname: Option<&str>) -> Endpoint {
    Endpoint {
        addresses: vec![ip(addr)],
        hostname: hostname.map(str::to_string),
        ready: true,
    }
}

pub fn config() -> ZoneConfig {
    ZoneConfig {
        nameserver_addrs: vec![ip("127.0.0.1")],
        ..ZoneConfig::default()
    }
}

/// The data of CoreDNS's multicluster_handler_test.go.
pub fn coredns_input(synced: bool) -> ZoneInput {
    let c = ImportKind::ClusterSetIp;
    let h = ImportKind::Headless;
    ZoneInput {
        namespaces: vec!["testns".into()],
        imports: vec![
            mk_import("testns", "svc1", c, &["10.0.0.1"], vec![http()]),
            mk_import("testns", "svcempty", c, &["10.0.0.1"], vec![http()]),
            mk_import("testns", "svc6", c, &["1234:abcd::1"], vec![http()]),
            mk_import("testns", "hdls1", h, &[], vec![http()]),
            mk_import("testns", "hdlsprtls", h, &[], vec![]),
            mk_import(
                "testns",
                "svc-dual-stack",
                c,
                &["10.0.0.3", "10::3"],
                vec![http()],
            ),
            // An import whose namespace does not exist locally.
            mk_import("svc-nons", "svc1", c, &["10.0.0.9"], vec![http()]),
        ],
        endpoints: vec![
            (
                ServiceRef::new("testns", "svc1"),
                "clusterid".into(),
                vec![mk_endpoint("172.0.0.1", Some("ep1a"))],
            ),
            (
                ServiceRef::new("testns", "hdls1"),
                "clusterid".into(),
                vec![
                    mk_endpoint("172.0.0.2", None),
                    mk_endpoint("172.0.0.3", None),
                    mk_endpoint("172.0.0.4", Some("dup-name")),
                    mk_endpoint("172.0.0.5", Some("dup-name")),
                    mk_endpoint("5678:abcd::1", None),
                    mk_endpoint("5678:abcd::2", None),
                ],
            ),
            (
                ServiceRef::new("testns", "hdlsprtls"),
                "clusterid".into(),
                vec![mk_endpoint("172.0.0.20", None)],
            ),
        ],
        synced,
    }
}

pub fn coredns_zone() -> Zone {
    Zone::build(&config(), &coredns_input(true)).unwrap()
}

pub fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.op_code = OpCode::Query;
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.set_edns(e);
    }
    msg.to_vec().unwrap()
}

/// Asks the zone over "UDP" with a 4096-byte EDNS buffer and decodes the reply.
pub fn ask(zone: &Zone, name: &str, qtype: RecordType) -> Message {
    ask_with(zone, &query(name, qtype, Some(4096)), Transport::Udp)
}

pub fn ask_with(zone: &Zone, q: &[u8], transport: Transport) -> Message {
    let mut out = Vec::new();
    let outcome = answer(zone, q, transport, &mut out);
    assert!(matches!(outcome, Outcome::Reply { .. }), "no reply");
    let msg = Message::from_vec(&out).expect("reply decodes");
    assert_eq!(msg.metadata.id, u16::from_be_bytes([q[0], q[1]]), "ID echoed");
    assert_eq!(msg.queries.len(), 1, "question echoed");
    msg
}

/// `rdata` of a record in presentation form ("10.0.0.1", "0 100 80 svc1.testns…").
pub fn rdata(r: &Record) -> String {
    match &r.data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::SRV(s) => format!("{} {} {} {}", s.priority, s.weight, s.port, s.target),
        other => other.to_string(),
    }
}

pub fn sorted(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(rdata).collect();
    v.sort();
    v
}

/// Asserts a negative answer: rcode, no answers, exactly the zone SOA in the authority section.
pub fn assert_negative(msg: &Message, rcode: ResponseCode) {
    assert_eq!(msg.metadata.response_code, rcode, "{msg}");
    assert!(msg.answers.is_empty(), "{msg}");
    assert_eq!(msg.authorities.len(), 1, "{msg}");
    let soa = &msg.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.name.to_ascii(), "clusterset.local.");
    assert!(msg.metadata.authoritative);
}

pub fn assert_answers(msg: &Message, expected: &[&str]) {
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError, "{msg}");
    assert!(msg.metadata.authoritative, "{msg}");
    let mut exp: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    exp.sort();
    assert_eq!(sorted(&msg.answers), exp, "{msg}");
    for r in &msg.answers {
        assert_eq!(r.ttl, 5);
    }
}
