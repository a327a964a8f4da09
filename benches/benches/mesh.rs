//! Full mesh beside the hub (issue #24): what a mesh of N real clusters costs each cluster, to
//! set beside `benches/hub.rs`. Every cluster's mcsd follows the N−1 others (a watch of each
//! one's records and slices, a credential for each), and each cluster's kube-apiserver serves the
//! watches of N−1 peers: the cost per cluster grows with N, where a hub member's does not.
//!
//! On the real tier's mesh (`tests/kube/up.sh --clusters 8`), for each N of `MESH_SIZES` (default
//! `8,4,2`, largest first; the mesh is made with `mcsd join`, and shrunk with `mcsd leave` of
//! every pair, then `mcsd join` of the first N):
//! - **settle**: every mcsd of the first N is synced with its N−1 peers;
//! - **quiet** (20 s): each cluster's kube-apiserver and mcsd CPU with nothing changing;
//! - **churn** for `MESH_WINDOW` seconds (default 60): cluster-a exports `MESH_RECORDS` services
//!   (default 5; selector-less, one hand-written EndpointSlice each) and changes one of their
//!   slices `MESH_CHURN` times a minute (default 300, at random moments); then, the churn going
//!   on, `MESH_PROBES` exports (default 10) are made one after another in cluster-a and the last
//!   cluster's DNS is asked every 5 ms until it answers;
//! - **report**: cluster-a's kube-apiserver CPU above its quiet rate per change and per change
//!   sent to a peer (what the hub's kube-apiserver spends per event delivered, in a mesh the
//!   exporter's), the importers' kube-apiserver and mcsd CPU above their quiet rate per change
//!   (importing it: the same work in hub mode), each cluster's quiet rate (the cost of holding
//!   the mesh), mcsd and kube-apiserver resident memory, and export → answer p50, p99 and max.
//!
//! Run: `tests/kube/up.sh --release --clusters 8 --no-pod-network --dir /tmp/km8` until
//! `clusterset ready`, then
//! `MCSD_E2E_CLUSTERSET=/tmp/km8 cargo bench -p mcsd-benches --bench mesh` (again on the same
//! clusters: each run starts by joining them all).
#![allow(clippy::print_stdout)]

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use mcsd_benches::{ProcessUse, Rng, churn_slices, env_or, percentile, require_real_clusterset, wait_answer};
use mcsd_tests::{ClusterSet, admin_get, eventually, fixtures, label, metric_values};
use tokio_util::sync::CancellationToken;

const NS: &str = "mesh-churn";
const PROBE_NS: &str = "mesh-probe";
const QUIET: Duration = Duration::from_secs(20);
const ASK_EVERY: Duration = Duration::from_millis(5);

