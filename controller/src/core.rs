//! The model of mcsd, pure and synchronous: it does no I/O and imports nothing else of the
//! crate, so every rule of the ClusterSet is a function of data and testable without a cluster.
//!
//! ```text
//!  export (a ServiceExport + its Service) ──▶ exchange record ──▶ guard ──▶ view ──▶ merge
//!                                                                              │
//!          conditions ◀── import (ServiceImport, derived Service, slices) ◀────┘
//!  dns_index: ServiceImports + MCS EndpointSlices + Namespaces ──▶ the DNS zone
//!  why: what an explanation of a name holds, and its text
//!  hub: hub mode's names and rules (member namespaces, what a member reads, the hub's copy)
//!  peer_secret, status_lease: the formats of the peer Secret and the status Lease
//!  fuzzing: what a peer controls (exchange objects, the peer Secret), fuzzed through the guard
//! ```

pub mod conditions;
pub mod dns_index;
pub mod exchange;
pub mod export;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod fuzzing;
pub mod gate;
pub mod guard;
pub mod hub;
pub mod import;
pub mod merge;
pub mod objects;
pub mod peer_secret;
pub mod sandbox_file;
pub mod status_lease;
pub mod view;
pub mod why;
