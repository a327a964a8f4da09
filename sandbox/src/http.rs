//! The HTTPS server: TLS, authentication, routing of the Kubernetes REST paths, discovery, and
//! the watch streams.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::{Api, Ctx, DeleteOptions, PatchType, Propagation};
use crate::auth::{Attributes, UserInfo};
use crate::error::{ApiError, ApiResult, Cause};
use crate::kinds::ResourceInfo;
use crate::meta;
use crate::select::{FieldSelector, LabelSelector};
use crate::store::{EventType, Resume};
use crate::table;

type Body = BoxBody<Bytes, Infallible>;

/// Settings of one server incarnation.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// `serverAddress` in `/api` (`127.0.0.1:PORT`).
    pub address: String,
    /// Resources (plural names) whose requests are held unanswered, for fault injection.
    pub held: Arc<watch::Sender<BTreeSet<String>>>,
}

/// Serves HTTPS on `listener` until `shutdown` is cancelled; then every connection, including
/// open watches, is closed.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<Api>,
    settings: ServerSettings,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let settings = Arc::new(settings);
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    warn!(%error, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let api = api.clone();
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let tls = tokio::select! {
                _ = shutdown.cancelled() => return,
                tls = acceptor.accept(stream) => match tls {
                    Ok(t) => t,
                    Err(error) => {
                        debug!(%error, "TLS handshake failed");
                        return;
                    }
                },
            };
            let conn_shutdown = shutdown.clone();
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                let settings = settings.clone();
                let shutdown = conn_shutdown.clone();
                async move { Ok::<_, Infallible>(handle(api, settings, shutdown, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = conn => {
                    if let Err(error) = result {
                        debug!(%error, "connection ended");
                    }
                }
            }
        });
    }
}

fn full(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("a valid response")
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

struct Query(HashMap<String, String>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

async fn handle(
    api: Arc<Api>,
    settings: Arc<ServerSettings>,
    shutdown: CancellationToken,
    req: Request<Incoming>,
) -> Response<Body> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string);
    let Some(user) = token.as_deref().and_then(|t| api.authenticate(t)) else {
        return error_response(&ApiError::unauthorized());
    };
    // `kubectl --as`, `--as-group`: act as another user, if allowed to.
    let header_values = |name: &str| -> Vec<String> {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let as_user = header_values("Impersonate-User").into_iter().next();
    let user = match api.impersonate(user, as_user.as_deref(), &header_values("Impersonate-Group")) {
        Ok(user) => user,
        Err(e) => return error_response(&e),
    };
    // A held resource: the request waits, unanswered, until it is released (or until its
    // connection closes, which drops this future).
    let holding = !settings.held.borrow().is_empty();
    if holding && let Some(Ok(target)) = parse_path(req.uri().path()) {
        let mut held = settings.held.subscribe();
        let _ = held.wait_for(|set| !set.contains(&target.resource)).await;
    }
    match route(&api, &settings, &shutdown, user, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

/// A TokenRequest's lifetime: `spec.expirationSeconds`, one hour by default, between 10 minutes
/// and 2^32 seconds as the API server validates it.
fn token_request_lifetime(request: &Value, name: &str) -> ApiResult<Duration> {
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
        Some(s) if s < 600 => Err(invalid("may not specify a duration less than 10 minutes")),
        Some(s) if s > 1 << 32 => Err(invalid("may not specify a duration larger than 2^32 seconds")),
        Some(s) => Ok(Duration::from_secs(s.unsigned_abs())),
        None => Err(ApiError::bad_request(format!("{field} must be an integer"))),
    }
}

/// A parsed resource path.
#[derive(Debug)]
struct Target {
    group: String,
    version: String,
    namespace: String,
    resource: String,
    name: String,
    subresource: String,
}

fn parse_path(path: &str) -> Option<Result<Target, (String, String)>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    if rest.is_empty() {
        return Some(Err((group, version)));
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, r @ ..]
            if !(r.is_empty() || r.len() == 1 && matches!(r[0], "status" | "finalize")) =>
        {
            (ns.to_string(), r)
        }
        r => (String::new(), r),
    };
    let s = |i: usize| rest.get(i).map(|x| x.to_string()).unwrap_or_default();
    if rest.len() > 3 {
        return None;
    }
    Some(Ok(Target {
        group,
        version,
        namespace,
        resource: s(0),
        name: s(1),
        subresource: s(2),
    }))
}

