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

use std::{collections::HashMap, sync::Arc, time::Duration};

use jiff::Timestamp;
use parking_lot::RwLock;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::store::{GroupResource, ObjectKey, Store};

/// Every token a cluster has issued, by token.
pub(crate) type Tokens = RwLock<HashMap<String, Token>>;

/// Who may do what in one cluster: the tokens it issued, and RBAC over the objects of its store.
/// Borrowed from the cluster's [`crate::api::Api`] for each question.
#[derive(Clone, Copy)]
pub(crate) struct Authority<'a> {
    pub(crate) store: &'a Store,
    pub(crate) tokens: &'a Tokens,
}

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

impl Authority<'_> {
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
        let account = self
            .service_account(namespace, name)
            .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
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

    /// The ServiceAccount `namespace/name`, if it exists.
    fn service_account(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.store.get(&ObjectKey {
            gr: GroupResource::new("", "serviceaccounts"),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// How many tokens have been issued for the ServiceAccount `namespace/name` (expired and
    /// revoked ones included).
    pub fn tokens_issued(&self, namespace: &str, name: &str) -> usize {
        self.tokens
            .read()
            .values()
            .filter(|t| {
                t.bound
                    .as_ref()
                    .is_some_and(|(ns, n, _)| ns == namespace && n == name)
            })
            .count()
    }

    /// The user a bearer token belongs to; `None` (a 401) for an unknown token, an expired one,
    /// or one whose ServiceAccount has been deleted since it was issued.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let entry = self.tokens.read().get(token).cloned()?;
        if entry.expires.is_some_and(|at| at <= Timestamp::now()) {
            return None;
        }
        if let Some((namespace, name, uid)) = &entry.bound {
            let account = self.service_account(namespace, name)?;
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
        // Every authenticated user may ask what it may do and who it is (the default
        // `system:basic-user` ClusterRole, bound to `system:authenticated`).
        if a.verb == "create"
            && matches!(
                (a.group, a.resource),
                (
                    "authorization.k8s.io",
                    "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
                ) | ("authentication.k8s.io", "selfsubjectreviews")
            )
        {
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
            let key = ObjectKey {
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

impl Authority<'_> {
    /// The user a request acts as: `user` itself, or who it impersonates (`Impersonate-User`,
    /// `Impersonate-Group`, as `kubectl --as`, `--as-group` send them), if `user` may
    /// (`impersonate` on `users`, `serviceaccounts` or `groups`, through RBAC).
    pub fn impersonate(
        &self,
        user: UserInfo,
        as_user: Option<&str>,
        as_groups: &[String],
    ) -> ApiResult<UserInfo> {
        let Some(name) = as_user else {
            if as_groups.is_empty() {
                return Ok(user);
            }
            return Err(crate::error::ApiError::internal(format!(
                "requested {as_groups:?} without impersonating a user"
            )));
        };
        let check = |resource: &str, namespace: &str, object: &str| {
            self.authorize(
                &user,
                &Attributes {
                    verb: "impersonate",
                    group: "",
                    resource,
                    subresource: "",
                    namespace,
                    name: object,
                },
            )
        };
        let mut groups: Vec<String> = as_groups.to_vec();
        if let Some(rest) = name.strip_prefix("system:serviceaccount:")
            && let Some((ns, sa)) = rest.split_once(':')
        {
            check("serviceaccounts", ns, sa)?;
            if groups.is_empty() {
                groups = UserInfo::service_account(ns, sa).groups;
            }
        } else {
            check("users", "", name)?;
        }
        for group in as_groups {
            check("groups", "", group)?;
        }
        if name != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Ok(UserInfo {
            name: name.to_string(),
            groups,
        })
    }

    /// Answers a review (SelfSubjectAccessReview, SubjectAccessReview, SelfSubjectReview) that
    /// `user` created: the review with its `status` filled in.
    pub fn review(&self, kind: &str, user: &UserInfo, mut review: Value) -> ApiResult<Value> {
        use serde_json::json;
        if kind == "SelfSubjectReview" {
            review["status"] = json!({"userInfo": {"username": user.name, "groups": user.groups}});
            return Ok(review);
        }
        let subject = if kind == "SubjectAccessReview" {
            let s = |k: &str| {
                review
                    .pointer(&format!("/spec/{k}"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let groups = strs(review.pointer("/spec/groups"))
                .into_iter()
                .map(str::to_string)
                .collect();
            UserInfo {
                name: s("user"),
                groups,
            }
        } else {
            user.clone()
        };
        let allowed = if let Some(attrs) = review.pointer("/spec/resourceAttributes") {
            let s = |k: &str| attrs.get(k).and_then(Value::as_str).unwrap_or("");
            let a = Attributes {
                verb: s("verb"),
                group: s("group"),
                resource: s("resource"),
                subresource: s("subresource"),
                namespace: s("namespace"),
                name: s("name"),
            };
            if a.verb == "*" || a.resource == "*" {
                subject.groups.iter().any(|g| g == "system:masters")
            } else {
                self.authorize(&subject, &a).is_ok()
            }
        } else if let Some(attrs) = review.pointer("/spec/nonResourceAttributes") {
            let path = attrs.get("path").and_then(Value::as_str).unwrap_or("");
            let verb = attrs.get("verb").and_then(Value::as_str).unwrap_or("");
            self.allows_non_resource(&subject, verb, path)
        } else {
            return Err(crate::error::ApiError::invalid(
                "authorization.k8s.io",
                kind,
                "",
                vec![crate::error::Cause::required("spec.resourceAttributes")],
            ));
        };
        review["status"] = json!({"allowed": allowed});
        Ok(review)
    }

    /// Whether `user` may `verb` the non-resource URL `path` (discovery, `/version`, `/healthz`…
    /// for every authenticated user; otherwise a `nonResourceURLs` rule of a ClusterRole).
    fn allows_non_resource(&self, user: &UserInfo, verb: &str, path: &str) -> bool {
        if user.groups.iter().any(|g| g == "system:masters") {
            return true;
        }
        let public = [
            "/api", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi",
        ];
        if verb == "get"
            && public
                .iter()
                .any(|p| path == *p || path.starts_with(&format!("{p}/")))
        {
            return true;
        }
        let (bindings, _) = self.store.list(
            &GroupResource::new("rbac.authorization.k8s.io", "clusterrolebindings"),
            None,
        );
        bindings.iter().any(|b| {
            let bound = b
                .get("subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|s| subject_matches(s, user, ""));
            let role = b.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or("");
            bound
                && self
                    .store
                    .get(&crate::store::ObjectKey {
                        gr: GroupResource::new("rbac.authorization.k8s.io", "clusterroles"),
                        namespace: String::new(),
                        name: role.to_string(),
                    })
                    .and_then(|r| r.get("rules").and_then(Value::as_array).cloned())
                    .unwrap_or_default()
                    .iter()
                    .any(|rule| {
                        let verbs = strs(rule.get("verbs"));
                        let urls = strs(rule.get("nonResourceURLs"));
                        verbs.iter().any(|v| *v == "*" || *v == verb)
                            && urls.iter().any(|u| {
                                *u == "*"
                                    || *u == path
                                    || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
                            })
                    })
        })
    }
}
