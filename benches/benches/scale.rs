//! Scale (issue #6): N exported services across a 3-cluster sandbox, each mcsd a separate
//! `mcsd run` process (the release binary), so its RSS and CPU can be read from `/proc`.
//!
//! For each N of `SCALE_SIZES` (default `1000,3000,10000`):
//!
//! 1. Three sandbox clusters (`mcsd::process::sandbox::start_member`: API server, CRDs, ClusterProperties,
//!    `manifests/` namespace and RBAC) in this process; `SCALE_NAMESPACES` namespaces (default
//!    10) in all three. N selector-less ClusterSetIP Services spread round-robin over the
//!    clusters, each with one hand-written EndpointSlice of 10 ready endpoints and a
//!    ServiceExport, created through the admin client over HTTPS before any mcsd runs.
//! 2. Three `mcsd run` processes (as ServiceAccount `mcsd`, peers read as `mcsd-peer`, leader
//!    election on). Initial convergence: from spawning them until every cluster holds N
//!    ServiceImports with `spec.ips` and `Ready=True`, N MCS EndpointSlices of 10 endpoints, and
//!    its DNS server answers a sample of names with its own clusterset IP. Also: time to each
//!    `/readyz` 200.
//! 3. Steady-state RSS (VmRSS, VmHWM) once the writes have settled.
//! 4. Full resync: SIGTERM all three, wait for their exit, start them again; once ready and
//!    settled, `mcsd_writes_total` of each must sum to 0. The sandbox's event log is read too:
//!    every write (other than Leases) that landed in any cluster meanwhile is listed.
//! 5. Per-change work: `SCALE_CHANGES` (default 300) times, one after another, endpoint 0 of one
//!    service's hand-written slice turns unready in its exporting cluster (merge patch over
//!    HTTPS); the clock stops when both other clusters' MCS EndpointSlices say so. CPU of each
//!    mcsd (`/proc/PID/task/*/schedstat`, net of the idle rate measured just before) and writes,
//!    divided by the number of changes.
//!
//! Run with `cargo build --release -p mcsd && cargo bench -p mcsd-benches --bench scale`
//! (`SCALE_SIZES=1000 SCALE_CHANGES=20` for a quick run).
#![allow(clippy::print_stdout)]

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Namespace, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Client,
    api::{Api, Patch, PatchParams, PostParams},
};
use mcsd::process::sandbox::Member;
use mcsd_crds::{ClusterId, mcs::v1beta1::ServiceExport};
use mcsd_sandbox::{Cluster, store::ObjectKey};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const CLUSTERS: usize = 3;
const ENDPOINTS: usize = 10;
const IN_FLIGHT: usize = 96;
const DNS_SAMPLE: usize = 40;
/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on every Linux mcsd targets).
const USER_HZ: f64 = 100.0;

struct Options {
    sizes: Vec<usize>,
    changes: usize,
    namespaces: usize,
    timeout: Duration,
}

