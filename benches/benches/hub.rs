//! A hub for many members (issue #24): one process acts as N members of a hub ClusterSet, each
//! with its own identity on the hub (enrolled as `mcsd join --hub` enrols one), its own
//! connections, its records in its own namespace there, the five watches a member's mcsd holds
//! on the hub (with the backoff mcsd's have there, `cluster::driver::Spread`) and its probe of
//! the hub; beside them two real mcsd members (cluster-a exports, cluster-b imports)
//! whose export → DNS answer is measured. Run against the real tier's hub kube-apiserver, which
//! enforces the hub's policies and quotas as a production hub does.
//!
//! For each N (`HUB_MEMBERS`, default `10,100,1000`; members are added to those of the N before):
//! - **enrol** the new members and write their records: `HUB_RECORDS` exports each (default 5),
//!   a record and a slice of one address per export, in service namespaces drawn from a universe
//!   of 200 (`ns-000`…, Zipf: a few namespaces are in many members, most in few), each member
//!   interested in 5 of them (its own among them);
//! - **start** every member's watches (members across the hub; records and slices across the
//!   hub, selected by its namespaces, as `daemon/hub/read.rs` selects; its own records and slices,
//!   as `daemon/hub/publish.rs` watches them) and its probe (a list of one of its records every
//!   10 s), and wait until every watch has listed: reported as bootstrap;
//! - **churn** for `HUB_WINDOW` seconds (default 60): every member changes one of its slices
//!   `HUB_CHURN` times a minute (default 1), at random moments; meanwhile `HUB_PROBES` exports
//!   (default 10) are made one after another in cluster-a (each Service's endpoint ready first),
//!   in a namespace cluster-b has, and cluster-b's DNS is asked every 5 ms until it answers;
//! - **report**: the hub's kube-apiserver and etcd CPU seconds over the window, what of it the
//!   hub spends with nothing changing (its rate over a 20-s quiet spell after the window), the
//!   rest per event delivered to a member, kube-apiserver's resident memory at the window's end,
//!   the events each simulated member received in the window (mean, max, and what its interest
//!   predicts), cluster-b's mcsd CPU and resident memory, and export → answer p50, p99 and max;
//! - **probes**: the quiet rate again with the probes off, and with them served from the API
//!   server's cache (`resourceVersion=0`) instead of mcsd's quorum read: what a probe costs.
//!
//! `HUB_STREAMING=1` makes every simulated watch start with a streaming list (`sendInitialEvents`,
//! served from the API server's watch cache) instead of a list, to compare.
//!
//! Then (unless `HUB_RESTART=0`) a **restart storm** at the largest N: with every member churning,
//! the hub's kube-apiserver is killed (SIGKILL; `up.sh` starts it again over the same etcd);
//! reported: when it serves again, when every watch of every member has listed again, the
//! members' lists (from the hub's audit log): in all, per member at most, at the peak second and
//! over how many seconds they spread; the restarted kube-apiserver's CPU and peak memory; and
//! whether cluster-b's answer for an export made before changed at any moment.
//!
//! Run: `tests/kube/up.sh --release --clusters 2 --hub --no-pod-network --dir /tmp/kh` until
//! `clusterset ready`, then
//! `PATH=$(tests/kube/build.sh | tail -1):$PATH MCSD_E2E_CLUSTERSET=/tmp/kh cargo bench -p mcsd-benches --bench hub`.
//! The simulated members' namespaces are deleted from the hub at the end (`HUB_KEEP=1` keeps them).
#![allow(clippy::print_stdout)]

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{ConfigMap, Namespace, ServiceAccount},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use mcsd::cluster::driver::Spread;
use mcsd_benches::{ProcessUse, Rng, churn_slices, env_or, percentile, require_real_clusterset, wait_answer};
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
        let record = sim.record(service_ns, name);
        let slice = sim.slice(service_ns, name, &sim.address(n as u64));
        // The hub's authorizer learns of a new RoleBinding a moment after it is written.
        let mut tries = 0;
        loop {
            let created = match maps.create(&PostParams::default(), &record).await {
                Ok(_) => slices.create(&PostParams::default(), &slice).await.map(|_| ()),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    slices.create(&PostParams::default(), &slice).await.map(|_| ())
                }
                Err(e) => Err(e),
            };
            match created {
                Ok(()) => break,
                Err(kube::Error::Api(s)) if s.code == 403 && tries < 40 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("{}: writing {service_ns}/{name}: {e}", sim.id),
            }
        }
    }
    sim
}