/// Cluster `i`'s services: `records` selector-less Services with one ready endpoint each (in
/// cluster `i`'s pod range), exported.
fn services(i: usize, records: usize) -> String {
    let mut yaml = String::new();
    for j in 0..records {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: c{i}-{j}, namespace: {NS}}}\nspec: {{ports: [{{name: http, port: 80, protocol: TCP}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: c{i}-{j}-1, namespace: {NS}, labels: {{kubernetes.io/service-name: c{i}-{j}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 80, protocol: TCP}}]\nendpoints: [{{addresses: [\"{}\"], conditions: {{ready: true}}}}]\n\
             ---\napiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {{name: c{i}-{j}, namespace: {NS}}}\n",
            address(i, j as u64)
        ));
    }
    yaml
}

/// An address in cluster `i`'s pod range (the real tier gives cluster `i` 10.(160+i).0.0/16).
fn address(i: usize, n: u64) -> String {
    format!("10.{}.1.{}", 160 + i, 1 + n % 250)
}

/// Changes one of cluster `i`'s slices `per_minute` times a minute, at random moments; counts
/// the changes made.
fn churn(
    client: kube::Client,
    i: usize,
    records: usize,
    per_minute: f64,
    changes: &Arc<AtomicU64>,
    stop: &CancellationToken,
) {
    let slices: Api<EndpointSlice> = Api::namespaced(client, NS);
    let next = move |rng: &mut Rng| {
        (
            format!("c{i}-{}-1", rng.below(records)),
            address(i, rng.next_u64()),
        )
    };
    let rng = Rng::new(0x6d65_7368 ^ i as u64);
    churn_slices(slices, per_minute, rng, next, changes.clone(), stop.clone());
}

/// The peers member `admin`'s mcsd is synced with.
async fn synced_peers(admin: std::net::SocketAddr) -> usize {
    metric_values(&admin_get(admin, "/metrics").await, "mcsd_peer_state")
        .iter()
        .filter(|(labels, v)| *v == 1.0 && label(labels, "state") == Some("synced"))
        .count()
}

/// CPU seconds of `component` in each of `dirs`.
fn cpu(dirs: &[PathBuf], component: &str) -> Vec<f64> {
    dirs.iter().map(|d| ProcessUse::of(d, component).cpu).collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn minus(after: &[f64], before: &[f64]) -> Vec<f64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    require_real_clusterset("mesh", "--release --clusters 8 --no-pod-network");
    let mut sizes: Vec<usize> = std::env::var("MESH_SIZES")
        .unwrap_or_else(|_| "8,4,2".into())
        .split(',')
        .map(|s| s.trim().parse().expect("MESH_SIZES: numbers separated by commas"))
        .collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let records: usize = env_or("MESH_RECORDS", 5);
    let per_minute: f64 = env_or("MESH_CHURN", 300.0);
    let window = Duration::from_secs(env_or("MESH_WINDOW", 60));
    let probes: usize = env_or("MESH_PROBES", 10);
    let set = ClusterSet::start(sizes[0]).await;
    set.create_namespace(NS);
    set.create_namespace(PROBE_NS);
    set.apply(0, &services(0, records));
    let names: Vec<&str> = set.members.iter().map(|m| m.name.as_str()).collect();
    // A full mesh of them (`mcsd join` is idempotent).
    set.mcsd(&[&["join"][..], &names[..]].concat());
    println!(
        "mesh: {records} exports per cluster, {per_minute} slice change(s) per cluster per minute, {}-s window, {probes} probes",
        window.as_secs()
    );
    println!(
        "| clusters | peers per mcsd | changes in window | cluster-a kube-apiserver µs per change / per change per peer | importers' kube-apiserver / mcsd µs per change | cluster-a mcsd µs per change | quiet, per cluster: kube-apiserver / mcsd % of a core | mcsd RSS MiB mean / max | kube-apiserver RSS MiB mean | export -> answer p50 / p99 / max ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut current = set.members.len();
    for n in sizes {
        if n < current {
            // `mcsd leave` undoes the pairs among the clusters it names.
            set.mcsd(&[&["leave"][..], &names[..current]].concat());
            set.mcsd(&[&["join"][..], &names[..n]].concat());
            current = n;
        }
        let members = &set.members[..n];
        let last = &members[n - 1];
        eventually(
            &format!("every mcsd of the first {n} synced with its {} peers", n - 1),
            Duration::from_secs(180),
            || async {
                for m in members {
                    if synced_peers(m.admin).await != n - 1 {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        // cluster-a's exports answered in the last cluster.
        let (dns, name) = (last.dns, format!("c0-{}.{NS}.svc.clusterset.local", records - 1));
        tokio::task::spawn_blocking(move || wait_answer(dns, &name, ASK_EVERY, Duration::from_secs(120)))
            .await
            .unwrap()
            .expect("cluster-a's exports answered in the last cluster");
        let dirs: Vec<PathBuf> = members
            .iter()
            .map(|m| m.real_dir.clone().expect("a real cluster"))
            .collect();

        // The quiet rate.
        let (api_quiet, mcsd_quiet) = (cpu(&dirs, "kube-apiserver"), cpu(&dirs, "mcsd"));
        tokio::time::sleep(QUIET).await;
        let api_idle: Vec<f64> = minus(&cpu(&dirs, "kube-apiserver"), &api_quiet)
            .iter()
            .map(|c| c / QUIET.as_secs_f64())
            .collect();
        let mcsd_idle: Vec<f64> = minus(&cpu(&dirs, "mcsd"), &mcsd_quiet)
            .iter()
            .map(|c| c / QUIET.as_secs_f64())
            .collect();

        // The window: cluster-a changes, every other cluster imports.
        let changes = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        churn(members[0].client().await, 0, records, per_minute, &changes, &stop);
        let (api_before, mcsd_before) = (cpu(&dirs, "kube-apiserver"), cpu(&dirs, "mcsd"));
        let counted = changes.load(Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(window).await;
        let elapsed = started.elapsed().as_secs_f64();
        let (api_after, mcsd_after) = (cpu(&dirs, "kube-apiserver"), cpu(&dirs, "mcsd"));
        let changes = (changes.load(Ordering::Relaxed) - counted) as f64;
        // Then the probes, the churn going on.
        let mut latencies = Vec::new();
        for p in 0..probes {
            let name = format!("p{n}-{p}");
            fixtures::served_and_ready(&set, 0, PROBE_NS, &name).await;
            set.apply(0, &fixtures::export_of(PROBE_NS, &name));
            let created = Instant::now();
            let (dns, fqdn) = (last.dns, format!("{name}.{PROBE_NS}.svc.clusterset.local"));
            let answered = tokio::task::spawn_blocking(move || {
                wait_answer(dns, &fqdn, ASK_EVERY, Duration::from_secs(60))
            })
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name} not answered in {} within 60 s", last.name));
            latencies.push((answered - created).as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        stop.cancel();
        // Above the quiet rate, in µs per change.
        let above = |after: Vec<f64>, before: &[f64], idle: &[f64]| -> Vec<f64> {
            minus(&after, before)
                .iter()
                .zip(idle)
                .map(|(used, idle)| (used - idle * elapsed).max(0.0) * 1e6 / changes.max(1.0))
                .collect()
        };
        let api = above(api_after, &api_before, &api_idle);
        let mcsd = above(mcsd_after, &mcsd_before, &mcsd_idle);
        let api_rss: Vec<f64> = dirs
            .iter()
            .map(|d| ProcessUse::of(d, "kube-apiserver").rss_mib)
            .collect();
        let mcsd_rss: Vec<f64> = dirs.iter().map(|d| ProcessUse::of(d, "mcsd").rss_mib).collect();
        latencies.sort_by(f64::total_cmp);
        let importers = if n > 1 { 1.. } else { 0.. };
        println!(
            "| {n} | {} | {changes} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} | {:.2} / {:.2} | {:.0} / {:.0} | {:.0} | {:.0} / {:.0} / {:.0} |",
            n - 1,
            api[0],
            api[0] / (n - 1).max(1) as f64,
            mean(&api[importers.clone()]),
            mean(&mcsd[importers]),
            mcsd[0],
            mean(&api_idle) * 100.0,
            mean(&mcsd_idle) * 100.0,
            mean(&mcsd_rss),
            mcsd_rss.iter().copied().fold(0.0, f64::max),
            mean(&api_rss),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN),
        );
    }
    for i in 0..set.members.len() {
        set.kubectl(i, &["delete", "namespace", NS, PROBE_NS, "--wait=false"]);
    }
}
