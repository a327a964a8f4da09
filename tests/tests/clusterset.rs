//! The ClusterSet flow end to end on a three-cluster sandbox: `kubectl apply` of a ServiceExport
//! in one cluster gives a ServiceImport, a derived Service and MCS EndpointSlices in every cluster.

use std::time::Duration;

use kube::Api;
use mcsd_crds::{mcs::v1beta1::ServiceExport, names};
use mcsd_tests::{
    Answer, ClusterSet, WAIT, dig, eventually,
    fixtures::{
        exported_everywhere_then_withdrawn, hello_export as export, hello_import as import_in, namespace,
        two_port_hello as hello,
    },
    kubectl, kubectl_refused,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_cluster_ip_service_is_imported_in_every_cluster_and_withdrawn_on_unexport() {
    let set = exported_everywhere_then_withdrawn(ClusterSet::with_namespace(3, "demo").await).await;
    set.stop().await;
}

fn service_with_ports(ns: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: hello, namespace: {ns}}}\nspec:\n  selector: {{app: hello}}\n  ports: {ports}\n"
    )
}

async fn conflict_of(set: &ClusterSet, i: usize, ns: &str) -> Option<(String, String)> {
    export_conditions(set, i, ns)
        .await
        .into_iter()
        .find(|(t, _, _)| t == "Conflict")
        .map(|(_, status, reason)| (status, reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_exporters_with_different_ports_get_the_union_and_a_conflict_on_both_exports() {
    // Conformance #10, and a namespace that appears in cluster-c only after the export.
    let set = ClusterSet::start(3).await;
    for i in 0..2 {
        set.apply(i, &namespace("ports"));
    }
    set.apply(
        0,
        &service_with_ports(
            "ports",
            "[{name: tcp, port: 42, protocol: TCP}, {name: udp, port: 42, protocol: UDP}]",
        ),
    );
    set.apply(0, &export("ports"));
    eventually("cluster-b to import from cluster-a", WAIT, || async {
        import_in(&set, 1, "ports").await
    })
    .await;
    // The second export is younger by at least a second (creationTimestamp precision).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    set.apply(
        1,
        &service_with_ports(
            "ports",
            "[{name: tcp, port: 42, protocol: TCP}, {name: stcp, port: 142, protocol: SCTP}]",
        ),
    );
    set.apply(1, &export("ports"));

    let ports = eventually("the union of the ports", WAIT, || async {
        let import = import_in(&set, 0, "ports").await?;
        let mut ports: Vec<_> = import
            .spec
            .ports
            .iter()
            .map(|p| (p.name.clone().unwrap_or_default(), p.port))
            .collect();
        ports.sort();
        (ports.len() == 3).then_some(ports)
    })
    .await;
    assert_eq!(
        ports,
        [
            ("stcp".to_string(), 142),
            ("tcp".to_string(), 42),
            ("udp".to_string(), 42)
        ]
    );
    for i in 0..2 {
        let conflict = eventually("Conflict on the export", WAIT, || async {
            conflict_of(&set, i, "ports").await.filter(|(s, _)| s == "True")
        })
        .await;
        assert_eq!(conflict.1, "PortConflict");
    }
    let import = import_in(&set, 0, "ports").await.unwrap();
    let clusters: Vec<_> = import
        .status
        .unwrap()
        .clusters
        .into_iter()
        .map(|c| c.cluster)
        .collect();
    assert_eq!(clusters, ["cluster-a", "cluster-b"], "oldest export first");

    // cluster-c has no namespace `ports`: no import, until the namespace is created.
    assert!(import_in(&set, 2, "ports").await.is_none());
    set.apply(2, &namespace("ports"));
    eventually("cluster-c to import once the namespace exists", WAIT, || async {
        import_in(&set, 2, "ports").await
    })
    .await;

    // One exporter leaves: the import stays (conformance #1), the conflict clears.
    set.kubectl(1, &["delete", "serviceexport", "hello", "-n", "ports"]);
    eventually("the conflict to clear on cluster-a", WAIT, || async {
        conflict_of(&set, 0, "ports").await.filter(|(s, _)| s == "False")
    })
    .await;
    assert!(import_in(&set, 2, "ports").await.is_some());
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_name_export_is_invalid_and_imports_nothing() {
    // Conformance #14.
    let set = ClusterSet::with_namespace(2, "ext").await;
    set.apply(
        0,
        "apiVersion: v1\nkind: Service\nmetadata: {name: hello, namespace: ext}\nspec: {type: ExternalName, externalName: example.com}\n",
    );
    set.apply(0, &export("ext"));
    let client = set.members[0].client().await;
    let valid = eventually("Valid=False on the export", WAIT, || {
        let client = client.clone();
        async move {
            let e = Api::<ServiceExport>::namespaced(client, "ext")
                .get("hello")
                .await
                .unwrap();
            e.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Valid" && c.status == "False")
        }
    })
    .await;
    assert_eq!(valid.reason, "InvalidServiceType");
    for i in 0..2 {
        assert!(import_in(&set, i, "ext").await.is_none());
    }
    set.stop().await;
}

async fn export_conditions(set: &ClusterSet, i: usize, ns: &str) -> Vec<(String, String, String)> {
    let client = set.members[i].client().await;
    Api::<ServiceExport>::namespaced(client, ns)
        .get_opt("hello")
        .await
        .unwrap()
        .and_then(|e| e.status)
        .map(|s| {
            s.conditions
                .into_iter()
                .map(|c| (c.type_, c.status, c.reason))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_exporters_created_at_three_times_rank_oldest_first_and_the_oldest_sets_the_properties() {
    let set = ClusterSet::with_namespace(3, "trio").await;
    // Exported youngest-first by cluster id order reversed: c, then b, then a.
    for (step, i) in [2, 1, 0].into_iter().enumerate() {
        let timeout = 10 * (step + 1);
        set.apply(
            i,
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: hello, namespace: trio}}\nspec:\n  selector: {{app: hello}}\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: {timeout}}}}}\n  ports: [{{name: tcp, port: 42, protocol: TCP}}]\n"
            ),
        );
        set.apply(i, &export("trio"));
        eventually("the export to be published", WAIT, || async {
            export_conditions(&set, i, "trio")
                .await
                .contains(&("Ready".into(), "True".into(), "Ready".into()))
                .then_some(())
        })
        .await;
        // creationTimestamp has one-second precision.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    for i in 0..3 {
        let import = eventually("an import listing all three clusters", WAIT, || async {
            import_in(&set, i, "trio")
                .await
                .filter(|imp| imp.status.as_ref().is_some_and(|s| s.clusters.len() == 3))
        })
        .await;
        let clusters: Vec<_> = import
            .status
            .unwrap()
            .clusters
            .into_iter()
            .map(|c| c.cluster)
            .collect();
        assert_eq!(clusters, ["cluster-c", "cluster-b", "cluster-a"], "oldest first");
        // cluster-c exported first: its session affinity timeout (10 s) is the import's.
        assert_eq!(
            import
                .spec
                .session_affinity_config
                .and_then(|c| c.client_ip)
                .and_then(|c| c.timeout_seconds),
            Some(10)
        );
    }
    // The two younger exports lost the session affinity config: Conflict on all three.
    for i in 0..3 {
        eventually("SessionAffinityConfigConflict on every export", WAIT, || async {
            export_conditions(&set, i, "trio")
                .await
                .contains(&(
                    "Conflict".into(),
                    "True".into(),
                    names::conditions::conflict::SESSION_AFFINITY_CONFIG.into(),
                ))
                .then_some(())
        })
        .await;
    }
    // The oldest leaves: cluster-b's export is now the oldest and its timeout (20 s) wins.
    set.kubectl(2, &["delete", "serviceexport", "hello", "-n", "trio"]);
    eventually("cluster-b's properties to take over", WAIT, || async {
        let import = import_in(&set, 0, "trio").await?;
        (import
            .spec
            .session_affinity_config
            .and_then(|c| c.client_ip)
            .and_then(|c| c.timeout_seconds)
            == Some(20))
        .then_some(())
    })
    .await;
    set.stop().await;
}

