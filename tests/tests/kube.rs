//! What only real clusters show: mcsd behind the real CoreDNS, mcsd's answers beside CoreDNS's
//! own MCS support (`kubernetes … { multicluster clusterset.local }`) over the same objects, and
//! the admission policies that confine mcsd's own token, which only kube-apiserver enforces.
//! `tests/kube/test.sh` runs these against the clusters of `tests/kube/up.sh`; in the sandbox
//! tier there is no CoreDNS, so `cargo test` lists them as ignored, with that reason.

use std::{net::SocketAddr, time::Duration};

use mcsd_tests::{
    Answer, ClusterSet, WAIT, dig, dig_raw, dig_with, eventually,
    fixtures::{export_when_ready, exported, resolved},
};

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

/// The MCS EndpointSlices for `service` in cluster `i` hold a ready endpoint: every write for
/// that import is done.
async fn imported_with_endpoints(set: &ClusterSet, i: usize, ns: &str, service: &str) {
    eventually(
        &format!("{service}'s MCS slices with endpoints in cluster {i}"),
        WAIT,
        || async {
            let out = set.kubectl(
                i,
                &[
                    "get",
                    "endpointslices",
                    "-n",
                    ns,
                    "-l",
                    &format!("multicluster.kubernetes.io/service-name={service}"),
                    "-o",
                    "jsonpath={.items[*].endpoints[*].addresses[0]}",
                ],
            );
            (!out.trim().is_empty()).then_some(())
        },
    )
    .await;
}

