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

/// Where a peer stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Not yet reached, or reconnecting after a failure.
    Connecting,
    /// Identity checked and records listed; followed live.
    Synced,
    /// Unreachable or failing; the message says why.
    Unreachable(String),
    /// Refused (wrong identity or ClusterSet, or rights missing); the message says why. Its
    /// records are not merged.
    Refused(String),
}

impl PeerState {
    /// The state's name, for the `state` label.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Synced => "synced",
            Self::Unreachable(_) => "unreachable",
            Self::Refused(_) => "refused",
        }
    }
}

/// One peer's state and when it last listed its records.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    /// The state.
    pub state: PeerState,
    /// Seconds since the Unix epoch of the last complete list of its records.
    pub last_sync: Option<u64>,
}

/// Every peer's state, for `/metrics`, readiness and the import conditions.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    states: Arc<Mutex<BTreeMap<String, PeerStatus>>>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Peers {
    /// Sets `peer`'s state; returns whether it changed (to log transitions only).
    pub fn set(&self, peer: &str, state: PeerState) -> bool {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let entry = states.entry(peer.to_string()).or_insert(PeerStatus {
            state: PeerState::Connecting,
            last_sync: None,
        });
        if state == PeerState::Synced {
            entry.last_sync = Some(unix_now());
        }
        let changed = entry.state != state;
        entry.state = state;
        changed
    }

    /// `peer`'s state, if it is known.
    pub fn get(&self, peer: &str) -> Option<PeerStatus> {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .cloned()
    }

    /// Every peer and its status.
    pub fn snapshot(&self) -> BTreeMap<String, PeerStatus> {
        self.states.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Prometheus text: one `mcsd_peer_state` series per peer and state (1 for the current one),
    /// and the time of each peer's last complete list.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let states = self.snapshot();
        let _ = writeln!(
            out,
            "# HELP mcsd_peer_state Each peer's connection state (1 for the current state)."
        );
        let _ = writeln!(out, "# TYPE mcsd_peer_state gauge");
        for (peer, status) in &states {
            for name in ["connecting", "synced", "unreachable", "refused"] {
                let v = u8::from(status.state.name() == name);
                let _ = writeln!(out, "mcsd_peer_state{{peer=\"{peer}\",state=\"{name}\"}} {v}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP mcsd_peer_last_sync_timestamp_seconds When each peer last listed its exchange records."
        );
        let _ = writeln!(out, "# TYPE mcsd_peer_last_sync_timestamp_seconds gauge");
        for (peer, status) in &states {
            if let Some(t) = status.last_sync {
                let _ = writeln!(
                    out,
                    "mcsd_peer_last_sync_timestamp_seconds{{peer=\"{peer}\"}} {t}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_states_render_one_hot_and_report_transitions_once() {
        let peers = Peers::default();
        assert!(peers.set("cluster-b", PeerState::Refused("other ClusterSet".into())));
        assert!(!peers.set("cluster-b", PeerState::Refused("other ClusterSet".into())));
        assert!(peers.set("cluster-c", PeerState::Synced));
        let mut text = String::new();
        peers.render(&mut text);
        assert!(text.contains("mcsd_peer_state{peer=\"cluster-b\",state=\"refused\"} 1"));
        assert!(text.contains("mcsd_peer_state{peer=\"cluster-b\",state=\"synced\"} 0"));
        assert!(text.contains("mcsd_peer_state{peer=\"cluster-c\",state=\"synced\"} 1"));
        assert!(text.contains("mcsd_peer_last_sync_timestamp_seconds{peer=\"cluster-c\"}"));
        assert!(!text.contains("mcsd_peer_last_sync_timestamp_seconds{peer=\"cluster-b\"}"));
    }

    #[test]
    fn writes_render_by_kind_operation_and_outcome() {
        let writes = Writes::default();
        writes.record("ServiceImport", "apply", true);
        writes.record("ServiceImport", "apply", true);
        writes.record("EndpointSlice", "delete", false);
        let mut text = String::new();
        writes.render(&mut text);
        assert!(
            text.contains(
                "mcsd_writes_total{kind=\"ServiceImport\",operation=\"apply\",outcome=\"success\"} 2"
            )
        );
        assert!(
            text.contains(
                "mcsd_writes_total{kind=\"EndpointSlice\",operation=\"delete\",outcome=\"error\"} 1"
            )
        );
        assert_eq!(writes.total(), 3);
    }
}
