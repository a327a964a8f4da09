//! The daemon's metrics: peer sync state and lag; export→import propagation latency; services
//! in conflict; what the guard refused; and the write counts, which live with the write path in
//! `super::apply::Writes` (a collector of its own). [`register`] puts them all in the admin listener's registry.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, family::Family, gauge::ConstGauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::core::view::View;

/// Registers the daemon's metrics in `registry` (the admin listener's), a sub-registry for each
/// part: the writes (`mcsd_writes_total`), the peers' states (`mcsd_peer_*`), the flow from
/// exports to imports (`mcsd_propagation_seconds`, `mcsd_services_in_conflict`) and what the guard
/// refused of the peers' records (`mcsd_peer_records_refused_total`). All are read when scraped.
pub fn register(
    registry: &mut Registry,
    writes: &(impl Collector + Clone),
    peers: &Peers,
    flow: &Flow,
    view: &Arc<Mutex<View>>,
    converged: &tokio::sync::watch::Receiver<bool>,
) {
    registry
        .sub_registry_with_prefix("mcsd")
        .register_collector(Box::new(writes.clone()));
    registry
        .sub_registry_with_prefix("mcsd")
        .register_collector(Box::new(Converged(converged.clone())));
    registry
        .sub_registry_with_prefix("mcsd_peer")
        .register_collector(Box::new(peers.clone()));
    let flows = registry.sub_registry_with_prefix("mcsd");
    flows.register_with_unit(
        "propagation",
        "From an exporting cluster's write of an exchange record to this cluster's write of the \
         import object it changed",
        Unit::Seconds,
        flow.propagation.clone(),
    );
    flows.register_collector(Box::new(Conflicts(flow.conflicts.clone())));
    flows.register(
        "hub_objects_received",
        "Exchange objects received from the hub, listed or watched (the hub sends a member only \
         the records of service namespaces it has)",
        flow.hub_received.clone(),
    );
    registry
        .sub_registry_with_prefix("mcsd_peer")
        .register_collector(Box::new(Refusals(view.clone())));
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
    /// When the peer's credentials expire (seconds since the Unix epoch), where known (a peer
    /// Secret written by `mcsd join`, renewed by this mcsd before then).
    pub credential_expiry: Option<i64>,
    /// Why renewing the peer's credentials fails, while it does (they still work until they
    /// expire).
    pub credential_problem: Option<String>,
    /// Whether its records are read from the hub (a hub member), not from the peer itself.
    pub via_hub: bool,
}

impl PeerStatus {
    fn new() -> Self {
        Self {
            state: PeerState::Connecting,
            last_sync: None,
            last_contact: None,
            credential_expiry: None,
            credential_problem: None,
            via_hub: false,
        }
    }
}

/// Every peer's state, for `/metrics`, readiness and the import conditions.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    states: Arc<Mutex<BTreeMap<String, PeerStatus>>>,
    /// The hub this cluster follows, if it follows one.
    hub: Arc<Mutex<Option<HubStatus>>>,
}

/// The hub this cluster follows, as its publisher knows it (`mcsd status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubStatus {
    /// The hub's API server.
    pub server: String,
    /// When this cluster's records were last copied there (a write that changed something).
    pub last_write: Option<std::time::SystemTime>,
    /// Why copying them fails, while it does.
    pub problem: Option<String>,
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
        let entry = states.entry(peer.to_string()).or_insert_with(PeerStatus::new);
        if state == PeerState::Synced {
            entry.last_sync = Some(unix_now());
            entry.last_contact = Some(std::time::Instant::now());
        }
        let changed = entry.state != state;
        entry.state = state;
        changed
    }

    /// Sets when `peer`'s credentials expire (`None`: not known).
    pub fn set_credential_expiry(&self, peer: &str, at: Option<i64>) {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(peer.to_string())
            .or_insert_with(PeerStatus::new)
            .credential_expiry = at;
    }

    /// Sets why renewing `peer`'s credentials fails (`None`: it does not, or they are not
    /// renewed by this mcsd).
    pub fn set_credential_problem(&self, peer: &str, problem: Option<String>) {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(peer.to_string())
            .or_insert_with(PeerStatus::new)
            .credential_problem = problem;
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

    /// Says `peer` is a hub member read from the hub (`true`), or a mesh peer.
    pub fn set_via_hub(&self, peer: &str, via_hub: bool) {
        if let Some(status) = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(peer)
        {
            status.via_hub = via_hub;
        }
    }

    /// Says which hub this cluster follows (`None`: none).
    pub fn set_hub(&self, server: Option<String>) {
        *self.hub.lock().unwrap_or_else(|e| e.into_inner()) = server.map(|server| HubStatus {
            server,
            ..HubStatus::default()
        });
    }

    /// Notes a write to the hub: done (`Ok`), or failing and why.
    pub fn hub_wrote(&self, outcome: Result<(), String>) {
        if let Some(hub) = self.hub.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            match outcome {
                Ok(()) => {
                    hub.last_write = Some(std::time::SystemTime::now());
                    hub.problem = None;
                }
                Err(problem) => hub.problem = Some(problem),
            }
        }
    }

    /// The hub this cluster follows, if any.
    pub fn hub(&self) -> Option<HubStatus> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
}

