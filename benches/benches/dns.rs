//! DNS benchmarks: publishing a change to one service in a zone of 100,000 services, and the
//! per-query cost of the handler (no sockets) for each kind of query of the bench mix.

use std::{hint::black_box, net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;
use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RecordType},
};
use mcsd_dns::{Import, ImportKind, Port, Protocol, Transport, ZoneConfig, ZoneWriter, answer};

fn import(i: usize, ip: IpAddr) -> Import {
    Import {
        namespace: format!("ns-{}", i % 100),
        name: format!("svc-{i}"),
        kind: ImportKind::ClusterSetIp,
        ips: vec![ip],
        ports: vec![Port {
            name: Some("http".into()),
            protocol: Protocol::Tcp,
            port: 80,
        }],
    }
}

fn ip(i: usize) -> IpAddr {
    let i = i as u32 + 1;
    IpAddr::from([10, 96 + ((i >> 16) % 16) as u8, (i >> 8) as u8, i as u8])
}

fn writer_with(n: usize) -> ZoneWriter {
    let mut w = ZoneWriter::new(ZoneConfig::default()).unwrap();
    for j in 0..100 {
        w.apply_namespace(&format!("ns-{j}"));
    }
    for i in 0..n {
        w.apply_import(import(i, ip(i)));
    }
    w.mark_synced();
    w.publish_now();
    w
}

fn publish(c: &mut Criterion) {
    let mut w = writer_with(100_000);
    let shared = Arc::new(ArcSwap::new(w.publish_now()));
    let mut flip = false;
    c.bench_function("publish one changed service of 100k", |b| {
        b.iter(|| {
            flip = !flip;
            let addr = if flip {
                IpAddr::from([10, 1, 2, 3])
            } else {
                ip(4242)
            };
            w.apply_import(import(4242, addr));
            let zone = w.publish().expect("a change publishes");
            shared.store(zone);
        })
    });
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

fn handler(c: &mut Criterion) {
    let mut w = writer_with(10_000);
    let zone = w.publish_now();
    let mut out = Vec::with_capacity(4096);
    for (label, q) in [
        (
            "A clustersetip",
            query("svc-7.ns-7.svc.clusterset.local.", RecordType::A),
        ),
        (
            "SRV port",
            query("_http._tcp.svc-5.ns-5.svc.clusterset.local.", RecordType::SRV),
        ),
        (
            "NXDOMAIN",
            query("missing-1.ns-1.svc.clusterset.local.", RecordType::A),
        ),
        (
            "A mixed case (full path)",
            query("SVC-7.ns-7.svc.clusterset.local.", RecordType::A),
        ),
    ] {
        c.bench_function(&format!("answer {label}"), |b| {
            b.iter(|| answer(black_box(&zone), black_box(&q), Transport::Udp, &mut out))
        });
    }
}

criterion_group!(benches, publish, handler);
criterion_main!(benches);
