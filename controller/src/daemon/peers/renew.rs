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
    ByteString,
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Secret, ServiceAccount},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::secrets::SECRET_KEY_KUBECONFIG;
use crate::preflight::one_line;

/// On a peer Secret: the ServiceAccount (`namespace/name`) in the peer its token is for.
pub const ANNOTATION_SERVICE_ACCOUNT: &str = "mcsd.io/service-account";
/// On a peer Secret: when its token expires (RFC 3339).
pub const ANNOTATION_TOKEN_EXPIRES: &str = "mcsd.io/token-expires";
/// On a peer Secret: how long each of its tokens lives, in seconds.
pub const ANNOTATION_TOKEN_LIFETIME: &str = "mcsd.io/token-lifetime";

/// What a peer Secret says of its token's renewal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// The ServiceAccount's namespace in the peer.
    pub namespace: String,
    /// The ServiceAccount's name.
    pub account: String,
    /// When the token in the Secret expires.
    pub expires: Timestamp,
    /// How long a new token should live.
    pub lifetime: Duration,
}

impl Renewal {
    /// The renewal a Secret asks for; `None` for a Secret without the annotations (its
    /// credentials are renewed by whoever wrote it).
    pub fn of(secret: &Secret) -> Option<Self> {
        let annotations = secret.metadata.annotations.as_ref()?;
        let (namespace, account) = annotations.get(ANNOTATION_SERVICE_ACCOUNT)?.split_once('/')?;
        Some(Self {
            namespace: namespace.to_string(),
            account: account.to_string(),
            expires: annotations.get(ANNOTATION_TOKEN_EXPIRES)?.parse().ok()?,
            lifetime: Duration::from_secs(annotations.get(ANNOTATION_TOKEN_LIFETIME)?.parse().ok()?),
        })
    }

    /// When to renew: halfway through the token's life.
    pub fn due(&self) -> Timestamp {
        let half = i64::try_from(self.lifetime.as_secs() / 2).unwrap_or(i64::MAX);
        self.expires
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(half))
            .unwrap_or(self.expires)
    }
}

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

/// A token asked of `accounts` for the ServiceAccount `account`, to live `lifetime`.
#[derive(Clone, Debug)]
pub struct Minted {
    /// The token.
    pub token: String,
    /// When it expires.
    pub expires: Timestamp,
    /// How long tokens live: `lifetime`, or what the API server granted where it capped that
    /// (`--service-account-max-token-expiration`), so that renewal stays halfway through the
    /// lives tokens really have.
    pub lifetime: Duration,
}

/// Asks for a token of `account` living `lifetime` (a TokenRequest).
pub async fn request_token(
    accounts: &Api<ServiceAccount>,
    account: &str,
    lifetime: Duration,
) -> Result<Minted, String> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)),
            ..Default::default()
        },
        ..Default::default()
    };
    let answered = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("the peer refused a new token for {account}: {}", one_line(&e)))?;
    let status = answered.status.ok_or("the peer answered without a token")?;
    let expires = status.expiration_timestamp.0;
    // Clocks differ by seconds (join checks they are within 30 s): only a grant well short of
    // the request is a cap.
    let granted =
        Duration::from_secs(u64::try_from(expires.as_second() - Timestamp::now().as_second()).unwrap_or(0));
    let lifetime = if granted < lifetime.mul_f64(0.9) {
        granted.max(Duration::from_secs(1))
    } else {
        lifetime
    };
    Ok(Minted {
        token: status.token,
        expires,
        lifetime,
    })
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
    let text = current
        .data
        .as_ref()
        .and_then(|d| d.get(SECRET_KEY_KUBECONFIG))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .ok_or("the Secret lost its kubeconfig")?;
    let kubeconfig = with_token(&text, &minted.token)?;
    let expires = minted.expires;
    let patch = serde_json::json!({
        "metadata": {"annotations": {
            ANNOTATION_TOKEN_EXPIRES: expires.to_string(),
            ANNOTATION_TOKEN_LIFETIME: minted.lifetime.as_secs().to_string(),
        }},
        "data": {SECRET_KEY_KUBECONFIG: ByteString(kubeconfig.into_bytes())},
    });
    secrets
        .patch(secret, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("writing Secret {namespace}/{secret}: {}", one_line(&e)))?;
    Ok(expires)
}

/// `kubeconfig` with the token of its (first) user replaced by `token`.
fn with_token(kubeconfig: &str, token: &str) -> Result<String, String> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(kubeconfig)
        .map_err(|e| format!("the Secret's kubeconfig does not parse: {e}"))?;
    let user = value
        .get_mut("users")
        .and_then(|u| u.get_mut(0))
        .and_then(|u| u.get_mut("user"))
        .and_then(serde_yaml::Value::as_mapping_mut)
        .ok_or("the Secret's kubeconfig has no user")?;
    user.insert("token".into(), token.into());
    serde_yaml::to_string(&value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_replaces_the_old_and_nothing_else() {
        let before = "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://10.0.0.1:6443\nusers:\n- name: u\n  user:\n    token: old\ncontexts:\n- name: a\n  context:\n    cluster: a\n    user: u\ncurrent-context: a\n";
        let after = with_token(before, "new").unwrap();
        assert_eq!(after, before.replace("token: old", "token: new"));
    }

    #[test]
    fn renewal_is_due_halfway_through_the_tokens_life() {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"annotations": {
                ANNOTATION_SERVICE_ACCOUNT: "mcsd-system/mcsd-peer-cluster-b",
                ANNOTATION_TOKEN_EXPIRES: "2026-11-29T12:00:00Z",
                ANNOTATION_TOKEN_LIFETIME: "86400",
            }}
        }))
        .unwrap();
        let r = Renewal::of(&secret).unwrap();
        assert_eq!(r.account, "mcsd-peer-cluster-b");
        assert_eq!(r.due().to_string(), "2026-11-29T00:00:00Z");
        let mut no_lifetime = secret.clone();
        no_lifetime
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(ANNOTATION_TOKEN_LIFETIME);
        assert_eq!(Renewal::of(&no_lifetime), None);
    }
}
