//! Peers that cannot be trusted or cannot be reached: a cluster of another ClusterSet is refused
//! and its exports are left out, saying so on the imports and in the metrics; a peer whose API
//! server goes away keeps its endpoints through a short outage, loses them past the grace
//! period, and gets them back, unchanged, when it returns; peers given by Secrets come, change and
//! go live, and one whose token expires is named in one line, kept through the grace period,
//! withdrawn past it, and back without a restart once its Secret holds a fresh token.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use kube::Api;
use mcsd::{core::import::CONDITION_CLUSTERS_EXCLUDED, daemon::metrics::PeerState};
use mcsd_crds::mcs::v1beta1::ServiceImport;
use mcsd_sandbox::ClusterConfig;
use mcsd_tests::{Answer, ClusterSet, WAIT, dig, eventually};

fn hello(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: hello, namespace: {ns}}}
spec:
  clusterIP: None
  selector: {{app: hello}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: hello-0, namespace: {ns}, labels: {{app: hello}}}}
spec: {{containers: [{{name: hello, image: nginx}}]}}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {{name: hello, namespace: {ns}}}
"#
    )
}

async fn import_in(set: &ClusterSet, i: usize, ns: &str) -> Option<ServiceImport> {
    let client = set.members[i].client().await;
    Api::<ServiceImport>::namespaced(client, ns)
        .get_opt("hello")
        .await
        .unwrap()
}

/// The `ClustersExcluded` condition of cluster `i`'s import: (status, message).
async fn excluded_in(set: &ClusterSet, i: usize, ns: &str) -> Option<(String, String)> {
    let c = import_in(set, i, ns)
        .await?
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == CONDITION_CLUSTERS_EXCLUDED)?;
    Some((c.status, c.message))
}

/// Waits until cluster `i` answers `name` with `want` and its import in `demo` leaves no cluster
/// out.
async fn answers_with_none_excluded(set: &ClusterSet, i: usize, name: &str, want: &Answer) {
    let dns = set.members[i].dns;
    eventually(&format!("{want:?} from cluster {i}"), WAIT, || async {
        (dig(&dns, name, "A") == *want).then_some(())
    })
    .await;
    eventually("nothing excluded", WAIT, || async {
        excluded_in(set, i, "demo").await.filter(|(s, _)| s == "False")
    })
    .await;
}

