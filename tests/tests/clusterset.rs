//! The ClusterSet flow end to end on a three-cluster sandbox: `kubectl apply` of a ServiceExport
//! in one cluster gives a ServiceImport, a derived Service and MCS EndpointSlices in every cluster.

use std::time::Duration;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{Api, api::ListParams};
use mcsd_crds::{
    mcs::{
        ServiceImportType,
        v1beta1::{ServiceExport, ServiceImport},
    },
    names,
};
use mcsd_tests::{ClusterSet, eventually};

const WAIT: Duration = Duration::from_secs(20);

fn namespace(ns: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")
}

fn hello(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: hello, namespace: {ns}}}
spec:
  selector: {{app: hello}}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 10}}}}
  ports:
  - {{name: tcp, port: 42, protocol: TCP, targetPort: 8042}}
  - {{name: udp, port: 42, protocol: UDP, targetPort: 8042}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hello-0, namespace: {ns}, labels: {{app: hello}}}}
spec:
  containers:
  - name: hello
    image: alpine/socat
    ports: [{{containerPort: 8042}}]
"#
    )
}

fn export(ns: &str) -> String {
    format!(
        "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {{name: hello, namespace: {ns}}}\n"
    )
}

async fn import_in(set: &ClusterSet, i: usize, ns: &str) -> Option<ServiceImport> {
    let client = set.members[i].cluster.admin_client().await.unwrap();
    Api::<ServiceImport>::namespaced(client, ns)
        .get_opt("hello")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_cluster_ip_service_is_imported_in_every_cluster_and_withdrawn_on_unexport() {
    let set = ClusterSet::start(3).await;
    for i in 0..3 {
        set.apply(i, &namespace("demo"));
    }
    set.apply(0, &hello("demo"));
    set.apply(0, &export("demo"));

    for i in 0..3 {
        let import = eventually("a ClusterSetIP import with an IP", WAIT, || async {
            import_in(&set, i, "demo")
                .await
                .filter(|imp| !imp.spec.ips.is_empty())
        })
        .await;
        assert_eq!(import.spec.type_, ServiceImportType::ClusterSetIP);
        assert_eq!(import.spec.ports.len(), 2);
        assert_eq!(import.spec.ips.len(), import.spec.ip_families.len());
        let client = set.members[i].cluster.admin_client().await.unwrap();
        // The clusterset IP is the derived Service's cluster IP, from this cluster's range.
        let derived = Api::<Service>::namespaced(client.clone(), "demo")
            .get(&names::derived_service_name("demo", "hello"))
            .await
            .unwrap();
        assert_eq!(
            derived.spec.unwrap().cluster_ip.as_deref(),
            Some(import.spec.ips[0].as_str())
        );
        assert!(
            import.spec.ips[0].starts_with(&format!("10.{}.", 96 + i)),
            "{:?}",
            import.spec.ips
        );
        // Session affinity is copied.
        assert_eq!(
            import
                .spec
                .session_affinity_config
                .unwrap()
                .client_ip
                .unwrap()
                .timeout_seconds,
            Some(10)
        );
        // MCS EndpointSlices with the required labels, holding cluster-a's pod.
        let slices = eventually("an MCS EndpointSlice with an endpoint", WAIT, || {
            let client = client.clone();
            async move {
                let slices = Api::<EndpointSlice>::namespaced(client, "demo")
                    .list(&ListParams::default().labels(&format!("{}=hello", names::LABEL_SERVICE_NAME)))
                    .await
                    .unwrap();
                Some(slices.items).filter(|s| s.iter().any(|s| !s.endpoints.is_empty()))
            }
        })
        .await;
        let labels = slices[0].metadata.labels.clone().unwrap();
        assert_eq!(labels[names::LABEL_SOURCE_CLUSTER], "cluster-a");
        assert_eq!(labels[names::LABEL_MANAGED_BY], "mcsd.io");
        assert_eq!(
            labels[names::LABEL_KUBERNETES_SERVICE_NAME],
            names::derived_service_name("demo", "hello")
        );
        assert!(
            slices[0].endpoints[0].addresses[0].starts_with("10.160."),
            "cluster-a's pod range"
        );
    }

    // The export says it is valid, published, and unconflicted.
    let client = set.members[0].cluster.admin_client().await.unwrap();
    let conditions = eventually("Valid, Ready and Conflict on the export", WAIT, || {
        let client = client.clone();
        async move {
            let e = Api::<ServiceExport>::namespaced(client, "demo")
                .get("hello")
                .await
                .unwrap();
            let c = e.status.map(|s| s.conditions).unwrap_or_default();
            (c.len() == 3).then_some(c)
        }
    })
    .await;
    let got: Vec<_> = conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(got, [("Valid", "True"), ("Ready", "True"), ("Conflict", "False")]);

    // Unexport: the import goes everywhere.
    set.kubectl(0, &["delete", "serviceexport", "hello", "-n", "demo"]);
    for i in 0..3 {
        eventually("the import to go", WAIT, || async {
            import_in(&set, i, "demo").await.is_none().then_some(())
        })
        .await;
    }
    set.stop().await;
}
