//! What one cluster exports: a ServiceExport and its Service, judged and reduced to an
//! [`ExportSpec`]. Pure; the export controller feeds it from its watches.

use k8s_openapi::api::core::v1::Service;
use mcsd_crds::{
    mcs::{
        IPFamily, InternalTrafficPolicy, Protocol, ServiceImportType, ServicePort, SessionAffinity,
        v1beta1::ServiceExport,
    },
    names::conditions::valid,
};

use crate::core::merge::ExportSpec;

/// Why a ServiceExport exports nothing: the `Valid=False` condition's reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// `NoService`, `InvalidServiceType` or `NamespaceDenied`.
    pub reason: &'static str,
    /// What a user should know, in one sentence.
    pub message: String,
}

/// Judges a ServiceExport against the Service of the same namespace and name (if any).
///
/// * No Service: `Valid=False/NoService` (also when the Service was deleted after the export).
/// * `ExternalName`: `Valid=False/InvalidServiceType`.
/// * `ClusterIP`, `NodePort`, `LoadBalancer`: exported as `ClusterSetIP`; `clusterIP: None`: `Headless`.
///
/// Only `spec.exportedLabels` and `spec.exportedAnnotations` are exported, never the Service's or
/// the ServiceExport's own metadata.
pub fn evaluate(export: &ServiceExport, service: Option<&Service>) -> Result<ExportSpec, Invalid> {
    let name = export.metadata.name.as_deref().unwrap_or_default();
    let namespace = export.metadata.namespace.as_deref().unwrap_or_default();
    let Some(service) = service else {
        return Err(Invalid {
            reason: valid::NO_SERVICE,
            message: format!("no Service {namespace}/{name} exists; create it, or delete this ServiceExport"),
        });
    };
    let spec = service.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(Invalid {
            reason: valid::INVALID_SERVICE_TYPE,
            message: format!("Service {namespace}/{name} is of type ExternalName, which cannot be exported"),
        });
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| ServicePort {
            name: p.name.clone().filter(|n| !n.is_empty()),
            protocol: p
                .protocol
                .as_deref()
                .and_then(Protocol::parse)
                .unwrap_or_default(),
            app_protocol: p.app_protocol.clone(),
            port: p.port,
        })
        .collect();
    let ip_families = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(IPFamily::IPv4),
            "IPv6" => Some(IPFamily::IPv6),
            _ => None,
        })
        .collect();
    Ok(ExportSpec {
        type_: if headless {
            ServiceImportType::Headless
        } else {
            ServiceImportType::ClusterSetIP
        },
        ports,
        session_affinity: match spec.session_affinity.as_deref() {
            Some("ClientIP") => SessionAffinity::ClientIP,
            _ => SessionAffinity::None,
        },
        session_affinity_config: spec
            .session_affinity_config
            .filter(|_| spec.session_affinity.as_deref() == Some("ClientIP")),
        ip_families,
        internal_traffic_policy: match spec.internal_traffic_policy.as_deref() {
            Some("Local") => InternalTrafficPolicy::Local,
            _ => InternalTrafficPolicy::Cluster,
        },
        traffic_distribution: spec.traffic_distribution,
        labels: export.spec.exported_labels.clone().unwrap_or_default(),
        annotations: export.spec.exported_annotations.clone().unwrap_or_default(),
    })
}

