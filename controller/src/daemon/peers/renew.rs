//! Peer credentials that renew themselves. A peer Secret written by `mcsd join` names the
//! ServiceAccount its token is for (in the peer), when the token expires and how long a token
//! lives. Halfway through a token's life this cluster's mcsd asks the peer for a new one, with the
//! token it holds (the peer grants it `create` on `serviceaccounts/token` for that one
//! ServiceAccount and nothing more), and writes it into the Secret; the Secret's watch then swaps
//! the credentials without withdrawing anything. Only the leading replica renews. A renewal that
//! fails is retried, and reported at once, while the credentials still work: in the log, and to
//! `report` (the imports it feeds say so in `ClustersAtRisk`, `mcsd why` and `mcsd status` show
//! it, and `mcsd_peer_credential_renewal_failing` is 1), beside the expiry in
//! `mcsd_peer_credential_expiry_timestamp_seconds`.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{Secret, ServiceAccount},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::{preflight::one_line, token::request_token},
    core::peer_secret::{self, Renewal},
};

/// Whose token is renewed, and where it is kept.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Target {
    /// A client of the peer holding the token.
    pub peer: Client,
    /// A client of this cluster.
    pub local: Client,
    /// The namespace of the peer Secret.
    pub namespace: String,
    /// The peer Secret.
    pub secret: String,
}

/// Renews the token of `target`'s Secret once it is due, while this replica leads (only the
/// leader writes: a replica that does not lead leaves it to the one that does). Returns once the
/// Secret holds a new token (its watch then restarts the peer with it) or at `stop`. While
/// renewing fails, `report` is given why (`Some`, each time the reason changes), and `None` once
/// it succeeds.
pub async fn renew(
    target: Target,
    renewal: Renewal,
    report: impl Fn(Option<String>),
    mut leader: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let mut wait = until(renewal.due());
    let retry = (renewal.lifetime / 20).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut failing: Option<String> = None;
    let secret = &target.secret;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            leads = leader.wait_for(|l| *l) => if leads.is_err() { return },
        }
        // Stopped (new credentials, the Secret gone): a request hanging on the peer is dropped.
        let renewed = tokio::select! {
            _ = stop.cancelled() => return,
            r = renew_once(&target, &renewal) => r,
        };
        match renewed {
            Ok(expires) => {
                tracing::info!(%secret, %expires, "peer token renewed");
                if failing.is_some() {
                    report(None);
                }
                return;
            }
            Err(error) => {
                if failing.as_ref() == Some(&error) {
                    tracing::debug!(%secret, %error, "renewing the peer token failed again");
                } else {
                    tracing::warn!(%secret, %error, expires = %renewal.expires, retry_in = ?retry, "renewing the peer token failed; it keeps working until it expires");
                    report(Some(format!(
                        "its credentials expire at {} and cannot be renewed: {error}",
                        renewal.expires
                    )));
                    failing = Some(error);
                }
                wait = retry;
            }
        }
    }
}

/// The time from now until `at` (zero once past).
fn until(at: Timestamp) -> Duration {
    let millis = at.as_millisecond() - Timestamp::now().as_millisecond();
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

async fn renew_once(target: &Target, renewal: &Renewal) -> Result<Timestamp, String> {
    let (namespace, secret) = (&target.namespace, &target.secret);
    let accounts: Api<ServiceAccount> = Api::namespaced(target.peer.clone(), &renewal.namespace);
    let minted = request_token(&accounts, &renewal.account, renewal.lifetime).await?;
    let secrets: Api<Secret> = Api::namespaced(target.local.clone(), namespace);
    let current = secrets
        .get(secret)
        .await
        .map_err(|e| format!("reading Secret {namespace}/{secret}: {}", one_line(&e)))?;
    let kubeconfig = peer_secret::kubeconfig_of(&current).ok_or("the Secret lost its kubeconfig")?;
    let patch = peer_secret::renewed(&kubeconfig, &minted.token, minted.expires, minted.lifetime)?;
    secrets
        .patch(secret, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("writing Secret {namespace}/{secret}: {}", one_line(&e)))?;
    Ok(minted.expires)
}
