//! End-to-end tests of mcsd, through the interfaces users touch: `kubectl`, `dig`, and the `mcsd`
//! command line. The tests live in `tests/tests/`; this library holds what they share: a
//! ClusterSet of sandbox clusters, each running mcsd with exactly the rights of
//! `manifests/rbac.yaml`, and helpers that wait with a deadline instead of sleeping.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

pub mod fixtures;
pub mod real;

use mcsd::{core::sandbox_file, daemon, process::sandbox::Mcsd};
use mcsd_sandbox::{Cluster, ClusterConfig};
use tokio_util::sync::CancellationToken;

/// How long an end-to-end test waits for what it expects before it fails: long enough for a
/// real control plane on a loaded 2-core machine, and only ever reached when something is wrong
/// (every wait polls, and returns as soon as it holds).
pub const WAIT: Duration = Duration::from_secs(60);

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs the real kubectl against `kubeconfig`, whatever it exits with.
pub fn kubectl_output(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    mcsd_test_tools::require(&["kubectl"]);
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// Runs the real kubectl against `kubeconfig`; panics with its output if it fails.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl_output(kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
}

/// `mcsd sandbox --clusters N --dir DIR ARGS…` running as a process, as a newcomer runs it; stopped
/// (SIGTERM) and its directory removed when dropped.
#[derive(Debug)]
pub struct SandboxProcess {
    child: std::process::Child,
    /// Its `--dir`.
    pub dir: PathBuf,
    /// `DIR/sandbox.json`: one entry per cluster.
    pub members: Vec<sandbox_file::Member>,
}

