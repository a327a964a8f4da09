//! The DNS index: Kubernetes objects → `mcsd-dns` domain structs → a published zone.
//!
//! ```text
//!  ServiceImport (v1beta1, v1alpha1) ─┐ apply / delete / reset
//!  EndpointSlice (MCS labels)        ─┼──────────────────────► DnsIndex ── publish() ──► ArcSwap<Zone>
//!  Namespace                         ─┘   (never fails: bad objects are warned about and skipped)
//! ```
//!
//! The controller's watches and `mcsd dns --objects` call the very same functions. Slices are
//! grouped per (service, source cluster): the zone gets the union of the endpoints of every slice
//! of that group.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use arc_swap::ArcSwap;
use k8s_openapi::api::{core::v1::Namespace, discovery::v1::EndpointSlice};
use mcsd_crds::{
    mcs::{self, v1beta1::ServiceImport},
    names::{LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER},
};
use mcsd_dns::{
    Endpoint, Import, ImportKind, Port, Protocol, ServiceRef, SharedZone, ZoneConfig, ZoneWriter,
};
use tracing::warn;

/// Why an object cannot be indexed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The object has no namespace or no name.
    #[error("metadata.namespace and metadata.name are required")]
    MissingName,
    /// An IP in `spec.ips` or in an endpoint does not parse.
    #[error("invalid IP address {0:?}")]
    InvalidIp(String),
    /// A port number is outside 1–65535.
    #[error("invalid port number {0}")]
    InvalidPort(i32),
    /// The zone could not be created.
    #[error(transparent)]
    Zone(#[from] mcsd_dns::Error),
}

/// An EndpointSlice reduced to what DNS needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    /// The service the slice belongs to (`multicluster.kubernetes.io/service-name`).
    pub service: ServiceRef,
    /// The source cluster (`multicluster.kubernetes.io/source-cluster`).
    pub cluster: String,
    /// Its endpoints (nil `ready` counts as ready), shared with the zone writer.
    pub endpoints: Arc<[Endpoint]>,
}

