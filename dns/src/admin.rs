//! The admin listener: a minimal HTTP/1.1 responder for `/metrics`, `/livez` and `/readyz`.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{Zone, handler::SharedZone, metrics::Metrics};

/// Appends Prometheus text.
pub type RenderMetrics = Arc<dyn Fn(&mut String) + Send + Sync>;
/// Says why the process is not ready (`None` when it is).
pub type NotReady = Arc<dyn Fn() -> Option<String> + Send + Sync>;
/// Explains a name (the `name` query parameter of `/why`) against the zone served now, as JSON.
pub type Explain = Arc<dyn Fn(&str, &Zone) -> String + Send + Sync>;

/// What the process around the DNS server adds to its admin endpoints.
#[derive(Clone, Default)]
pub struct AdminExtras {
    /// Appends the process's own Prometheus text to `/metrics`.
    pub metrics: Option<RenderMetrics>,
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

/// [`serve_admin`], with the process's own metrics appended and its own readiness required.
pub async fn serve_admin_with(
    listener: TcpListener,
    zone: SharedZone,
    metrics: Arc<Metrics>,
    extras: AdminExtras,
    shutdown: CancellationToken,
) {
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
        let (zone, metrics, extras, shutdown) =
            (zone.clone(), metrics.clone(), extras.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(error) = tokio::time::timeout(
                Duration::from_secs(5),
                respond(stream, &zone, &metrics, &extras, &shutdown),
            )
            .await
            {
                debug!(%error, "admin request timed out");
            }
        });
    }
}

async fn respond(
    mut stream: TcpStream,
    zone: &SharedZone,
    metrics: &Metrics,
    extras: &AdminExtras,
    shutdown: &CancellationToken,
) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/why") => match (&extras.why, query_param(query, "name")) {
            (None, _) => ("404 Not Found", "text/plain", "not found\n".into()),
            (Some(_), None) => (
                "400 Bad Request",
                "text/plain",
                "say which name: /why?name=NAME\n".into(),
            ),
            (Some(explain), Some(name)) => ("200 OK", "application/json", explain(&name, &zone.load())),
        },
        ("GET", "/metrics") => {
            let mut text = metrics.render(&zone.load());
            if let Some(more) = &extras.metrics {
                more(&mut text);
            }
            ("200 OK", "text/plain; version=0.0.4", text)
        }
        ("GET", "/livez") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") => {
            let why = if shutdown.is_cancelled() {
                Some("shutting down".to_string())
            } else if !zone.load().synced() {
                Some("zone not synced".to_string())
            } else {
                extras.not_ready.as_ref().and_then(|f| f())
            };
            match why {
                None => ("200 OK", "text/plain", "ok\n".into()),
                Some(why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
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
