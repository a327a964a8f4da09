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

use mcsd::{daemon, sandbox::Mcsd};
use mcsd_sandbox::{Cluster, ClusterConfig};
use tokio_util::sync::CancellationToken;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs the real kubectl against `kubeconfig`; panics with its output if it fails.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl must be installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "kubectl {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// mcsd's options with this peer grace period (peers are probed every tenth of it).
pub fn peer_grace(grace: Duration) -> mcsd::sandbox::Options {
    mcsd::sandbox::Options {
        peer_grace: grace,
        ..Default::default()
    }
}

/// Waits until `writes` stops growing (no write for 500 ms), up to 30 s.
pub async fn settled(writes: &daemon::Writes) {
    let mut last = writes.total();
    eventually("mcsd's writes to settle", Duration::from_secs(30), || {
        let now = writes.total();
        let quiet = now == last;
        last = now;
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            quiet.then_some(())
        }
    })
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
pub fn admin_get(admin: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: mcsd\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {response}");
    body.to_string()
}

/// Runs the real `dig` against `server` (`HOST:PORT`) with `args`; returns what it prints.
pub fn dig_raw(server: &std::net::SocketAddr, args: &[&str]) -> String {
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
        .expect("dig must be installed (.ci/run installs dnsutils)");
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
    let text = dig_raw(server, &["+noall", "+comments", "+answer", name, qtype]);
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

/// One cluster of a test ClusterSet.
#[derive(Debug)]
pub struct Member {
    /// The simulated cluster.
    pub cluster: Cluster,
    /// Its admin kubeconfig (for kubectl, as a user would).
    pub kubeconfig: PathBuf,
    /// mcsd's handle (write counters, readiness).
    pub daemon: daemon::Handle,
    /// mcsd's DNS server (UDP and TCP).
    pub dns: std::net::SocketAddr,
    /// mcsd's admin listener (`/metrics`, `/readyz`, `/why`).
    pub admin: std::net::SocketAddr,
    /// Stops this member's mcsd alone.
    pub stop_mcsd: CancellationToken,
}

/// A ClusterSet of sandbox clusters, each running mcsd, peered with every other.
#[derive(Debug)]
pub struct ClusterSet {
    /// The clusters, `cluster-a` first.
    pub members: Vec<Member>,
    dir: PathBuf,
    shutdown: CancellationToken,
    options: mcsd::sandbox::Options,
}

impl ClusterSet {
    /// Starts `n` clusters, installs the project's manifests (namespace and RBAC) with kubectl,
    /// and runs mcsd in each as the `mcsd` ServiceAccount, reading its peers as their
    /// `mcsd-peer` ServiceAccount (exactly the rights the manifests grant), with a DNS server on
    /// 127.0.0.1.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, mcsd::sandbox::Options::default()).await
    }

    /// [`Self::start`] with these options for every mcsd.
    pub async fn start_with(n: usize, options: mcsd::sandbox::Options) -> Self {
        Self::start_configs((0..n).map(ClusterConfig::nth).collect(), options).await
    }

    /// [`Self::start`] with these clusters and options.
    pub async fn start_configs(configs: Vec<ClusterConfig>, options: mcsd::sandbox::Options) -> Self {
        let dir = std::env::temp_dir().join(format!("mcsd-e2e-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut clusters = Vec::new();
        for config in configs {
            let cluster = Cluster::start(config).await.expect("sandbox cluster starts");
            let kubeconfig = dir.join(format!("{}.kubeconfig", cluster.name()));
            std::fs::write(&kubeconfig, cluster.kubeconfig_yaml()).unwrap();
            let manifests = repo_root().join("manifests");
            kubectl(
                &kubeconfig,
                &["apply", "-f", manifests.join("namespace.yaml").to_str().unwrap()],
            );
            kubectl(
                &kubeconfig,
                &["apply", "-f", manifests.join("rbac.yaml").to_str().unwrap()],
            );
            clusters.push((cluster, kubeconfig));
        }
        let members = clusters;
        let shutdown = CancellationToken::new();
        let mut set = Self {
            members: Vec::new(),
            dir,
            shutdown,
            options,
        };
        let mut started = Vec::new();
        for i in 0..members.len() {
            let all: Vec<&Cluster> = members.iter().map(|(c, _)| c).collect();
            let stop = set.shutdown.child_token();
            let mcsd = mcsd::sandbox::start_mcsd(&all, i, &set.options, stop.clone())
                .await
                .expect("mcsd starts");
            started.push((mcsd, stop));
        }
        for ((cluster, kubeconfig), (mcsd, stop_mcsd)) in members.into_iter().zip(started) {
            mcsd.wait_ready(Duration::from_secs(30))
                .await
                .expect("mcsd becomes ready");
            set.members.push(Member {
                cluster,
                kubeconfig,
                daemon: mcsd.handle,
                dns: mcsd.dns,
                admin: mcsd.admin,
                stop_mcsd,
            });
        }
        set
    }

    /// [`Self::start`], then creates namespace `ns` in every cluster with kubectl.
    pub async fn with_namespace(n: usize, ns: &str) -> Self {
        Self::with_namespace_and(n, ns, mcsd::sandbox::Options::default()).await
    }

    /// [`Self::with_namespace`] with these options for every mcsd.
    pub async fn with_namespace_and(n: usize, ns: &str, options: mcsd::sandbox::Options) -> Self {
        let set = Self::start_with(n, options).await;
        for i in 0..n {
            set.apply(
                i,
                &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
            );
        }
        set
    }

    /// Starts another mcsd replica in the `i`th cluster (it joins the leader election and serves
    /// DNS on its own port), with `options`; stopped by the returned token.
    pub async fn start_replica(
        &self,
        i: usize,
        options: &mcsd::sandbox::Options,
    ) -> (Mcsd, CancellationToken) {
        let stop = self.shutdown.child_token();
        let all: Vec<&Cluster> = self.members.iter().map(|m| &m.cluster).collect();
        let mcsd = mcsd::sandbox::start_mcsd(&all, i, options, stop.clone())
            .await
            .expect("mcsd starts");
        (mcsd, stop)
    }

    /// Stops the `i`th member's mcsd and starts a new one in its place (new watches, new DNS
    /// server on a new port).
    /// Does not wait for the new one to be ready: what it answers meanwhile is for the caller
    /// to check.
    pub async fn restart_mcsd(&mut self, i: usize) -> Mcsd {
        self.members[i].stop_mcsd.cancel();
        // As a rolling restart does: the old one finishes and gives the Lease up first.
        self.members[i].daemon.stopped().await;
        let options = self.options.clone();
        let (mcsd, stop) = self.start_replica(i, &options).await;
        let member = &mut self.members[i];
        member.daemon = mcsd.handle.clone();
        member.dns = mcsd.dns;
        member.admin = mcsd.admin;
        member.stop_mcsd = stop;
        mcsd
    }

    /// kubectl against the `i`th cluster.
    pub fn kubectl(&self, i: usize, args: &[&str]) -> String {
        kubectl(&self.members[i].kubeconfig, args)
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
        let out = Command::new(mcsd_binary())
            .args(["why", name, "--admin", &self.members[i].admin.to_string()])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mcsd why {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stops every mcsd and cluster.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for m in self.members {
            m.cluster.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
