//! What the end-to-end stories apply and wait for, written once: namespaces, the README's
//! `hello` (a Deployment behind a Service, exported), a one-pod Service exported by name, and
//! waiting for a name to resolve. Each returns YAML for `kubectl apply` or drives kubectl, so it
//! works the same on sandbox and real clusters.

use std::{net::SocketAddr, path::PathBuf};

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
    set.apply(i, &export_of(ns, name));
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
