//! The merge: every cluster's export of one service in, the one import view every cluster builds.
//!
//! ```text
//!  Export(cluster-a, created 10:00) ─┐
//!  Export(cluster-c, created 10:00) ─┼─▶ merge() ─▶ Merged { spec, clusters (precedence order),
//!  Export(cluster-b, created 09:59) ─┘                       ports each cluster serves, conflicts }
//! ```
//!
//! Pure and deterministic: the result depends only on the set of exports, never on the order
//! they arrived in, so every cluster of the ClusterSet computes the same import.
//!
//! Rules (KEP-1645 "Constraints and Conflict Resolution", decisions in `docs/decisions.md`):
//! * Precedence: oldest ServiceExport `creationTimestamp` first, ties broken by cluster id.
//! * Ports: the union, merged by name first and then by (protocol, port), the older definition
//!   winning; `PortConflict` when any export's ports differ from the union. A cluster serves only
//!   the ports whose definition it shares with the union (strict routing).
//! * Type, session affinity (+config), internal traffic policy (nil = `Cluster`), traffic
//!   distribution, exported labels and annotations: the oldest export's, with a conflict reason
//!   when any export differs.
//! * IP families: the oldest export's families, narrowed by every export that shares at least one
//!   of them; an export sharing none cannot be reached over the import's families and raises
//!   `IPFamilyConflict`.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::SessionAffinityConfig, jiff::Timestamp};
use mcsd_crds::{
    ClusterId,
    mcs::{IPFamily, InternalTrafficPolicy, Protocol, ServiceImportType, ServicePort, SessionAffinity},
    names::conditions::conflict,
};

/// The properties of one exported Service that take part in the import.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportSpec {
    /// `Headless` when the Service has `clusterIP: None`.
    pub type_: ServiceImportType,
    /// The Service's ports (name, protocol, port, appProtocol).
    pub ports: Vec<ServicePort>,
    /// Session affinity (`None` when unset).
    pub session_affinity: SessionAffinity,
    /// Session affinity configuration.
    pub session_affinity_config: Option<SessionAffinityConfig>,
    /// The Service's IP families, in order.
    pub ip_families: Vec<IPFamily>,
    /// Internal traffic policy (`Cluster` when unset).
    pub internal_traffic_policy: InternalTrafficPolicy,
    /// Traffic distribution.
    pub traffic_distribution: Option<String>,
    /// `spec.exportedLabels` of the ServiceExport.
    pub labels: BTreeMap<String, String>,
    /// `spec.exportedAnnotations` of the ServiceExport.
    pub annotations: BTreeMap<String, String>,
}

/// One cluster's export of one service.
#[derive(Clone, Debug, PartialEq)]
pub struct Export {
    /// The exporting cluster.
    pub cluster: ClusterId,
    /// The ServiceExport's `creationTimestamp`: the precedence key.
    pub created: Timestamp,
    /// What the cluster exports.
    pub spec: ExportSpec,
}

/// A conflict between the exports of one service: set as `Conflict=True` on every export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// One of the reasons in [`mcsd_crds::names::conditions::conflict`].
    pub reason: &'static str,
    /// What differs, whose value won and who disagrees.
    pub message: String,
}

/// The import every cluster builds from the exports of one service.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    /// The merged properties: ports are the union, everything else the winner's.
    pub spec: ExportSpec,
    /// The exporting clusters, in precedence order (the winner first).
    pub clusters: Vec<ClusterId>,
    /// For each exporting cluster, the names of the ports (of `spec.ports`) its endpoints serve:
    /// the ports whose definition it shares with the union. A cluster that serves none of the
    /// import's ports contributes no endpoints (unless the import has no ports at all).
    pub serving_ports: BTreeMap<ClusterId, Vec<Option<String>>>,
    /// The conflicts, in a fixed order; empty when every export agrees.
    pub conflicts: Vec<Conflict>,
}

