//! The HTTPS server: TLS, authentication and the routing of the Kubernetes REST paths to discovery
//! (`http/discovery.rs`), the resource verbs (`http/verbs.rs`) and lists and watches
//! (`http/list_watch.rs`).

mod discovery;
mod list_watch;
mod verbs;

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::Api;
use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult};

type Body = BoxBody<Bytes, Infallible>;

/// Settings of one server incarnation.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// The shortest lifetime a TokenRequest may ask for.
    pub min_token_lifetime: Duration,
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
    let Some(user) = token.as_deref().and_then(|t| api.auth().authenticate(t)) else {
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
    let user = match api
        .auth()
        .impersonate(user, as_user.as_deref(), &header_values("Impersonate-Group"))
    {
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

/// Serves one authenticated request: a non-resource path, a group version's resource list, or a
/// resource.
async fn route(
    api: &Arc<Api>,
    settings: &ServerSettings,
    shutdown: &CancellationToken,
    user: UserInfo,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let path = req.uri().path().to_string();
    if let Some(response) = discovery::serve(api, settings, path.trim_end_matches('/')) {
        return response;
    }
    match parse_path(&path) {
        None => Err(ApiError::no_route()),
        Some(Err((group, version))) => {
            discovery::resource_list(api, &group, &version).map(|v| json_response(StatusCode::OK, &v))
        }
        Some(Ok(target)) => verbs::serve(api, settings, shutdown, user, target, req).await,
    }
}