impl SandboxProcess {
    /// Starts it in a fresh directory named after `tag` and waits for `sandbox ready`.
    pub fn start(tag: &str, clusters: usize, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("mcsd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let n = clusters.to_string();
        let mut all: Vec<&std::ffi::OsStr> = vec!["sandbox".as_ref(), "--clusters".as_ref(), n.as_ref()];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        all.extend(["--dir".as_ref(), dir.as_os_str()]);
        let (child, line) = start_mcsd_binary(&all);
        assert_eq!(line, "sandbox ready\n");
        let members = read_members(&dir);
        Self { child, dir, members }
    }

    /// Cluster `i`'s own kubeconfig.
    pub fn kubeconfig_of(&self, i: usize) -> PathBuf {
        self.members[i].kubeconfig.clone()
    }

    /// Cluster `i`'s DNS server.
    pub fn dns(&self, i: usize) -> std::net::SocketAddr {
        self.members[i].dns
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The clusters `DIR/sandbox.json` lists (written by `mcsd sandbox` or `tests/kube/up.sh`).
pub fn read_members(dir: &Path) -> Vec<sandbox_file::Member> {
    let file = dir.join(sandbox_file::FILE);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{} ({e}): start the clusters with mcsd sandbox or tests/kube/up.sh",
            file.display()
        )
    });
    sandbox_file::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// `jsonpath` of the peer Secret `mcsd-system/peer-<exporter>` of the cluster `kubeconfig`
/// reaches.
fn peer_secret_field(kubeconfig: &Path, exporter: &str, jsonpath: &str) -> String {
    kubectl(
        kubeconfig,
        &[
            "get",
            "secret",
            &format!("peer-{exporter}"),
            "-n",
            "mcsd-system",
            "-o",
            &format!("jsonpath={{{jsonpath}}}"),
        ],
    )
}

/// The annotation `mcsd.io/<name>` of the peer Secret for `exporter` (`token-expires`,
/// `token-lifetime`, `service-account`: what `mcsd join` and the renewing mcsd write there).
pub fn peer_secret_annotation(kubeconfig: &Path, exporter: &str, name: &str) -> String {
    peer_secret_field(
        kubeconfig,
        exporter,
        &format!(".metadata.annotations.mcsd\\.io/{name}"),
    )
}

/// `mcsd why NAME --admin ADMIN EXTRA…` (the binary, as a user runs it), which must succeed; what
/// it prints.
pub fn why(admin: std::net::SocketAddr, name: &str, extra: &[&str]) -> String {
    let out = Command::new(mcsd_binary())
        .args(["why", name, "--admin", &admin.to_string()])
        .args(extra)
        .output()
        .expect("mcsd runs");
    succeeded(&format!("mcsd why {name}"), out)
}

/// The standard output of a program that must have succeeded (`what` names it and its arguments
/// in the failure, with its standard error).
pub fn succeeded(what: &str, out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `mcsd ARGS --kubeconfig KUBECONFIG`, which must succeed; its standard output.
pub fn mcsd_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = mcsd_output(kubeconfig, args);
    assert!(
        out.status.success(),
        "mcsd {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("mcsd writes UTF-8")
}

/// What `mcsd ARGS --kubeconfig KUBECONFIG` did.
fn mcsd_output(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    Command::new(mcsd_binary())
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .expect("mcsd runs")
}

/// `mcsd ARGS --kubeconfig KUBECONFIG`, which must fail: its error output.
pub fn mcsd_refused(kubeconfig: &Path, args: &[&str]) -> String {
    let out = mcsd_output(kubeconfig, args);
    assert!(
        !out.status.success(),
        "mcsd {} should have failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kubectl get OBJECT -n NS -o jsonpath=JSONPATH` (`object`: `serviceimport/hello`).
pub fn kubectl_get(kubeconfig: &Path, ns: &str, object: &str, jsonpath: &str) -> String {
    kubectl(
        kubeconfig,
        &["get", object, "-n", ns, "-o", &format!("jsonpath={jsonpath}")],
    )
}

/// kubectl with `kubeconfig`, which must be refused: its error output.
pub fn kubectl_refused(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl_output(kubeconfig, args);
    assert!(
        !out.status.success(),
        "kubectl {} should have been refused: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The kubeconfig in the peer Secret `mcsd-system/peer-<exporter>` of the cluster `kubeconfig`
/// reaches: the credentials its mcsd holds for `exporter`.
pub fn peer_secret_kubeconfig(kubeconfig: &Path, exporter: &str) -> String {
    use base64::Engine as _;
    let data = peer_secret_field(kubeconfig, exporter, ".data.kubeconfig");
    let text = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .expect("the Secret's kubeconfig is base64");
    String::from_utf8(text).expect("a kubeconfig is UTF-8")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match eventually_or_none(timeout, check).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// [`eventually`], returning `None` at the timeout instead of failing, so the caller can say what
/// it saw last.
pub async fn eventually_or_none<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// mcsd's options with this peer grace period (peers are probed every tenth of it).
pub fn peer_grace(grace: Duration) -> mcsd::process::sandbox::Options {
    mcsd::process::sandbox::Options {
        peer_grace: grace,
        ..Default::default()
    }
}

/// Waits until `daemon`'s writers have worked through every service marked so far (up to 30 s):
/// what the checks before this one saw has been written in full. A signal, not a quiet period.
pub async fn settled(daemon: &daemon::Handle) {
    eventually(
        "mcsd's writers to work through everything",
        Duration::from_secs(30),
        || async { daemon.idle().then_some(()) },
    )
    .await;
}

/// The mcsd binary cargo built for this test run (tests/ is a sibling crate of controller/).
pub fn mcsd_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap();
    let bin = target.join("mcsd");
    assert!(
        bin.exists(),
        "{} is missing: build with `cargo build -p mcsd` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// Starts the mcsd binary with `args` and returns it with the first line it prints on standard
/// output (the line that says it serves, or is ready). Standard error is discarded.
pub fn start_mcsd_binary(args: &[&std::ffi::OsStr]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(mcsd_binary())
        .args(args)
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// The ready pods of mcsd's Deployment in `kubeconfig`'s cluster (installed with the manifests
/// or the chart), not being deleted: each one's name and address.
pub fn mcsd_pods(kubeconfig: &Path) -> Vec<(String, std::net::IpAddr)> {
    let list: serde_json::Value = serde_json::from_str(&kubectl(
        kubeconfig,
        &[
            "get",
            "pods",
            "-n",
            "mcsd-system",
            "-l",
            "app.kubernetes.io/name=mcsd",
            "-o",
            "json",
        ],
    ))
    .expect("kubectl prints JSON");
    let ready = |pod: &serde_json::Value| {
        pod["metadata"]["deletionTimestamp"].is_null()
            && pod["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    };
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| ready(pod))
        .filter_map(|pod| {
            let name = pod["metadata"]["name"].as_str()?.to_string();
            let ip = pod["status"]["podIP"].as_str()?.parse().ok()?;
            Some((name, ip))
        })
        .collect()
}

/// The A records `server` answers for `name` over UDP from `socket`, asked with query id `id`
/// (empty on a timeout, an unreadable reply or a negative answer; late replies to earlier ids are
/// skipped). For benchmarks that poll faster than spawning `dig` allows.
pub fn ask_a(socket: &std::net::UdpSocket, server: std::net::SocketAddr, name: &str, id: u16) -> Vec<String> {
    use hickory_proto::{
        op::{Message, Query},
        rr::{Name, RData, RecordType},
    };
    let mut query = Message::query();
    query.metadata.id = id;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    socket.send_to(&query.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            return Vec::new();
        };
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            return Vec::new();
        };
        if reply.metadata.id != id {
            continue;
        }
        return reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect();
    }
}

/// `GET path` from mcsd's admin listener at `admin` (`/metrics`, `/readyz`); returns the body of a
/// 200 answer, failing the test on anything else.
pub async fn admin_get(admin: std::net::SocketAddr, path: &str) -> String {
    let reply = mcsd::commands::admin_client::get(admin, path, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(reply.status, 200, "GET {path}: {reply:?}");
    reply.body
}

/// Every sample of the metric `name` in a Prometheus text exposition, as (labels, value); labels
/// as written between the braces.
pub fn metric_values(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of label `key` in a series' labels (`a="x",b="y"`).
pub fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split("\",").find_map(|pair| {
        let (k, v) = pair.split_once("=\"")?;
        (k.trim_start_matches(',') == key).then(|| v.trim_end_matches('"'))
    })
}

/// Runs the real `dig` against `server` (`HOST:PORT`) with `args`; returns what it prints.
pub fn dig_raw(server: &std::net::SocketAddr, args: &[&str]) -> String {
    mcsd_test_tools::require(&["dig"]);
    let out = Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            "+time=1",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("dig runs");
    String::from_utf8(out.stdout).unwrap()
}

/// What `dig` got: the response code (`NOERROR`, `NXDOMAIN`, …, or `no reply`) and the answer
/// section's record data, sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The response code.
    pub status: String,
    /// The answer section's record data (the text after the type), sorted.
    pub records: Vec<String>,
}

impl Answer {
    /// NOERROR with these records (in any order).
    pub fn ok(records: &[&str]) -> Self {
        let mut records: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        records.sort();
        Self {
            status: "NOERROR".into(),
            records,
        }
    }
}

/// Asks `server` for `name` `qtype` with the real `dig`.
pub fn dig(server: &std::net::SocketAddr, name: &str, qtype: &str) -> Answer {
    dig_with(server, &[], name, qtype)
}

/// [`dig`] with more of dig's options (`+tcp`, `+notcp`, `+rec`, …).
pub fn dig_with(server: &std::net::SocketAddr, options: &[&str], name: &str, qtype: &str) -> Answer {
    let text = dig_raw(
        server,
        &[&["+noall", "+comments", "+answer"], options, &[name, qtype]].concat(),
    );
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("no reply")
        .to_string();
    let mut records: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            // NAME TTL CLASS TYPE RDATA…
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() > 4).then(|| fields[4..].join(" "))
        })
        .collect();
    records.sort();
    Answer { status, records }
}

/// The environment variable that points the end-to-end tests at a running ClusterSet: the
/// directory `tests/kube/up.sh` (real clusters) wrote its `sandbox.json` into. Unset, every test
/// starts its own sandbox clusters.
pub const CLUSTERSET_ENV: &str = "MCSD_E2E_CLUSTERSET";

/// One cluster of a test ClusterSet.
#[derive(Debug)]
pub struct Member {
    /// The cluster's name (`cluster-a`, …).
    pub name: String,
    /// Its admin kubeconfig (for kubectl, as a user would).
    pub kubeconfig: PathBuf,
    /// mcsd's DNS server (UDP and TCP).
    pub dns: std::net::SocketAddr,
    /// mcsd's admin listener (`/metrics`, `/readyz`, `/why`).
    pub admin: std::net::SocketAddr,
    /// On real clusters: the cluster DNS (CoreDNS forwarding `clusterset.local` to mcsd).
    pub cluster_dns: Option<std::net::SocketAddr>,
    /// On real clusters: CoreDNS's own `multicluster` option over the same cluster.
    pub reference_dns: Option<std::net::SocketAddr>,
    /// On real clusters: the directory with each component's log and `.pid` file.
    pub real_dir: Option<PathBuf>,
    /// On real clusters: whether pods have a network, run their commands and take `kubectl exec`.
    pub pod_network: bool,
    /// On real clusters installed with Helm (`up.sh --install helm`): the release mcsd runs from.
    pub helm_release: Option<String>,
    sandbox: Option<SandboxMember>,
}

/// What only a sandbox member has: the in-process cluster and mcsd, for tests that reach inside.
#[derive(Debug)]
struct SandboxMember {
    cluster: Cluster,
    daemon: daemon::Handle,
    stop_mcsd: CancellationToken,
}

impl Member {
    /// The flags of this real member's mcsd (`DIR/<cluster>/mcsd.args`) for another replica of
    /// it, as the Deployment's next pod: the same, but DNS and admin on new loopback ports, which
    /// are returned too.
    pub fn replica_args(&self) -> (Vec<String>, std::net::SocketAddr, std::net::SocketAddr) {
        let dir = self.real_dir.as_ref().expect("a real member");
        let args = std::fs::read_to_string(dir.join("mcsd.args")).unwrap();
        let port = || -> std::net::SocketAddr {
            format!("127.0.0.1:{}", real::free_port().unwrap())
                .parse()
                .unwrap()
        };
        let (dns, admin) = (port(), port());
        let args = args
            .lines()
            .map(|a| {
                if a.starts_with("--dns-listen=") {
                    format!("--dns-listen={dns}")
                } else if a.starts_with("--admin-listen=") {
                    format!("--admin-listen={admin}")
                } else {
                    a.to_string()
                }
            })
            .collect();
        (args, dns, admin)
    }

    fn sandbox(&self) -> &SandboxMember {
        self.sandbox.as_ref().unwrap_or_else(|| {
            panic!(
                "{} is a real cluster: this test reaches into the sandbox, so it must start its clusters with ClusterSet::sandbox*",
                self.name
            )
        })
    }

    /// The simulated cluster (sandbox only).
    pub fn cluster(&self) -> &Cluster {
        &self.sandbox().cluster
    }

    /// mcsd's handle: write counters, readiness, peers (sandbox only).
    pub fn daemon(&self) -> &daemon::Handle {
        &self.sandbox().daemon
    }

    /// Stops this member's mcsd alone (sandbox only).
    pub fn stop_mcsd(&self) -> &CancellationToken {
        &self.sandbox().stop_mcsd
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, …) to one of a real cluster's components
    /// (`kube-apiserver`, `mcsd`, `etcd`, …); one that exits is started again by `tests/kube/up.sh`,
    /// with the same command line (the same addresses).
    pub fn signal(&self, component: &str, signal: &str) {
        let dir = self
            .real_dir
            .as_ref()
            .unwrap_or_else(|| panic!("{}: signals are for real clusters' components", self.name));
        signal_component(dir, &self.name, component, signal);
    }

    /// The admin listener of every replica of this cluster's mcsd: the release's ready pods (each
    /// at its pod IP, port [`Self::admin`]'s) when installed with Helm, whose `admin` is a
    /// Service reaching any one of them; else the one mcsd's.
    pub fn replica_admins(&self) -> Vec<std::net::SocketAddr> {
        if self.helm_release.is_none() {
            return vec![self.admin];
        }
        mcsd_pods(&self.kubeconfig)
            .into_iter()
            .map(|(_, ip)| std::net::SocketAddr::new(ip, self.admin.port()))
            .collect()
    }

    /// mcsd's successful writes so far, by (kind, operation), read from its `/metrics` as an
    /// operator would (`mcsd_writes_total{outcome="success"}`), summed over its replicas (only
    /// the leader writes).
    pub async fn writes(&self) -> std::collections::BTreeMap<(String, String), u64> {
        let mut writes = std::collections::BTreeMap::new();
        for admin in self.replica_admins() {
            let text = admin_get(admin, "/metrics").await;
            for (labels, value) in metric_values(&text, "mcsd_writes_total") {
                if label(&labels, "outcome") != Some("success") {
                    continue;
                }
                let key = (
                    label(&labels, "kind").unwrap_or_default().to_string(),
                    label(&labels, "operation").unwrap_or_default().to_string(),
                );
                *writes.entry(key).or_default() += value as u64;
            }
        }
        writes
    }

    /// What mcsd wrote since `before` (a [`Member::writes`] reading), kinds with no new write
    /// left out.
    pub async fn writes_since(
        &self,
        before: &std::collections::BTreeMap<(String, String), u64>,
    ) -> std::collections::BTreeMap<(String, String), u64> {
        self.writes()
            .await
            .into_iter()
            .map(|(k, v)| {
                // A replica replaced meanwhile counts from zero again: never below nothing.
                let since = v.saturating_sub(before.get(&k).copied().unwrap_or(0));
                (k, since)
            })
            .filter(|(_, v)| *v > 0)
            .collect()
    }

    /// Whether this cluster's mcsd, leading, has worked through its first full pass
    /// (`mcsd_writers_converged`; any replica's, with Helm).
    pub async fn converged(&self) -> bool {
        for admin in self.replica_admins() {
            let text = admin_get(admin, "/metrics").await;
            if metric_values(&text, "mcsd_writers_converged")
                .first()
                .is_some_and(|(_, v)| *v == 1.0)
            {
                return true;
            }
        }
        false
    }

    /// A kube client with the admin's rights, from the admin kubeconfig (either backend).
    pub async fn client(&self) -> kube::Client {
        let yaml = std::fs::read_to_string(&self.kubeconfig).unwrap();
        Cluster::client_from_kubeconfig(&yaml)
            .await
            .unwrap_or_else(|e| panic!("{}'s kubeconfig: {e}", self.name))
    }
}

/// Where a ClusterSet's clusters come from.
#[derive(Debug)]
enum Backend {
    /// Started by the test, in this process.
    Sandbox {
        shutdown: CancellationToken,
        options: mcsd::process::sandbox::Options,
        /// The hub API server the members are enrolled in, for a hub ClusterSet.
        hub: Option<Box<Hub>>,
    },
    /// A running set of real clusters (`tests/kube/up.sh`), shared by the tests one at a time.
    Real {
        /// The hub, when `up.sh --hub` connected the clusters through one.
        hub: Option<Box<Hub>>,
    },
}

/// The hub of a hub ClusterSet: an API server beside the members.
#[derive(Debug)]
pub struct Hub {
    /// The hub's API server, on the sandbox.
    pub cluster: Option<Cluster>,
    /// Its admin kubeconfig (`DIR/hub.kubeconfig`).
    pub kubeconfig: PathBuf,
    /// On the real tier: the directory with each of its components' log and `.pid` file.
    pub real_dir: Option<PathBuf>,
}

impl Hub {
    /// The sandbox hub's API server (sandbox only).
    pub fn sandbox_cluster(&self) -> &Cluster {
        self.cluster
            .as_ref()
            .expect("the hub is a real kube-apiserver: this story reaches into a sandbox hub")
    }

    /// Sends `signal` to one of a real hub's components (`kube-apiserver`, `etcd`, …); one that
    /// exits is started again by `tests/kube/up.sh`, on the same addresses.
    pub fn signal(&self, component: &str, signal: &str) {
        let dir = self
            .real_dir
            .as_ref()
            .expect("signals are for a real hub's components");
        signal_component(dir, "hub", component, signal);
    }
}

impl Hub {
    /// Waits until the hub holds the record (ConfigMap) `name` in namespace `ns`.
    pub async fn holds(&self, ns: &str, name: &str) {
        eventually(&format!("record {ns}/{name} on the hub"), WAIT, || async {
            let held = kubectl(&self.kubeconfig, &["get", "configmaps", "-n", ns, "-o", "name"]);
            held.lines()
                .any(|l| l == format!("configmap/{name}"))
                .then_some(())
        })
        .await;
    }

    /// The ranges declared for `member` on the hub (annotation `hub.mcsd.io/ranges` of its
    /// namespace there).
    pub fn declared_ranges(&self, member: &str) -> String {
        kubectl(
            &self.kubeconfig,
            &[
                "get",
                "namespace",
                &format!("mcsd-member-{member}"),
                "-o",
                "jsonpath={.metadata.annotations.hub\\.mcsd\\.io/ranges}",
            ],
        )
        .trim()
        .to_string()
    }

    /// Declares `ranges` for `member`, as the hub's admin does with kubectl.
    pub fn declare_ranges(&self, member: &str, ranges: &str) {
        kubectl(
            &self.kubeconfig,
            &[
                "annotate",
                "--overwrite",
                "namespace",
                &format!("mcsd-member-{member}"),
                &format!("hub.mcsd.io/ranges={ranges}"),
            ],
        );
    }

    /// Every list and watch of the exchange a member made on this real hub at or after `since`,
    /// read from the hub's audit log (`tests/kube/up.sh --hub` keeps one, rotated at 100 MB);
    /// mcsd's probe of the hub (a list of one object, every 10 s) is not a read of the exchange
    /// and is left out.
    pub fn member_reads_since(&self, since: k8s_openapi::jiff::Timestamp) -> Vec<HubRead> {
        let dir = self.real_dir.as_ref().expect("the audit log of a real hub");
        let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("audit") && n.ends_with(".log"))
            })
            .collect();
        logs.sort();
        let mut reads = Vec::new();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for line in text.lines() {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let user = event["user"]["username"].as_str().unwrap_or_default();
                let Some(member) = user
                    .strip_prefix("system:serviceaccount:mcsd-member-")
                    .and_then(|rest| rest.strip_suffix(":mcsd-member"))
                else {
                    continue;
                };
                let Some(at) = event["requestReceivedTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                    .filter(|at| *at >= since)
                else {
                    continue;
                };
                let probe = event["requestURI"]
                    .as_str()
                    .and_then(|uri| uri.split_once('?'))
                    .is_some_and(|(_, query)| query.split('&').any(|p| p == "limit=1"));
                if !probe {
                    reads.push(HubRead {
                        member: member.to_string(),
                        verb: event["verb"].as_str().unwrap_or_default().to_string(),
                        at,
                    });
                }
            }
        }
        reads
    }

    /// The exchange objects (records and slices) the hub holds, every member's, as
    /// `kind/name` lines.
    pub fn records(&self) -> String {
        kubectl(
            &self.kubeconfig,
            &[
                "get",
                "configmaps,endpointslices",
                "-A",
                "-l",
                "mcsd.io/exchange",
                "-o",
                "name",
            ],
        )
    }
}

/// One read of the exchange on a real hub, from its audit log ([`Hub::member_reads_since`]).
#[derive(Clone, Debug)]
pub struct HubRead {
    /// The member's cluster id.
    pub member: String,
    /// `list` or `watch`.
    pub verb: String,
    /// When the hub received it.
    pub at: k8s_openapi::jiff::Timestamp,
}

impl Member {
    /// How many exchange objects this member's mcsd has received from the hub so far
    /// (`mcsd_hub_objects_received_total`).
    pub async fn hub_objects_received(&self) -> f64 {
        metric_values(
            &admin_get(self.admin, "/metrics").await,
            "mcsd_hub_objects_received_total",
        )
        .first()
        .map_or(0.0, |(_, v)| *v)
    }

    /// How many of `peer`'s records this member's mcsd has refused, for `reason` or any
    /// (`mcsd_peer_records_refused_total`).
    pub async fn refused_from(&self, peer: &str, reason: Option<&str>) -> f64 {
        metric_values(
            &admin_get(self.admin, "/metrics").await,
            "mcsd_peer_records_refused_total",
        )
        .iter()
        .filter(|(labels, _)| {
            label(labels, "peer") == Some(peer) && reason.is_none_or(|r| label(labels, "reason") == Some(r))
        })
        .map(|(_, v)| v)
        .sum()
    }
}

/// `kill -SIGNAL` the process whose id is in `dir/<component>.pid` (`who`'s component).
fn signal_component(dir: &Path, who: &str, component: &str, signal: &str) {
    let pid_file = dir.join(format!("{component}.pid"));
    let pid = std::fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.trim())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "kill -{signal} {} ({who}'s {component})",
        pid.trim()
    );
}

