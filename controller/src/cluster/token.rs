//! Tokens of a ServiceAccount, asked of its API server (a TokenRequest): how `mcsd join` mints a
//! peer's first token and the importing mcsd renews it.

use std::time::Duration;

use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::ServiceAccount,
    },
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};

use super::preflight::one_line;

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
