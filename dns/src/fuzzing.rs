//! The property the fuzz target (`dns/fuzz`) and the stable random loop (`examples/fuzz_loop.rs`)
//! check for any input: no panic, every reply decodes and echoes the ID, and wherever the fast
//! path answers, the hickory-proto full path gives the same bytes.

use std::sync::OnceLock;

use crate::{
    handler::{Outcome, Transport, answer, answer_fast, answer_full},
    model::{Endpoint, Import, ImportKind, Port, Protocol, ServiceRef},
    zone::{Zone, ZoneConfig, ZoneInput},
};

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let http = Port {
            name: Some("http".into()),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let input = ZoneInput {
            namespaces: vec!["ns".into()],
            imports: vec![
                Import {
                    namespace: "ns".into(),
                    name: "a".into(),
                    kind: ImportKind::ClusterSetIp,
                    ips: vec![
                        std::net::Ipv4Addr::new(10, 0, 0, 1).into(),
                        std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into(),
                    ],
                    ports: vec![http.clone()],
                },
                Import {
                    namespace: "ns".into(),
                    name: "h".into(),
                    kind: ImportKind::Headless,
                    ips: vec![],
                    ports: vec![http],
                },
            ],
            endpoints: vec![(
                ServiceRef::new("ns", "h"),
                "c1".into(),
                (1..=60u8)
                    .map(|i| Endpoint {
                        addresses: vec![[10, 1, 0, i].into()],
                        hostname: None,
                        ready: true,
                    })
                    .collect(),
            )],
            synced: true,
        };
        Zone::build(
            &ZoneConfig {
                nameserver_addrs: vec![[127, 0, 0, 1].into()],
                ..ZoneConfig::default()
            },
            &input,
        )
        .unwrap_or_else(|e| panic!("fuzz zone: {e}"))
    })
}

/// Checks one input; panics on a violation (which is what a fuzzer reports).
pub fn check_query(data: &[u8]) {
    let zone = zone();
    let mut out = Vec::new();
    let mut full = Vec::new();
    let mut fast = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let outcome = answer(zone, data, transport, &mut out);
        if let Outcome::Reply { .. } = outcome {
            assert!(out.len() >= 12 && out[..2] == data[..2], "reply must echo the ID");
            assert!(
                hickory_proto::op::Message::from_vec(&out).is_ok(),
                "reply must decode"
            );
            if transport == Transport::Udp {
                assert!(out.len() <= 4096, "UDP reply within the largest payload");
            }
        }
        if let Some(f) = answer_fast(zone, data, transport, &mut fast) {
            let g = answer_full(zone, data, transport, &mut full);
            assert_eq!(f, g, "fast and full outcomes differ");
            assert_eq!(fast, full, "fast and full bytes differ");
        }
    }
}