async fn read_body(req: Request<Incoming>) -> ApiResult<Bytes> {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))
}

/// An object in a request body: protobuf (kubectl's typed generators), JSON or YAML.
fn parse_body(bytes: &[u8], content_type: &str) -> ApiResult<Value> {
    if content_type.starts_with(crate::proto::MEDIA_TYPE) {
        crate::proto::decode(bytes)
    } else {
        parse_json(bytes)
    }
}

fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(bytes).or_else(|_| {
        serde_yaml::from_slice::<Value>(bytes)
            .map_err(|e| ApiError::bad_request(format!("the request body does not parse: {e}")))
    })
}

async fn route(
    api: &Arc<Api>,
    settings: &ServerSettings,
    shutdown: &CancellationToken,
    user: UserInfo,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match path.trim_end_matches('/') {
        "/version" => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({
                    "major": "1", "minor": "34", "gitVersion": "v1.34.0-mcsd-sandbox",
                    "gitCommit": "", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                    "goVersion": "rust", "compiler": "rustc", "platform": "linux/amd64",
                    "emulationMajor": "1", "emulationMinor": "34"
                }),
            ));
        }
        "/healthz" | "/livez" | "/readyz" => {
            return Ok(full(StatusCode::OK, "text/plain", b"ok".to_vec()));
        }
        "/api" => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": settings.address}]}),
            ));
        }
        "/apis" => return Ok(json_response(StatusCode::OK, &group_list(api))),
        "/openapi/v3" => return Ok(json_response(StatusCode::OK, &openapi_root(api))),
        p if p.starts_with("/openapi/v3/") => {
            let gv = p.trim_start_matches("/openapi/v3/");
            return openapi_group_version(api, gv).map(|v| json_response(StatusCode::OK, &v));
        }
        p if p.starts_with("/openapi") => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the sandbox serves OpenAPI v3 only",
            ));
        }
        _ => {}
    }
    let target = match parse_path(&path) {
        None => return Err(ApiError::no_route()),
        Some(Err((group, version))) => {
            return resource_list(api, &group, &version).map(|v| json_response(StatusCode::OK, &v));
        }
        Some(Ok(t)) => t,
    };
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
    api.authorize(
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
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_string();
    let ctx = Ctx {
        user,
        manager: query
            .get("fieldManager")
            .map(str::to_string)
            .unwrap_or_else(|| user_agent.split('/').next().unwrap_or("unknown").to_string()),
        dry_run: query.get("dryRun") == Some("All"),
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let version = target.version.clone();
    let as_table = accept.contains("as=Table");
    let respond = |status: StatusCode, obj: Arc<Value>| -> Response<Body> {
        let served = Api::at_version(&info, &version, &obj);
        if as_table {
            json_response(
                status,
                &table::table(&info, &version, std::slice::from_ref(&served), json!({})),
            )
        } else {
            full(
                status,
                "application/json",
                serde_json::to_vec(&*served).unwrap_or_default(),
            )
        }
    };
    if info.is_review() {
        if verb != "create" {
            return Err(ApiError::method_not_allowed(method.as_str()));
        }
        let review = parse_body(&read_body(req).await?, &content_type)?;
        let answered = api.review(&info.kind, &ctx.user, review)?;
        return Ok(json_response(StatusCode::CREATED, &answered));
    }
    if subresource == "scale" {
        return scale(api, &info, &ns, &name, verb, &content_type, req, &ctx).await;
    }
    match verb {
        "get" if subresource.is_empty() || subresource == "status" => {
            Ok(respond(StatusCode::OK, api.get(&info, &ns, &name)?))
        }
        "get" => Err(ApiError::method_not_allowed("GET")),
        "list" => list(api, &info, &version, &ns, &query, as_table),
        "watch" => watch(api, &info, &version, &ns, &query, settings, shutdown),
        "create" if !name.is_empty() && info.kind == "ServiceAccount" && subresource == "token" => {
            let mut tr = parse_body(&read_body(req).await?, &content_type)?;
            let ttl = token_request_lifetime(&tr, &name)?;
            let (token, expires) = api.issue_service_account_token(&ns, &name, Some(ttl))?;
            tr["apiVersion"] = json!("authentication.k8s.io/v1");
            tr["kind"] = json!("TokenRequest");
            tr["spec"]["expirationSeconds"] = json!(ttl.as_secs());
            let expires = expires.map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            tr["status"] = json!({"token": token, "expirationTimestamp": expires});
            Ok(json_response(StatusCode::CREATED, &tr))
        }
        "create" if !name.is_empty() => Err(ApiError::method_not_allowed("POST")),
        "create" => {
            let body = parse_body(&read_body(req).await?, &content_type)?;
            Ok(respond(
                StatusCode::CREATED,
                api.create(&info, &version, &ns, body, &ctx)?,
            ))
        }
        "update" => {
            let body = parse_body(&read_body(req).await?, &content_type)?;
            if info.kind == "Namespace" && subresource == "finalize" {
                let mut current = (*api.get(&info, &ns, &name)?).clone();
                current["spec"]["finalizers"] =
                    body.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
                return Ok(respond(
                    StatusCode::OK,
                    api.update(&info, &version, "", &name, current, None, &ctx)?,
                ));
            }
            let sub = (!subresource.is_empty()).then_some(subresource.as_str());
            Ok(respond(
                StatusCode::OK,
                api.update(&info, &version, &ns, &name, body, sub, &ctx)?,
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
            let existed = api.get(&info, &ns, &name).is_ok();
            let obj = api.patch(&info, &version, &ns, &name, patch_type, &body, sub, &ctx)?;
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(respond(status, obj))
        }
        "delete" => {
            let body = read_body(req).await?;
            let opts = delete_options(&body, &content_type, &query)?;
            Ok(respond(StatusCode::OK, api.delete(&info, &ns, &name, &opts)?))
        }
        "deletecollection" => {
            let body = read_body(req).await?;
            let opts = delete_options(&body, &content_type, &query)?;
            let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
            let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), &info.kind)?;
            let (items, _) = api.list(&info, (!ns.is_empty()).then_some(ns.as_str()));
            for item in items.iter().filter(|o| labels.matches(o) && fields.matches(o)) {
                match api.delete(
                    &info,
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

fn group_list(api: &Api) -> Value {
    let groups: Vec<Value> = api
        .registry()
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(api: &Api, group: &str, version: &str) -> ApiResult<Value> {
    let infos = api.registry().in_group_version(group, version);
    if infos.is_empty() {
        return Err(ApiError::no_route());
    }
    let mut resources = Vec::new();
    for info in infos {
        let mut r = json!({
            "name": info.resource, "singularName": info.singular, "namespaced": info.namespaced,
            "kind": info.kind, "verbs": info.verbs(),
        });
        if !info.short_names.is_empty() {
            r["shortNames"] = json!(info.short_names);
        }
        if !info.categories.is_empty() {
            r["categories"] = json!(info.categories);
        }
        resources.push(r);
        if info.status_subresource {
            resources.push(json!({"name": format!("{}/status", info.resource), "singularName": "", "namespaced": info.namespaced, "kind": info.kind, "verbs": ["get", "patch", "update"]}));
        }
        for sub in &info.other_subresources {
            let (group, kind, verbs) = match *sub {
                "scale" => ("autoscaling", "Scale", json!(["get", "patch", "update"])),
                _ => ("authentication.k8s.io", "TokenRequest", json!(["create"])),
            };
            resources.push(json!({"name": format!("{}/{sub}", info.resource), "singularName": "", "namespaced": info.namespaced, "group": group, "version": "v1", "kind": kind, "verbs": verbs}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

/// `/openapi/v3`: one entry per group-version.
fn openapi_root(api: &Api) -> Value {
    let mut paths = serde_json::Map::new();
    for (group, versions) in api.registry().groups() {
        for v in versions {
            let gv = if group.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{group}/{v}")
            };
            let url = format!("/openapi/v3/{gv}?hash={}", api.store().head());
            paths.insert(gv, json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<gv>`: the resource paths and their operations, each with its
/// `x-kubernetes-group-version-kind` and the query parameters the server honours (kubectl reads
/// this to learn that `fieldValidation` is supported). Schemas are not published: kubectl then
/// computes client-side apply patches from its compiled-in types (built-ins) or as JSON merge
/// patches (custom resources), as it does against clusters without OpenAPI.
fn openapi_group_version(api: &Api, gv: &str) -> ApiResult<Value> {
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return Err(ApiError::no_route()),
    };
    let infos = api.registry().in_group_version(&group, &version);
    if infos.is_empty() {
        return Err(ApiError::no_route());
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    for info in infos {
        let gvk = json!({"group": info.group, "version": version, "kind": info.kind});
        let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let op = |action: &str| {
            json!({
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk.clone(),
                "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
                "responses": {"200": {"description": "OK"}},
            })
        };
        let item = if info.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", info.resource)
        } else {
            format!("{prefix}/{}/{{name}}", info.resource)
        };
        let collection = item.trim_end_matches("/{name}").to_string();
        paths.insert(
            item,
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        paths.insert(collection, json!({"get": op("list"), "post": op("post")}));
    }
    Ok(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.34.0-mcsd-sandbox"}, "paths": paths, "components": {"schemas": {}}}),
    )
}

/// The opaque `continue` token of a page: the [`Resume`] point as base64 JSON.
fn continue_token(resume: &Resume) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(resume).unwrap_or_default())
}

/// Decodes a `continue` token for a list in `namespace` (or all): 400 when it is not one of ours.
fn resume_from(token: &str, namespace: Option<&str>) -> ApiResult<Resume> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice::<Resume>(&b).ok())
        .filter(|r| namespace.is_none_or(|ns| r.namespace == ns))
        .ok_or_else(|| ApiError::bad_request("continue key is not valid: invalid continue token"))
}

fn list(
    api: &Api,
    info: &ResourceInfo,
    version: &str,
    ns: &str,
    query: &Query,
    as_table: bool,
) -> ApiResult<Response<Body>> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), &info.kind)?;
    let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let ns_filter = (info.namespaced && !ns.is_empty()).then_some(ns);
    let resume = query
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(|token| resume_from(token, ns_filter))
        .transpose()?;
    let page = api
        .store()
        .page(&info.gr(), ns_filter, resume.as_ref(), limit, |o| {
            labels.matches(o) && fields.matches(o)
        })
        .map_err(|e| {
            ApiError::expired(format!(
                "The provided continue parameter is too old to display a consistent list result \
                 (the event log starts after resourceVersion {}); start a new list without it",
                e.oldest
            ))
        })?;
    let out: Vec<Arc<Value>> = page
        .items
        .iter()
        .map(|o| Api::at_version(info, version, o))
        .collect();
    let mut metadata = json!({"resourceVersion": page.rv.to_string()});
    if page.remaining > 0
        && let Some(last) = out.last()
    {
        metadata["continue"] = json!(continue_token(&Resume {
            rv: page.rv,
            namespace: meta::meta_str(last, "namespace").to_string(),
            name: meta::meta_str(last, "name").to_string(),
        }));
        // Like a real API server, which counts only what it need not filter.
        if labels.is_empty() && fields.is_empty() {
            metadata["remainingItemCount"] = json!(page.remaining);
        }
    }
    if as_table {
        return Ok(json_response(
            StatusCode::OK,
            &table::table(info, version, &out, metadata),
        ));
    }
    // Written by hand so that a list of thousands is one pass over the items.
    let mut buf = Vec::with_capacity(out.len() * 512 + 256);
    buf.extend_from_slice(b"{\"kind\":");
    serde_json::to_writer(&mut buf, &format!("{}List", info.kind))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    buf.extend_from_slice(b",\"apiVersion\":");
    serde_json::to_writer(&mut buf, &info.api_version(version))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    buf.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut buf, &metadata).map_err(|e| ApiError::internal(e.to_string()))?;
    buf.extend_from_slice(b",\"items\":[");
    for (i, item) in out.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        serde_json::to_writer(&mut buf, &**item).map_err(|e| ApiError::internal(e.to_string()))?;
    }
    buf.extend_from_slice(b"]}");
    Ok(full(StatusCode::OK, "application/json", buf))
}

struct WatchFilter {
    info: Arc<ResourceInfo>,
    version: String,
    ns: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        (self.ns.is_empty() || meta::meta_str(obj, "namespace") == self.ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    fn line(&self, kind: &str, obj: &Arc<Value>) -> Bytes {
        let served = Api::at_version(&self.info, &self.version, obj);
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(b"{\"type\":\"");
        buf.extend_from_slice(kind.as_bytes());
        buf.extend_from_slice(b"\",\"object\":");
        let _ = serde_json::to_writer(&mut buf, &*served);
        buf.extend_from_slice(b"}\n");
        Bytes::from(buf)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let ev = json!({"type": "BOOKMARK", "object": {"kind": self.info.kind, "apiVersion": self.info.api_version(&self.version), "metadata": md}});
        let mut v = serde_json::to_vec(&ev).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

fn expired_line(rv: u64, oldest: u64) -> Bytes {
    let status = ApiError::expired(format!("too old resource version: {rv} ({oldest})")).to_status();
    let mut v = serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn watch(
    api: &Arc<Api>,
    info: &Arc<ResourceInfo>,
    version: &str,
    ns: &str,
    query: &Query,
    settings: &ServerSettings,
    shutdown: &CancellationToken,
) -> ApiResult<Response<Body>> {
    let filter = WatchFilter {
        info: info.clone(),
        version: version.to_string(),
        ns: if info.namespaced {
            ns.to_string()
        } else {
            String::new()
        },
        labels: LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), &info.kind)?,
    };
    let rv_param = query.get("resourceVersion").unwrap_or("");
    let send_initial = query.flag("sendInitialEvents");
    let start: Option<u64> = match rv_param {
        "" | "0" => None,
        s => Some(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
        ),
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    let api = api.clone();
    let interval = settings.bookmark_interval;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let mut head = api.store().subscribe();
        let gr = filter.info.gr();
        let mut last = match start {
            Some(rv) if !send_initial => rv,
            _ => {
                head.borrow_and_update();
                let (items, rv) = api
                    .store()
                    .list(&gr, (!filter.ns.is_empty()).then_some(filter.ns.as_str()));
                for item in items.iter().filter(|o| filter.matches(o)) {
                    if tx.send(filter.line("ADDED", item)).await.is_err() {
                        return;
                    }
                }
                if send_initial && bookmarks && tx.send(filter.bookmark(rv, true)).await.is_err() {
                    return;
                }
                rv
            }
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            head.borrow_and_update();
            match api.store().events_since(last) {
                Err(expired) => {
                    let _ = tx.send(expired_line(last, expired.oldest)).await;
                    return;
                }
                Ok((events, now)) => {
                    for ev in events.iter().filter(|e| e.key.gr == gr) {
                        let now_matches = filter.matches(&ev.object);
                        let was = ev.old.as_ref().is_some_and(|o| filter.matches(o));
                        let kind = match (ev.kind, was, now_matches) {
                            (EventType::Deleted, true, _) => "DELETED",
                            (EventType::Deleted, false, _) => continue,
                            (EventType::Added, _, true) => "ADDED",
                            (EventType::Modified, true, true) => "MODIFIED",
                            (EventType::Modified, false, true) => "ADDED",
                            (EventType::Modified, true, false) => "DELETED",
                            _ => continue,
                        };
                        if tx.send(filter.line(kind, &ev.object)).await.is_err() {
                            return;
                        }
                    }
                    last = now;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                changed = head.changed() => if changed.is_err() { return },
                _ = ticker.tick() => {
                    if bookmarks && tx.send(filter.bookmark(last, false)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("a valid response"))
}
