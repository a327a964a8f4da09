//! The gate between a peer's exchange objects and the View: each object a peer watch delivers is
//! read once here, put through the guard (`guard.rs`: the namespace policy, the addresses an
//! endpoint may have, DNS-label names, the per-peer limits, the ranges declared for the peer),
//! and handed to the View admitted, or not at all. The gate keeps what it refused, per peer and
//! object, for `mcsd why` and the log, and counts refusals per peer and reason for
//! `mcsd_peer_records_refused_total`.
//!
//! ```text
//!  Object (as the watch delivers it) ──admit──▶ Verdict::Take(Admitted)   parsed, addresses kept
//!                                          ├──▶ Verdict::Drop(key, what)   refused or unreadable:
//!                                          │                               the View lets go of it
//!                                          └──▶ Verdict::Ignore            no service labels
//! ```
//!
//! This cluster's own objects pass unchecked (its admin wrote its Services), as does everything
//! when there is no guard (unit tests of the merge).

use std::{collections::BTreeMap, sync::Arc};

use mcsd_crds::ClusterId;

use crate::core::{
    exchange::{ExportRecord, Key, Kind, MirroredSlice, Object, key_of},
    guard::{self, Guard, Refusal},
};

/// An exchange object the gate let through, read once.
#[derive(Clone, Debug)]
pub enum Admitted {
    /// An export record.
    Record {
        /// Its service.
        key: Key,
        /// The record.
        record: Box<ExportRecord>,
        /// When its cluster wrote it (`mcsd.io/written-at`).
        written: Option<k8s_openapi::jiff::Timestamp>,
    },
    /// A mirrored EndpointSlice, with only the addresses the guard allows.
    Slice {
        /// Its service.
        key: Key,
        /// Its name.
        name: String,
        /// The slice.
        slice: Box<MirroredSlice>,
    },
}

/// What the gate made of one object.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// Take it.
    Take(Admitted),
    /// Refused or unreadable: whatever the View holds of it (the record of `key`, or the slice
    /// named) must go, as if it had been deleted.
    Drop {
        /// Its service.
        key: Key,
        /// The slice's name; `None` for the export record.
        slice: Option<String>,
    },
    /// Not an exchange object of any service (no service labels): nothing to do.
    Ignore,
}

/// What the View holds of a peer that the limits count.
#[derive(Clone, Copy, Debug, Default)]
pub struct Held {
    /// Whether it holds the peer's record of this service.
    pub record: bool,
    /// How many records of the peer it holds.
    pub records: usize,
    /// How many endpoints of this service the peer's other slices have.
    pub other_endpoints: usize,
}

/// What the gate refused of one object, for the service it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Refused {
    key: Key,
    lines: Vec<String>,
}

/// The guard applied per peer, and what it refused.
#[derive(Debug, Default)]
pub struct Gate {
    /// What peers' objects may bring (`None`: everything).
    guard: Option<Arc<Guard>>,
    /// This cluster: its objects pass unchecked.
    local: Option<ClusterId>,
    /// Per peer: the only ranges its endpoint addresses may be in.
    ranges: BTreeMap<ClusterId, Vec<ipnet::IpNet>>,
    /// What was refused, per peer and object: the lines `mcsd why` shows.
    refused: BTreeMap<ClusterId, BTreeMap<(Kind, String), Refused>>,
    /// Refusals so far, per peer and reason.
    refusals: BTreeMap<(ClusterId, Refusal), u64>,
}

impl Gate {
    /// A gate that lets `local`'s objects through as they are and every peer's through `guard`.
    pub fn guarded(local: ClusterId, guard: Guard) -> Self {
        Self {
            guard: Some(Arc::new(guard)),
            local: Some(local),
            ..Self::default()
        }
    }

    /// A gate with the same guard, local cluster and ranges, and nothing refused yet.
    pub fn same_policy(&self) -> Self {
        Self {
            guard: self.guard.clone(),
            local: self.local.clone(),
            ranges: self.ranges.clone(),
            ..Self::default()
        }
    }

