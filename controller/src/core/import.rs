//! The import side, as pure functions: from a [`Merged`] view and the exchange's endpoint records,
//! the objects one importing cluster must hold for one service.
//!
//! ```text
//!  Merged + endpoint records ──▶ desired_derived_service() derived-<hash>  (selector-less), first
//!                            ──▶ desired_import()          ServiceImport  (spec.ips from ↑)
//!                            ──▶ desired_slices()          MCS EndpointSlices, one per source
//!                                                          slice, owned by the ServiceImport
//! ```
//!
//! The import controller applies these with server-side apply under one field manager and
//! compares them with what the cluster holds first, so nothing is written when nothing changed.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{
        core::v1::{Service, ServicePort as K8sPort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::{
        apis::meta::v1::{ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use mcsd_crds::{
    ClusterId,
    mcs::{
        ClusterStatus, EndpointSliceObjects, IPFamily, InternalTrafficPolicy, ServiceImportStatus,
        ServiceImportType, SessionAffinity,
        v1beta1::{ServiceImport, ServiceImportSpec},
    },
    names::{self, derived_service_name},
};
use sha2::{Digest, Sha256};

use crate::{core::exchange::MirroredSlice, core::merge::Merged};

pub use mcsd_crds::names::mcsd::DERIVED_FROM as LABEL_DERIVED_FROM;

/// ServiceImport condition (mcsd's own): True when some cluster's export is left out of the
/// import (a refused peer, or a peer stale past its grace period); the message names each.
pub const CONDITION_CLUSTERS_EXCLUDED: &str = "ClustersExcluded";
/// `ClustersExcluded=False`.
pub const REASON_NONE_EXCLUDED: &str = "NoneExcluded";
/// `ClustersExcluded=True`.
pub const REASON_EXCLUDED: &str = "PeersExcluded";
/// ServiceImport condition (mcsd's own): True when some cluster's export is still included but
/// will be left out unless something is fixed first (its credentials expire and cannot be
/// renewed); the message names each, with when and why.
pub const CONDITION_CLUSTERS_AT_RISK: &str = "ClustersAtRisk";
/// `ClustersAtRisk=False`.
pub const REASON_NONE_AT_RISK: &str = "NoneAtRisk";
/// `ClustersAtRisk=True`.
pub const REASON_AT_RISK: &str = "PeersAtRisk";

/// The ServiceImport for `namespace/name` (spec only; status comes from [`import_status`]).
///
/// `derived_ips` are the derived Service's `clusterIPs` with their families, once it has them;
/// `spec.ips` and `spec.ipFamilies` follow them so that `ips[i]` is of family `ipFamilies[i]`.
pub fn desired_import(
    namespace: &str,
    name: &str,
    merged: &Merged,
    derived: Option<&DerivedState>,
) -> ServiceImport {
    let spec = &merged.spec;
    let mut annotations = spec.annotations.clone();
    annotations.insert(
        names::ANNOTATION_DERIVED_SERVICE.to_string(),
        derived_service_name(namespace, name),
    );
    let (ips, ip_families) = match (spec.type_, derived) {
        (ServiceImportType::ClusterSetIP, Some(d)) if !d.cluster_ips.is_empty() => {
            (d.cluster_ips.clone(), d.ip_families.clone())
        }
        _ => (Vec::new(), spec.ip_families.clone()),
    };
    ServiceImport {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: (!spec.labels.is_empty()).then(|| spec.labels.clone()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: ServiceImportSpec {
            ports: spec.ports.clone(),
            ips,
            type_: spec.type_,
            session_affinity: Some(spec.session_affinity),
            session_affinity_config: spec
                .session_affinity_config
                .clone()
                .filter(|_| spec.session_affinity == SessionAffinity::ClientIP),
            ip_families,
            internal_traffic_policy: Some(spec.internal_traffic_policy),
            traffic_distribution: spec.traffic_distribution.clone(),
        },
        status: None,
    }
}

/// What the importing cluster gave the derived Service: its cluster IPs and their families.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DerivedState {
    /// `spec.clusterIPs` (empty for headless or not yet allocated).
    pub cluster_ips: Vec<String>,
    /// `spec.ipFamilies`, in the same order.
    pub ip_families: Vec<IPFamily>,
}

impl DerivedState {
    /// Reads the state of an observed derived Service.
    pub fn of(service: &Service) -> Self {
        let spec = service.spec.clone().unwrap_or_default();
        let cluster_ips = spec
            .cluster_ips
            .unwrap_or_default()
            .into_iter()
            .filter(|ip| ip != "None")
            .collect();
        let ip_families = spec
            .ip_families
            .unwrap_or_default()
            .iter()
            .filter_map(|f| match f.as_str() {
                "IPv4" => Some(IPFamily::IPv4),
                "IPv6" => Some(IPFamily::IPv6),
                _ => None,
            })
            .collect();
        Self {
            cluster_ips,
            ip_families,
        }
    }
}

/// The status of the ServiceImport: the clusters in precedence order, `Ready`, which clusters are
/// left out (`excluded`) or about to be (`at_risk`), and whether EndpointSlices are published.
/// Each condition keeps its `lastTransitionTime` from `previous`
/// while its status does not change, so an unchanged import yields an identical status.
pub fn import_status(
    merged: &Merged,
    ready: Result<(), (&'static str, String)>,
    excluded: &[(ClusterId, String)],
    at_risk: &[(ClusterId, String)],
    previous: Option<&ServiceImportStatus>,
    now: k8s_openapi::jiff::Timestamp,
) -> ServiceImportStatus {
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let (status, reason, message) = match ready {
        Ok(()) => (
            "True",
            names::conditions::ready::READY,
            "the import is programmed in this cluster".to_string(),
        ),
        Err((reason, message)) => ("False", reason, message),
    };
    ServiceImportStatus {
        clusters: merged
            .clusters
            .iter()
            .map(|c| ClusterStatus {
                cluster: c.to_string(),
            })
            .collect(),
        conditions: vec![
            crate::core::conditions::condition(
                previous_conditions,
                names::conditions::READY,
                status,
                reason,
                message,
                now,
            ),
            EXCLUDED.of(excluded, previous_conditions, now),
            AT_RISK.of(at_risk, previous_conditions, now),
        ],
        endpoint_slice_objects: Some(EndpointSliceObjects::Present),
    }
}

/// What a condition about some clusters says: its type, and its reason and message when no
/// cluster is concerned (False) or some are (True, the message listing each with why).
struct ClustersCondition {
    type_: &'static str,
    none: (&'static str, &'static str),
    some: (&'static str, &'static str),
}

/// `ClustersExcluded`: which clusters' exports are left out of this import, and why (a peer
/// refused for its identity, or stale past its grace period).
const EXCLUDED: ClustersCondition = ClustersCondition {
    type_: CONDITION_CLUSTERS_EXCLUDED,
    none: (REASON_NONE_EXCLUDED, "every exporting cluster is included"),
    some: (REASON_EXCLUDED, "left out"),
};

/// `ClustersAtRisk`: which clusters' exports will be left out unless something is fixed, when
/// and why (credentials that expire and cannot be renewed).
const AT_RISK: ClustersCondition = ClustersCondition {
    type_: CONDITION_CLUSTERS_AT_RISK,
    none: (
        REASON_NONE_AT_RISK,
        "nothing threatens an exporting cluster's inclusion",
    ),
    some: (REASON_AT_RISK, "at risk"),
};

impl ClustersCondition {
    /// The condition for `clusters` (`cluster: why; cluster: why` after the prefix).
    fn of(
        &self,
        clusters: &[(ClusterId, String)],
        previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        now: k8s_openapi::jiff::Timestamp,
    ) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        let (status, reason, message) = if clusters.is_empty() {
            ("False", self.none.0, self.none.1.to_string())
        } else {
            let listed: Vec<String> = clusters
                .iter()
                .map(|(cluster, why)| format!("{cluster}: {why}"))
                .collect();
            (
                "True",
                self.some.0,
                format!("{}: {}", self.some.1, listed.join("; ")),
            )
        };
        crate::core::conditions::condition(previous, self.type_, status, reason, message, now)
    }
}

/// An owner reference to the ServiceImport, so that deleting it collects its EndpointSlices.
pub fn owner(import_name: &str, import_uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/{}", names::MCS_GROUP, names::STORED_VERSION),
        kind: "ServiceImport".to_string(),
        name: import_name.to_string(),
        uid: import_uid.to_string(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }
}

/// The derived Service: selector-less, the import's ports, families, affinity and policies. Its
/// cluster IPs become the ServiceImport's `spec.ips`; headless imports get a headless Service.
pub fn desired_derived_service(namespace: &str, name: &str, merged: &Merged) -> Service {
    let spec = &merged.spec;
    let headless = spec.type_ == ServiceImportType::Headless;
    let families: Vec<String> = spec.ip_families.iter().map(|f| f.as_str().to_string()).collect();
    Service {
        metadata: ObjectMeta {
            name: Some(derived_service_name(namespace, name)),
            namespace: Some(namespace.to_string()),
            labels: Some([(LABEL_DERIVED_FROM.to_string(), name.to_string())].into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            cluster_ip: headless.then(|| "None".to_string()),
            ports: Some(
                spec.ports
                    .iter()
                    .map(|p| K8sPort {
                        name: p.name.clone(),
                        protocol: Some(p.protocol.as_str().to_string()),
                        port: p.port,
                        app_protocol: p.app_protocol.clone(),
                        target_port: Some(IntOrString::Int(p.port)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ip_family_policy: Some(
                if families.len() > 1 {
                    "PreferDualStack"
                } else {
                    "SingleStack"
                }
                .to_string(),
            ),
            ip_families: (!families.is_empty()).then_some(families),
            session_affinity: Some(
                match spec.session_affinity {
                    SessionAffinity::ClientIP if !headless => "ClientIP",
                    _ => "None",
                }
                .to_string(),
            ),
            session_affinity_config: spec
                .session_affinity_config
                .clone()
                .filter(|_| !headless && spec.session_affinity == SessionAffinity::ClientIP),
            internal_traffic_policy: Some(
                match spec.internal_traffic_policy {
                    InternalTrafficPolicy::Local => "Local",
                    InternalTrafficPolicy::Cluster => "Cluster",
                }
                .to_string(),
            ),
            traffic_distribution: spec.traffic_distribution.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

/// The MCS EndpointSlices of `namespace/name` in an importing cluster: one per exchange slice of
/// each contributing cluster, with only the ports that cluster serves (strict routing), labelled
/// for CoreDNS, kube-proxy (through the derived Service) and the conformance suite.
pub fn desired_slices(
    namespace: &str,
    name: &str,
    merged: &Merged,
    records: &BTreeMap<ClusterId, Vec<Arc<MirroredSlice>>>,
    owner: &OwnerReference,
) -> Vec<EndpointSlice> {
    let derived = derived_service_name(namespace, name);
    let headless = merged.spec.type_ == ServiceImportType::Headless;
    let mut out = Vec::new();
    for cluster in &merged.clusters {
        if !merged.contributes(cluster) {
            continue;
        }
        let serving = &merged.serving_ports[cluster];
        for source in records.get(cluster).into_iter().flatten() {
            let source_name = source.metadata.name.as_deref().unwrap_or_default();
            let mut labels = BTreeMap::from([
                (names::LABEL_SERVICE_NAME.to_string(), name.to_string()),
                (names::LABEL_SOURCE_CLUSTER.to_string(), cluster.to_string()),
                (names::LABEL_MANAGED_BY.to_string(), names::MANAGED_BY.to_string()),
                (names::LABEL_KUBERNETES_SERVICE_NAME.to_string(), derived.clone()),
            ]);
            if headless {
                labels.insert(names::LABEL_HEADLESS.to_string(), String::new());
            }
            let ports: Vec<EndpointPort> = source
                .ports
                .iter()
                .flatten()
                .filter(|p| {
                    merged.spec.ports.is_empty()
                        || serving.contains(&p.name.clone().filter(|n| !n.is_empty()))
                })
                .cloned()
                .collect();
            out.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(slice_name(name, cluster, source_name)),
                    namespace: Some(namespace.to_string()),
                    labels: Some(labels),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                address_type: source.address_type.clone(),
                endpoints: source.endpoints.iter().cloned().map(Endpoint::from).collect(),
                ports: Some(ports),
            });
        }
    }
    out
}

/// `<service>-<cluster>-<10 hex of sha256(source slice name)>`, cut to fit a DNS subdomain.
pub fn slice_name(service: &str, cluster: &ClusterId, source_slice: &str) -> String {
    let digest = Sha256::digest(source_slice.as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let mut prefix = format!("{service}-{cluster}");
    prefix.truncate(240);
    format!("{prefix}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::merge::{Export, ExportSpec, merge};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use mcsd_crds::mcs::{Protocol, ServicePort};

    fn id(s: &str) -> ClusterId {
        ClusterId::new(s).unwrap()
    }

    fn port(name: &str, protocol: Protocol, port: i32) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            protocol,
            app_protocol: None,
            port,
        }
    }

    fn export(cluster: &str, secs: i64, ports: Vec<ServicePort>, type_: ServiceImportType) -> Export {
        Export {
            cluster: id(cluster),
            created: k8s_openapi::jiff::Timestamp::from_second(1_790_000_000 + secs).unwrap(),
            spec: ExportSpec {
                type_,
                ports,
                ip_families: vec![IPFamily::IPv4],
                ..Default::default()
            },
        }
    }

    fn record_slice(slice: &str, ports: &[(&str, i32)], addrs: &[&str]) -> Arc<MirroredSlice> {
        Arc::new(MirroredSlice::from(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(slice.into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: addrs
                .iter()
                .map(|a| Endpoint {
                    addresses: vec![a.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        ..Default::default()
                    }),
                    hostname: Some(format!("h-{}", a.replace('.', "-"))),
                    target_ref: Some(Default::default()),
                    ..Default::default()
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }))
    }

    #[test]
    fn the_import_carries_the_derived_service_annotation_and_its_ips_in_family_order() {
        let m = merge(&[export(
            "cluster-a",
            0,
            vec![port("tcp", Protocol::TCP, 42)],
            ServiceImportType::ClusterSetIP,
        )])
        .unwrap();
        let derived = DerivedState {
            cluster_ips: vec!["fd00::5".into(), "10.96.0.5".into()],
            ip_families: vec![IPFamily::IPv6, IPFamily::IPv4],
        };
        let import = desired_import("default", "hello", &m, Some(&derived));
        assert_eq!(
            import.metadata.annotations.as_ref().unwrap()[names::ANNOTATION_DERIVED_SERVICE],
            "derived-k5cuvo1ge4"
        );
        assert_eq!(import.spec.ips, ["fd00::5", "10.96.0.5"]);
        assert_eq!(import.spec.ip_families, [IPFamily::IPv6, IPFamily::IPv4]);
        let before = desired_import("default", "hello", &m, None);
        assert!(
            before.spec.ips.is_empty(),
            "no IPs until the derived Service has them"
        );
    }

    #[test]
    fn a_headless_import_has_no_ips_and_a_headless_derived_service() {
        let m = merge(&[export(
            "cluster-a",
            0,
            vec![port("tcp", Protocol::TCP, 42)],
            ServiceImportType::Headless,
        )])
        .unwrap();
        let derived = DerivedState {
            cluster_ips: vec!["10.96.0.9".into()],
            ip_families: vec![IPFamily::IPv4],
        };
        assert!(
            desired_import("demo", "hello", &m, Some(&derived))
                .spec
                .ips
                .is_empty()
        );
        let svc = desired_derived_service("demo", "hello", &m);
        assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    }

    #[test]
    fn the_derived_service_is_selector_less_unowned_labelled_and_named_by_hash() {
        let m = merge(&[export(
            "cluster-a",
            0,
            vec![port("tcp", Protocol::TCP, 42)],
            ServiceImportType::ClusterSetIP,
        )])
        .unwrap();
        let svc = desired_derived_service("demo", "serve", &m);
        assert_eq!(svc.metadata.name.as_deref(), Some("derived-ovtkn0laet"));
        // No owner: it is written before its import, whose first write then carries its IPs.
        assert!(svc.metadata.owner_references.is_none());
        assert_eq!(svc.metadata.labels.as_ref().unwrap()[LABEL_DERIVED_FROM], "serve");
        let spec = svc.spec.unwrap();
        assert!(spec.selector.is_none());
        assert_eq!(spec.ports.unwrap()[0].port, 42);
        assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
    }

    #[test]
    fn slices_carry_the_mcs_labels_and_only_the_ports_each_cluster_serves() {
        // Conformance #11 / #26: cluster-b's `tcp` lost, so its slice carries no port and is left out.
        let m = merge(&[
            export(
                "cluster-a",
                0,
                vec![port("tcp", Protocol::TCP, 42), port("udp", Protocol::UDP, 42)],
                ServiceImportType::ClusterSetIP,
            ),
            export(
                "cluster-b",
                5,
                vec![port("tcp", Protocol::TCP, 4242), port("udp", Protocol::UDP, 42)],
                ServiceImportType::ClusterSetIP,
            ),
        ])
        .unwrap();
        let records = BTreeMap::from([
            (
                id("cluster-a"),
                vec![record_slice(
                    "demo.hello-aaaaa",
                    &[("tcp", 8042), ("udp", 8042)],
                    &["10.1.0.1"],
                )],
            ),
            (
                id("cluster-b"),
                vec![record_slice(
                    "demo.hello-bbbbb",
                    &[("tcp", 9042), ("udp", 9042)],
                    &["10.2.0.1"],
                )],
            ),
        ]);
        let slices = desired_slices("demo", "hello", &m, &records, &owner("hello", "uid"));
        assert_eq!(slices.len(), 2);
        let a = &slices[0];
        let labels = a.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[names::LABEL_SERVICE_NAME], "hello");
        assert_eq!(labels[names::LABEL_SOURCE_CLUSTER], "cluster-a");
        assert_eq!(labels[names::LABEL_MANAGED_BY], "mcsd.io");
        assert_eq!(
            labels[names::LABEL_KUBERNETES_SERVICE_NAME],
            names::derived_service_name("demo", "hello")
        );
        assert_eq!(a.ports.as_ref().unwrap().len(), 2);
        assert!(
            a.endpoints[0].target_ref.is_none(),
            "pod references mean nothing in another cluster"
        );
        assert_eq!(a.endpoints[0].hostname.as_deref(), Some("h-10-1-0-1"));
        let b = &slices[1];
        let b_ports: Vec<_> = b
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.name.clone().unwrap())
            .collect();
        assert_eq!(
            b_ports,
            ["udp"],
            "cluster-b serves udp only: its tcp port lost the merge"
        );
    }

    #[test]
    fn a_cluster_serving_no_import_port_adds_no_slice() {
        let m = merge(&[
            export(
                "cluster-a",
                0,
                vec![port("tcp", Protocol::TCP, 42)],
                ServiceImportType::ClusterSetIP,
            ),
            export(
                "cluster-b",
                5,
                vec![port("tcp", Protocol::TCP, 43)],
                ServiceImportType::ClusterSetIP,
            ),
        ])
        .unwrap();
        let records = BTreeMap::from([
            (
                id("cluster-a"),
                vec![record_slice("demo.hello-aaaaa", &[("tcp", 42)], &["10.1.0.1"])],
            ),
            (
                id("cluster-b"),
                vec![record_slice("demo.hello-bbbbb", &[("tcp", 43)], &["10.2.0.1"])],
            ),
        ]);
        let slices = desired_slices("demo", "hello", &m, &records, &owner("hello", "uid"));
        let sources: Vec<_> = slices
            .iter()
            .map(|s| s.metadata.labels.as_ref().unwrap()[names::LABEL_SOURCE_CLUSTER].clone())
            .collect();
        assert_eq!(sources, ["cluster-a"]);
    }

    #[test]
    fn headless_slices_are_marked_for_kube_proxy_to_skip() {
        let m = merge(&[export("cluster-a", 0, vec![], ServiceImportType::Headless)]).unwrap();
        let records = BTreeMap::from([(
            id("cluster-a"),
            vec![record_slice("demo.db-x", &[], &["10.1.0.7"])],
        )]);
        let slices = desired_slices("demo", "db", &m, &records, &owner("db", "uid"));
        assert_eq!(
            slices.len(),
            1,
            "a headless import without ports still has its endpoints"
        );
        assert!(
            slices[0]
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key(names::LABEL_HEADLESS)
        );
    }

    #[test]
    fn the_ready_condition_keeps_its_transition_time_while_unchanged() {
        let m = merge(&[export("cluster-a", 0, vec![], ServiceImportType::Headless)]).unwrap();
        let t0 = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let t1 = k8s_openapi::jiff::Timestamp::from_second(1_800_000_100).unwrap();
        let first = import_status(&m, Ok(()), &[], &[], None, t0);
        let again = import_status(&m, Ok(()), &[], &[], Some(&first), t1);
        assert_eq!(again, first, "nothing changed, nothing to write");
        let failed = import_status(&m, Err(("Pending", "waiting".into())), &[], &[], Some(&first), t1);
        assert_eq!(failed.conditions[0].last_transition_time.0, t1);
        assert_eq!(failed.conditions[0].status, "False");
        assert_eq!(failed.conditions[1].status, "False", "nothing excluded");
        let stale = import_status(
            &m,
            Ok(()),
            &[(id("cluster-b"), "unreachable for 5m0s".into())],
            &[],
            Some(&first),
            t1,
        );
        assert_eq!(stale.conditions[1].type_, CONDITION_CLUSTERS_EXCLUDED);
        assert_eq!(stale.conditions[1].status, "True");
        assert_eq!(
            stale.conditions[1].message,
            "left out: cluster-b: unreachable for 5m0s"
        );
        assert_eq!(stale.conditions[2].status, "False", "nothing at risk");
        let expiring = import_status(
            &m,
            Ok(()),
            &[],
            &[(
                id("cluster-b"),
                "its credentials expire at 2026-11-29T12:00:00Z".into(),
            )],
            Some(&first),
            t1,
        );
        assert_eq!(expiring.conditions[1].status, "False", "nothing left out yet");
        assert_eq!(expiring.conditions[2].type_, CONDITION_CLUSTERS_AT_RISK);
        assert_eq!(expiring.conditions[2].status, "True");
        assert_eq!(expiring.conditions[2].last_transition_time.0, t1);
        assert_eq!(
            expiring.conditions[2].message,
            "at risk: cluster-b: its credentials expire at 2026-11-29T12:00:00Z"
        );
    }

    #[test]
    fn slice_names_are_stable_and_fit() {
        let a = slice_name("hello", &id("cluster-a"), "demo.hello-x7k2p");
        assert_eq!(a, slice_name("hello", &id("cluster-a"), "demo.hello-x7k2p"));
        assert_ne!(a, slice_name("hello", &id("cluster-a"), "demo.hello-zzzzz"));
        assert!(a.starts_with("hello-cluster-a-"));
        let long = slice_name(&"s".repeat(63), &id(&"c".repeat(63)), "x");
        assert!(long.len() <= 253);
    }
}
