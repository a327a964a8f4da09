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

use crate::merge::ExportSpec;

/// Why a ServiceExport exports nothing: the `Valid=False` condition's reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// `NoService` or `InvalidServiceType`.
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