impl Options {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let sizes = var("SCALE_SIZES")
            .or_else(|| {
                std::env::args()
                    .skip(1)
                    .find(|a| a.chars().all(|c| c.is_ascii_digit() || c == ','))
            })
            .unwrap_or_else(|| "1000,3000,10000".into())
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("SCALE_SIZES: comma-separated numbers"))
            .collect();
        let num = |name: &str, default: u64| var(name).map_or(default, |v| v.parse().expect(name));
        Self {
            sizes,
            changes: num("SCALE_CHANGES", 300) as usize,
            namespaces: num("SCALE_NAMESPACES", 10) as usize,
            timeout: Duration::from_secs(num("SCALE_TIMEOUT", 600)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The load.

/// Service `k` of N: exported from cluster `k % 3`, in namespace `ns-<(k / 3) % namespaces>`.
#[derive(Clone, Debug)]
struct Svc {
    cluster: usize,
    namespace: String,
    name: String,
    /// Index among its cluster's services (for addresses).
    local: usize,
}

impl Svc {
    fn nth(k: usize, namespaces: usize) -> Self {
        Self {
            cluster: k % CLUSTERS,
            namespace: format!("ns-{}", (k / CLUSTERS) % namespaces),
            name: format!("svc-{k}"),
            local: k / CLUSTERS,
        }
    }

    fn slice_name(&self) -> String {
        format!("{}-src", self.name)
    }

    /// Endpoint `e`'s address: in the exporting cluster's pod range `10.(160+i).0.0/16`.
    fn address(&self, e: usize) -> String {
        let v = self.local * ENDPOINTS + e + 1;
        format!("10.{}.{}.{}", 160 + self.cluster, v >> 8, v & 255)
    }

    fn endpoints(&self, unready: Option<usize>) -> Value {
        json!(
            (0..ENDPOINTS)
                .map(|e| {
                    let ready = unready != Some(e);
                    json!({
                        "addresses": [self.address(e)],
                        "conditions": {"ready": ready, "serving": ready, "terminating": false},
                    })
                })
                .collect::<Vec<_>>()
        )
    }

    fn dns_name(&self) -> String {
        format!("{}.{}.svc.clusterset.local", self.name, self.namespace)
    }
}

async fn create_load(clients: &[Client], services: &[Svc]) {
    let jobs = services.iter().map(|s| {
        let client = clients[s.cluster].clone();
        let s = s.clone();
        async move {
            let pp = PostParams::default();
            let service: Service = serde_json::from_value(json!({
                "metadata": {"name": s.name, "namespace": s.namespace},
                "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
            }))
            .unwrap();
            Api::<Service>::namespaced(client.clone(), &s.namespace)
                .create(&pp, &service)
                .await
                .unwrap();
            let slice: EndpointSlice = serde_json::from_value(json!({
                "metadata": {
                    "name": s.slice_name(),
                    "namespace": s.namespace,
                    "labels": {
                        "kubernetes.io/service-name": s.name,
                        "endpointslice.kubernetes.io/managed-by": "scale-bench.mcsd.io",
                    },
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": s.endpoints(None),
            }))
            .unwrap();
            Api::<EndpointSlice>::namespaced(client.clone(), &s.namespace)
                .create(&pp, &slice)
                .await
                .unwrap();
            Api::<ServiceExport>::namespaced(client, &s.namespace)
                .create(&pp, &ServiceExport::new(&s.name, Default::default()))
                .await
                .unwrap();
        }
    });
    futures::stream::iter(jobs)
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
}

// ---------------------------------------------------------------------------------------------
// /proc and the admin listener.

fn proc_status_mb(pid: u32, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds of a process: `/proc/PID/stat` utime + stime (includes exited threads).
fn cpu_stat_s(pid: u32) -> f64 {
    stat_cpu_s(&format!("/proc/{pid}/stat"))
}

/// utime + stime, in seconds, of the `stat` file at `path` (a process's or a thread's).
fn stat_cpu_s(path: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let get = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get(14) + get(15)) / USER_HZ
}

/// CPU seconds of a process's live threads, in nanoseconds' precision
/// (`/proc/PID/task/*/schedstat`, first field).
fn cpu_sched_s(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut ns = 0u64;
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}

/// CPU seconds of this process's tokio worker threads: the three sandbox API servers and their
/// controllers (the bench's own main thread, which creates the load and polls, is left out).
fn sandbox_cpu_s() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut total = 0.0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("tokio-r") {
            continue;
        }
        total += stat_cpu_s(&task.path().join("stat").to_string_lossy());
    }
    total
}

/// `mcsd_writes_total` by `kind/operation/outcome`.
async fn writes(admin: SocketAddr) -> BTreeMap<String, u64> {
    let reply = mcsd::commands::admin_client::get(admin, "/metrics", mcsd::commands::admin_client::TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{admin}/metrics: {e}"));
    assert_eq!(reply.status, 200, "{admin}/metrics: {reply:?}");
    reply
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("mcsd_writes_total{"))
        .filter_map(|l| {
            let (labels, value) = l.split_once('}')?;
            let get = |k: &str| {
                labels
                    .split(',')
                    .find_map(|p| p.strip_prefix(k)?.strip_prefix("=\""))
                    .map(|v| v.trim_end_matches('"').to_string())
                    .unwrap_or_default()
            };
            let key = format!("{}/{}/{}", get("kind"), get("operation"), get("outcome"));
            Some((key, value.trim().parse::<u64>().ok()?))
        })
        .collect()
}

fn total(w: &BTreeMap<String, u64>) -> u64 {
    w.values().sum()
}

// ---------------------------------------------------------------------------------------------
// The mcsd processes.

struct Mcsd {
    child: tokio::process::Child,
    pid: u32,
    dns: SocketAddr,
    admin: SocketAddr,
    identity: String,
}

struct Set {
    members: Vec<Member>,
    dir: PathBuf,
    names: Vec<String>,
    /// Each cluster's kubeconfig for ServiceAccount `mcsd-system/mcsd`.
    own: Vec<PathBuf>,
    /// Each cluster's kubeconfig for ServiceAccount `mcsd-system/mcsd-peer`.
    peer: Vec<PathBuf>,
}

impl Set {
    async fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut members = Vec::new();
        for i in 0..CLUSTERS {
            members.push(
                mcsd::process::sandbox::start_member(i, dir)
                    .await
                    .expect("sandbox member"),
            );
        }
        let names: Vec<String> = members.iter().map(|m| m.cluster.name().to_string()).collect();
        let mut own = Vec::new();
        let mut peer = Vec::new();
        for m in &members {
            for (sa, list) in [("mcsd", &mut own), ("mcsd-peer", &mut peer)] {
                let path = dir.join(format!("{}-{sa}.kubeconfig", m.cluster.name()));
                let yaml = m.cluster.service_account_kubeconfig("mcsd-system", sa).unwrap();
                std::fs::write(&path, yaml).unwrap();
                list.push(path);
            }
        }
        Self {
            members,
            dir: dir.to_path_buf(),
            names,
            own,
            peer,
        }
    }

    fn cluster(&self, i: usize) -> &Cluster {
        &self.members[i].cluster
    }

    /// Spawns `mcsd run` for every cluster (all three before waiting for any).
    async fn spawn_all(&self, generation: usize) -> Vec<Mcsd> {
        let bin = mcsd_tests::mcsd_binary();
        let mut children = Vec::new();
        for i in 0..CLUSTERS {
            let identity = format!("scale-{}-{generation}", self.names[i]);
            let log = std::fs::File::create(self.dir.join(format!("{identity}.log"))).unwrap();
            // SCALE_WRAP (e.g. `heaptrack -o DIR/x`) runs the restarted generation under a tool.
            let wrap: Vec<String> = std::env::var("SCALE_WRAP")
                .ok()
                .filter(|_| generation > 0)
                .map(|w| w.split_whitespace().map(|a| a.replace("{}", &identity)).collect())
                .unwrap_or_default();
            let mut cmd = match wrap.split_first() {
                Some((tool, args)) => {
                    let mut c = tokio::process::Command::new(tool);
                    c.args(args).arg(&bin);
                    c
                }
                None => tokio::process::Command::new(&bin),
            };
            cmd.arg("run")
                .arg("--kubeconfig")
                .arg(&self.own[i])
                .args(["--cluster-id", &self.names[i]]);
            for j in (0..CLUSTERS).filter(|j| *j != i) {
                cmd.arg("--peer")
                    .arg(format!("{}={}", self.names[j], self.peer[j].display()));
            }
            cmd.args(["--dns-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
                .env("RUST_LOG", "warn,mcsd::daemon::leader=info")
                .env("MCSD_POD_NAME", &identity)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(log)
                .kill_on_drop(true);
            children.push((cmd.spawn().expect("mcsd starts"), identity));
        }
        let mut out = Vec::new();
        for (mut child, identity) in children {
            let pid = child.id().unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let line = tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    match lines.next_line().await.unwrap() {
                        Some(l) if l.starts_with("mcsd run: serving") => return l,
                        Some(_) => continue,
                        None => panic!("mcsd {identity} exited; see {identity}.log"),
                    }
                }
            })
            .await
            .expect("mcsd printed its addresses within 60 s");
            // Keep reading (and dropping) whatever else it prints.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            let field = |k: &str| -> SocketAddr {
                line.split(k)
                    .nth(1)
                    .and_then(|v| v.split([' ', ',']).next())
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no {k} in {line:?}"))
            };
            out.push(Mcsd {
                child,
                pid,
                dns: field("dns="),
                admin: field("admin="),
                identity,
            });
        }
        out
    }

    /// How many times each mcsd of `generation` logged that it lost the leadership.
    fn leadership_losses(&self, generation: usize) -> Vec<usize> {
        self.names
            .iter()
            .map(|name| {
                std::fs::read_to_string(self.dir.join(format!("scale-{name}-{generation}.log")))
                    .unwrap_or_default()
                    .matches("lost the leadership")
                    .count()
            })
            .collect()
    }

    /// Which replica holds each cluster's Lease.
    fn lease_holder(&self, i: usize) -> String {
        let api = self.cluster(i).api();
        let info = api.resource("coordination.k8s.io", "leases").unwrap();
        api.get(&info, "mcsd-system", "mcsd")
            .ok()
            .and_then(|l| l.pointer("/spec/holderIdentity")?.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// SIGTERM, then wait for the exit.
async fn stop(mut m: Mcsd) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &m.pid.to_string()])
        .status();
    match tokio::time::timeout(Duration::from_secs(60), m.child.wait()).await {
        Ok(status) => assert!(status.unwrap().success(), "{} exited with an error", m.identity),
        Err(_) => panic!("{} did not exit within 60 s of SIGTERM", m.identity),
    }
}

