//! The generated CRDs: committed YAML matches the types, schemas are structural, both versions
//! share one schema, and every type survives a JSON round trip.

use std::{collections::BTreeMap, path::Path};

use k8s_openapi::{
    api::core::v1::{ClientIPConfig, SessionAffinityConfig},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time},
};
use mcsd_crds::{
    about,
    generate::{crds, render, structural_problems},
    mcs::{self, *},
    names,
};

fn committed(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn committed_crds_match_the_types() {
    let generated = crds().unwrap();
    assert_eq!(generated.len(), 3);
    for crd in &generated {
        let want = render(crd).unwrap();
        assert!(
            committed(&crd.file_name) == want,
            "crds/{} is out of date with the Rust types: run `cargo run -p mcsd -- crds --dir crds` and commit",
            crd.file_name
        );
    }
}

#[test]
fn every_committed_crd_deserialises_with_a_structural_schema_per_served_version() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        seen += 1;
        let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let problems = structural_problems(&crd);
        assert!(problems.is_empty(), "{}: {problems:#?}", path.display());
        let served: Vec<_> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(served, ["v1beta1", "v1alpha1"], "{}", path.display());
        let stored: Vec<_> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(stored, ["v1beta1"], "{}", path.display());
        for v in &crd.spec.versions {
            assert!(
                v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
                "{} {}: no status subresource",
                path.display(),
                v.name
            );
        }
    }
    assert_eq!(seen, 3, "expected three CRD files in crds/");
}

#[test]
fn both_versions_of_each_crd_have_the_same_schema_and_columns() {
    for crd in crds().unwrap() {
        let [a, b] = &crd.crd.spec.versions[..] else {
            panic!("two versions")
        };
        assert_eq!(a.schema, b.schema, "{}", crd.file_name);
        assert_eq!(
            a.additional_printer_columns, b.additional_printer_columns,
            "{}",
            crd.file_name
        );
    }
}

#[test]
fn names_scopes_and_short_names_are_the_upstream_ones() {
    let by_kind: BTreeMap<_, _> = crds()
        .unwrap()
        .into_iter()
        .map(|c| (c.crd.spec.names.kind.clone(), c.crd))
        .collect();
    let export = &by_kind["ServiceExport"];
    assert_eq!(
        export.metadata.name.as_deref(),
        Some("serviceexports.multicluster.x-k8s.io")
    );
    assert_eq!(export.spec.scope, "Namespaced");
    assert_eq!(
        export.spec.names.short_names.as_deref(),
        Some(&["svcex".to_string(), "svcexport".to_string()][..])
    );
    let import = &by_kind["ServiceImport"];
    assert_eq!(
        import.spec.names.short_names.as_deref(),
        Some(&["svcim".to_string(), "svcimport".to_string()][..])
    );
    let columns: Vec<_> = import.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Type", "IP", "Clusters", "Age"]);
    let property = &by_kind["ClusterProperty"];
    assert_eq!(
        property.metadata.name.as_deref(),
        Some("clusterproperties.about.k8s.io")
    );
    assert_eq!(property.spec.scope, "Cluster");
}