fn pod_ip(set: &ClusterSet, i: usize, ns: &str) -> String {
    set.kubectl(
        i,
        &[
            "get",
            "pod",
            "hello-0",
            "-n",
            ns,
            "-o",
            "jsonpath={.status.podIP}",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_cluster_set_is_refused_and_its_exports_are_left_out_visibly() {
    let mut configs: Vec<ClusterConfig> = (0..3).map(ClusterConfig::nth).collect();
    configs[2].clusterset = "elsewhere".into();
    // A grace period of 20 s probes peers (and re-checks refused ones) every 2 s.
    let set = ClusterSet::sandbox_configs(configs, mcsd_tests::peer_grace(Duration::from_secs(20))).await;
    for i in 0..3 {
        set.apply(i, &mcsd_tests::fixtures::namespace("demo"));
    }
    set.apply(0, &hello("demo"));
    set.apply(2, &hello("demo"));
    let (ip_a, ip_c) = (pod_ip(&set, 0, "demo"), pod_ip(&set, 2, "demo"));
    let name = "hello.demo.svc.clusterset.local";
    // cluster-b merges cluster-a only, and says why cluster-c is missing.
    let (status, message) = eventually("ClustersExcluded=True on cluster-b's import", WAIT, || async {
        excluded_in(&set, 1, "demo").await.filter(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(status, "True");
    assert!(message.contains("cluster-c"), "{message}");
    assert!(message.contains("ClusterSet \"elsewhere\""), "{message}");
    let dns_b = set.members[1].dns;
    eventually(
        "cluster-b's answer to hold only cluster-a's pod",
        WAIT,
        || async { (dig(&dns_b, name, "A") == Answer::ok(&[&ip_a])).then_some(()) },
    )
    .await;
    assert!(!dig(&dns_b, name, "A").records.contains(&ip_c));
    // The metric and the state say so too.
    let state = set.members[1].daemon().peers.get("cluster-c").unwrap().state;
    assert!(matches!(state, PeerState::Refused(_)), "{state:?}");
    let metrics = mcsd_tests::admin_get(set.members[1].admin, "/metrics").await;
    assert!(
        metrics.contains("mcsd_peer_state{peer=\"cluster-c\",state=\"refused\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mcsd_peer_state{peer=\"cluster-a\",state=\"synced\"} 1"));
    // A followed peer is confirmed current at every probe (every 2 s here): its lag stays small.
    let lag: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("mcsd_peer_sync_lag_seconds{peer=\"cluster-a\"}")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no sync lag for cluster-a in:\n{metrics}"));
    assert!(lag < 10.0, "{metrics}");
    assert!(
        !metrics.contains("mcsd_peer_sync_lag_seconds{peer=\"cluster-c\"}"),
        "refused: never current"
    );
    // cluster-c refuses them in turn: its import holds only its own pod.
    let dns_c = set.members[2].dns;
    eventually("cluster-c's answer to hold only its own pod", WAIT, || async {
        (dig(&dns_c, name, "A") == Answer::ok(&[&ip_c])).then_some(())
    })
    .await;
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_keeps_its_endpoints_through_a_blip_and_loses_them_past_the_grace_period() {
    let grace = Duration::from_secs(4);
    let set = ClusterSet::sandbox_with(3, mcsd_tests::peer_grace(grace)).await;
    for i in 0..3 {
        set.apply(i, &mcsd_tests::fixtures::namespace("demo"));
    }
    set.apply(0, &hello("demo"));
    set.apply(1, &hello("demo"));
    let (ip_a, ip_b) = (pod_ip(&set, 0, "demo"), pod_ip(&set, 1, "demo"));
    let name = "hello.demo.svc.clusterset.local";
    let dns_c = set.members[2].dns;
    answers_with_none_excluded(&set, 2, name, &Answer::ok(&[&ip_a, &ip_b])).await;

    // A blip shorter than the grace period withdraws nothing, and writes nothing.
    let writes_before = set.members[2].daemon().writes.total();
    set.members[1].cluster().stop_api_server().await;
    let blip_end = std::time::Instant::now() + grace / 2;
    while std::time::Instant::now() < blip_end {
        assert_eq!(
            dig(&dns_c, name, "A"),
            Answer::ok(&[&ip_a, &ip_b]),
            "during the blip"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    set.members[1].cluster().start_api_server().await.unwrap();
    eventually("cluster-b to be synced again", WAIT, || async {
        (set.members[2].daemon().peers.get("cluster-b")?.state == PeerState::Synced).then_some(())
    })
    .await;
    assert_eq!(dig(&dns_c, name, "A"), Answer::ok(&[&ip_a, &ip_b]));
    assert_eq!(
        set.members[2].daemon().writes.total(),
        writes_before,
        "a blip makes no writes"
    );

    // Past the grace period, cluster-b's endpoints leave, and the import says why.
    set.members[1].cluster().stop_api_server().await;
    eventually("cluster-b's pod to leave cluster-c's answer", WAIT, || async {
        (dig(&dns_c, name, "A") == Answer::ok(&[&ip_a])).then_some(())
    })
    .await;
    let (_, message) = eventually("ClustersExcluded=True naming cluster-b", WAIT, || async {
        excluded_in(&set, 2, "demo").await.filter(|(s, _)| s == "True")
    })
    .await;
    assert!(message.contains("cluster-b: unreachable for"), "{message}");
    // `mcsd why` says since when and why. (The daemon's view excludes cluster-b first; the
    // import's condition follows with the importer's next write: wait for both.)
    let text = eventually("cluster-b left out in cluster-c's explanation", WAIT, || async {
        let text = set.why(2, name, &[]);
        (text.contains("LEFT OUT") && text.contains("ClustersExcluded=True")).then_some(text)
    })
    .await;
    for wanted in [
        "cluster-b    LEFT OUT: unreachable for",
        "[peer unreachable:",
        "ClustersExcluded=True PeersExcluded",
        "cluster-b: all of its endpoints (1 published) and ports are left out: unreachable for",
        "(published, not imported)",
    ] {
        assert!(text.contains(wanted), "{wanted:?} in:\n{text}");
    }
    // cluster-a's view is the same.
    let dns_a = set.members[0].dns;
    eventually("cluster-b's pod to leave cluster-a's answer", WAIT, || async {
        (dig(&dns_a, name, "A") == Answer::ok(&[&ip_a])).then_some(())
    })
    .await;

    // cluster-b returns: its endpoints come back once, without duplicates.
    set.members[1].cluster().start_api_server().await.unwrap();
    // cluster-b's pod back in cluster-c's answer, and the exclusion cleared.
    answers_with_none_excluded(&set, 2, name, &Answer::ok(&[&ip_a, &ip_b])).await;
    set.stop().await;
}

/// A cluster outside a ClusterSet, exporting `hello` in `demo` and running its own mcsd, that no
/// member knows yet: a member learns it from a peer Secret.
struct Outsider {
    cluster: mcsd_sandbox::Cluster,
    kubeconfig: std::path::PathBuf,
    stop: tokio_util::sync::CancellationToken,
    /// Its `hello` pod's address.
    pod_ip: String,
}

impl Outsider {
    /// The next cluster after `set`'s members, with the project's manifests, `hello`, and mcsd
    /// (peered with the members through its flags).
    async fn start(set: &ClusterSet) -> Self {
        let cluster = mcsd_sandbox::Cluster::start(ClusterConfig::nth(set.members.len()))
            .await
            .unwrap();
        let kubeconfig = std::env::temp_dir().join(format!(
            "mcsd-outsider-{}-{}.kubeconfig",
            std::process::id(),
            cluster.address().port()
        ));
        std::fs::write(&kubeconfig, cluster.kubeconfig_yaml()).unwrap();
        for manifest in ["namespace.yaml", "rbac.yaml"] {
            let path = mcsd_tests::repo_root().join("manifests").join(manifest);
            mcsd_tests::kubectl(&kubeconfig, &["apply", "-f", path.to_str().unwrap()]);
        }
        let yaml = kubeconfig.with_extension("yaml");
        std::fs::write(
            &yaml,
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: demo}}\n---\n{}",
                hello("demo")
            ),
        )
        .unwrap();
        mcsd_tests::kubectl(&kubeconfig, &["apply", "-f", yaml.to_str().unwrap()]);
        let _ = std::fs::remove_file(&yaml);
        let stop = tokio_util::sync::CancellationToken::new();
        let mut all: Vec<&mcsd_sandbox::Cluster> = set.members.iter().map(|m| m.cluster()).collect();
        all.push(&cluster);
        let mcsd = mcsd::process::sandbox::start_mcsd(&all, all.len() - 1, &Default::default(), stop.clone())
            .await
            .unwrap();
        mcsd.wait_ready(WAIT).await.unwrap();
        let pod_ip = mcsd_tests::kubectl(
            &kubeconfig,
            &[
                "get",
                "pod",
                "hello-0",
                "-n",
                "demo",
                "-o",
                "jsonpath={.status.podIP}",
            ],
        );
        Self {
            cluster,
            kubeconfig,
            stop,
            pod_ip,
        }
    }

    /// The name of the peer Secret that names it.
    fn secret_name(&self) -> String {
        format!("peer-{}", self.cluster.name())
    }

    /// The peer Secret naming it, with a kubeconfig holding `token`.
    fn secret(&self, token: &str) -> String {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {}\n  namespace: mcsd-system\n  labels: {{mcsd.io/peer: \"\"}}\ndata:\n  name: {}\n  kubeconfig: {}\n",
            self.secret_name(),
            b64(self.cluster.name()),
            b64(&self
                .cluster
                .kubeconfig_for_token("system:serviceaccount:mcsd-system:mcsd-peer", token)),
        )
    }

    /// A token of its `mcsd-peer` ServiceAccount that does not expire.
    fn token(&self) -> String {
        self.cluster
            .service_account_token("mcsd-system", "mcsd-peer")
            .unwrap()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.cluster.shutdown().await;
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_secret_added_changed_and_deleted_takes_effect_without_a_restart() {
    // cluster-a and cluster-b know each other from their flags; cluster-c is nobody's peer yet.
    let set = ClusterSet::sandbox_with_namespace(2, "demo", Default::default()).await;
    let c = Outsider::start(&set).await;
    let ip_c = c.pod_ip.clone();
    let name = "hello.demo.svc.clusterset.local";
    let dns_a = set.members[0].dns;
    assert_eq!(
        dig(&dns_a, name, "A").status,
        "NXDOMAIN",
        "cluster-c is not a peer yet"
    );

    // Added: cluster-c's export reaches cluster-a.
    set.apply(0, &c.secret(&c.token()));
    eventually("cluster-c's pod in cluster-a's answer", WAIT, || async {
        (dig(&dns_a, name, "A") == Answer::ok(&[&ip_c])).then_some(())
    })
    .await;
    assert_eq!(
        set.members[0].daemon().peers.get("cluster-c").map(|s| s.state),
        Some(PeerState::Synced)
    );
    // Changed to a token the API server rejects: the peer is refused, and says why.
    set.apply(0, &c.secret("not-a-token"));
    eventually("cluster-c refused for its credentials", WAIT, || async {
        match set.members[0].daemon().peers.get("cluster-c")?.state {
            PeerState::Refused(why) if why.contains("401") => Some(()),
            _ => None,
        }
    })
    .await;
    // Changed back to a good token: followed again.
    set.apply(0, &c.secret(&c.token()));
    eventually("cluster-c synced again", WAIT, || async {
        (set.members[0].daemon().peers.get("cluster-c")?.state == PeerState::Synced).then_some(())
    })
    .await;
    assert_eq!(dig(&dns_a, name, "A"), Answer::ok(&[&ip_c]));
    // Deleted: its exports leave at once (no grace period for a peer removed on purpose).
    set.kubectl(0, &["delete", "secret", &c.secret_name(), "-n", "mcsd-system"]);
    eventually("cluster-c's export to leave cluster-a", WAIT, || async {
        (dig(&dns_a, name, "A").status == "NXDOMAIN").then_some(())
    })
    .await;
    assert!(set.members[0].daemon().peers.get("cluster-c").is_none());
    c.stop().await;
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_secret_deleted_while_the_watch_was_down_is_dropped_by_the_relist() {
    // cluster-a keeps a short watch history, so a watch that was away resumes with 410 Gone and
    // lists again: the delete event itself is never delivered.
    let configs = (0..2)
        .map(|i| ClusterConfig {
            event_log_capacity: if i == 0 { 40 } else { 100_000 },
            ..ClusterConfig::nth(i)
        })
        .collect();
    let set = ClusterSet::sandbox_configs(configs, Default::default()).await;
    set.create_namespace("demo");
    let c = Outsider::start(&set).await;
    let name = "hello.demo.svc.clusterset.local";
    let dns_a = set.members[0].dns;
    set.apply(0, &c.secret(&c.token()));
    eventually("cluster-c's pod in cluster-a's answer", WAIT, || async {
        (dig(&dns_a, name, "A") == Answer::ok(&[&c.pod_ip])).then_some(())
    })
    .await;

    // cluster-a's API server goes away; meanwhile the Secret is deleted and enough else changes
    // that the watch's place in the history is gone.
    let cluster_a = set.members[0].cluster();
    cluster_a.stop_api_server().await;
    let api = cluster_a.api();
    let ctx = mcsd_sandbox::api::Ctx::system("test");
    let secrets = api.resource("", "secrets").unwrap();
    api.delete(&secrets, "mcsd-system", &c.secret_name(), &Default::default())
        .unwrap();
    let config_maps = api.resource("", "configmaps").unwrap();
    for n in 0..60 {
        let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("churn-{n}")}});
        api.create(&config_maps, "v1", "default", body, &ctx).unwrap();
    }
    cluster_a.start_api_server().await.unwrap();

    // The re-list no longer has the Secret: its peer is stopped and its export withdrawn.
    eventually(
        "cluster-c's export to leave cluster-a after the re-list",
        WAIT,
        || async { (dig(&dns_a, name, "A").status == "NXDOMAIN").then_some(()) },
    )
    .await;
    assert!(set.members[0].daemon().peers.get("cluster-c").is_none());
    c.stop().await;
    set.stop().await;
}

/// Cluster `i`'s MCS EndpointSlices of `hello` in `ns`, counted by (source cluster, address type).
async fn imported_slices(set: &ClusterSet, i: usize, ns: &str) -> BTreeMap<(String, String), usize> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use mcsd_crds::names::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER, MANAGED_BY};
    let client = set.members[i].client().await;
    let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_SERVICE_NAME}=hello");
    let slices = Api::<EndpointSlice>::namespaced(client, ns)
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .unwrap();
    let mut counts = BTreeMap::new();
    for slice in slices.items {
        let source = slice.metadata.labels.unwrap_or_default()[LABEL_SOURCE_CLUSTER].clone();
        *counts.entry((source, slice.address_type)).or_default() += 1;
    }
    counts
}

/// The source clusters of `slices`, each of which must have exactly one slice per address type.
fn one_slice_each(slices: &BTreeMap<(String, String), usize>) -> BTreeSet<String> {
    assert!(slices.values().all(|n| *n == 1), "duplicate slices: {slices:?}");
    slices.keys().map(|(cluster, _)| cluster.clone()).collect()
}

/// The writes counted in `after` and not in `before`, by (kind, operation, succeeded).
fn writes_since(before: &Snapshot, after: &Snapshot) -> Snapshot {
    after
        .iter()
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

type Snapshot = BTreeMap<(String, &'static str, bool), u64>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_peer_credential_is_named_in_one_line_kept_through_the_grace_period_and_renewed_live() {
    let grace = Duration::from_secs(8);
    let set = ClusterSet::sandbox_with_namespace(1, "demo", mcsd_tests::peer_grace(grace)).await;
    set.apply(0, &hello("demo"));
    let ip_a = pod_ip(&set, 0, "demo");
    // cluster-b runs its own mcsd; cluster-a learns it from a peer Secret.
    let b = Outsider::start(&set).await;
    let a = &set.members[0];
    let name = "hello.demo.svc.clusterset.local";
    let both = Answer::ok(&[&ip_a, &b.pod_ip]);
    let line = format!(
        "the API server of peer cluster-b rejected the credentials (401 Unauthorized): the token or \
         certificate in its kubeconfig has expired or been revoked; renew the kubeconfig in Secret \
         mcsd-system/{}",
        b.secret_name()
    );
    let problem =
        format!("mcsd_peer_problem_info{{peer=\"cluster-b\",state=\"refused\",reason=\"{line}\"}} 1");
    let problems = |metrics: &str| -> Vec<String> {
        metrics
            .lines()
            .filter(|l| l.starts_with("mcsd_peer_problem_info{peer=\"cluster-b\""))
            .map(str::to_string)
            .collect()
    };

    // Given with a token that does not expire: cluster-b's pod joins cluster-a's answer.
    set.apply(0, &b.secret(&b.token()));
    answers_with_none_excluded(&set, 0, name, &both).await;
    assert_eq!(
        one_slice_each(&imported_slices(&set, 0, "demo").await),
        BTreeSet::from(["cluster-a".to_string(), "cluster-b".to_string()])
    );
    mcsd_tests::settled(a.daemon()).await;
    let quiet = a.daemon().writes.snapshot();

    // Renewed, as a routine rotation does, with a token that expires in 10 s.
    let ttl = Duration::from_secs(10);
    let minted = std::time::Instant::now();
    let expiring = b
        .cluster
        .service_account_token_with_expiry("mcsd-system", "mcsd-peer", ttl)
        .unwrap();
    set.apply(0, &b.secret(&expiring));
    // Until it expires and past that, cluster-b's pod stays in the answer; then /metrics says, in
    // one line, which peer rejects what and how to fix it.
    let metrics = loop {
        let metrics = mcsd_tests::admin_get(a.admin, "/metrics").await;
        if problems(&metrics).contains(&problem) {
            break metrics;
        }
        assert_eq!(dig(&a.dns, name, "A"), both, "before the refusal");
        assert!(
            minted.elapsed() < ttl + WAIT,
            "cluster-b not refused after its token expired:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        minted.elapsed() >= ttl,
        "refused before the token expired: the renewal did not take"
    );
    assert_eq!(problems(&metrics), std::slice::from_ref(&problem), "one line");
    assert!(
        metrics.contains("mcsd_peer_state{peer=\"cluster-b\",state=\"refused\"} 1"),
        "{metrics}"
    );

    // Within the grace period: its endpoints stay, nothing is excluded, nothing was written (not
    // for the rotation either), and `mcsd why` says what will happen and why.
    assert_eq!(dig(&a.dns, name, "A"), both, "within the grace period");
    assert_eq!(
        excluded_in(&set, 0, "demo").await.map(|(s, _)| s).as_deref(),
        Some("False")
    );
    let text = set.why(0, name, &[]);
    assert!(
        text.contains(&format!(
            "cluster-b: nothing yet: the peer is refused ({line}); its last known records are kept until its grace period ends"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("[peer refused: {line}]")), "{text}");
    assert_eq!(
        writes_since(&quiet, &a.daemon().writes.snapshot()),
        Snapshot::new(),
        "neither the rotation nor a refusal within the grace period writes"
    );
    assert!(
        minted.elapsed() < ttl + grace,
        "the checks above did not finish within the grace period"
    );

    // Past the grace period: its endpoints leave the answer and the EndpointSlices, and the
    // import names it with the same line.
    eventually("cluster-b's pod to leave cluster-a's answer", WAIT, || async {
        (dig(&a.dns, name, "A") == Answer::ok(&[&ip_a])).then_some(())
    })
    .await;
    assert!(
        minted.elapsed() >= ttl + grace,
        "withdrawn before the grace period ended"
    );
    let (_, message) = eventually("ClustersExcluded=True naming cluster-b", WAIT, || async {
        excluded_in(&set, 0, "demo").await.filter(|(s, _)| s == "True")
    })
    .await;
    assert!(
        message.starts_with("left out: cluster-b: refused for ")
            && message.ends_with(&format!("s (grace period 8s): {line}")),
        "{message}"
    );
    assert_eq!(
        one_slice_each(&imported_slices(&set, 0, "demo").await),
        BTreeSet::from(["cluster-a".to_string()])
    );
    let text = set.why(0, name, &[]);
    assert!(text.contains("cluster-b    LEFT OUT: refused for "), "{text}");
    assert!(
        text.contains("cluster-b: all of its endpoints (1 published) and ports are left out: refused for "),
        "{text}"
    );
    assert!(text.contains(&format!("[peer refused: {line}]")), "{text}");
    assert_eq!(
        problems(&mcsd_tests::admin_get(a.admin, "/metrics").await),
        std::slice::from_ref(&problem)
    );

    // A fresh token in the Secret: cluster-b is back without a restart, once, with one slice per
    // address family and nothing deleted on the way.
    mcsd_tests::settled(a.daemon()).await;
    let withdrawn = a.daemon().writes.snapshot();
    set.apply(0, &b.secret(&b.token()));
    answers_with_none_excluded(&set, 0, name, &both).await;
    let metrics = eventually("cluster-b synced in /metrics", WAIT, || async {
        let metrics = mcsd_tests::admin_get(a.admin, "/metrics").await;
        metrics
            .contains("mcsd_peer_state{peer=\"cluster-b\",state=\"synced\"} 1")
            .then_some(metrics)
    })
    .await;
    assert_eq!(problems(&metrics), Vec::<String>::new());
    mcsd_tests::settled(a.daemon()).await;
    let slices = imported_slices(&set, 0, "demo").await;
    assert_eq!(
        one_slice_each(&slices),
        BTreeSet::from(["cluster-a".to_string(), "cluster-b".to_string()])
    );
    let returned = writes_since(&withdrawn, &a.daemon().writes.snapshot());
    let slices_of_b = slices.keys().filter(|(c, _)| c == "cluster-b").count() as u64;
    assert_eq!(
        returned,
        Snapshot::from([
            (("EndpointSlice".to_string(), "apply", true), slices_of_b),
            (("ServiceImport/status".to_string(), "apply", true), 1),
            // cluster-a's own export: its Conflict condition counts the exporting clusters.
            (("ServiceExport/status".to_string(), "apply", true), 1),
        ]),
        "the return writes cluster-b's slices and the statuses it changes, once each"
    );
    assert_eq!(dig(&a.dns, name, "A"), both);
    b.stop().await;
    set.stop().await;
}
