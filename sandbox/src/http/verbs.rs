//! The resource verbs: get, list, watch, create, update, patch, delete and deletecollection of a
//! resource path, its subresources (`status`, `scale`, `finalize`, `token`) and the reviews.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::{Api, Ctx, DeleteOptions, PatchType, Propagation};
use crate::auth::{Attributes, UserInfo};
use crate::error::{ApiError, ApiResult, Cause};
use crate::kinds::ResourceInfo;
use crate::meta;
use crate::select::{FieldSelector, LabelSelector};
use crate::table;

use super::list_watch::{list, watch};
use super::{Body, Query, ServerSettings, Target, full, json_response, parse_body, parse_json, read_body};

/// A request for a resource (or its subresource), authorized.
struct Call {
    info: Arc<ResourceInfo>,
    version: String,
    /// Empty for a cluster-scoped resource.
    ns: String,
    /// Empty for a collection.
    name: String,
    subresource: String,
    verb: &'static str,
    method: Method,
    query: Query,
    ctx: Ctx,
    content_type: String,
    as_table: bool,
}

/// A request for a resource (or its subresource): authorized, then served by its verb.
pub(super) async fn serve(
    api: &Arc<Api>,
    settings: &ServerSettings,
    shutdown: &CancellationToken,
    user: UserInfo,
    target: Target,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let call = authorize(api, user, target, &req)?;
    call.serve(api, settings, shutdown, req).await
}

/// Resolves the resource and verb of a request and checks that `user` may.
fn authorize(api: &Api, user: UserInfo, target: Target, req: &Request<Incoming>) -> ApiResult<Call> {
    let header = |name: header::HeaderName, default: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(default)
            .to_string()
    };
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    let info = api
        .lookup(&target.group, &target.version, &target.resource)
        .ok_or_else(ApiError::no_route)?;
    let valid_sub = target.subresource.is_empty()
        || (target.subresource == "status" && info.status_subresource)
        || info.other_subresources.contains(&target.subresource.as_str())
        || (info.kind == "Namespace" && target.subresource == "finalize");
    if !valid_sub || (info.namespaced && target.namespace.is_empty() && !target.name.is_empty()) {
        return Err(ApiError::no_route());
    }
    // `/api/v1/namespaces/<name>/status|finalize`
    let (name, subresource) =
        if info.kind == "Namespace" && target.name.is_empty() && !target.namespace.is_empty() {
            (target.namespace.clone(), target.resource.clone())
        } else {
            (target.name.clone(), target.subresource.clone())
        };
    let is_watch = query.flag("watch");
    let verb = match (&method, name.is_empty()) {
        (&Method::GET, true) if is_watch => "watch",
        (&Method::GET, true) => "list",
        (&Method::GET, false) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, false) => "update",
        (&Method::PATCH, false) => "patch",
        (&Method::DELETE, false) => "delete",
        (&Method::DELETE, true) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed(method.as_str())),
    };
    let ns = if info.namespaced {
        target.namespace.clone()
    } else {
        String::new()
    };
    api.auth().authorize(
        &user,
        &Attributes {
            verb,
            group: &info.group,
            resource: &info.resource,
            subresource: &subresource,
            namespace: &ns,
            name: &name,
        },
    )?;
    let user_agent = header(header::USER_AGENT, "unknown");
    let ctx = Ctx {
        user,
        manager: query
            .get("fieldManager")
            .map(str::to_string)
            .unwrap_or_else(|| user_agent.split('/').next().unwrap_or("unknown").to_string()),
        dry_run: query.get("dryRun") == Some("All"),
    };
    let content_type = header(header::CONTENT_TYPE, "application/json");
    let version = target.version.clone();
    let as_table = header(header::ACCEPT, "").contains("as=Table");
    Ok(Call {
        info,
        version,
        ns,
        name,
        subresource,
        verb,
        method,
        query,
        ctx,
        content_type,
        as_table,
    })
}

impl Call {
    /// The object as the response carries it: at the requested version, or as a Table.
    fn respond(&self, status: StatusCode, obj: Arc<Value>) -> Response<Body> {
        let served = Api::at_version(&self.info, &self.version, &obj);
        if self.as_table {
            json_response(
                status,
                &table::table(
                    &self.info,
                    &self.version,
                    std::slice::from_ref(&served),
                    json!({}),
                ),
            )
        } else {
            full(
                status,
                "application/json",
                serde_json::to_vec(&*served).unwrap_or_default(),
            )
        }
    }

