//! The immutable zone a query reads, and the writer that derives it from the domain structs.
//!
//! A [`Zone`] maps every name that exists (lower-case wire labels, relative to the origin) to a
//! [`Node`] holding, per query type, the answer already encoded as DNS wire bytes. A query hashes
//! its name, finds the node and copies the bytes; everything else was done at publish time.
//!
//! The map is split into [`SHARDS`] copy-on-write shards behind `Arc`s, so a [`ZoneWriter`] that
//! changes one service clones the shard pointers and the one or two shards it touches, never the
//! whole zone.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::BuildHasher,
    net::IpAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use foldhash::fast::FixedState;
use hickory_proto::{
    op::{Message, OpCode, Query},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, NS, SOA, SRV, TXT},
    },
};

use crate::{
    Error, Result,
    model::{Endpoint, Import, ImportKind, Port, ServiceRef, dashed_ip},
};

/// Number of copy-on-write shards of the name map.
pub const SHARDS: usize = 1024;
const SHARD_SEED: u64 = 0x6d63_7364_2d64_6e73;

/// The version string `dns-version.<zone>` answers (what CoreDNS answers).
pub const DNS_SCHEMA_VERSION: &str = "1.1.0";
/// TTL of the `dns-version` TXT record.
pub const DNS_VERSION_TTL: u32 = 28800;
/// SOA refresh (CoreDNS's value), used by every SOA mcsd writes.
pub(crate) const SOA_REFRESH: i32 = 7200;
/// SOA retry (CoreDNS's value).
pub(crate) const SOA_RETRY: i32 = 1800;
/// SOA expire (CoreDNS's value).
pub(crate) const SOA_EXPIRE: i32 = 86400;

/// What the zone is called and how it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The zone name, e.g. `clusterset.local` (a trailing dot is optional).
    pub origin: String,
    /// TTL of data records, the SOA's own TTL is `min(300, ttl)` and its minimum is `ttl`.
    pub ttl: u32,
    /// Addresses of the zone's name server `ns.dns.<zone>` (glue of the apex NS answer).
    pub nameserver_addrs: Vec<IpAddr>,
    /// The EDNS(0) UDP payload size the server advertises and the most it sends over UDP.
    pub max_udp_payload: u16,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        Self {
            origin: "clusterset.local".to_string(),
            ttl: 5,
            nameserver_addrs: Vec::new(),
            max_udp_payload: 1232,
        }
    }
}

/// The zone's origin in its several forms, computed once.
#[derive(Debug)]
pub(crate) struct Origin {
    /// Lower-case FQDN.
    pub(crate) name: Name,
    /// Lower-case text without the trailing dot.
    pub(crate) text: String,
    /// Lower-case wire form including the root label.
    pub(crate) wire: Box<[u8]>,
    pub(crate) ttl: u32,
    pub(crate) soa_ttl: u32,
    pub(crate) max_udp_payload: u16,
}

impl Origin {
    fn new(config: &ZoneConfig) -> Result<Self> {
        let text = config.origin.trim_end_matches('.').to_ascii_lowercase();
        if text.is_empty() {
            return Err(Error::InvalidZoneName {
                name: config.origin.clone(),
                reason: "the root zone cannot be served".into(),
            });
        }
        let name = Name::from_ascii(format!("{text}.")).map_err(|e| Error::InvalidZoneName {
            name: config.origin.clone(),
            reason: e.to_string(),
        })?;
        let mut wire = Vec::with_capacity(text.len() + 2);
        for label in text.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(Error::InvalidZoneName {
                    name: config.origin.clone(),
                    reason: "empty or over-long label".into(),
                });
            }
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
        wire.push(0);
        Ok(Self {
            name,
            text,
            wire: wire.into_boxed_slice(),
            ttl: config.ttl,
            soa_ttl: config.ttl.min(300),
            max_udp_payload: config.max_udp_payload.max(512),
        })
    }

    /// The FQDN of `relative` (text, no trailing dot) in this zone; `""` is the apex.
    fn fqdn(&self, relative: &str) -> Result<Name> {
        let text = if relative.is_empty() {
            format!("{}.", self.text)
        } else {
            format!("{relative}.{}.", self.text)
        };
        let name = Name::from_ascii(&text).map_err(|e| Error::InvalidName {
            name: text.clone(),
            reason: e.to_string(),
        })?;
        if name.len() > 253 || wire_len(&text) > 255 {
            return Err(Error::InvalidName {
                name: text,
                reason: "longer than 253 characters".into(),
            });
        }
        Ok(name)
    }

    fn nameserver(&self) -> Name {
        self.fqdn("ns.dns").unwrap_or_else(|_| self.name.clone())
    }

    fn hostmaster(&self) -> Name {
        self.fqdn("hostmaster").unwrap_or_else(|_| self.name.clone())
    }
}