/// Where an export stands, as its controller sees it.
#[derive(Clone, Debug)]
pub enum Progress<'a> {
    /// The export is invalid: nothing is published.
    Invalid(&'a Invalid),
    /// The record is published; `merged` is the ClusterSet's view of the service, once known.
    Published(Option<&'a crate::core::merge::Merged>),
}

/// The `Valid`, `Ready` and `Conflict` conditions of a ServiceExport.
///
/// mcsd is a pull model: `Ready=True` (reason `Ready`) means the export is published for peers
/// to pull. `Conflict` is present once the ClusterSet view is known, on every exporting cluster.
pub fn export_conditions(
    progress: Progress<'_>,
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    now: k8s_openapi::jiff::Timestamp,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    use crate::core::conditions::condition;
    use mcsd_crds::names::conditions::{CONFLICT, READY, VALID, ready};
    let valid_true = || {
        condition(
            previous,
            VALID,
            "True",
            valid::VALID,
            "the Service can be exported".into(),
            now,
        )
    };
    match progress {
        Progress::Invalid(invalid) => vec![
            condition(
                previous,
                VALID,
                "False",
                invalid.reason,
                invalid.message.clone(),
                now,
            ),
            condition(
                previous,
                READY,
                "False",
                ready::PENDING,
                "the ServiceExport is not valid".into(),
                now,
            ),
        ],
        Progress::Published(merged) => {
            let mut out = vec![
                valid_true(),
                condition(
                    previous,
                    READY,
                    "True",
                    ready::READY,
                    "the export is published for the ClusterSet".into(),
                    now,
                ),
            ];
            if let Some(m) = merged {
                let status = if m.conflicts.is_empty() { "False" } else { "True" };
                out.push(condition(
                    previous,
                    CONFLICT,
                    status,
                    &m.conflict_reason(),
                    m.conflict_message(),
                    now,
                ));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::core::v1::{ClientIPConfig, ServicePort as K8sPort, ServiceSpec, SessionAffinityConfig},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };
    use mcsd_crds::mcs::v1beta1::ServiceExportSpec;

    fn mk_export(ns: &str, name: &str) -> ServiceExport {
        ServiceExport {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some([("dummy-svcexport".to_string(), "dummy".to_string())].into()),
                ..Default::default()
            },
            spec: ServiceExportSpec::default(),
            status: None,
        }
    }

    fn mk_service(spec: ServiceSpec) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("hello".into()),
                namespace: Some("demo".into()),
                labels: Some([("dummy-svc".to_string(), "dummy".to_string())].into()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn hello_spec() -> ServiceSpec {
        ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some("10.96.0.10".into()),
            ports: Some(vec![
                K8sPort {
                    name: Some("tcp".into()),
                    port: 42,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
                K8sPort {
                    name: Some("udp".into()),
                    port: 42,
                    protocol: Some("UDP".into()),
                    ..Default::default()
                },
            ]),
            session_affinity: Some("ClientIP".into()),
            session_affinity_config: Some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(10),
                }),
            }),
            ip_families: Some(vec!["IPv4".into()]),
            internal_traffic_policy: Some("Cluster".into()),
            traffic_distribution: Some("PreferClose".into()),
            ..Default::default()
        }
    }

    #[test]
    fn an_export_without_its_service_is_invalid_no_service() {
        let err = evaluate(&mk_export("demo", "hello"), None).unwrap_err();
        assert_eq!(err.reason, "NoService");
        assert!(err.message.contains("demo/hello"), "{}", err.message);
    }

    #[test]
    fn an_external_name_service_is_invalid_service_type() {
        let svc = mk_service(ServiceSpec {
            type_: Some("ExternalName".into()),
            ..Default::default()
        });
        assert_eq!(
            evaluate(&mk_export("demo", "hello"), Some(&svc))
                .unwrap_err()
                .reason,
            "InvalidServiceType"
        );
    }

    #[test]
    fn a_cluster_ip_service_exports_as_cluster_set_ip_with_its_properties() {
        let spec = evaluate(&mk_export("demo", "hello"), Some(&mk_service(hello_spec()))).unwrap();
        assert_eq!(spec.type_, ServiceImportType::ClusterSetIP);
        assert_eq!(spec.ports.len(), 2);
        assert_eq!(spec.ports[1].protocol, Protocol::UDP);
        assert_eq!(spec.session_affinity, SessionAffinity::ClientIP);
        assert_eq!(
            spec.session_affinity_config
                .unwrap()
                .client_ip
                .unwrap()
                .timeout_seconds,
            Some(10)
        );
        assert_eq!(spec.traffic_distribution.as_deref(), Some("PreferClose"));
        assert_eq!(spec.ip_families, [IPFamily::IPv4]);
    }

    #[test]
    fn node_port_and_load_balancer_export_as_cluster_set_ip() {
        for t in ["NodePort", "LoadBalancer"] {
            let svc = mk_service(ServiceSpec {
                type_: Some(t.into()),
                ..hello_spec()
            });
            assert_eq!(
                evaluate(&mk_export("demo", "hello"), Some(&svc)).unwrap().type_,
                ServiceImportType::ClusterSetIP
            );
        }
    }

    #[test]
    fn a_headless_service_exports_as_headless() {
        let svc = mk_service(ServiceSpec {
            cluster_ip: Some("None".into()),
            ..hello_spec()
        });
        assert_eq!(
            evaluate(&mk_export("demo", "hello"), Some(&svc)).unwrap().type_,
            ServiceImportType::Headless
        );
    }

    #[test]
    fn an_invalid_export_says_why_and_is_not_ready() {
        let invalid = evaluate(&mk_export("demo", "hello"), None).unwrap_err();
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let conds = export_conditions(Progress::Invalid(&invalid), &[], now);
        let got: Vec<_> = conds
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [("Valid", "False", "NoService"), ("Ready", "False", "Pending")]
        );
    }

    #[test]
    fn a_published_export_in_conflict_says_so_with_joined_reasons() {
        use crate::core::merge::{Export, merge};
        let spec = evaluate(&mk_export("demo", "hello"), Some(&mk_service(hello_spec()))).unwrap();
        let other = ExportSpec {
            type_: ServiceImportType::Headless,
            session_affinity: SessionAffinity::None,
            session_affinity_config: None,
            ..spec.clone()
        };
        let at = |s: i64| k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + s).unwrap();
        let m = merge(&[
            Export {
                cluster: "cluster-a".parse().unwrap(),
                created: at(0),
                spec,
            },
            Export {
                cluster: "cluster-b".parse().unwrap(),
                created: at(1),
                spec: other,
            },
        ])
        .unwrap();
        let conds = export_conditions(Progress::Published(Some(&m)), &[], at(5));
        let conflict = conds.iter().find(|c| c.type_ == "Conflict").unwrap();
        assert_eq!(conflict.status, "True");
        assert_eq!(
            conflict.reason,
            "TypeConflict,SessionAffinityConflict,SessionAffinityConfigConflict"
        );
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Ready"));
    }

    #[test]
    fn only_exported_labels_and_annotations_are_exported() {
        let mut export = mk_export("demo", "hello");
        export.spec.exported_labels = Some([("dummy-label".to_string(), "true".to_string())].into());
        export.spec.exported_annotations =
            Some([("dummy-annotation".to_string(), "true".to_string())].into());
        let spec = evaluate(&export, Some(&mk_service(hello_spec()))).unwrap();
        assert_eq!(spec.labels.keys().collect::<Vec<_>>(), ["dummy-label"]);
        assert_eq!(spec.annotations.keys().collect::<Vec<_>>(), ["dummy-annotation"]);
    }
}
