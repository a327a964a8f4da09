//! The exchange format: how a cluster publishes its own exports for its peers (`docs/exchange.md`).
//!
//! ```text
//!  cluster-a, namespace mcsd-system (written only by cluster-a's mcsd, read by its peers)
//!  ┌──────────────────────────────────────────────┐
//!  │ ConfigMap  demo.hello        mcsd.io/exchange=v1   data["export.json"] = ExportRecord
//!  │ EndpointSlice demo.hello-x7k2p  mcsd.io/exchange=v1   (mirror of one local slice)
//!  └──────────────────────────────────────────────┘
//! ```
//!
//! Standard kinds only, so peers need nothing but `get/list/watch` on ConfigMaps and
//! EndpointSlices in one namespace. Records are versioned: a reader accepts every `v1` record and
//! ignores fields it does not know, so clusters running different mcsd versions interoperate.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, SessionAffinityConfig},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use mcsd_crds::{
    ClusterId,
    mcs::{IPFamily, InternalTrafficPolicy, ServiceImportType, ServicePort, SessionAffinity},
};
use serde::{Deserialize, Serialize};

use crate::core::merge::{Export, ExportSpec};

pub use mcsd_crds::names::mcsd::{
    EXCHANGE as LABEL_EXCHANGE, SERVICE_NAME as LABEL_SERVICE_NAME,
    SERVICE_NAMESPACE as LABEL_SERVICE_NAMESPACE, WRITTEN_AT as ANNOTATION_WRITTEN_AT,
};
/// The format version this build writes.
pub const FORMAT_VERSION: &str = "v1";
/// The ConfigMap key holding the [`ExportRecord`].
pub const RECORD_KEY: &str = "export.json";
/// The default exchange namespace.
pub const DEFAULT_NAMESPACE: &str = "mcsd-system";

/// One cluster's export of one Service, as published in its exchange namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportRecord {
    /// The publishing cluster's id.
    pub cluster: ClusterId,
    /// Namespace of the exported Service.
    pub namespace: String,
    /// Name of the exported Service.
    pub name: String,
    /// `creationTimestamp` of the ServiceExport: the conflict-resolution precedence key.
    pub export_created: Time,
    /// `ClusterSetIP` or `Headless`.
    #[serde(rename = "type")]
    pub type_: ServiceImportType,
    /// The Service's ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Session affinity.
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// Session affinity configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
    /// The Service's IP families.
    #[serde(default)]
    pub ip_families: Vec<IPFamily>,
    /// Internal traffic policy.
    #[serde(default)]
    pub internal_traffic_policy: InternalTrafficPolicy,
    /// Traffic distribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
    /// `spec.exportedLabels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exported_labels: BTreeMap<String, String>,
    /// `spec.exportedAnnotations`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exported_annotations: BTreeMap<String, String>,
}

/// Why an exchange record could not be read. A bad record is skipped (and reported), never fatal.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record is of a format version this build does not read.
    #[error("exchange record {name} has format {found:?}; this mcsd reads {FORMAT_VERSION}")]
    Version {
        /// The ConfigMap's name.
        name: String,
        /// Its `mcsd.io/exchange` label.
        found: String,
    },
    /// The ConfigMap has no record.
    #[error("exchange record {name} has no {RECORD_KEY}")]
    Missing {
        /// The ConfigMap's name.
        name: String,
    },
    /// The record is not valid JSON of the expected shape.
    #[error("exchange record {name} is malformed: {source}")]
    Malformed {
        /// The ConfigMap's name.
        name: String,
        /// The parse error.
        source: serde_json::Error,
    },
}

impl ExportRecord {
    /// The record of `spec`, exported by `cluster` from a ServiceExport created at `created`.
    pub fn new(
        cluster: ClusterId,
        namespace: &str,
        name: &str,
        created: Timestamp,
        spec: ExportSpec,
    ) -> Self {
        Self {
            cluster,
            namespace: namespace.to_string(),
            name: name.to_string(),
            export_created: Time(created),
            type_: spec.type_,
            ports: spec.ports,
            session_affinity: spec.session_affinity,
            session_affinity_config: spec.session_affinity_config,
            ip_families: spec.ip_families,
            internal_traffic_policy: spec.internal_traffic_policy,
            traffic_distribution: spec.traffic_distribution,
            exported_labels: spec.labels,
            exported_annotations: spec.annotations,
        }
    }

