//! Publishing the status Lease (its format: `core/status_lease.rs`): the leader writes what
//! this cluster's mcsd alone knows of the ClusterSet when it changes, at most once per
//! [`MIN_INTERVAL`].

use std::time::Duration;

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{Api, Client, ResourceExt as _, api::PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::metrics::Peers;
use crate::{
    cluster::identity::Identity,
    core::status_lease::{self, HubEntry, KEY, NAME, PeerEntry, Published},
};

/// The shortest time between two writes.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);

/// What the peers' states say now.
fn snapshot(identity: &Identity, leader: Option<&str>, peers: &Peers) -> Published {
    let now = std::time::SystemTime::now();
    let peers_hub = peers.hub();
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
            via: if status.via_hub { "hub" } else { "mesh" }.to_string(),
        })
        .collect();
    let hub = peers_hub.map(|hub| HubEntry {
        server: hub.server,
        // To the second, as `lastCurrent`.
        last_write: hub
            .last_write
            .and_then(|t| Timestamp::try_from(t).ok())
            .and_then(|t| Timestamp::from_second(t.as_second()).ok())
            .map(|t| t.to_string()),
        problem: hub.problem,
    });
    Published {
        cluster: identity.cluster.to_string(),
        clusterset: identity.clusterset.clone(),
        leader: leader.map(str::to_string),
        peers,
        hub,
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
            api.create(&PostParams::default(), &status_lease::lease(namespace, text))
                .await?;
        }
    }
    Ok(())
}