/// Every state's name, for the one-hot `mcsd_peer_state`.
const STATE_NAMES: [&str; 4] = ["connecting", "synced", "unreachable", "refused"];

/// `mcsd_peer_state{peer,state}` (1 for the current state), `mcsd_peer_problem_info{peer,state,
/// reason}` for a refused or unreachable peer, and when each peer last listed its records and was
/// last known current.
impl Collector for Peers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let states = self.snapshot();
        let mut state = encoder.encode_descriptor(
            "state",
            "Each peer's connection state (1 for the current state).",
            None,
            MetricType::Gauge,
        )?;
        for (peer, status) in &states {
            for name in STATE_NAMES {
                let labels = [("peer", peer.as_str()), ("state", name)];
                ConstGauge::new(i64::from(status.state.name() == name))
                    .encode(state.encode_family(&labels)?)?;
            }
        }
        let mut problem = encoder.encode_descriptor(
            "problem",
            "What is wrong with each refused or unreachable peer and how to fix it, in one line (label reason).",
            None,
            MetricType::Info,
        )?;
        for (peer, status) in &states {
            if let Some(why) = status.state.problem() {
                let labels = [("peer", peer.as_str()), ("state", status.state.name())];
                problem.encode_family(&labels)?.encode_info(&[("reason", why)])?;
            }
        }
        let mut last_sync = encoder.encode_descriptor(
            "last_sync_timestamp",
            "When each peer last listed its exchange records.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (peer, status) in &states {
            if let Some(t) = status.last_sync {
                ConstGauge::new(t).encode(last_sync.encode_family(&[("peer", peer.as_str())])?)?;
            }
        }
        let mut lag = encoder.encode_descriptor(
            "sync_lag",
            "How long ago each peer's records were last known current (listed, or confirmed by a \
             probe while followed): the bound on their staleness.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (peer, status) in &states {
            if let Some(t) = status.last_contact {
                let seconds = t.elapsed().as_secs_f64();
                ConstGauge::new(seconds).encode(lag.encode_family(&[("peer", peer.as_str())])?)?;
            }
        }
        let mut expiry = encoder.encode_descriptor(
            "credential_expiry_timestamp",
            "When each peer's credentials expire, where mcsd renews them (peer Secrets written by \
             `mcsd join`); see `mcsd_peer_credential_renewal_failing`.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (peer, status) in &states {
            if let Some(t) = status.credential_expiry {
                ConstGauge::new(t).encode(expiry.encode_family(&[("peer", peer.as_str())])?)?;
            }
        }
        let mut renewal = encoder.encode_descriptor(
            "credential_renewal_failing",
            "1 while renewing a peer's credentials fails (they still work until their expiry), 0 \
             otherwise; for peers whose credentials mcsd renews. The leading replica renews: \
             alert on the maximum over replicas.",
            None,
            MetricType::Gauge,
        )?;
        for (peer, status) in &states {
            if status.credential_expiry.is_some() {
                ConstGauge::new(i64::from(status.credential_problem.is_some()))
                    .encode(renewal.encode_family(&[("peer", peer.as_str())])?)?;
            }
        }
        Ok(())
    }
}

/// Upper bounds (seconds) of the propagation histogram's buckets.
const PROPAGATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A propagation histogram, for one kind of object.
fn propagation_histogram() -> Histogram {
    Histogram::new(PROPAGATION_BUCKETS)
}

/// The `kind` label of `mcsd_propagation_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// What the flow from exports to imports looks like: how long a change takes from the exporting
/// cluster's write to this cluster's import write, and which services are in conflict.
#[derive(Clone, Debug)]
pub struct Flow {
    propagation: Family<KindLabel, Histogram, fn() -> Histogram>,
    conflicts: Arc<Mutex<std::collections::HashMap<crate::core::view::Key, Vec<&'static str>>>>,
    /// Exchange objects received from the hub (listed or watched): what the hub sends this
    /// member, which its selection keeps to the service namespaces the member has.
    pub hub_received: prometheus_client::metrics::counter::Counter,
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            propagation: Family::new_with_constructor(propagation_histogram),
            conflicts: Arc::default(),
            hub_received: Default::default(),
        }
    }
}

impl Flow {
    /// Observes one propagation into an object of `kind` (`ServiceImport`, `EndpointSlice`): the
    /// time from the exporting cluster's write of its record to this cluster's write. The two
    /// clocks are different machines': a negative skew counts as zero.
    pub fn propagated(&self, kind: &str, seconds: f64) {
        let label = KindLabel {
            kind: kind.to_string(),
        };
        self.propagation.get_or_create(&label).observe(seconds.max(0.0));
    }

    /// Sets the conflict reasons of `key` (none: not in conflict, or no longer imported).
    pub fn set_conflicts(&self, key: &crate::core::view::Key, reasons: Vec<&'static str>) {
        let mut all = self.conflicts.lock().unwrap_or_else(|e| e.into_inner());
        if reasons.is_empty() {
            all.remove(key);
        } else {
            all.insert(key.clone(), reasons);
        }
    }
}

