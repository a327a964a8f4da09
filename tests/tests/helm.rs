//! mcsd installed as an operator installs it, on real clusters (`tests/kube/up.sh --install
//! helm`): `helm install mcsd manifests/chart` in each cluster, the release's two pods running
//! mcsd in-cluster with their ServiceAccount's token, CoreDNS forwarding `clusterset.local` to the
//! `mcsd-dns` Service, and the clusters joined with `mcsd join`. The ClusterSet flow runs there
//! too (`clusterset.rs`, on the same tier); the story here is the upgrade: new CRDs applied as
//! docs/crds.md says, then `helm upgrade` to a chart with a new flag, one cluster after another,
//! while a probe asks every cluster's DNS (UDP and TCP, through CoreDNS) for an imported name.
//! No query may go unanswered or come back NXDOMAIN, and every import must stay as it was.
//!
//! Runs only on that tier (there is no sandbox Helm): `tests/kube/test.sh` finds this file by
//! `ClusterSet::installed_with_helm`.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use mcsd_tests::{
    ClusterSet, WAIT, eventually,
    fixtures::{exported, resolved},
    kubectl, mcsd_pods, succeeded,
};

/// How long the probe waits for one answer (CoreDNS's own forward gives up after 5 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// One DNS question to `server` for `name`'s A records, over TCP or UDP: the answer's code and
/// its addresses with their TTLs, or why there was none.
fn ask(
    server: SocketAddr,
    name: &str,
    tcp: bool,
    id: u16,
) -> Result<(ResponseCode, Vec<(Ipv4Addr, u32)>), String> {
    let mut query = Message::query();
    query.metadata.id = id;
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let bytes = query.to_vec().unwrap();
    let reply = if tcp {
        let mut stream = std::net::TcpStream::connect_timeout(&server, ANSWER_WITHIN)
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).map_err(|e| format!("send: {e}"))?;
        let mut length = [0u8; 2];
        stream
            .read_exact(&mut length)
            .map_err(|e| format!("no answer: {e}"))?;
        let mut reply = vec![0u8; u16::from_be_bytes(length) as usize];
        stream
            .read_exact(&mut reply)
            .map_err(|e| format!("short answer: {e}"))?;
        reply
    } else {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
        socket.send_to(&bytes, server).map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 4096];
        loop {
            let (n, _) = socket
                .recv_from(&mut buf)
                .map_err(|e| format!("no answer: {e}"))?;
            if Message::from_vec(&buf[..n]).is_ok_and(|m| m.metadata.id == id) {
                break buf[..n].to_vec();
            }
        }
    };
    let reply = Message::from_vec(&reply).map_err(|e| format!("unreadable answer: {e}"))?;
    let records = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((a.0, r.ttl)),
            _ => None,
        })
        .collect();
    Ok((reply.metadata.response_code, records))
}