impl Merged {
    /// The `Conflict` condition's reason: the reasons joined with commas, or `NoConflicts`.
    pub fn conflict_reason(&self) -> String {
        if self.conflicts.is_empty() {
            return conflict::NO_CONFLICTS.to_string();
        }
        self.conflicts
            .iter()
            .map(|c| c.reason)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `Conflict` condition's message.
    pub fn conflict_message(&self) -> String {
        if self.conflicts.is_empty() {
            return format!(
                "{} cluster(s) export this service and agree on every property",
                self.clusters.len()
            );
        }
        self.conflicts
            .iter()
            .map(|c| c.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether `cluster` contributes endpoints to the import.
    pub fn contributes(&self, cluster: &ClusterId) -> bool {
        match self.serving_ports.get(cluster) {
            None => false,
            Some(ports) => self.spec.ports.is_empty() || !ports.is_empty(),
        }
    }
}

/// Merges the exports of one service. Returns `None` when there are none.
pub fn merge(exports: &[Export]) -> Option<Merged> {
    let mut ordered: Vec<&Export> = exports.iter().collect();
    ordered.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.cluster.cmp(&b.cluster)));
    ordered.dedup_by(|b, a| a.cluster == b.cluster);
    let winner = *ordered.first()?;
    let total = ordered.len();
    let mut conflicts = Vec::new();

    // Ports: union by name, then by (protocol, port); the older definition wins.
    let mut ports: Vec<ServicePort> = Vec::new();
    for export in &ordered {
        for port in &export.spec.ports {
            let name_taken = ports.iter().any(|p| p.name == port.name && key(p) != key(port));
            let key_taken = ports.iter().any(|p| key(p) == key(port));
            if !name_taken && !key_taken {
                ports.push(port.clone());
            }
        }
    }
    let same_port_set = |e: &Export| {
        let mut mine: Vec<_> = e.spec.ports.iter().collect();
        let mut union: Vec<_> = ports.iter().collect();
        mine.sort_by_key(|p| key(p));
        union.sort_by_key(|p| key(p));
        mine == union
    };
    let port_dissent: Vec<&ClusterId> = ordered
        .iter()
        .filter(|e| !same_port_set(e))
        .map(|e| &e.cluster)
        .collect();
    if !port_dissent.is_empty() {
        conflicts.push(Conflict {
            reason: conflict::PORT,
            message: format!(
                "ports differ: the import exposes the union, {}, with the definition of the oldest export where two clash; {}/{total} clusters export other ports ({})",
                describe_ports(&ports),
                port_dissent.len(),
                join(&port_dissent)
            ),
        });
    }
    let serving_ports = ordered
        .iter()
        .map(|e| {
            let serving = e
                .spec
                .ports
                .iter()
                .filter(|p| ports.contains(p))
                .map(|p| p.name.clone())
                .collect();
            (e.cluster.clone(), serving)
        })
        .collect();

    // IP families: narrow the winner's by every export that shares at least one.
    let mut families = winner.spec.ip_families.clone();
    let mut unreachable = Vec::new();
    for export in ordered.iter().skip(1) {
        if export.spec.ip_families.is_empty() {
            continue;
        }
        let shared: Vec<IPFamily> = families
            .iter()
            .copied()
            .filter(|f| export.spec.ip_families.contains(f))
            .collect();
        if shared.is_empty() && !families.is_empty() {
            unreachable.push(&export.cluster);
        } else if !shared.is_empty() {
            families = shared;
        }
    }
    if !unreachable.is_empty() {
        conflicts.push(Conflict {
            reason: conflict::IP_FAMILY,
            message: format!(
                "IP families differ: the import uses {}; {}/{total} clusters share none of them and cannot be reached through it ({})",
                families.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(","),
                unreachable.len(),
                join(&unreachable)
            ),
        });
    }

    // Everything else: the winner's value, a conflict when anyone differs.
    let mut precedence = |reason: &'static str, what: &str, differs: &dyn Fn(&ExportSpec) -> bool| {
        let dissent: Vec<&ClusterId> = ordered
            .iter()
            .filter(|e| differs(&e.spec))
            .map(|e| &e.cluster)
            .collect();
        if !dissent.is_empty() {
            conflicts.push(Conflict {
                reason,
                message: format!(
                    "{what} differs: using the value of the oldest export, in {:?}; {}/{total} clusters disagree ({})",
                    winner.cluster.as_str(),
                    dissent.len(),
                    join(&dissent)
                ),
            });
        }
    };
    let w = &winner.spec;
    precedence(conflict::TYPE, "type", &|s| s.type_ != w.type_);
    precedence(conflict::SESSION_AFFINITY, "sessionAffinity", &|s| {
        s.session_affinity != w.session_affinity
    });
    precedence(conflict::SESSION_AFFINITY_CONFIG, "sessionAffinityConfig", &|s| {
        s.session_affinity_config != w.session_affinity_config
    });
    precedence(conflict::INTERNAL_TRAFFIC_POLICY, "internalTrafficPolicy", &|s| {
        s.internal_traffic_policy != w.internal_traffic_policy
    });
    precedence(conflict::TRAFFIC_DISTRIBUTION, "trafficDistribution", &|s| {
        s.traffic_distribution != w.traffic_distribution
    });
    precedence(conflict::ANNOTATIONS, "exportedAnnotations", &|s| {
        s.annotations != w.annotations
    });
    precedence(conflict::LABELS, "exportedLabels", &|s| s.labels != w.labels);

