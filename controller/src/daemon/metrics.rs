//! The daemon's counters: peer sync state and lag; export→import propagation latency; services
//! in conflict; what the guard refused. (Write counts live with the write path, in
//! [`super::apply::Writes`].)

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// Where a peer stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Not yet reached, or reconnecting after a failure.
    Connecting,
    /// Identity checked and records listed; followed live.
    Synced,
    /// Unreachable or failing; the message says why.
    Unreachable(String),
    /// Refused (wrong identity or ClusterSet, credentials rejected, rights missing); the message
    /// says why, in one line. Refused when admitted, its records are not merged; refused once
    /// followed (its credentials expired), they are kept through the grace period.
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

    /// Why the peer is refused or unreachable, in one line.
    pub fn problem(&self) -> Option<&str> {
        match self {
            Self::Unreachable(why) | Self::Refused(why) => Some(why),
            Self::Connecting | Self::Synced => None,
        }
    }
}

/// `value` as a Prometheus label value: backslash, double quote and newline escaped.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One peer's state and when it last listed its records.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    /// The state.
    pub state: PeerState,
    /// Seconds since the Unix epoch of the last complete list of its records.
    pub last_sync: Option<u64>,
    /// When the peer last proved current: its records listed, or a probe answered while its
    /// watches ran. How stale this cluster's copy of its records may be is the time since.
    pub last_contact: Option<std::time::Instant>,
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
            last_contact: None,
        });
        if state == PeerState::Synced {
            entry.last_sync = Some(unix_now());
            entry.last_contact = Some(std::time::Instant::now());
        }
        let changed = entry.state != state;
        entry.state = state;
        changed
    }

    /// Notes that `peer` answered a probe while followed: its records are current as of now.
    pub fn contact(&self, peer: &str) {
        if let Some(status) = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(peer)
            .filter(|s| s.state == PeerState::Synced)
        {
            status.last_contact = Some(std::time::Instant::now());
        }
    }

    /// Forgets `peer` (removed from the configuration).
    pub fn remove(&self, peer: &str) {
        self.states.lock().unwrap_or_else(|e| e.into_inner()).remove(peer);
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
            "# HELP mcsd_peer_problem_info What is wrong with each refused or unreachable peer and how to fix it, in one line (label reason)."
        );
        let _ = writeln!(out, "# TYPE mcsd_peer_problem_info gauge");
        for (peer, status) in &states {
            if let Some(why) = status.state.problem() {
                let _ = writeln!(
                    out,
                    "mcsd_peer_problem_info{{peer=\"{peer}\",state=\"{}\",reason=\"{}\"}} 1",
                    status.state.name(),
                    label_value(why)
                );
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
        let _ = writeln!(
            out,
            "# HELP mcsd_peer_sync_lag_seconds How long ago each peer's records were last known current \
             (listed, or confirmed by a probe while followed): the bound on their staleness."
        );
        let _ = writeln!(out, "# TYPE mcsd_peer_sync_lag_seconds gauge");
        for (peer, status) in &states {
            if let Some(t) = status.last_contact {
                let lag = t.elapsed().as_secs_f64();
                let _ = writeln!(out, "mcsd_peer_sync_lag_seconds{{peer=\"{peer}\"}} {lag:.3}");
            }
        }
    }
}

/// Upper bounds (seconds) of the propagation histogram's buckets.
const PROPAGATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// One histogram: counts per bucket (not cumulative), sum and count.
#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: [u64; PROPAGATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// What the flow from exports to imports looks like: how long a change takes from the exporting
/// cluster's write to this cluster's import write, and which services are in conflict.
#[derive(Clone, Debug, Default)]
pub struct Flow {
    propagation: Arc<Mutex<BTreeMap<String, Histogram>>>,
    conflicts: Arc<Mutex<std::collections::HashMap<crate::view::Key, Vec<&'static str>>>>,
}

