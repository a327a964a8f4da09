//! Authentication (bearer tokens) and authorization (RBAC over Roles, ClusterRoles and their
//! bindings, read from the store on every request).
//!
//! ServiceAccount tokens are bound to their ServiceAccount, as a real cluster's are: deleting
//! the ServiceAccount (or deleting it and making another of the same name) revokes every token
//! issued for it. A token may also have an expiry (a TokenRequest's `expirationSeconds`, or
//! [`crate::Cluster::service_account_token_with_expiry`]); once past it, or once revoked, a
//! request with it gets `401 Unauthorized`.
//!
//! Differences from a real API server: only bearer tokens (no client certificates, no
//! impersonation); tokens are opaque, not JWTs; ClusterRole `aggregationRule`s are not evaluated;
//! every authenticated user may read discovery, `/version`, `/openapi` and the health endpoints
//! (the default `system:discovery` / `system:public-info-viewer` bindings).

use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use crate::api::Api;
use crate::error::{ApiError, ApiResult};
use crate::store::GroupResource;

/// An issued bearer token: whose it is, until when, and which ServiceAccount it is bound to.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    user: UserInfo,
    expires: Option<Timestamp>,
    /// (namespace, name, uid) of the ServiceAccount whose deletion revokes the token.
    bound: Option<(String, String, String)>,
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name, e.g. `system:serviceaccount:mcsd-system:peer`.
    pub name: String,
    /// Groups, e.g. `system:masters`, `system:serviceaccounts`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The cluster admin (`system:masters`: allowed everything).
    pub fn admin() -> Self {
        Self {
            name: "sandbox-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    /// A ServiceAccount's user.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'a str,
    /// API group.
    pub group: &'a str,
    /// Plural resource.
    pub resource: &'a str,
    /// Subresource, `""` if none.
    pub subresource: &'a str,
    /// Namespace, `""` for cluster-scoped requests.
    pub namespace: &'a str,
    /// Object name, `""` for collections.
    pub name: &'a str,
}

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn rule_allows(rule: &Value, a: &Attributes<'_>) -> bool {
    let verbs = strs(rule.get("verbs"));
    let groups = strs(rule.get("apiGroups"));
    let resources = strs(rule.get("resources"));
    let names = strs(rule.get("resourceNames"));
    let full = if a.subresource.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let verb_ok = verbs.iter().any(|v| *v == "*" || *v == a.verb);
    let group_ok = groups.iter().any(|g| *g == "*" || *g == a.group);
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == full
            || (a.subresource.is_empty() && *r == a.resource)
            || r.strip_prefix("*/").is_some_and(|s| s == a.subresource)
            || r.strip_suffix("/*").is_some_and(|s| s == a.resource)
    });
    let name_ok = names.is_empty() || (!a.name.is_empty() && names.contains(&a.name));
    verb_ok && group_ok && resource_ok && name_ok
}

fn subject_matches(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let s = |k: &str| subject.get(k).and_then(Value::as_str).unwrap_or("");
    match s("kind") {
        "User" => s("name") == user.name,
        "Group" => user.groups.iter().any(|g| g == s("name")),
        "ServiceAccount" => {
            let ns = if s("namespace").is_empty() {
                binding_ns
            } else {
                s("namespace")
            };
            user.name == format!("system:serviceaccount:{ns}:{}", s("name"))
        }
        _ => false,
    }
}

impl Api {
    /// Registers a token for a user that neither expires nor is bound to a ServiceAccount (the
    /// admin's).
    pub fn add_token(&self, token: String, user: UserInfo) {
        self.tokens.write().insert(
            token,
            Token {
                user,
                expires: None,
                bound: None,
            },
        );
    }