fn wire_len(fqdn_text: &str) -> usize {
    fqdn_text
        .trim_end_matches('.')
        .split('.')
        .map(|l| l.len() + 1)
        .sum::<usize>()
        + 1
}

/// The lower-case wire key (labels without the root, relative to the origin) of relative text.
fn key_of(relative: &str) -> Arc<[u8]> {
    let mut key = Vec::with_capacity(relative.len() + 1);
    if !relative.is_empty() {
        for label in relative.split('.') {
            key.push(label.len() as u8);
            key.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    key.into()
}

/// One pre-encoded answer: the header counts and every byte after the question section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) qtype: u16,
    pub(crate) answers: u16,
    pub(crate) authorities: u16,
    pub(crate) additionals: u16,
    /// Records after the question; name pointers refer to the question name at offset 12.
    pub(crate) body: Box<[u8]>,
}

/// A name that exists, with its answers ordered by preference for ANY (RFC 8482: one RRset).
///
/// The map holds nodes by value: a lookup goes from the map's bucket straight to the answers
/// (one allocation with the reference counts in front), not through a node pointer first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Node {
    pub(crate) answers: Arc<[Answer]>,
}

impl Node {
    pub(crate) fn get(&self, qtype: u16) -> Option<&Answer> {
        if qtype == u16::from(RecordType::ANY) {
            return self.answers.first();
        }
        self.answers.iter().find(|a| a.qtype == qtype)
    }

    fn record_count(&self) -> usize {
        self.answers.iter().map(|a| usize::from(a.answers)).sum()
    }
}

type Shard = HashMap<Arc<[u8]>, Node, FixedState>;

/// The copy-on-write sharded map from name key to node.
#[derive(Clone, Debug)]
struct NameMap {
    shards: Arc<[Arc<Shard>]>,
}

impl NameMap {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Arc::new(Shard::with_hasher(FixedState::default())))
                .collect(),
        }
    }

    #[inline]
    fn shard_index(key: &[u8]) -> usize {
        (FixedState::with_seed(SHARD_SEED).hash_one(key) >> 54) as usize % SHARDS
    }

    #[inline]
    fn get(&self, key: &[u8]) -> Option<&Node> {
        self.shards[Self::shard_index(key)].get(key)
    }

    fn shard_mut(&mut self, key: &[u8]) -> &mut Shard {
        let i = Self::shard_index(key);
        let shards = Arc::make_mut(&mut self.shards);
        Arc::make_mut(&mut shards[i])
    }

    fn insert(&mut self, key: Arc<[u8]>, node: Node) {
        self.shard_mut(&key).insert(key, node);
    }

    fn remove(&mut self, key: &[u8]) {
        self.shard_mut(key).remove(key);
    }
}

/// The SOA fields negative answers carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SoaFields {
    pub(crate) serial: u32,
    pub(crate) minimum: u32,
}

/// An immutable, fully pre-encoded snapshot of the zone. Cheap to clone (shared shards).
#[derive(Debug, Clone)]
pub struct Zone {
    pub(crate) origin: Arc<Origin>,
    names: NameMap,
    pub(crate) soa: SoaFields,
    synced: bool,
    generation: u64,
    record_count: usize,
    published_at: SystemTime,
}

impl Zone {
    /// Builds a zone from a complete input in one go (the incremental way is [`ZoneWriter`]).
    pub fn build(config: &ZoneConfig, input: &ZoneInput) -> Result<Zone> {
        let mut writer = ZoneWriter::new(config.clone())?;
        for ns in &input.namespaces {
            writer.apply_namespace(ns);
        }
        for import in &input.imports {
            writer.apply_import(import.clone());
        }
        for (service, cluster, endpoints) in &input.endpoints {
            writer.apply_endpoints(service.clone(), cluster, endpoints.clone());
        }
        if input.synced {
            writer.mark_synced();
        }
        Ok((*writer.publish_now()).clone())
    }

    /// Whether the data has been fully synced: before that, negative answers are SERVFAIL.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Counts publishes; the first published zone is generation 1.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The SOA serial: Unix time of the last change, strictly increasing.
    pub fn serial(&self) -> u32 {
        self.soa.serial
    }