impl Flow {
    /// Observes one propagation into an object of `kind` (`ServiceImport`, `EndpointSlice`): the
    /// time from the exporting cluster's write of its record to this cluster's write. The two
    /// clocks are different machines': a negative skew counts as zero.
    pub fn propagated(&self, kind: &str, seconds: f64) {
        let seconds = seconds.max(0.0);
        let mut all = self.propagation.lock().unwrap_or_else(|e| e.into_inner());
        if !all.contains_key(kind) {
            all.insert(kind.to_string(), Histogram::default());
        }
        let Some(h) = all.get_mut(kind) else { return };
        if let Some(i) = PROPAGATION_BUCKETS.iter().position(|b| seconds <= *b) {
            h.buckets[i] += 1;
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Sets the conflict reasons of `key` (none: not in conflict, or no longer imported).
    pub fn set_conflicts(&self, key: &crate::view::Key, reasons: Vec<&'static str>) {
        let mut all = self.conflicts.lock().unwrap_or_else(|e| e.into_inner());
        if reasons.is_empty() {
            all.remove(key);
        } else {
            all.insert(key.clone(), reasons);
        }
    }

    /// How many propagations of `kind` were observed.
    pub fn propagations(&self, kind: &str) -> u64 {
        let all = self.propagation.lock().unwrap_or_else(|e| e.into_inner());
        all.get(kind).map(|h| h.count).unwrap_or_default()
    }

    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP mcsd_propagation_seconds From an exporting cluster's write of an exchange record to \
             this cluster's write of the import object it changed."
        );
        let _ = writeln!(out, "# TYPE mcsd_propagation_seconds histogram");
        for (kind, h) in self.propagation.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let mut cumulative = 0;
            for (bound, n) in PROPAGATION_BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "mcsd_propagation_seconds_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "mcsd_propagation_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "mcsd_propagation_seconds_sum{{kind=\"{kind}\"}} {:.6}",
                h.sum
            );
            let _ = writeln!(
                out,
                "mcsd_propagation_seconds_count{{kind=\"{kind}\"}} {}",
                h.count
            );
        }
        let mut by_reason: BTreeMap<&str, u64> = mcsd_crds::names::conditions::conflict::ALL
            .iter()
            .map(|r| (*r, 0))
            .collect();
        for reasons in self.conflicts.lock().unwrap_or_else(|e| e.into_inner()).values() {
            for r in reasons {
                *by_reason.entry(r).or_default() += 1;
            }
        }
        let _ = writeln!(
            out,
            "# HELP mcsd_services_in_conflict Services whose exports conflict, by conflict reason."
        );
        let _ = writeln!(out, "# TYPE mcsd_services_in_conflict gauge");
        for (reason, n) in by_reason {
            let _ = writeln!(out, "mcsd_services_in_conflict{{reason=\"{reason}\"}} {n}");
        }
    }
}

/// `mcsd_peer_records_refused_total{peer,reason}`: what the guard refused of each peer's records
/// (`crate::guard`). No service names: cardinality is peers × reasons.
pub fn render_refusals(view: &crate::view::View, out: &mut String) {
    use std::fmt::Write;
    let counts = view.refusal_counts();
    if counts.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP mcsd_peer_records_refused_total Exchange records (or their addresses) of a peer the guard refused, by reason."
    );
    let _ = writeln!(out, "# TYPE mcsd_peer_records_refused_total counter");
    for ((peer, reason), n) in counts {
        let _ = writeln!(
            out,
            "mcsd_peer_records_refused_total{{peer=\"{peer}\",reason=\"{}\"}} {n}",
            reason.label()
        );
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
        assert!(text.contains(
            "mcsd_peer_problem_info{peer=\"cluster-b\",state=\"refused\",reason=\"other ClusterSet\"} 1"
        ));
        assert!(
            !text.contains("mcsd_peer_problem_info{peer=\"cluster-c\""),
            "synced: no problem"
        );
    }

    #[test]
    fn a_peer_problem_is_one_escaped_label_value() {
        let peers = Peers::default();
        peers.set(
            "cluster-b",
            PeerState::Unreachable("member of ClusterSet \"x\" at C:\\x\nsecond line".into()),
        );
        let mut text = String::new();
        peers.render(&mut text);
        assert!(
            text.contains(
                r#"mcsd_peer_problem_info{peer="cluster-b",state="unreachable",reason="member of ClusterSet \"x\" at C:\\x\nsecond line"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn propagation_is_a_cumulative_histogram_and_conflicts_count_services_by_reason() {
        let flow = Flow::default();
        flow.propagated("EndpointSlice", 0.003);
        flow.propagated("EndpointSlice", 0.2);
        flow.propagated("EndpointSlice", -1.0); // a clock behind ours
        flow.propagated("EndpointSlice", 1000.0);
        let key = |n: &str| crate::view::Key::new("demo", n);
        flow.set_conflicts(&key("a"), vec!["PortConflict"]);
        flow.set_conflicts(&key("b"), vec!["PortConflict", "TypeConflict"]);
        flow.set_conflicts(&key("c"), vec!["TypeConflict"]);
        flow.set_conflicts(&key("c"), vec![]);
        let mut text = String::new();
        flow.render(&mut text);
        assert!(text.contains("mcsd_propagation_seconds_bucket{kind=\"EndpointSlice\",le=\"0.005\"} 2"));
        assert!(text.contains("mcsd_propagation_seconds_bucket{kind=\"EndpointSlice\",le=\"0.25\"} 3"));
        assert!(text.contains("mcsd_propagation_seconds_bucket{kind=\"EndpointSlice\",le=\"300\"} 3"));
        assert!(text.contains("mcsd_propagation_seconds_bucket{kind=\"EndpointSlice\",le=\"+Inf\"} 4"));
        assert!(text.contains("mcsd_propagation_seconds_count{kind=\"EndpointSlice\"} 4"));
        assert!(text.contains("mcsd_services_in_conflict{reason=\"PortConflict\"} 2"));
        assert!(text.contains("mcsd_services_in_conflict{reason=\"TypeConflict\"} 1"));
        assert!(text.contains("mcsd_services_in_conflict{reason=\"SessionAffinityConflict\"} 0"));
    }
}
