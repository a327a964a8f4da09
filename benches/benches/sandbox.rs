//! Sandbox throughput: 10,000 creates over HTTPS while three watchers follow, then a list of the
//! 10,000 objects. Run with `cargo bench -p mcsd-benches --bench sandbox`.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use mcsd_sandbox::{Cluster, ClusterConfig};

const OBJECTS: usize = 10_000;
const WATCHERS: usize = 3;
const IN_FLIGHT: usize = 64;

#[tokio::main]
async fn main() {
    let mut config = ClusterConfig::nth(0);
    config.install_crds = false;
    let cluster = Cluster::start(config).await.expect("the sandbox starts");
    let client = cluster.admin_client().await.expect("a client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let cms = cms.clone();
        let rv = rv.clone();
        watchers.push(tokio::spawn(async move {
            let mut stream = cms
                .watch(&WatchParams::default().disable_bookmarks(), &rv)
                .await
                .unwrap()
                .boxed();
            let mut seen = 0;
            while seen < OBJECTS {
                match stream.try_next().await.unwrap().expect("the watch stays open") {
                    WatchEvent::Added(_) => seen += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            Instant::now()
        }));
    }

    let start = Instant::now();
    futures::stream::iter(0..OBJECTS)
        .map(|i| {
            let cms = cms.clone();
            async move {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("cm-{i:05}"), "labels": {"bench": "sandbox"}},
                    "data": {"index": i.to_string()},
                }))
                .unwrap();
                cms.create(&PostParams::default(), &cm).await.unwrap();
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    let written = start.elapsed();
    let mut last_seen = start;
    for w in watchers {
        last_seen = last_seen.max(w.await.unwrap());
    }
    let followed = last_seen.duration_since(start);

    let list_start = Instant::now();
    let list = cms.list(&ListParams::default()).await.unwrap();
    let listed = list_start.elapsed();
    assert_eq!(list.items.len(), OBJECTS);

    let rate = |d: Duration| OBJECTS as f64 / d.as_secs_f64();
    println!(
        "sandbox: {OBJECTS} creates ({IN_FLIGHT} in flight, HTTPS, kube-rs) in {:.2?}: {:.0} writes/s",
        written,
        rate(written)
    );
    println!(
        "sandbox: all {WATCHERS} watchers saw every event {:.2?} after the first write ({:.2?} after the last)",
        followed,
        followed.saturating_sub(written)
    );
    println!("sandbox: list of {OBJECTS} objects in {:.2?}", listed);
    cluster.shutdown().await;
}