/// The five watches of a member's mcsd on the hub, as `daemon/hub/` makes them (the same
/// selectors and kube-rs's default backoff): the members; records and slices across the hub,
/// selected by its namespaces; its own records and slices in its namespace. `listed` counts the
/// complete lists they deliver (every relist too).
fn watch(sim: &Sim, spread: &Spread, listed: &Arc<AtomicU64>, stop: &CancellationToken) {
    let selector = format!(
        "mcsd.io/exchange=v1,mcsd.io/service-namespace in ({})",
        sim.interest.join(",")
    );
    let (client, own) = (&sim.client, sim.namespace());
    // HUB_STREAMING=1: each watch starts with a streaming list (`sendInitialEvents`) instead.
    let config = || {
        let config = watcher::Config::default();
        if env_or("HUB_STREAMING", 0) == 1 {
            config.streaming_lists()
        } else {
            config
        }
    };
    let across = config().labels(&selector);
    let mine = config().labels("mcsd.io/exchange");
    let members: Api<Namespace> = Api::all(client.clone());
    let (sim, listed) = ((spread, sim), listed);
    spawn_watch(members, config().labels("hub.mcsd.io/member"), sim, listed, stop);
    spawn_watch(
        Api::<ConfigMap>::all(client.clone()),
        across.clone(),
        sim,
        listed,
        stop,
    );
    spawn_watch(
        Api::<EndpointSlice>::all(client.clone()),
        across,
        sim,
        listed,
        stop,
    );
    spawn_watch(
        Api::<ConfigMap>::namespaced(client.clone(), &own),
        mine.clone(),
        sim,
        listed,
        stop,
    );
    spawn_watch(
        Api::<EndpointSlice>::namespaced(client.clone(), &own),
        mine,
        sim,
        listed,
        stop,
    );
}

/// How many watches [`watch`] starts per member.
const WATCHES: u64 = 5;

fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    (spread, sim): (&Spread, &Sim),
    listed: &Arc<AtomicU64>,
    stop: &CancellationToken,
) where
    K: kube::Resource + Clone + std::fmt::Debug + k8s_openapi::serde::de::DeserializeOwned + Send + 'static,
{
    let (events, listed, stop) = (sim.events.clone(), listed.clone(), stop.clone());
    let backoff = spread.backoff();
    tokio::spawn(async move {
        let mut stream = watcher(api, config).backoff(backoff).boxed();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = stream.next() => e,
            };
            match event {
                Some(Ok(watcher::Event::InitDone)) => {
                    listed.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => {
                    events.fetch_add(1, Ordering::Relaxed);
                }
                // Errors are retried after the backoff, as mcsd's watches are.
                Some(_) => {}
                None => return,
            }
        }
    });
}

/// How the simulated members probe the hub (mcsd's probe: a list of one of its own records every
/// [`probe_every`]): not at all; as mcsd does (a quorum read); or from the API server's cache
/// (`resourceVersion=0`), to compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProbeMode {
    Off = 0,
    Quorum = 1,
    Cache = 2,
}

/// How often each member probes: `HUB_PROBE_EVERY` seconds, default 30 (mcsd's with the default
/// 300-s grace period: `hub_probe_interval` in `daemon/hub/read.rs`).
fn probe_every() -> Duration {
    Duration::from_secs_f64(env_or("HUB_PROBE_EVERY", 30.0))
}

/// Probes the hub as member `sim`'s mcsd does, every [`probe_every`] from a random phase, in the
/// mode `mode` holds.
fn probe(sim: &Sim, mode: &Arc<AtomicU8>, stop: &CancellationToken, seed: u64) {
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), &sim.namespace());
    let (mode, stop) = (mode.clone(), stop.clone());
    let every = probe_every();
    let phase = every.mul_f64(Rng::new(seed ^ sim.index as u64 ^ 0x5eed).unit());
    tokio::spawn(async move {
        let mut next = tokio::time::Instant::now() + phase;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
            }
            next += every;
            let params = ListParams::default().labels("mcsd.io/exchange").limit(1);
            let params = match mode.load(Ordering::Relaxed) {
                m if m == ProbeMode::Quorum as u8 => params,
                m if m == ProbeMode::Cache as u8 => params.match_any(),
                _ => continue,
            };
            let _ = api.list_metadata(&params).await;
        }
    });
}

/// Changes one of `sim`'s slices `per_minute` times a minute, at random moments; counts writes.
fn churn(sim: &Sim, per_minute: f64, writes: &Arc<AtomicU64>, stop: &CancellationToken, seed: u64) {
    if sim.exports.is_empty() {
        return;
    }
    let slices: Api<EndpointSlice> = Api::namespaced(sim.client.clone(), &sim.namespace());
    let exports = sim.exports.clone();
    let addresses: Vec<String> = (0..250).map(|n| sim.address(n)).collect();
    let next = move |rng: &mut Rng| {
        let (ns, name) = &exports[rng.below(exports.len())];
        (
            format!("{ns}.{name}-s"),
            addresses[rng.below(addresses.len())].clone(),
        )
    };
    let rng = Rng::new(seed ^ sim.index as u64);
    churn_slices(slices, per_minute, rng, next, writes.clone(), stop.clone());
}