fn meta_name(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(String, String), ConvertError> {
    match (&meta.namespace, &meta.name) {
        (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => Ok((ns.clone(), name.clone())),
        _ => Err(ConvertError::MissingName),
    }
}

/// Converts a ServiceImport (the spec is the same in v1alpha1 and v1beta1).
pub fn import_from_resource(si: &ServiceImport) -> Result<Import, ConvertError> {
    let (namespace, name) = meta_name(&si.metadata)?;
    let spec = &si.spec;
    let ips = spec
        .ips
        .iter()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| ConvertError::InvalidIp(s.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ports = spec
        .ports
        .iter()
        .map(|p| {
            let port = u16::try_from(p.port)
                .ok()
                .filter(|&n| n > 0)
                .ok_or(ConvertError::InvalidPort(p.port))?;
            let protocol = match p.protocol {
                mcs::Protocol::TCP => Protocol::Tcp,
                mcs::Protocol::UDP => Protocol::Udp,
                mcs::Protocol::SCTP => Protocol::Sctp,
            };
            Ok(Port {
                name: p.name.clone(),
                protocol,
                port,
            })
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    let kind = match spec.type_ {
        mcs::ServiceImportType::ClusterSetIP => ImportKind::ClusterSetIp,
        mcs::ServiceImportType::Headless => ImportKind::Headless,
    };
    Ok(Import {
        namespace,
        name,
        kind,
        ips,
        ports,
    })
}

/// Converts an MCS EndpointSlice; `Ok(None)` for slices without both MCS labels (not ours).
pub fn slice_from_resource(es: &EndpointSlice) -> Result<Option<SliceInfo>, ConvertError> {
    let (namespace, _) = meta_name(&es.metadata)?;
    let labels = es.metadata.labels.as_ref();
    let (Some(service), Some(cluster)) = (
        labels.and_then(|l| l.get(LABEL_SERVICE_NAME)),
        labels.and_then(|l| l.get(LABEL_SOURCE_CLUSTER)),
    ) else {
        return Ok(None);
    };
    if es.address_type == "FQDN" {
        return Ok(None);
    }
    let endpoints = es
        .endpoints
        .iter()
        .map(|e| {
            let mut addresses = e
                .addresses
                .iter()
                .map(|a| {
                    a.parse::<IpAddr>()
                        .map_err(|_| ConvertError::InvalidIp(a.clone()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            // The index keeps these for as long as the slice exists: no spare room.
            addresses.shrink_to_fit();
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            Ok(Endpoint {
                addresses,
                hostname: e.hostname.clone(),
                ready,
            })
        })
        .collect::<Result<Arc<[_]>, ConvertError>>()?;
    Ok(Some(SliceInfo {
        service: ServiceRef::new(namespace, service.clone()),
        cluster: cluster.clone(),
        endpoints,
    }))
}

/// The index the watches feed. Indexing never fails; [`DnsIndex::publish`] makes changes visible.
#[derive(Debug)]
pub struct DnsIndex {
    writer: ZoneWriter,
    zone: SharedZone,
    imports: BTreeSet<ServiceRef>,
    /// (namespace, slice name) → what the slice contributes.
    slices: BTreeMap<(String, String), SliceInfo>,
    /// (service, source cluster) → the names of its slices (in the service's namespace), so a
    /// slice event costs the size of its group, not of every slice.
    groups: BTreeMap<(ServiceRef, String), BTreeSet<String>>,
    /// While a re-list is in progress: what it has delivered so far.
    relisting_imports: Option<BTreeSet<ServiceRef>>,
    relisting_slices: Option<BTreeSet<(String, String)>>,
    relisting_namespaces: Option<BTreeSet<String>>,
    publishes: u64,
}

impl DnsIndex {
    /// An empty, not yet synced index whose zone is already published (negatives SERVFAIL).
    pub fn new(config: ZoneConfig) -> Result<Self, ConvertError> {
        let mut writer = ZoneWriter::new(config)?;
        let zone = Arc::new(ArcSwap::new(writer.publish_now()));
        Ok(Self {
            writer,
            zone,
            imports: BTreeSet::new(),
            slices: BTreeMap::new(),
            groups: BTreeMap::new(),
            relisting_imports: None,
            relisting_slices: None,
            relisting_namespaces: None,
            publishes: 1,
        })
    }

    /// The shared zone the DNS servers read.
    pub fn zone(&self) -> SharedZone {
        self.zone.clone()
    }

    /// How many zones have been published.
    pub fn publishes(&self) -> u64 {
        self.publishes
    }

    /// Adds or updates a ServiceImport.
    pub fn apply_service_import(&mut self, si: &ServiceImport) {
        if let (Some(seen), Ok((ns, name))) = (&mut self.relisting_imports, meta_name(&si.metadata)) {
            seen.insert(ServiceRef::new(ns, name));
        }
        match import_from_resource(si) {
            Ok(import) => {
                self.imports.insert(import.service_ref());
                self.writer.apply_import(import);
            }
            Err(error) => {
                warn!(%error, namespace = ?si.metadata.namespace, name = ?si.metadata.name, "ServiceImport skipped");
                if let Ok((ns, name)) = meta_name(&si.metadata) {
                    self.delete_service_import(&ns, &name);
                }
            }
        }
    }

    /// Removes a ServiceImport.
    pub fn delete_service_import(&mut self, namespace: &str, name: &str) {
        let key = ServiceRef::new(namespace, name);
        self.imports.remove(&key);
        self.writer.delete_import(&key);
    }

    /// Replaces every ServiceImport with this list (a re-list).
    pub fn reset_service_imports(&mut self, imports: &[ServiceImport]) {
        self.relist(
            imports,
            Self::begin_service_import_relist,
            Self::apply_service_import,
            Self::end_service_import_relist,
        );
    }

    /// One re-list of `objects`: `begin`, `apply` each, `end`.
    fn relist<T>(
        &mut self,
        objects: &[T],
        begin: fn(&mut Self),
        apply: fn(&mut Self, &T),
        end: fn(&mut Self),
    ) {
        begin(self);
        for o in objects {
            apply(self, o);
        }
        end(self);
    }

    /// Starts a re-list of ServiceImports: what it delivers is applied as it arrives (so the
    /// list is never held whole), and [`Self::end_service_import_relist`] removes the rest.
    pub fn begin_service_import_relist(&mut self) {
        self.relisting_imports = Some(BTreeSet::new());
    }

    /// Ends a re-list: every ServiceImport it did not deliver is removed.
    pub fn end_service_import_relist(&mut self) {
        let Some(seen) = self.relisting_imports.take() else {
            return;
        };
        for gone in self.imports.difference(&seen).cloned().collect::<Vec<_>>() {
            self.delete_service_import(&gone.namespace, &gone.name);
        }
    }

    /// Adds or updates an EndpointSlice (slices without the MCS labels are ignored).
    pub fn apply_endpoint_slice(&mut self, es: &EndpointSlice) {
        let Ok((ns, name)) = meta_name(&es.metadata) else {
            warn!("EndpointSlice without namespace or name skipped");
            return;
        };
        if let Some(seen) = &mut self.relisting_slices {
            seen.insert((ns.clone(), name.clone()));
        }
        match slice_from_resource(es) {
            Ok(Some(info)) => {
                let key = (ns, name);
                match self.slices.get(&key) {
                    Some(old) if *old == info => return,
                    // Another group now: leave the old one first.
                    Some(old) if (&old.service, &old.cluster) != (&info.service, &info.cluster) => {
                        self.delete_endpoint_slice(&key.0, &key.1)
                    }
                    _ => {}
                }
                let group = (info.service.clone(), info.cluster.clone());
                self.groups
                    .entry(group.clone())
                    .or_default()
                    .insert(key.1.clone());
                self.slices.insert(key, info);
                self.regroup(&group.0, &group.1);
            }
            Ok(None) => self.delete_endpoint_slice(&ns, &name),
            Err(error) => {
                warn!(%error, namespace = %ns, name = %name, "EndpointSlice skipped");
                self.delete_endpoint_slice(&ns, &name);
            }
        }
    }

    /// Removes an EndpointSlice.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) {
        let Some(old) = self.slices.remove(&(namespace.to_string(), name.to_string())) else {
            return;
        };
        let group = (old.service, old.cluster);
        if let Some(names) = self.groups.get_mut(&group) {
            names.remove(name);
            if names.is_empty() {
                self.groups.remove(&group);
            }
        }
        self.regroup(&group.0, &group.1);
    }

    /// Replaces every EndpointSlice with this list (a re-list).
    pub fn reset_endpoint_slices(&mut self, slices: &[EndpointSlice]) {
        self.relist(
            slices,
            Self::begin_endpoint_slice_relist,
            Self::apply_endpoint_slice,
            Self::end_endpoint_slice_relist,
        );
    }

    /// Starts a re-list of EndpointSlices (see [`Self::begin_service_import_relist`]).
    pub fn begin_endpoint_slice_relist(&mut self) {
        self.relisting_slices = Some(BTreeSet::new());
    }

    /// Ends a re-list: every EndpointSlice it did not deliver is removed.
    pub fn end_endpoint_slice_relist(&mut self) {
        let Some(seen) = self.relisting_slices.take() else {
            return;
        };
        let gone: Vec<(String, String)> = self
            .slices
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for (ns, name) in gone {
            self.delete_endpoint_slice(&ns, &name);
        }
    }

    /// Hands the zone writer the endpoint sets of one group's slices (shared, not copied).
    fn regroup(&mut self, service: &ServiceRef, cluster: &str) {
        let sets = self
            .groups
            .get(&(service.clone(), cluster.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|name| self.slices.get(&(service.namespace.clone(), name.clone())))
            .map(|s| s.endpoints.clone())
            .collect::<Vec<Arc<[Endpoint]>>>();
        self.writer.apply_endpoint_sets(service.clone(), cluster, sets);
    }

    /// Adds a Namespace.
    pub fn apply_namespace(&mut self, ns: &Namespace) {
        match ns.metadata.name.as_deref() {
            Some(name) if !name.is_empty() => {
                if let Some(seen) = &mut self.relisting_namespaces {
                    seen.insert(name.to_string());
                }
                self.writer.apply_namespace(name)
            }
            _ => warn!("Namespace without a name skipped"),
        }
    }

    /// Starts a re-list of Namespaces (see [`Self::begin_service_import_relist`]).
    pub fn begin_namespace_relist(&mut self) {
        self.relisting_namespaces = Some(BTreeSet::new());
    }

    /// Ends a re-list: every Namespace it did not deliver is removed.
    pub fn end_namespace_relist(&mut self) {
        if let Some(seen) = self.relisting_namespaces.take() {
            self.reset_namespace_names(seen);
        }
    }

    /// Removes a Namespace.
    pub fn delete_namespace(&mut self, name: &str) {
        self.writer.delete_namespace(name);
    }

    /// Replaces every Namespace with this list (a re-list).
    pub fn reset_namespaces(&mut self, namespaces: &[Namespace]) {
        self.reset_namespace_names(namespaces.iter().filter_map(|n| n.metadata.name.clone()));
    }

    /// Replaces every Namespace with these names (a re-list).
    pub fn reset_namespace_names(&mut self, names: impl IntoIterator<Item = String>) {
        self.writer
            .reset_namespaces(names.into_iter().filter(|n| !n.is_empty()));
    }

    /// Marks the first full sync of every kind as done: negatives stop being SERVFAIL.
    pub fn mark_synced(&mut self) {
        self.writer.mark_synced();
    }

    /// Publishes the changes, if any, to the servers; returns whether a new zone was published.
    pub fn publish(&mut self) -> bool {
        match self.writer.publish() {
            Some(zone) => {
                self.zone.store(zone);
                self.publishes += 1;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::{a_records, mk_namespace, mk_service_import, mk_slice};

    const MCS: [(&str, &str); 2] = [(LABEL_SERVICE_NAME, "h"), (LABEL_SOURCE_CLUSTER, "c1")];

    #[test]
    fn slices_of_one_cluster_are_united_and_nil_ready_counts_as_ready() {
        let mut index = DnsIndex::new(ZoneConfig::default()).unwrap();
        index.apply_namespace(&mk_namespace("ns"));
        index.apply_service_import(&mk_service_import(
            "ns",
            "h",
            mcs::ServiceImportType::Headless,
            &[],
        ));
        index.apply_endpoint_slice(&mk_slice(
            "ns",
            "h-1",
            &MCS,
            &[("10.0.0.1", None), ("10.0.0.9", Some(false))],
        ));
        index.apply_endpoint_slice(&mk_slice("ns", "h-2", &MCS, &[("10.0.0.2", Some(true))]));
        index.mark_synced();
        assert!(index.publish());
        assert_eq!(
            a_records(&index, "h.ns.svc.clusterset.local."),
            vec!["10.0.0.1", "10.0.0.2"]
        );
        index.delete_endpoint_slice("ns", "h-1");
        assert!(index.publish());
        assert_eq!(a_records(&index, "h.ns.svc.clusterset.local."), vec!["10.0.0.2"]);
        assert!(!index.publish(), "nothing changed");
    }

    #[test]
    fn slices_without_mcs_labels_are_ignored() {
        let mut index = DnsIndex::new(ZoneConfig::default()).unwrap();
        index.apply_namespace(&mk_namespace("ns"));
        index.apply_service_import(&mk_service_import(
            "ns",
            "h",
            mcs::ServiceImportType::Headless,
            &[],
        ));
        index.apply_endpoint_slice(&mk_slice(
            "ns",
            "plain",
            &[("kubernetes.io/service-name", "h")],
            &[("10.0.0.1", None)],
        ));
        index.publish();
        assert!(a_records(&index, "h.ns.svc.clusterset.local.").is_empty());
    }

    #[test]
    fn a_bad_import_is_skipped_and_withdraws_the_previous_version() {
        let mut index = DnsIndex::new(ZoneConfig::default()).unwrap();
        index.apply_namespace(&mk_namespace("ns"));
        index.apply_service_import(&mk_service_import(
            "ns",
            "s",
            mcs::ServiceImportType::ClusterSetIP,
            &["10.1.0.1"],
        ));
        index.publish();
        assert_eq!(a_records(&index, "s.ns.svc.clusterset.local."), vec!["10.1.0.1"]);
        index.apply_service_import(&mk_service_import(
            "ns",
            "s",
            mcs::ServiceImportType::ClusterSetIP,
            &["bogus"],
        ));
        index.publish();
        assert!(a_records(&index, "s.ns.svc.clusterset.local.").is_empty());
    }

    #[test]
    fn reset_removes_what_the_relist_no_longer_has() {
        let mut index = DnsIndex::new(ZoneConfig::default()).unwrap();
        index.reset_namespaces(&[mk_namespace("ns")]);
        let a = mk_service_import("ns", "a", mcs::ServiceImportType::ClusterSetIP, &["10.1.0.1"]);
        let b = mk_service_import("ns", "b", mcs::ServiceImportType::ClusterSetIP, &["10.1.0.2"]);
        index.reset_service_imports(&[a.clone(), b]);
        index.publish();
        index.reset_service_imports(&[a]);
        index.publish();
        assert_eq!(a_records(&index, "a.ns.svc.clusterset.local."), vec!["10.1.0.1"]);
        assert!(a_records(&index, "b.ns.svc.clusterset.local.").is_empty());
    }

    #[test]
    fn a_slice_that_changes_cluster_leaves_its_old_group() {
        let mut index = DnsIndex::new(ZoneConfig::default()).unwrap();
        index.apply_namespace(&mk_namespace("ns"));
        index.apply_service_import(&mk_service_import(
            "ns",
            "h",
            mcs::ServiceImportType::Headless,
            &[],
        ));
        let c2 = [(LABEL_SERVICE_NAME, "h"), (LABEL_SOURCE_CLUSTER, "c2")];
        index.apply_endpoint_slice(&mk_slice("ns", "h-1", &MCS, &[("10.0.0.1", None)]));
        index.apply_endpoint_slice(&mk_slice("ns", "h-2", &c2, &[("10.0.0.2", None)]));
        index.publish();
        assert_eq!(
            a_records(&index, "h.ns.svc.clusterset.local."),
            vec!["10.0.0.1", "10.0.0.2"]
        );
        // h-1 now says it comes from c2, with another address: c1 has nothing left.
        index.apply_endpoint_slice(&mk_slice("ns", "h-1", &c2, &[("10.0.0.3", None)]));
        index.publish();
        assert_eq!(
            a_records(&index, "h.ns.svc.clusterset.local."),
            vec!["10.0.0.2", "10.0.0.3"]
        );
        // A relist that no longer has h-2 and brings h-1 back unchanged.
        index.begin_endpoint_slice_relist();
        index.apply_endpoint_slice(&mk_slice("ns", "h-1", &c2, &[("10.0.0.3", None)]));
        index.end_endpoint_slice_relist();
        index.publish();
        assert_eq!(a_records(&index, "h.ns.svc.clusterset.local."), vec!["10.0.0.3"]);
    }
}
