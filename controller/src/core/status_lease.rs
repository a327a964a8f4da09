//! The status Lease: what a cluster's mcsd alone knows of the ClusterSet (each peer's state,
//! why, when it was last current, when its credentials expire), published by the leader for
//! `mcsd status` as one object, `mcsd-system/mcsd-status`, that `mcsd status` reads with nothing
//! but a kubeconfig. A Lease holding the status as JSON in an annotation, not a ConfigMap: peers'
//! credentials (`mcsd-peer`) read the ConfigMaps of `mcsd-system` (the exchange records) and must
//! not read this cluster's view of the others; they have no right on Leases.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use serde::{Deserialize, Serialize};

/// The Lease's name.
pub const NAME: &str = "mcsd-status";
/// Its annotation holding [`Published`] as JSON.
pub const KEY: &str = mcsd_crds::names::mcsd::STATUS;

/// What the status says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// This cluster's id.
    pub cluster: String,
    /// Its ClusterSet.
    pub clusterset: String,
    /// The replica that leads (and wrote this).
    pub leader: Option<String>,
    /// Every peer, by name.
    pub peers: Vec<PeerEntry>,
    /// The hub it follows, if it follows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubEntry>,
    /// When it was written (RFC 3339); not compared.
    #[serde(default)]
    pub written: String,
}

/// One peer as this cluster's mcsd sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerEntry {
    /// The peer's cluster id.
    pub name: String,
    /// `connecting`, `synced`, `unreachable` or `refused`.
    pub state: String,
    /// Why it is refused or unreachable, in one line.
    pub reason: Option<String>,
    /// When its records were last known current (RFC 3339): the sync lag counts from it.
    pub last_current: Option<String>,
    /// When its credentials expire (RFC 3339), where mcsd renews them.
    pub credential_expiry: Option<String>,
    /// Why renewing its credentials fails, while it does, in one line.
    #[serde(default)]
    pub credential_problem: Option<String>,
    /// Where its records are read: `mesh` (from the peer itself) or `hub`.
    #[serde(default)]
    pub via: String,
}

/// The hub a cluster follows, as its mcsd knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubEntry {
    /// The hub's API server.
    pub server: String,
    /// When this cluster's records were last copied there (RFC 3339).
    pub last_write: Option<String>,
    /// Why copying them fails, while it does, in one line.
    pub problem: Option<String>,
}

/// A new status Lease in `namespace` holding `text` (the JSON of a [`Published`]).
pub fn lease(namespace: &str, text: String) -> Lease {
    Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(NAME.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some([("app.kubernetes.io/name".to_string(), "mcsd".to_string())].into()),
            annotations: Some([(KEY.to_string(), text)].into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec::default()),
    }
}