    /// The record as input to the merge.
    pub fn to_export(&self) -> Export {
        Export {
            cluster: self.cluster.clone(),
            created: self.export_created.0,
            spec: ExportSpec {
                type_: self.type_,
                ports: self.ports.clone(),
                session_affinity: self.session_affinity,
                session_affinity_config: self.session_affinity_config.clone(),
                ip_families: self.ip_families.clone(),
                internal_traffic_policy: self.internal_traffic_policy,
                traffic_distribution: self.traffic_distribution.clone(),
                labels: self.exported_labels.clone(),
                annotations: self.exported_annotations.clone(),
            },
        }
    }

    /// The name of the ConfigMap that holds the record of `namespace/name`.
    pub fn object_name(namespace: &str, name: &str) -> String {
        format!("{namespace}.{name}")
    }

    /// The ConfigMap that publishes this record in `exchange_namespace`.
    pub fn to_config_map(&self, exchange_namespace: &str) -> ConfigMap {
        let json = serde_json::to_string(self).expect("an ExportRecord always serialises");
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(Self::object_name(&self.namespace, &self.name)),
                namespace: Some(exchange_namespace.to_string()),
                labels: Some(record_labels(&self.namespace, &self.name)),
                ..Default::default()
            },
            data: Some([(RECORD_KEY.to_string(), json)].into()),
            ..Default::default()
        }
    }

    /// Reads the record a ConfigMap publishes.
    pub fn from_config_map(cm: &ConfigMap) -> Result<Self, RecordError> {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let version = cm
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_EXCHANGE))
            .cloned()
            .unwrap_or_default();
        if version != FORMAT_VERSION {
            return Err(RecordError::Version { name, found: version });
        }
        let Some(json) = cm.data.as_ref().and_then(|d| d.get(RECORD_KEY)) else {
            return Err(RecordError::Missing { name });
        };
        serde_json::from_str(json).map_err(|source| RecordError::Malformed { name, source })
    }
}

/// What of an endpoint crosses from one cluster to another: its addresses, conditions,
/// hostname, node and zone (a target reference or hints mean nothing in another cluster).
pub fn crossing(endpoints: &[Endpoint]) -> Vec<Endpoint> {
    endpoints.iter().map(|e| CrossingEndpoint::of(e).into()).collect()
}

/// The exchange mirror of one local EndpointSlice of `namespace/name`: the same endpoints, as
/// far as they cross clusters ([`crossing`]), and ports.
pub fn mirror_slice(
    namespace: &str,
    name: &str,
    local: &EndpointSlice,
    exchange_namespace: &str,
) -> EndpointSlice {
    let mut labels = record_labels(namespace, name);
    labels.insert(
        mcsd_crds::names::LABEL_MANAGED_BY.to_string(),
        mcsd_crds::names::MANAGED_BY.to_string(),
    );
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(mirror_name(
                namespace,
                local.metadata.name.as_deref().unwrap_or_default(),
            )),
            namespace: Some(exchange_namespace.to_string()),
            labels: Some(labels),
            ..Default::default()
        },
        address_type: local.address_type.clone(),
        endpoints: crossing(&local.endpoints),
        ports: local.ports.clone(),
    }
}

/// A mirrored EndpointSlice as a peer reads it: only what crosses clusters ([`crossing`]),
/// decoded straight from the API server's answer. A peer keeps every mirror of every cluster for
/// as long as it exists, and a k8s-openapi `Endpoint` takes 352 bytes before its strings (most
/// of it for the target reference and hints that never cross); a [`CrossingEndpoint`] a third.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirroredSlice {
    /// The mirror's metadata.
    pub metadata: ObjectMeta,
    /// `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    /// Its endpoints. kube-apiserver returns a slice without endpoints as `"endpoints": null`
    /// (the Go field has no `omitempty`), which reads as none.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub endpoints: Vec<CrossingEndpoint>,
    /// Its ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<EndpointPort>>,
}

