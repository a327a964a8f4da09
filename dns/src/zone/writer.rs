//! The single writer of a zone: the state per service, and publishing at a cost proportional
//! to what changed.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use hickory_proto::rr::{
    RData, Record, RecordType,
    rdata::{NS, SOA, TXT},
};

use super::{
    DNS_SCHEMA_VERSION, DNS_VERSION_TTL, Origin, SOA_EXPIRE, SOA_REFRESH, SOA_RETRY, ZoneConfig, key_of,
    records::{address_records, encode, service_nodes, split_families},
    snapshot::{NameMap, Node, SoaFields, Zone},
};
use crate::{
    Result,
    model::{Endpoint, Import, ImportKind, ServiceRef},
};

/// Everything a zone is built from, for [`Zone::build`].
#[derive(Debug, Clone, Default)]
pub struct ZoneInput {
    /// Namespaces that exist locally: only their imports are answered.
    pub namespaces: Vec<String>,
    /// The imports.
    pub imports: Vec<Import>,
    /// Endpoints per (service, source cluster id).
    pub endpoints: Vec<(ServiceRef, String, Vec<Endpoint>)>,
    /// Whether the input is complete (negative answers are SERVFAIL until then).
    pub synced: bool,
}

#[derive(Debug, Default)]
struct ServiceState {
    import: Option<Import>,
    /// Per source cluster, its endpoint sets (one per EndpointSlice, shared with the caller).
    endpoints: BTreeMap<String, Vec<Arc<[Endpoint]>>>,
    published: Vec<Arc<[u8]>>,
    records: usize,
}

/// The single writer of a zone: takes changes to imports, endpoints and namespaces, and publishes
/// a new [`Zone`] whose cost is proportional to what changed.
#[derive(Debug)]
pub struct ZoneWriter {
    origin: Arc<Origin>,
    nameserver_addrs: Vec<IpAddr>,
    names: NameMap,
    services: BTreeMap<ServiceRef, ServiceState>,
    namespaces: BTreeSet<String>,
    dirty_services: BTreeSet<ServiceRef>,
    dirty_namespaces: BTreeSet<String>,
    synced: bool,
    changed: bool,
    generation: u64,
    serial: u32,
    record_count: usize,
    current: Option<Arc<Zone>>,
}

impl ZoneWriter {
    /// An empty, not yet synced zone with its static names (apex SOA/NS, `dns-version`, `svc`, `pod`).
    pub fn new(config: ZoneConfig) -> Result<Self> {
        let origin = Arc::new(Origin::new(&config)?);
        let mut writer = Self {
            origin,
            nameserver_addrs: config.nameserver_addrs,
            names: NameMap::new(),
            services: BTreeMap::new(),
            namespaces: BTreeSet::new(),
            dirty_services: BTreeSet::new(),
            dirty_namespaces: BTreeSet::new(),
            synced: false,
            changed: true,
            generation: 0,
            serial: 0,
            record_count: 0,
            current: None,
        };
        writer.insert_static_names()?;
        Ok(writer)
    }

    fn insert_static_names(&mut self) -> Result<()> {
        let o = self.origin.clone();
        // dns-version TXT
        let dv = o.fqdn("dns-version")?;
        let txt = Record::from_rdata(
            dv.clone(),
            DNS_VERSION_TTL,
            RData::TXT(TXT::new(vec![DNS_SCHEMA_VERSION.to_string()])),
        );
        let node = Node {
            answers: vec![encode(&dv, RecordType::TXT, vec![txt], vec![])?].into(),
        };
        self.insert_counted(key_of("dns-version"), node);
        // the name server and its parent
        let ns = o.nameserver();
        let (v4, v6) = split_families(&self.nameserver_addrs);
        let mut answers = Vec::new();
        if !v4.is_empty() {
            answers.push(encode(
                &ns,
                RecordType::A,
                address_records(&ns, o.ttl, &v4),
                vec![],
            )?);
        }
        if !v6.is_empty() {
            answers.push(encode(
                &ns,
                RecordType::AAAA,
                address_records(&ns, o.ttl, &v6),
                vec![],
            )?);
        }
        self.insert_counted(
            key_of("ns.dns"),
            Node {
                answers: answers.into(),
            },
        );
        for ent in ["dns", "svc", "pod"] {
            self.names.insert(key_of(ent), Node::default());
        }
        Ok(())
    }

    fn insert_counted(&mut self, key: Arc<[u8]>, node: Node) {
        self.record_count += node.record_count();
        self.names.insert(key, node);
    }