/// A ClusterSet of clusters, each running mcsd, peered with every other: sandbox clusters
/// started for the test, or, when [`CLUSTERSET_ENV`] names a running set of real clusters,
/// those.
#[derive(Debug)]
pub struct ClusterSet {
    /// The clusters, `cluster-a` first.
    pub members: Vec<Member>,
    dir: PathBuf,
    backend: Backend,
}

/// The running real ClusterSet the tests are pointed at, if any.
pub fn real_clusterset() -> Option<PathBuf> {
    std::env::var_os(CLUSTERSET_ENV).map(PathBuf::from)
}

impl ClusterSet {
    /// `n` clusters with mcsd, each with the project's manifests installed and mcsd running with
    /// exactly the rights they grant: the real ClusterSet [`CLUSTERSET_ENV`] names (its first `n`
    /// clusters, cleared of what earlier tests left), or else `n` new sandbox clusters.
    pub async fn start(n: usize) -> Self {
        match real_clusterset() {
            Some(dir) => Self::attach_real(n, &dir).await,
            None => Self::sandbox(n).await,
        }
    }

    /// The first `n` clusters of the real ClusterSet [`CLUSTERSET_ENV`] names, which must have
    /// mcsd installed with Helm (`tests/kube/up.sh --install helm`: the release's pods run mcsd,
    /// the clusters joined with `mcsd join`), cleared of what earlier tests left. There is no
    /// sandbox equivalent: a story told here runs only on that tier.
    pub async fn installed_with_helm(n: usize) -> Self {
        let dir = real_clusterset().unwrap_or_else(|| {
            panic!("this story needs real clusters installed with Helm: {CLUSTERSET_ENV}=DIR of `tests/kube/up.sh --install helm --dir DIR`")
        });
        let set = Self::attach_real(n, &dir).await;
        for m in &set.members {
            assert!(
                m.helm_release.is_some(),
                "{} was not installed with Helm: bring the clusters up with `tests/kube/up.sh --install helm`",
                m.name
            );
        }
        set
    }

