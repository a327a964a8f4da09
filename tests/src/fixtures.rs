//! What the end-to-end stories apply and wait for, written once: namespaces, the README's
//! `hello` (a Deployment behind a Service, exported), a one-pod Service exported by name, and
//! waiting for a name to resolve. Each returns YAML for `kubectl apply` or drives kubectl, so it
//! works the same on sandbox and real clusters.

use std::{net::SocketAddr, path::PathBuf};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{Api, api::ListParams};
use mcsd_crds::{
    mcs::{
        ServiceImportType,
        v1beta1::{ServiceExport, ServiceImport},
    },
    names,
};

use crate::{ClusterSet, WAIT, dig, eventually, kubectl, repo_root};

/// A Namespace `ns`.
pub fn namespace(ns: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")
}

/// A ClusterSetIP Service `name` (port `http` 80) selecting one pod of its own, both named `name`.
pub fn served(ns: &str, name: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {{app: {name}}}, ports: [{{name: http, port: 80}}]}}\n\
         ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\nspec: {{containers: [{{name: c, image: nginx}}]}}\n"
    )
}

/// The ServiceExport of `name`.
pub fn export_of(ns: &str, name: &str) -> String {
    format!(
        "---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {{name: {name}, namespace: {ns}}}\n"
    )
}

/// [`served`] and [`export_of`] together.
pub fn exported(ns: &str, name: &str) -> String {
    format!("{}{}", served(ns, name), export_of(ns, name))
}

/// Exports `name` ([`served`]) from cluster `i` once its endpoint is ready there, so that every
/// importer sees it arrive in one state: what each writes for it is then the same, whatever its
/// timing.
pub async fn export_when_ready(set: &ClusterSet, i: usize, ns: &str, name: &str) {
    served_and_ready(set, i, ns, name).await;
    set.apply(i, &export_of(ns, name));
}

/// Serves `name` ([`served`]) in cluster `i` and waits until its endpoint is ready there.
pub async fn served_and_ready(set: &ClusterSet, i: usize, ns: &str, name: &str) {
    set.apply(i, &served(ns, name));
    eventually(
        &format!("{name}'s endpoint ready in cluster {i}"),
        WAIT,
        || async {
            let ready = set.kubectl(
                i,
                &[
                    "get",
                    "endpointslices",
                    "-n",
                    ns,
                    "-l",
                    &format!("kubernetes.io/service-name={name}"),
                    "-o",
                    "jsonpath={.items[*].endpoints[*].conditions.ready}",
                ],
            );
            (ready.trim() == "true").then_some(())
        },
    )
    .await;
}

/// Deletes, in cluster `exporter`, the RoleBinding `mcsd join` made to let `importer`'s peer
/// identity mint its own tokens: that importer's next renewal is refused.
pub fn refuse_renewals(set: &ClusterSet, exporter: usize, importer: &str) {
    let binding = format!("mcsd-peer-{importer}-renew");
    set.kubectl(
        exporter,
        &["delete", "rolebinding", &binding, "-n", "mcsd-system"],
    );
}

/// Waits until `server` answers `name` with one address; returns it.
pub async fn resolved(server: SocketAddr, name: &str) -> String {
    eventually(&format!("{name} to resolve"), WAIT, || async {
        let a = dig(&server, name, "A");
        (a.status == "NOERROR" && a.records.len() == 1).then(|| a.records[0].clone())
    })
    .await
}

/// Waits until `server` answers `name` with NXDOMAIN (withdrawn, or never imported).
pub async fn withdrawn(server: SocketAddr, name: &str) {
    eventually(&format!("{name} to be withdrawn"), WAIT, || async {
        (dig(&server, name, "A").status == "NXDOMAIN").then_some(())
    })
    .await;
}

/// The README's first walkthrough, by kubectl: namespace `demo` in every cluster of
/// `kubeconfigs`, then in `kubeconfigs[from]` the Deployment `hello` (two replicas, rolled out),
/// `docs/examples/hello.yaml` (its Service and ServiceExport) applied, and the export Ready.
pub fn export_hello_as_the_readme_does(kubeconfigs: &[PathBuf], from: usize) {
    for k in kubeconfigs {
        kubectl(k, &["create", "namespace", "demo"]);
    }
    let example = repo_root().join("docs/examples/hello.yaml");
    for args in [
        &[
            "-n",
            "demo",
            "create",
            "deployment",
            "hello",
            "--image=nginx",
            "--replicas=2",
            "--port=8080",
        ][..],
        &["-n", "demo", "rollout", "status", "deployment/hello"],
        &["apply", "-f", example.to_str().expect("a UTF-8 path")],
        &[
            "-n",
            "demo",
            "wait",
            "--for=condition=Ready",
            "serviceexport/hello",
        ],
    ] {
        kubectl(&kubeconfigs[from], args);
    }
}

/// `hello` in `ns`: a ClusterIP Service with a TCP and a UDP port 42 and ClientIP session
/// affinity, and its one pod.
pub fn two_port_hello(ns: &str) -> String {
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

/// The ServiceExport of `hello` in `ns`.
pub fn hello_export(ns: &str) -> String {
    format!(
        "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {{name: hello, namespace: {ns}}}\n"
    )
}

/// The ServiceImport of `hello` in `ns` in cluster `i`, if any.
pub async fn hello_import(set: &ClusterSet, i: usize, ns: &str) -> Option<ServiceImport> {
    let client = set.members[i].client().await;
    Api::<ServiceImport>::namespaced(client, ns)
        .get_opt("hello")
        .await
        .unwrap()
}

/// Exports `demo/hello` from the first of three clusters, checks its import, derived Service and
/// slices in every cluster and its conditions, unexports it and waits for every import to go.
pub async fn exported_everywhere_then_withdrawn(set: ClusterSet) -> ClusterSet {
    set.apply(0, &two_port_hello("demo"));
    set.apply(0, &hello_export("demo"));

    for i in 0..3 {
        let import = eventually("a ClusterSetIP import with an IP", WAIT, || async {
            hello_import(&set, i, "demo")
                .await
                .filter(|imp| !imp.spec.ips.is_empty())
        })
        .await;
        assert_eq!(import.spec.type_, ServiceImportType::ClusterSetIP);
        assert_eq!(import.spec.ports.len(), 2);
        assert_eq!(import.spec.ips.len(), import.spec.ip_families.len());
        let client = set.members[i].client().await;
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
    let client = set.members[0].client().await;
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
            hello_import(&set, i, "demo").await.is_none().then_some(())
        })
        .await;
    }
    set
}
