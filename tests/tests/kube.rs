//! What only real clusters show: mcsd behind the real CoreDNS, and mcsd's answers beside CoreDNS's
//! own MCS support (`kubernetes … { multicluster clusterset.local }`) over the same objects.
//! `tests/kube/test.sh` runs these against the clusters of `tests/kube/up.sh`; in the sandbox
//! tier there is no CoreDNS, so `cargo test` lists them as ignored, with that reason.

use std::{net::SocketAddr, time::Duration};

use mcsd_tests::{Answer, ClusterSet, dig, dig_raw, dig_with, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// Services in `ns` of one exporting cluster: `web` (ClusterSetIP, dual-stack, a TCP and a UDP
/// port, a Deployment of 2), `db` (headless, a StatefulSet of 2) and, with `big`, `big`
/// (headless, 60 pods: its AAAA answer does not fit a 1232-byte UDP reply).
fn workloads(ns: &str, big: bool) -> String {
    let mut yaml = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ipFamilyPolicy: PreferDualStack
  ports: [{{name: http, port: 80, protocol: TCP}}, {{name: dns, port: 53, protocol: UDP}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: nginx}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {ns}}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ipFamilyPolicy: PreferDualStack
  ports: [{{name: pg, port: 5432}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {ns}}}
spec:
  serviceName: db
  replicas: 2
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec: {{containers: [{{name: db, image: postgres}}]}}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {{name: web, namespace: {ns}}}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {{name: db, namespace: {ns}}}
"#
    );
    if big {
        yaml.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata: {{name: big, namespace: {ns}}}
spec:
  clusterIP: None
  selector: {{app: big}}
  ipFamilyPolicy: PreferDualStack
  ports: [{{name: http, port: 80}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: big, namespace: {ns}}}
spec:
  replicas: 60
  selector: {{matchLabels: {{app: big}}}}
  template:
    metadata: {{labels: {{app: big}}}}
    spec: {{containers: [{{name: big, image: nginx}}]}}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {{name: big, namespace: {ns}}}
"#
        ));
    }
    yaml
}

/// The real ClusterSet with namespace `ns` in its first `n` clusters; fails with the one line that
/// says how to get one when the tests are not pointed at real clusters.
async fn real(n: usize, ns: &str) -> ClusterSet {
    assert!(
        mcsd_tests::real_clusterset().is_some(),
        "this test needs real clusters: run tests/kube/test.sh (or point {} at tests/kube/up.sh's directory)",
        mcsd_tests::CLUSTERSET_ENV
    );
    ClusterSet::with_namespace(n, ns).await
}

