//! UDP and TCP serving on already-bound sockets until a shutdown token fires.
//!
//! UDP: `workers` blocking threads per socket, each a [`UdpWorker`]: on Linux one `recvmmsg` takes
//! every queued query (up to [`UDP_BATCH`]) and one `sendmmsg` sends their replies; elsewhere a
//! plain `recv_from`/`send_to` loop. Buffers are allocated once per worker: no allocation and no
//! lock per query. TCP: one tokio task per connection, several queries per connection (RFC 7766),
//! closed after an idle timeout.

mod udp;

use std::{
    net::UdpSocket,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub use udp::{UDP_BATCH, UdpWorker};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::{
    Error, Result,
    handler::{Outcome, SharedZone, Transport, answer},
    metrics::Metrics,
};

/// Server tuning.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Blocking UDP worker threads per UDP socket.
    pub udp_workers: usize,
    /// A TCP connection with no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Concurrent TCP connections beyond this wait to be accepted.
    pub max_tcp_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            udp_workers: 1,
            tcp_idle_timeout: Duration::from_secs(30),
            max_tcp_connections: 1024,
        }
    }
}

/// How often a blocked UDP worker wakes up to look at the shutdown token.
const UDP_WAKEUP: Duration = Duration::from_millis(200);

/// Serves `zone` on the given sockets until `shutdown` is cancelled, then returns when every
/// worker has stopped. `metrics` needs `udp.len() * udp_workers + 1` slots to avoid sharing.
pub async fn serve(
    zone: SharedZone,
    metrics: Arc<Metrics>,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut slot = 0;
    for socket in udp {
        let local = socket.local_addr().map_err(|source| Error::Io {
            context: "UDP local address",
            source,
        })?;
        socket
            .set_read_timeout(Some(UDP_WAKEUP))
            .map_err(|source| Error::Io {
                context: "UDP read timeout",
                source,
            })?;
        for worker in 0..options.udp_workers.max(1) {
            let socket = socket.try_clone().map_err(|source| Error::Io {
                context: "UDP socket clone",
                source,
            })?;
            let (zone, metrics, shutdown) = (zone.clone(), metrics.clone(), shutdown.clone());
            let my_slot = slot;
            slot += 1;
            let handle = std::thread::Builder::new()
                .name(format!("dns-udp-{worker}"))
                .spawn(move || {
                    let span = info_span!("dns_udp", %local, worker);
                    let _enter = span.enter();
                    udp_loop(&socket, &zone, &metrics, my_slot, &shutdown);
                })
                .map_err(|source| Error::Io {
                    context: "spawning a UDP worker",
                    source,
                })?;
            threads.push(handle);
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    let limit = Arc::new(Semaphore::new(options.max_tcp_connections.max(1)));
    for listener in tcp {
        let local = listener.local_addr().map_err(|source| Error::Io {
            context: "TCP local address",
            source,
        })?;
        let (zone, metrics, shutdown, limit) =
            (zone.clone(), metrics.clone(), shutdown.clone(), limit.clone());
        let idle = options.tcp_idle_timeout;
        tasks.spawn(
            async move { accept_loop(listener, zone, metrics, slot, idle, limit, shutdown).await }
                .instrument(info_span!("dns_tcp", %local)),
        );
    }
    shutdown.cancelled().await;
    while tasks.join_next().await.is_some() {}
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await
    .map_err(|e| Error::Io {
        context: "joining UDP workers",
        source: std::io::Error::other(e),
    })?;
    Ok(())
}

fn udp_loop(
    socket: &UdpSocket,
    zone: &SharedZone,
    metrics: &Metrics,
    slot: usize,
    shutdown: &CancellationToken,
) {
    let mut worker = UdpWorker::new();
    while !shutdown.is_cancelled() {
        worker.serve_batch(socket, zone, metrics, slot);
    }
}

async fn accept_loop(
    listener: TcpListener,
    zone: SharedZone,
    metrics: Arc<Metrics>,
    slot: usize,
    idle: Duration,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(error) => {
                    warn!(%error, "TCP accept");
                    continue;
                }
            },
        };
        let (zone, metrics, shutdown) = (zone.clone(), metrics.clone(), shutdown.clone());
        connections.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = connection(stream, &zone, &metrics, slot, idle) => {
                    if let Err(error) = r {
                        debug!(%error, %peer, "TCP connection ended");
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

async fn connection(
    mut stream: TcpStream,
    zone: &SharedZone,
    metrics: &Metrics,
    slot: usize,
    idle: Duration,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut query = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
            Err(_) => return Ok(()), // idle
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => {
                r?;
            }
        }
        let len = usize::from(u16::from_be_bytes(len));
        match tokio::time::timeout(idle, stream.read_exact(&mut query[..len])).await {
            Err(_) => return Ok(()),
            Ok(r) => {
                r?;
            }
        }
        let start = Instant::now();
        let outcome = answer(&zone.load(), &query[..len], Transport::Tcp, &mut out);
        metrics.record(slot, outcome, start.elapsed());
        match outcome {
            Outcome::Reply { .. } => {
                let mut framed = Vec::with_capacity(out.len() + 2);
                framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
                framed.extend_from_slice(&out);
                stream.write_all(&framed).await?;
            }
            // Not a query: the stream cannot be trusted any more.
            Outcome::Drop => return Ok(()),
        }
    }
}
