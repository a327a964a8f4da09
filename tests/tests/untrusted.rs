//! A compromised member cluster: its mcsd kept from writing, its admin writes exchange records by
//! hand (`docs/exchange.md`) into its own exchange namespace, as an attacker with admin rights
//! there could. Its peers read them; the guard decides what they take (`controller/src/core/guard.rs`).
//! What this test proves is the wiring and the reporting: a refused record or address never
//! reaches an import or a DNS answer, the legitimate endpoints of the same service still answer,
//! the honest peer's services are untouched, and the refusals show in
//! `mcsd_peer_records_refused_total` and `mcsd why`. Every refusal the guard makes (names,
//! sizes, limits, each kind of address) is tested, one per row, in `controller/src/core/gate.rs`.

use mcsd_tests::{Answer, ClusterSet, WAIT, admin_get, dig, eventually, label, metric_values};
use serde_json::json;

/// The export record cluster `cluster` would publish for `ns/name`, as a ConfigMap.
fn record(
    cluster: &str,
    ns: &str,
    name: &str,
    type_: &str,
    ports: serde_json::Value,
    padding: usize,
) -> serde_json::Value {
    let mut export = json!({
        "cluster": cluster, "namespace": ns, "name": name,
        "exportCreated": "2026-01-01T00:00:00Z", "type": type_, "ports": ports,
        "sessionAffinity": "None", "ipFamilies": ["IPv4", "IPv6"], "internalTrafficPolicy": "Cluster",
    });
    if padding > 0 {
        export["exportedAnnotations"] = json!({"padding": "x".repeat(padding)});
    }
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": format!("{ns}.{name}"), "namespace": "mcsd-system",
            "labels": {"mcsd.io/exchange": "v1", "mcsd.io/service-namespace": ns, "mcsd.io/service-name": name},
        },
        "data": {"export.json": export.to_string()},
    })
}

/// A mirrored EndpointSlice of `ns/name`, as cluster-c's exchange namespace would hold it.
fn mirror(
    ns: &str,
    name: &str,
    slice: &str,
    address_type: &str,
    endpoints: serde_json::Value,
    port_name: &str,
) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{ns}.{slice}"), "namespace": "mcsd-system",
            "labels": {
                "mcsd.io/exchange": "v1", "mcsd.io/service-namespace": ns, "mcsd.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "mcsd.io",
            },
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": port_name, "protocol": "TCP", "port": 5432}],
    })
}

fn endpoints(addresses: &[&str]) -> serde_json::Value {
    json!(
        addresses
            .iter()
            .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
            .collect::<Vec<_>>()
    )
}

/// `mcsd_peer_records_refused_total{peer="cluster-c",reason}` in cluster-a's mcsd.
async fn refused(set: &ClusterSet, reason: &str) -> f64 {
    metric_values(
        &admin_get(set.members[0].admin, "/metrics").await,
        "mcsd_peer_records_refused_total",
    )
    .into_iter()
    .filter(|(labels, _)| {
        label(labels, "peer") == Some("cluster-c") && label(labels, "reason") == Some(reason)
    })
    .map(|(_, v)| v)
    .sum()
}

