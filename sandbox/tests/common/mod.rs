//! Helpers shared by the sandbox's tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use mcsd_sandbox::{Cluster, ClusterConfig};
use serde_json::{Value, json};

/// A cluster with bookmarks every 100 ms.
pub async fn cluster() -> Cluster {
    cluster_with(|_| {}).await
}

/// A cluster with a tweaked configuration.
pub async fn cluster_with(f: impl FnOnce(&mut ClusterConfig)) -> Cluster {
    let mut config = ClusterConfig::nth(0);
    config.bookmark_interval = Duration::from_millis(100);
    f(&mut config);
    Cluster::start(config).await.expect("the cluster starts")
}

/// Polls `f` until it returns `Some`, failing after 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A dynamic API for a group/version/kind/plural.
pub fn dynamic(
    client: &kube::Client,
    gvk: (&str, &str, &str),
    plural: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(gvk.0, gvk.1, gvk.2), plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Creates a namespace.
pub async fn namespace(client: &kube::Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).expect("a namespace");
    api.create(&PostParams::default(), &ns)
        .await
        .expect("the namespace is created");
}

/// Builds a typed object from JSON.
pub fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("the JSON matches the type")
}

/// The `code` of a kube API error.
pub fn code<T: std::fmt::Debug>(r: kube::Result<T>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The API error.
pub fn status<T: std::fmt::Debug>(r: kube::Result<T>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Creates ConfigMaps `cm-0000` … in `ns` through the sandbox's own API (thousands in
/// milliseconds), labelled `parity: even|odd`; returns their names in list order.
pub fn config_maps(cluster: &Cluster, ns: &str, n: usize) -> Vec<String> {
    let api = cluster.api();
    let info = api.resource("", "configmaps").expect("configmaps are served");
    let ctx = mcsd_sandbox::api::Ctx::system("seed");
    (0..n)
        .map(|i| {
            let name = format!("cm-{i:04}");
            let parity = if i % 2 == 0 { "even" } else { "odd" };
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "labels": {"parity": parity}}});
            api.create(&info, "v1", ns, body, &ctx)
                .expect("the ConfigMap is created");
            name
        })
        .collect()
}
