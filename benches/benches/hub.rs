//! A hub for many members (issue #24): one process acts as N members of a hub ClusterSet, each
//! with its own identity on the hub (enrolled as `mcsd join --hub` enrols one), its own
//! connections, its records in its own namespace there and the three watches a member's mcsd
//! holds on the hub; beside them two real mcsd members (cluster-a exports, cluster-b imports)
//! whose export → DNS answer is measured. Run against the real tier's hub kube-apiserver, which
//! enforces the hub's policies and quotas as a production hub does.
//!
//! For each N (`HUB_MEMBERS`, default `10,100,1000`; members are added to those of the N before):
//! - **enrol** the new members and write their records: `HUB_RECORDS` exports each (default 5),
//!   a record and a slice of one address per export, in service namespaces drawn from a universe
//!   of 200 (`ns-000`…, Zipf: a few namespaces are in many members, most in few), each member
//!   interested in 5 of them (its own among them);
//! - **start** every member's watches (members across the hub; records and slices across the
//!   hub, selected by its namespaces, as `daemon/hub/read.rs` selects) and wait until every one
//!   has listed: reported as bootstrap;
//! - **churn** for `HUB_WINDOW` seconds (default 60): every member changes one of its slices
//!   `HUB_CHURN` times a minute (default 1), at random moments; meanwhile `HUB_PROBES` exports
//!   (default 10) are made one after another in cluster-a (each Service's endpoint ready first),
//!   in a namespace cluster-b has, and cluster-b's DNS is asked every 5 ms until it answers;
//! - **report**: the hub's kube-apiserver and etcd CPU seconds over the window, what of it the
//!   hub spends with nothing changing (its rate over a 20-s quiet spell after the window), the
//!   rest per event delivered to a member, kube-apiserver's resident memory at the window's end,
//!   the events each simulated member received in the window (mean, max, and what its interest
//!   predicts), cluster-b's mcsd CPU and resident memory, and export → answer p50, p99 and max.
//!
//! Run: `tests/kube/up.sh --release --clusters 2 --hub --no-pod-network --dir /tmp/kh` until
//! `clusterset ready`, then
//! `PATH=$(tests/kube/build.sh | tail -1):$PATH MCSD_E2E_CLUSTERSET=/tmp/kh cargo bench -p mcsd-benches --bench hub`.
//! The simulated members' namespaces are deleted from the hub at the end (`HUB_KEEP=1` keeps them).
#![allow(clippy::print_stdout)]

use std::{
    collections::BTreeSet,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt as _, TryStreamExt as _};
use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RData, RecordType},
};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Namespace, ServiceAccount},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use mcsd_benches::{ProcessUse, Rng};
use mcsd_crds::ClusterId;
use mcsd_tests::{ClusterSet, fixtures, kubectl};
use tokio_util::sync::CancellationToken;

/// The universe of service namespaces.
const UNIVERSE: usize = 200;
/// How many of them each member has.
const INTEREST: usize = 5;
/// The namespaces cluster-b (the measured importer) has: the most popular ones, and the probe's.
const REAL_INTEREST: usize = 5;
const PROBE_NS: &str = "hub-probe";
/// The quiet spell before each window.
const QUIET: Duration = Duration::from_secs(20);
/// How often cluster-b's DNS is asked while a probe waits.
const ASK_EVERY: Duration = Duration::from_millis(5);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
        })
        .unwrap_or(default)
}

fn sizes() -> Vec<usize> {
    std::env::var("HUB_MEMBERS")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("HUB_MEMBERS: numbers separated by commas")
        })
        .collect()
}

fn universe(i: usize) -> String {
    format!("ns-{i:03}")
}

/// One simulated member.
struct Sim {
    id: ClusterId,
    client: Client,
    /// The service namespaces it has (it exports from and is sent records of).
    interest: Vec<String>,
    /// Its exports: (namespace, name).
    exports: Vec<(String, String)>,
    /// Events its watches delivered after their first list.
    events: Arc<AtomicU64>,
    index: usize,
}

impl Sim {
    fn namespace(&self) -> String {
        format!("mcsd-member-{}", self.id)
    }

    /// The range declared for it on the hub, and its `n`th address there.
    fn range(index: usize) -> String {
        format!("10.{}.{}.0/24", 128 + index / 256, index % 256)
    }

    fn address(&self, n: u64) -> String {
        format!(
            "10.{}.{}.{}",
            128 + self.index / 256,
            self.index % 256,
            1 + n % 250
        )
    }

