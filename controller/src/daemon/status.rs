//! What this cluster's mcsd alone knows of the ClusterSet (each peer's state, why, when it was
//! last current, when its credentials expire), published for `mcsd status`: one object,
//! `mcsd-system/mcsd-status`, written by the leader when what it says changes, at most once per
//! [`MIN_INTERVAL`]. `mcsd status` reads it with nothing but a kubeconfig. It is a Lease holding
//! the status in an annotation, not a ConfigMap: peers' credentials (`mcsd-peer`) read the
//! ConfigMaps of `mcsd-system` (the exchange records) and must not read this cluster's view of
//! the others; they have no right on Leases, and mcsd's own Role already has the ones it needs.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    jiff::Timestamp,
};
use kube::{Api, Client, ResourceExt as _, api::PostParams};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::metrics::Peers;
use crate::identity::Identity;

/// The Lease's name.
pub const NAME: &str = "mcsd-status";
/// Its annotation holding [`Published`] as JSON.
pub const KEY: &str = "mcsd.io/status";
/// The shortest time between two writes.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);

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
}

/// What the peers' states say now.
fn snapshot(identity: &Identity, leader: Option<&str>, peers: &Peers) -> Published {
    let now = std::time::SystemTime::now();
    let peers = peers
        .snapshot()
        .into_iter()
        .map(|(name, status)| PeerEntry {
            name,
            state: status.state.name().to_string(),
            reason: status.state.problem().map(str::to_string),
            // To the second: a probe that confirms the peer each second need not rewrite this.
            last_current: status
                .last_contact
                .and_then(|t| now.checked_sub(t.elapsed()))
                .and_then(|t| Timestamp::try_from(t).ok())
                .and_then(|t| Timestamp::from_second(t.as_second()).ok())
                .map(|t| t.to_string()),
            credential_expiry: status
                .credential_expiry
                .and_then(|s| Timestamp::from_second(s).ok())
                .map(|t| t.to_string()),
            credential_problem: status.credential_problem,
        })
        .collect();
    Published {
        cluster: identity.cluster.to_string(),
        clusterset: identity.clusterset.clone(),
        leader: leader.map(str::to_string),
        peers,
        written: String::new(),
    }
}

/// Writes the status while this replica leads, until `shutdown`.
pub async fn publish(
    client: Client,
    namespace: String,
    identity: Identity,
    replica: Option<String>,
    peers: Peers,
    mut leading: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut last: Option<Published> = None;
    let mut failing = false;
    loop {
        // Leadership changed since the last write (lost and regained, perhaps): another replica
        // may have written meanwhile, so what this one wrote last is no longer what is there.
        if leading.has_changed().unwrap_or(false) {
            last = None;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = leading.wait_for(|l| *l) => if r.is_err() { return },
        }
        let now = snapshot(&identity, replica.as_deref(), &peers);
        // Lag that grows is read from `lastCurrent`: only a change of what is said is written (a
        // probe that confirms a peer moves `lastCurrent`, once per probe interval).
        if last.as_ref() != Some(&now) {
            let mut written = now.clone();
            written.written = Timestamp::now().to_string();
            let text = serde_json::to_string_pretty(&written).unwrap_or_default();
            match write(&api, &namespace, text).await {
                Ok(_) => {
                    last = Some(now);
                    failing = false;
                }
                Err(error) if !std::mem::replace(&mut failing, true) => {
                    tracing::warn!(%error, "writing mcsd-system/mcsd-status failed; retrying");
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(MIN_INTERVAL) => {}
        }
    }
}

/// Puts `text` in the status Lease, creating it the first time.
async fn write(api: &Api<Lease>, namespace: &str, text: String) -> kube::Result<()> {
    match api.get_opt(NAME).await? {
        Some(mut lease) => {
            lease.annotations_mut().insert(KEY.to_string(), text);
            api.replace(NAME, &PostParams::default(), &lease).await?;
        }
        None => {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(NAME.to_string()),
                    namespace: Some(namespace.to_string()),
                    labels: Some([("app.kubernetes.io/name".to_string(), "mcsd".to_string())].into()),
                    annotations: Some([(KEY.to_string(), text)].into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec::default()),
            };
            api.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}