#[test]
fn keyed_lists_are_list_maps() {
    let by_kind: BTreeMap<_, _> = crds()
        .unwrap()
        .into_iter()
        .map(|c| (c.crd.spec.names.kind.clone(), c.crd))
        .collect();
    let schema = |kind: &str| {
        serde_json::to_value(
            by_kind[kind].spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref(),
        )
        .unwrap()
    };
    let import = schema("ServiceImport");
    let ports = &import["properties"]["spec"]["properties"]["ports"];
    assert_eq!(ports["x-kubernetes-list-type"], "map");
    assert_eq!(
        ports["x-kubernetes-list-map-keys"],
        serde_json::json!(["port", "protocol"])
    );
    assert_eq!(ports["items"]["properties"]["protocol"]["default"], "TCP");
    let status = &import["properties"]["status"]["properties"];
    assert_eq!(
        status["clusters"]["x-kubernetes-list-map-keys"],
        serde_json::json!(["cluster"])
    );
    assert_eq!(
        status["conditions"]["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    let export = schema("ServiceExport");
    assert_eq!(
        export["properties"]["status"]["properties"]["conditions"]["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    assert!(
        export.get("required").is_none(),
        "a bare ServiceExport (no spec) must be accepted"
    );
    assert_eq!(
        export["properties"]["spec"]["default"],
        serde_json::json!({}),
        "and gets an empty spec"
    );
}

fn condition(type_: &str, status: &str, reason: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: format!("{type_} is {status}"),
        last_transition_time: Time("2026-11-21T10:00:00Z".parse().unwrap()),
        observed_generation: Some(3),
    }
}

fn full_import() -> mcs::v1beta1::ServiceImport {
    mcs::v1beta1::ServiceImport {
        metadata: ObjectMeta {
            name: Some("hello".into()),
            namespace: Some("demo".into()),
            annotations: Some(
                [(
                    names::ANNOTATION_DERIVED_SERVICE.to_string(),
                    "derived-ovtkn0laet".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: mcs::v1beta1::ServiceImportSpec {
            ports: vec![
                ServicePort {
                    name: Some("tcp".into()),
                    protocol: Protocol::TCP,
                    app_protocol: Some("http".into()),
                    port: 42,
                },
                ServicePort {
                    name: Some("udp".into()),
                    protocol: Protocol::UDP,
                    app_protocol: None,
                    port: 42,
                },
                ServicePort {
                    name: Some("stcp".into()),
                    protocol: Protocol::SCTP,
                    app_protocol: None,
                    port: 142,
                },
            ],
            ips: vec!["10.96.0.10".into(), "fd00::10".into()],
            type_: ServiceImportType::ClusterSetIP,
            session_affinity: Some(SessionAffinity::ClientIP),
            session_affinity_config: Some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(10),
                }),
            }),
            ip_families: vec![IPFamily::IPv4, IPFamily::IPv6],
            internal_traffic_policy: Some(InternalTrafficPolicy::Local),
            traffic_distribution: Some("PreferClose".into()),
        },
        status: Some(ServiceImportStatus {
            clusters: vec![
                ClusterStatus {
                    cluster: "cluster-a".into(),
                },
                ClusterStatus {
                    cluster: "cluster-b".into(),
                },
            ],
            conditions: vec![condition("Ready", "True", "Ready")],
            endpoint_slice_objects: Some(EndpointSliceObjects::Present),
        }),
    }
}

#[test]
fn a_service_import_with_every_field_survives_json_and_reads_back_at_v1alpha1() {
    let import = full_import();
    let json = serde_json::to_value(&import).unwrap();
    assert_eq!(json["apiVersion"], "multicluster.x-k8s.io/v1beta1");
    assert_eq!(json["spec"]["ipFamilies"], serde_json::json!(["IPv4", "IPv6"]));
    assert_eq!(
        json["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10
    );
    assert_eq!(json["status"]["endpointSliceObjects"], "Present");
    let back: mcs::v1beta1::ServiceImport = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, import);

    // The same document, relabelled v1alpha1, is a valid v1alpha1 object with identical content.
    let mut alpha_json = json.clone();
    alpha_json["apiVersion"] = "multicluster.x-k8s.io/v1alpha1".into();
    let alpha: mcs::v1alpha1::ServiceImport = serde_json::from_value(alpha_json.clone()).unwrap();
    let mut again = serde_json::to_value(&alpha).unwrap();
    again["apiVersion"] = json["apiVersion"].clone();
    assert_eq!(again, json);
}

#[test]
fn a_service_export_round_trips_and_a_bare_one_parses() {
    let export = mcs::v1beta1::ServiceExport {
        metadata: ObjectMeta {
            name: Some("hello".into()),
            namespace: Some("demo".into()),
            ..Default::default()
        },
        spec: mcs::v1beta1::ServiceExportSpec {
            exported_labels: Some([("dummy-label".to_string(), "true".to_string())].into()),
            exported_annotations: Some([("dummy-annotation".to_string(), "true".to_string())].into()),
        },
        status: Some(ServiceExportStatus {
            conditions: vec![
                condition("Valid", "True", "Valid"),
                condition("Ready", "True", "Ready"),
                condition("Conflict", "True", "PortConflict,TypeConflict"),
            ],
        }),
    };
    let json = serde_json::to_string(&export).unwrap();
    assert_eq!(
        serde_json::from_str::<mcs::v1beta1::ServiceExport>(&json).unwrap(),
        export
    );

    // What the API server returns for a bare ServiceExport, once the schema's default applied.
    let bare: mcs::v1beta1::ServiceExport = serde_yaml::from_str(
        "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\nmetadata: {name: hello, namespace: demo}\nspec: {}\n",
    )
    .expect("a ServiceExport with an empty spec");
    assert_eq!(bare.spec, Default::default());
}

#[test]
fn a_cluster_property_round_trips_at_both_versions() {
    let p = about::v1beta1::ClusterProperty::new(
        names::PROPERTY_CLUSTER_ID,
        about::v1beta1::ClusterPropertySpec {
            value: "cluster-a".into(),
        },
    );
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["apiVersion"], "about.k8s.io/v1beta1");
    assert_eq!(
        serde_json::from_value::<about::v1beta1::ClusterProperty>(json.clone()).unwrap(),
        p
    );
    let mut alpha = json;
    alpha["apiVersion"] = "about.k8s.io/v1alpha1".into();
    let a: about::v1alpha1::ClusterProperty = serde_json::from_value(alpha).unwrap();
    assert_eq!(a.spec.value, "cluster-a");
}