    fn record(&self, ns: &str, name: &str) -> ConfigMap {
        let export = serde_json::json!({
            "cluster": self.id.as_str(), "namespace": ns, "name": name,
            "exportCreated": "2026-12-01T00:00:00Z", "type": "ClusterSetIP",
            "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
            "sessionAffinity": "None", "ipFamilies": ["IPv4"],
        });
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("{ns}.{name}"), "labels": labels(ns, name, false)},
            "data": {"export.json": export.to_string()},
        }))
        .unwrap()
    }

    fn slice(&self, ns: &str, name: &str, address: &str) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{ns}.{name}-s"), "labels": labels(ns, name, true)},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        }))
        .unwrap()
    }
}

fn labels(ns: &str, name: &str, slice: bool) -> serde_json::Value {
    let mut labels = serde_json::json!({
        "mcsd.io/exchange": "v1", "mcsd.io/service-namespace": ns, "mcsd.io/service-name": name,
    });
    if slice {
        labels["endpointslice.kubernetes.io/managed-by"] = "mcsd.io".into();
    }
    labels
}

/// `k` distinct namespaces of the universe, drawn with Zipf weights (1/rank).
fn zipf_namespaces(rng: &mut Rng, k: usize) -> Vec<String> {
    let weights: Vec<f64> = (1..=UNIVERSE).map(|r| 1.0 / r as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut chosen = BTreeSet::new();
    while chosen.len() < k {
        let mut x = rng.unit() * total;
        let mut pick = UNIVERSE - 1;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                pick = i;
                break;
            }
            x -= w;
        }
        chosen.insert(pick);
    }
    chosen.into_iter().map(universe).collect()
}

