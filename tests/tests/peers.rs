//! Peers that cannot be trusted or cannot be reached: a cluster of another ClusterSet is refused
//! and its exports are left out, saying so on the imports and in the metrics; a peer whose API
//! server goes away keeps its endpoints through a short outage, loses them past the grace
//! period, and gets them back, unchanged, when it returns.

use std::time::Duration;

use kube::Api;
use mcsd::{daemon::metrics::PeerState, import::CONDITION_CLUSTERS_EXCLUDED};
use mcsd_crds::mcs::v1beta1::ServiceImport;
use mcsd_sandbox::ClusterConfig;
use mcsd_tests::{Answer, ClusterSet, dig, eventually};

const WAIT: Duration = Duration::from_secs(20);

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
    let client = set.members[i].cluster.admin_client().await.unwrap();
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
    let options = mcsd::sandbox::Options {
        peer_grace: Duration::from_secs(20),
        ..Default::default()
    };
    let set = ClusterSet::start_configs(configs, options).await;
    for i in 0..3 {
        set.apply(i, "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n");
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
    let state = set.members[1].daemon.peers.get("cluster-c").unwrap().state;
    assert!(matches!(state, PeerState::Refused(_)), "{state:?}");
    let mut metrics = String::new();
    set.members[1].daemon.peers.render(&mut metrics);
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
    let set = ClusterSet::start_with(
        3,
        mcsd::sandbox::Options {
            peer_grace: grace,
            ..Default::default()
        },
    )
    .await;
    for i in 0..3 {
        set.apply(i, "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n");
    }
    set.apply(0, &hello("demo"));
    set.apply(1, &hello("demo"));
    let (ip_a, ip_b) = (pod_ip(&set, 0, "demo"), pod_ip(&set, 1, "demo"));
    let name = "hello.demo.svc.clusterset.local";
    let dns_c = set.members[2].dns;
    eventually("both pods in cluster-c's answer", WAIT, || async {
        (dig(&dns_c, name, "A") == Answer::ok(&[&ip_a, &ip_b])).then_some(())
    })
    .await;
    eventually("nothing excluded", WAIT, || async {
        excluded_in(&set, 2, "demo").await.filter(|(s, _)| s == "False")
    })
    .await;

    // A blip shorter than the grace period withdraws nothing, and writes nothing.
    let writes_before = set.members[2].daemon.writes.total();
    set.members[1].cluster.stop_api_server().await;
    let blip_end = std::time::Instant::now() + grace / 2;
    while std::time::Instant::now() < blip_end {
        assert_eq!(
            dig(&dns_c, name, "A"),
            Answer::ok(&[&ip_a, &ip_b]),
            "during the blip"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    set.members[1].cluster.start_api_server().await.unwrap();
    eventually("cluster-b to be synced again", WAIT, || async {
        (set.members[2].daemon.peers.get("cluster-b")?.state == PeerState::Synced).then_some(())
    })
    .await;
    assert_eq!(dig(&dns_c, name, "A"), Answer::ok(&[&ip_a, &ip_b]));
    assert_eq!(
        set.members[2].daemon.writes.total(),
        writes_before,
        "a blip makes no writes"
    );

    // Past the grace period, cluster-b's endpoints leave, and the import says why.
    set.members[1].cluster.stop_api_server().await;
    eventually("cluster-b's pod to leave cluster-c's answer", WAIT, || async {
        (dig(&dns_c, name, "A") == Answer::ok(&[&ip_a])).then_some(())
    })
    .await;
    let (_, message) = eventually("ClustersExcluded=True naming cluster-b", WAIT, || async {
        excluded_in(&set, 2, "demo").await.filter(|(s, _)| s == "True")
    })
    .await;
    assert!(message.contains("cluster-b: unreachable for"), "{message}");
    // cluster-a's view is the same.
    let dns_a = set.members[0].dns;
    eventually("cluster-b's pod to leave cluster-a's answer", WAIT, || async {
        (dig(&dns_a, name, "A") == Answer::ok(&[&ip_a])).then_some(())
    })
    .await;

    // cluster-b returns: its endpoints come back once, without duplicates.
    set.members[1].cluster.start_api_server().await.unwrap();
    eventually("cluster-b's pod back in cluster-c's answer", WAIT, || async {
        (dig(&dns_c, name, "A") == Answer::ok(&[&ip_a, &ip_b])).then_some(())
    })
    .await;
    eventually("the exclusion to clear", WAIT, || async {
        excluded_in(&set, 2, "demo").await.filter(|(s, _)| s == "False")
    })
    .await;
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_secret_added_changed_and_deleted_takes_effect_without_a_restart() {
    use base64::Engine as _;
    // cluster-a and cluster-b know each other from their flags; cluster-c is nobody's peer yet.
    let set = ClusterSet::with_namespace(2, "demo").await;
    let c = mcsd_sandbox::Cluster::start(ClusterConfig::nth(2)).await.unwrap();
    let kubeconfig_c =
        std::env::temp_dir().join(format!("mcsd-peer-secret-{}.kubeconfig", std::process::id()));
    std::fs::write(&kubeconfig_c, c.kubeconfig_yaml()).unwrap();
    for manifest in ["namespace.yaml", "rbac.yaml"] {
        let path = mcsd_tests::repo_root().join("manifests").join(manifest);
        mcsd_tests::kubectl(&kubeconfig_c, &["apply", "-f", path.to_str().unwrap()]);
    }
    let yaml_c = kubeconfig_c.with_extension("yaml");
    std::fs::write(
        &yaml_c,
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: demo}}\n---\n{}",
            hello("demo")
        ),
    )
    .unwrap();
    mcsd_tests::kubectl(&kubeconfig_c, &["apply", "-f", yaml_c.to_str().unwrap()]);
    let stop_c = tokio_util::sync::CancellationToken::new();
    let all = [&set.members[0].cluster, &set.members[1].cluster, &c];
    let mcsd_c = mcsd::sandbox::start_mcsd(&all, 2, &Default::default(), stop_c.clone())
        .await
        .unwrap();
    mcsd_c.wait_ready(WAIT).await.unwrap();
    let ip_c = mcsd_tests::kubectl(
        &kubeconfig_c,
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
    let name = "hello.demo.svc.clusterset.local";
    let dns_a = set.members[0].dns;
    assert_eq!(
        dig(&dns_a, name, "A").status,
        "NXDOMAIN",
        "cluster-c is not a peer yet"
    );

    let secret = |token: &str| {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: peer-c\n  namespace: mcsd-system\n  labels: {{mcsd.io/peer: \"\"}}\ndata:\n  name: {}\n  kubeconfig: {}\n",
            b64("cluster-c"),
            b64(&c.kubeconfig_for_token("system:serviceaccount:mcsd-system:mcsd-peer", token)),
        )
    };
    // Added: cluster-c's export reaches cluster-a.
    set.apply(
        0,
        &secret(&c.service_account_token("mcsd-system", "mcsd-peer").unwrap()),
    );
    eventually("cluster-c's pod in cluster-a's answer", WAIT, || async {
        (dig(&dns_a, name, "A") == Answer::ok(&[&ip_c])).then_some(())
    })
    .await;
    assert_eq!(
        set.members[0].daemon.peers.get("cluster-c").map(|s| s.state),
        Some(PeerState::Synced)
    );
    // Changed to a token the API server rejects: the peer is refused, and says why.
    set.apply(0, &secret("not-a-token"));
    eventually("cluster-c refused for its credentials", WAIT, || async {
        match set.members[0].daemon.peers.get("cluster-c")?.state {
            PeerState::Refused(why) if why.contains("401") => Some(()),
            _ => None,
        }
    })
    .await;
    // Changed back to a good token: followed again.
    set.apply(
        0,
        &secret(&c.service_account_token("mcsd-system", "mcsd-peer").unwrap()),
    );
    eventually("cluster-c synced again", WAIT, || async {
        (set.members[0].daemon.peers.get("cluster-c")?.state == PeerState::Synced).then_some(())
    })
    .await;
    assert_eq!(dig(&dns_a, name, "A"), Answer::ok(&[&ip_c]));
    // Deleted: its exports leave at once (no grace period for a peer removed on purpose).
    set.kubectl(0, &["delete", "secret", "peer-c", "-n", "mcsd-system"]);
    eventually("cluster-c's export to leave cluster-a", WAIT, || async {
        (dig(&dns_a, name, "A").status == "NXDOMAIN").then_some(())
    })
    .await;
    assert!(set.members[0].daemon.peers.get("cluster-c").is_none());
    stop_c.cancel();
    c.shutdown().await;
    let _ = std::fs::remove_file(&kubeconfig_c);
    let _ = std::fs::remove_file(&yaml_c);
    set.stop().await;
}
