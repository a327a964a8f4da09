//! The README's first run, as a newcomer does it: `mcsd sandbox --clusters 3`, a Service and its
//! ServiceExport applied with kubectl in cluster-a, and `dig` against cluster-c's DNS server.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use mcsd_tests::{eventually, kubectl, repo_root};

struct Sandbox {
    child: Child,
    dir: PathBuf,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mcsd_binary() -> PathBuf {
    // The binary cargo built for this test run (tests/ is a sibling crate of controller/).
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap();
    let bin = target.join("mcsd");
    assert!(
        bin.exists(),
        "{} is missing: build with `cargo build -p mcsd` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

fn dig(server: &str, args: &[&str]) -> String {
    let (host, port) = server.rsplit_once(':').unwrap();
    let out = Command::new("dig")
        .args([&format!("@{host}"), "-p", port, "+time=1", "+tries=1"])
        .args(args)
        .output()
        .expect("dig must be installed (.ci/run installs dnsutils)");
    String::from_utf8(out.stdout).unwrap()
}

fn start(clusters: usize) -> (Sandbox, serde_json::Value) {
    let dir = std::env::temp_dir().join(format!("mcsd-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(mcsd_binary())
        .args(["sandbox", "--clusters", &clusters.to_string(), "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "sandbox ready\n");
    let manifest = serde_json::from_slice(&std::fs::read(dir.join("sandbox.json")).unwrap()).unwrap();
    (Sandbox { child, dir }, manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_exported_with_kubectl_in_cluster_a_resolves_with_dig_in_cluster_c() {
    let (_sandbox, manifest) = start(3);
    let members = manifest.as_array().unwrap();
    let kubeconfig = |i: usize| PathBuf::from(members[i]["kubeconfig"].as_str().unwrap());
    // The README's commands: the namespace everywhere, the example in cluster-a.
    let examples = repo_root().join("docs/examples");
    for i in 0..3 {
        kubectl(
            &kubeconfig(i),
            &["apply", "-f", examples.join("namespace.yaml").to_str().unwrap()],
        );
    }
    kubectl(
        &kubeconfig(0),
        &["apply", "-f", examples.join("hello.yaml").to_str().unwrap()],
    );

    let dns_c = members[2]["dns"].as_str().unwrap().to_string();
    let ip = eventually(
        "cluster-c to answer the clusterset IP",
        Duration::from_secs(20),
        || {
            let dns_c = dns_c.clone();
            async move {
                let out = dig(&dns_c, &["+short", "hello.demo.svc.clusterset.local", "A"]);
                out.lines().next().map(str::to_string).filter(|l| !l.is_empty())
            }
        },
    )
    .await;
    // The clusterset IP is cluster-c's own derived Service IP (cluster-c's range is 10.98/16).
    assert!(ip.starts_with("10.98."), "{ip}");
    let svcim = kubectl(
        &kubeconfig(2),
        &[
            "get",
            "serviceimport",
            "hello",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.ips[0]}",
        ],
    );
    assert_eq!(svcim, ip);
    let srv = dig(
        &dns_c,
        &["+short", "_http._tcp.hello.demo.svc.clusterset.local", "SRV"],
    );
    assert_eq!(srv.trim(), "0 100 80 hello.demo.svc.clusterset.local.");
    // cluster.local is not ours, and a name that is not exported does not exist.
    assert!(dig(&dns_c, &["nothere.demo.svc.clusterset.local", "A"]).contains("status: NXDOMAIN"));

    // Unexport: the name goes away everywhere.
    kubectl(
        &kubeconfig(0),
        &["delete", "serviceexport", "hello", "-n", "demo"],
    );
    eventually("the name to stop resolving", Duration::from_secs(20), || {
        let dns_c = dns_c.clone();
        async move {
            dig(&dns_c, &["hello.demo.svc.clusterset.local", "A"])
                .contains("status: NXDOMAIN")
                .then_some(())
        }
    })
    .await;
}
