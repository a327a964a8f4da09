//! The README's first run, as a newcomer does it: `mcsd sandbox --clusters 3`, a Deployment made
//! with `kubectl create deployment` and its Service and ServiceExport applied in cluster-a, and
//! `dig` against cluster-c's DNS server.

use std::time::Duration;

use mcsd_tests::{SandboxProcess, dig_raw, eventually, kubectl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_exported_with_kubectl_in_cluster_a_resolves_with_dig_in_cluster_c() {
    let sandbox = SandboxProcess::start("quickstart", 3, &[]);
    let kubeconfig = |i: usize| sandbox.kubeconfig_of(i);
    // The README's commands: the namespace everywhere (`kubectl create namespace`, a protobuf
    // body), the example in cluster-a.
    let kubeconfigs: Vec<_> = (0..3).map(kubeconfig).collect();
    mcsd_tests::fixtures::export_hello_as_the_readme_does(&kubeconfigs, 0);

    let dns_c = sandbox.dns(2);
    let ip = eventually(
        "cluster-c to answer the clusterset IP",
        Duration::from_secs(20),
        || async move {
            let out = dig_raw(&dns_c, &["+short", "hello.demo.svc.clusterset.local", "A"]);
            out.lines().next().map(str::to_string).filter(|l| !l.is_empty())
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
    let srv = dig_raw(
        &dns_c,
        &["+short", "_http._tcp.hello.demo.svc.clusterset.local", "SRV"],
    );
    assert_eq!(srv.trim(), "0 100 80 hello.demo.svc.clusterset.local.");
    // `mcsd why` explains the name from cluster-c's side.
    let why = std::process::Command::new(mcsd_tests::mcsd_binary())
        .args(["why", "hello.demo.svc.clusterset.local", "--sandbox"])
        .arg(&sandbox.dir)
        .args(["--cluster", "cluster-c"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&why.stdout);
    assert!(why.status.success(), "{}", String::from_utf8_lossy(&why.stderr));
    assert!(text.contains(&format!("A     NOERROR  {ip}")), "{text}");
    assert!(text.contains("cluster-a    exports since"), "{text}");
    assert!(text.contains("Left out: nothing."), "{text}");
    // cluster.local is not ours, and a name that is not exported does not exist.
    assert!(dig_raw(&dns_c, &["nothere.demo.svc.clusterset.local", "A"]).contains("status: NXDOMAIN"));

    // Unexport: the name goes away everywhere.
    kubectl(
        &kubeconfig(0),
        &["delete", "serviceexport", "hello", "-n", "demo"],
    );
    eventually(
        "the name to stop resolving",
        Duration::from_secs(20),
        || async move {
            dig_raw(&dns_c, &["hello.demo.svc.clusterset.local", "A"])
                .contains("status: NXDOMAIN")
                .then_some(())
        },
    )
    .await;
}