    fn apex_node(&self) -> Result<Node> {
        let o = &self.origin;
        let apex = o.name.clone();
        let soa = Record::from_rdata(apex.clone(), o.soa_ttl, RData::SOA(self.soa_rdata()));
        let ns_name = o.nameserver();
        let ns = Record::from_rdata(apex.clone(), o.ttl, RData::NS(NS(ns_name.clone())));
        let (v4, v6) = split_families(&self.nameserver_addrs);
        let mut glue = address_records(&ns_name, o.ttl, &v4);
        glue.extend(address_records(&ns_name, o.ttl, &v6));
        Ok(Node {
            answers: vec![
                encode(&apex, RecordType::SOA, vec![soa], vec![])?,
                encode(&apex, RecordType::NS, vec![ns], glue)?,
            ]
            .into(),
        })
    }

    pub(crate) fn soa_rdata(&self) -> SOA {
        SOA::new(
            self.origin.nameserver(),
            self.origin.hostmaster(),
            self.serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            self.origin.ttl,
        )
    }

    /// Adds or replaces an import.
    pub fn apply_import(&mut self, import: Import) {
        let key = import.service_ref();
        let state = self.services.entry(key.clone()).or_default();
        if state.import.as_ref() != Some(&import) {
            state.import = Some(import);
            self.dirty_services.insert(key);
        }
    }

    /// Removes an import (its endpoints stay known, answered again if the import returns).
    pub fn delete_import(&mut self, service: &ServiceRef) {
        if let Some(state) = self.services.get_mut(service)
            && state.import.take().is_some()
        {
            self.dirty_services.insert(service.clone());
        }
    }

    /// Replaces the endpoints of one source cluster of a service (empty = none from that cluster).
    pub fn apply_endpoints(&mut self, service: ServiceRef, cluster: &str, endpoints: Vec<Endpoint>) {
        let sets = if endpoints.is_empty() {
            Vec::new()
        } else {
            vec![Arc::from(endpoints)]
        };
        self.apply_endpoint_sets(service, cluster, sets);
    }

    /// Replaces the endpoints of one source cluster of a service with the union of these sets
    /// (one per EndpointSlice). The sets are kept as they are, shared with the caller, so an
    /// index that already holds them pays no second copy.
    ///
    /// Only headless answers are made of endpoints: a change to a ClusterSetIP service's
    /// endpoints is kept (for the day the import turns headless) but publishes nothing.
    pub fn apply_endpoint_sets(
        &mut self,
        service: ServiceRef,
        cluster: &str,
        mut sets: Vec<Arc<[Endpoint]>>,
    ) {
        sets.retain(|set| !set.is_empty());
        let Some(state) = self.services.get_mut(&service) else {
            if !sets.is_empty() {
                let state = self.services.entry(service).or_default();
                state.endpoints.insert(cluster.to_string(), sets);
            }
            return;
        };
        let changed = match state.endpoints.get(cluster) {
            None => !sets.is_empty(),
            Some(old) => !same_sets(old, &sets),
        };
        // Stored even when equal: the caller's sets replace the old ones, so that no old copy
        // outlives them.
        match state.endpoints.get_mut(cluster) {
            Some(old) if !sets.is_empty() => *old = sets,
            Some(_) => {
                state.endpoints.remove(cluster);
            }
            None if !sets.is_empty() => {
                state.endpoints.insert(cluster.to_string(), sets);
            }
            None => {}
        }
        if !changed {
            return;
        }
        match state.import.as_ref().map(|i| i.kind) {
            Some(ImportKind::Headless) => {
                self.dirty_services.insert(service);
            }
            Some(ImportKind::ClusterSetIp) => {}
            // Nothing of it is published: forget it once nothing is left.
            None => {
                if state.endpoints.is_empty() && !self.dirty_services.contains(&service) {
                    self.services.remove(&service);
                }
            }
        }
    }

    /// Removes every endpoint of one source cluster of a service.
    pub fn delete_endpoints(&mut self, service: &ServiceRef, cluster: &str) {
        self.apply_endpoints(service.clone(), cluster, Vec::new());
    }

    /// Marks a namespace as existing locally.
    pub fn apply_namespace(&mut self, namespace: &str) {
        if self.namespaces.insert(namespace.to_string()) {
            self.dirty_namespaces.insert(namespace.to_string());
        }
    }