/// Seconds from `since` until each admin listener's `/readyz` answers 200.
async fn readyz(admins: Vec<(SocketAddr, String)>, since: Instant, timeout: Duration) -> Vec<f64> {
    let waits = admins.into_iter().map(|(admin, identity)| async move {
        let deadline = since + timeout;
        loop {
            let reply =
                mcsd::commands::admin_client::get(admin, "/readyz", mcsd::commands::admin_client::TIMEOUT)
                    .await;
            if reply.is_ok_and(|r| r.status == 200) {
                return since.elapsed().as_secs_f64();
            }
            assert!(
                Instant::now() < deadline,
                "{identity} not ready after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    futures::future::join_all(waits).await
}

/// Waits until no mcsd has written for `quiet`; returns each one's counts.
async fn settle(mcsds: &[Mcsd], quiet: Duration, timeout: Duration) -> Vec<BTreeMap<String, u64>> {
    let deadline = Instant::now() + timeout;
    let mut last: Vec<BTreeMap<String, u64>> = Vec::new();
    let mut since = Instant::now();
    loop {
        let now: Vec<_> = futures::future::join_all(mcsds.iter().map(|m| writes(m.admin))).await;
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return last;
        }
        if Instant::now() > deadline {
            println!("  (writes still changing after {timeout:?})");
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until every mcsd's CPU rate stays under `QUIET_MS_PER_S` for two windows of 1 s in a
/// row; returns the seconds from `since` until then (the end of the last busy window).
async fn cpu_quiet(mcsds: &[Mcsd], since: Instant, timeout: Duration) -> f64 {
    const QUIET_MS_PER_S: f64 = 20.0;
    let deadline = Instant::now() + timeout;
    let mut quiet_windows = 0;
    let mut last_busy = since.elapsed().as_secs_f64();
    loop {
        let c0: Vec<f64> = mcsds.iter().map(|m| cpu_sched_s(m.pid)).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = mcsds
            .iter()
            .zip(&c0)
            .any(|(m, c)| (cpu_sched_s(m.pid) - c) * 1000.0 > QUIET_MS_PER_S);
        if busy {
            quiet_windows = 0;
            last_busy = since.elapsed().as_secs_f64();
        } else {
            quiet_windows += 1;
            if quiet_windows == 2 {
                return last_busy;
            }
        }
        if Instant::now() > deadline {
            println!("  (mcsd still busy after {timeout:?})");
            return last_busy;
        }
    }
}

/// JSON bytes of the objects in `cluster`'s store by resource: (objects, total MB, of which
/// `metadata.managedFields` MB).
fn store_sizes(cluster: &Cluster) -> BTreeMap<String, (usize, f64, f64)> {
    let api = cluster.api();
    let mut out = BTreeMap::new();
    for (group, resource) in [
        ("", "services"),
        ("discovery.k8s.io", "endpointslices"),
        ("", "configmaps"),
        ("multicluster.x-k8s.io", "serviceexports"),
        ("multicluster.x-k8s.io", "serviceimports"),
    ] {
        let info = api.resource(group, resource).unwrap();
        let (items, _) = api.list(&info, None);
        let mut bytes = 0usize;
        let mut managed = 0usize;
        for item in &items {
            bytes += serde_json::to_vec(item.as_ref()).map_or(0, |v| v.len());
            if let Some(m) = item.pointer("/metadata/managedFields") {
                managed += serde_json::to_vec(m).map_or(0, |v| v.len());
            }
        }
        let mb = |b: usize| b as f64 / 1_048_576.0;
        out.insert(resource.to_string(), (items.len(), mb(bytes), mb(managed)));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Convergence.

fn ready_import(import: &Value) -> bool {
    let ips = import
        .pointer("/spec/ips")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let ready = import
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    ips && ready
}

/// ServiceImports with IPs and Ready in a cluster (read from the store, as cheaply as it goes:
/// this runs beside what it measures).
fn ready_imports(cluster: &Cluster) -> usize {
    let api = cluster.api();
    let imports = api.resource("multicluster.x-k8s.io", "serviceimports").unwrap();
    let (items, _) = api.list(&imports, None);
    items.iter().filter(|i| ready_import(i)).count()
}

/// MCS EndpointSlices with every endpoint in a cluster.
fn full_mcs_slices(cluster: &Cluster) -> usize {
    let api = cluster.api();
    let slices = api.resource("discovery.k8s.io", "endpointslices").unwrap();
    let (items, _) = api.list(&slices, None);
    items
        .iter()
        .filter(|s| {
            s.get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(|l| l.get("multicluster.kubernetes.io/service-name"))
                .is_some()
                && s.get("endpoints")
                    .and_then(Value::as_array)
                    .is_some_and(|e| e.len() == ENDPOINTS)
        })
        .count()
}

fn import_ip(cluster: &Cluster, s: &Svc) -> Option<String> {
    let api = cluster.api();
    let info = api.resource("multicluster.x-k8s.io", "serviceimports").unwrap();
    let import = api.get(&info, &s.namespace, &s.name).ok()?;
    import.pointer("/spec/ips/0")?.as_str().map(str::to_string)
}

/// Polls `server` until it answers each `(name, ip)` with exactly `ip`.
async fn dns_answers(server: SocketAddr, expected: Vec<(String, String)>, deadline: Instant) -> bool {
    tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut id = 0u16;
        for (name, ip) in &expected {
            loop {
                id = id.wrapping_add(1);
                if mcsd_tests::ask_a(&socket, server, name, id) == [ip.clone()] {
                    break;
                }
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        true
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Measurements.

#[derive(Default)]
struct Row {
    n: usize,
    failure: Option<String>,
    leadership_lost: Vec<usize>,
    create_s: f64,
    readyz_s: Vec<f64>,
    imports_s: f64,
    converged_s: f64,
    converge_cpu_s: Vec<f64>,
    sandbox_cpu_s: f64,
    converge_writes: Vec<u64>,
    converge_quiet_s: f64,
    converge_total_cpu_s: Vec<f64>,
    resync_quiet_s: f64,
    resync_cpu_s: Vec<f64>,
    rss_mb: Vec<f64>,
    hwm_mb: Vec<f64>,
    resync_readyz_s: Vec<f64>,
    resync_writes: Vec<u64>,
    resync_kinds: Vec<String>,
    resync_store_writes: Vec<String>,
    resync_rss_mb: Vec<f64>,
    resync_hwm_mb: Vec<f64>,
    change_ms: Vec<f64>,
    idle_cpu_ms_per_s: Vec<f64>,
    change_cpu_ms: Vec<f64>,
    change_cpu_ms_gross: Vec<f64>,
    change_cpu_ms_stat: Vec<f64>,
    change_sandbox_cpu_ms: f64,
    change_writes: f64,
    change_kinds: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn fmt_list(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Every write that landed in `cluster` since `rv`, Leases left out, by resource and event type.
fn store_writes_since(cluster: &Cluster, rv: u64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    match cluster.api().store().events_since(rv) {
        Ok((events, _)) => {
            for e in events.iter().filter(|e| e.key.gr.resource != "leases") {
                *out.entry(format!("{}/{}", e.key.gr.resource, e.kind.as_str()))
                    .or_default() += 1;
            }
        }
        Err(_) => {
            out.insert("event log rolled over".into(), 1);
        }
    }
    out
}

fn slice_key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        gr: mcsd_sandbox::store::GroupResource::new("discovery.k8s.io", "endpointslices"),
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

/// Whether the MCS slice `key` of `cluster` holds `address` with `ready`.
fn slice_says(cluster: &Cluster, key: &ObjectKey, address: &str, ready: bool) -> bool {
    cluster.api().store().get(key).is_some_and(|s| {
        s.pointer("/endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|e| e.pointer("/addresses/0").and_then(Value::as_str) == Some(address))
            .is_some_and(|e| e.pointer("/conditions/ready") == Some(&Value::Bool(ready)))
    })
}

async fn run_size(n: usize, opts: &Options) -> Row {
    let mut row = Row {
        n,
        ..Default::default()
    };
    let dir = std::env::temp_dir().join(format!("mcsd-scale-{}-{n}", std::process::id()));
    let set = Set::start(&dir).await;
    let (clients, services) = load(&set, opts, &mut row).await;
    let started = Instant::now();
    let Some(mcsds) = converge(&set, &services, opts, started, &mut row).await else {
        for m in set.members {
            m.cluster.shutdown().await;
        }
        return row;
    };
    steady(&set, &mcsds, opts, started, &mut row).await;
    let mcsds = resync(&set, mcsds, opts, &mut row).await;
    hold(n, &mcsds, &dir).await;
    changes(&set, &clients, &mcsds, opts, &mut row).await;
    row.leadership_lost = set
        .leadership_losses(0)
        .iter()
        .zip(set.leadership_losses(1))
        .map(|(a, b)| a + b)
        .collect();
    for m in mcsds {
        stop(m).await;
    }
    for m in set.members {
        m.cluster.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    row
}

/// Phase 1, the load: the namespaces in every cluster, then N Services with their slices and
/// exports.
async fn load(set: &Set, opts: &Options, row: &mut Row) -> (Vec<Client>, Vec<Svc>) {
    let n = row.n;
    let clients: Vec<Client> =
        futures::future::join_all((0..CLUSTERS).map(|i| set.cluster(i).admin_client()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    for client in &clients {
        for ns in 0..opts.namespaces {
            let ns: Namespace =
                serde_json::from_value(json!({"metadata": {"name": format!("ns-{ns}")}})).unwrap();
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &ns)
                .await
                .unwrap();
        }
    }
    let services: Vec<Svc> = (0..n).map(|k| Svc::nth(k, opts.namespaces)).collect();
    let t = Instant::now();
    create_load(&clients, &services).await;
    row.create_s = t.elapsed().as_secs_f64();
    println!(
        "N={n}: created {n} Services, EndpointSlices and ServiceExports in {:.1} s",
        row.create_s
    );

    (clients, services)
}

/// Phase 2, initial convergence: every mcsd started at `started`, until every cluster has every
/// import with its slices and its DNS server answers a sample. `None` (the mcsds stopped, the
/// failure in `row`) when it does not converge in time.
async fn converge(
    set: &Set,
    services: &[Svc],
    opts: &Options,
    started: Instant,
    row: &mut Row,
) -> Option<Vec<Mcsd>> {
    let sandbox_cpu0 = sandbox_cpu_s();
    let mcsds = set.spawn_all(0).await;
    let readyz_task = tokio::spawn(readyz(
        mcsds.iter().map(|m| (m.admin, m.identity.clone())).collect(),
        started,
        opts.timeout,
    ));
    let deadline = started + opts.timeout;
    let n = row.n;
    let mut last_print = Instant::now();
    loop {
        let imports: Vec<usize> = (0..CLUSTERS).map(|i| ready_imports(set.cluster(i))).collect();
        let mut slices = vec![0; CLUSTERS];
        if imports.iter().all(|i| *i >= n) {
            if row.imports_s == 0.0 {
                row.imports_s = started.elapsed().as_secs_f64();
            }
            slices = (0..CLUSTERS).map(|i| full_mcs_slices(set.cluster(i))).collect();
        }
        let counts: Vec<(usize, usize)> = imports.into_iter().zip(slices).collect();
        if counts
            .iter()
            .all(|(imports, slices)| *imports >= n && *slices >= n)
        {
            break;
        }
        if Instant::now() > deadline {
            let failure = format!(
                "not converged after {:.0} s: (ready imports, MCS slices once every import is) per cluster {counts:?}; leadership lost {:?} times",
                opts.timeout.as_secs_f64(),
                set.leadership_losses(0)
            );
            println!("N={n}: {failure}");
            row.failure = Some(failure);
            row.converge_total_cpu_s = mcsds.iter().map(|m| cpu_stat_s(m.pid)).collect();
            row.rss_mb = mcsds.iter().map(|m| proc_status_mb(m.pid, "VmRSS")).collect();
            row.hwm_mb = mcsds.iter().map(|m| proc_status_mb(m.pid, "VmHWM")).collect();
            for m in mcsds {
                stop(m).await;
            }
            return None;
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            println!(
                "  {:>5.1} s: (ready imports, MCS slices once every import is) per cluster {counts:?}",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every cluster's DNS server answers a sample of names with its own clusterset IP.
    let step = (n / DNS_SAMPLE).max(1);
    let checks = (0..CLUSTERS).map(|i| {
        let expected: Vec<(String, String)> = services
            .iter()
            .step_by(step)
            .map(|s| (s.dns_name(), import_ip(set.cluster(i), s).expect("imported")))
            .collect();
        dns_answers(mcsds[i].dns, expected, deadline)
    });
    let ok = futures::future::join_all(checks).await;
    assert!(
        ok.iter().all(|o| *o),
        "N={n}: DNS never answered the sample: {ok:?}"
    );
    row.converged_s = started.elapsed().as_secs_f64();
    row.readyz_s = readyz_task.await.unwrap();
    row.converge_cpu_s = mcsds.iter().map(|m| cpu_stat_s(m.pid)).collect();
    row.sandbox_cpu_s = sandbox_cpu_s() - sandbox_cpu0;
    println!(
        "N={n}: converged in {:.1} s (imports ready in every cluster at {:.1} s); /readyz at {} s; CPU s so far {} (sandbox process {:.1})",
        row.converged_s,
        row.imports_s,
        fmt_list(&row.readyz_s, 1),
        fmt_list(&row.converge_cpu_s, 1),
        row.sandbox_cpu_s,
    );

    Some(mcsds)
}

/// Phase 3, steady state: writes to converge, when the CPU goes quiet, memory.
async fn steady(set: &Set, mcsds: &[Mcsd], opts: &Options, started: Instant, row: &mut Row) {
    let settled = settle(mcsds, Duration::from_secs(3), Duration::from_secs(120)).await;
    row.converge_writes = settled.iter().map(total).collect();
    row.converge_quiet_s = cpu_quiet(mcsds, started, opts.timeout).await;
    row.converge_total_cpu_s = mcsds.iter().map(|m| cpu_stat_s(m.pid)).collect();
    row.rss_mb = mcsds.iter().map(|m| proc_status_mb(m.pid, "VmRSS")).collect();
    row.hwm_mb = mcsds.iter().map(|m| proc_status_mb(m.pid, "VmHWM")).collect();
    println!(
        "N={}: writes to converge {:?}; CPU quiet at {:.1} s, CPU s {}; RSS MB {} (peak {}); cluster-a's objects (count, JSON MB, of which managedFields MB): {:?}",
        row.n,
        row.converge_writes,
        row.converge_quiet_s,
        fmt_list(&row.converge_total_cpu_s, 1),
        fmt_list(&row.rss_mb, 0),
        fmt_list(&row.hwm_mb, 0),
        store_sizes(set.cluster(0))
            .iter()
            .map(|(k, (n, mb, mf))| format!("{k} {n} {mb:.1} {mf:.1}"))
            .collect::<Vec<_>>()
    );
}

/// Phase 4, full resync: stop all three, start them again; what they write (nothing, when right).
async fn resync(set: &Set, mcsds: Vec<Mcsd>, opts: &Options, row: &mut Row) -> Vec<Mcsd> {
    let rv_before: Vec<u64> = (0..CLUSTERS)
        .map(|i| set.cluster(i).api().store().head())
        .collect();
    for m in mcsds {
        stop(m).await;
    }
    let restarted = Instant::now();
    let mcsds = set.spawn_all(1).await;
    row.resync_readyz_s = readyz(
        mcsds.iter().map(|m| (m.admin, m.identity.clone())).collect(),
        restarted,
        opts.timeout,
    )
    .await;
    // Each new replica must lead (else writing nothing would prove nothing).
    let lead_deadline = Instant::now() + Duration::from_secs(30);
    for (i, m) in mcsds.iter().enumerate() {
        while !set.lease_holder(i).starts_with(&format!("{}-", m.identity)) {
            assert!(
                Instant::now() < lead_deadline,
                "{} never took the Lease (holder {:?})",
                m.identity,
                set.lease_holder(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    row.resync_quiet_s = cpu_quiet(&mcsds, restarted, opts.timeout).await;
    row.resync_cpu_s = mcsds.iter().map(|m| cpu_stat_s(m.pid)).collect();
    let after = settle(&mcsds, Duration::from_secs(3), Duration::from_secs(120)).await;
    row.resync_writes = after.iter().map(total).collect();
    row.resync_kinds = after
        .iter()
        .map(|w| {
            w.iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    row.resync_store_writes = (0..CLUSTERS)
        .map(|i| {
            store_writes_since(set.cluster(i), rv_before[i])
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    row.resync_rss_mb = mcsds.iter().map(|m| proc_status_mb(m.pid, "VmRSS")).collect();
    row.resync_hwm_mb = mcsds.iter().map(|m| proc_status_mb(m.pid, "VmHWM")).collect();
    println!(
        "N={}: restart: /readyz at {} s; CPU quiet at {:.1} s, CPU s {}; writes {:?} {:?}; other writes in the API servers {:?}; RSS MB {} (peak {})",
        row.n,
        fmt_list(&row.resync_readyz_s, 1),
        row.resync_quiet_s,
        fmt_list(&row.resync_cpu_s, 1),
        row.resync_writes,
        row.resync_kinds,
        row.resync_store_writes,
        fmt_list(&row.resync_rss_mb, 0),
        fmt_list(&row.resync_hwm_mb, 0),
    );

    mcsds
}

/// `SCALE_HOLD=SECONDS`: keeps everything running for inspection.
async fn hold(n: usize, mcsds: &[Mcsd], dir: &Path) {
    if let Some(hold) = std::env::var("SCALE_HOLD")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        println!(
            "N={n}: holding {hold} s for inspection; mcsd pids {:?}, dir {}",
            mcsds.iter().map(|m| m.pid).collect::<Vec<_>>(),
            dir.display()
        );
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }
}

/// Phase 5, per-change work: one endpoint turned unready at a time, until the other clusters
/// say so.
async fn changes(set: &Set, clients: &[Client], mcsds: &[Mcsd], opts: &Options, row: &mut Row) {
    let n = row.n;
    let idle_window = Duration::from_secs(5);
    let idle0: Vec<f64> = mcsds.iter().map(|m| cpu_sched_s(m.pid)).collect();
    tokio::time::sleep(idle_window).await;
    row.idle_cpu_ms_per_s = mcsds
        .iter()
        .zip(&idle0)
        .map(|(m, c0)| (cpu_sched_s(m.pid) - c0) * 1000.0 / idle_window.as_secs_f64())
        .collect();
    let writes0: Vec<_> = futures::future::join_all(mcsds.iter().map(|m| writes(m.admin))).await;
    let rv0: Vec<u64> = (0..CLUSTERS)
        .map(|i| set.cluster(i).api().store().head())
        .collect();
    let cpu0: Vec<f64> = mcsds.iter().map(|m| cpu_sched_s(m.pid)).collect();
    let stat0: Vec<f64> = mcsds.iter().map(|m| cpu_stat_s(m.pid)).collect();
    let sandbox0 = sandbox_cpu_s();
    let t0 = Instant::now();
    let per_cluster = n / CLUSTERS;
    let ids: Vec<ClusterId> = set.names.iter().map(|s| s.parse().unwrap()).collect();
    let mut latencies = Vec::new();
    for c in 0..opts.changes {
        let cluster = c % CLUSTERS;
        // 7919 is prime: distinct services for as long as c / 3 < per_cluster.
        let local = (c / CLUSTERS * 7919) % per_cluster;
        let s = Svc::nth(local * CLUSTERS + cluster, opts.namespaces);
        let mcs_name = mcsd::core::import::slice_name(
            &s.name,
            &ids[cluster],
            &mcsd::core::exchange::mirror_name(&s.namespace, &s.slice_name()),
        );
        let key = slice_key(&s.namespace, &mcs_name);
        let address = s.address(0);
        for i in 0..CLUSTERS {
            assert!(
                slice_says(set.cluster(i), &key, &address, true),
                "{} has no MCS slice {mcs_name} with {address} ready",
                set.names[i]
            );
        }
        let api: Api<EndpointSlice> = Api::namespaced(clients[cluster].clone(), &s.namespace);
        let patch = json!({"endpoints": s.endpoints(Some(0))});
        let sent = Instant::now();
        api.patch(&s.slice_name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let others: Vec<usize> = (0..CLUSTERS).filter(|i| *i != cluster).collect();
        let deadline = sent + Duration::from_secs(30);
        loop {
            if others
                .iter()
                .all(|i| slice_says(set.cluster(*i), &key, &address, false))
            {
                break;
            }
            assert!(Instant::now() < deadline, "change {c} ({}) never arrived", s.name);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        // The exporting cluster's own import too, before the next change.
        while !slice_says(set.cluster(cluster), &key, &address, false) {
            assert!(
                Instant::now() < deadline,
                "change {c} never reached its own cluster"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let changes_window = t0.elapsed();
    let writes1 = settle(mcsds, Duration::from_secs(1), Duration::from_secs(30)).await;
    // CPU counted up to the settled point, idle rate subtracted over the whole window.
    let window = t0.elapsed().as_secs_f64();
    let k = opts.changes as f64;
    row.change_cpu_ms_gross = mcsds
        .iter()
        .zip(&cpu0)
        .map(|(m, c0)| (cpu_sched_s(m.pid) - c0) * 1000.0 / k)
        .collect();
    row.change_cpu_ms = row
        .change_cpu_ms_gross
        .iter()
        .zip(&row.idle_cpu_ms_per_s)
        .map(|(g, idle)| g - idle * window / k)
        .collect();
    row.change_cpu_ms_stat = mcsds
        .iter()
        .zip(&stat0)
        .map(|(m, c0)| (cpu_stat_s(m.pid) - c0) * 1000.0 / k)
        .collect();
    row.change_sandbox_cpu_ms = (sandbox_cpu_s() - sandbox0) * 1000.0 / k;
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for (w1, w0) in writes1.iter().zip(&writes0) {
        for (key, v) in w1 {
            let d = v - w0.get(key).copied().unwrap_or(0);
            if d > 0 {
                *kinds.entry(key.clone()).or_default() += d;
            }
        }
    }
    row.change_writes = kinds.values().sum::<u64>() as f64 / k;
    let mut store_kinds: BTreeMap<String, u64> = BTreeMap::new();
    for (i, rv) in rv0.iter().enumerate() {
        for (key, v) in store_writes_since(set.cluster(i), *rv) {
            *store_kinds.entry(key).or_default() += v;
        }
    }
    row.change_kinds = format!(
        "mcsd: {} | API servers (incl. the bench's {} patches): {}",
        kinds
            .iter()
            .map(|(k2, v)| format!("{k2}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        opts.changes,
        store_kinds
            .iter()
            .map(|(k2, v)| format!("{k2}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    row.change_ms = latencies;
    let mut sorted = row.change_ms.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "N={n}: {} changes in {:.1} s: p50 {:.1} ms, p99 {:.1} ms, mean {:.1} ms; CPU ms/change {} (gross {}, by /proc/PID/stat {}, idle ms/s {}); sandbox process {:.1} ms/change; writes/change {:.2} ({})",
        opts.changes,
        changes_window.as_secs_f64(),
        percentile(&sorted, 50.0),
        percentile(&sorted, 99.0),
        sorted.iter().sum::<f64>() / k,
        fmt_list(&row.change_cpu_ms, 2),
        fmt_list(&row.change_cpu_ms_gross, 2),
        fmt_list(&row.change_cpu_ms_stat, 1),
        fmt_list(&row.idle_cpu_ms_per_s, 2),
        row.change_sandbox_cpu_ms,
        row.change_writes,
        row.change_kinds,
    );
}

fn check_binary() {
    let bin = mcsd_tests::mcsd_binary();
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).unwrap();
    let root = mcsd_tests::repo_root();
    let mut newest = (SystemTime::UNIX_EPOCH, PathBuf::new());
    let mut stack: Vec<PathBuf> = ["controller/src", "dns/src", "crds/src", "sandbox/src"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else if let Ok(t) = std::fs::metadata(&p).and_then(|m| m.modified())
            && t > newest.0
        {
            newest = (t, p);
        }
    }
    assert!(
        built >= newest.0,
        "{} is older than {}: run `cargo build --release -p mcsd` first",
        bin.display(),
        newest.1.display()
    );
}

#[tokio::main]
async fn main() {
    let opts = Options::from_env();
    check_binary();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "scale: sizes {:?}, {} namespaces, {ENDPOINTS} endpoints per service, {} changes; {} cores; load average {}",
        opts.sizes,
        opts.namespaces,
        opts.changes,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let mut rows = Vec::new();
    for &n in &opts.sizes {
        rows.push(run_size(n, &opts).await);
    }
    println!();
    println!(
        "| N | create s | mcsd /readyz s (a/b/c) | imports Ready s | converged s (+DNS) | CPU quiet s | mcsd CPU s (a/b/c) | sandbox CPU s | writes to converge | RSS MB (a/b/c) | peak RSS MB |"
    );
    println!("|{}", "---|".repeat(11));
    for r in &rows {
        if let Some(failure) = &r.failure {
            println!(
                "| {} | {:.1} | {} | {failure} | | | {} | | | {} | {} |",
                r.n,
                r.create_s,
                fmt_list(&r.readyz_s, 1),
                fmt_list(&r.converge_total_cpu_s, 1),
                fmt_list(&r.rss_mb, 0),
                fmt_list(&r.hwm_mb, 0),
            );
            continue;
        }
        println!(
            "| {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {} | {} | {} |",
            r.n,
            r.create_s,
            fmt_list(&r.readyz_s, 1),
            r.imports_s,
            r.converged_s,
            r.converge_quiet_s,
            fmt_list(&r.converge_total_cpu_s, 1),
            r.sandbox_cpu_s,
            r.converge_writes.iter().sum::<u64>(),
            fmt_list(&r.rss_mb, 0),
            fmt_list(&r.hwm_mb, 0),
        );
    }
    println!();
    println!(
        "| N | restart: /readyz s | CPU quiet s | mcsd CPU s (a/b/c) | writes | RSS MB (a/b/c) | change p50 ms | p99 ms | mean ms | CPU ms/change (a/b/c, net of idle) | sandbox CPU ms/change | writes/change | leadership lost |"
    );
    println!("|{}", "---|".repeat(13));
    for r in rows.iter().filter(|r| r.failure.is_none()) {
        let mut sorted = r.change_ms.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "| {} | {} | {:.1} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {:.2} | {:.2} | {:?} |",
            r.n,
            fmt_list(&r.resync_readyz_s, 1),
            r.resync_quiet_s,
            fmt_list(&r.resync_cpu_s, 1),
            r.resync_writes.iter().sum::<u64>(),
            fmt_list(&r.resync_rss_mb, 0),
            percentile(&sorted, 50.0),
            percentile(&sorted, 99.0),
            sorted.iter().sum::<f64>() / sorted.len() as f64,
            fmt_list(&r.change_cpu_ms, 2),
            r.change_sandbox_cpu_ms,
            r.change_writes,
            r.leadership_lost,
        );
    }
}