/// What the probe saw.
#[derive(Debug, Default)]
struct Tally {
    /// Answers with the expected address, by cluster and transport.
    answered: BTreeMap<(String, &'static str), u64>,
    /// Each answer that was not the expected address (NXDOMAIN, SERVFAIL, no answer, another
    /// address): when (since the probe started), where, and what.
    failures: Vec<String>,
    nxdomain: u64,
    /// The TTLs of the answers, by cluster.
    ttls: BTreeMap<String, BTreeSet<u32>>,
    /// The slowest answer.
    slowest: Duration,
}

impl Tally {
    fn total(&self) -> u64 {
        self.answered.values().sum::<u64>() + self.failures.len() as u64
    }
}

/// Asks every cluster's DNS (CoreDNS, forwarding to the `mcsd-dns` Service) for `name`, in turn,
/// UDP and TCP alternately, until `stop`; each answer must be `expected[cluster]`.
fn probe(targets: Vec<(String, SocketAddr, Ipv4Addr)>, name: String, stop: Arc<AtomicBool>) -> Tally {
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut id: u16 = 0;
    while !stop.load(Ordering::Relaxed) {
        for (cluster, server, expected) in &targets {
            for tcp in [false, true] {
                id = id.wrapping_add(1);
                let asked = Instant::now();
                let outcome = ask(*server, &name, tcp, id);
                tally.slowest = tally.slowest.max(asked.elapsed());
                let transport = if tcp { "tcp" } else { "udp" };
                let failure = match &outcome {
                    Ok((ResponseCode::NoError, records))
                        if records.iter().all(|(ip, _)| ip == expected) && !records.is_empty() =>
                    {
                        *tally.answered.entry((cluster.clone(), transport)).or_default() += 1;
                        let ttls = tally.ttls.entry(cluster.clone()).or_default();
                        ttls.extend(records.iter().map(|(_, ttl)| *ttl));
                        None
                    }
                    Ok((ResponseCode::NXDomain, _)) => {
                        tally.nxdomain += 1;
                        Some("NXDOMAIN".to_string())
                    }
                    Ok((code, records)) => Some(format!("{code:?} {records:?}")),
                    Err(problem) => Some(problem.clone()),
                };
                if let Some(failure) = failure {
                    tally.failures.push(format!(
                        "{:.1} s {cluster} {transport}: {failure}",
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tally
}

/// A copy of `chart` (its links to `manifests/` and `crds/` followed) in `into`, as the next
/// release of it: chart version `version`, and CRDs of schema revision `revision`.
fn next_release(chart: &Path, into: &Path, version: &str, revision: &str) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy(&path, &target);
            } else {
                std::fs::copy(&path, &target).unwrap();
            }
        }
    }
    let _ = std::fs::remove_dir_all(into);
    copy(chart, into);
    let manifest = into.join("Chart.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("\nversion: 0.1.0\n"), "{text}");
    std::fs::write(
        &manifest,
        text.replace("\nversion: 0.1.0\n", &format!("\nversion: {version}\n")),
    )
    .unwrap();
    for crd in std::fs::read_dir(into.join("crds")).unwrap() {
        let path = crd.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let label = "multicluster.x-k8s.io/crd-schema-revision: '0'";
        if text.contains(label) {
            let next = format!("multicluster.x-k8s.io/crd-schema-revision: '{revision}'");
            std::fs::write(&path, text.replace(label, &next)).unwrap();
        }
    }
}

fn helm(kubeconfig: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("helm")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("helm did not run ({e}): tests/kube/build.sh builds it"));
    succeeded(&format!("helm {}", args.join(" ")), out)
}

/// The release's ready pods in `kubeconfig`'s cluster, by name.
fn release_pods(kubeconfig: &Path) -> BTreeSet<String> {
    mcsd_pods(kubeconfig).into_iter().map(|(name, _)| name).collect()
}

/// A directory removed when dropped, however the test ends.
struct Scratch(std::path::PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What an import is: the ServiceImport's uid and IPs, and its derived Service's uid.
fn import_of(kubeconfig: &Path, ns: &str) -> (String, String, String) {
    let get = |object: &str, path: &str| {
        kubectl(
            kubeconfig,
            &["get", object, "-n", ns, "-o", &format!("jsonpath={path}")],
        )
    };
    let import = get("serviceimport/hello", "{.metadata.uid} {.spec.ips}");
    let (uid, ips) = import.split_once(' ').unwrap_or((&import, ""));
    let derived = kubectl(
        kubeconfig,
        &[
            "get",
            "services",
            "-n",
            ns,
            "-l",
            "mcsd.io/derived-from=hello",
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ],
    );
    (uid.to_string(), ips.to_string(), derived)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs real clusters installed with Helm (tests/kube/up.sh --install helm): tests/kube/test.sh runs it"]
async fn helm_upgrade_to_new_crds_and_a_new_flag_keeps_every_import_and_answers_every_query() {
    let set = ClusterSet::installed_with_helm(3).await;
    let ns = "upgrade";
    set.create_namespace(ns);

    // Installed: every release deployed, its notes naming the CoreDNS stub.
    let mut revisions = Vec::new();
    for m in &set.members {
        let release = m.helm_release.as_deref().unwrap();
        let status: serde_json::Value =
            serde_json::from_str(&helm(&m.kubeconfig, &["status", release, "-o", "json"])).unwrap();
        assert_eq!(status["info"]["status"], "deployed", "{}: {status}", m.name);
        let notes = status["info"]["notes"].as_str().unwrap_or_default();
        assert!(
            notes.contains("clusterset.local:53 {"),
            "{}: the notes give the CoreDNS stub: {notes}",
            m.name
        );
        revisions.push(status["version"].as_i64().unwrap());
    }

    // hello exported from cluster-a, imported and answered everywhere through the cluster DNS.
    set.apply(0, &exported(ns, "hello"));
    let name = format!("hello.{ns}.svc.clusterset.local.");
    let mut targets = Vec::new();
    let mut imports = Vec::new();
    for m in &set.members {
        let server = m.cluster_dns.expect("a real cluster's DNS");
        let ip: Ipv4Addr = resolved(server, &name).await.parse().unwrap();
        targets.push((m.name.clone(), server, ip));
        imports.push(import_of(&m.kubeconfig, ns));
    }
    let pods_before: Vec<BTreeSet<String>> =
        set.members.iter().map(|m| release_pods(&m.kubeconfig)).collect();
    // The new flag: a TTL other than the one answered now (the default 5, or what an earlier run
    // of this story on the same clusters set).
    let (_, answer) = ask(targets[0].1, &name, false, 1).unwrap();
    let ttl = if answer.first().map(|(_, ttl)| *ttl) == Some(7) {
        8
    } else {
        7
    };

    // The probe asks every cluster throughout the upgrade.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (targets, name, stop) = (targets.clone(), name.clone(), stop.clone());
        std::thread::spawn(move || probe(targets, name, stop))
    };

    // The next release: a new chart version whose CRDs are a new schema revision, applied first
    // (Helm never upgrades CRDs: docs/crds.md), then `helm upgrade` with a new flag, cluster after
    // cluster, as an operator rolls out.
    let scratch = Scratch(std::env::temp_dir().join(format!("mcsd-chart-next-{}", std::process::id())));
    let chart = scratch.0.clone();
    next_release(
        &mcsd_tests::repo_root().join("manifests/chart"),
        &chart,
        "0.1.1",
        "1",
    );
    let started = Instant::now();
    let mut steps = Vec::new();
    for m in &set.members {
        let release = m.helm_release.as_deref().unwrap();
        kubectl(
            &m.kubeconfig,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                chart.join("crds").to_str().unwrap(),
            ],
        );
        helm(
            &m.kubeconfig,
            &[
                "upgrade",
                release,
                chart.to_str().unwrap(),
                "--reuse-values",
                "--set",
                &format!("extraArgs={{--ttl={ttl}}}"),
            ],
        );
        kubectl(
            &m.kubeconfig,
            &[
                "rollout",
                "status",
                "deployment/mcsd",
                "-n",
                "mcsd-system",
                "--timeout=180s",
            ],
        );
        steps.push(format!(
            "{} upgraded at {:.1} s",
            m.name,
            started.elapsed().as_secs_f64()
        ));
    }
    // The new flag is in force everywhere once every cluster answers with the new TTL.
    for (cluster, server, _) in &targets {
        eventually(
            &format!("{cluster} to answer with TTL {ttl} (--ttl={ttl})"),
            WAIT,
            || async {
                let answer = ask(*server, &name, false, 1).ok()?;
                (!answer.1.is_empty() && answer.1.iter().all(|(_, t)| *t == ttl)).then_some(())
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = prober.join().unwrap();
    drop(scratch);
    // What the run measured, for whoever reads the test's output (`--nocapture`).
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "helm upgrade of {} clusters: {}; probe: {} queries ({:?}), {} NXDOMAIN, {} other failures, slowest answer {:?}, TTLs {:?}",
            set.members.len(),
            steps.join(", "),
            tally.total(),
            tally.answered,
            tally.nxdomain,
            tally.failures.len(),
            tally.slowest,
            tally.ttls
        );
    }

    for (cluster, _, _) in &targets {
        for transport in ["udp", "tcp"] {
            assert!(
                tally
                    .answered
                    .get(&(cluster.clone(), transport))
                    .is_some_and(|n| *n > 0),
                "the probe asked {cluster} over {transport} throughout: {:?}",
                tally.answered
            );
        }
    }
    assert_eq!(
        tally.nxdomain, 0,
        "NXDOMAIN during the upgrade ({steps:?}): {:#?}",
        tally.failures
    );
    assert!(
        tally.failures.is_empty(),
        "queries not answered with the import's address during the upgrade ({steps:?}): {:#?}",
        tally.failures
    );
    for (i, m) in set.members.iter().enumerate() {
        // Every import is the same object with the same address, its derived Service too.
        assert_eq!(
            import_of(&m.kubeconfig, ns),
            imports[i],
            "{}: the import changed",
            m.name
        );
        // The release is at its next revision, with new pods.
        let release = m.helm_release.as_deref().unwrap();
        let status: serde_json::Value =
            serde_json::from_str(&helm(&m.kubeconfig, &["status", release, "-o", "json"])).unwrap();
        assert_eq!(status["info"]["status"], "deployed", "{}: {status}", m.name);
        assert_eq!(
            status["version"].as_i64().unwrap(),
            revisions[i] + 1,
            "{}",
            m.name
        );
        let list: serde_json::Value =
            serde_json::from_str(&helm(&m.kubeconfig, &["list", "-o", "json"])).unwrap();
        assert_eq!(list[0]["chart"], "mcsd-0.1.1", "{}: {list}", m.name);
        let pods = release_pods(&m.kubeconfig);
        assert!(
            pods.is_disjoint(&pods_before[i]),
            "{}: the upgrade replaced every pod: before {:?}, after {pods:?}",
            m.name,
            pods_before[i]
        );
        // The CRDs are the new revision's.
        for crd in ["serviceexports", "serviceimports"] {
            let revision = kubectl(
                &m.kubeconfig,
                &[
                    "get",
                    "crd",
                    &format!("{crd}.multicluster.x-k8s.io"),
                    "-o",
                    r"jsonpath={.metadata.labels.multicluster\.x-k8s\.io/crd-schema-revision}",
                ],
            );
            assert_eq!(revision.trim(), "1", "{}: {crd}", m.name);
        }
    }
    set.stop().await;
}
