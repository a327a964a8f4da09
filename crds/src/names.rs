//! Well-known names: labels, annotations, About API property names, condition types and reasons.
//!
//! Every string another implementation or a user's tooling may match on lives here, once.

use sha2::{Digest, Sha256};

/// Label on an MCS EndpointSlice: the name of the ServiceImport (= the exported Service) it belongs to.
pub const LABEL_SERVICE_NAME: &str = "multicluster.kubernetes.io/service-name";
/// Label on an MCS EndpointSlice: the id of the cluster its endpoints come from.
pub const LABEL_SOURCE_CLUSTER: &str = "multicluster.kubernetes.io/source-cluster";
/// Label naming the controller that manages an EndpointSlice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Label tying an EndpointSlice to a Service for kube-proxy and cluster-local DNS.
/// On MCS slices it names the derived Service, never the exported one.
pub const LABEL_KUBERNETES_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label that makes kube-proxy skip a Service or EndpointSlice (set on slices of headless imports).
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Annotation on a ServiceImport naming its derived Service.
pub const ANNOTATION_DERIVED_SERVICE: &str = "multicluster.kubernetes.io/derived-service";

/// Our `endpointslice.kubernetes.io/managed-by` value.
pub const MANAGED_BY: &str = "mcsd.io";
/// The field manager of every server-side apply mcsd makes.
pub const FIELD_MANAGER: &str = "mcsd";
/// The managed-by value of the built-in EndpointSlice controller (slices we must not claim).
pub const MANAGED_BY_KUBERNETES: &str = "endpointslice-controller.k8s.io";

/// The annotation a CRD in a protected group (`*.k8s.io`, `*.kubernetes.io`) needs before a
/// kube-apiserver accepts it (KEP-1111): the URL of the API's approval.
pub const ANNOTATION_API_APPROVED: &str = "api-approved.kubernetes.io";
/// The About API's approval (KEP-2149), as upstream's ClusterProperty CRD carries it.
pub const ABOUT_API_APPROVAL: &str = "https://github.com/kubernetes/enhancements/pull/3084";

/// ClusterProperty holding this cluster's id (KEP-2149).
pub const PROPERTY_CLUSTER_ID: &str = "cluster.clusterset.k8s.io";
/// ClusterProperty holding the name of the ClusterSet this cluster is a member of (KEP-2149).
pub const PROPERTY_CLUSTERSET: &str = "clusterset.k8s.io";

/// The DNS zone of multicluster names (the MCS DNS specification).
pub const DEFAULT_ZONE: &str = "clusterset.local";

/// API group of ServiceExport and ServiceImport.
pub const MCS_GROUP: &str = "multicluster.x-k8s.io";
/// API group of ClusterProperty.
pub const ABOUT_GROUP: &str = "about.k8s.io";
/// The version we store and write.
pub const STORED_VERSION: &str = "v1beta1";
/// The older version, still served: CoreDNS reads ServiceImports at it.
pub const LEGACY_VERSION: &str = "v1alpha1";
/// Upstream's label naming the mcs-api release a CRD's schema comes from.
pub const LABEL_RELEASE_VERSION: &str = "multicluster.x-k8s.io/release-version";
/// Upstream's label counting the schema's changes within that release (reset to 0 by each
/// release).
pub const LABEL_CRD_SCHEMA_REVISION: &str = "multicluster.x-k8s.io/crd-schema-revision";
/// The mcs-api release whose ServiceExport and ServiceImport CRDs ours match, field by field,
/// but for the extensions `docs/crds.md` lists.
pub const MCS_RELEASE_VERSION: &str = "v0.5.2";
/// The schema revision within [`MCS_RELEASE_VERSION`] that ours match.
pub const MCS_CRD_SCHEMA_REVISION: &str = "0";

/// Condition types and reasons of ServiceExport and ServiceImport status.
pub mod conditions {
    /// ServiceExport: the named Service exists and its type can be exported.
    pub const VALID: &str = "Valid";
    /// ServiceExport: the export has been propagated. ServiceImport: the import is usable.
    pub const READY: &str = "Ready";
    /// ServiceExport: a global property differs between the constituent exports.
    pub const CONFLICT: &str = "Conflict";

    /// Reasons of `Valid`.
    pub mod valid {
        /// `Valid=True`.
        pub const VALID: &str = "Valid";
        /// `Valid=False`: no Service with the same namespace and name.
        pub const NO_SERVICE: &str = "NoService";
        /// `Valid=False`: the Service's type cannot be exported (ExternalName).
        pub const INVALID_SERVICE_TYPE: &str = "InvalidServiceType";
        /// `Valid=False`: mcsd's namespace policy denies the namespace (`kube-*` and mcsd's own
        /// by default).
        pub const NAMESPACE_DENIED: &str = "NamespaceDenied";
    }

    /// Reasons of `Ready`.
    pub mod ready {
        /// ServiceExport `Ready=True`, push model.
        pub const EXPORTED: &str = "Exported";
        /// `Ready=True` (ServiceExport pull model; ServiceImport).
        pub const READY: &str = "Ready";
        /// `Ready=False|Unknown`: in progress.
        pub const PENDING: &str = "Pending";
        /// ServiceExport `Ready=False`: the export failed; the message says why.
        pub const FAILED: &str = "Failed";
        /// ServiceImport `Ready=False`: none of the import's IP families works in this cluster.
        pub const IP_FAMILY_NOT_SUPPORTED: &str = "IPFamilyNotSupported";
    }