    /// Declares the only ranges `peer`'s endpoint addresses may be in (empty: any allowed
    /// address). Takes effect for the objects it publishes from now on.
    pub fn set_ranges(&mut self, peer: &ClusterId, ranges: Vec<ipnet::IpNet>) {
        if ranges.is_empty() {
            self.ranges.remove(peer);
        } else {
            self.ranges.insert(peer.clone(), ranges);
        }
    }

    /// Reads `object` of `cluster` and decides on it; `held` says what the View holds of that
    /// cluster for a service (and, for a slice, beside the slice named).
    pub fn admit(
        &mut self,
        cluster: &ClusterId,
        object: Object,
        held: impl Fn(&Key, &str) -> Held,
    ) -> Verdict {
        let guard = (self.local.as_ref() != Some(cluster))
            .then(|| self.guard.clone())
            .flatten();
        match object {
            Object::Record(cm) => {
                let Some(key) = key_of(cm.metadata.labels.as_ref()) else {
                    return Verdict::Ignore;
                };
                let id = (Kind::Record, cm.metadata.name.clone().unwrap_or_default());
                let drop = Verdict::Drop {
                    key: key.clone(),
                    slice: None,
                };
                let record = match ExportRecord::from_config_map(&cm) {
                    Ok(r) if r.cluster == *cluster && r.namespace == key.namespace && r.name == key.name => r,
                    Ok(r) => {
                        if guard.is_some() {
                            // Whose a record is comes from where it was read, never from what it
                            // says: a peer (or hub member) speaking for another is refused.
                            let line = format!(
                                "{cluster}'s record of {}/{} is ignored: it says it is {}'s export of {}/{}",
                                key.namespace, key.name, r.cluster, r.namespace, r.name
                            );
                            self.refuse(cluster, id, &key, vec![(Refusal::Misattributed, line)]);
                        } else {
                            tracing::warn!(%cluster, claimed = %r.cluster, namespace = %key.namespace, name = %key.name, "exchange record names another cluster or service; ignored");
                            self.accept(cluster, &id);
                        }
                        return drop;
                    }
                    Err(error) => {
                        tracing::warn!(%cluster, %error, "unreadable exchange record ignored");
                        self.accept(cluster, &id);
                        return drop;
                    }
                };
                if let Some(g) = &guard {
                    let size = cm.data.iter().flatten().map(|(k, v)| k.len() + v.len()).sum();
                    if let Some(refusal) = check_record(g, cluster, &key, &record, size, held(&key, "")) {
                        self.refuse(cluster, id, &key, vec![refusal]);
                        return drop;
                    }
                }
                self.accept(cluster, &id);
                Verdict::Take(Admitted::Record {
                    written: crate::core::exchange::written_at(&cm),
                    key,
                    record: Box::new(record),
                })
            }
            Object::Slice(mut slice) => {
                let Some(key) = key_of(slice.metadata.labels.as_ref()) else {
                    return Verdict::Ignore;
                };
                let Some(name) = slice.metadata.name.clone() else {
                    return Verdict::Ignore;
                };
                let id = (Kind::Slice, name.clone());
                if let Some(g) = &guard {
                    let ranges = self.ranges.get(cluster).map(Vec::as_slice);
                    match check_slice(g, ranges, cluster, &key, &mut slice, held(&key, &name)) {
                        Err(refusal) => {
                            self.refuse(cluster, id, &key, vec![refusal]);
                            return Verdict::Drop {
                                key,
                                slice: Some(name),
                            };
                        }
                        Ok(dropped) if !dropped.is_empty() => self.refuse(cluster, id, &key, dropped),
                        Ok(_) => self.accept(cluster, &id),
                    }
                }
                Verdict::Take(Admitted::Slice {
                    key,
                    name,
                    slice: Box::new(slice),
                })
            }
        }
    }

    /// Forgets what was refused of `object` of `cluster` (it was deleted).
    pub fn forget(&mut self, cluster: &ClusterId, object: &Object) {
        let id = match object {
            Object::Record(cm) => (Kind::Record, cm.metadata.name.clone().unwrap_or_default()),
            Object::Slice(s) => (Kind::Slice, s.metadata.name.clone().unwrap_or_default()),
        };
        self.accept(cluster, &id);
    }