    /// [`Self::start`], then creates namespace `ns` in every cluster with kubectl.
    pub async fn with_namespace(n: usize, ns: &str) -> Self {
        let set = Self::start(n).await;
        set.create_namespace(ns);
        set
    }

    /// [`Self::start`], but with no cluster peered with another, for `mcsd join` to connect
    /// them: new sandbox clusters started unpeered, or the real ones parted with `mcsd leave`
    /// (each mcsd then follows no peer). A test that starts here leaves the clusters joined
    /// again when it ends: the real tier's next test expects a mesh.
    pub async fn unpeered(n: usize) -> Self {
        let Some(dir) = real_clusterset() else {
            let options = mcsd::process::sandbox::Options {
                peered: false,
                ..Default::default()
            };
            return Self::sandbox_with(n, options).await;
        };
        let set = Self::attach_real(n, &dir).await;
        let names: Vec<&str> = set.members.iter().map(|m| m.name.as_str()).collect();
        set.mcsd(&[&["leave"], &names[..]].concat());
        for m in &set.members {
            eventually(
                &format!("{}'s mcsd to follow none of {names:?}", m.name),
                WAIT,
                || async {
                    let states = metric_values(&admin_get(m.admin, "/metrics").await, "mcsd_peer_state");
                    let follows = |(labels, v): &(String, f64)| {
                        *v == 1.0 && label(labels, "peer").is_some_and(|p| names.contains(&p))
                    };
                    (!states.iter().any(follows)).then_some(())
                },
            )
            .await;
        }
        set
    }