/// kube-apiserver frozen (SIGSTOP: every request hangs) and then killed (SIGKILL; restarted with
/// its data): the importing cluster's mcsd keeps answering from memory throughout, catches up when
/// its API server returns, and a peer's restart costs no rewrite of what is already right. (A real
/// kube-apiserver restarted over the same etcd lets watches resume from their resourceVersion:
/// no re-list. The re-list after a 410 is the sandbox's `hardening.rs` test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes only (kube-apiserver signalled): tests/kube/test.sh runs it"]
async fn frozen_and_killed_api_servers_leave_dns_answering_and_mcsd_catches_up() {
    let ns = "apiserver-faults";
    let set = real(3, ns).await;
    set.apply(0, &exported(ns, "one"));
    let one = format!("one.{ns}.svc.clusterset.local");
    let dns_b = set.members[1].dns;
    let ip = resolved(dns_b, &one).await;
    imported_with_endpoints(&set, 1, ns, "one").await;

    // cluster-b's own API server hangs: its mcsd's watches stall; DNS answers from memory.
    set.members[1].signal("kube-apiserver", "STOP");
    set.apply(0, &exported(ns, "two"));
    for _ in 0..20 {
        assert_eq!(
            dig(&dns_b, &one, "A"),
            Answer::ok(&[&ip]),
            "while cluster-b's API server hangs"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    set.members[1].signal("kube-apiserver", "CONT");
    // It catches up: what was exported meanwhile arrives.
    resolved(dns_b, &format!("two.{ns}.svc.clusterset.local")).await;
    imported_with_endpoints(&set, 1, ns, "two").await;

    // cluster-a's API server is killed and comes back with its data (etcd kept it): its peers
    // keep its services (a blip is far inside the grace period) and resume following it.
    let before = set.members[1].writes().await;
    set.members[0].signal("kube-apiserver", "KILL");
    // Until it serves again (tests/kube/up.sh restarts it), cluster-b answers from memory.
    let kubeconfig_a = set.members[0].kubeconfig.clone();
    eventually("cluster-a's API server to serve again", WAIT, || {
        assert_eq!(
            dig(&dns_b, &one, "A"),
            Answer::ok(&[&ip]),
            "while cluster-a's API server is down"
        );
        let ready = mcsd_tests::real::kubectl_out(&kubeconfig_a, &["get", "--raw", "/readyz"])
            .is_ok_and(|s| s.trim() == "ok");
        async move { ready.then_some(()) }
    })
    .await;
    // A new export after the restart reaches cluster-b (cluster-b follows cluster-a again), and is
    // all cluster-b wrote meanwhile: resuming cost no rewrite.
    let before_c = set.members[2].writes().await;
    export_when_ready(&set, 0, ns, "three").await;
    resolved(dns_b, &format!("three.{ns}.svc.clusterset.local")).await;
    imported_with_endpoints(&set, 1, ns, "three").await;
    imported_with_endpoints(&set, 2, ns, "three").await;
    assert_eq!(
        set.members[1].writes_since(&before).await,
        set.members[2].writes_since(&before_c).await,
        "cluster-b wrote more than cluster-c, which only imported `three`: the re-list rewrote something"
    );
    set.stop().await;
}

/// mcsd killed (SIGKILL, no goodbye: its Lease is left to expire) and started again on the same
/// addresses: from its first answer it never says NXDOMAIN for a name it has not loaded yet, and
/// once it leads it writes nothing for the imports that are already right (`mcsd_writers_converged`
/// says when its first pass is done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes only (mcsd killed): tests/kube/test.sh runs it"]
async fn a_killed_mcsd_never_answers_nxdomain_and_rewrites_nothing_that_is_right() {
    const SERVICES: usize = 20;
    let ns = "mcsd-restart";
    let set = real(3, ns).await;
    let all: String = (0..SERVICES).map(|i| exported(ns, &format!("svc-{i}"))).collect();
    set.apply(0, &all);
    let dns_b = set.members[1].dns;
    let mut ips = Vec::new();
    for i in 0..SERVICES {
        ips.push(resolved(dns_b, &format!("svc-{i}.{ns}.svc.clusterset.local")).await);
        imported_with_endpoints(&set, 1, ns, &format!("svc-{i}")).await;
    }
    set.members[1].signal("mcsd", "KILL");
    // From its first answer on: the right address, or SERVFAIL while it loads; never NXDOMAIN.
    let probe = format!("svc-7.{ns}.svc.clusterset.local");
    let mut seen = std::collections::BTreeSet::new();
    eventually("the restarted mcsd to answer", WAIT, || {
        let a = dig(&dns_b, &probe, "A");
        assert_ne!(
            a.status, "NXDOMAIN",
            "a restarted mcsd must not deny a name it has not loaded"
        );
        seen.insert(a.status.clone());
        async move { (a.status == "NOERROR").then_some(a) }
    })
    .await;
    for (i, ip) in ips.iter().enumerate() {
        let name = format!("svc-{i}.{ns}.svc.clusterset.local");
        assert_eq!(dig(&dns_b, &name, "A"), Answer::ok(&[ip]), "{name}");
    }
    // Once it leads (the killed one's Lease has to expire first) and has worked through its first
    // pass over every service, it has written nothing: all twenty were right.
    eventually("the restarted mcsd's first pass", WAIT, || async {
        set.members[1].converged().await.then_some(())
    })
    .await;
    let written = set.members[1].writes().await;
    assert!(
        written.values().all(|n| *n == 0),
        "the restarted mcsd rewrote imports that were right (it answered {seen:?} while loading): {written:?}"
    );
    set.stop().await;
}

/// A peer's ServiceAccount deleted in the exporting cluster revokes the token the importing
/// cluster holds: the importer names the problem in one line (metrics, `mcsd why`) and keeps the
/// endpoints (inside the grace period); a renewed token in the peer Secret takes over live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes only (ServiceAccount token revoked): tests/kube/test.sh runs it"]
async fn a_revoked_peer_token_is_named_in_one_line_and_a_renewed_one_takes_over() {
    let ns = "revoked";
    let set = real(3, ns).await;
    set.apply(0, &exported(ns, "one"));
    let one = format!("one.{ns}.svc.clusterset.local");
    let dns_b = set.members[1].dns;
    let ip = resolved(dns_b, &one).await;
    // The identity cluster-b's credential for cluster-a is a token of: `mcsd-peer` as up.sh
    // peers the clusters, `mcsd-peer-cluster-b` once `mcsd join` has (join.rs).
    let identity = |importer: &mcsd_tests::Member| {
        let account =
            mcsd_tests::peer_secret_annotation(&importer.kubeconfig, "cluster-a", "service-account");
        match account.split_once('/') {
            Some((_, name)) => name.to_string(),
            None => "mcsd-peer".to_string(),
        }
    };
    let revoked = identity(&set.members[1]);
    set.kubectl(0, &["delete", "serviceaccount", &revoked, "-n", "mcsd-system"]);
    let problem = eventually(
        "cluster-b to name the revoked credential",
        Duration::from_secs(90),
        || async {
            mcsd_tests::admin_get(set.members[1].admin, "/metrics")
                .await
                .lines()
                .find(|l| {
                    l.starts_with("mcsd_peer_problem_info{")
                        && l.contains("peer=\"cluster-a\"")
                        && l.contains("401")
                })
                .map(str::to_string)
        },
    )
    .await;
    assert!(
        problem.contains("peer-cluster-a"),
        "the line names the Secret to renew: {problem}"
    );
    assert_eq!(
        dig(&dns_b, &one, "A"),
        Answer::ok(&[&ip]),
        "kept through the grace period"
    );
    let why = set.why(1, &one, &[]);
    assert!(why.contains("401"), "{why}");

    // Renewed as a user renews it: the identity again (its bindings name it, and stay), a new
    // token, the peer Secret updated in every cluster that held the revoked one.
    let holders: Vec<usize> = (1..set.members.len())
        .filter(|&i| identity(&set.members[i]) == revoked)
        .collect();
    // With its configuration saved, as `kubectl apply -k manifests/` made it: a later apply of the
    // manifests (the Pod Security story's dry run) then has nothing to warn about.
    set.kubectl(
        0,
        &[
            "create",
            "serviceaccount",
            &revoked,
            "-n",
            "mcsd-system",
            "--save-config",
        ],
    );
    let token = set.kubectl(
        0,
        &["create", "token", &revoked, "-n", "mcsd-system", "--duration=48h"],
    );
    for &importer in &holders {
        renew_peer_token(&set, importer, "cluster-a", token.trim());
    }
    for importer in &set.members[1..] {
        eventually("the problem to clear", Duration::from_secs(60), || async {
            let metrics = mcsd_tests::admin_get(importer.admin, "/metrics").await;
            let cleared = !metrics
                .lines()
                .any(|l| l.starts_with("mcsd_peer_problem_info{") && l.contains("peer=\"cluster-a\""));
            cleared.then_some(())
        })
        .await;
    }
    set.apply(0, &exported(ns, "two"));
    resolved(dns_b, &format!("two.{ns}.svc.clusterset.local")).await;
    set.stop().await;
}

/// Replaces the token in cluster `importer`'s peer Secret for `peer` with `token`, as a user
/// renews an expired or revoked credential.
fn renew_peer_token(set: &ClusterSet, importer: usize, peer: &str, token: &str) {
    let secret = format!("peer-{peer}");
    let old = mcsd_tests::peer_secret_kubeconfig(&set.members[importer].kubeconfig, peer);
    let renewed: Vec<String> = old
        .lines()
        .map(|l| match l.trim_start().strip_prefix("token: ") {
            Some(_) => format!("{}token: {token}", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        })
        .collect();
    set.kubectl(
        importer,
        &[
            "patch",
            "secret",
            &secret,
            "-n",
            "mcsd-system",
            "-p",
            &format!(
                r#"{{"data":{{"kubeconfig":"{}"}}}}"#,
                base64_encode(&renewed.join("\n"))
            ),
        ],
    );
}

/// The Lease `mcsd` holder in cluster `i` (empty when none).
fn lease_holder(set: &ClusterSet, i: usize) -> String {
    set.kubectl(
        i,
        &[
            "get",
            "lease",
            "mcsd",
            "-n",
            "mcsd-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    )
}

/// A second mcsd replica of cluster `i`, as the Deployment's second pod: the same flags as the
/// tier's own (`DIR/<cluster>/mcsd.args`), its own DNS and admin ports. Killed when dropped.
struct Replica {
    child: std::process::Child,
    dns: SocketAddr,
    admin: SocketAddr,
}

impl Replica {
    fn start(set: &ClusterSet, i: usize, pod: &str) -> Self {
        let member = &set.members[i];
        let dir = member.real_dir.as_ref().unwrap();
        let (args, dns, admin) = member.replica_args();
        let log = std::fs::File::create(dir.join(format!("{pod}.log"))).unwrap();
        let child = std::process::Command::new(mcsd_tests::mcsd_binary())
            .args(&args)
            .env("MCSD_POD_NAME", pod)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child, dns, admin }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two replicas in cluster-a, as the Deployment runs them: one leads (Lease `mcsd`). The leader
/// killed without giving the Lease up, the other takes over within the lease duration (15 s),
/// both answer DNS throughout, and exports keep flowing to cluster-b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes only (a second mcsd replica, one killed): tests/kube/test.sh runs it"]
async fn killing_the_leader_hands_over_within_the_lease_and_dns_answers_throughout() {
    let ns = "ha";
    let set = real(2, ns).await;
    let replica = Replica::start(&set, 0, "mcsd-1");
    eventually("the second replica to be ready", WAIT, || async {
        mcsd_tests::real::http_status(replica.admin, "/readyz")
            .await
            .filter(|s| *s == 200)
    })
    .await;
    set.apply(0, &exported(ns, "one"));
    let one = format!("one.{ns}.svc.clusterset.local");
    let ip_a = resolved(set.members[0].dns, &one).await;
    resolved(set.members[1].dns, &one).await;
    let leader = lease_holder(&set, 0);
    assert!(leader.starts_with("mcsd-0-"), "the first replica leads: {leader}");

    let killed = std::time::Instant::now();
    set.members[0].signal("mcsd", "KILL");
    // The survivor answers throughout; a new holder takes the Lease once it expires.
    let new_leader = eventually("another replica to lead", Duration::from_secs(30), || {
        assert_eq!(
            dig(&replica.dns, &one, "A"),
            Answer::ok(&[&ip_a]),
            "the survivor's answer"
        );
        let holder = lease_holder(&set, 0);
        let taken = !holder.is_empty() && holder != leader;
        async move { taken.then_some(holder) }
    })
    .await;
    let handover = killed.elapsed();
    assert!(
        handover <= Duration::from_secs(15 + 3),
        "{new_leader} took {handover:?} to lead (lease 15 s)"
    );
    // The new leader writes: a new export reaches cluster-b.
    set.apply(0, &exported(ns, "two"));
    resolved(set.members[1].dns, &format!("two.{ns}.svc.clusterset.local")).await;
    drop(replica);
    // With the second replica gone, the first (restarted by the tier) leads again.
    eventually(
        "cluster-a's own replica to lead again",
        Duration::from_secs(30),
        || async { lease_holder(&set, 0).starts_with("mcsd-0-").then_some(()) },
    )
    .await;
    set.stop().await;
}

/// Peers come and go with their Secrets, on real clusters as the README says: cluster-a's
/// `peer-cluster-c` Secret deleted, cluster-c's exports leave cluster-a at once (no grace period
/// for a peer removed on purpose); applied again, they return; changed to a token the API server
/// rejects, the peer is refused with a line that says 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes only (peer Secrets of the real tier): tests/kube/test.sh runs it"]
async fn a_peer_secret_deleted_added_and_changed_takes_effect_without_a_restart() {
    let ns = "secrets";
    let set = real(3, ns).await;
    set.apply(2, &exported(ns, "from-c"));
    let name = format!("from-c.{ns}.svc.clusterset.local");
    let dns_a = set.members[0].dns;
    resolved(dns_a, &name).await;
    let saved = set.kubectl(
        0,
        &[
            "get",
            "secret",
            "peer-cluster-c",
            "-n",
            "mcsd-system",
            "-o",
            "yaml",
        ],
    );
    let saved: serde_json::Value = {
        let mut v: serde_json::Value = yaml_to_json(&saved);
        let meta = v["metadata"].as_object_mut().unwrap();
        for field in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "annotations",
        ] {
            meta.remove(field);
        }
        v
    };

    set.kubectl(0, &["delete", "secret", "peer-cluster-c", "-n", "mcsd-system"]);
    eventually("cluster-c's export to leave cluster-a", WAIT, || async {
        (dig(&dns_a, &name, "A").status == "NXDOMAIN").then_some(())
    })
    .await;

    // It returns (with a new clusterset IP: the import, and with it its derived Service, was
    // deleted when the peer went).
    set.apply(0, &saved.to_string());
    resolved(dns_a, &name).await;

    let mut broken = saved.clone();
    let kubeconfig = base64_decode(broken["data"]["kubeconfig"].as_str().unwrap());
    let token_line = kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with("token: "))
        .unwrap();
    let bad = kubeconfig.replace(token_line, "    token: not-a-token");
    broken["data"]["kubeconfig"] = base64_encode(&bad).into();
    set.apply(0, &broken.to_string());
    eventually("cluster-c refused for its credentials", WAIT, || async {
        mcsd_tests::admin_get(set.members[0].admin, "/metrics")
            .await
            .lines()
            .any(|l| {
                l.starts_with("mcsd_peer_problem_info{")
                    && l.contains("peer=\"cluster-c\"")
                    && l.contains("401")
            })
            .then_some(())
    })
    .await;
    set.apply(0, &saved.to_string());
    resolved(dns_a, &name).await;
    set.stop().await;
}

fn yaml_to_json(text: &str) -> serde_json::Value {
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    serde_json::to_value(yaml).unwrap()
}

fn base64_decode(text: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).unwrap()).unwrap()
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// mcsd's own token (its ServiceAccount, which the ClusterRole lets write Services and
/// EndpointSlices anywhere) confined by `manifests/admission.yaml`, enforced by kube-apiserver:
/// every write to what mcsd did not make is refused with the rule that refused it, while mcsd's
/// own flow goes through (here an export imported in both clusters; every other real-tier test
/// runs with the policies in place too). Removing the policies is not mcsd's to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes only (admission policies): tests/kube/test.sh runs it"]
async fn mcsd_own_token_may_write_only_what_mcsd_makes() {
    let ns = "confined";
    let set = real(2, ns).await;
    export_when_ready(&set, 0, ns, "one").await;
    resolved(set.members[1].dns, &format!("one.{ns}.svc.clusterset.local")).await;
    imported_with_endpoints(&set, 0, ns, "one").await;
    set.apply(
        0,
        "apiVersion: v1\nkind: Service\nmetadata: {name: victim, namespace: kube-system}\nspec: {ports: [{port: 443}]}\n",
    );
    let as_mcsd = set.kubeconfig_as(0, "mcsd-system", "mcsd");
    let refused = |args: &[&str], rule: &str| {
        let stderr = mcsd_tests::kubectl_refused(&as_mcsd, args);
        assert!(
            stderr.contains("denied request") && stderr.contains(rule),
            "kubectl {} as mcsd: refused, but not by \"{rule}\": {stderr}",
            args.join(" ")
        );
    };
    let refused_create = |file: &str, yaml: &str, rule: &str| {
        let path = set.write(file, yaml);
        refused(&["create", "-f", path.to_str().unwrap()], rule);
    };
    let hijack = r#"{"spec":{"selector":{"app":"evil"}}}"#;
    let services = "ValidatingAdmissionPolicy 'mcsd-derived-services'";
    let slices = "ValidatingAdmissionPolicy 'mcsd-endpointslices'";
    // A user's Service, one in kube-system, and deleting either.
    for (namespace, name) in [(ns, "one"), ("kube-system", "victim")] {
        refused(
            &[
                "patch",
                "service",
                name,
                "-n",
                namespace,
                "--type=merge",
                "-p",
                hijack,
            ],
            services,
        );
        refused(&["delete", "service", name, "-n", namespace], "is not one");
    }
    // A Service that is not a derived one, and a derived-looking one that would route to pods.
    refused(
        &["create", "service", "clusterip", "evil", "-n", ns, "--tcp=80"],
        "is not one",
    );
    let selecting = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: derived-0123456789, namespace: {ns}, labels: {{mcsd.io/derived-from: one}}}}\nspec: {{selector: {{app: one}}, ports: [{{port: 80}}]}}\n"
    );
    refused_create("selecting.yaml", &selecting, "selector-less ClusterIP");
    // A derived-looking Service mcsd did not make (no label): not its to change.
    set.apply(
        0,
        &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: derived-0123456789, namespace: {ns}}}\nspec: {{ports: [{{port: 80}}]}}\n"),
    );
    refused(
        &[
            "label",
            "service",
            "derived-0123456789",
            "-n",
            ns,
            "mcsd.io/derived-from=one",
        ],
        "is not labelled mcsd.io/derived-from",
    );
    // The user's Service's own slice (the EndpointSlice controller's), and a slice of mcsd's kind
    // that would feed the user's Service.
    let own_slice = set.kubectl(
        0,
        &[
            "get",
            "endpointslices",
            "-n",
            ns,
            "-l",
            "kubernetes.io/service-name=one",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    assert!(!own_slice.trim().is_empty(), "one has its own EndpointSlice");
    refused(
        &["label", "endpointslice", own_slice.trim(), "-n", ns, "evil=yes"],
        "is not managed-by mcsd.io",
    );
    refused(&["delete", "endpointslice", own_slice.trim(), "-n", ns], slices);
    let feeding = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: evil, namespace: {ns}, labels: {{kubernetes.io/service-name: one, endpointslice.kubernetes.io/managed-by: mcsd.io}}}}\naddressType: IPv4\nendpoints: [{{addresses: [10.160.9.9]}}]\n"
    );
    refused_create("feeding.yaml", &feeding, "belong to derived Services only");
    // The policies are the administrator's: mcsd's RBAC cannot remove them.
    for policy in ["mcsd-derived-services", "mcsd-endpointslices"] {
        let stderr =
            mcsd_tests::kubectl_refused(&as_mcsd, &["delete", "validatingadmissionpolicybinding", policy]);
        assert!(stderr.contains("forbidden"), "{stderr}");
    }
    // Meanwhile mcsd's own writes pass: the import is in cluster-b with its derived Service.
    imported_with_endpoints(&set, 1, ns, "one").await;
    set.kubectl(0, &["delete", "service", "victim", "-n", "kube-system"]);
    set.stop().await;
}

/// The install manifests pass the API server's own checks as they are: a server-side dry run of
/// `kubectl apply -k manifests/` is admitted without a single warning, so the Deployment meets
/// the `restricted` Pod Security level that `mcsd-system` enforces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Kubernetes only (Pod Security admission): tests/kube/test.sh runs it"]
async fn the_manifests_are_admitted_without_a_warning_under_restricted_pod_security() {
    let set = real(1, "podsecurity").await;
    let manifests = mcsd_tests::repo_root().join("manifests");
    let out = mcsd_tests::kubectl_output(
        &set.members[0].kubeconfig,
        &["apply", "-k", manifests.to_str().unwrap(), "--dry-run=server"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("Warning"), "{stderr}");
    let enforce = set.kubectl(
        0,
        &[
            "get",
            "namespace",
            "mcsd-system",
            "-o",
            r"jsonpath={.metadata.labels.pod-security\.kubernetes\.io/enforce}",
        ],
    );
    assert_eq!(enforce.trim(), "restricted");
    set.stop().await;
}
