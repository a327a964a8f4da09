//! The published zone: an immutable snapshot of every name and its pre-encoded answers.

use std::{collections::HashMap, hash::BuildHasher, sync::Arc, time::SystemTime};

use foldhash::fast::FixedState;
use hickory_proto::rr::RecordType;

use super::{Origin, SHARD_SEED, SHARDS, ZoneConfig, ZoneInput, ZoneWriter};
use crate::Result;

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

    pub(super) fn record_count(&self) -> usize {
        self.answers.iter().map(|a| usize::from(a.answers)).sum()
    }
}

pub(super) type Shard = HashMap<Arc<[u8]>, Node, FixedState>;

/// The copy-on-write sharded map from name key to node.
#[derive(Clone, Debug)]
pub(super) struct NameMap {
    shards: Arc<[Arc<Shard>]>,
}

impl NameMap {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Arc::new(Shard::with_hasher(FixedState::default())))
                .collect(),
        }
    }

    #[inline]
    pub(super) fn shard_index(key: &[u8]) -> usize {
        (FixedState::with_seed(SHARD_SEED).hash_one(key) >> 54) as usize % SHARDS
    }

    #[inline]
    pub(super) fn get(&self, key: &[u8]) -> Option<&Node> {
        self.shards[Self::shard_index(key)].get(key)
    }

    pub(super) fn shard_mut(&mut self, key: &[u8]) -> &mut Shard {
        let i = Self::shard_index(key);
        let shards = Arc::make_mut(&mut self.shards);
        Arc::make_mut(&mut shards[i])
    }

    pub(super) fn insert(&mut self, key: Arc<[u8]>, node: Node) {
        self.shard_mut(&key).insert(key, node);
    }

    pub(super) fn remove(&mut self, key: &[u8]) {
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
    pub(super) names: NameMap,
    pub(crate) soa: SoaFields,
    pub(super) synced: bool,
    pub(super) generation: u64,
    pub(super) record_count: usize,
    pub(super) published_at: SystemTime,
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
