//! The client of mcsd's admin listener (`/metrics`, `/readyz`, `/why`): one `GET` over HTTP/1.1
//! with hyper-util's client, for `mcsd why`, the tests and the benches.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

/// How long `mcsd why` waits for an answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// An answer of the admin listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code (200, 404, 503, …).
    pub status: u16,
    /// Its `Content-Type` (empty without one).
    pub content_type: String,
    /// The body, as text.
    pub body: String,
}

/// Why an admin listener gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing accepted the connection.
    #[error(
        "cannot reach mcsd's admin listener at {addr}: {cause}; check that mcsd runs and that this is its --admin-listen address"
    )]
    Connect {
        /// The address asked.
        addr: SocketAddr,
        /// Why the connection failed.
        cause: String,
    },
    /// The connection was made but no whole answer came in time.
    #[error("mcsd at {addr} did not answer within {} s", within.as_secs_f64())]
    Timeout {
        /// The address asked.
        addr: SocketAddr,
        /// How long it was given.
        within: Duration,
    },
    /// What came back is not an HTTP answer, or the connection broke off.
    #[error("{addr} did not answer as mcsd's admin listener does: {cause}")]
    Exchange {
        /// The address asked.
        addr: SocketAddr,
        /// What went wrong.
        cause: String,
    },
}

/// `GET path_and_query` (`/metrics`, `/why?name=…`) from the admin listener at `addr`, within
/// `within` for the whole exchange.
pub async fn get(addr: SocketAddr, path_and_query: &str, within: Duration) -> Result<Reply, Error> {
    let exchange = async {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http::<Empty<Bytes>>();
        let uri = format!("http://{addr}{path_and_query}")
            .parse()
            .map_err(|e| exchange_error(addr, &e))?;
        let response = client.get(uri).await.map_err(|e| {
            if e.is_connect() {
                Error::Connect {
                    addr,
                    cause: innermost(&e),
                }
            } else {
                exchange_error(addr, &e)
            }
        })?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| exchange_error(addr, &e))?
            .to_bytes();
        Ok(Reply {
            status,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(within, exchange)
        .await
        .unwrap_or(Err(Error::Timeout { addr, within }))
}

fn exchange_error(addr: SocketAddr, error: &(dyn std::error::Error + 'static)) -> Error {
    Error::Exchange {
        addr,
        cause: crate::cluster::preflight::one_line(error),
    }
}

/// The deepest cause of `error` (a connect error's is the system's, e.g. `Connection refused`).
fn innermost(error: &dyn std::error::Error) -> String {
    let mut deepest = error;
    while let Some(e) = deepest.source() {
        deepest = e;
    }
    deepest.to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use prometheus_client::metrics::counter::Counter;
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// The admin listener (mcsd-dns, on hyper) and this client, end to end: each endpoint's
    /// status, type and body, readiness and its reasons, and the port closed after shutdown.
    #[tokio::test]
    async fn the_admin_listener_answers_each_endpoint() {
        let mut writer = mcsd_dns::ZoneWriter::new(mcsd_dns::ZoneConfig::default()).unwrap();
        let zone: mcsd_dns::SharedZone = Arc::new(arc_swap::ArcSwap::new(writer.publish_now()));
        let listening = Arc::new(AtomicBool::new(false));
        let hellos = Counter::<u64>::default();
        hellos.inc();
        let extras = mcsd_dns::AdminExtras {
            metrics: Some(Arc::new(move |registry| {
                let test = registry.sub_registry_with_prefix("mcsd_test");
                test.register("hellos", "Hellos said", hellos.clone());
            })),
            not_ready: Some(Arc::new({
                let listening = listening.clone();
                move || (!listening.load(Ordering::Relaxed)).then(|| "watches still listing".to_string())
            })),
            why: Some(Arc::new(|name: &str, _: &mcsd_dns::Zone| {
                format!("{{\"name\":{name:?}}}")
            })),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(mcsd_dns::Metrics::new(1));
        let server = tokio::spawn(mcsd_dns::serve_admin_with(
            listener,
            zone.clone(),
            metrics,
            extras,
            shutdown.clone(),
        ));
        let ask = |path: &'static str| async move { get(addr, path, TIMEOUT).await.unwrap() };
        let text = |status: u16, body: &str| Reply {
            status,
            content_type: "text/plain".into(),
            body: body.into(),
        };
        assert_eq!(ask("/livez").await, text(200, "ok\n"));
        assert_eq!(ask("/readyz").await, text(503, "zone not synced\n"));
        writer.mark_synced();
        zone.store(writer.publish_now());
        assert_eq!(ask("/readyz").await, text(503, "watches still listing\n"));
        listening.store(true, Ordering::Relaxed);
        assert_eq!(ask("/readyz").await, text(200, "ok\n"));
        let metrics = ask("/metrics").await;
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(
            metrics.body.contains("\nmcsd_dns_zone_synced 1\n"),
            "{}",
            metrics.body
        );
        assert!(
            metrics.body.contains(
                "# HELP mcsd_test_hellos_total Hellos said.\n# TYPE mcsd_test_hellos_total counter\nmcsd_test_hellos_total 1\n"
            ),
            "{}",
            metrics.body
        );
        assert_eq!(ask("/why").await, text(400, "say which name: /why?name=NAME\n"));
        let why = ask("/why?name=a%2Eb+c").await;
        assert_eq!((why.status, why.content_type.as_str()), (200, "application/json"));
        assert_eq!(why.body, r#"{"name":"a.b c"}"#);
        assert_eq!(ask("/nope").await, text(404, "not found\n"));
        shutdown.cancel();
        server.await.unwrap();
        assert!(matches!(
            get(addr, "/livez", TIMEOUT).await,
            Err(Error::Connect { .. })
        ));
    }

    #[tokio::test]
    async fn nothing_listening_is_one_line_naming_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = get(addr, "/readyz", TIMEOUT).await.unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("cannot reach mcsd's admin listener at {addr}: ")),
            "{error}"
        );
        assert!(error.contains("refused"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[tokio::test]
    async fn a_listener_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move { listener.accept().await });
        let error = get(addr, "/metrics", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("mcsd at {addr} did not answer within 0.2 s")
        );
        held.abort();
    }

    #[tokio::test]
    async fn something_else_than_http_is_named_as_such() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.write_all(b"SSH-2.0-OpenSSH\r\n").await;
        });
        let error = get(addr, "/metrics", TIMEOUT).await.unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{addr} did not answer as mcsd's admin listener does: ")),
            "{error}"
        );
    }
}