/// The header flags of `dig`'s reply (`qr aa tc …`) to `args` against `server`.
fn header_flags(server: &SocketAddr, args: &[&str]) -> String {
    let text = dig_raw(server, &[&["+noall", "+comments"], args].concat());
    text.split("flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or("")
        .to_string()
}

/// The names a pod of the importing cluster would ask about, with their types.
fn questions(ns: &str) -> Vec<(String, &'static str)> {
    let z = format!("{ns}.svc.clusterset.local");
    [
        (format!("web.{z}"), "A"),
        (format!("web.{z}"), "AAAA"),
        (format!("web.{z}"), "SRV"),
        (format!("_http._tcp.web.{z}"), "SRV"),
        (format!("_dns._udp.web.{z}"), "SRV"),
        (format!("_nope._tcp.web.{z}"), "SRV"),
        (format!("web.{z}"), "TXT"),
        (format!("db.{z}"), "A"),
        (format!("db.{z}"), "AAAA"),
        (format!("db.{z}"), "SRV"),
        (format!("_pg._tcp.db.{z}"), "SRV"),
        (format!("db-0.cluster-a.db.{z}"), "A"),
        (format!("db-1.cluster-a.db.{z}"), "AAAA"),
        (format!("db-0.cluster-c.db.{z}"), "A"),
        (format!("db-9.cluster-a.db.{z}"), "A"),
        (format!("nope.{z}"), "A"),
        (z.clone(), "A"),
        ("no-such-namespace.svc.clusterset.local".to_string(), "A"),
        ("dns-version.clusterset.local".to_string(), "TXT"),
        ("clusterset.local".to_string(), "NS"),
        ("clusterset.local".to_string(), "SOA"),
    ]
    .into()
}

/// A `dig` through the cluster DNS (CoreDNS with the README's forward stub) gets what mcsd itself
/// answers, over UDP and TCP: addresses, SRV, NXDOMAIN and NODATA; an answer too big for UDP
/// comes back truncated over UDP and whole over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes only (CoreDNS): tests/kube/test.sh runs it"]
async fn the_cluster_dns_forwards_clusterset_names_to_mcsd_over_udp_and_tcp() {
    let ns = "forwarded";
    let set = real(3, ns).await;
    set.apply(0, &workloads(ns, true));
    set.apply(2, &workloads(ns, false));
    let importer = &set.members[1];
    let mcsd = importer.dns;
    let coredns = importer.cluster_dns.expect("real clusters have a cluster DNS");
    let big = format!("big.{ns}.svc.clusterset.local");
    eventually("cluster-b's mcsd to answer every service", WAIT, || async {
        let ready = dig(&mcsd, &format!("web.{ns}.svc.clusterset.local"), "A")
            .records
            .len()
            == 1
            && dig(&mcsd, &format!("db.{ns}.svc.clusterset.local"), "A")
                .records
                .len()
                == 4
            && dig_with(&mcsd, &["+tcp"], &big, "AAAA").records.len() == 60;
        ready.then_some(())
    })
    .await;
    for (name, qtype) in questions(ns) {
        for transport in ["+notcp", "+tcp"] {
            let direct = dig_with(&mcsd, &[transport], &name, qtype);
            let forwarded = dig_with(&coredns, &[transport], &name, qtype);
            assert_eq!(
                forwarded, direct,
                "{name} {qtype} {transport}: CoreDNS forwarded something else"
            );
        }
    }
    // NXDOMAIN and NODATA are forwarded as such.
    let missing = dig_with(
        &coredns,
        &["+notcp"],
        &format!("nope.{ns}.svc.clusterset.local"),
        "A",
    );
    assert_eq!(missing.status, "NXDOMAIN");
    let nodata = dig_with(
        &coredns,
        &["+notcp"],
        &format!("web.{ns}.svc.clusterset.local"),
        "TXT",
    );
    assert_eq!((nodata.status.as_str(), nodata.records.len()), ("NOERROR", 0));
    // 60 AAAA records do not fit a 1232-byte UDP reply: truncated over UDP, whole over TCP.
    let flags = header_flags(&coredns, &["+notcp", "+ignore", "+bufsize=1232", &big, "AAAA"]);
    assert!(
        flags.split_whitespace().any(|f| f == "tc"),
        "no TC over UDP: {flags}"
    );
    let whole = dig_with(&coredns, &["+tcp"], &big, "AAAA");
    assert_eq!(whole.records.len(), 60, "{whole:?}");
    // dig's own fallback (TC, then TCP) gets it whole too.
    assert_eq!(dig_with(&coredns, &["+notcp"], &big, "AAAA").records.len(), 60);
    set.stop().await;
}

/// CoreDNS's `forward` marks an upstream down when its health probe (`. IN NS`, recursion
/// desired) goes unanswered; mcsd answers it, REFUSED, on both transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes only (CoreDNS): tests/kube/test.sh runs it"]
async fn mcsd_answers_coredns_health_probe_on_both_transports() {
    let set = real(1, "probe").await;
    let mcsd = set.members[0].dns;
    for transport in ["+notcp", "+tcp"] {
        let probe = dig_with(&mcsd, &[transport, "+rec"], ".", "NS");
        assert_eq!(probe.status, "REFUSED", "{transport}: {probe:?}");
    }
    // And the forward stub keeps using it: a name still resolves through CoreDNS.
    let coredns = set.members[0].cluster_dns.unwrap();
    let version = dig_with(&coredns, &["+notcp"], "dns-version.clusterset.local", "TXT");
    assert_eq!(version, Answer::ok(&["\"1.1.0\""]));
    set.stop().await;
}

/// mcsd and CoreDNS's `multicluster` option, over the same ServiceImports and EndpointSlices,
/// give the same answers: ClusterSetIP (dual-stack), headless with hostnames from two clusters,
/// multi-port SRV, and names that do not exist. Differences are decisions in
/// `docs/decisions.md` ("CoreDNS's multicluster option"), asserted here as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes only (CoreDNS): tests/kube/test.sh runs it"]
async fn mcsd_answers_as_coredns_multicluster_does() {
    let ns = "differential";
    let set = real(3, ns).await;
    set.apply(0, &workloads(ns, false));
    set.apply(2, &workloads(ns, false));
    let importer = &set.members[1];
    let mcsd = importer.dns;
    let reference = importer
        .reference_dns
        .expect("real clusters have the reference CoreDNS");
    let web = format!("web.{ns}.svc.clusterset.local");
    let db = format!("db.{ns}.svc.clusterset.local");
    for server in [mcsd, reference] {
        eventually("both servers to answer for both exporters", WAIT, || async {
            let ready = dig(&server, &web, "A").records.len() == 1
                && dig(&server, &db, "A").records.len() == 4
                && dig(&server, &db, "SRV").records.len() == 4;
            ready.then_some(())
        })
        .await;
    }
    let mut differences = Vec::new();
    for (name, qtype) in questions(ns) {
        if (name.as_str(), qtype) == ("clusterset.local", "NS") {
            // CoreDNS names itself `ns.dns.<zone>` only with an address of its own that is not
            // loopback (its pod IP in a cluster); bound to 127.0.0.1 here it has none and answers
            // NODATA. mcsd answers the same name CoreDNS does in a cluster (decision 14).
            let ours = dig_with(&mcsd, &["+notcp"], &name, qtype);
            assert_eq!(ours, Answer::ok(&["ns.dns.clusterset.local."]));
            continue;
        }
        let ours = comparable(dig_with(&mcsd, &["+notcp"], &name, qtype));
        let theirs = comparable(dig_with(&reference, &["+notcp"], &name, qtype));
        if ours != theirs {
            differences.push(format!("{name} {qtype}: mcsd {ours:?}, CoreDNS {theirs:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "mcsd and CoreDNS differ:\n{}",
        differences.join("\n")
    );
    set.stop().await;
}

/// An answer without what legitimately differs between two servers: the SOA serial (each
/// server's own zone generation).
fn comparable(mut answer: Answer) -> Answer {
    for record in &mut answer.records {
        // MNAME RNAME SERIAL REFRESH RETRY EXPIRE MINIMUM
        let mut fields: Vec<&str> = record.split_whitespace().collect();
        if fields.len() == 7 && fields[1].starts_with("hostmaster.") {
            fields[2] = "SERIAL";
            *record = fields.join(" ");
        }
    }
    answer
}