    async fn serve(
        self,
        api: &Arc<Api>,
        settings: &ServerSettings,
        shutdown: &CancellationToken,
        req: Request<Incoming>,
    ) -> ApiResult<Response<Body>> {
        let Self {
            ref info,
            ref version,
            ref ns,
            ref name,
            ref subresource,
            verb,
            ref method,
            ref query,
            ref ctx,
            ref content_type,
            as_table,
        } = self;
        let respond = |status, obj| self.respond(status, obj);
        if info.is_review() {
            if verb != "create" {
                return Err(ApiError::method_not_allowed(method.as_str()));
            }
            let review = parse_body(&read_body(req).await?, content_type)?;
            let answered = api.auth().review(&info.kind, &ctx.user, review)?;
            return Ok(json_response(StatusCode::CREATED, &answered));
        }
        if subresource == "scale" {
            return scale(api, info, ns, name, verb, content_type, req, ctx).await;
        }
        match verb {
            "get" if subresource.is_empty() || subresource == "status" => {
                Ok(respond(StatusCode::OK, api.get(info, ns, name)?))
            }
            "get" => Err(ApiError::method_not_allowed("GET")),
            "list" => list(api, info, version, ns, query, as_table),
            "watch" => watch(api, info, version, ns, query, settings, shutdown),
            "create" if !name.is_empty() && info.kind == "ServiceAccount" && subresource == "token" => {
                let mut tr = parse_body(&read_body(req).await?, content_type)?;
                let ttl = token_request_lifetime(&tr, name, settings.min_token_lifetime)?;
                let (token, expires) = api.auth().issue_service_account_token(ns, name, Some(ttl))?;
                tr["apiVersion"] = json!("authentication.k8s.io/v1");
                tr["kind"] = json!("TokenRequest");
                tr["spec"]["expirationSeconds"] = json!(ttl.as_secs());
                let expires = expires.map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
                tr["status"] = json!({"token": token, "expirationTimestamp": expires});
                Ok(json_response(StatusCode::CREATED, &tr))
            }
            "create" if !name.is_empty() => Err(ApiError::method_not_allowed("POST")),
            "create" => {
                let body = parse_body(&read_body(req).await?, content_type)?;
                Ok(respond(
                    StatusCode::CREATED,
                    api.create(info, version, ns, body, ctx)?,
                ))
            }
            "update" => {
                let body = parse_body(&read_body(req).await?, content_type)?;
                if info.kind == "Namespace" && subresource == "finalize" {
                    let mut current = (*api.get(info, ns, name)?).clone();
                    current["spec"]["finalizers"] =
                        body.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
                    return Ok(respond(
                        StatusCode::OK,
                        api.update(info, version, "", name, current, None, ctx)?,
                    ));
                }
                let sub = (!subresource.is_empty()).then_some(subresource.as_str());
                Ok(respond(
                    StatusCode::OK,
                    api.update(info, version, ns, name, body, sub, ctx)?,
                ))
            }
            "patch" => {
                let ct = content_type.split(';').next().unwrap_or("").trim();
                let patch_type = match ct {
                    "application/merge-patch+json" => PatchType::Merge,
                    "application/json-patch+json" => PatchType::Json,
                    "application/strategic-merge-patch+json" => PatchType::Strategic,
                    "application/apply-patch+yaml" | "application/apply-patch+json" => {
                        if query.get("fieldManager").is_none_or(str::is_empty) {
                            return Err(ApiError::bad_request(
                                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                            ));
                        }
                        PatchType::Apply {
                            force: query.flag("force"),
                        }
                    }
                    other => return Err(ApiError::unsupported_media_type(other)),
                };
                let body = parse_json(&read_body(req).await?)?;
                let sub = (!subresource.is_empty()).then_some(subresource.as_str());
                let existed = api.get(info, ns, name).is_ok();
                let obj = api.patch(info, version, ns, name, patch_type, &body, sub, ctx)?;
                let status = if existed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                Ok(respond(status, obj))
            }
            "delete" => {
                let body = read_body(req).await?;
                let opts = delete_options(&body, content_type, query)?;
                Ok(respond(StatusCode::OK, api.delete(info, ns, name, &opts)?))
            }
            "deletecollection" => {
                let body = read_body(req).await?;
                let opts = delete_options(&body, content_type, query)?;
                let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
                let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), &info.kind)?;
                let (items, _) = api.list(info, (!ns.is_empty()).then_some(ns.as_str()));
                for item in items.iter().filter(|o| labels.matches(o) && fields.matches(o)) {
                    match api.delete(
                        info,
                        meta::meta_str(item, "namespace"),
                        meta::meta_str(item, "name"),
                        &opts,
                    ) {
                        Ok(_) => {}
                        Err(e) if e.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                ))
            }
            _ => Err(ApiError::method_not_allowed(method.as_str())),
        }
    }
}