/// What of an endpoint crosses clusters: addresses, conditions, hostname, node and zone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrossingEndpoint {
    /// Its addresses.
    pub addresses: Vec<String>,
    /// Ready, serving, terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<EndpointConditions>,
    /// Its hostname (headless services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Its zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// A list that may be `null`: read as empty.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

impl k8s_openapi::Resource for MirroredSlice {
    const API_VERSION: &'static str = "discovery.k8s.io/v1";
    const GROUP: &'static str = "discovery.k8s.io";
    const KIND: &'static str = "EndpointSlice";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "endpointslices";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for MirroredSlice {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CrossingEndpoint {
    /// What of `e` crosses clusters.
    pub fn of(e: &Endpoint) -> Self {
        CrossingEndpoint {
            addresses: e.addresses.clone(),
            conditions: e.conditions.clone(),
            hostname: e.hostname.clone(),
            node_name: e.node_name.clone(),
            zone: e.zone.clone(),
        }
    }
}

impl From<CrossingEndpoint> for Endpoint {
    fn from(e: CrossingEndpoint) -> Self {
        Endpoint {
            addresses: e.addresses,
            conditions: e.conditions,
            hostname: e.hostname,
            node_name: e.node_name,
            zone: e.zone,
            ..Default::default()
        }
    }
}

impl From<&MirroredSlice> for EndpointSlice {
    fn from(m: &MirroredSlice) -> Self {
        EndpointSlice {
            metadata: m.metadata.clone(),
            address_type: m.address_type.clone(),
            endpoints: m.endpoints.iter().cloned().map(Endpoint::from).collect(),
            ports: m.ports.clone(),
        }
    }
}

impl From<EndpointSlice> for MirroredSlice {
    fn from(s: EndpointSlice) -> Self {
        MirroredSlice {
            endpoints: s.endpoints.iter().map(CrossingEndpoint::of).collect(),
            metadata: s.metadata,
            address_type: s.address_type,
            ports: s.ports,
        }
    }
}

/// The exchange name of the mirror of local slice `slice` in `namespace`.
pub fn mirror_name(namespace: &str, slice: &str) -> String {
    format!("{namespace}.{slice}")
}

/// The labels of every exchange record of `namespace/name`.
pub fn record_labels(namespace: &str, name: &str) -> BTreeMap<String, String> {
    [
        (LABEL_EXCHANGE.to_string(), FORMAT_VERSION.to_string()),
        (LABEL_SERVICE_NAMESPACE.to_string(), namespace.to_string()),
        (LABEL_SERVICE_NAME.to_string(), name.to_string()),
    ]
    .into()
}

/// When the exporting (or importing) mcsd wrote `object`, from its [`ANNOTATION_WRITTEN_AT`]:
/// part of the exchange format, read by every peer for the propagation histogram.
pub fn written_at<K: kube::Resource>(object: &K) -> Option<k8s_openapi::jiff::Timestamp> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(ANNOTATION_WRITTEN_AT)?
        .parse()
        .ok()
}

/// One exchange object, as a peer watch delivers it.
#[derive(Clone, Debug)]
pub enum Object {
    /// An export record.
    Record(ConfigMap),
    /// A mirrored EndpointSlice.
    Slice(MirroredSlice),
}

/// The two kinds of exchange object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Export records (ConfigMaps).
    Record,
    /// Mirrored EndpointSlices.
    Slice,
}

/// A service, by namespace and name: the one service key of mcsd, the DNS side's included.
pub use mcsd_dns::ServiceRef as Key;

