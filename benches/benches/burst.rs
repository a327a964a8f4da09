//! Bursts (issue #26): N ServiceExports created at once in cluster-a (a namespace of services
//! exported together, a cluster joining with hundreds of exports), then all deleted at once, on
//! whichever ClusterSet the tests are pointed at: real clusters (`MCSD_E2E_CLUSTERSET`, the
//! tier of `tests/kube/up.sh --release`) for the figures that count, or else a sandbox.
//!
//! For each N (`BURST_SIZES`, default `100,500,1000`), in a namespace of its own:
//! - N selector-less ClusterSetIP Services, each with a hand-written EndpointSlice of one ready
//!   endpoint, are created first (not measured);
//! - **export**: the N ServiceExports are created through the API, 32 requests at a time (kubectl
//!   creates one object after another: `kubectl apply` of 500 exports takes 36 s on its own on
//!   this machine, and would be what is measured); meanwhile cluster-b's and cluster-c's DNS
//!   servers are asked for every name not yet answered, all at once over UDP, every 100 ms;
//!   a name counts when it answers with an address. Reported: how long the creates took, when
//!   every name answered in both other clusters (from the first create), p50/p99 per name (from
//!   its own export's create), and when every mcsd stopped writing;
//! - **withdrawal**: the same with the N exports deleted, until every name is NXDOMAIN in both;
//! - for each phase, from just before it until every mcsd's writes stop: mcsd's writes per export
//!   per cluster by kind and operation (`mcsd_writes_total`), the API server's own count of
//!   mutating requests (`apiserver_request_total`, every client: mcsd, kubectl, the controllers),
//!   and the CPU seconds of mcsd, kube-apiserver and etcd of the three clusters (real clusters:
//!   `/proc/PID/stat` of the processes in `DIR/<cluster>/<component>.pid`).
//!
//! Run: `tests/kube/up.sh --release --dir /tmp/kb` until `clusterset ready`, then
//! `PATH=$(tests/kube/build.sh | tail -1):$PATH MCSD_E2E_CLUSTERSET=/tmp/kb cargo bench -p mcsd-benches --bench burst`.
#![allow(clippy::print_stdout)]

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use mcsd_benches::ProcessUse;
use mcsd_tests::{ClusterSet, Member, kubectl, label, metric_values};

/// How long one phase may take before the bench gives up.
const TIMEOUT: Duration = Duration::from_secs(900);
/// How often each name not yet right is asked again.
const ROUND: Duration = Duration::from_millis(100);
/// Writes unchanged for this long, with every answer right: the phase's work is done.
const QUIET: Duration = Duration::from_secs(3);

fn sizes() -> Vec<usize> {
    std::env::var("BURST_SIZES")
        .unwrap_or_else(|_| "100,500,1000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("BURST_SIZES: numbers separated by commas")
        })
        .collect()
}

/// What the API server and the processes had done at one moment, per cluster.
struct Counters {
    /// mcsd's successful writes by (kind, operation).
    mcsd: Vec<BTreeMap<(String, String), f64>>,
    /// The API server's mutating requests by (resource, verb); empty on the sandbox.
    api: Vec<BTreeMap<(String, String), f64>>,
    /// CPU seconds by component; empty on the sandbox.
    cpu: Vec<BTreeMap<&'static str, f64>>,
}

const COMPONENTS: [&str; 3] = ["mcsd", "kube-apiserver", "etcd"];

/// User + system CPU seconds of `component` of `member` (real clusters).
fn cpu_seconds(member: &Member, component: &str) -> Option<f64> {
    Some(ProcessUse::of(member.real_dir.as_ref()?, component).cpu)
}

async fn counters(set: &ClusterSet) -> Counters {
    let mut c = Counters {
        mcsd: Vec::new(),
        api: Vec::new(),
        cpu: Vec::new(),
    };
    for m in &set.members {
        let writes = m.writes().await.into_iter().map(|(k, v)| (k, v as f64)).collect();
        c.mcsd.push(writes);
        let mut api = BTreeMap::new();
        if set.is_real() {
            let text = kubectl(&m.kubeconfig, &["get", "--raw", "/metrics"]);
            for (labels, value) in metric_values(&text, "apiserver_request_total") {
                let verb = label(&labels, "verb").unwrap_or_default();
                if matches!(verb, "GET" | "LIST" | "WATCH") {
                    continue;
                }
                let mut resource = label(&labels, "resource").unwrap_or_default().to_string();
                if let Some(sub) = label(&labels, "subresource").filter(|s| !s.is_empty()) {
                    resource = format!("{resource}/{sub}");
                }
                *api.entry((resource, verb.to_string())).or_insert(0.0) += value;
            }
        }
        c.api.push(api);
        let cpu = COMPONENTS
            .iter()
            .filter_map(|&component| Some((component, cpu_seconds(m, component)?)))
            .collect();
        c.cpu.push(cpu);
    }
    c
}