    Some(Merged {
        spec: ExportSpec {
            ports,
            ip_families: families,
            ..winner.spec.clone()
        },
        clusters: ordered.iter().map(|e| e.cluster.clone()).collect(),
        serving_ports,
        conflicts,
    })
}

fn key(p: &ServicePort) -> (Protocol, i32) {
    (p.protocol, p.port)
}

fn describe_ports(ports: &[ServicePort]) -> String {
    let parts: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}{}/{}",
                p.name.as_deref().map(|n| format!("{n}=")).unwrap_or_default(),
                p.port,
                p.protocol.as_str()
            )
        })
        .collect();
    format!("[{}]", parts.join(" "))
}

fn join(clusters: &[&ClusterId]) -> String {
    clusters.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ClientIPConfig;

    fn id(s: &str) -> ClusterId {
        ClusterId::new(s).unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + secs).unwrap()
    }

    fn port(name: &str, protocol: Protocol, port: i32) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            protocol,
            app_protocol: None,
            port,
        }
    }

    fn hello_ports() -> Vec<ServicePort> {
        vec![port("tcp", Protocol::TCP, 42), port("udp", Protocol::UDP, 42)]
    }

    fn mk_export(cluster: &str, created: i64, spec: ExportSpec) -> Export {
        Export {
            cluster: id(cluster),
            created: at(created),
            spec,
        }
    }

    fn hello() -> ExportSpec {
        ExportSpec {
            ports: hello_ports(),
            ip_families: vec![IPFamily::IPv4],
            ..Default::default()
        }
    }

    fn reasons(m: &Merged) -> Vec<&'static str> {
        m.conflicts.iter().map(|c| c.reason).collect()
    }

    #[test]
    fn no_exports_no_import() {
        assert_eq!(merge(&[]), None);
    }

    #[test]
    fn a_single_export_is_imported_as_is_without_conflict() {
        let spec = ExportSpec {
            session_affinity: SessionAffinity::ClientIP,
            session_affinity_config: Some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(10),
                }),
            }),
            traffic_distribution: Some("PreferClose".into()),
            labels: [("dummy-label".to_string(), "true".to_string())].into(),
            ..hello()
        };
        let m = merge(&[mk_export("cluster-a", 0, spec.clone())]).unwrap();
        assert_eq!(m.spec, spec);
        assert_eq!(m.clusters, [id("cluster-a")]);
        assert!(m.conflicts.is_empty());
        assert_eq!(m.conflict_reason(), "NoConflicts");
        assert!(m.contributes(&id("cluster-a")));
    }

    #[test]
    fn port_union_with_conflict_and_each_cluster_serves_its_own_ports() {
        // Conformance #10.
        let b = ExportSpec {
            ports: vec![port("tcp", Protocol::TCP, 42), port("stcp", Protocol::SCTP, 142)],
            ..hello()
        };
        let m = merge(&[mk_export("cluster-a", 0, hello()), mk_export("cluster-b", 2, b)]).unwrap();
        let got: Vec<_> = m
            .spec
            .ports
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.port))
            .collect();
        assert_eq!(
            got,
            [("tcp".into(), 42), ("udp".into(), 42), ("stcp".into(), 142)]
        );
        assert_eq!(reasons(&m), [conflict::PORT]);
        assert_eq!(
            m.serving_ports[&id("cluster-a")],
            [Some("tcp".into()), Some("udp".into())]
        );
        assert_eq!(
            m.serving_ports[&id("cluster-b")],
            [Some("tcp".into()), Some("stcp".into())]
        );
    }

    #[test]
    fn a_port_name_clash_is_won_by_the_oldest_export_and_the_loser_serves_none_of_it() {
        // Conformance #11: cluster-b's tcp is 43, cluster-a's (older) is 42.
        let b = ExportSpec {
            ports: vec![port("tcp", Protocol::TCP, 43)],
            ..hello()
        };
        let m = merge(&[mk_export("cluster-b", 5, b), mk_export("cluster-a", 0, hello())]).unwrap();
        assert_eq!(m.spec.ports, hello_ports());
        assert_eq!(reasons(&m), [conflict::PORT]);
        assert!(m.serving_ports[&id("cluster-b")].is_empty());
        assert!(
            !m.contributes(&id("cluster-b")),
            "a cluster that serves no import port adds no endpoints"
        );
        assert!(
            m.conflict_message().contains("cluster-b"),
            "{}",
            m.conflict_message()
        );
    }

    #[test]
    fn an_app_protocol_difference_on_the_same_port_is_a_port_conflict() {
        let mut b = hello();
        b.ports[0].app_protocol = Some("http".into());
        let m = merge(&[mk_export("cluster-a", 0, hello()), mk_export("cluster-b", 1, b)]).unwrap();
        assert_eq!(m.spec.ports, hello_ports());
        assert_eq!(reasons(&m), [conflict::PORT]);
        assert_eq!(m.serving_ports[&id("cluster-b")], [Some("udp".into())]);
    }

    #[test]
    fn headlessness_conflict_keeps_the_oldest_type_and_flags_it() {
        // Conformance #15.
        let b = ExportSpec {
            type_: ServiceImportType::Headless,
            ..hello()
        };
        let m = merge(&[mk_export("cluster-a", 0, hello()), mk_export("cluster-b", 2, b)]).unwrap();
        assert_eq!(m.spec.type_, ServiceImportType::ClusterSetIP);
        assert_eq!(reasons(&m), [conflict::TYPE]);
        assert_eq!(m.conflict_reason(), "TypeConflict");
    }

    #[test]
    fn labels_and_annotations_come_from_the_oldest_export_only() {
        // Conformance #3.
        let a = ExportSpec {
            labels: [("dummy-label".to_string(), "true".to_string())].into(),
            annotations: [("dummy-annotation".to_string(), "true".to_string())].into(),
            ..hello()
        };
        let b = ExportSpec {
            labels: [("dummy-label2".to_string(), "true".to_string())].into(),
            annotations: [("dummy-annotation2".to_string(), "true".to_string())].into(),
            ..hello()
        };
        let m = merge(&[mk_export("cluster-b", 3, b), mk_export("cluster-a", 1, a.clone())]).unwrap();
        assert_eq!(m.spec.labels, a.labels);
        assert_eq!(m.spec.annotations, a.annotations);
        assert_eq!(m.conflict_reason(), "AnnotationsConflict,LabelsConflict");
    }

    #[test]
    fn equal_timestamps_fall_back_to_the_cluster_id() {
        let b = ExportSpec {
            session_affinity: SessionAffinity::ClientIP,
            ..hello()
        };
        let m = merge(&[mk_export("cluster-b", 0, b), mk_export("cluster-a", 0, hello())]).unwrap();
        assert_eq!(m.clusters, [id("cluster-a"), id("cluster-b")]);
        assert_eq!(m.spec.session_affinity, SessionAffinity::None);
        assert_eq!(reasons(&m), [conflict::SESSION_AFFINITY]);
    }

    #[test]
    fn three_exporters_rank_by_creation_time() {
        let c = ExportSpec {
            traffic_distribution: Some("PreferClose".into()),
            ..hello()
        };
        let m = merge(&[
            mk_export("cluster-a", 20, hello()),
            mk_export("cluster-c", 5, c),
            mk_export("cluster-b", 10, hello()),
        ])
        .unwrap();
        assert_eq!(m.clusters, [id("cluster-c"), id("cluster-b"), id("cluster-a")]);
        assert_eq!(m.spec.traffic_distribution.as_deref(), Some("PreferClose"));
        let msg = m.conflict_message();
        assert!(
            msg.contains("2/3 clusters disagree (cluster-b, cluster-a)"),
            "{msg}"
        );
    }

    #[test]
    fn ip_families_narrow_to_what_everyone_shares() {
        let dual = ExportSpec {
            ip_families: vec![IPFamily::IPv6, IPFamily::IPv4],
            ..hello()
        };
        let m = merge(&[
            mk_export("cluster-a", 0, dual),
            mk_export("cluster-b", 1, hello()),
        ])
        .unwrap();
        assert_eq!(m.spec.ip_families, [IPFamily::IPv4]);
        assert!(
            m.conflicts.is_empty(),
            "every backend is reachable over IPv4: {:?}",
            m.conflicts
        );
    }

    #[test]
    fn an_export_sharing_no_family_is_an_ip_family_conflict() {
        let v6 = ExportSpec {
            ip_families: vec![IPFamily::IPv6],
            ..hello()
        };
        let m = merge(&[mk_export("cluster-a", 0, hello()), mk_export("cluster-b", 1, v6)]).unwrap();
        assert_eq!(m.spec.ip_families, [IPFamily::IPv4]);
        assert_eq!(reasons(&m), [conflict::IP_FAMILY]);
    }

    #[test]
    fn internal_traffic_policy_unset_equals_cluster() {
        let explicit = ExportSpec {
            internal_traffic_policy: InternalTrafficPolicy::Cluster,
            ..hello()
        };
        let m = merge(&[
            mk_export("cluster-a", 0, hello()),
            mk_export("cluster-b", 1, explicit),
        ])
        .unwrap();
        assert!(m.conflicts.is_empty());
        let local = ExportSpec {
            internal_traffic_policy: InternalTrafficPolicy::Local,
            ..hello()
        };
        let m = merge(&[
            mk_export("cluster-a", 0, hello()),
            mk_export("cluster-b", 1, local),
        ])
        .unwrap();
        assert_eq!(reasons(&m), [conflict::INTERNAL_TRAFFIC_POLICY]);
    }

    /// A small deterministic generator, so the property test needs no extra dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
            xs[(self.next() % xs.len() as u64) as usize].clone()
        }
    }

    fn random_export(rng: &mut Rng, cluster: &str) -> Export {
        let names = ["tcp", "udp", "http", "grpc"];
        let protocols = [Protocol::TCP, Protocol::UDP, Protocol::SCTP];
        let n = rng.next() % 4;
        let mut ports = Vec::new();
        for _ in 0..n {
            let p = ServicePort {
                name: Some(rng.pick(&names).to_string()),
                protocol: rng.pick(&protocols),
                app_protocol: rng.pick(&[None, Some("http".to_string())]),
                port: rng.pick(&[42, 43, 80, 142]),
            };
            if !ports
                .iter()
                .any(|q: &ServicePort| q.name == p.name || (q.port, q.protocol) == (p.port, p.protocol))
            {
                ports.push(p);
            }
        }
        let families = rng.pick(&[
            vec![IPFamily::IPv4],
            vec![IPFamily::IPv6],
            vec![IPFamily::IPv4, IPFamily::IPv6],
            vec![IPFamily::IPv6, IPFamily::IPv4],
        ]);
        Export {
            cluster: id(cluster),
            created: at((rng.next() % 3) as i64),
            spec: ExportSpec {
                type_: rng.pick(&[ServiceImportType::ClusterSetIP, ServiceImportType::Headless]),
                ports,
                session_affinity: rng.pick(&[SessionAffinity::None, SessionAffinity::ClientIP]),
                ip_families: families,
                internal_traffic_policy: rng
                    .pick(&[InternalTrafficPolicy::Cluster, InternalTrafficPolicy::Local]),
                traffic_distribution: rng.pick(&[None, Some("PreferClose".to_string())]),
                labels: if rng.next().is_multiple_of(2) {
                    BTreeMap::new()
                } else {
                    [("a".to_string(), "b".to_string())].into()
                },
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_result_does_not_depend_on_the_order_exports_arrive_in() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let clusters = ["cluster-a", "cluster-b", "cluster-c", "cluster-d", "cluster-e"];
        for _ in 0..500 {
            let n = 1 + (rng.next() % clusters.len() as u64) as usize;
            let exports: Vec<Export> = clusters[..n].iter().map(|c| random_export(&mut rng, c)).collect();
            let expected = merge(&exports).unwrap();
            for _ in 0..8 {
                let mut shuffled = exports.clone();
                for i in (1..shuffled.len()).rev() {
                    let j = (rng.next() % (i as u64 + 1)) as usize;
                    shuffled.swap(i, j);
                }
                assert_eq!(merge(&shuffled).unwrap(), expected);
            }
            // Invariants every cluster relies on.
            let mut names: Vec<_> = expected.spec.ports.iter().map(|p| p.name.clone()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), expected.spec.ports.len(), "port names are unique");
            let mut keys: Vec<_> = expected.spec.ports.iter().map(key).collect();
            keys.sort();
            keys.dedup();
            assert_eq!(
                keys.len(),
                expected.spec.ports.len(),
                "(protocol, port) pairs are unique"
            );
            if exports.iter().all(|e| e.spec == exports[0].spec) {
                assert!(expected.conflicts.is_empty(), "identical exports never conflict");
            }
        }
    }
}
