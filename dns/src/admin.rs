//! The admin listener: a minimal HTTP/1.1 responder for `/metrics`, `/livez` and `/readyz`.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{handler::SharedZone, metrics::Metrics};

/// Serves the admin endpoints until `shutdown`:
/// `/metrics` (Prometheus text), `/livez` (200 while running) and `/readyz` (200 once the zone is
/// synced, 503 before and once shutdown has begun).
pub async fn serve_admin(
    listener: TcpListener,
    zone: SharedZone,
    metrics: Arc<Metrics>,
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
        let (zone, metrics, shutdown) = (zone.clone(), metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(error) = tokio::time::timeout(
                Duration::from_secs(5),
                respond(stream, &zone, &metrics, &shutdown),
            )
            .await
            {
                debug!(%error, "admin request timed out");
            }
        });
    }
}

async fn respond(mut stream: TcpStream, zone: &SharedZone, metrics: &Metrics, shutdown: &CancellationToken) {
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
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            metrics.render(&zone.load()),
        ),
        ("GET", "/livez") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") if zone.load().synced() && !shutdown.is_cancelled() => {
            ("200 OK", "text/plain", "ok\n".into())
        }
        ("GET", "/readyz") => (
            "503 Service Unavailable",
            "text/plain",
            "zone not synced\n".into(),
        ),
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
