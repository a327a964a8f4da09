//! A newcomer's MCS walkthrough, typed as they would type it, on whichever ClusterSet the tests
//! run on (sandbox or real): `kubectl create namespace` everywhere, a Deployment behind a Service
//! made with `kubectl create deployment` and `kubectl expose`, `kubectl rollout status`, the
//! export made ready, the name resolving in another cluster, `kubectl scale` reaching the other
//! clusters' MCS slices; a StatefulSet behind a headless Service answering its per-pod clusterset
//! names; `kubectl auth can-i` for mcsd's own identity as `manifests/rbac.yaml` says; events; and
//! the namespace deleted taking the import and the name with it.

use mcsd_tests::{Answer, ClusterSet, WAIT, dig, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomers_walkthrough_with_plain_kubectl_works_across_the_clusterset() {
    let set = ClusterSet::start(3).await;
    let ns = "walkthrough";
    for i in 0..3 {
        set.kubectl(i, &["create", "namespace", ns]);
    }
    let a = |args: &[&str]| set.kubectl(0, &[&["-n", ns], args].concat());
    a(&[
        "create",
        "deployment",
        "hello",
        "--image=registry.k8s.io/e2e-test-images/agnhost:2.53",
        "--replicas=2",
        "--port=8080",
    ]);
    a(&["expose", "deployment", "hello", "--port=80", "--target-port=8080"]);
    a(&["rollout", "status", "deployment/hello", "--timeout=60s"]);
    set.apply(
        0,
        &format!("apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {{name: hello, namespace: {ns}}}\n"),
    );
    a(&[
        "wait",
        "--for=condition=Ready",
        "serviceexport/hello",
        "--timeout=60s",
    ]);

    // The name resolves in cluster-c, to cluster-c's own clusterset IP.
    let name = format!("hello.{ns}.svc.clusterset.local");
    let dns_c = set.members[2].dns;
    let ip = eventually("cluster-c to answer hello", WAIT, || async {
        let answer = dig(&dns_c, &name, "A");
        (answer.records.len() == 1).then(|| answer.records[0].clone())
    })
    .await;
    let import_ip = set.kubectl(
        2,
        &[
            "-n",
            ns,
            "get",
            "serviceimport",
            "hello",
            "-o",
            "jsonpath={.spec.ips[0]}",
        ],
    );
    assert_eq!(ip, import_ip);

    // Scaled to three in cluster-a: cluster-c's MCS slices hold three endpoints.
    a(&["scale", "deployment/hello", "--replicas=3"]);
    a(&["rollout", "status", "deployment/hello", "--timeout=60s"]);
    eventually("three endpoints in cluster-c's MCS slices", WAIT, || async {
        let addresses = set.kubectl(
            2,
            &[
                "-n",
                ns,
                "get",
                "endpointslices",
                "-l",
                "multicluster.kubernetes.io/service-name=hello",
                "-o",
                "jsonpath={.items[*].endpoints[*].addresses[0]}",
            ],
        );
        let mut ipv4: Vec<&str> = addresses
            .split_whitespace()
            .filter(|a| !a.contains(':'))
            .collect();
        ipv4.dedup();
        (ipv4.len() == 3).then_some(())
    })
    .await;

    // A StatefulSet behind a headless Service: each pod by name, from another cluster.
    set.apply(
        0,
        &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {ns}}}
spec: {{clusterIP: None, selector: {{app: db}}, ports: [{{name: pg, port: 5432}}]}}
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
metadata: {{name: db, namespace: {ns}}}
"#
        ),
    );
    a(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    for pod in ["db-0", "db-1"] {
        let pod_ip = eventually(&format!("{pod}'s IP"), WAIT, || async {
            let ip = a(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"]);
            (!ip.is_empty()).then_some(ip)
        })
        .await;
        let per_pod = format!("{pod}.cluster-a.db.{ns}.svc.clusterset.local");
        let dns_b = set.members[1].dns;
        eventually(&format!("{per_pod} in cluster-b"), WAIT, || async {
            (dig(&dns_b, &per_pod, "A") == Answer::ok(&[&pod_ip])).then_some(())
        })
        .await;
    }

    // mcsd's own identity may do what manifests/rbac.yaml grants, and nothing else.
    let can = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&set.members[0].kubeconfig)
            .args(["auth", "can-i"])
            .args(args)
            .arg("--as=system:serviceaccount:mcsd-system:mcsd")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        can(&["create", "serviceimports.multicluster.x-k8s.io", "-n", ns]),
        "yes"
    );
    assert_eq!(
        can(&["patch", "endpointslices.discovery.k8s.io", "-n", ns]),
        "yes"
    );
    assert_eq!(can(&["watch", "secrets", "-n", "mcsd-system"]), "yes");
    assert_eq!(can(&["get", "secrets", "-n", ns]), "no");
    assert_eq!(can(&["delete", "pods", "-n", ns]), "no");

    // Events tell what the controllers did.
    let events = a(&["get", "events", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("ScalingReplicaSet"), "{events}");
    assert!(events.contains("SuccessfulCreate"), "{events}");

    // The namespace deleted in cluster-a: its exports go, and with them the import and the name
    // in cluster-c (whose namespace stays).
    set.kubectl(0, &["delete", "namespace", ns, "--wait=false"]);
    eventually("cluster-c's import to go", WAIT, || async {
        let imports = set.kubectl(2, &["-n", ns, "get", "serviceimports", "-o", "name"]);
        imports.trim().is_empty().then_some(())
    })
    .await;
    eventually("hello to be gone from cluster-c's DNS", WAIT, || async {
        (dig(&dns_c, &name, "A").status == "NXDOMAIN").then_some(())
    })
    .await;
    set.stop().await;
}
