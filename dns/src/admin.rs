//! The admin listener, on hyper (HTTP/1.1): `/metrics`, `/livez`, `/readyz` and `/why`.
//!
//! `/metrics` encodes the process's one `prometheus-client` registry in the Prometheus text format
//! (version 0.0.4): the DNS server's metrics in sub-registry `mcsd_dns`, and the sub-registries
//! the process around it adds (the controllers' writes, peers, propagation).

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use prometheus_client::{encoding::prometheus_text, registry::Registry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{Zone, handler::SharedZone, metrics::Metrics};

/// Registers the process's own metrics in the admin listener's registry, in sub-registries named
/// `mcsd…`, once, when it starts; they are read at every scrape.
pub type RegisterMetrics = Arc<dyn Fn(&mut Registry) + Send + Sync>;
/// Says why the process is not ready (`None` when it is).
pub type NotReady = Arc<dyn Fn() -> Option<String> + Send + Sync>;
/// Explains a name (the `name` query parameter of `/why`) against the zone served now, as JSON.
pub type Explain = Arc<dyn Fn(&str, &Zone) -> String + Send + Sync>;

/// How long one connection may take, from accept to the end of its answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// What the process around the DNS server adds to its admin endpoints.
#[derive(Clone, Default)]
pub struct AdminExtras {
    /// Registers the process's own metrics beside the DNS server's on `/metrics`.
    pub metrics: Option<RegisterMetrics>,
    /// Says why the process is not ready yet, beyond the zone (`None` when it is).
    pub not_ready: Option<NotReady>,
    /// Serves `GET /why?name=NAME` (`mcsd why`); without it, `/why` is not found.
    pub why: Option<Explain>,
}

impl std::fmt::Debug for AdminExtras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminExtras")
            .field("metrics", &self.metrics.is_some())
            .field("not_ready", &self.not_ready.is_some())
            .field("why", &self.why.is_some())
            .finish()
    }
}

/// The process's one metrics registry: the DNS server's metrics (`metrics` and the zone served)
/// in sub-registry `mcsd_dns`, then what `extras` registers.
pub fn registry(metrics: &Arc<Metrics>, zone: &SharedZone, extras: &AdminExtras) -> Registry {
    let mut registry = Registry::default();
    metrics.register(registry.sub_registry_with_prefix("mcsd_dns"), zone.clone());
    if let Some(register) = &extras.metrics {
        register(&mut registry);
    }
    registry
}

/// `registry` in the Prometheus text exposition format (version 0.0.4), as `/metrics` serves it.
pub fn render(registry: &Registry) -> String {
    let mut text = String::with_capacity(8192);
    // Writing into a String cannot fail, and the collectors only fail when their writer does.
    let _ = prometheus_text::encode(&mut text, registry);
    text
}

/// Serves the admin endpoints until `shutdown`:
/// `/metrics` (Prometheus text), `/livez` (200 while running) and `/readyz` (200 once the zone is
/// synced, 503 before and once shutdown has begun).
pub async fn serve_admin(
    listener: TcpListener,
    zone: SharedZone,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    serve_admin_with(listener, zone, metrics, AdminExtras::default(), shutdown).await;
}

/// [`serve_admin`], with the process's own metrics registered and its own readiness required.
pub async fn serve_admin_with(
    listener: TcpListener,
    zone: SharedZone,
    metrics: Arc<Metrics>,
    extras: AdminExtras,
    shutdown: CancellationToken,
) {
    let admin = Arc::new(Admin {
        registry: registry(&metrics, &zone, &extras),
        zone,
        extras,
        shutdown: shutdown.clone(),
    });
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(error) => {
                    debug!(%error, "admin accept");
                    continue;
                }
            },
        };
        let admin = admin.clone();
        let service =
            service_fn(move |request| std::future::ready(Ok::<_, Infallible>(admin.respond(&request))));
        // One request per connection (as `Connection: close`), with at most 8 KiB of head.
        let connection = http1::Builder::new()
            .keep_alive(false)
            .max_buf_size(8192)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => debug!(%error, "admin connection"),
                Err(_) => debug!("admin connection timed out"),
            }
        });
    }
}

/// What answers the admin endpoints.
struct Admin {
    registry: Registry,
    zone: SharedZone,
    extras: AdminExtras,
    shutdown: CancellationToken,
}

impl Admin {
    fn respond(&self, request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET {
            return answer(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n",
            );
        }
        let not_found = || answer(StatusCode::NOT_FOUND, "text/plain", "not found\n");
        match request.uri().path() {
            "/metrics" => answer(
                StatusCode::OK,
                prometheus_text::CONTENT_TYPE,
                render(&self.registry),
            ),
            "/livez" => answer(StatusCode::OK, "text/plain", "ok\n"),
            "/readyz" => match self.not_ready() {
                None => answer(StatusCode::OK, "text/plain", "ok\n"),
                Some(why) => answer(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{why}\n")),
            },
            "/why" => {
                let Some(explain) = &self.extras.why else {
                    return not_found();
                };
                match query_param(request.uri().query().unwrap_or(""), "name") {
                    Some(name) => answer(
                        StatusCode::OK,
                        "application/json",
                        explain(&name, &self.zone.load()),
                    ),
                    None => answer(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        "say which name: /why?name=NAME\n",
                    ),
                }
            }
            _ => not_found(),
        }
    }

    /// Why this process is not ready: shutting down, the zone not synced, or the process's own
    /// reason; `None` when it is ready.
    fn not_ready(&self) -> Option<String> {
        if self.shutdown.is_cancelled() {
            Some("shutting down".to_string())
        } else if !self.zone.load().synced() {
            Some("zone not synced".to_string())
        } else {
            self.extras.not_ready.as_ref().and_then(|f| f())
        }
    }
}

/// A response with `status`, its `Content-Type` and `body`.
fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The `%`-decoded value of `key` in a query string (`+` is a space).
fn query_param(query: &str, key: &str) -> Option<String> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn query_parameters_are_found_and_decoded() {
        assert_eq!(
            query_param("name=hello.demo.svc", "name").as_deref(),
            Some("hello.demo.svc")
        );
        assert_eq!(query_param("x=1&name=a%2Eb+c", "name").as_deref(), Some("a.b c"));
        assert_eq!(query_param("x=1", "name"), None);
        assert_eq!(query_param("name=%zz", "name"), None);
        assert_eq!(query_param("name=%4", "name"), None);
    }
}
