//! The peer Secret: how a cluster holds what it needs to read one peer, in its exchange
//! namespace (`mcsd-system`), labelled [`LABEL`]. `mcsd join` writes it, the daemon reads it
//! (one supervisor per Secret) and renews the token in it; an admin may write one by hand.
//!
//! ```text
//!  Secret mcsd-system/peer-<exporter>   labels: mcsd.io/peer
//!    data.name        the peer's cluster id
//!    data.kubeconfig  a kubeconfig reaching the peer as a read-only identity
//!    data.ranges      optional: the only ranges the peer's endpoint addresses may be in
//!    annotations (written by `mcsd join`; their presence asks this cluster to renew the token):
//!      mcsd.io/service-account  namespace/name of the identity in the peer
//!      mcsd.io/token-expires    when the token in the kubeconfig expires (RFC 3339)
//!      mcsd.io/token-lifetime   how long each token lives, in seconds
//! ```

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret, jiff::Timestamp};
use mcsd_crds::{ClusterId, names::mcsd};

/// The label that marks a Secret in the exchange namespace as a peer's.
pub const LABEL: &str = mcsd::PEER;
/// The key holding the peer's cluster id.
pub const KEY_NAME: &str = "name";
/// The key holding the peer's kubeconfig.
pub const KEY_KUBECONFIG: &str = "kubeconfig";
/// The optional key holding the only address ranges the peer's endpoints may be in
/// (`10.2.0.0/16,fd00:2::/64`).
pub const KEY_RANGES: &str = "ranges";
/// The ServiceAccount (`namespace/name`) in the peer the token is for.
pub const ANNOTATION_SERVICE_ACCOUNT: &str = mcsd::SERVICE_ACCOUNT;
/// When the token expires (RFC 3339).
pub const ANNOTATION_TOKEN_EXPIRES: &str = mcsd::TOKEN_EXPIRES;
/// How long each token lives, in seconds.
pub const ANNOTATION_TOKEN_LIFETIME: &str = mcsd::TOKEN_LIFETIME;

/// What a peer Secret says.
#[derive(Clone, Debug)]
pub struct PeerSecret {
    /// The peer's cluster id.
    pub cluster: ClusterId,
    /// Its kubeconfig, as written (it parses as one).
    pub kubeconfig: String,
    /// The only ranges its endpoint addresses may be in (empty: any allowed address).
    pub ranges: Vec<ipnet::IpNet>,
    /// The renewal its annotations ask for.
    pub renewal: Option<Renewal>,
    /// What to do when its credentials fail, in words for the one line that reports it.
    pub fix: String,
    ranges_text: String,
}

impl PeerSecret {
    /// Reads `secret`; an error says which key is missing or wrong.
    pub fn read(secret: &Secret) -> Result<Self, String> {
        let data = secret.data.clone().unwrap_or_default();
        let text = |key: &str| {
            data.get(key)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .ok_or_else(|| format!("has no key {key:?}"))
        };
        let name = text(KEY_NAME)?;
        let cluster = ClusterId::new(name.trim()).map_err(|e| format!("key {KEY_NAME:?}: {e}"))?;
        let kubeconfig = text(KEY_KUBECONFIG)?;
        kube::config::Kubeconfig::from_yaml(&kubeconfig)
            .map_err(|e| format!("key {KEY_KUBECONFIG:?} is not a kubeconfig: {e}"))?;
        let ranges_text = text(KEY_RANGES).unwrap_or_default();
        let ranges = ranges_text
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| {
                r.parse::<ipnet::IpNet>()
                    .map_err(|e| format!("key {KEY_RANGES:?}: {r:?} is not a CIDR range: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let renewal = Renewal::of(secret);
        let mut fix = format!(
            "renew the kubeconfig in Secret {}/{}",
            secret.metadata.namespace.as_deref().unwrap_or_default(),
            secret.metadata.name.as_deref().unwrap_or_default()
        );
        if renewal.is_some() {
            fix = format!("run `mcsd join` for this pair again, or {fix}");
        }
        Ok(Self {
            cluster,
            kubeconfig,
            ranges,
            renewal,
            fix,
            ranges_text,
        })
    }

    /// What the Secret says that matters to its peer's supervisor: it is restarted only when
    /// this changes (a new expiry or lifetime reschedules the renewal, so they count).
    pub fn fingerprint(&self) -> String {
        format!(
            "{}\n{}\n{}\n{:?}",
            self.cluster.as_str(),
            self.ranges_text,
            self.kubeconfig,
            self.renewal
        )
    }
}

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

/// The peer Secret `name` in `namespace` for the peer `cluster`, reaching it with `kubeconfig`;
/// with `renewal`'s annotations when this cluster is to renew its token (`expires` may be unknown
/// yet: a dry run mints nothing).
pub fn secret(
    name: &str,
    namespace: &str,
    cluster: &ClusterId,
    kubeconfig: &str,
    account: &str,
    expires: Option<Timestamp>,
    lifetime: Duration,
) -> Secret {
    let mut annotations = BTreeMap::from([
        (ANNOTATION_SERVICE_ACCOUNT.to_string(), account.to_string()),
        (
            ANNOTATION_TOKEN_LIFETIME.to_string(),
            lifetime.as_secs().to_string(),
        ),
    ]);
    if let Some(at) = expires {
        annotations.insert(ANNOTATION_TOKEN_EXPIRES.to_string(), at.to_string());
    }
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (LABEL.to_string(), String::new()),
                ("app.kubernetes.io/name".to_string(), "mcsd".to_string()),
            ])),
            annotations: Some(annotations),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                KEY_NAME.to_string(),
                ByteString(cluster.as_str().as_bytes().to_vec()),
            ),
            (
                KEY_KUBECONFIG.to_string(),
                ByteString(kubeconfig.as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

/// The kubeconfig `secret` holds, if any.
pub fn kubeconfig_of(secret: &Secret) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_KUBECONFIG))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

