//! The sandbox: a faithful in-memory Kubernetes API server, and a whole cluster around it, for
//! mcsd's end-to-end tests and for `mcsd sandbox`.
//!
//! ```text
//!  kubectl / kube-rs ──HTTPS (cluster CA, bearer token)──▶ http: authn ─▶ RBAC ─▶ route
//!                                                              │
//!            ┌──────────────────────────────────────────────────┘
//!            ▼
//!  Api: create/update/patch(merge, JSON, strategic, apply)/delete ─▶ admission (defaults, schemas,
//!            │                                  clusterIPs, pod IPs, CRD registration)
//!            ▼
//!  Store: objects[gr][(ns, name)]  ── one resourceVersion ──▶ event log ─▶ watches (bookmarks, 410)
//!            ▲                                                    │
//!            └──── controllers: EndpointSlices, GC, namespaces ◀──┘
//! ```
//!
//! Start a cluster with [`Cluster::start`] and a [`ClusterConfig`]; talk to it with
//! [`Cluster::admin_client`] or a kubeconfig ([`Cluster::kubeconfig_yaml`],
//! [`Cluster::service_account_kubeconfig`]); stop and start its API server with
//! [`Cluster::stop_api_server`] / [`Cluster::start_api_server`] (data, port and CA survive).
//!
//! Where it differs from a real API server is listed in `sandbox/README.md`.

mod admission;
pub mod api;
pub mod auth;
mod behaviour;
mod cluster;
pub mod controllers;
mod error;
pub mod events;
pub mod fields;
mod http;
mod ipam;
pub mod kinds;
pub mod meta;
mod patch;
pub mod proto;
pub mod schema;
pub mod select;
pub mod store;
mod table;
mod tls;
pub mod workloads;

pub use cluster::{Cluster, ClusterConfig};
pub use error::{ApiError, ApiResult, Cause, Error, Result};
pub use tls::certificate_authority;
