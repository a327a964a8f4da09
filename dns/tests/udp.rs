//! The UDP server under a burst: several clients keep many queries in flight at once, so the
//! workers receive and reply in batches; every reply must reach the client that asked, carry its
//! ID and the answer to its question. Dropped datagrams (garbage), FORMERR, NXDOMAIN and TC
//! replies sit in the middle of the batches.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Edns, Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use mcsd_dns::{
    Endpoint, Import, ImportKind, Metrics, ServeOptions, ServiceRef, SharedZone, UdpWorker, ZoneConfig,
    ZoneWriter,
};
use tokio_util::sync::CancellationToken;

const SERVICES: usize = 100;
const HEADLESS_ENDPOINTS: u8 = 40;
const CLIENTS: usize = 5;
const QUERIES_PER_CLIENT: usize = 100;
/// Queries a client keeps in flight: all clients together stay well under what a socket's
/// default receive buffer holds (about 256 small datagrams), so nothing is lost to overflow.
const WINDOW: usize = 20;

fn service_ip(i: usize) -> IpAddr {
    IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8 + 1])
}

fn zone() -> SharedZone {
    let mut w = ZoneWriter::new(ZoneConfig::default()).unwrap();
    for j in 0..10 {
        w.apply_namespace(&format!("ns-{j}"));
    }
    for i in 0..SERVICES {
        w.apply_import(Import {
            namespace: format!("ns-{}", i % 10),
            name: format!("svc-{i}"),
            kind: ImportKind::ClusterSetIp,
            ips: vec![service_ip(i)],
            ports: vec![],
        });
    }
    w.apply_import(Import {
        namespace: "ns-0".into(),
        name: "big".into(),
        kind: ImportKind::Headless,
        ips: vec![],
        ports: vec![],
    });
    let endpoints = (1..=HEADLESS_ENDPOINTS).map(|k| Endpoint {
        addresses: vec![IpAddr::from([10, 2, 0, k])],
        hostname: None,
        ready: true,
    });
    w.apply_endpoints(ServiceRef::new("ns-0", "big"), "cluster-a", endpoints.collect());
    w.mark_synced();
    Arc::new(ArcSwap::new(w.publish_now()))
}

/// What the server must do with one datagram.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// NOERROR with exactly this A record.
    Address(IpAddr),
    /// NOERROR, TC set, no answers (the headless answer does not fit 512 bytes).
    Truncated,
    /// NOERROR with every endpoint of the headless service (EDNS: 1232 bytes fit).
    AllEndpoints,
    NxDomain,
    FormErr,
    /// No reply at all.
    Dropped,
}

fn query(id: u16, name: &str, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// Query `n` of client `client`: a mix of every kind of reply, the same for every run.
fn datagram(client: usize, n: usize) -> (u16, Vec<u8>, Expect) {
    let id = (client * QUERIES_PER_CLIENT + n) as u16;
    let svc = (client * 37 + n * 11) % SERVICES;
    match n % 10 {
        3 => {
            // A response: never answered (no reflection).
            let mut q = query(id, "svc-1.ns-1.svc.clusterset.local.", false);
            q[2] |= 0x80;
            (id, q, Expect::Dropped)
        }
        5 => (
            id,
            query(id, "big.ns-0.svc.clusterset.local.", false),
            Expect::Truncated,
        ),
        6 => (
            id,
            query(id, "big.ns-0.svc.clusterset.local.", true),
            Expect::AllEndpoints,
        ),
        7 => (
            id,
            query(id, "missing.ns-2.svc.clusterset.local.", false),
            Expect::NxDomain,
        ),
        8 => {
            // One question announced, a label cut short.
            let mut q = id.to_be_bytes().to_vec();
            q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 63, b's', b'v', b'c']);
            (id, q, Expect::FormErr)
        }
        _ => {
            let name = format!("svc-{svc}.ns-{}.svc.clusterset.local.", svc % 10);
            (id, query(id, &name, false), Expect::Address(service_ip(svc)))
        }
    }
}

