//! Query counters and latency histograms: per-worker atomics (no locks, no shared cache line on
//! the query path), summed when scraped, rendered in the Prometheus text format.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, UNIX_EPOCH},
};

use crate::{handler::Outcome, zone::Zone};

const QTYPES: [(&str, u16); 7] = [
    ("A", 1),
    ("AAAA", 28),
    ("SRV", 33),
    ("TXT", 16),
    ("SOA", 6),
    ("NS", 2),
    ("ANY", 255),
];
const RCODES: [(&str, u16); 7] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("BADVERS", 16),
];
/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 11] = [1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 10000];
const NQ: usize = QTYPES.len() + 1;
const NR: usize = RCODES.len() + 1;

/// One worker's counters, on its own cache lines.
#[repr(align(128))]
#[derive(Debug)]
struct Slot {
    queries: [[AtomicU64; NR]; NQ],
    truncated: AtomicU64,
    dropped: AtomicU64,
    latency: [AtomicU64; BUCKETS_US.len() + 1],
    latency_sum_ns: AtomicU64,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            queries: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            truncated: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_ns: AtomicU64::new(0),
        }
    }
}

/// The server's metrics: one slot per worker.
#[derive(Debug)]
pub struct Metrics {
    slots: Box<[Slot]>,
}

impl Metrics {
    /// Metrics for `workers` concurrent writers (more are folded onto the last slot).
    pub fn new(workers: usize) -> Self {
        Self {
            slots: (0..workers.max(1)).map(|_| Slot::default()).collect(),
        }
    }

    /// Records one handled query of worker `worker`.
    #[inline]
    pub fn record(&self, worker: usize, outcome: Outcome, elapsed: Duration) {
        let slot = &self.slots[worker.min(self.slots.len() - 1)];
        match outcome {
            Outcome::Drop => {
                slot.dropped.fetch_add(1, Relaxed);
            }
            Outcome::Reply {
                rcode,
                qtype,
                truncated,
            } => {
                let q = QTYPES.iter().position(|&(_, t)| t == qtype).unwrap_or(NQ - 1);
                let r = RCODES.iter().position(|&(_, c)| c == rcode).unwrap_or(NR - 1);
                slot.queries[q][r].fetch_add(1, Relaxed);
                if truncated {
                    slot.truncated.fetch_add(1, Relaxed);
                }
                let ns = elapsed.as_nanos() as u64;
                let us = ns / 1000;
                let b = BUCKETS_US
                    .iter()
                    .position(|&le| us < le)
                    .unwrap_or(BUCKETS_US.len());
                slot.latency[b].fetch_add(1, Relaxed);
                slot.latency_sum_ns.fetch_add(ns, Relaxed);
            }
        }
    }

    /// Total replies with this rcode (all qtypes), for tests and readiness.
    pub fn replies(&self, rcode: u16) -> u64 {
        let r = RCODES.iter().position(|&(_, c)| c == rcode).unwrap_or(NR - 1);
        self.slots
            .iter()
            .map(|s| s.queries.iter().map(|row| row[r].load(Relaxed)).sum::<u64>())
            .sum()
    }

    /// The Prometheus text exposition of these metrics and of the current zone.
    pub fn render(&self, zone: &Zone) -> String {
        let mut out = String::with_capacity(4096);
        let sum = |f: &dyn Fn(&Slot) -> u64| self.slots.iter().map(f).sum::<u64>();
        out.push_str(
            "# HELP mcsd_dns_queries_total DNS queries answered, by query type and response code.\n",
        );
        out.push_str("# TYPE mcsd_dns_queries_total counter\n");
        for qi in 0..NQ {
            for ri in 0..NR {
                let n = sum(&|s| s.queries[qi][ri].load(Relaxed));
                if n == 0 {
                    continue;
                }
                let qt = QTYPES.get(qi).map_or("other", |q| q.0);
                let rc = RCODES.get(ri).map_or("other", |r| r.0);
                let _ = writeln!(out, "mcsd_dns_queries_total{{qtype=\"{qt}\",rcode=\"{rc}\"}} {n}");
            }
        }
        out.push_str("# HELP mcsd_dns_truncated_total UDP replies sent with TC set.\n# TYPE mcsd_dns_truncated_total counter\n");
        let _ = writeln!(
            out,
            "mcsd_dns_truncated_total {}",
            sum(&|s| s.truncated.load(Relaxed))
        );
        out.push_str("# HELP mcsd_dns_dropped_total Packets not answered (no header, or a response).\n# TYPE mcsd_dns_dropped_total counter\n");
        let _ = writeln!(
            out,
            "mcsd_dns_dropped_total {}",
            sum(&|s| s.dropped.load(Relaxed))
        );
        out.push_str("# HELP mcsd_dns_answer_duration_seconds Time from query received to reply built.\n");
        out.push_str("# TYPE mcsd_dns_answer_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, le) in BUCKETS_US.iter().enumerate() {
            cumulative += sum(&|s| s.latency[i].load(Relaxed));
            let _ = writeln!(
                out,
                "mcsd_dns_answer_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *le as f64 / 1e6
            );
        }
        cumulative += sum(&|s| s.latency[BUCKETS_US.len()].load(Relaxed));
        let _ = writeln!(
            out,
            "mcsd_dns_answer_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "mcsd_dns_answer_duration_seconds_sum {}",
            sum(&|s| s.latency_sum_ns.load(Relaxed)) as f64 / 1e9
        );
        let _ = writeln!(out, "mcsd_dns_answer_duration_seconds_count {cumulative}");
        out.push_str("# HELP mcsd_dns_zone_generation Publishes of the zone so far.\n# TYPE mcsd_dns_zone_generation gauge\n");
        let _ = writeln!(out, "mcsd_dns_zone_generation {}", zone.generation());
        out.push_str("# HELP mcsd_dns_zone_records Resource records the zone answers.\n# TYPE mcsd_dns_zone_records gauge\n");
        let _ = writeln!(out, "mcsd_dns_zone_records {}", zone.record_count());
        out.push_str(
            "# HELP mcsd_dns_zone_serial SOA serial of the zone.\n# TYPE mcsd_dns_zone_serial gauge\n",
        );
        let _ = writeln!(out, "mcsd_dns_zone_serial {}", zone.serial());
        out.push_str("# HELP mcsd_dns_zone_synced Whether the zone data is complete (1) or negatives are SERVFAIL (0).\n# TYPE mcsd_dns_zone_synced gauge\n");
        let _ = writeln!(out, "mcsd_dns_zone_synced {}", u8::from(zone.synced()));
        let published = zone
            .published_at()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        out.push_str("# HELP mcsd_dns_zone_last_publish_timestamp_seconds Unix time of the last publish.\n# TYPE mcsd_dns_zone_last_publish_timestamp_seconds gauge\n");
        let _ = writeln!(out, "mcsd_dns_zone_last_publish_timestamp_seconds {published:.3}");
        out
    }
}