/// Two clusters with namespace `ns`; `hello` exported from cluster-a and imported in cluster-b.
async fn exported_from_a_to_b(ns: &str) -> ClusterSet {
    let set = ClusterSet::with_namespace(2, ns).await;
    set.apply(0, &hello(ns));
    set.apply(0, &export(ns));
    eventually("cluster-b to import", WAIT, || async {
        import_in(&set, 1, ns).await
    })
    .await;
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_deleted_under_its_export_makes_it_invalid_and_withdraws_the_import() {
    let set = exported_from_a_to_b("gone").await;
    set.kubectl(0, &["delete", "service", "hello", "-n", "gone"]);
    eventually("Valid=False NoService on the export", WAIT, || async {
        export_conditions(&set, 0, "gone")
            .await
            .contains(&("Valid".into(), "False".into(), "NoService".into()))
            .then_some(())
    })
    .await;
    for i in 0..2 {
        eventually("the import to go", WAIT, || async {
            import_in(&set, i, "gone").await.is_none().then_some(())
        })
        .await;
    }
    // The exchange record is withdrawn too: nothing of the service is left for peers.
    let records = set.kubectl(
        0,
        &[
            "get",
            "configmaps",
            "-n",
            "mcsd-system",
            "-l",
            "mcsd.io/exchange",
            "-o",
            "name",
        ],
    );
    assert!(!records.contains("gone.hello"), "{records}");
    // The Service comes back: so does the import.
    set.apply(0, &hello("gone"));
    eventually("the import to return", WAIT, || async {
        import_in(&set, 1, "gone").await
    })
    .await;
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_credentials_read_the_exchange_namespace_and_nothing_else() {
    let set = exported_from_a_to_b("secret-stuff").await;
    // The peer identity `manifests/rbac.yaml` makes, `mcsd-peer`, as a peer holding its token
    // uses it (`mcsd join`'s own identities are checked in join.rs).
    let peer = set.kubeconfig_as(0, "mcsd-system", "mcsd-peer");
    // Allowed: the exchange records and mirrored slices, read-only.
    kubectl(
        &peer,
        &["get", "configmaps", "-n", "mcsd-system", "-l", "mcsd.io/exchange"],
    );
    kubectl(&peer, &["get", "endpointslices", "-n", "mcsd-system"]);
    // Refused: writing them, and reading anything beyond the namespace.
    for args in [
        &["delete", "configmap", "secret-stuff.hello", "-n", "mcsd-system"][..],
        &["get", "secrets", "-n", "mcsd-system"],
        &["get", "configmaps", "-n", "secret-stuff"],
        &["get", "services", "-n", "secret-stuff"],
        &["get", "endpointslices", "-n", "secret-stuff"],
        &["get", "serviceexports", "-A"],
        &["get", "pods", "-A"],
    ] {
        let refused = kubectl_refused(&peer, args);
        assert!(refused.contains("forbidden"), "{args:?}: {refused}");
    }
    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_turning_unready_leaves_the_dns_answer_of_every_cluster_and_returns_when_ready() {
    let set = ClusterSet::with_namespace(3, "flaky").await;
    set.apply(
        0,
        r#"apiVersion: v1
kind: Service
metadata: {name: db, namespace: flaky}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: flaky, labels: {app: db}}
spec: {hostname: db-0, subdomain: db, containers: [{name: db, image: postgres}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: flaky, labels: {app: db}}
spec: {hostname: db-1, subdomain: db, containers: [{name: db, image: postgres}]}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: db, namespace: flaky}
"#,
    );
    let ip = |pod: &'static str| {
        let set = &set;
        eventually("the pod's IP", WAIT, move || async move {
            let ip = set.kubectl(
                0,
                &["get", "pod", pod, "-n", "flaky", "-o", "jsonpath={.status.podIP}"],
            );
            (!ip.is_empty()).then_some(ip)
        })
    };
    let (ip0, ip1) = (ip("db-0").await, ip("db-1").await);
    let name = "db.flaky.svc.clusterset.local";
    let dns_c = set.members[2].dns;
    eventually("both pods in cluster-c's answer", WAIT, || async {
        (dig(&dns_c, name, "A") == Answer::ok(&[&ip0, &ip1])).then_some(())
    })
    .await;
    let readiness = |ready: &str| {
        set.kubectl(
            0,
            &[
                "patch",
                "pod",
                "db-1",
                "-n",
                "flaky",
                "--subresource=status",
                "--type=strategic",
                "-p",
                &format!(r#"{{"status":{{"conditions":[{{"type":"Ready","status":"{ready}"}}]}}}}"#),
            ],
        )
    };
    readiness("False");
    for i in 0..3 {
        let dns = set.members[i].dns;
        eventually("the unready pod to leave the answer", WAIT, || async {
            (dig(&dns, name, "A") == Answer::ok(&[&ip0])).then_some(())
        })
        .await;
    }
    // Its own name gives no address while it is unready.
    let own = dig(&dns_c, "db-1.cluster-a.db.flaky.svc.clusterset.local", "A");
    assert!(own.records.is_empty(), "{own:?}");
    readiness("True");
    eventually("the pod to return", WAIT, || async {
        (dig(&dns_c, name, "A") == Answer::ok(&[&ip0, &ip1])).then_some(())
    })
    .await;
    set.stop().await;
}

/// What one export costs in writes, read from each mcsd's `/metrics` as an operator would: an
/// importing cluster writes the derived Service, the ServiceImport (once, already carrying the
/// Service's IP), the import's status and one EndpointSlice; the exporting cluster also writes its
/// exchange record, the mirrored slice its peers read, and the export's conditions once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_export_costs_an_importing_cluster_four_writes_and_its_own_cluster_seven() {
    let ns = "thrifty";
    let set = ClusterSet::with_namespace(3, ns).await;
    let mut before = Vec::new();
    for member in &set.members {
        before.push(member.writes().await);
    }
    mcsd_tests::fixtures::export_when_ready(&set, 0, ns, "one").await;
    // Done everywhere: the import's status (each importer's last write) names cluster-a, and
    // the export says it is unconflicted (the exporter's last).
    for i in 0..3 {
        eventually(&format!("one's import status in cluster {i}"), WAIT, || async {
            let clusters = set.get(i, ns, "serviceimport/one", "{.status.clusters[*].cluster}");
            let ips = set.get(i, ns, "serviceimport/one", "{.spec.ips[*]}");
            (clusters.trim() == "cluster-a" && !ips.trim().is_empty()).then_some(())
        })
        .await;
    }
    eventually("one's export to say Conflict=False", WAIT, || async {
        let conflict = set.get(
            0,
            ns,
            "serviceexport/one",
            r#"{.status.conditions[?(@.type=="Conflict")].status}"#,
        );
        (conflict.trim() == "False").then_some(())
    })
    .await;
    let apply = |kind: &str, n: u64| ((kind.to_string(), "apply".to_string()), n);
    let importing: std::collections::BTreeMap<_, _> = [
        apply("EndpointSlice", 1),
        apply("Service", 1),
        apply("ServiceImport", 1),
        apply("ServiceImport/status", 1),
    ]
    .into();
    let mut exporting = importing.clone();
    exporting.extend([
        apply("ConfigMap", 1),
        apply("EndpointSlice", 2),
        apply("ServiceExport/status", 1),
    ]);
    assert_eq!(
        set.members[0].writes_since(&before[0]).await,
        exporting,
        "cluster-a"
    );
    for (member, before) in set.members.iter().zip(&before).skip(1) {
        assert_eq!(member.writes_since(before).await, importing, "{}", member.name);
    }
    set.stop().await;
}