/// The merge patch that puts a renewed token in a peer Secret whose kubeconfig is `kubeconfig`:
/// the token in its (first) user, the new expiry and lifetime.
pub fn renewed(
    kubeconfig: &str,
    token: &str,
    expires: Timestamp,
    lifetime: Duration,
) -> Result<serde_json::Value, String> {
    let kubeconfig = with_token(kubeconfig, token)?;
    Ok(serde_json::json!({
        "metadata": {"annotations": {
            ANNOTATION_TOKEN_EXPIRES: expires.to_string(),
            ANNOTATION_TOKEN_LIFETIME: lifetime.as_secs().to_string(),
        }},
        "data": {KEY_KUBECONFIG: ByteString(kubeconfig.into_bytes())},
    }))
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

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://10.0.0.1:6443\nusers:\n- name: u\n  user:\n    token: old\ncontexts:\n- name: a\n  context:\n    cluster: a\n    user: u\ncurrent-context: a\n";

    #[test]
    fn a_new_token_replaces_the_old_and_nothing_else() {
        let after = with_token(KUBECONFIG, "new").unwrap();
        assert_eq!(after, KUBECONFIG.replace("token: old", "token: new"));
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

    #[test]
    fn what_join_writes_reads_back_as_a_peer_that_renews() {
        let expires: Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
        let cluster = ClusterId::new("cluster-a").unwrap();
        let written = secret(
            "peer-cluster-a",
            "mcsd-system",
            &cluster,
            KUBECONFIG,
            "mcsd-system/mcsd-peer-cluster-b",
            Some(expires),
            Duration::from_secs(86_400),
        );
        let read = PeerSecret::read(&written).unwrap();
        assert_eq!(read.cluster, cluster);
        assert_eq!(read.kubeconfig, KUBECONFIG);
        assert_eq!(read.renewal.as_ref().map(|r| r.expires), Some(expires));
        assert!(
            read.fix
                .starts_with("run `mcsd join` for this pair again, or renew the kubeconfig in Secret mcsd-system/peer-cluster-a"),
            "{}",
            read.fix
        );
    }

    #[test]
    fn a_secret_that_cannot_be_read_says_which_key() {
        let mut bad = secret(
            "peer-x",
            "mcsd-system",
            &ClusterId::new("x").unwrap(),
            "not: [a kubeconfig",
            "mcsd-system/a",
            None,
            Duration::from_secs(60),
        );
        assert!(PeerSecret::read(&bad).unwrap_err().contains("key \"kubeconfig\""));
        bad.data.as_mut().unwrap().remove(KEY_NAME);
        assert_eq!(PeerSecret::read(&bad).unwrap_err(), "has no key \"name\"");
    }
}
