//! `mcsd dns --objects` driven from outside: the real binary on loopback sockets, queried with
//! the real `dig` and `kdig` (Debian packages `dnsutils` and `knot-dnsutils`) over UDP and TCP,
//! IPv4 and IPv6.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RecordType},
};

const BIN: &str = env!("CARGO_BIN_EXE_mcsd");

struct Server {
    child: Child,
    dns4: SocketAddr,
    dns6: SocketAddr,
    admin: SocketAddr,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mcsd-dns-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn objects() -> String {
    let mut y = String::from(
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n\
         ---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceImport\n\
         metadata: {name: hello, namespace: demo}\n\
         spec: {type: ClusterSetIP, ips: [10.96.0.10, 'fd00::10'], ports: [{name: tcp, protocol: TCP, port: 42}, {name: udp, protocol: UDP, port: 42}]}\n\
         ---\napiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\n\
         metadata: {name: old, namespace: demo}\nspec: {type: ClusterSetIP, ips: [10.96.0.11], ports: [{name: http, protocol: TCP, port: 80}]}\n\
         ---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceImport\n\
         metadata: {name: big, namespace: demo}\nspec: {type: Headless, ports: [{name: http, protocol: TCP, port: 80}]}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: big-a, namespace: demo, labels: {multicluster.kubernetes.io/service-name: big, multicluster.kubernetes.io/source-cluster: cluster-a}}\n\
         addressType: IPv4\nendpoints:\n",
    );
    for i in 0..200 {
        y.push_str(&format!(
            "- {{addresses: [10.200.{}.{}]}}\n",
            i / 250,
            i % 250 + 1
        ));
    }
    y.push_str(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-b, namespace: demo, labels: {multicluster.kubernetes.io/service-name: web, multicluster.kubernetes.io/source-cluster: cluster-b}}\n\
         addressType: IPv4\nendpoints:\n- {addresses: [10.2.0.1], hostname: web-0, conditions: {ready: true}}\n\
         - {addresses: [10.2.0.2], hostname: web-1, conditions: {ready: false}}\n\
         ---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceImport\n\
         metadata: {name: web, namespace: demo}\nspec: {type: Headless, ports: [{name: http, protocol: TCP, port: 80}]}\n",
    );
    y
}

fn start(tag: &str, yaml: &str) -> Server {
    start_with(tag, yaml, &[])
}

