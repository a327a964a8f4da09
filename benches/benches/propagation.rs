//! Propagation latency across a 3-cluster sandbox ClusterSet (issue #5's speed goals):
//!
//! 1. `kubectl apply` of a ServiceExport in cluster-a → cluster-c's DNS server answers the
//!    service's name with cluster-c's own clusterset IP, for 200 services one after another.
//! 2. A pod of a headless export turning unready in cluster-a → its address leaves cluster-c's
//!    answer, for 200 pods.
//!
//! The clock starts when `kubectl apply` returns (the ServiceExport exists; kubectl's own start-up
//! is reported separately), or just before the readiness patch is sent, and stops at the first
//! correct answer from cluster-c's server, asked every millisecond over UDP. Run with
//! `cargo bench -p mcsd-benches --bench propagation`.
#![allow(clippy::print_stdout)]

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use mcsd_crds::mcs::v1beta1::ServiceImport;
use mcsd_tests::ClusterSet;

const SERVICES: usize = 200;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Polls every millisecond until `done(answer)`; returns when it first held.
fn poll_until(server: SocketAddr, name: &str, done: impl Fn(&[String]) -> bool) -> Instant {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut id = 0u16;
    loop {
        id = id.wrapping_add(1);
        if done(&mcsd_tests::ask_a(&socket, server, name, id)) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{name} never got the right answer");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 90.0)),
        ms(percentile(&samples, 99.0)),
        ms(*samples.last().unwrap()),
    );
}

#[tokio::main]
async fn main() {
    let set = ClusterSet::with_namespace(3, "bench").await;
    let dir = std::env::temp_dir().join(format!("mcsd-propagation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dns_c = set.members[2].dns;

    // Services and pods first (not measured): ClusterIP services svc-N, headless db-N with a pod.
    let mut yaml = String::new();
    for i in 0..SERVICES {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\nspec: {{selector: {{app: svc-{i}}}, ports: [{{name: http, port: 80}}]}}\n\
             ---\napiVersion: v1\nkind: Service\nmetadata: {{name: db-{i}, namespace: bench}}\nspec: {{clusterIP: None, selector: {{app: db-{i}}}, ports: [{{name: pg, port: 5432}}]}}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: db-{i}, namespace: bench, labels: {{app: db-{i}}}}}\nspec: {{containers: [{{name: db, image: postgres}}]}}\n"
        ));
    }
    let path = dir.join("services.yaml");
    std::fs::write(&path, yaml).unwrap();
    set.kubectl(0, &["apply", "-f", path.to_str().unwrap()]);

    // 1. ServiceExport → cluster-c's answer.
    let client_c = set.members[2].client().await;
    let imports_c: Api<ServiceImport> = Api::namespaced(client_c, "bench");
    let mut from_apply = Vec::new();
    let mut from_kubectl = Vec::new();
    for i in 0..SERVICES {
        let path = dir.join(format!("export-{i}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {{name: svc-{i}, namespace: bench}}\n"
            ),
        )
        .unwrap();
        let started = Instant::now();
        set.kubectl(0, &["apply", "-f", path.to_str().unwrap()]);
        let applied = Instant::now();
        let name = format!("svc-{i}.bench.svc.clusterset.local");
        let answered = tokio::task::spawn_blocking(move || poll_until(dns_c, &name, |a| !a.is_empty()))
            .await
            .unwrap();
        // The answer must be cluster-c's own clusterset IP (its range is 10.98/16).
        let import = imports_c.get(&format!("svc-{i}")).await.unwrap();
        assert!(import.spec.ips[0].starts_with("10.98."), "{:?}", import.spec.ips);
        from_apply.push(answered - applied);
        from_kubectl.push(answered - started);
    }
    report(
        "export → cluster-c DNS answer (from kubectl apply returning)",
        from_apply,
    );
    report(
        "export → cluster-c DNS answer (from kubectl start, incl. its ~start-up)",
        from_kubectl,
    );

    // 2. Pod unready in cluster-a → its address leaves cluster-c's answer.
    let export_all: String = (0..SERVICES)
        .map(|i| {
            format!(
                "---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {{name: db-{i}, namespace: bench}}\n"
            )
        })
        .collect();
    let path = dir.join("export-db.yaml");
    std::fs::write(&path, export_all).unwrap();
    set.kubectl(0, &["apply", "-f", path.to_str().unwrap()]);
    let client_a = set.members[0].client().await;
    let pods_a: Api<Pod> = Api::namespaced(client_a, "bench");
    let mut withdrawals = Vec::new();
    for i in 0..SERVICES {
        let name = format!("db-{i}.bench.svc.clusterset.local");
        let n = name.clone();
        tokio::task::spawn_blocking(move || poll_until(dns_c, &n, |a| a.len() == 1))
            .await
            .unwrap();
        let not_ready = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let started = Instant::now();
        pods_a
            .patch_status(
                &format!("db-{i}"),
                &PatchParams::default(),
                &Patch::Strategic(not_ready),
            )
            .await
            .unwrap();
        let gone = tokio::task::spawn_blocking(move || poll_until(dns_c, &name, |a| a.is_empty()))
            .await
            .unwrap();
        withdrawals.push(gone - started);
    }
    report(
        "pod unready in cluster-a → gone from cluster-c's answer",
        withdrawals,
    );
    let _ = std::fs::remove_dir_all(&dir);
    set.stop().await;
}