/// Enrols member `index` on the hub (namespace, identity, quota, ranges), mints its token, and
/// writes its records.
async fn enrol(hub: &Client, base: &kube::Config, index: usize, records: usize, seed: u64) -> Sim {
    let id = ClusterId::new(format!("sim-{index:04}")).unwrap();
    let range: ipnet::IpNet = Sim::range(index).parse().unwrap();
    mcsd::cluster::hub::enrol(hub, &id, &[range]).await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(hub.clone(), &format!("mcsd-member-{id}"));
    let token = mcsd::cluster::token::request_token(&accounts, "mcsd-member", Duration::from_secs(86_400))
        .await
        .unwrap()
        .token;
    let mut config = base.clone();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let client = Client::try_from(config).unwrap();
    let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let interest = zipf_namespaces(&mut rng, INTEREST);
    let exports = (0..records)
        .map(|j| {
            (
                interest[j % interest.len()].clone(),
                format!("svc-{index:04}-{j}"),
            )
        })
        .collect();
    let sim = Sim {
        id,
        client,
        interest,
        exports,
        events: Arc::default(),
        index,
    };
    let ns = sim.namespace();
    let maps: Api<ConfigMap> = Api::namespaced(sim.client.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(sim.client.clone(), &ns);
    for (n, (service_ns, name)) in sim.exports.iter().enumerate() {
        maps.create(&PostParams::default(), &sim.record(service_ns, name))
            .await
            .unwrap();
        slices
            .create(
                &PostParams::default(),
                &sim.slice(service_ns, name, &sim.address(n as u64)),
            )
            .await
            .unwrap();
    }
    sim
}

/// The three watches of a member's mcsd on the hub; `listed` counts those that have listed.
fn watch(sim: &Sim, listed: &Arc<AtomicU64>, stop: &CancellationToken) {
    let selector = format!(
        "mcsd.io/exchange=v1,mcsd.io/service-namespace in ({})",
        sim.interest.join(",")
    );
    let members: Api<Namespace> = Api::all(sim.client.clone());
    let maps: Api<ConfigMap> = Api::all(sim.client.clone());
    let slices: Api<EndpointSlice> = Api::all(sim.client.clone());
    spawn_watch(
        members,
        watcher::Config::default().labels("hub.mcsd.io/member"),
        sim,
        listed,
        stop,
    );
    spawn_watch(
        maps,
        watcher::Config::default().labels(&selector),
        sim,
        listed,
        stop,
    );
    spawn_watch(
        slices,
        watcher::Config::default().labels(&selector),
        sim,
        listed,
        stop,
    );
}

fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    sim: &Sim,
    listed: &Arc<AtomicU64>,
    stop: &CancellationToken,
) where
    K: kube::Resource + Clone + std::fmt::Debug + k8s_openapi::serde::de::DeserializeOwned + Send + 'static,
{
    let (events, listed, stop) = (sim.events.clone(), listed.clone(), stop.clone());
    tokio::spawn(async move {
        let mut stream = watcher(api, config).boxed();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = stream.try_next() => e,
            };
            match event {
                Ok(Some(watcher::Event::InitDone)) => {
                    listed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => {
                    events.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    });
}

/// Changes one of `sim`'s slices `per_minute` times a minute, at random moments; counts writes.
fn churn(sim: &Sim, per_minute: f64, writes: &Arc<AtomicU64>, stop: &CancellationToken, seed: u64) {
    let slices: Api<EndpointSlice> = Api::namespaced(sim.client.clone(), &sim.namespace());
    let exports = sim.exports.clone();
    let addresses: Vec<String> = (0..250).map(|n| sim.address(n)).collect();
    let (writes, stop) = (writes.clone(), stop.clone());
    let mut rng = Rng::new(seed ^ sim.index as u64);
    tokio::spawn(async move {
        if exports.is_empty() || per_minute <= 0.0 {
            return;
        }
        loop {
            // Exponential gaps: a Poisson process of per_minute a minute.
            let gap = -(1.0 - rng.unit()).ln() * 60.0 / per_minute;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs_f64(gap)) => {}
            }
            let (ns, name) = &exports[rng.below(exports.len())];
            let address = &addresses[rng.below(addresses.len())];
            let patch =
                serde_json::json!({"endpoints": [{"addresses": [address], "conditions": {"ready": true}}]});
            if slices
                .patch(
                    &format!("{ns}.{name}-s"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .is_ok()
            {
                writes.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// Asks `server` for `name` (A) every [`ASK_EVERY`] until it answers with an address.
fn wait_answer(server: SocketAddr, name: &str, timeout: Duration) -> Option<Instant> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(ASK_EVERY)).unwrap();
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let bytes = query.to_vec().unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let _ = socket.send_to(&bytes, server);
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && let Ok(reply) = Message::from_vec(&buf[..n])
            && reply.answers.iter().any(|r| matches!(r.data, RData::A(_)))
        {
            return Some(Instant::now());
        }
        std::thread::sleep(ASK_EVERY);
    }
    None
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if mcsd_tests::real_clusterset().is_none() {
        println!(
            "hub: needs a real hub ClusterSet: tests/kube/up.sh --release --clusters 2 --hub --no-pod-network --dir DIR, then MCSD_E2E_CLUSTERSET=DIR"
        );
        std::process::exit(2);
    }
    let records: usize = env_or("HUB_RECORDS", 5);
    let per_minute: f64 = env_or("HUB_CHURN", 1.0);
    let window = Duration::from_secs(env_or("HUB_WINDOW", 60));
    let probes: usize = env_or("HUB_PROBES", 10);
    let seed: u64 = env_or("HUB_SEED", 1);
    let set = ClusterSet::hub_start(2).await;
    let hub_kubeconfig = set.hub().kubeconfig.clone();
    let hub_dir = set.hub().real_dir.clone().expect("a real hub");
    let b_dir = set.members[1].real_dir.clone().expect("a real member");
    let base = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&hub_kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let hub = Client::try_from(base.clone()).unwrap();

    // The real members have the probe's namespace; cluster-b the most popular ones too.
    set.create_namespace(PROBE_NS);
    for i in 0..REAL_INTEREST {
        set.apply(1, &fixtures::namespace(&universe(i)));
    }
    let exports = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("multicluster.x-k8s.io", "v1beta1", "ServiceExport"),
        "serviceexports",
    );
    let exports: Api<DynamicObject> = Api::namespaced_with(set.members[0].client().await, PROBE_NS, &exports);

    println!(
        "hub: {records} exports per simulated member, {per_minute} slice change(s) per member per minute, {}-s window, {probes} probes",
        window.as_secs()
    );
    println!(
        "| members | bootstrap s | writes in window | events delivered | hub apiserver CPU s (of it idle) | hub CPU per delivered event above idle, µs | etcd CPU s | hub apiserver RSS MiB | events per member per min: mean / max / predicted | cluster-b mcsd CPU s / RSS MiB | export -> answer p50 / p99 / max ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut sims: Vec<Sim> = Vec::new();
    let stop = CancellationToken::new();
    let listed = Arc::new(AtomicU64::new(0));
    for n in sizes() {
        // Enrol and write the new members, 16 at a time.
        let started = Instant::now();
        let new: Vec<Sim> = futures::stream::iter(sims.len()..n)
            .map(|i| enrol(&hub, &base, i, records, seed))
            .buffer_unordered(16)
            .collect()
            .await;
        for sim in &new {
            watch(sim, &listed, &stop);
        }
        sims.extend(new);
        sims.sort_by_key(|s| s.index);
        let watches = 3 * sims.len() as u64;
        while listed.load(Ordering::Relaxed) < watches {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let bootstrap = started.elapsed();

        // The window: every member churns; probes meanwhile.
        let writes = Arc::new(AtomicU64::new(0));
        let window_stop = stop.child_token();
        for sim in &sims {
            churn(sim, per_minute, &writes, &window_stop, seed);
        }
        let before_events: Vec<u64> = sims.iter().map(|s| s.events.load(Ordering::Relaxed)).collect();
        let hub_before = ProcessUse::of(&hub_dir, "kube-apiserver");
        let etcd_before = ProcessUse::of(&hub_dir, "etcd");
        let b_before = ProcessUse::of(&b_dir, "mcsd");
        let window_started = Instant::now();
        let mut latencies = Vec::new();
        for p in 0..probes {
            let name = format!("p{n}-{p}");
            fixtures::served_and_ready(&set, 0, PROBE_NS, &name).await;
            let export: DynamicObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
                "metadata": {"name": name, "namespace": PROBE_NS},
            }))
            .unwrap();
            exports.create(&PostParams::default(), &export).await.unwrap();
            let created = Instant::now();
            let dns = set.members[1].dns;
            let fqdn = format!("{name}.{PROBE_NS}.svc.clusterset.local");
            let answered =
                tokio::task::spawn_blocking(move || wait_answer(dns, &fqdn, Duration::from_secs(60)))
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{name} not answered in cluster-b within 60 s"));
            latencies.push((answered - created).as_secs_f64() * 1000.0);
            // Spread over the window.
            let next = window_started + window.mul_f64((p + 1) as f64 / probes.max(1) as f64);
            tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
        }
        tokio::time::sleep((window_started + window).saturating_duration_since(Instant::now())).await;
        let elapsed = window_started.elapsed().as_secs_f64();
        window_stop.cancel();
        let hub_after = ProcessUse::of(&hub_dir, "kube-apiserver");
        let etcd_after = ProcessUse::of(&hub_dir, "etcd");
        let b_after = ProcessUse::of(&b_dir, "mcsd");
        let writes = writes.load(Ordering::Relaxed);
        // A quiet spell after it: what the hub spends on N members' watches with nothing
        // changing (their probes, bookmarks, the controllers), to tell from what changes cost.
        // (After the window, not before it: the hub is still settling the bootstrap then.)
        let quiet = ProcessUse::of(&hub_dir, "kube-apiserver");
        tokio::time::sleep(QUIET).await;
        let idle_per_s = (ProcessUse::of(&hub_dir, "kube-apiserver").cpu - quiet.cpu) / QUIET.as_secs_f64();
        let per_minute_events: Vec<f64> = sims
            .iter()
            .zip(&before_events)
            .map(|(s, before)| (s.events.load(Ordering::Relaxed) - before) as f64 * 60.0 / elapsed)
            .collect();
        let mean = per_minute_events.iter().sum::<f64>() / per_minute_events.len() as f64;
        let max = per_minute_events.iter().copied().fold(0.0, f64::max);
        // What each member's interest predicts: every change in one of its namespaces, by any
        // other member, reaches it once (its own changes reach it too: it watches them).
        let predicted = {
            let mut total = 0.0;
            for s in &sims {
                let interest: BTreeSet<&String> = s.interest.iter().collect();
                for other in &sims {
                    let share = other
                        .exports
                        .iter()
                        .filter(|(ns, _)| interest.contains(ns))
                        .count() as f64
                        / other.exports.len().max(1) as f64;
                    total += share * per_minute;
                }
            }
            total / sims.len() as f64
        };
        latencies.sort_by(f64::total_cmp);
        let hub_cpu = hub_after.cpu - hub_before.cpu;
        // Above the quiet spell's rate, per event delivered to a member.
        let delivered: f64 = sims
            .iter()
            .zip(&before_events)
            .map(|(s, before)| (s.events.load(Ordering::Relaxed) - before) as f64)
            .sum();
        let per_event_us = (hub_cpu - idle_per_s * elapsed).max(0.0) * 1e6 / delivered.max(1.0);
        println!(
            "| {n} | {:.1} | {writes} | {:.0} | {hub_cpu:.1} ({:.2}) | {per_event_us:.0} | {:.1} | {:.0} | {mean:.1} / {max:.1} / {predicted:.1} | {:.2} / {:.0} | {:.0} / {:.0} / {:.0} |",
            bootstrap.as_secs_f64(),
            delivered,
            idle_per_s * elapsed,
            etcd_after.cpu - etcd_before.cpu,
            hub_after.rss_mib,
            b_after.cpu - b_before.cpu,
            b_after.rss_mib,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN),
        );
        for p in 0..probes {
            let _ = exports
                .delete(&format!("p{n}-{p}"), &DeleteParams::default())
                .await;
        }
    }
    stop.cancel();
    if std::env::var("HUB_KEEP").is_err() {
        let names: Vec<String> = sims.iter().map(Sim::namespace).collect();
        for chunk in names.chunks(200) {
            let mut args = vec!["delete", "namespace", "--wait=false"];
            args.extend(chunk.iter().map(String::as_str));
            kubectl(&hub_kubeconfig, &args);
        }
    }
    set.stop().await;
}