/// The hub kube-apiserver's CPU rate (cores) over a [`QUIET`] spell.
async fn quiet_rate(hub_dir: &std::path::Path) -> f64 {
    let before = ProcessUse::of(hub_dir, "kube-apiserver");
    tokio::time::sleep(QUIET).await;
    (ProcessUse::of(hub_dir, "kube-apiserver").cpu - before.cpu) / QUIET.as_secs_f64()
}

/// The hub's kube-apiserver killed (SIGKILL; `up.sh` starts it again over the same etcd) while
/// every member churns: how long until it serves and until every watch of every member has
/// listed again, how many lists that took and how they spread (from the hub's audit log), what
/// the restarted kube-apiserver spent meanwhile, and whether cluster-b's answer for an export
/// made before changed at any moment.
async fn restart_storm(
    set: &ClusterSet,
    sims: &[Sim],
    listed: &Arc<AtomicU64>,
    per_minute: f64,
    seed: u64,
    stop: &CancellationToken,
) {
    let hub_dir = set.hub().real_dir.clone().expect("a real hub");
    let hub_kubeconfig = set.hub().kubeconfig.clone();
    fixtures::served_and_ready(set, 0, PROBE_NS, "steady").await;
    set.apply(0, &fixtures::exported(PROBE_NS, "steady"));
    let dns = set.members[1].dns;
    let fqdn = format!("steady.{PROBE_NS}.svc.clusterset.local");
    let answer = {
        let fqdn = fqdn.clone();
        tokio::task::spawn_blocking(move || {
            wait_answer(dns, &fqdn, ASK_EVERY, Duration::from_secs(60))
                .expect("steady answered in cluster-b");
            mcsd_tests::dig(&dns, &fqdn, "A")
        })
        .await
        .unwrap()
    };
    let writes = Arc::new(AtomicU64::new(0));
    let storm_stop = stop.child_token();
    for sim in sims {
        churn(sim, per_minute, &writes, &storm_stop, seed ^ 0x57);
    }
    // Half a minute of churn first, so every watch's resource version is behind the hub's.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let target = listed.load(Ordering::Relaxed) + WATCHES * sims.len() as u64;
    let killed_at = k8s_openapi::jiff::Timestamp::now();
    let killed = Instant::now();
    set.hub().signal("kube-apiserver", "KILL");
    let (mut serving, mut all_listed, mut changed, mut asked) = (None, None, 0u32, 0u32);
    let mut peak_rss: f64 = 0.0;
    let mut last = ProcessUse::default();
    while killed.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let got = {
            let fqdn = fqdn.clone();
            tokio::task::spawn_blocking(move || mcsd_tests::dig(&dns, &fqdn, "A"))
                .await
                .unwrap()
        };
        asked += 1;
        if got != answer {
            changed += 1;
        }
        let now = ProcessUse::of(&hub_dir, "kube-apiserver");
        if serving.is_some() {
            peak_rss = peak_rss.max(now.rss_mib);
            last = now;
        }
        if serving.is_none()
            && mcsd_tests::kubectl_output(&hub_kubeconfig, &["get", "--raw", "/readyz"])
                .status
                .success()
        {
            serving = Some(killed.elapsed());
        }
        if all_listed.is_none() && listed.load(Ordering::Relaxed) >= target {
            all_listed = Some(killed.elapsed());
            break;
        }
    }
    storm_stop.cancel();
    let serving = serving.expect("the hub's kube-apiserver serves again within 300 s");
    let relisted = listed.load(Ordering::Relaxed) + WATCHES * sims.len() as u64 - target;
    // The simulated members' lists since the kill, by member and by second after it.
    let reads = set.hub().member_reads_since(killed_at);
    let lists: Vec<_> = reads
        .iter()
        .filter(|r| r.verb == "list" && r.member.starts_with("sim-"))
        .collect();
    let watches = reads
        .iter()
        .filter(|r| r.verb == "watch" && r.member.starts_with("sim-"))
        .count();
    let mut per_member = std::collections::BTreeMap::<&str, u32>::new();
    let mut per_second = std::collections::BTreeMap::<i64, u32>::new();
    for r in &lists {
        *per_member.entry(&r.member).or_default() += 1;
        *per_second
            .entry(r.at.as_second() - killed_at.as_second())
            .or_default() += 1;
    }
    let max_per_member = per_member.values().copied().max().unwrap_or(0);
    let peak = per_second.values().copied().max().unwrap_or(0);
    let spread = match (per_second.keys().next(), per_second.keys().last()) {
        (Some(first), Some(last)) => last - first + 1,
        _ => 0,
    };
    println!();
    println!(
        "Restart storm: the hub's kube-apiserver killed (SIGKILL) with {} members churning ({per_minute} change(s) a minute each), {} watches each.",
        sims.len(),
        WATCHES
    );
    println!(
        "| members | serving again s | every watch listed again s | watches relisted / of | lists by members (per member max) | watch requests | peak lists per s | lists spread over s | restarted apiserver CPU s / RSS MiB (peak) | cluster-b answers changed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.1} | {} | {relisted} / {} | {} ({max_per_member}) | {watches} | {peak} | {spread} | {:.1} / {peak_rss:.0} | {changed} of {asked} |",
        sims.len(),
        serving.as_secs_f64(),
        all_listed.map_or("not within 300 s".to_string(), |d| format!(
            "{:.1}",
            d.as_secs_f64()
        )),
        WATCHES * sims.len() as u64,
        lists.len(),
        last.cpu,
    );
    let _ = set.kubectl(0, &["delete", "serviceexport", "steady", "-n", PROBE_NS]);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    require_real_clusterset("hub", "--release --clusters 2 --hub --no-pod-network");
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
    let probe_mode = Arc::new(AtomicU8::new(ProbeMode::Quorum as u8));
    let spread = Spread::default();
    let mut quiet_rows = Vec::new();
    for n in sizes() {
        // Enrol and write the new members, 16 at a time.
        let started = Instant::now();
        let new: Vec<Sim> = futures::stream::iter(sims.len()..n)
            .map(|i| enrol(&hub, &base, i, records, seed))
            .buffer_unordered(16)
            .collect()
            .await;
        spread.set_members(n);
        for sim in &new {
            watch(sim, &spread, &listed, &stop);
            probe(sim, &probe_mode, &stop, seed);
        }
        sims.extend(new);
        sims.sort_by_key(|s| s.index);
        let watches = WATCHES * sims.len() as u64;
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
            let answered = tokio::task::spawn_blocking(move || {
                wait_answer(dns, &fqdn, ASK_EVERY, Duration::from_secs(60))
            })
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
        let idle_per_s = quiet_rate(&hub_dir).await;
        // The probes' share of it: quiet spells without them, and with them served from cache.
        probe_mode.store(ProbeMode::Off as u8, Ordering::Relaxed);
        let no_probes = quiet_rate(&hub_dir).await;
        probe_mode.store(ProbeMode::Cache as u8, Ordering::Relaxed);
        let cached = quiet_rate(&hub_dir).await;
        probe_mode.store(ProbeMode::Quorum as u8, Ordering::Relaxed);
        quiet_rows.push(format!(
            "| {n} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
            no_probes * 100.0,
            idle_per_s * 100.0,
            cached * 100.0,
            (idle_per_s - no_probes).max(0.0) * 1e6 * probe_every().as_secs_f64() / n as f64,
            (cached - no_probes).max(0.0) * 1e6 * probe_every().as_secs_f64() / n as f64,
        ));
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
    println!();
    println!(
        "The hub's kube-apiserver with nothing changing, % of a core over {} s: the members' watches without probes, with mcsd's probe (a quorum read) every {} s, and with it served from cache (resourceVersion=0); the probe's cost per request above no probes.",
        QUIET.as_secs(),
        probe_every().as_secs_f64()
    );
    println!(
        "| members | no probes % | quorum probes % | cached probes % | µs per quorum probe | µs per cached probe |"
    );
    println!("|---|---|---|---|---|---|");
    for row in &quiet_rows {
        println!("{row}");
    }
    if env_or("HUB_RESTART", 1) == 1 {
        restart_storm(&set, &sims, &listed, per_minute, seed, &stop).await;
    }
    stop.cancel();
    if std::env::var("HUB_KEEP").is_err() {
        // As `mcsd leave --hub` removes a member: its namespace and its read binding.
        let namespaces: Vec<String> = sims.iter().map(Sim::namespace).collect();
        let bindings: Vec<String> = sims
            .iter()
            .map(|s| format!("{}-{}", mcsd::core::hub::READ_ROLE, s.id))
            .collect();
        for (kind, names) in [("namespace", namespaces), ("clusterrolebinding", bindings)] {
            for chunk in names.chunks(200) {
                let mut args = vec!["delete", kind, "--wait=false"];
                args.extend(chunk.iter().map(String::as_str));
                kubectl(&hub_kubeconfig, &args);
            }
        }
    }
    set.stop().await;
}
