//! Query counters and latency histograms: per-worker atomics (no locks, no shared cache line on
//! the query path), summed when scraped by a `prometheus-client` collector, which also reads the
//! served zone's generation, size, serial and sync state.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, UNIX_EPOCH},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::{handler::Outcome, handler::SharedZone};

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
        (0..NQ).map(|q| self.sum(|s| &s.queries[q][r])).sum()
    }

    /// Registers these counters and the served zone's gauges in `registry` (the admin listener
    /// puts them under `mcsd_dns_`). They are read when scraped: the query path is unchanged.
    pub fn register(self: &Arc<Self>, registry: &mut Registry, zone: SharedZone) {
        registry.register_collector(Box::new(Scrape {
            metrics: self.clone(),
            zone,
        }));
    }

    /// The sum over the workers' slots of one counter.
    fn sum(&self, counter: impl Fn(&Slot) -> &AtomicU64) -> u64 {
        self.slots.iter().map(|s| counter(s).load(Relaxed)).sum()
    }
}

/// What a scrape reads: the workers' counters, summed, and the zone served now.
#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    zone: SharedZone,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.metrics;
        let mut queries = encoder.encode_descriptor(
            "queries",
            "DNS queries answered, by query type and response code.",
            None,
            MetricType::Counter,
        )?;
        for qi in 0..NQ {
            for ri in 0..NR {
                let n = m.sum(|s| &s.queries[qi][ri]);
                if n == 0 {
                    continue;
                }
                let labels = [
                    ("qtype", QTYPES.get(qi).map_or("other", |q| q.0)),
                    ("rcode", RCODES.get(ri).map_or("other", |r| r.0)),
                ];
                ConstCounter::new(n).encode(queries.encode_family(&labels)?)?;
            }
        }
        let counters = [
            (
                "truncated",
                "UDP replies sent with TC set.",
                m.sum(|s| &s.truncated),
            ),
            (
                "dropped",
                "Packets not answered (no header, or a response).",
                m.sum(|s| &s.dropped),
            ),
        ];
        for (name, help, n) in counters {
            let counter = ConstCounter::new(n);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let buckets: Vec<(f64, u64)> = BUCKETS_US
            .iter()
            .enumerate()
            .map(|(i, le)| (*le as f64 / 1e6, m.sum(|s| &s.latency[i])))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum::<u64>() + m.sum(|s| &s.latency[BUCKETS_US.len()]);
        encoder
            .encode_descriptor(
                "answer_duration",
                "Time from query received to reply built.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(
                m.sum(|s| &s.latency_sum_ns) as f64 / 1e9,
                count,
                &buckets,
                None,
            )?;
        let zone = self.zone.load();
        let published = zone
            .published_at()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let gauges = [
            (
                "zone_generation",
                "Publishes of the zone so far.",
                zone.generation(),
            ),
            (
                "zone_records",
                "Resource records the zone answers.",
                zone.record_count() as u64,
            ),
            ("zone_serial", "SOA serial of the zone.", u64::from(zone.serial())),
            (
                "zone_synced",
                "Whether the zone data is complete (1) or negatives are SERVFAIL (0).",
                u64::from(zone.synced()),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let published = ConstGauge::new(published);
        published.encode(encoder.encode_descriptor(
            "zone_last_publish_timestamp",
            "Unix time of the last publish.",
            Some(&Unit::Seconds),
            published.metric_type(),
        )?)?;
        Ok(())
    }
}
