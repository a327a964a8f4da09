//! What the benchmarks share: what a process of the real tier has used, and a seeded generator
//! (a bench's random choices are the same from run to run).

use std::path::Path;

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
