//! `mcsd dns --kubeconfig`: the DNS side alone, fed by a cluster whose ServiceImports and MCS
//! EndpointSlices someone else writes (here: kubectl, standing in for another MCS
//! implementation). Run as the `mcsd` ServiceAccount with exactly the rights of
//! `manifests/rbac.yaml`, queried with the real `dig`.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use mcsd_sandbox::{Cluster, ClusterConfig};
use mcsd_tests::{Answer, dig, kubectl, mcsd_binary, repo_root, start_mcsd_binary};

fn apply(kubeconfig: &Path, yaml: &str) {
    let path = kubeconfig.with_extension(format!("{}.yaml", yaml.len()));
    std::fs::write(&path, yaml).unwrap();
    kubectl(kubeconfig, &["apply", "-f", path.to_str().unwrap()]);
}

fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const OBJECTS: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata: {name: cart, namespace: shop}
spec:
  type: ClusterSetIP
  ips: [10.96.5.5]
  ports: [{name: http, protocol: TCP, port: 80}]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata: {name: db, namespace: shop}
spec:
  type: Headless
  ports: [{name: pg, protocol: TCP, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-east
  namespace: shop
  labels: {multicluster.kubernetes.io/service-name: db, multicluster.kubernetes.io/source-cluster: east}
addressType: IPv4
ports: [{name: pg, protocol: TCP, port: 5432}]
endpoints:
- {addresses: [10.1.0.1], hostname: db-0, conditions: {ready: true}}
- {addresses: [10.1.0.2], hostname: db-1, conditions: {ready: true}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_follows_imports_and_slices_another_implementation_writes() {
    let cluster = Cluster::start(ClusterConfig::nth(0)).await.unwrap();
    let dir = std::env::temp_dir().join(format!("mcsd-dns-kubeconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let admin = dir.join("admin.kubeconfig");
    std::fs::write(&admin, cluster.kubeconfig_yaml()).unwrap();
    for manifest in ["namespace.yaml", "rbac.yaml"] {
        let path = repo_root().join("manifests").join(manifest);
        kubectl(&admin, &["apply", "-f", path.to_str().unwrap()]);
    }
    apply(&admin, OBJECTS);
    let own = dir.join("mcsd.kubeconfig");
    std::fs::write(
        &own,
        cluster.service_account_kubeconfig("mcsd-system", "mcsd").unwrap(),
    )
    .unwrap();

    let (child, line) = start_mcsd_binary(&[
        "dns".as_ref(),
        "--kubeconfig".as_ref(),
        own.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--admin".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    let _child = Killed(child);
    assert!(
        line.starts_with("mcsd dns: serving clusterset.local dns=127.0.0.1:"),
        "{line}"
    );
    let dns: SocketAddr = line
        .split("dns=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let cart = "cart.shop.svc.clusterset.local";
    let db = "db.shop.svc.clusterset.local";
    until("the ClusterSetIP import to resolve", || {
        dig(&dns, cart, "A") == Answer::ok(&["10.96.5.5"])
    });
    assert_eq!(dig(&dns, db, "A"), Answer::ok(&["10.1.0.1", "10.1.0.2"]));
    assert_eq!(
        dig(&dns, "db-1.east.db.shop.svc.clusterset.local", "A"),
        Answer::ok(&["10.1.0.2"])
    );
    assert_eq!(
        dig(&dns, "nope.shop.svc.clusterset.local", "A").status,
        "NXDOMAIN"
    );

    // The other implementation changes things: an endpoint turns unready, the IP changes.
    apply(
        &admin,
        &OBJECTS
            .replace(
                "hostname: db-1, conditions: {ready: true}",
                "hostname: db-1, conditions: {ready: false}",
            )
            .replace("10.96.5.5", "10.96.5.6"),
    );
    until("the unready endpoint to leave and the new IP to show", || {
        dig(&dns, db, "A") == Answer::ok(&["10.1.0.1"]) && dig(&dns, cart, "A") == Answer::ok(&["10.96.5.6"])
    });
    // And removes the import: the name goes.
    kubectl(&admin, &["delete", "serviceimport", "cart", "-n", "shop"]);
    until("the deleted import's name to be NXDOMAIN", || {
        dig(&dns, cart, "A").status == "NXDOMAIN"
    });
    cluster.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_with_credentials_that_may_not_watch_fails_with_one_line() {
    let cluster = Cluster::start(ClusterConfig::nth(0)).await.unwrap();
    let path = std::env::temp_dir().join(format!("mcsd-dns-norbac-{}.kubeconfig", std::process::id()));
    std::fs::write(
        &path,
        cluster.service_account_kubeconfig("default", "nobody").unwrap(),
    )
    .unwrap();
    let out = Command::new(mcsd_binary())
        .args(["dns", "--kubeconfig"])
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("may not list serviceimports.multicluster.x-k8s.io in all namespaces"),
        "{err}"
    );
    cluster.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

#[test]
fn dns_needs_exactly_one_source() {
    let out = Command::new(mcsd_binary())
        .args(["dns", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--objects") && err.contains("--kubeconfig"), "{err}");
    let out = Command::new(mcsd_binary())
        .args(["dns", "--objects", "a.yaml", "--kubeconfig", "b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot be used with"), "{err}");
}