    /// `n` new sandbox clusters, whatever [`CLUSTERSET_ENV`] says: for tests that reach into
    /// the cluster or mcsd (held requests, API server restarts, write counters).
    pub async fn sandbox(n: usize) -> Self {
        Self::sandbox_with(n, mcsd::process::sandbox::Options::default()).await
    }

    /// [`Self::sandbox`] with these options for every mcsd.
    pub async fn sandbox_with(n: usize, options: mcsd::process::sandbox::Options) -> Self {
        Self::sandbox_configs((0..n).map(ClusterConfig::nth).collect(), options).await
    }

    /// [`Self::sandbox_with`], then creates namespace `ns` in every cluster with kubectl.
    pub async fn sandbox_with_namespace(
        n: usize,
        ns: &str,
        options: mcsd::process::sandbox::Options,
    ) -> Self {
        let set = Self::sandbox_with(n, options).await;
        set.create_namespace(ns);
        set
    }

    /// Sandbox clusters with these configurations, each running mcsd with these options: the
    /// project's manifests (namespace and RBAC) installed with kubectl, mcsd running as the
    /// `mcsd` ServiceAccount, reading its peers as their `mcsd-peer` ServiceAccount (exactly the
    /// rights the manifests grant), with a DNS server on 127.0.0.1.
    pub async fn sandbox_configs(
        configs: Vec<ClusterConfig>,
        options: mcsd::process::sandbox::Options,
    ) -> Self {
        let dir = scratch_dir();
        let mut clusters = Vec::new();
        for config in configs {
            let cluster = Cluster::start(config).await.expect("sandbox cluster starts");
            let kubeconfig = dir.join(format!("{}.kubeconfig", cluster.name()));
            std::fs::write(&kubeconfig, cluster.kubeconfig_yaml()).unwrap();
            // Server-side: one idempotent request per object. CI once saw a client-side apply's
            // create refused with AlreadyExists on a fresh cluster under load (a request sent
            // twice); an apply sent twice is the same apply.
            let manifests = repo_root().join("manifests");
            for manifest in ["namespace.yaml", "rbac.yaml"] {
                kubectl(
                    &kubeconfig,
                    &[
                        "apply",
                        "--server-side",
                        "-f",
                        manifests.join(manifest).to_str().unwrap(),
                    ],
                );
            }
            clusters.push((cluster, kubeconfig));
        }
        let shutdown = CancellationToken::new();
        let mut started = Vec::new();
        for i in 0..clusters.len() {
            let all: Vec<&Cluster> = clusters.iter().map(|(c, _)| c).collect();
            let stop = shutdown.child_token();
            let mcsd = mcsd::process::sandbox::start_mcsd(&all, i, &options, stop.clone())
                .await
                .expect("mcsd starts");
            started.push((mcsd, stop));
        }
        let mut members = Vec::new();
        for ((cluster, kubeconfig), (mcsd, stop_mcsd)) in clusters.into_iter().zip(started) {
            mcsd.wait_ready(Duration::from_secs(30))
                .await
                .expect("mcsd becomes ready");
            members.push(Member {
                name: cluster.name().to_string(),
                kubeconfig,
                dns: mcsd.dns,
                admin: mcsd.admin,
                cluster_dns: None,
                reference_dns: None,
                real_dir: None,
                pod_network: false,
                helm_release: None,
                sandbox: Some(SandboxMember {
                    cluster,
                    daemon: mcsd.handle,
                    stop_mcsd,
                }),
            });
        }
        Self {
            members,
            dir,
            backend: Backend::Sandbox {
                shutdown,
                options,
                hub: None,
            },
        }
    }