    /// Resource records the zone answers (answer sections, ANY not double counted).
    pub fn record_count(&self) -> usize {
        self.record_count
    }

    /// When this snapshot was published.
    pub fn published_at(&self) -> SystemTime {
        self.published_at
    }

    /// The zone name, lower case, without the trailing dot.
    pub fn origin(&self) -> &str {
        &self.origin.text
    }

    /// The node of a relative lower-case wire key.
    #[inline]
    pub(crate) fn lookup(&self, key: &[u8]) -> Option<&Node> {
        self.names.get(key)
    }
}

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

fn split_families(ips: &[IpAddr]) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ip in ips {
        let list = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
        if !list.contains(ip) {
            list.push(*ip);
        }
    }
    (v4, v6)
}

fn address_records(owner: &Name, ttl: u32, ips: &[IpAddr]) -> Vec<Record> {
    ips.iter()
        .map(|ip| {
            let rdata = match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            Record::from_rdata(owner.clone(), ttl, rdata)
        })
        .collect()
}

/// Encodes a response to `owner qtype` and keeps what follows the question.
pub(crate) fn encode(
    owner: &Name,
    qtype: RecordType,
    answers: Vec<Record>,
    additionals: Vec<Record>,
) -> Result<Answer> {
    let mut msg = Message::response(0, OpCode::Query);
    msg.add_query(Query::query(owner.clone(), qtype));
    msg.add_answers(answers);
    msg.add_additionals(additionals);
    let bytes = msg.to_vec().map_err(|e| Error::Encode {
        name: owner.to_string(),
        reason: e.to_string(),
    })?;
    let question_end = 12 + wire_len(&owner.to_ascii()) + 4;
    let count = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    Ok(Answer {
        qtype: qtype.into(),
        answers: count(6),
        authorities: count(8),
        additionals: count(10),
        body: bytes[question_end..].into(),
    })
}

/// One (cluster, hostname label, address) triple of a ready endpoint address.
struct Ready<'a> {
    cluster: &'a str,
    host: String,
    ip: IpAddr,
}

fn srv_label(port: &Port) -> Option<String> {
    port.name
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(|n| format!("_{}._{}", n.to_ascii_lowercase(), port.protocol.label()))
}

/// SRV answer records and their additional address records. `candidates` is a list of (target,
/// address) pairs, `ports` the ports; weight = floor(100 / (candidates × ports)), at least 1.
fn srv_records(
    owner: &Name,
    ttl: u32,
    candidates: &[(Name, Option<IpAddr>)],
    ports: &[&Port],
) -> (Vec<Record>, Vec<Record>) {
    let n = candidates.len() * ports.len();
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let weight = u16::try_from((100 / n).max(1)).unwrap_or(1);
    let mut seen_srv: Vec<(&Name, u16)> = Vec::new();
    let mut seen_addr: Vec<(&Name, IpAddr)> = Vec::new();
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    for port in ports {
        for (target, ip) in candidates {
            if !seen_srv.contains(&(target, port.port)) {
                seen_srv.push((target, port.port));
                answers.push(Record::from_rdata(
                    owner.clone(),
                    ttl,
                    RData::SRV(SRV::new(0, weight, port.port, target.clone())),
                ));
            }
            if let Some(ip) = ip
                && !seen_addr.contains(&(target, *ip))
            {
                seen_addr.push((target, *ip));
                additionals.extend(address_records(target, ttl, &[*ip]));
            }
        }
    }
    (answers, additionals)
}

/// The nodes of the service name itself (A, AAAA, bare-name SRV) and of its `_port._proto`
/// names, shared by ClusterSetIP and Headless imports.
#[allow(clippy::too_many_arguments)]
fn push_service_name(
    out: &mut Vec<(Arc<[u8]>, Node)>,
    origin: &Origin,
    base: &str,
    svc_name: &Name,
    (v4, v6): (&[IpAddr], &[IpAddr]),
    candidates: &[(Name, Option<IpAddr>)],
    all_ports: &[&Port],
    named_ports: &BTreeMap<String, Vec<&Port>>,
) -> Result<()> {
    let ttl = origin.ttl;
    let mut answers = Vec::new();
    if !v4.is_empty() {
        answers.push(encode(
            svc_name,
            RecordType::A,
            address_records(svc_name, ttl, v4),
            vec![],
        )?);
    }
    if !v6.is_empty() {
        answers.push(encode(
            svc_name,
            RecordType::AAAA,
            address_records(svc_name, ttl, v6),
            vec![],
        )?);
    }
    let (srv, extra) = srv_records(svc_name, ttl, candidates, all_ports);
    if !srv.is_empty() {
        answers.push(encode(svc_name, RecordType::SRV, srv, extra)?);
    }
    out.push((
        key_of(base),
        Node {
            answers: answers.into(),
        },
    ));
    for (label, ports) in named_ports {
        let rel = format!("{label}.{base}");
        let owner = origin.fqdn(&rel)?;
        let (srv, extra) = srv_records(&owner, ttl, candidates, ports);
        out.push((
            key_of(&rel),
            Node {
                answers: vec![encode(&owner, RecordType::SRV, srv, extra)?].into(),
            },
        ));
    }
    Ok(())
}

