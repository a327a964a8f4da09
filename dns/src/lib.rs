//! mcsd-dns: the authoritative DNS server for `clusterset.local`, without any Kubernetes dependency.
//!
//! Domain structs go in, an immutable pre-encoded [`Zone`] comes out and is published through one
//! `ArcSwap`; the UDP and TCP servers answer from whatever zone is current, without locks.
//!
//! ```text
//!  Import{ns,name,kind,ips,ports}   Endpoint{addresses,hostname,ready} per (service, cluster)
//!  namespace names                          │
//!        └──────────────┬───────────────────┘
//!                       ▼
//!                 ZoneWriter ── publish() (cost ∝ what changed) ──► Arc<Zone>
//!                                                                      │ ArcSwap::store
//!                                                                      ▼
//!   UDP/TCP sockets ──► server ──► handler::answer(zone.load(), query, transport, out)
//!                                    │  name → Node → pre-encoded answer per qtype
//!                                    └► reply bytes: header + question echo + body (+ OPT)
//! ```
//!
//! Zone names map (lower-case wire labels relative to the origin) to nodes; a name exists in the
//! map exactly when the MCS DNS response-code matrix says it exists, so NXDOMAIN versus NODATA is
//! one lookup.

pub mod admin;
mod error;
pub mod fuzzing;
pub mod handler;
pub mod metrics;
pub mod model;
pub mod server;
pub mod zone;

pub use admin::{AdminExtras, serve_admin, serve_admin_with};
pub use error::{Error, Result};
pub use handler::{Outcome, SharedZone, Transport, answer, answer_fast, answer_full};
pub use metrics::Metrics;
pub use model::{Endpoint, Import, ImportKind, Port, Protocol, ServiceRef};
pub use server::{ServeOptions, UDP_BATCH, UdpWorker, serve};
pub use zone::{Zone, ZoneConfig, ZoneInput, ZoneWriter};