    /// `n` new sandbox clusters connected through a hub (`mcsd sandbox --clusters n --hub`): a
    /// hub API server beside them with `manifests/hub.yaml`, every member enrolled (its pod ranges
    /// declared) and given Secret `mcsd-system/hub`; no member has a peer.
    pub async fn sandbox_hub(n: usize) -> Self {
        Self::sandbox_hub_with(n, Default::default()).await
    }

    /// [`Self::sandbox_hub`] with these options for every mcsd (but no peers).
    pub async fn sandbox_hub_with(n: usize, options: mcsd::process::sandbox::Options) -> Self {
        let options = mcsd::process::sandbox::Options {
            peered: false,
            ..options
        };
        let mut set = Self::sandbox_with(n, options).await;
        set.add_hub().await;
        set
    }

    /// Starts a hub API server beside these sandbox clusters, and enrols every one of them in it
    /// (as [`Self::sandbox_hub`] does), whatever peers they have.
    pub async fn add_hub(&mut self) {
        let hub = mcsd::process::sandbox::start_hub(self.members.len(), &self.dir, true)
            .await
            .expect("the hub starts");
        for (i, m) in self.members.iter().enumerate() {
            mcsd::process::sandbox::enrol(&hub, &ClusterConfig::nth(i), &m.client().await)
                .await
                .expect("a member is enrolled in the hub");
        }
        let kubeconfig = self.dir.join("hub.kubeconfig");
        // Made again with the hub's context when next asked for.
        let _ = std::fs::remove_file(self.dir.join("kubeconfig"));
        match &mut self.backend {
            Backend::Sandbox { hub: slot, .. } => {
                *slot = Some(Box::new(Hub {
                    cluster: Some(hub),
                    kubeconfig,
                    real_dir: None,
                }))
            }
            Backend::Real { .. } => panic!("add_hub needs sandbox clusters"),
        }
    }

    /// The kubeconfig member `i`'s mcsd holds for the hub (Secret `mcsd-system/hub`), written to
    /// a file: the member's identity on the hub.
    pub fn hub_credential(&self, i: usize) -> PathBuf {
        use base64::Engine as _;
        let data = self.get(i, "mcsd-system", "secret/hub", "{.data.kubeconfig}");
        let text = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .expect("the hub Secret's kubeconfig is base64");
        self.write(
            &format!("hub-credential-{i}.kubeconfig"),
            &String::from_utf8(text).unwrap(),
        )
    }

    /// `n` clusters connected through a hub, each with mcsd: the real hub ClusterSet
    /// [`CLUSTERSET_ENV`] names (`tests/kube/up.sh --hub`; its first `n` members, cleared of what
    /// earlier tests left and every one enrolled again), or else `n` new sandbox clusters and a
    /// sandbox hub ([`Self::sandbox_hub`]).
    pub async fn hub_start(n: usize) -> Self {
        let Some(dir) = real_clusterset() else {
            return Self::sandbox_hub(n).await;
        };
        let set = Self::attach_real(n, &dir).await;
        assert!(
            matches!(set.backend, Backend::Real { hub: Some(_) }),
            "this story needs a hub ClusterSet: {} was brought up without one (tests/kube/up.sh --hub)",
            dir.display()
        );
        set
    }

    /// [`Self::hub_start`], then creates namespace `ns` in every member with kubectl.
    pub async fn hub_with_namespace(n: usize, ns: &str) -> Self {
        let set = Self::hub_start(n).await;
        set.create_namespace(ns);
        set
    }

    /// On a real hub ClusterSet, enrols again with `mcsd join --hub` every member an earlier test
    /// removed from the hub (the next story expects all of them).
    fn rejoin_the_hub(&self) {
        let Backend::Real { hub: Some(hub) } = &self.backend else {
            return;
        };
        let enrolled = kubectl(
            &hub.kubeconfig,
            &["get", "namespaces", "-l", "hub.mcsd.io/member", "-o", "name"],
        );
        let missing: Vec<&str> = self
            .members
            .iter()
            .map(|m| m.name.as_str())
            .filter(|name| {
                !enrolled
                    .lines()
                    .any(|l| l.trim() == format!("namespace/mcsd-member-{name}"))
            })
            .collect();
        if !missing.is_empty() {
            self.mcsd(&[&["join", "--hub", "hub"], &missing[..]].concat());
        }
    }

    /// The hub of a hub ClusterSet.
    pub fn hub(&self) -> &Hub {
        match &self.backend {
            Backend::Sandbox { hub: Some(hub), .. } | Backend::Real { hub: Some(hub) } => hub,
            _ => panic!("this ClusterSet has no hub"),
        }
    }