async fn refused_at_least(set: &ClusterSet, reason: &str, n: f64) {
    eventually(&format!("cluster-a to count {reason}"), WAIT, || async {
        (refused(set, reason).await >= n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_member_puts_nothing_forbidden_into_another_cluster() {
    let options = mcsd::process::sandbox::Options {
        limits: mcsd::core::guard::Limits {
            records: 5,
            endpoints_per_service: 4,
            bytes_per_record: 64 * 1024,
        },
        // cluster-c declared its ranges (its pod networks): only addresses inside are taken.
        peer_ranges: [(
            "cluster-c".parse().unwrap(),
            vec![
                "10.3.0.0/16".parse().unwrap(),
                "fd00:10:244:3::/64".parse().unwrap(),
            ],
        )]
        .into(),
        ..Default::default()
    };
    // cluster-a: the victim importer; cluster-b: an honest exporter; cluster-c: compromised.
    let set = ClusterSet::sandbox_with_namespace(3, "apps", options).await;
    set.apply(
        1,
        r#"apiVersion: v1
kind: Service
metadata: {name: db, namespace: apps}
spec: {clusterIP: None, selector: {app: db}, ipFamilyPolicy: PreferDualStack, ports: [{name: pg, port: 5432}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-b, namespace: apps, labels: {app: db}}
spec: {containers: [{name: db, image: postgres}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: apps}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, namespace: apps, labels: {app: web}}
spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: db, namespace: apps}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: web, namespace: apps}
"#,
    );
    let dns_a = set.members[0].dns;
    let db = "db.apps.svc.clusterset.local";
    let honest_ip = eventually("cluster-b's db endpoint in cluster-a", WAIT, || async {
        let a = dig(&dns_a, db, "A");
        (a.records.len() == 1).then(|| a.records[0].clone())
    })
    .await;
    let web = eventually("cluster-b's web in cluster-a", WAIT, || async {
        let a = dig(&dns_a, "web.apps.svc.clusterset.local", "A");
        (a.records.len() == 1).then_some(a)
    })
    .await;

    // cluster-c is taken over: its mcsd no longer writes, its admin does.
    set.members[2].stop_mcsd().cancel();
    set.members[2].daemon().stopped().await;
    let c = |doc: serde_json::Value| set.apply(2, &doc.to_string());
    let tcp_pg = json!([{"name": "pg", "protocol": "TCP", "port": 5432}]);

    // 1. Imports into kube-system and into mcsd's own namespace.
    for ns in ["kube-system", "mcsd-system"] {
        c(record("cluster-c", ns, "evil", "ClusterSetIP", tcp_pg.clone(), 0));
        c(mirror(
            ns,
            "evil",
            "evil-1",
            "IPv4",
            endpoints(&["10.3.0.66"]),
            "pg",
        ));
    }
    refused_at_least(&set, "namespace_denied", 4.0).await;
    for ns in ["kube-system", "mcsd-system"] {
        let imports = set.kubectl(0, &["get", "serviceimports", "-n", ns, "-o", "name"]);
        assert!(imports.trim().is_empty(), "an import in {ns}: {imports}");
        assert_eq!(
            dig(&dns_a, &format!("evil.{ns}.svc.clusterset.local"), "A").status,
            "NXDOMAIN"
        );
    }

    // 2. Addresses no endpoint can have, next to real ones, for the honest peer's headless db.
    // kube-apiserver refuses to store most of them (as the sandbox does); a compromised member's
    // API server is the attacker's, though, and serves what it likes: written past validation.
    c(record("cluster-c", "apps", "db", "Headless", tcp_pg.clone(), 0));
    let served_anyway = |doc: serde_json::Value| {
        let key = mcsd_sandbox::store::ObjectKey {
            gr: mcsd_sandbox::store::GroupResource::new("discovery.k8s.io", "endpointslices"),
            namespace: "mcsd-system".into(),
            name: doc["metadata"]["name"].as_str().unwrap().into(),
        };
        set.members[2].cluster().api().store().create(key, doc).unwrap();
    };
    served_anyway(mirror(
        "apps",
        "db",
        "db-v4",
        "IPv4",
        endpoints(&["169.254.169.254", "10.4.0.1", "10.3.0.7"]),
        "pg",
    ));
    served_anyway(mirror(
        "apps",
        "db",
        "db-v6",
        "IPv6",
        endpoints(&["::1", "fd00:10:244:3::9"]),
        "pg",
    ));
    eventually("cluster-c's real endpoint beside cluster-b's", WAIT, || async {
        (dig(&dns_a, db, "A") == Answer::ok(&[&honest_ip, "10.3.0.7"])).then_some(())
    })
    .await;
    let aaaa = dig(&dns_a, db, "AAAA");
    assert!(aaaa.records.contains(&"fd00:10:244:3::9".to_string()), "{aaaa:?}");
    assert!(aaaa.records.iter().all(|r| r != "::1"), "{aaaa:?}");
    for reason in ["address_loopback", "address_link_local", "address_outside_ranges"] {
        refused_at_least(&set, reason, 1.0).await;
    }
    let why = set.why(0, db, &[]);
    assert!(
        why.contains("cluster-c's endpoint 169.254.169.254 is link-local"),
        "{why}"
    );
    assert!(why.contains("cluster-c's endpoint ::1 is loopback"), "{why}");

    // 3. More records than a peer may publish (5; it has one, db): the excess is refused, and
    // the count the limit uses follows what the view holds.
    for i in 0..6 {
        c(record(
            "cluster-c",
            "apps",
            &format!("svc-{i}"),
            "ClusterSetIP",
            tcp_pg.clone(),
            0,
        ));
    }
    refused_at_least(&set, "too_many_records", 2.0).await;
    let imports = set.kubectl(0, &["get", "serviceimports", "-n", "apps", "-o", "name"]);
    let from_c = imports.lines().filter(|l| l.contains("svc-")).count();
    assert_eq!(
        from_c, 4,
        "cluster-c may hold five records in cluster-a: {imports}"
    );

    // The honest peer is untouched, and so is the local namespace policy's answer.
    assert_eq!(dig(&dns_a, "web.apps.svc.clusterset.local", "A"), web);
    set.apply(
        0,
        "apiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: kube-system}\nspec: {ports: [{name: dns, port: 53, protocol: UDP}]}\n---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {name: dns, namespace: kube-system}\n",
    );
    eventually("Valid=False NamespaceDenied on the kube-system export", WAIT, || async {
        let c = set.kubectl(
            0,
            &["get", "serviceexport", "dns", "-n", "kube-system", "-o", r#"jsonpath={.status.conditions[?(@.type=="Valid")].reason}: {.status.conditions[?(@.type=="Valid")].message}"#],
        );
        (c.starts_with("NamespaceDenied") && c.contains("--allow-namespace=kube-system")).then_some(())
    })
    .await;
    set.stop().await;
}
