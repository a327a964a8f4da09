//! The daemon's counters: writes by kind, operation and outcome; peer sync state.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// (kind, operation, succeeded).
type WriteKey = (String, &'static str, bool);

/// Writes mcsd made to the API server, by (kind, operation, succeeded).
#[derive(Clone, Debug, Default)]
pub struct Writes {
    counts: Arc<Mutex<BTreeMap<WriteKey, u64>>>,
}

impl Writes {
    /// Counts one write.
    pub fn record(&self, kind: &str, operation: &'static str, ok: bool) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((kind.to_string(), operation, ok)).or_default() += 1;
    }

    /// All writes so far.
    pub fn total(&self) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    /// The counts, for `/metrics`.
    pub fn snapshot(&self) -> BTreeMap<WriteKey, u64> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Prometheus text of the counts.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP mcsd_writes_total Writes to the API server, by kind, operation and outcome."
        );
        let _ = writeln!(out, "# TYPE mcsd_writes_total counter");
        for ((kind, op, ok), n) in self.snapshot() {
            let outcome = if ok { "success" } else { "error" };
            let _ = writeln!(
                out,
                "mcsd_writes_total{{kind=\"{kind}\",operation=\"{op}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
}
