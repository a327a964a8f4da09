//! The API types mcsd speaks, and the CRDs generated from them.
//!
//! ```text
//!  about.k8s.io                      multicluster.x-k8s.io (v1alpha1 + v1beta1, v1beta1 stored)
//!  ┌─────────────────┐               ┌──────────────────┐  one per exported   ┌─────────────────────┐
//!  │ ClusterProperty │ names the     │ ServiceExport    │  Service, per       │ ServiceImport        │
//!  │  (cluster-wide) │ cluster ────▶ │  spec.exported*  │  cluster   ───────▶ │  spec.type/ips/ports │
//!  │  spec.value     │               │  status.conds    │   merged over the   │  status.clusters     │
//!  └─────────────────┘               └──────────────────┘   ClusterSet        └─────────────────────┘
//! ```
//!
//! * [`mcs`]: `ServiceExport` and `ServiceImport`, served at both versions with one schema.
//! * [`about`]: `ClusterProperty`, the About API (KEP-2149).
//! * [`names`]: the well-known labels, annotations, property names, condition types and reasons.
//! * [`ClusterId`]: a validated cluster id (a lowercase DNS label of at most 63 characters).
//! * [`generate`]: the CRD objects and the YAML committed under `crds/`.

pub mod about;
mod cluster_id;
pub mod generate;
pub mod mcs;
pub mod names;

pub use cluster_id::{ClusterId, ClusterIdError};
pub use names::derived_service_name;