fn delta<K: Ord + Clone>(before: &BTreeMap<K, f64>, after: &BTreeMap<K, f64>) -> BTreeMap<K, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Asks `servers` for every name in `pending` at once, round after round, until each answers as
/// `done` wants; returns when each name was first right, per server, from `start`.
fn poll_names(
    servers: &[SocketAddr],
    names: &[String],
    start: Instant,
    done: impl Fn(&Message) -> bool,
) -> Vec<Vec<Instant>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut when: Vec<Vec<Option<Instant>>> = vec![vec![None; names.len()]; servers.len()];
    let queries: Vec<Vec<u8>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut query = Message::query();
            query.metadata.id = i as u16;
            query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            query.to_vec().unwrap()
        })
        .collect();
    let mut buf = [0u8; 4096];
    loop {
        let mut waiting = 0;
        for (s, server) in servers.iter().enumerate() {
            for (i, query) in queries.iter().enumerate() {
                if when[s][i].is_none() {
                    waiting += 1;
                    let _ = socket.send_to(query, server);
                }
            }
        }
        if waiting == 0 {
            break;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "{waiting} answers still wrong after {TIMEOUT:?}"
        );
        // Replies, until the socket stays quiet for 20 ms; a round every 100 ms at most, so that
        // asking costs the machine little beside what is measured.
        let round_ends = Instant::now() + ROUND;
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let Some(s) = servers.iter().position(|a| *a == from) else {
                continue;
            };
            let Ok(reply) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let i = usize::from(reply.metadata.id);
            if i < names.len() && when[s][i].is_none() && done(&reply) {
                when[s][i] = Some(Instant::now());
            }
        }
        std::thread::sleep(round_ends.saturating_duration_since(Instant::now()));
    }
    when.into_iter()
        .map(|per| per.into_iter().map(Option::unwrap).collect())
        .collect()
}

fn answered(reply: &Message) -> bool {
    reply.answers.iter().any(|r| matches!(r.data, RData::A(_)))
}

fn withdrawn(reply: &Message) -> bool {
    reply.metadata.response_code == ResponseCode::NXDomain
}

