//! The admin listener: a minimal HTTP/1.1 responder for `/metrics`, `/livez` and `/readyz`.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{handler::SharedZone, metrics::Metrics};

/// Appends Prometheus text.
pub type RenderMetrics = Arc<dyn Fn(&mut String) + Send + Sync>;
/// Says why the process is not ready (`None` when it is).
pub type NotReady = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What the process around the DNS server adds to its admin endpoints.
#[derive(Clone, Default)]
pub struct AdminExtras {
    /// Appends the process's own Prometheus text to `/metrics`.
    pub metrics: Option<RenderMetrics>,
    /// Says why the process is not ready yet, beyond the zone (`None` when it is).
    pub not_ready: Option<NotReady>,
}

impl std::fmt::Debug for AdminExtras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminExtras")
            .field("metrics", &self.metrics.is_some())
            .field("not_ready", &self.not_ready.is_some())
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
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
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