/// Every name one service owns, with its pre-encoded node.
fn service_nodes(
    origin: &Origin,
    import: &Import,
    endpoints: &BTreeMap<String, Vec<Arc<[Endpoint]>>>,
) -> Result<Vec<(Arc<[u8]>, Node)>> {
    let ttl = origin.ttl;
    let base = format!(
        "{}.{}.svc",
        import.name.to_ascii_lowercase(),
        import.namespace.to_ascii_lowercase()
    );
    let svc_name = origin.fqdn(&base)?;
    let mut out = Vec::new();
    let mut named_ports: BTreeMap<String, Vec<&Port>> = BTreeMap::new();
    for port in &import.ports {
        if let Some(label) = srv_label(port) {
            named_ports.entry(label).or_default().push(port);
        }
    }
    let all_ports: Vec<&Port> = import.ports.iter().collect();
    match import.kind {
        ImportKind::ClusterSetIp => {
            let (v4, v6) = split_families(&import.ips);
            let mut ips = v4.clone();
            ips.extend(&v6);
            let candidates: Vec<(Name, Option<IpAddr>)> = if ips.is_empty() {
                vec![(svc_name.clone(), None)]
            } else {
                ips.iter().map(|ip| (svc_name.clone(), Some(*ip))).collect()
            };
            push_service_name(
                &mut out,
                origin,
                &base,
                &svc_name,
                (&v4, &v6),
                &candidates,
                &all_ports,
                &named_ports,
            )?;
        }
        ImportKind::Headless => {
            let mut ready = Vec::new();
            for (cluster, sets) in endpoints {
                for ep in sets.iter().flat_map(|set| set.iter()).filter(|e| e.ready) {
                    for ip in &ep.addresses {
                        let host = match ep.hostname.as_deref().filter(|h| !h.is_empty()) {
                            Some(h) => h.to_ascii_lowercase(),
                            None => dashed_ip(ip),
                        };
                        ready.push(Ready {
                            cluster,
                            host,
                            ip: *ip,
                        });
                    }
                }
            }
            if ready.is_empty() {
                // Headless without ready endpoints does not exist: NXDOMAIN.
                return Ok(out);
            }
            let mut targets: BTreeMap<(String, String), Vec<IpAddr>> = BTreeMap::new();
            let mut candidates = Vec::new();
            let mut all_ips = Vec::new();
            for r in &ready {
                let rel = format!("{}.{}.{base}", r.host, r.cluster.to_ascii_lowercase());
                let target = match origin.fqdn(&rel) {
                    Ok(t) => t,
                    Err(error) => {
                        tracing::warn!(%error, service = %base, "endpoint name not served");
                        continue;
                    }
                };
                let ips = targets.entry((rel, r.host.clone())).or_default();
                if !ips.contains(&r.ip) {
                    ips.push(r.ip);
                }
                candidates.push((target, Some(r.ip)));
                all_ips.push(r.ip);
            }
            let (v4, v6) = split_families(&all_ips);
            push_service_name(
                &mut out,
                origin,
                &base,
                &svc_name,
                (&v4, &v6),
                &candidates,
                &all_ports,
                &named_ports,
            )?;
            for ((rel, _), ips) in targets {
                let owner = origin.fqdn(&rel)?;
                let (v4, v6) = split_families(&ips);
                let mut answers = Vec::new();
                if !v4.is_empty() {
                    answers.push(encode(
                        &owner,
                        RecordType::A,
                        address_records(&owner, ttl, &v4),
                        vec![],
                    )?);
                }
                if !v6.is_empty() {
                    answers.push(encode(
                        &owner,
                        RecordType::AAAA,
                        address_records(&owner, ttl, &v6),
                        vec![],
                    )?);
                }
                out.push((
                    key_of(&rel),
                    Node {
                        answers: answers.into(),
                    },
                ));
            }
        }
    }
    Ok(out)
}
