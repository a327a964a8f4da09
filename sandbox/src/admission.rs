//! Admission: what every write goes through before it is stored. Custom resources are defaulted
//! and validated against their schema; built-in kinds get their defaulting and validation (the
//! rules are in `behaviour.rs`); CustomResourceDefinitions are checked and given their status;
//! Services and Pods are given addresses, released again when a write fails or the object goes.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::behaviour;
use crate::error::{ApiError, ApiResult, Cause};
use crate::ipam::Addresses;
use crate::kinds::{self, ResourceInfo};
use crate::meta;
use crate::schema;

/// Settings of the cluster behaviours.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// The cluster's name (node names, messages).
    pub cluster: String,
}

/// One cluster's admission: its behaviour and its address ranges.
#[derive(Debug)]
pub(crate) struct Admission {
    behaviour: Behaviour,
    addresses: Addresses,
}

impl Admission {
    pub(crate) fn new(
        behaviour: Behaviour,
        service_ranges: Vec<ipnet::IpNet>,
        pod_ranges: Vec<ipnet::IpNet>,
    ) -> Self {
        Self {
            behaviour,
            addresses: Addresses::new(service_ranges, pod_ranges),
        }
    }

    /// Defaults and validates `obj` (replacing `old`, if any); addresses it is given are added to
    /// `allocated`, for [`Admission::release`] if the write does not happen.
    pub(crate) fn admit(
        &self,
        info: &ResourceInfo,
        old: Option<&Value>,
        obj: &mut Value,
        allocated: &mut Vec<(bool, IpAddr)>,
    ) -> ApiResult<()> {
        if !info.builtin {
            if let Some(schema) = info.schemas.get(&info.storage_version) {
                schema::default_and_prune(schema, obj);
                let causes = schema::validate(schema, obj);
                if !causes.is_empty() {
                    return Err(ApiError::invalid(
                        &info.group,
                        &info.kind,
                        meta::meta_str(obj, "name"),
                        causes,
                    ));
                }
            }
            return Ok(());
        }
        match (info.group.as_str(), info.kind.as_str()) {
            ("", "Namespace") => {
                let name = meta::meta_str(obj, "name").to_string();
                let md = meta::metadata_mut(obj);
                let labels = md.entry("labels").or_insert_with(|| json!({}));
                if labels.is_object() {
                    labels["kubernetes.io/metadata.name"] = json!(name);
                }
                if old.is_none() {
                    obj["spec"] = json!({"finalizers": ["kubernetes"]});
                    obj["status"] = json!({"phase": "Active"});
                }
                Ok(())
            }
            ("", "Secret") => {
                behaviour::fold_string_data(obj);
                Ok(())
            }
            ("", "Service") => behaviour::admit_service(&self.addresses, old, obj, allocated),
            ("", "Pod") => {
                behaviour::admit_pod(&self.behaviour.cluster, &self.addresses, old, obj, allocated)
            }
            ("discovery.k8s.io", "EndpointSlice") => behaviour::validate_endpoint_slice(old, obj),
            ("apps", kind @ ("Deployment" | "ReplicaSet" | "StatefulSet")) | ("batch", kind @ "Job") => {
                behaviour::admit_workload(kind, old, obj)
            }
            ("apiextensions.k8s.io", "CustomResourceDefinition") => Self::admit_crd(old, obj),
            _ => Ok(()),
        }
    }

    /// Gives back addresses allocated for a write that did not happen.
    pub(crate) fn release(&self, allocated: &[(bool, IpAddr)]) {
        self.addresses.release(allocated);
    }

    /// Gives back the addresses a deleted object held.
    pub(crate) fn release_held(&self, info: &ResourceInfo, last: &Value) {
        self.addresses.release(&Self::ips_of(info, last));
    }

    pub(crate) fn release_replaced(&self, info: &ResourceInfo, old: &Value, new: &Value) {
        let now = Self::ips_of(info, new);
        let gone: Vec<_> = Self::ips_of(info, old)
            .into_iter()
            .filter(|x| !now.contains(x))
            .collect();
        self.addresses.release(&gone);
    }

    fn ips_of(info: &ResourceInfo, obj: &Value) -> Vec<(bool, IpAddr)> {
        let (ptr, service) = match (info.group.as_str(), info.kind.as_str()) {
            ("", "Service") => ("/spec/clusterIPs", true),
            ("", "Pod") => ("/status/podIPs", false),
            _ => return Vec::new(),
        };
        obj.pointer(ptr)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().or_else(|| v.get("ip").and_then(Value::as_str)))
            .filter_map(|s| s.parse().ok())
            .map(|ip| (service, ip))
            .collect()
    }

    fn admit_crd(old: Option<&Value>, obj: &mut Value) -> ApiResult<()> {
        let name = meta::meta_str(obj, "name").to_string();
        let invalid = |field: &str, why: &str| {
            ApiError::invalid(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &name,
                vec![Cause::invalid(field, &json!(name), why)],
            )
        };
        let info = kinds::from_crd(obj).map_err(|why| invalid("spec", &why))?;
        if name != format!("{}.{}", info.resource, info.group) {
            return Err(invalid(
                "metadata.name",
                "must be spec.names.plural+\".\"+spec.group",
            ));
        }
        // KEP-1111: a CRD in a protected group needs the approval annotation.
        let protected = ["k8s.io", "kubernetes.io"]
            .iter()
            .any(|p| info.group == *p || info.group.ends_with(&format!(".{p}")));
        let approval = obj
            .pointer("/metadata/annotations/api-approved.kubernetes.io")
            .and_then(Value::as_str);
        if protected && approval.is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &name,
                vec![Cause::new(
                    "metadata.annotations[api-approved.kubernetes.io]",
                    "FieldValueRequired",
                    "Required value: protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111",
                )],
            ));
        }
        if let Some(old) = old {
            let old_group = old.pointer("/spec/group");
            if old_group != obj.pointer("/spec/group") {
                return Err(invalid("spec.group", "field is immutable"));
            }
        }
        let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
        let mut accepted = names.clone();
        if accepted.get("singular").is_none() {
            accepted["singular"] = json!(info.singular);
        }
        if accepted.get("listKind").is_none() {
            accepted["listKind"] = json!(format!("{}List", info.kind));
        }
        obj["spec"]["names"] = accepted.clone();
        let now = meta::now();
        let since = |t: &str| {
            old.and_then(|o| o.pointer("/status/conditions"))
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
                })
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now))
        };
        let mut stored: Vec<String> = old
            .and_then(|o| o.pointer("/status/storedVersions"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if !stored.contains(&info.storage_version) {
            stored.push(info.storage_version.clone());
        }
        obj["status"] = json!({
            "acceptedNames": accepted,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": since("NamesAccepted")},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": since("Established")},
            ],
            "storedVersions": stored,
        });
        Ok(())
    }
}