    /// Takes what `fresh` (this gate's [`Self::same_policy`], fed a re-list of `cluster`'s
    /// objects of `kind`) refused and counted: what is refused of that kind is what the re-list
    /// brought.
    pub fn absorb(&mut self, cluster: &ClusterId, kind: Kind, mut fresh: Gate) {
        let by_object = self.refused.entry(cluster.clone()).or_default();
        by_object.retain(|(k, _), _| *k != kind);
        if let Some(fresh_refused) = fresh.refused.remove(cluster) {
            by_object.extend(fresh_refused);
        }
        for (reason, n) in fresh.refusals {
            *self.refusals.entry(reason).or_default() += n;
        }
    }

    /// What was left out of `key`, one line each (for `mcsd why`).
    pub fn refused_lines(&self, key: &Key) -> Vec<String> {
        self.refused
            .values()
            .flat_map(|by_object| by_object.values())
            .filter(|r| &r.key == key)
            .flat_map(|r| r.lines.iter().cloned())
            .collect()
    }

    /// Refusals so far, per peer and reason.
    pub fn refusal_counts(&self) -> &BTreeMap<(ClusterId, Refusal), u64> {
        &self.refusals
    }

    /// Notes that (part of) `object` of `cluster` was refused for `key`, for each reason and line
    /// given; logs when what is refused of the object changes.
    fn refuse(
        &mut self,
        cluster: &ClusterId,
        object: (Kind, String),
        key: &Key,
        refusals: Vec<(Refusal, String)>,
    ) {
        for (reason, _) in &refusals {
            *self.refusals.entry((cluster.clone(), *reason)).or_default() += 1;
        }
        let refused = Refused {
            key: key.clone(),
            lines: refusals.into_iter().map(|(_, l)| l).collect(),
        };
        let by_object = self.refused.entry(cluster.clone()).or_default();
        if by_object.get(&object) != Some(&refused) {
            for line in &refused.lines {
                tracing::warn!(peer = %cluster, "refused: {line}");
            }
            by_object.insert(object, refused);
        }
    }

    /// Forgets what was refused of `object` of `cluster` (taken whole, or gone).
    fn accept(&mut self, cluster: &ClusterId, object: &(Kind, String)) {
        if let Some(by_object) = self.refused.get_mut(cluster) {
            by_object.remove(object);
        }
    }
}

/// Why the guard refuses a peer's export record, if it does: with the line that says so.
fn check_record(
    g: &Guard,
    cluster: &ClusterId,
    key: &Key,
    record: &ExportRecord,
    size: usize,
    held: Held,
) -> Option<(Refusal, String)> {
    let ignored = |why: String| {
        format!(
            "{cluster}'s export of {}/{} is ignored: {why}",
            key.namespace, key.name
        )
    };
    if !g.namespaces.permits(&key.namespace) {
        return Some((
            Refusal::Namespace,
            ignored(g.namespaces.why_denied(&key.namespace)),
        ));
    }
    if size > g.limits.bytes_per_record {
        return Some((
            Refusal::TooLarge,
            ignored(format!(
                "its record has {size} bytes, more than the {} a record may have",
                g.limits.bytes_per_record
            )),
        ));
    }
    if let Some(bad) = record
        .ports
        .iter()
        .filter_map(|p| p.name.as_deref())
        .find(|n| !guard::is_dns_label(n))
    {
        return Some((
            Refusal::PortName,
            ignored(format!("its port name {bad:?} is not a DNS label")),
        ));
    }
    if !held.record && held.records >= g.limits.records {
        return Some((
            Refusal::TooManyRecords,
            ignored(format!(
                "the peer already has {} exports, the most a peer may have",
                held.records
            )),
        ));
    }
    None
}

