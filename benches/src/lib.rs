//! What the benchmarks share: what a process of the real tier has used, a seeded generator (a
//! bench's random choices are the same from run to run), settings from the environment, quantiles,
//! and waiting for a DNS answer.

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

/// Changes one EndpointSlice of `slices` `per_minute` times a minute, at random moments (a
/// Poisson process), until `stop`: `next` picks which (its name) and its one ready address.
/// Counts in `changes` those the API server took.
pub fn churn_slices(
    slices: Api<EndpointSlice>,
    per_minute: f64,
    mut rng: Rng,
    mut next: impl FnMut(&mut Rng) -> (String, String) + Send + 'static,
    changes: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    if per_minute <= 0.0 {
        return;
    }
    tokio::spawn(async move {
        loop {
            let gap = -(1.0 - rng.unit()).ln() * 60.0 / per_minute;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs_f64(gap)) => {}
            }
            let (name, address) = next(&mut rng);
            let patch =
                serde_json::json!({"endpoints": [{"addresses": [address], "conditions": {"ready": true}}]});
            if slices
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                changes.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// Stops the bench `bench` with one line and status 2 unless a real ClusterSet is named
/// (`MCSD_E2E_CLUSTERSET`); `up` is the `tests/kube/up.sh` flags that bring the one it needs up.
#[allow(clippy::print_stdout, reason = "a bench's output, as its reports are")]
pub fn require_real_clusterset(bench: &str, up: &str) {
    if mcsd_tests::real_clusterset().is_none() {
        println!(
            "{bench}: needs a real ClusterSet: tests/kube/up.sh {up} --dir DIR, then MCSD_E2E_CLUSTERSET=DIR"
        );
        std::process::exit(2);
    }
}

/// The number in environment variable `name`, or `default` when it is not set; a value that is
/// not a number stops the bench with its name.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
        })
        .unwrap_or(default)
}

/// The `p` quantile (0–1) of `sorted`, nearest rank; NaN when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Asks `server` for `name` (A) every `every` until it answers with an address; when it first
/// did, or `None` after `timeout`.
pub fn wait_answer(server: SocketAddr, name: &str, every: Duration, timeout: Duration) -> Option<Instant> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(every)).unwrap();
    let deadline = Instant::now() + timeout;
    let mut id = 0u16;
    while Instant::now() < deadline {
        id = id.wrapping_add(1);
        if !mcsd_tests::ask_a(&socket, server, name, id).is_empty() {
            return Some(Instant::now());
        }
        std::thread::sleep(every);
    }
    None
}

/// CPU seconds (user + system) and resident memory of one process of the real tier, read from
/// `/proc` through the `<component>.pid` file `tests/kube/up.sh` keeps in `dir`. Zero when the
/// process cannot be read.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessUse {
    /// User + system CPU seconds since it started.
    pub cpu: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
}

impl ProcessUse {
    /// `component`'s use now (`kube-apiserver`, `etcd`, `mcsd`, …).
    pub fn of(dir: &Path, component: &str) -> Self {
        Self::read(dir, component).unwrap_or_default()
    }

    fn read(dir: &Path, component: &str) -> Option<Self> {
        let pid = std::fs::read_to_string(dir.join(format!("{component}.pid"))).ok()?;
        let pid = pid.trim();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command name (which may hold spaces) in parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(Self {
            cpu: (utime + stime) / clock_ticks(),
            rss_mib: rss_kib / 1024.0,
        })
    }
}

/// Clock ticks per second of `/proc/PID/stat`'s times.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A seeded pseudo-random generator (xorshift64*): enough for a bench's choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n
    }
}
