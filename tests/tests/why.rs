//! `mcsd why NAME`, run as a user runs it, against the mcsd of a 3-cluster ClusterSet (sandbox or
//! real): what the server answers, which clusters export the service, and each thing left out
//! with its reason (an unready endpoint, a lost port conflict). What it says of a peer past its
//! grace period is in `peers.rs`, where the sandbox stops that peer's API server.

use std::process::Command;

use mcsd_tests::{ClusterSet, WAIT, eventually, mcsd_binary};

fn hello(port: u16, pods: &[&str]) -> String {
    let mut yaml = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: hello, namespace: demo}}
spec:
  selector: {{app: hello}}
  ports: [{{name: http, port: {port}, protocol: TCP}}]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {{name: hello, namespace: demo}}
"#
    );
    for pod in pods {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: demo, labels: {{app: hello}}}}\n\
             spec: {{containers: [{{name: hello, image: nginx}}]}}\n"
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_explains_answers_exporters_and_everything_left_out() {
    let set = ClusterSet::with_namespace(3, "demo").await;
    // cluster-a exports first (it wins the conflict; a tie would go to it too), with one of its
    // two pods unready; cluster-b exports the same port name on another number.
    set.apply(0, &hello(80, &["hello-0", "hello-1"]));
    set.kubectl(
        0,
        &[
            "patch",
            "pod",
            "hello-1",
            "-n",
            "demo",
            "--subresource=status",
            "--type=strategic",
            "-p",
            r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#,
        ],
    );
    set.apply(1, &hello(8080, &["hello-b"]));
    let unready_ip = set.kubectl(
        0,
        &[
            "get",
            "pod",
            "hello-1",
            "-n",
            "demo",
            "-o",
            "jsonpath={.status.podIP}",
        ],
    );
    let name = "hello.demo.svc.clusterset.local";

    // Asked of cluster-c, which exports nothing itself.
    let text = eventually(
        "cluster-c's import from both clusters, with cluster-a's two endpoints",
        WAIT,
        || async {
            let text = set.why(2, name, &[]);
            (text.contains("from cluster-a, cluster-b") && text.contains("2 endpoints, 1 ready"))
                .then_some(text)
        },
    )
    .await;
    let ip_c = set.get(2, "demo", "serviceimport/hello", "{.spec.ips[0]}");
    assert!(!ip_c.is_empty());
    assert!(
        text.starts_with("hello.demo.svc.clusterset.local.  (asked of cluster-c's mcsd, leader)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("A     NOERROR  {ip_c}")),
        "the clusterset IP answered:\n{text}"
    );
    assert!(text.contains("AAAA  NOERROR  (no records)"), "{text}");
    assert!(
        text.contains("SRV   NOERROR  0 100 80 hello.demo.svc.clusterset.local."),
        "{text}"
    );
    assert!(text.contains("ClustersExcluded=False NoneExcluded"), "{text}");
    assert!(text.contains("cluster-b    exports since"), "{text}");
    assert!(
        text.contains("serves none of the import's ports [peer synced]"),
        "{text}"
    );
    assert!(text.contains("exported ports: http 8080/TCP"), "{text}");
    assert!(text.contains("conflict PortConflict"), "{text}");
    assert!(
        text.contains("cluster-b: none of its endpoints are imported: its ports lost a port conflict (import ports: http 80/TCP)"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{unready_ip} (cluster-a): not ready: receives no traffic"
        )),
        "{text}"
    );

    // The same, for scripts.
    let json: serde_json::Value = serde_json::from_str(&set.why(2, name, &["-o", "json"])).unwrap();
    assert_eq!(json["cluster"], "cluster-c");
    assert_eq!(json["service"], serde_json::json!(["demo", "hello"]));
    assert_eq!(json["answers"][0]["rcode"], "NOERROR");
    assert_eq!(json["answers"][0]["records"], serde_json::json!([ip_c]));
    assert_eq!(json["clusters"][1]["contributes"], false);

    // The exporter sees its own export's conditions.
    let text = set.why(1, name, &[]);
    assert!(text.contains("This cluster exports it:"), "{text}");
    assert!(text.contains("Conflict=True PortConflict"), "{text}");

    // Other names: an SRV name, a name nobody exports, a name outside the zone.
    let text = set.why(2, "_http._tcp.hello.demo.svc.clusterset.local", &[]);
    assert!(
        text.contains("SRV name of port http/tcp of service demo/hello."),
        "{text}"
    );
    assert!(
        text.contains("SRV   NOERROR  0 100 80 hello.demo.svc.clusterset.local."),
        "{text}"
    );
    let text = set.why(2, "nope.demo.svc.clusterset.local", &[]);
    assert!(text.contains("A     NXDOMAIN"), "{text}");
    assert!(text.contains("none exports demo/nope"), "{text}");
    assert!(
        text.contains("No ServiceImport demo/nope in cluster-c: no cluster exports the service"),
        "{text}"
    );
    let text = set.why(2, "hello.demo.svc.cluster.local", &[]);
    assert!(text.contains("A     REFUSED"), "{text}");
    assert!(text.contains("outside the zone"), "{text}");

    set.stop().await;
}

#[test]
fn why_without_a_reachable_mcsd_fails_with_one_line() {
    let out = Command::new(mcsd_binary())
        .args(["why", "hello.demo.svc.clusterset.local", "--admin", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("mcsd: cannot reach mcsd's admin listener at 127.0.0.1:1"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("mcsd-why-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("sandbox.json"),
        r#"[{"name":"cluster-a","kubeconfig":"cluster-a.kubeconfig","api":"https://127.0.0.1:1","dns":"127.0.0.1:1","admin":"127.0.0.1:1"}]"#,
    )
    .unwrap();
    let out = Command::new(mcsd_binary())
        .args(["why", "x.y.svc.clusterset.local", "--sandbox"])
        .arg(&dir)
        .args(["--cluster", "cluster-z"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no cluster cluster-z in") && err.contains("(it has cluster-a)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
