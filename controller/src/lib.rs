//! mcsd: Kubernetes Multicluster Services (KEP-1645) for a ClusterSet.
//!
//! This crate is the Kubernetes-aware part of mcsd and its one binary, `mcsd`. The API types live
//! in `mcsd-crds`; the DNS server, which knows nothing of Kubernetes, in `mcsd-dns`.

pub mod admin_client;
pub mod cli;
pub mod conditions;
pub mod daemon;
pub mod dns_index;
pub mod exchange;
pub mod export;
#[cfg(test)]
mod fixtures;
pub mod guard;
pub mod identity;
pub mod import;
pub mod join;
pub mod kubeconfig;
pub mod merge;
pub mod objects;
pub mod preflight;
pub mod process;
pub mod run;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod status;
pub mod view;
pub mod why;