/// A TokenRequest's lifetime: `spec.expirationSeconds`, one hour by default, between 10 minutes
/// and 2^32 seconds as the API server validates it.
fn token_request_lifetime(request: &Value, name: &str, min: Duration) -> ApiResult<Duration> {
    let field = "spec.expirationSeconds";
    let Some(value) = request
        .pointer("/spec/expirationSeconds")
        .filter(|v| !v.is_null())
    else {
        return Ok(Duration::from_secs(3600));
    };
    let invalid = |why: &str| {
        ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            vec![Cause::invalid(field, value, why)],
        )
    };
    match value.as_i64() {
        Some(s) if s < i64::try_from(min.as_secs()).unwrap_or(i64::MAX) => {
            Err(invalid(&if min.as_secs() == 600 {
                "may not specify a duration less than 10 minutes".to_string()
            } else {
                format!("may not specify a duration less than {} seconds", min.as_secs())
            }))
        }
        Some(s) if s > 1 << 32 => Err(invalid("may not specify a duration larger than 2^32 seconds")),
        Some(s) => Ok(Duration::from_secs(s.unsigned_abs())),
        None => Err(ApiError::bad_request(format!("{field} must be an integer"))),
    }
}

/// The `scale` subresource of a workload (`autoscaling/v1` Scale): what `kubectl scale` reads and
/// writes. Writing it sets the workload's `spec.replicas`.
#[allow(clippy::too_many_arguments)]
async fn scale(
    api: &Api,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    verb: &str,
    content_type: &str,
    req: Request<Incoming>,
    ctx: &Ctx,
) -> ApiResult<Response<Body>> {
    let current = api.get(info, ns, name)?;
    let scale_of = |obj: &Value| -> Value {
        let selector = obj
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let md = &obj["metadata"];
        json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": md["name"], "namespace": md["namespace"], "uid": md["uid"],
                         "resourceVersion": md["resourceVersion"], "creationTimestamp": md["creationTimestamp"]},
            "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
            "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
        })
    };
    let wanted = match verb {
        "get" => return Ok(json_response(StatusCode::OK, &scale_of(&current))),
        "update" => parse_body(&read_body(req).await?, content_type)?,
        "patch" => {
            let patch = parse_json(&read_body(req).await?)?;
            let mut doc = scale_of(&current);
            match content_type.split(';').next().unwrap_or("").trim() {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    json_patch::merge(&mut doc, &patch)
                }
                "application/json-patch+json" => crate::api::json_patch_onto(&mut doc, &patch)?,
                other => return Err(ApiError::unsupported_media_type(other)),
            }
            doc
        }
        _ => return Err(ApiError::method_not_allowed(verb)),
    };
    let replicas = wanted
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![Cause::invalid(
                    "spec.replicas",
                    &wanted["spec"]["replicas"],
                    "must be greater than or equal to 0",
                )],
            )
        })?;
    let mut new = (*current).clone();
    new["spec"]["replicas"] = json!(replicas);
    let rv = meta::meta_str(&wanted, "resourceVersion");
    if !rv.is_empty() {
        new["metadata"]["resourceVersion"] = json!(rv);
    }
    let updated = api.update(info, &info.storage_version, ns, name, new, None, ctx)?;
    Ok(json_response(StatusCode::OK, &scale_of(&updated)))
}

fn delete_options(body: &[u8], content_type: &str, query: &Query) -> ApiResult<DeleteOptions> {
    let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(body, content_type)?
    };
    let policy = v
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or_else(|| query.get("propagationPolicy"))
        .map(str::to_string)
        .or_else(|| match v.get("orphanDependents").and_then(Value::as_bool) {
            Some(true) => Some("Orphan".into()),
            _ => None,
        });
    let propagation = match policy.as_deref() {
        None | Some("Background") => Propagation::Background,
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    };
    let dry_run = query.get("dryRun") == Some("All")
        || v.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    Ok(DeleteOptions {
        propagation,
        uid: v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok()),
        dry_run,
    })
}