/// The service an exchange object is about, from its labels.
pub fn key_of(labels: Option<&BTreeMap<String, String>>) -> Option<Key> {
    let labels = labels?;
    Some(Key::new(
        labels.get(LABEL_SERVICE_NAMESPACE)?.clone(),
        labels.get(LABEL_SERVICE_NAME)?.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcsd_crds::mcs::Protocol;

    fn record() -> ExportRecord {
        ExportRecord::new(
            ClusterId::new("cluster-a").unwrap(),
            "demo",
            "hello",
            "2026-11-21T10:00:00Z".parse().unwrap(),
            ExportSpec {
                ports: vec![ServicePort {
                    name: Some("tcp".into()),
                    protocol: Protocol::TCP,
                    app_protocol: None,
                    port: 42,
                }],
                ip_families: vec![IPFamily::IPv4],
                labels: [("team".to_string(), "a".to_string())].into(),
                ..Default::default()
            },
        )
    }

    /// As kube-apiserver serves a slice whose endpoints are all gone.
    #[test]
    fn a_mirror_without_endpoints_reads_as_kube_apiserver_writes_it() {
        for endpoints in [r#""endpoints": null,"#, ""] {
            let json = format!(
                r#"{{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {{"name": "demo.hello-abc", "namespace": "mcsd-system"}},
                    "addressType": "IPv4", {endpoints} "ports": null}}"#
            );
            let slice: MirroredSlice = serde_json::from_str(&json).unwrap();
            assert!(slice.endpoints.is_empty());
            assert_eq!(slice.ports, None);
        }
        // And the built-in slices the DNS index reads.
        let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_str(
            r#"{"metadata": {"name": "x"}, "addressType": "IPv4", "endpoints": null, "ports": null}"#,
        )
        .unwrap();
        assert!(slice.endpoints.is_empty());
    }

    #[test]
    fn a_record_round_trips_through_its_config_map() {
        let cm = record().to_config_map("mcsd-system");
        assert_eq!(cm.metadata.name.as_deref(), Some("demo.hello"));
        assert_eq!(cm.metadata.labels.as_ref().unwrap()[LABEL_EXCHANGE], "v1");
        assert_eq!(ExportRecord::from_config_map(&cm).unwrap(), record());
        assert_eq!(record().to_export().spec.labels["team"], "a");
    }

    #[test]
    fn unknown_fields_from_a_newer_v1_writer_are_ignored() {
        let mut cm = record().to_config_map("mcsd-system");
        let data = cm.data.as_mut().unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&data[RECORD_KEY]).unwrap();
        json["someFutureField"] = serde_json::json!({"x": 1});
        data.insert(RECORD_KEY.into(), json.to_string());
        assert_eq!(ExportRecord::from_config_map(&cm).unwrap(), record());
    }

    #[test]
    fn another_format_version_is_refused_with_a_clear_error() {
        let mut cm = record().to_config_map("mcsd-system");
        cm.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(LABEL_EXCHANGE.into(), "v2".into());
        let err = ExportRecord::from_config_map(&cm).unwrap_err().to_string();
        assert!(err.contains("\"v2\"") && err.contains("reads v1"), "{err}");
    }

    #[test]
    fn a_record_with_an_invalid_cluster_id_is_malformed() {
        let mut cm = record().to_config_map("mcsd-system");
        let data = cm.data.as_mut().unwrap();
        let bad = data[RECORD_KEY].replace("cluster-a", "Cluster_A");
        data.insert(RECORD_KEY.into(), bad);
        let err = ExportRecord::from_config_map(&cm).unwrap_err().to_string();
        assert!(err.contains("malformed") && err.contains("lowercase"), "{err}");
    }

    #[test]
    fn a_mirror_decodes_from_the_api_servers_json_keeping_what_crosses() {
        let json = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "demo.hello-x", "namespace": "mcsd-system", "labels": {"a": "b"}},
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": ["10.0.0.1"],
                "conditions": {"ready": false, "serving": true},
                "hostname": "pod-0",
                "nodeName": "node-1",
                "zone": "z1",
                "targetRef": {"kind": "Pod", "name": "pod-0", "namespace": "demo"},
                "hints": {"forZones": [{"name": "z1"}]}
            }],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
        });
        let mirror: MirroredSlice = serde_json::from_value(json.clone()).unwrap();
        let full: EndpointSlice = serde_json::from_value(json).unwrap();
        let back = EndpointSlice::from(&mirror);
        assert_eq!(back.endpoints, crossing(&full.endpoints));
        assert_eq!(back.ports, full.ports);
        assert_eq!(back.metadata, full.metadata);
        assert_eq!(back.endpoints[0].conditions.as_ref().unwrap().ready, Some(false));
        assert_eq!(MirroredSlice::from(back), mirror);
    }
}