/// [`start`] with `extra` flags.
fn start_with(tag: &str, yaml: &str, extra: &[&str]) -> Server {
    let dir = TempDir::new(tag);
    let file = dir.0.join("objects.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["dns", "--objects"])
        .arg(&file)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server announces its addresses");
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    let dns: Vec<SocketAddr> = field("dns=").split(',').map(|s| s.parse().unwrap()).collect();
    Server {
        child,
        dns4: dns[0],
        dns6: dns[1],
        admin: field("admin=").parse().unwrap(),
        _dir: dir,
    }
}

fn tool(bin: &str, server: SocketAddr, args: &[&str]) -> String {
    mcsd_test_tools::require(&["dig", "kdig"]);
    let out = Command::new(bin)
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dig(server: SocketAddr, args: &[&str]) -> String {
    tool(
        "dig",
        server,
        &[&["+norec", "+tries=1", "+time=3"], args].concat(),
    )
}

fn kdig(server: SocketAddr, args: &[&str]) -> String {
    tool(
        "kdig",
        server,
        &[&["+norec", "+retry=0", "+time=3"], args].concat(),
    )
}

#[test]
fn dig_and_kdig_get_the_same_answers_over_udp_and_tcp_on_ipv4_and_ipv6() {
    let s = start("basic", &objects());
    for server in [s.dns4, s.dns6] {
        for transport in ["+notcp", "+tcp"] {
            let out = dig(
                server,
                &[transport, "+short", "hello.demo.svc.clusterset.local", "A"],
            );
            assert_eq!(out.trim(), "10.96.0.10", "dig {transport} on {server}");
            let out = dig(
                server,
                &[transport, "+short", "hello.demo.svc.clusterset.local", "AAAA"],
            );
            assert_eq!(out.trim(), "fd00::10");
            let out = kdig(
                server,
                &[transport, "+short", "hello.demo.svc.clusterset.local", "SRV"],
            );
            assert_eq!(
                out.trim(),
                "0 25 42 hello.demo.svc.clusterset.local.",
                "2 IPs x 2 ports = 4 candidates (weight 100/4), de-duplicated to one record"
            );
            let out = kdig(
                server,
                &[transport, "+short", "old.demo.svc.clusterset.local", "A"],
            );
            assert_eq!(out.trim(), "10.96.0.11", "v1alpha1 import");
        }
    }
    let out = dig(s.dns4, &["web-0.cluster-b.web.demo.svc.clusterset.local", "A"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("10.2.0.1"),
        "{out}"
    );
    let out = dig(s.dns4, &["web-1.cluster-b.web.demo.svc.clusterset.local", "A"]);
    assert!(out.contains("status: NXDOMAIN"), "not ready: {out}");
    assert!(out.contains("SOA"), "negative answers carry the SOA: {out}");
    let out = kdig(s.dns4, &["nothere.demo.svc.clusterset.local", "A"]);
    assert!(out.contains("NXDOMAIN") && out.contains("SOA"), "{out}");
    let out = dig(s.dns4, &[".", "NS"]);
    assert!(
        out.contains("status: REFUSED"),
        "health probe gets a reply: {out}"
    );
    let out = dig(s.dns4, &["+tcp", "clusterset.local", "AXFR"]);
    assert!(
        out.contains("Transfer failed") || out.contains("REFUSED"),
        "{out}"
    );
    let out = dig(s.dns4, &["+short", "HeLLo.Demo.svc.ClusterSet.local", "A"]);
    assert_eq!(out.trim(), "10.96.0.10");
}

#[test]
fn headless_service_of_200_endpoints_truncates_at_512_bytes_and_is_complete_over_tcp() {
    let s = start("tc", &objects());
    let out = dig(
        s.dns4,
        &["+noedns", "+ignore", "big.demo.svc.clusterset.local", "A"],
    );
    assert!(out.contains(" tc"), "TC flag set: {out}");
    assert!(out.contains("ANSWER: 0"), "{out}");
    let size: usize = out
        .split("MSG SIZE  rcvd: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("dig prints the size");
    assert!(size <= 512, "{out}");
    let out = dig(s.dns4, &["+tcp", "+short", "big.demo.svc.clusterset.local", "A"]);
    assert_eq!(out.lines().count(), 200, "all 200 over TCP");
    // dig's default EDNS buffer: truncated over UDP, retried over TCP by dig itself.
    let out = dig(s.dns4, &["+short", "big.demo.svc.clusterset.local", "A"]);
    assert_eq!(out.lines().count(), 200);
    let out = kdig(
        s.dns6,
        &[
            "+tcp",
            "+short",
            "_http._tcp.big.demo.svc.clusterset.local",
            "SRV",
        ],
    );
    assert_eq!(out.lines().count(), 200);
}

fn wire_query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

#[test]
fn several_queries_share_one_tcp_connection() {
    let s = start("tcpmulti", &objects());
    let mut conn = TcpStream::connect(s.dns4).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for (id, name) in [
        (1, "hello.demo.svc.clusterset.local."),
        (2, "old.demo.svc.clusterset.local."),
        (3, "x.demo.svc.clusterset.local."),
    ] {
        let q = wire_query(id, name, RecordType::A);
        conn.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
        conn.write_all(&q).unwrap();
        let mut len = [0u8; 2];
        conn.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut buf).unwrap();
        let m = Message::from_vec(&buf).unwrap();
        assert_eq!(m.metadata.id, id);
        assert_eq!(m.queries[0].name().to_ascii(), name);
    }
}

#[test]
fn malformed_packets_get_formerr_or_silence_and_the_server_keeps_answering() {
    let s = start("garbage", &objects());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed: u64 = 0x1234_5678_9abc_def1;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = wire_query(9, "hello.demo.svc.clusterset.local.", RecordType::A);
    for i in 0..3000 {
        let packet: Vec<u8> = match i % 4 {
            0 => (0..(next() % 300) as usize).map(|_| next() as u8).collect(),
            1 => valid[..(next() as usize) % valid.len()].to_vec(),
            2 => [&valid[..12], &[0xC0, 12, 0, 1, 0, 1][..]].concat(), // compression loop
            _ => {
                let mut p = valid.clone();
                let at = (next() as usize) % p.len();
                p[at] ^= 1 << (next() % 8);
                p
            }
        };
        sock.send_to(&packet, s.dns4).unwrap();
    }
    // The flood may still fill the server's socket buffer, and the kernel drops what does not
    // fit, so a client that asks now retries, as resolvers do.
    let out = tool(
        "dig",
        s.dns4,
        &[
            "+norec",
            "+tries=3",
            "+time=3",
            "+short",
            "hello.demo.svc.clusterset.local",
            "A",
        ],
    );
    assert_eq!(out.trim(), "10.96.0.10");
    // A header with a broken question is FORMERR.
    let mut broken = valid.clone();
    broken.truncate(valid.len() - 2);
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    probe.send_to(&broken, s.dns4).unwrap();
    let mut buf = [0u8; 512];
    let n = probe.recv(&mut buf).unwrap();
    assert_eq!(buf[3] & 0x0F, 1, "FORMERR");
    assert_eq!(&buf[..2], &valid[..2], "ID echoed");
    let _ = n;
}

fn http_get(addr: SocketAddr, path: &str) -> mcsd::commands::admin_client::Reply {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(mcsd::commands::admin_client::get(
            addr,
            path,
            Duration::from_secs(5),
        ))
        .unwrap()
}

#[test]
fn admin_listener_serves_metrics_liveness_and_readiness() {
    let s = start("admin", &objects());
    dig(s.dns4, &["+short", "hello.demo.svc.clusterset.local", "A"]);
    dig(s.dns4, &["nope.demo.svc.clusterset.local", "A"]);
    assert_eq!(http_get(s.admin, "/livez").status, 200);
    assert_eq!(http_get(s.admin, "/readyz").status, 200, "objects file = synced");
    let metrics = http_get(s.admin, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.content_type.starts_with("text/plain; version=0.0.4"),
        "the Prometheus text format: {metrics:?}"
    );
    let m = metrics.body;
    assert!(
        m.contains("mcsd_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("mcsd_dns_queries_total{qtype=\"A\",rcode=\"NXDOMAIN\"} 1"),
        "{m}"
    );
    for name in [
        "mcsd_dns_answer_duration_seconds_bucket",
        "mcsd_dns_zone_generation",
        "mcsd_dns_zone_records",
        "mcsd_dns_zone_last_publish_timestamp_seconds",
    ] {
        assert!(m.contains(name), "{name} in {m}");
    }
    assert_eq!(http_get(s.admin, "/nope").status, 404);
}

#[test]
fn on_sigterm_it_answers_through_the_shutdown_delay_while_not_ready_then_stops() {
    // What a rollout relies on: the pod turns unready at once (its endpoint is withdrawn), and
    // queries already on their way, sent before every node's proxy has caught up, are answered.
    let mut s = start_with("drain", &objects(), &["--shutdown-delay", "3"]);
    assert_eq!(http_get(s.admin, "/readyz").status, 200);
    let kill = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let readyz = loop {
        let reply = http_get(s.admin, "/readyz");
        if reply.status != 200 || std::time::Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(readyz.status, 503, "not ready once SIGTERM arrives: {readyz:?}");
    assert!(readyz.body.contains("shutting down"), "{readyz:?}");
    for transport in ["+notcp", "+tcp"] {
        assert_eq!(
            dig(
                s.dns4,
                &["+short", transport, "hello.demo.svc.clusterset.local", "A"]
            )
            .trim(),
            "10.96.0.10",
            "answered after SIGTERM ({transport})"
        );
    }
    let status = s.child.wait().unwrap();
    assert!(
        status.success(),
        "it exits cleanly once the delay is over: {status}"
    );
    let after = dig(s.dns4, &["hello.demo.svc.clusterset.local", "A"]);
    assert!(!after.contains("status: NOERROR"), "stopped: {after}");
}

#[test]
fn an_invalid_document_stops_start_up_naming_its_number_and_reason() {
    let dir = TempDir::new("invalid");
    let file = dir.0.join("objects.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\
         apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceImport\n\
         metadata: {name: s, namespace: a}\nspec: {type: ClusterSetIP, ips: [not-an-ip]}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["dns", "--objects"])
        .arg(&file)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("mcsd:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("document 2") && lines[0].contains("not-an-ip"),
        "{err}"
    );
}

#[test]
fn bad_flags_fail_with_one_clear_line() {
    let out = Command::new(BIN)
        .args(["dns", "--objects", "/dev/null", "--ttl", "99999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().next().unwrap_or("").contains("--ttl"), "{err}");
}
