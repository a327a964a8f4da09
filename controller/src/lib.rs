//! mcsd: Kubernetes Multicluster Services (KEP-1645) for a ClusterSet.
//!
//! This crate is the Kubernetes-aware part of mcsd and its one binary, `mcsd`. The API types live
//! in `mcsd-crds`; the DNS server, which knows nothing of Kubernetes, in `mcsd-dns`. Its folders
//! say what may do I/O:
//!
//! ```text
//!  commands/  the command line: parsing, join, leave, status, why        ─┐
//!  process/   one start-up for `mcsd run`, `mcsd sandbox`, `mcsd dns`     │ do I/O
//!  daemon/    the running daemon: watches, peers, leader, writers, admin  │
//!  cluster/   talking to API servers: kubeconfigs, checks, identity,      │
//!             tokens, the watch driver, the DNS feed                     ─┘
//!  core/      the model, pure and synchronous: exchange records, the guard, the View, the
//!             merge, exports and imports, conditions, the DNS index, explanations, formats
//! ```
//!
//! `core` imports nothing else of the crate; `commands` never imports `daemon`
//! (`tests/layout.rs` checks both, and that no two modules import each other in a circle).

pub mod cluster;
pub mod commands;
pub mod core;
pub mod daemon;
pub mod process;