    /// The first `n` clusters of the real ClusterSet whose `sandbox.json` is in `state`, once
    /// what earlier tests left is gone: every namespace they made (and with it every export and
    /// import), every exchange record, and every mcsd ready.
    async fn attach_real(n: usize, state: &Path) -> Self {
        let entries = read_members(state);
        assert!(
            entries.len() >= n,
            "this test needs {n} clusters; {} lists {}",
            state.join(sandbox_file::FILE).display(),
            entries.len()
        );
        let all: Vec<Member> = entries
            .into_iter()
            .map(|e| Member {
                real_dir: Some(state.join(&e.name)),
                name: e.name,
                kubeconfig: e.kubeconfig,
                dns: e.dns,
                admin: e.admin,
                cluster_dns: e.cluster_dns,
                reference_dns: e.reference_dns,
                pod_network: e.pod_network,
                helm_release: e.helm_release,
                sandbox: None,
            })
            .collect();
        let hub = state.join("hub.kubeconfig");
        let hub = hub.exists().then(|| {
            Box::new(Hub {
                cluster: None,
                kubeconfig: hub,
                real_dir: Some(state.join("hub")),
            })
        });
        let set = Self {
            members: all,
            dir: scratch_dir(),
            backend: Backend::Real { hub },
        };
        set.rejoin_the_hub();
        set.clear_real().await;
        let mut set = set;
        set.members.truncate(n);
        set
    }

    /// Deletes every namespace a test made in every real cluster, and waits until they, every
    /// ServiceImport and every exchange record are gone and every mcsd is ready.
    async fn clear_real(&self) {
        for m in &self.members {
            delete_test_namespaces(m);
        }
        for m in &self.members {
            eventually(
                &format!(
                    "{}: the namespaces, imports and exchange records of earlier tests to be gone",
                    m.name
                ),
                Duration::from_secs(120),
                || async {
                    let left = kubectl(&m.kubeconfig, &["get", "namespaces", "-o", "name"]);
                    let namespaces_gone = !left.lines().any(made_by_a_test);
                    let imports = kubectl(&m.kubeconfig, &["get", "serviceimports", "-A", "-o", "name"]);
                    let records = kubectl(
                        &m.kubeconfig,
                        &[
                            "get",
                            "configmaps,endpointslices",
                            "-n",
                            "mcsd-system",
                            "-l",
                            "mcsd.io/exchange",
                            "-o",
                            "name",
                        ],
                    );
                    (namespaces_gone && imports.trim().is_empty() && records.trim().is_empty()).then_some(())
                },
            )
            .await;
            eventually(
                &format!("{}'s mcsd to be ready and synced with every peer", m.name),
                Duration::from_secs(60),
                || async {
                    real::http_status(m.admin, "/readyz")
                        .await
                        .filter(|s| *s == 200)?;
                    let states = metric_values(&admin_get(m.admin, "/metrics").await, "mcsd_peer_state");
                    let unsynced = states
                        .iter()
                        .any(|(labels, v)| *v == 1.0 && label(labels, "state") != Some("synced"));
                    (!unsynced).then_some(())
                },
            )
            .await;
        }
        if let Backend::Real { hub: Some(hub) } = &self.backend {
            eventually(
                "the hub to hold no exchange record of earlier tests",
                Duration::from_secs(120),
                || async { hub.records().trim().is_empty().then_some(()) },
            )
            .await;
        }
    }

    /// Creates namespace `ns` in every cluster with kubectl.
    pub fn create_namespace(&self, ns: &str) {
        for i in 0..self.members.len() {
            self.apply(i, &fixtures::namespace(ns));
        }
    }

    /// Whether the clusters are real ones.
    pub fn is_real(&self) -> bool {
        matches!(self.backend, Backend::Real { .. })
    }

    /// Starts another mcsd replica in the `i`th cluster (it joins the leader election and serves
    /// DNS on its own port), with `options`; stopped by the returned token. Sandbox only.
    pub async fn start_replica(
        &self,
        i: usize,
        options: &mcsd::process::sandbox::Options,
    ) -> (Mcsd, CancellationToken) {
        let Backend::Sandbox { shutdown, .. } = &self.backend else {
            panic!("start_replica needs sandbox clusters (ClusterSet::sandbox*)");
        };
        let stop = shutdown.child_token();
        let all: Vec<&Cluster> = self.members.iter().map(|m| m.cluster()).collect();
        let mcsd = mcsd::process::sandbox::start_mcsd(&all, i, options, stop.clone())
            .await
            .expect("mcsd starts");
        (mcsd, stop)
    }

    /// Stops the `i`th member's mcsd and starts a new one in its place (new watches, new DNS
    /// server on a new port). Sandbox only.
    /// Does not wait for the new one to be ready: what it answers meanwhile is for the caller
    /// to check.
    pub async fn restart_mcsd(&mut self, i: usize) -> Mcsd {
        self.members[i].stop_mcsd().cancel();
        // As a rolling restart does: the old one finishes and gives the Lease up first.
        self.members[i].daemon().stopped().await;
        let Backend::Sandbox { options, .. } = &self.backend else {
            unreachable!("members with a daemon are sandbox members")
        };
        let options = options.clone();
        let (mcsd, stop) = self.start_replica(i, &options).await;
        let member = &mut self.members[i];
        let sandbox = member.sandbox.as_mut().expect("a sandbox member");
        sandbox.daemon = mcsd.handle.clone();
        sandbox.stop_mcsd = stop;
        member.dns = mcsd.dns;
        member.admin = mcsd.admin;
        mcsd
    }

    /// kubectl against the `i`th cluster.
    pub fn kubectl(&self, i: usize, args: &[&str]) -> String {
        kubectl(&self.members[i].kubeconfig, args)
    }

    /// One kubeconfig with every cluster as a context named after it, and a hub's as `hub` (what
    /// `mcsd join`, `mcsd leave` and `mcsd status` read): `DIR/kubeconfig` of `mcsd sandbox` and
    /// `tests/kube/up.sh` alike.
    pub fn kubeconfig(&self) -> PathBuf {
        if let Some(dir) = real_clusterset().filter(|_| self.is_real()) {
            return dir.join("kubeconfig");
        }
        let path = self.dir.join("kubeconfig");
        if !path.exists() {
            let mut merged: Option<kube::config::Kubeconfig> = None;
            let hub = match &self.backend {
                Backend::Sandbox { hub: Some(hub), .. } => Some(&hub.kubeconfig),
                _ => None,
            };
            for file in self.members.iter().map(|m| &m.kubeconfig).chain(hub) {
                let one = kube::config::Kubeconfig::read_from(file).unwrap();
                merged = Some(match merged {
                    None => one,
                    Some(all) => all.merge(one).unwrap(),
                });
            }
            std::fs::write(&path, serde_yaml::to_string(&merged.unwrap()).unwrap()).unwrap();
        }
        path
    }

