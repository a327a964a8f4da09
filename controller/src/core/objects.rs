//! Reading a multi-document YAML file of ServiceImports, EndpointSlices and Namespaces
//! (`mcsd dns --objects`). Unlike the watches, an invalid document is an error naming it.

use k8s_openapi::api::{core::v1::Namespace, discovery::v1::EndpointSlice};
use mcsd_crds::mcs::{v1alpha1, v1beta1::ServiceImport};
use serde::Deserialize;

use crate::core::dns_index::{DnsIndex, import_from_resource, slice_from_resource};

/// One object of the file.
#[derive(Debug, Clone)]
pub enum Object {
    /// A ServiceImport (v1alpha1 documents are read into the v1beta1 type: same schema).
    ServiceImport(Box<ServiceImport>),
    /// A `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// A Namespace.
    Namespace(Box<Namespace>),
}

/// A document that cannot be used, with its 1-based number in the file.
#[derive(Debug, thiserror::Error)]
#[error("document {index}: {reason}")]
pub struct ObjectsError {
    /// 1-based document number.
    pub index: usize,
    /// Why it was rejected.
    pub reason: String,
}

/// Parses and validates every document; empty documents are skipped (but counted).
pub fn parse_objects(text: &str) -> Result<Vec<Object>, ObjectsError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let err = |reason: String| ObjectsError { index, reason };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| err(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let kind = value
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let object = match (api_version.as_str(), kind.as_str()) {
            ("multicluster.x-k8s.io/v1beta1", "ServiceImport") => {
                let si: ServiceImport = serde_yaml::from_value(value).map_err(|e| err(e.to_string()))?;
                Object::ServiceImport(Box::new(si))
            }
            ("multicluster.x-k8s.io/v1alpha1", "ServiceImport") => {
                let old: v1alpha1::ServiceImport =
                    serde_yaml::from_value(value).map_err(|e| err(e.to_string()))?;
                let spec = serde_json::to_value(&old.spec)
                    .and_then(serde_json::from_value)
                    .map_err(|e| err(e.to_string()))?;
                let mut si = ServiceImport::new(old.metadata.name.as_deref().unwrap_or_default(), spec);
                si.metadata = old.metadata;
                Object::ServiceImport(Box::new(si))
            }
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                let es: EndpointSlice = serde_yaml::from_value(value).map_err(|e| err(e.to_string()))?;
                Object::EndpointSlice(Box::new(es))
            }
            ("v1", "Namespace") => {
                let ns: Namespace = serde_yaml::from_value(value).map_err(|e| err(e.to_string()))?;
                Object::Namespace(Box::new(ns))
            }
            _ => {
                return Err(err(format!(
                    "unsupported object {api_version:?} {kind:?} (expected ServiceImport, EndpointSlice or Namespace)"
                )));
            }
        };
        // Validate with the very conversion the index uses.
        match &object {
            Object::ServiceImport(si) => {
                import_from_resource(si).map_err(|e| err(format!("ServiceImport: {e}")))?;
            }
            Object::EndpointSlice(es) => {
                slice_from_resource(es).map_err(|e| err(format!("EndpointSlice: {e}")))?;
            }
            Object::Namespace(ns) => {
                if ns.metadata.name.as_deref().unwrap_or_default().is_empty() {
                    return Err(err("Namespace: metadata.name is required".into()));
                }
            }
        }
        out.push(object);
    }
    Ok(out)
}

/// Applies the objects to the index as one re-list of each kind.
pub fn reset_index(index: &mut DnsIndex, objects: &[Object]) {
    let mut imports = Vec::new();
    let mut slices = Vec::new();
    let mut namespaces = Vec::new();
    for o in objects {
        match o {
            Object::ServiceImport(si) => imports.push((**si).clone()),
            Object::EndpointSlice(es) => slices.push((**es).clone()),
            Object::Namespace(ns) => namespaces.push((**ns).clone()),
        }
    }
    index.reset_namespaces(&namespaces);
    index.reset_service_imports(&imports);
    index.reset_endpoint_slices(&slices);
}