/// Waits until no mcsd has written for [`QUIET`]; returns when the last write was seen.
async fn until_quiet(set: &ClusterSet, start: Instant) -> Duration {
    let mut last = Vec::new();
    let mut changed = start.elapsed();
    loop {
        let now: Vec<_> = {
            let mut all = Vec::new();
            for m in &set.members {
                all.push(m.writes().await);
            }
            all
        };
        if now != last {
            changed = start.elapsed();
            last = now;
        } else if start.elapsed() - changed >= QUIET {
            return changed;
        }
        assert!(start.elapsed() < TIMEOUT, "mcsd still writing after {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn per_export(map: &BTreeMap<(String, String), f64>, n: usize) -> String {
    let total: f64 = map.values().sum();
    let parts: Vec<String> = map
        .iter()
        .map(|((a, b), v)| format!("{a} {b} {:.2}", v / n as f64))
        .collect();
    format!("{:.2} ({})", total / n as f64, parts.join(", "))
}

/// One measured phase: the N exports created (or deleted) at once, then every name right in the
/// other clusters.
struct Phase {
    name: &'static str,
    /// How long the creates (deletes) took, all of them.
    requests: Duration,
    /// From the first request until every name was right in both other clusters.
    all_right: Duration,
    /// Per name and importing cluster: from its own request until it was right.
    per_name: Vec<Duration>,
    /// From the first request until every mcsd had stopped writing.
    quiet: Duration,
    before: Counters,
    after: Counters,
}

/// How many create (delete) requests are in flight at once.
const REQUESTS_AT_ONCE: usize = 32;

/// Creates the exports of `services` in cluster-a (`create`), or deletes them,
/// `REQUESTS_AT_ONCE` at a time; measures until every name of `names` answers (is NXDOMAIN) in
/// cluster-b and cluster-c and every mcsd has stopped writing.
async fn run_phase(set: &ClusterSet, ns: &str, services: &[String], names: &[String], create: bool) -> Phase {
    let (name, done): (&'static str, fn(&Message) -> bool) = if create {
        ("export", answered)
    } else {
        ("withdrawal", withdrawn)
    };
    use futures::StreamExt;
    use kube::api::{Api, DeleteParams, PostParams};
    use mcsd_crds::mcs::v1beta1::ServiceExport;
    let exports: Api<ServiceExport> = Api::namespaced(set.members[0].client().await, ns);
    let servers = [set.members[1].dns, set.members[2].dns];
    let before = counters(set).await;
    let start = Instant::now();
    let requests = futures::stream::iter(services.iter().enumerate())
        .map(|(i, service)| {
            let exports = exports.clone();
            async move {
                if create {
                    let export = ServiceExport::new(service, Default::default());
                    exports.create(&PostParams::default(), &export).await.unwrap();
                } else {
                    exports.delete(service, &DeleteParams::default()).await.unwrap();
                }
                (i, Instant::now())
            }
        })
        .buffer_unordered(REQUESTS_AT_ONCE)
        .collect::<Vec<_>>();
    let poll = tokio::task::spawn_blocking({
        let names = names.to_vec();
        move || poll_names(&servers, &names, start, done)
    });
    let (issued, when) = tokio::join!(requests, poll);
    let when = when.unwrap();
    let requests = issued.iter().map(|(_, at)| *at).max().unwrap() - start;
    let mut sent = vec![start; services.len()];
    for (i, at) in issued {
        sent[i] = at;
    }
    let quiet = until_quiet(set, start).await;
    let after = counters(set).await;
    let last = when.iter().flatten().max().unwrap();
    let per_name = when
        .iter()
        .flat_map(|per| {
            per.iter()
                .enumerate()
                .map(|(i, at)| at.saturating_duration_since(sent[i]))
        })
        .collect();
    Phase {
        name,
        requests,
        all_right: *last - start,
        per_name,
        quiet,
        before,
        after,
    }
}

/// Prints one phase's figures.
fn report(set: &ClusterSet, n: usize, phase: &Phase) {
    let mut all = phase.per_name.clone();
    all.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{} N={n}: requests {:.2} s; every name right in cluster-b and cluster-c after {:.2} s (per name p50 {:.0} ms, p99 {:.0} ms); writes done after {:.2} s",
        phase.name,
        phase.requests.as_secs_f64(),
        phase.all_right.as_secs_f64(),
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 99.0)),
        phase.quiet.as_secs_f64(),
    );
    let (before, after) = (&phase.before, &phase.after);
    for (i, m) in set.members.iter().enumerate() {
        println!(
            "  {}: mcsd writes per export {}",
            m.name,
            per_export(&delta(&before.mcsd[i], &after.mcsd[i]), n)
        );
        if set.is_real() {
            println!(
                "  {}: API server mutating requests per export {}",
                m.name,
                per_export(&delta(&before.api[i], &after.api[i]), n)
            );
        }
    }
    if set.is_real() {
        let cpu: Vec<String> = COMPONENTS
            .iter()
            .map(|c| {
                let used: f64 = (0..set.members.len())
                    .map(|i| {
                        after.cpu[i].get(c).copied().unwrap_or(0.0)
                            - before.cpu[i].get(c).copied().unwrap_or(0.0)
                    })
                    .sum();
                format!("{c} {used:.1}")
            })
            .collect();
        println!("  CPU seconds, three clusters together: {}", cpu.join(", "));
    }
}

/// N selector-less Services of `ns`, each with an EndpointSlice of one ready endpoint, as YAML.
fn services(ns: &str, n: usize) -> String {
    let mut services = String::new();
    for i in 0..n {
        services.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec: {{ports: [{{name: http, port: 80, protocol: TCP}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{i}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: svc-{i}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 80, protocol: TCP}}]\nendpoints: [{{addresses: [\"10.160.{}.{}\"], conditions: {{ready: true}}}}]\n",
            1 + i / 250,
            1 + i % 250
        ));
    }
    services
}

#[tokio::main]
async fn main() {
    let set = ClusterSet::start(3).await;
    let dir = std::env::temp_dir().join(format!("mcsd-burst-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "burst: {} clusters ({})",
        set.members.len(),
        if set.is_real() { "real" } else { "sandbox" }
    );
    for n in sizes() {
        let ns = format!("burst-{n}");
        set.create_namespace(&ns);
        let services_file = dir.join(format!("services-{n}.yaml"));
        std::fs::write(&services_file, services(&ns, n)).unwrap();
        set.kubectl(0, &["apply", "-f", services_file.to_str().unwrap()]);
        let names: Vec<String> = (0..n)
            .map(|i| format!("svc-{i}.{ns}.svc.clusterset.local"))
            .collect();
        // Settle before counting: nothing of this namespace is exported yet.
        until_quiet(&set, Instant::now()).await;

        let services: Vec<String> = (0..n).map(|i| format!("svc-{i}")).collect();
        let phase = run_phase(&set, &ns, &services, &names, true).await;
        report(&set, n, &phase);
        let phase = run_phase(&set, &ns, &services, &names, false).await;
        report(&set, n, &phase);

        for i in 0..set.members.len() {
            set.kubectl(i, &["delete", "namespace", &ns, "--wait=false"]);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    set.stop().await;
}