    /// A kubeconfig for the `i`th cluster as the ServiceAccount `namespace/name`, with a token
    /// minted by `kubectl create token` (the API server's TokenRequest): kubectl with it has
    /// exactly the rights that identity has.
    pub fn kubeconfig_as(&self, i: usize, namespace: &str, name: &str) -> PathBuf {
        let token = self.kubectl(i, &["create", "token", name, "-n", namespace]);
        let text = std::fs::read_to_string(&self.members[i].kubeconfig).unwrap();
        let mut config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        for user in config["users"].as_sequence_mut().expect("a kubeconfig has users") {
            user["user"] = serde_yaml::from_str(&format!("{{token: {}}}", token.trim())).unwrap();
        }
        let file = format!("{}-{namespace}-{name}.kubeconfig", self.members[i].name);
        self.write(&file, &serde_yaml::to_string(&config).unwrap())
    }

    /// `mcsd ARGS --kubeconfig` [`Self::kubeconfig`], which must succeed; its standard output.
    pub fn mcsd(&self, args: &[&str]) -> String {
        mcsd_ok(&self.kubeconfig(), args)
    }

    /// What `mcsd status --context CONTEXT -o json` says of `peer` (its state, reason, credential
    /// expiry and problem), once the status names it.
    pub fn peer_status(&self, context: &str, peer: &str) -> Option<serde_json::Value> {
        let status: serde_json::Value =
            serde_json::from_str(&self.mcsd(&["status", "--context", context, "-o", "json"])).ok()?;
        status[0]["mcsd"]["peers"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == peer)
            .cloned()
    }

    /// The test's scratch directory (kubeconfigs, manifests, a hub's files).
    pub fn scratch(&self) -> PathBuf {
        self.dir.clone()
    }

    /// A file in the test's scratch directory holding `text` (a kubeconfig made from a peer
    /// Secret, a manifest).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Every object `mcsd join` writes (peer identities, their Roles and bindings, peer
    /// Secrets), with its resourceVersion, in every cluster: equal before and after, nothing
    /// was written.
    pub fn join_objects(&self) -> Vec<String> {
        let mut all = Vec::new();
        for i in 0..self.members.len() {
            for args in [
                &[
                    "get",
                    "serviceaccounts,roles,rolebindings,secrets",
                    "-n",
                    "mcsd-system",
                ][..],
                &["get", "clusterrolebindings"],
            ] {
                let mut args = args.to_vec();
                args.extend([
                    "-o",
                    "jsonpath={range .items[*]}{.kind}/{.metadata.name}@{.metadata.resourceVersion}{\"\\n\"}{end}",
                ]);
                all.extend(
                    self.kubectl(i, &args)
                        .lines()
                        .filter(|l| l.contains("peer-cluster-") || l.contains("peer-identity-cluster-"))
                        .map(|l| format!("cluster {i}: {l}")),
                );
            }
        }
        all.sort();
        all
    }

    /// [`kubectl_get`] on the `i`th cluster.
    pub fn get(&self, i: usize, ns: &str, object: &str, jsonpath: &str) -> String {
        kubectl_get(&self.members[i].kubeconfig, ns, object, jsonpath)
    }

    /// kubectl apply of a YAML document on the `i`th cluster.
    pub fn apply(&self, i: usize, yaml: &str) {
        let path = self.dir.join(format!("apply-{}-{}.yaml", i, rand_suffix()));
        std::fs::write(&path, yaml).unwrap();
        kubectl(
            &self.members[i].kubeconfig,
            &["apply", "-f", path.to_str().unwrap()],
        );
    }

    /// Runs `mcsd why NAME` (the binary, as a user would) against the `i`th member's mcsd, with
    /// `extra` flags; returns what it prints, failing the test if it fails.
    pub fn why(&self, i: usize, name: &str, extra: &[&str]) -> String {
        why(self.members[i].admin, name, extra)
    }

    /// Stops every mcsd and cluster (sandbox), or deletes what the test made (real clusters;
    /// the next test waits until it is gone).
    pub async fn stop(self) {
        match self.backend {
            Backend::Sandbox { shutdown, hub, .. } => {
                // Each mcsd first, then the API servers it talks to (as `mcsd sandbox` stops).
                shutdown.cancel();
                for m in &self.members {
                    if let Some(sandbox) = &m.sandbox {
                        sandbox.daemon.stopped().await;
                    }
                }
                for m in self.members {
                    if let Some(sandbox) = m.sandbox {
                        sandbox.cluster.shutdown().await;
                    }
                }
                if let Some(cluster) = hub.and_then(|hub| hub.cluster) {
                    cluster.shutdown().await;
                }
            }
            Backend::Real { .. } => {
                for m in &self.members {
                    delete_test_namespaces(m);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Namespaces a test never makes and never deletes.
const SYSTEM_NAMESPACES: [&str; 5] = [
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "mcsd-system",
];

/// Whether `line` of `kubectl get namespaces -o name` is a namespace a test made.
fn made_by_a_test(line: &str) -> bool {
    let name = line.trim().trim_start_matches("namespace/");
    !name.is_empty() && !SYSTEM_NAMESPACES.contains(&name)
}

/// Deletes, without waiting, every namespace of `m` a test made.
fn delete_test_namespaces(m: &Member) {
    let namespaces = kubectl(&m.kubeconfig, &["get", "namespaces", "-o", "name"]);
    let made: Vec<&str> = namespaces.lines().filter(|l| made_by_a_test(l)).collect();
    if !made.is_empty() {
        let mut args = vec!["delete", "--wait=false", "--ignore-not-found"];
        args.extend(made);
        kubectl(&m.kubeconfig, &args);
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcsd-e2e-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    u128::from(N.fetch_add(1, Ordering::Relaxed))
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
}