    /// Reasons of `Conflict`.
    pub mod conflict {
        /// `Conflict=False`.
        pub const NO_CONFLICTS: &str = "NoConflicts";
        /// The exports' port sets differ.
        pub const PORT: &str = "PortConflict";
        /// Some exports are headless and some are not.
        pub const TYPE: &str = "TypeConflict";
        /// `sessionAffinity` differs.
        pub const SESSION_AFFINITY: &str = "SessionAffinityConflict";
        /// `sessionAffinityConfig` differs.
        pub const SESSION_AFFINITY_CONFIG: &str = "SessionAffinityConfigConflict";
        /// `exportedAnnotations` differ.
        pub const ANNOTATIONS: &str = "AnnotationsConflict";
        /// `exportedLabels` differ.
        pub const LABELS: &str = "LabelsConflict";
        /// `internalTrafficPolicy` differs (nil counts as `Cluster`).
        pub const INTERNAL_TRAFFIC_POLICY: &str = "InternalTrafficPolicyConflict";
        /// `trafficDistribution` differs.
        pub const TRAFFIC_DISTRIBUTION: &str = "TrafficDistributionConflict";
        /// The exports' IP families cannot all be reached from one client family.
        pub const IP_FAMILY: &str = "IPFamilyConflict";
        /// Every conflict reason (not `NoConflicts`).
        pub const ALL: [&str; 9] = [
            PORT,
            TYPE,
            SESSION_AFFINITY,
            SESSION_AFFINITY_CONFIG,
            ANNOTATIONS,
            LABELS,
            INTERNAL_TRAFFIC_POLICY,
            TRAFFIC_DISTRIBUTION,
            IP_FAMILY,
        ];
    }
}

/// The name of the derived Service behind a ServiceImport: `derived-` and the first ten characters
/// of the lowercase, unpadded base32hex encoding of `sha256("<namespace>/<name>")`.
///
/// This is the name the mcs-api reference controllers and Cilium use, so tools that know one of
/// them find ours.
pub fn derived_service_name(namespace: &str, name: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    // Ten base32 characters are 50 bits: the first 7 bytes of the digest hold them.
    let mut bits: u64 = 0;
    for byte in &digest[..7] {
        bits = (bits << 8) | u64::from(*byte);
    }
    let bits = bits >> 6; // 56 bits read, 50 kept
    let mut out = String::with_capacity(18);
    out.push_str("derived-");
    for i in (0..10).rev() {
        out.push(ALPHABET[((bits >> (i * 5)) & 0x1f) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_service_names_match_the_reference_controllers() {
        assert_eq!(derived_service_name("demo", "serve"), "derived-ovtkn0laet");
        assert_eq!(derived_service_name("default", "hello"), "derived-k5cuvo1ge4");
        assert_eq!(derived_service_name("testns", "svc1"), "derived-kpvi9gcsdk");
    }
}

/// mcsd's own labels and annotations: every `mcsd.io/*` name is defined here, once.
pub mod mcsd {
    /// Label on every exchange record; its value is the exchange format version.
    pub const EXCHANGE: &str = "mcsd.io/exchange";
    /// Exchange record label: the namespace of the exported Service.
    pub const SERVICE_NAMESPACE: &str = "mcsd.io/service-namespace";
    /// Exchange record label: the name of the exported Service.
    pub const SERVICE_NAME: &str = "mcsd.io/service-name";
    /// Label that marks a Secret in mcsd's namespace as a peer's credentials.
    pub const PEER: &str = "mcsd.io/peer";
    /// Label on objects mcsd derives for an import (the derived Service): the import's name.
    pub const DERIVED_FROM: &str = "mcsd.io/derived-from";
    /// Annotation holding the hash of what mcsd applied to an object.
    pub const APPLIED: &str = "mcsd.io/applied";
    /// On a peer Secret: the ServiceAccount (`namespace/name`) in the peer its token is for.
    pub const SERVICE_ACCOUNT: &str = "mcsd.io/service-account";
    /// On a peer Secret: when its token expires (RFC 3339).
    pub const TOKEN_EXPIRES: &str = "mcsd.io/token-expires";
    /// On a peer Secret: how long each of its tokens lives, in seconds.
    pub const TOKEN_LIFETIME: &str = "mcsd.io/token-lifetime";
    /// Label on the identity `mcsd join` makes in an exporting cluster: the importer it is for.
    pub const PEER_FOR: &str = "mcsd.io/peer-for";
    /// Label on what `mcsd join` makes in an importing cluster: the exporter it reads.
    pub const PEER_OF: &str = "mcsd.io/peer-of";
    /// Annotation of the status Lease (`mcsd-system/mcsd-status`) holding what this cluster's
    /// mcsd publishes for `mcsd status`, as JSON.
    pub const STATUS: &str = "mcsd.io/status";
    /// Annotation saying when mcsd last wrote an object (RFC 3339). Not part of the applied hash:
    /// it changes only when the object does. A peer's copy of it dates the change for the
    /// propagation histogram.
    pub const WRITTEN_AT: &str = "mcsd.io/written-at";
}