    /// Marks a namespace as gone: its names become NXDOMAIN.
    pub fn delete_namespace(&mut self, namespace: &str) {
        if self.namespaces.remove(namespace) {
            self.dirty_namespaces.insert(namespace.to_string());
        }
    }

    /// Replaces the whole namespace set (a re-list).
    pub fn reset_namespaces(&mut self, namespaces: impl IntoIterator<Item = String>) {
        let new: BTreeSet<String> = namespaces.into_iter().collect();
        for gone in self.namespaces.difference(&new) {
            self.dirty_namespaces.insert(gone.clone());
        }
        for added in new.difference(&self.namespaces) {
            self.dirty_namespaces.insert(added.clone());
        }
        self.namespaces = new;
    }

    /// The services the writer knows, for re-lists that replace a whole kind.
    pub fn services(&self) -> impl Iterator<Item = &ServiceRef> {
        self.services.keys()
    }

    /// Marks the data as complete: from now on negative answers are NXDOMAIN/NODATA.
    pub fn mark_synced(&mut self) {
        if !self.synced {
            self.synced = true;
            self.changed = true;
        }
    }

    /// Whether something changed since the last publish.
    pub fn has_changes(&self) -> bool {
        self.changed || !self.dirty_services.is_empty() || !self.dirty_namespaces.is_empty()
    }

    /// Publishes a new zone if anything changed since the last publish.
    pub fn publish(&mut self) -> Option<Arc<Zone>> {
        if !self.has_changes() {
            return None;
        }
        Some(self.publish_now())
    }

    /// Publishes a new zone (or returns the current one when nothing changed).
    pub fn publish_now(&mut self) -> Arc<Zone> {
        if !self.has_changes()
            && let Some(current) = &self.current
        {
            return current.clone();
        }
        for ns in std::mem::take(&mut self.dirty_namespaces) {
            let key = key_of(&format!("{ns}.svc"));
            if self.namespaces.contains(&ns) {
                self.names.insert(key, Node::default());
            } else {
                self.names.remove(&key);
            }
            let start = ServiceRef::new(ns.clone(), String::new());
            let in_ns: Vec<ServiceRef> = self
                .services
                .range(start..)
                .take_while(|(s, _)| s.namespace == ns)
                .map(|(s, _)| s.clone())
                .collect();
            self.dirty_services.extend(in_ns);
        }
        for service in std::mem::take(&mut self.dirty_services) {
            self.republish_service(&service);
        }
        let now = SystemTime::now();
        let unix = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as u32;
        self.serial = unix.max(self.serial.wrapping_add(1));
        match self.apex_node() {
            Ok(node) => self.names.insert(key_of(""), node),
            Err(error) => tracing::error!(%error, "cannot encode the zone apex"),
        }
        self.generation += 1;
        self.changed = false;
        let zone = Arc::new(Zone {
            origin: self.origin.clone(),
            names: self.names.clone(),
            soa: SoaFields {
                serial: self.serial,
                minimum: self.origin.ttl,
            },
            synced: self.synced,
            generation: self.generation,
            // apex SOA + NS
            record_count: self.record_count + 2,
            published_at: now,
        });
        self.current = Some(zone.clone());
        zone
    }

    fn republish_service(&mut self, service: &ServiceRef) {
        let Some(state) = self.services.get_mut(service) else {
            return;
        };
        for key in state.published.drain(..) {
            self.names.remove(&key);
        }
        self.record_count -= state.records;
        state.records = 0;
        let nodes = match (&state.import, self.namespaces.contains(&service.namespace)) {
            (Some(import), true) => match service_nodes(&self.origin, import, &state.endpoints) {
                Ok(nodes) => nodes,
                Err(error) => {
                    tracing::warn!(%error, namespace = %service.namespace, name = %service.name, "service not served");
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        for (key, node) in nodes {
            state.records += node.record_count();
            state.published.push(key.clone());
            self.names.insert(key, node);
        }
        self.record_count += state.records;
        if state.import.is_none() && state.endpoints.is_empty() {
            self.services.remove(service);
        }
    }
}

/// Whether two lists of endpoint sets hold the same endpoints in the same order (sets shared
/// with the caller compare by pointer first).
fn same_sets(a: &[Arc<[Endpoint]>], b: &[Arc<[Endpoint]>]) -> bool {
    if a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y) || x == y) {
        return true;
    }
    a.iter()
        .flat_map(|s| s.iter())
        .eq(b.iter().flat_map(|s| s.iter()))
}