/// Puts a peer's slice through the guard: `Err` refuses it whole (a namespace, a name, a size or
/// a limit); `Ok` gives what was dropped of it (addresses), which it no longer holds.
fn check_slice(
    g: &Guard,
    ranges: Option<&[ipnet::IpNet]>,
    cluster: &ClusterId,
    key: &Key,
    slice: &mut MirroredSlice,
    held: Held,
) -> Result<Vec<(Refusal, String)>, (Refusal, String)> {
    let name = slice.metadata.name.clone().unwrap_or_default();
    let ignored = |why: String| {
        format!(
            "{cluster}'s EndpointSlice {name} of {}/{} is ignored: {why}",
            key.namespace, key.name
        )
    };
    if !g.namespaces.permits(&key.namespace) {
        return Err((
            Refusal::Namespace,
            ignored(g.namespaces.why_denied(&key.namespace)),
        ));
    }
    if let Some(bad) = slice
        .endpoints
        .iter()
        .filter_map(|e| e.hostname.as_deref())
        .find(|h| !guard::is_dns_label(h))
    {
        return Err((
            Refusal::Hostname,
            ignored(format!("the endpoint hostname {bad:?} is not a DNS label")),
        ));
    }
    if let Some(bad) = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.as_deref())
        .find(|n| !n.is_empty() && !guard::is_dns_label(n))
    {
        return Err((
            Refusal::PortName,
            ignored(format!("its port name {bad:?} is not a DNS label")),
        ));
    }
    let size: usize = slice
        .endpoints
        .iter()
        .map(|e| {
            e.addresses.iter().map(String::len).sum::<usize>()
                + [&e.hostname, &e.node_name, &e.zone]
                    .iter()
                    .filter_map(|s| s.as_deref())
                    .map(str::len)
                    .sum::<usize>()
        })
        .sum();
    if size > g.limits.bytes_per_record {
        return Err((
            Refusal::TooLarge,
            ignored(format!(
                "it has {size} bytes of addresses and names, more than the {} a record may have",
                g.limits.bytes_per_record
            )),
        ));
    }
    let mut dropped = Vec::new();
    for endpoint in &mut slice.endpoints {
        endpoint.addresses.retain(|address| {
            let verdict = g
                .address(&slice.address_type, address)
                .and_then(|()| match ranges {
                    Some(r)
                        if !address
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| r.iter().any(|n| n.contains(&ip))) =>
                    {
                        Err(Refusal::OutsideRanges)
                    }
                    _ => Ok(()),
                });
            match verdict {
                Ok(()) => true,
                Err(why) => {
                    dropped.push((
                        why,
                        format!("{cluster}'s endpoint {address} {}", guard::describe(why)),
                    ));
                    false
                }
            }
        });
    }
    slice.endpoints.retain(|e| !e.addresses.is_empty());
    let total = held.other_endpoints + slice.endpoints.len();
    if total > g.limits.endpoints_per_service {
        return Err((
            Refusal::TooManyEndpoints,
            ignored(format!(
                "with it the peer would publish {total} endpoints of the service, more than the {} a peer may",
                g.limits.endpoints_per_service
            )),
        ));
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::EndpointPort;
    use kube::api::ObjectMeta;
    use mcsd_crds::mcs::ServicePort;

    use super::*;
    use crate::core::{
        exchange::{CrossingEndpoint, record_labels},
        fixtures::id,
        guard::{Limits, NamespacePolicy},
        merge::ExportSpec,
    };

    /// cluster-a's gate, with small limits: 2 records, 3 endpoints per service, 600 bytes.
    fn gate() -> Gate {
        let mut gate = Gate::guarded(
            id("cluster-a"),
            Guard {
                namespaces: NamespacePolicy::new("mcsd-system", vec![], vec![]),
                limits: Limits {
                    records: 2,
                    endpoints_per_service: 3,
                    bytes_per_record: 600,
                },
            },
        );
        gate.set_ranges(
            &id("cluster-b"),
            vec!["10.161.0.0/16".parse().unwrap(), "fd00::/64".parse().unwrap()],
        );
        gate
    }

    fn record(ns: &str, port_name: &str, note: &str) -> Object {
        let spec = ExportSpec {
            ports: vec![ServicePort {
                name: Some(port_name.into()),
                port: 80,
                ..Default::default()
            }],
            annotations: [("note".to_string(), note.to_string())].into(),
            ..Default::default()
        };
        let at = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        Object::Record(ExportRecord::new(id("cluster-b"), ns, "web", at, spec).to_config_map("mcsd-system"))
    }

    fn slice(ns: &str, family: &str, endpoints: &[(&str, Option<&str>)], port_name: &str) -> Object {
        Object::Slice(MirroredSlice {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                labels: Some(record_labels(ns, "web")),
                ..Default::default()
            },
            address_type: family.into(),
            endpoints: endpoints
                .iter()
                .map(|(address, hostname)| CrossingEndpoint {
                    addresses: vec![address.to_string()],
                    hostname: hostname.map(str::to_string),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some(port_name.into()),
                port: Some(80),
                ..Default::default()
            }]),
        })
    }

    fn nothing_held(_: &Key, _: &str) -> Held {
        Held::default()
    }

    #[test]
    fn every_refusal_of_a_whole_object_drops_it_and_says_why_in_one_line() {
        let long = "x".repeat(700);
        let hostname = "h".repeat(63);
        let cases: Vec<(&str, Object, Held, Refusal, &str)> = vec![
            (
                "a record in a denied namespace",
                record("kube-system", "http", ""),
                Held::default(),
                Refusal::Namespace,
                "cluster-b's export of kube-system/web is ignored: namespace kube-system is denied",
            ),
            (
                "a record larger than a record may be",
                record("demo", "http", &long),
                Held::default(),
                Refusal::TooLarge,
                "cluster-b's export of demo/web is ignored: its record has ",
            ),
            (
                "a record whose port name is not a DNS label",
                record("demo", "Not_A_Label", ""),
                Held::default(),
                Refusal::PortName,
                "cluster-b's export of demo/web is ignored: its port name \"Not_A_Label\" is not a DNS label",
            ),
            (
                "a record past the peer's limit of records",
                record("demo", "http", ""),
                Held {
                    records: 2,
                    ..Held::default()
                },
                Refusal::TooManyRecords,
                "cluster-b's export of demo/web is ignored: the peer already has 2 exports, the most a peer may have",
            ),
            (
                "a slice in a denied namespace",
                slice("mcsd-system", "IPv4", &[("10.161.0.5", None)], "http"),
                Held::default(),
                Refusal::Namespace,
                "cluster-b's EndpointSlice web-1 of mcsd-system/web is ignored: namespace mcsd-system is denied",
            ),
            (
                "a slice with a hostname that is not a DNS label",
                slice("demo", "IPv4", &[("10.161.0.5", Some("web-0.evil"))], "http"),
                Held::default(),
                Refusal::Hostname,
                "cluster-b's EndpointSlice web-1 of demo/web is ignored: the endpoint hostname \"web-0.evil\" is not a DNS label",
            ),
            (
                "a slice whose port name is not a DNS label",
                slice("demo", "IPv4", &[("10.161.0.5", None)], "HTTP"),
                Held::default(),
                Refusal::PortName,
                "cluster-b's EndpointSlice web-1 of demo/web is ignored: its port name \"HTTP\" is not a DNS label",
            ),
            (
                "a slice larger than a record may be",
                slice(
                    "demo",
                    "IPv4",
                    &[("10.161.0.5", Some(hostname.as_str())); 10],
                    "http",
                ),
                Held::default(),
                Refusal::TooLarge,
                "cluster-b's EndpointSlice web-1 of demo/web is ignored: it has ",
            ),
            (
                "a slice past the peer's limit of endpoints per service",
                slice(
                    "demo",
                    "IPv4",
                    &[("10.161.0.5", None), ("10.161.0.6", None)],
                    "http",
                ),
                Held {
                    other_endpoints: 2,
                    ..Held::default()
                },
                Refusal::TooManyEndpoints,
                "cluster-b's EndpointSlice web-1 of demo/web is ignored: with it the peer would publish 4 endpoints of the service, more than the 3 a peer may",
            ),
        ];
        for (case, object, held, reason, line) in cases {
            let mut gate = gate();
            let verdict = gate.admit(&id("cluster-b"), object, |_, _| held);
            assert!(matches!(verdict, Verdict::Drop { .. }), "{case}: {verdict:?}");
            assert_eq!(
                gate.refusal_counts().keys().collect::<Vec<_>>(),
                [&(id("cluster-b"), reason)],
                "{case}"
            );
            let lines: Vec<String> = gate
                .refused
                .values()
                .flat_map(|m| m.values())
                .flat_map(|r| r.lines.clone())
                .collect();
            assert!(
                lines.len() == 1 && lines[0].starts_with(line),
                "{case}: {lines:?}"
            );
        }
    }

    #[test]
    fn addresses_no_endpoint_may_have_are_dropped_and_the_rest_of_the_slice_taken() {
        let cases = [
            (
                "IPv4",
                "0.0.0.0",
                Refusal::Unspecified,
                "cluster-b's endpoint 0.0.0.0 is unspecified",
            ),
            (
                "IPv4",
                "127.0.0.1",
                Refusal::Loopback,
                "cluster-b's endpoint 127.0.0.1 is loopback",
            ),
            (
                "IPv4",
                "169.254.169.254",
                Refusal::LinkLocal,
                "cluster-b's endpoint 169.254.169.254 is link-local",
            ),
            (
                "IPv4",
                "224.0.0.1",
                Refusal::Multicast,
                "cluster-b's endpoint 224.0.0.1 is multicast or broadcast",
            ),
            (
                "IPv4",
                "fd00::9",
                Refusal::WrongFamily,
                "cluster-b's endpoint fd00::9 is not an address of its slice's address type",
            ),
            (
                "IPv4",
                "10.9.9.9",
                Refusal::OutsideRanges,
                "cluster-b's endpoint 10.9.9.9 is outside the ranges declared for the peer",
            ),
            (
                "IPv6",
                "fe80::1",
                Refusal::LinkLocal,
                "cluster-b's endpoint fe80::1 is link-local",
            ),
        ];
        for (family, bad, reason, line) in cases {
            let good = if family == "IPv4" { "10.161.0.5" } else { "fd00::5" };
            let mut gate = gate();
            let verdict = gate.admit(
                &id("cluster-b"),
                slice("demo", family, &[(bad, None), (good, None)], "http"),
                nothing_held,
            );
            let Verdict::Take(Admitted::Slice { slice, .. }) = verdict else {
                panic!("{bad}: the slice is taken without it, not {verdict:?}");
            };
            let kept: Vec<&str> = slice
                .endpoints
                .iter()
                .flat_map(|e| e.addresses.iter().map(String::as_str))
                .collect();
            assert_eq!(kept, [good], "{bad}");
            assert_eq!(gate.refusal_counts()[&(id("cluster-b"), reason)], 1, "{bad}");
            assert_eq!(gate.refused_lines(&Key::new("demo", "web")), [line]);
        }
    }

    #[test]
    fn this_clusters_own_objects_pass_unchecked_and_a_deletion_forgets_a_refusal() {
        let mut gate = gate();
        let own = gate.admit(
            &id("cluster-a"),
            slice("kube-system", "IPv4", &[("127.0.0.1", None)], "HTTP"),
            nothing_held,
        );
        assert!(matches!(own, Verdict::Take(_)), "{own:?}");
        let refused = slice("demo", "IPv4", &[("10.161.0.5", Some("a.b"))], "http");
        gate.admit(&id("cluster-b"), refused.clone(), nothing_held);
        assert_eq!(gate.refused_lines(&Key::new("demo", "web")).len(), 1);
        gate.forget(&id("cluster-b"), &refused);
        assert!(gate.refused_lines(&Key::new("demo", "web")).is_empty());
        // The count stays: it counts refusals made, for the metric.
        assert_eq!(gate.refusal_counts()[&(id("cluster-b"), Refusal::Hostname)], 1);
    }

    #[test]
    fn a_record_is_read_once_and_handed_over_parsed() {
        let mut gate = gate();
        let verdict = gate.admit(&id("cluster-b"), record("demo", "http", ""), nothing_held);
        let Verdict::Take(Admitted::Record { key, record, .. }) = verdict else {
            panic!("taken, not {verdict:?}");
        };
        assert_eq!(key, Key::new("demo", "web"));
        assert_eq!(record.ports[0].name.as_deref(), Some("http"));
        // A record that claims another cluster is dropped.
        let Object::Record(mut cm) = self::record("demo", "http", "") else {
            unreachable!()
        };
        let claimed = ExportRecord::new(
            id("cluster-c"),
            "demo",
            "web",
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ExportSpec::default(),
        );
        cm.data = claimed.to_config_map("mcsd-system").data;
        assert!(matches!(
            gate.admit(&id("cluster-b"), Object::Record(cm), nothing_held),
            Verdict::Drop { .. }
        ));
    }
}