/// `mcsd_services_in_conflict{reason}`: services in conflict, counted per reason when scraped
/// (every reason, 0 included).
#[derive(Debug)]
struct Conflicts(Arc<Mutex<std::collections::HashMap<crate::core::view::Key, Vec<&'static str>>>>);

impl Collector for Conflicts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut by_reason: BTreeMap<&str, i64> = mcsd_crds::names::conditions::conflict::ALL
            .iter()
            .map(|r| (*r, 0))
            .collect();
        for reasons in self.0.lock().unwrap_or_else(|e| e.into_inner()).values() {
            for r in reasons {
                *by_reason.entry(r).or_default() += 1;
            }
        }
        let mut conflicts = encoder.encode_descriptor(
            "services_in_conflict",
            "Services whose exports conflict, by conflict reason.",
            None,
            MetricType::Gauge,
        )?;
        for (reason, n) in by_reason {
            ConstGauge::new(n).encode(conflicts.encode_family(&[("reason", reason)])?)?;
        }
        Ok(())
    }
}

/// `mcsd_writers_converged`: whether this replica, leading, has done its first full pass.
#[derive(Debug)]
struct Converged(tokio::sync::watch::Receiver<bool>);

impl Collector for Converged {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let gauge = encoder.encode_descriptor(
            "writers_converged",
            "1 once this replica, leading, has worked through its first full pass over every \
             service: everything it found wrong is written (retries included), and what was right \
             was left alone.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(*self.0.borrow())).encode(gauge)
    }
}

/// `mcsd_peer_records_refused_total{peer,reason}`: what the guard refused of each peer's records
/// (`crate::core::guard`). No service names: cardinality is peers × reasons.
#[derive(Debug)]
struct Refusals(Arc<Mutex<View>>);

impl Collector for Refusals {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let view = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let counts = view.refusal_counts();
        if counts.is_empty() {
            return Ok(());
        }
        let mut refused = encoder.encode_descriptor(
            "records_refused",
            "Exchange records (or their addresses) of a peer the guard refused, by reason.",
            None,
            MetricType::Counter,
        )?;
        for ((peer, reason), n) in counts {
            let labels = [("peer", peer.as_str()), ("reason", reason.label())];
            ConstCounter::new(*n).encode(refused.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// What `/metrics` shows of these (with an empty View), as the admin listener encodes it.
#[cfg(test)]
pub(crate) fn scraped(writes: &super::apply::Writes, peers: &Peers, flow: &Flow) -> String {
    let mut registry = Registry::default();
    let converged = tokio::sync::watch::channel(false).1;
    register(&mut registry, writes, peers, flow, &Arc::default(), &converged);
    mcsd_dns::admin::render(&registry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::apply::Writes;

    #[test]
    fn peer_states_render_one_hot_and_report_transitions_once() {
        let peers = Peers::default();
        assert!(peers.set("cluster-b", PeerState::Refused("other ClusterSet".into())));
        assert!(!peers.set("cluster-b", PeerState::Refused("other ClusterSet".into())));
        assert!(peers.set("cluster-c", PeerState::Synced));
        let text = scraped(&Writes::default(), &peers, &Flow::default());
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
    fn a_renewed_credential_shows_its_expiry_and_whether_renewing_it_fails() {
        let peers = Peers::default();
        peers.set("cluster-b", PeerState::Synced);
        peers.set("cluster-c", PeerState::Synced);
        peers.set_credential_expiry("cluster-b", Some(1_800_000_000));
        let text = scraped(&Writes::default(), &peers, &Flow::default());
        assert!(
            text.contains("mcsd_peer_credential_expiry_timestamp_seconds{peer=\"cluster-b\"} 1800000000")
        );
        assert!(text.contains("mcsd_peer_credential_renewal_failing{peer=\"cluster-b\"} 0"));
        assert!(
            !text.contains("mcsd_peer_credential_renewal_failing{peer=\"cluster-c\"}"),
            "not renewed by mcsd: no series"
        );
        peers.set_credential_problem("cluster-b", Some("refused".into()));
        let text = scraped(&Writes::default(), &peers, &Flow::default());
        assert!(text.contains("mcsd_peer_credential_renewal_failing{peer=\"cluster-b\"} 1"));
        assert!(text.contains("mcsd_writers_converged 0"), "{text}");
    }

    #[test]
    fn a_peer_problem_is_one_escaped_label_value() {
        let peers = Peers::default();
        peers.set(
            "cluster-b",
            PeerState::Unreachable("member of ClusterSet \"x\" at C:\\x\nsecond line".into()),
        );
        let text = scraped(&Writes::default(), &peers, &Flow::default());
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
        let key = |n: &str| crate::core::view::Key::new("demo", n);
        flow.set_conflicts(&key("a"), vec!["PortConflict"]);
        flow.set_conflicts(&key("b"), vec!["PortConflict", "TypeConflict"]);
        flow.set_conflicts(&key("c"), vec!["TypeConflict"]);
        flow.set_conflicts(&key("c"), vec![]);
        let text = scraped(&Writes::default(), &Peers::default(), &flow);
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
