//! mcsd: Kubernetes Multicluster Services (KEP-1645) for a ClusterSet.
//!
//! This crate is the Kubernetes-aware part of mcsd and its one binary, `mcsd`. The API types live
//! in `mcsd-crds`; the DNS server, which knows nothing of Kubernetes, in `mcsd-dns`.

pub mod cli;
pub mod dns_index;
pub mod objects;
