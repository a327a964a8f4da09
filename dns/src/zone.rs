//! The immutable zone a query reads, and the writer that derives it from the domain structs.
//!
//! A [`Zone`] maps every name that exists (lower-case wire labels, relative to the origin) to a
//! [`Node`] holding, per query type, the answer already encoded as DNS wire bytes. A query hashes
//! its name, finds the node and copies the bytes; everything else was done at publish time.
//!
//! The map is split into [`SHARDS`] copy-on-write shards behind `Arc`s, so a [`ZoneWriter`] that
//! changes one service clones the shard pointers and the one or two shards it touches, never the
//! whole zone.
//!
//! `zone/snapshot.rs` holds the published [`Zone`] and its name map, `zone/writer.rs` the
//! [`ZoneWriter`] that keeps the state per service and publishes, `zone/records.rs` the building
//! of one service's names and pre-encoded answers.

mod records;
mod snapshot;
mod writer;

pub(crate) use self::snapshot::Answer;
pub use self::{
    snapshot::Zone,
    writer::{ZoneInput, ZoneWriter},
};

use std::{net::IpAddr, sync::Arc};

use hickory_proto::rr::Name;

use crate::{Error, Result};

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
