//! `mcsd run`, the in-cluster daemon, run as a binary against a sandbox cluster.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, api::PostParams};
use mcsd_sandbox::{Cluster, ClusterConfig};

fn write_kubeconfig(cluster: &Cluster, test: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("mcsd-run-{test}-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, cluster.kubeconfig_yaml()).unwrap();
    path
}

fn dig_short(server: &str, name: &str, qtype: &str) -> String {
    mcsd_test_tools::require(&["dig"]);
    let (host, port) = server.rsplit_once(':').unwrap();
    let out = Command::new("dig")
        .args([
            &format!("@{host}"),
            "-p",
            port,
            "+short",
            "+time=1",
            "+tries=1",
            name,
            qtype,
        ])
        .output()
        .expect("dig runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_imports_a_local_export_and_answers_it_on_its_dns_listener() {
    let cluster = Cluster::start(ClusterConfig::nth(0)).await.unwrap();
    let client = cluster.admin_client().await.unwrap();
    for ns in ["mcsd-system", "demo"] {
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let kubeconfig = write_kubeconfig(&cluster, "ok");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcsd"))
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--dns-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let dns = line
        .split("dns=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(line.starts_with("mcsd run: serving dns=127.0.0.1:"), "{line}");

    let docs = [
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"db","namespace":"demo"},"spec":{"clusterIP":"None","selector":{"app":"db"},"ports":[{"name":"pg","port":5432}]}}"#,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"db-0","namespace":"demo","labels":{"app":"db"}},"spec":{"hostname":"db-0","subdomain":"db","containers":[{"name":"db","image":"postgres"}]}}"#,
        r#"{"apiVersion":"multicluster.x-k8s.io/v1beta1","kind":"ServiceExport","metadata":{"name":"db","namespace":"demo"}}"#,
    ];
    let path = kubeconfig.with_extension("objects.json");
    mcsd_test_tools::require(&["kubectl"]);
    for doc in docs {
        std::fs::write(&path, doc).unwrap();
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["apply", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // A headless export: the name resolves to the pod's address, and the pod has its own name.
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let a = dig_short(&dns, "db.demo.svc.clusterset.local", "A");
        if !a.is_empty() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "db.demo.svc.clusterset.local never resolved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(addr.starts_with("10.160."), "the pod's address: {addr}");
    assert_eq!(
        dig_short(&dns, "db-0.cluster-a.db.demo.svc.clusterset.local", "A"),
        addr
    );
    // The admin listener: ready, and the daemon's own metrics beside the DNS server's.
    let admin: std::net::SocketAddr = line.split("admin=").nth(1).unwrap().trim().parse().unwrap();
    assert_eq!(http_get(admin, "/readyz").await.status, 200);
    let metrics = http_get(admin, "/metrics").await.body;
    assert!(
        metrics.contains("mcsd_writes_total{kind=\"ServiceImport\",operation=\"apply\",outcome=\"success\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("mcsd_dns_"), "{metrics}");
    // The export's way to the import was timed, for the ServiceImport and its slice.
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
    };
    assert!(value("mcsd_propagation_seconds_count{kind=\"EndpointSlice\"}") >= 1.0);
    assert!(value("mcsd_propagation_seconds_count{kind=\"ServiceImport\"}") >= 1.0);
    let slow = value("mcsd_propagation_seconds_bucket{kind=\"EndpointSlice\",le=\"+Inf\"}")
        - value("mcsd_propagation_seconds_bucket{kind=\"EndpointSlice\",le=\"30\"}");
    assert_eq!(slow, 0.0, "a local export takes well under 30 s:\n{metrics}");
    assert_eq!(value("mcsd_services_in_conflict{reason=\"PortConflict\"}"), 0.0);
    // And `mcsd why` asks this very process.
    let why = Command::new(env!("CARGO_BIN_EXE_mcsd"))
        .args([
            "why",
            "db-0.cluster-a.db.demo.svc.clusterset.local",
            "--admin",
            &admin.to_string(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&why.stdout);
    assert!(why.status.success(), "{}", String::from_utf8_lossy(&why.stderr));
    assert!(
        text.contains("Endpoint db-0 in cluster-a of service demo/db."),
        "{text}"
    );
    assert!(text.contains(&format!("A     NOERROR  {addr}")), "{text}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    cluster.shutdown().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> mcsd::commands::admin_client::Reply {
    mcsd::commands::admin_client::get(addr, path, mcsd::commands::admin_client::TIMEOUT)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_a_cluster_without_the_crds_fails_with_one_line_saying_how_to_fix_it() {
    let cluster = Cluster::start(ClusterConfig {
        install_crds: false,
        ..ClusterConfig::nth(1)
    })
    .await
    .unwrap();
    let kubeconfig = write_kubeconfig(&cluster, "nocrd");
    let out = Command::new(env!("CARGO_BIN_EXE_mcsd"))
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--dns-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    // Every missing CRD is named at once, with the one command that installs them.
    for crd in [
        "clusterproperties.about.k8s.io",
        "serviceexports.multicluster.x-k8s.io",
        "serviceimports.multicluster.x-k8s.io",
    ] {
        assert!(err.contains(crd), "{err}");
    }
    assert!(err.contains("kubectl apply -f crds/"), "{err}");
    cluster.shutdown().await;
}

/// Runs `mcsd run` with `kubeconfig` and returns its exit code and standard error.
fn run_expecting_failure(kubeconfig: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mcsd"))
        .args(["run", "--kubeconfig"])
        .arg(kubeconfig)
        .args(["--dns-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_the_rbac_rights_fails_with_one_line_naming_the_right_and_the_manifest() {
    let cluster = Cluster::start(ClusterConfig::nth(0)).await.unwrap();
    // A ServiceAccount nobody bound a role to.
    let path = std::env::temp_dir().join(format!("mcsd-run-norbac-{}.kubeconfig", std::process::id()));
    std::fs::write(
        &path,
        cluster.service_account_kubeconfig("mcsd-system", "mcsd").unwrap(),
    )
    .unwrap();
    let (code, err) = run_expecting_failure(&path);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("403 Forbidden"), "{err}");
    assert!(
        err.contains("may not list clusterproperties.about.k8s.io"),
        "{err}"
    );
    assert!(err.contains("manifests/rbac.yaml"), "{err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_against_a_stopped_api_server_fails_with_one_line_naming_its_address() {
    let cluster = Cluster::start(ClusterConfig::nth(0)).await.unwrap();
    let kubeconfig = write_kubeconfig(&cluster, "down");
    cluster.stop_api_server().await;
    let (code, err) = run_expecting_failure(&kubeconfig);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach the API server"), "{err}");
    assert!(err.contains(&cluster.api_url()), "{err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_revoked_token_fails_with_one_line_saying_so() {
    let cluster = Cluster::start(ClusterConfig::nth(0)).await.unwrap();
    let path = std::env::temp_dir().join(format!("mcsd-run-badtoken-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, cluster.kubeconfig_for_token("someone", "not-a-token")).unwrap();
    let (code, err) = run_expecting_failure(&path);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("401 Unauthorized"), "{err}");
    cluster.shutdown().await;
}

#[test]
fn run_with_a_missing_kubeconfig_fails_with_one_line_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_mcsd"))
        .args([
            "run",
            "--kubeconfig",
            "/nonexistent/k.yaml",
            "--dns-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/k.yaml"), "{err}");
}