fn check(reply: &Message, expect: Expect) {
    let rcode = reply.metadata.response_code;
    let addresses: Vec<IpAddr> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    let tc = reply.metadata.truncation;
    match expect {
        Expect::Address(ip) => assert_eq!((rcode, tc, addresses), (ResponseCode::NoError, false, vec![ip])),
        Expect::Truncated => assert_eq!((rcode, tc, addresses.len()), (ResponseCode::NoError, true, 0)),
        Expect::AllEndpoints => {
            assert_eq!((rcode, tc), (ResponseCode::NoError, false));
            assert_eq!(addresses.len(), usize::from(HEADLESS_ENDPOINTS));
            assert!(reply.edns.is_some(), "OPT echoed");
        }
        Expect::NxDomain => assert_eq!((rcode, tc), (ResponseCode::NXDomain, false)),
        Expect::FormErr => assert_eq!(rcode, ResponseCode::FormErr),
        Expect::Dropped => panic!("a dropped datagram got a reply: {reply:?}"),
    }
}

/// One client: keeps `WINDOW` queries in flight until all of its queries are answered.
fn client(server: SocketAddr, client: usize) {
    let bind: SocketAddr = if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    }
    .parse()
    .unwrap();
    let socket = UdpSocket::bind(bind).unwrap();
    socket.connect(server).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut pending: HashMap<u16, Expect> = HashMap::new();
    let mut next = 0;
    let mut buf = [0u8; 4096];
    while next < QUERIES_PER_CLIENT || !pending.is_empty() {
        while next < QUERIES_PER_CLIENT && pending.len() < WINDOW {
            let (id, bytes, expect) = datagram(client, next);
            socket.send(&bytes).unwrap();
            if expect != Expect::Dropped {
                pending.insert(id, expect);
            }
            next += 1;
        }
        let len = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("client {client}: {e}; unanswered: {pending:?}"));
        let reply = Message::from_vec(&buf[..len]).expect("reply decodes");
        let expect = pending
            .remove(&reply.metadata.id)
            .unwrap_or_else(|| panic!("client {client}: unexpected reply {reply:?}"));
        check(&reply, expect);
    }
}

/// Runs every client at once, client `c` against `targets[c % targets.len()]`.
fn burst(targets: &[SocketAddr]) {
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let server = targets[c % targets.len()];
            std::thread::spawn(move || client(server, c))
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn a_burst_from_several_clients_gets_every_reply_right_over_ipv4_ipv6_and_dual_stack() {
    let zone = zone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sockets: Vec<UdpSocket> = ["127.0.0.1:0", "[::1]:0", "[::]:0"]
        .iter()
        .map(|a| UdpSocket::bind(a).unwrap())
        .collect();
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();
    let v4 = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let v6 = |p: u16| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p));
    let targets = [
        vec![v4(port(&sockets[0]))],
        vec![v6(port(&sockets[1]))],
        // One socket, IPv4 (mapped) and IPv6 peers in the same batches.
        vec![v4(port(&sockets[2])), v6(port(&sockets[2]))],
    ];
    let metrics = Arc::new(Metrics::new(sockets.len() + 1));
    let shutdown = CancellationToken::new();
    let server = runtime.spawn(mcsd_dns::serve(
        zone.clone(),
        metrics.clone(),
        sockets,
        vec![],
        ServeOptions::default(),
        shutdown.clone(),
    ));
    for t in &targets {
        burst(t);
    }
    // Per socket 5 clients × 100 queries; in every ten: 7 NOERROR (one of them TC), 1 NXDOMAIN,
    // 1 FORMERR, 1 dropped.
    let total = (targets.len() * CLIENTS * QUERIES_PER_CLIENT) as u64;
    assert_eq!(metrics.replies(0), total * 7 / 10);
    assert_eq!(metrics.replies(3), total / 10);
    assert_eq!(metrics.replies(1), total / 10);
    let registry = mcsd_dns::admin::registry(&metrics, &zone, &Default::default());
    let text = mcsd_dns::admin::render(&registry);
    assert!(
        text.contains(&format!("mcsd_dns_dropped_total {}\n", total / 10)),
        "{text}"
    );
    assert!(
        text.contains(&format!("mcsd_dns_truncated_total {}\n", total / 10)),
        "{text}"
    );
    shutdown.cancel();
    runtime.block_on(server).unwrap().unwrap();
}

#[test]
fn the_one_datagram_per_call_path_answers_the_same_burst() {
    let zone = zone();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (zone, stop) = (zone.clone(), stop.clone());
        std::thread::spawn(move || {
            let metrics = Metrics::new(1);
            let mut worker = UdpWorker::one_per_call();
            assert!(!worker.batched());
            while !stop.load(Ordering::Relaxed) {
                worker.serve_batch(&socket, &zone, &metrics, 0);
            }
        })
    };
    burst(&[addr]);
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
}