    /// Issues a token for the ServiceAccount `namespace/name`, bound to it (deleting the
    /// ServiceAccount revokes it) and valid for `ttl` (`None`: until revoked). Returns the token
    /// and its expiry; `404` if the ServiceAccount does not exist.
    pub fn issue_service_account_token(
        &self,
        namespace: &str,
        name: &str,
        ttl: Option<Duration>,
    ) -> ApiResult<(String, Option<Timestamp>)> {
        let info = self.resource("", "serviceaccounts").expect("built in");
        let account = self.get(&info, namespace, name)?;
        let uid = crate::meta::meta_str(&account, "uid").to_string();
        let expires = match ttl {
            Some(ttl) => Some(
                Timestamp::now()
                    .checked_add(ttl)
                    .map_err(|e| ApiError::bad_request(format!("token lifetime: {e}")))?,
            ),
            None => None,
        };
        let token = crate::meta::new_token();
        self.tokens.write().insert(
            token.clone(),
            Token {
                user: UserInfo::service_account(namespace, name),
                expires,
                bound: Some((namespace.to_string(), name.to_string(), uid)),
            },
        );
        Ok((token, expires))
    }

    /// The user a bearer token belongs to; `None` (a 401) for an unknown token, an expired one,
    /// or one whose ServiceAccount has been deleted since it was issued.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let entry = self.tokens.read().get(token).cloned()?;
        if entry.expires.is_some_and(|at| at <= Timestamp::now()) {
            return None;
        }
        if let Some((namespace, name, uid)) = &entry.bound {
            let info = self.resource("", "serviceaccounts")?;
            let account = self.get(&info, namespace, name).ok()?;
            if crate::meta::meta_str(&account, "uid") != uid {
                return None;
            }
        }
        Some(entry.user)
    }

    /// Decides a request; `Err` is the 403 Forbidden Status the API server would answer.
    pub fn authorize(&self, user: &UserInfo, a: &Attributes<'_>) -> ApiResult<()> {
        if user.groups.iter().any(|g| g == "system:masters") {
            return Ok(());
        }
        let rules_of = |kind: &str, ns: &str, name: &str| -> Vec<Value> {
            let gr = GroupResource::new(
                "rbac.authorization.k8s.io",
                if kind == "ClusterRole" {
                    "clusterroles"
                } else {
                    "roles"
                },
            );
            let key = crate::store::ObjectKey {
                gr,
                namespace: if kind == "ClusterRole" {
                    String::new()
                } else {
                    ns.to_string()
                },
                name: name.to_string(),
            };
            self.store
                .get(&key)
                .and_then(|r| r.get("rules").and_then(Value::as_array).cloned())
                .unwrap_or_default()
        };
        let allowed_by = |binding: &Value, ns: &str| -> bool {
            let subjects = binding.get("subjects").and_then(Value::as_array);
            if !subjects
                .into_iter()
                .flatten()
                .any(|s| subject_matches(s, user, ns))
            {
                return false;
            }
            let kind = binding
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or("");
            let name = binding
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            rules_of(kind, ns, name).iter().any(|r| rule_allows(r, a))
        };
        let (crbs, _) = self.store.list(
            &GroupResource::new("rbac.authorization.k8s.io", "clusterrolebindings"),
            None,
        );
        if crbs.iter().any(|b| allowed_by(b, "")) {
            return Ok(());
        }
        if !a.namespace.is_empty() {
            let (rbs, _) = self.store.list(
                &GroupResource::new("rbac.authorization.k8s.io", "rolebindings"),
                Some(a.namespace),
            );
            if rbs.iter().any(|b| allowed_by(b, a.namespace)) {
                return Ok(());
            }
        }
        let qualified = crate::error::qualified(a.group, a.resource);
        let what = if a.name.is_empty() {
            qualified.clone()
        } else {
            format!("{qualified} \"{}\"", a.name)
        };
        let resource = if a.subresource.is_empty() {
            format!("resource \"{}\"", a.resource)
        } else {
            format!("resource \"{}/{}\"", a.resource, a.subresource)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", a.namespace)
        };
        Err(ApiError::forbidden(format!(
            "{what} is forbidden: User \"{}\" cannot {} {resource} in API group \"{}\" {scope}",
            user.name, a.verb, a.group
        ))
        .with_details(a.group, a.resource, a.name))
    }
}
