//! One start-up for every way mcsd runs. [`Mcsd::start`] wires a running mcsd (the controllers,
//! the DNS feed, the DNS server and the admin listener) for `mcsd run`, `mcsd sandbox`, the tests
//! and the benches; [`Dns::start`] serves a zone alone for `mcsd dns`. Each owns the tasks it
//! starts and joins them when stopped, so a shutdown ends with nothing left running.

pub mod run;
#[cfg(feature = "sandbox")]
pub mod sandbox;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use mcsd_dns::{AdminExtras, SharedZone, ZoneConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::daemon;

/// How the DNS server serves: what `mcsd run` and `mcsd dns` take as flags.
#[derive(Clone, Debug)]
pub struct DnsOptions {
    /// Addresses to serve on, UDP and TCP each (port 0: any free port, the same for both).
    pub listen: Vec<SocketAddr>,
    /// The zone (`clusterset.local`).
    pub zone: String,
    /// TTL of the data records, and the SOA minimum.
    pub ttl: u32,
    /// UDP worker threads per listen address.
    pub workers: u16,
    /// A TCP connection idle this long is closed.
    pub tcp_idle_timeout: Duration,
    /// The EDNS(0) UDP payload size advertised, and the largest UDP reply.
    pub max_udp_payload: u16,
    /// How long the DNS server goes on answering once shutdown begins, `/readyz` saying it is
    /// shutting down meanwhile: the time a Service takes to stop sending it queries (the
    /// endpoint withdrawn, every node's kube-proxy reprogrammed), so that a rollout or a drain
    /// leaves no query unanswered.
    pub drain: Duration,
}

impl Default for DnsOptions {
    /// The defaults of `mcsd run`'s flags, on 127.0.0.1 and any free port.
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            zone: mcsd_crds::names::DEFAULT_ZONE.to_string(),
            ttl: 5,
            workers: 1,
            tcp_idle_timeout: Duration::from_secs(30),
            max_udp_payload: 1232,
            drain: Duration::ZERO,
        }
    }
}

impl DnsOptions {
    /// The zone these options serve; its NS glue is every listen address that is not a wildcard.
    pub fn zone_config(&self) -> ZoneConfig {
        ZoneConfig {
            origin: self.zone.clone(),
            ttl: self.ttl,
            nameserver_addrs: self
                .listen
                .iter()
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified())
                .collect(),
            max_udp_payload: self.max_udp_payload,
        }
    }
}

/// Why mcsd could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The DNS zone configuration is invalid.
    #[error("zone {zone:?}: {source}")]
    Zone {
        /// The zone.
        zone: String,
        /// Why.
        source: crate::core::dns_index::ConvertError,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A DNS server and the admin listener beside it, serving one zone until their shutdown token
/// is cancelled.
#[derive(Debug)]
pub struct Dns {
    /// The DNS addresses bound (UDP and TCP on each; port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    /// The admin listener's address.
    pub admin: SocketAddr,
    /// The zone served.
    pub zone: SharedZone,
    /// The serving tasks. Dropped, they run on until their shutdown token is cancelled (a caller
    /// may keep only the addresses); [`Self::stopped`] joins them.
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Dns {
    /// Binds every address of `options.listen` (UDP and TCP) and `admin`, and serves `zone` on
    /// them, with `extras` (the daemon's metrics, readiness and `/why`) on the admin listener,
    /// until `options.drain` after `shutdown` (not ready meanwhile).
    pub async fn start(
        zone: SharedZone,
        options: &DnsOptions,
        admin: SocketAddr,
        mut extras: AdminExtras,
        shutdown: CancellationToken,
    ) -> Result<Self, Error> {
        let listen_error = |addr: &dyn std::fmt::Display| {
            let addr = addr.to_string();
            move |source| Error::Listen { addr, source }
        };
        if options.listen.is_empty() {
            return Err(Error::Listen {
                addr: "no address".into(),
                source: std::io::Error::other("the DNS server needs at least one address to listen on"),
            });
        }
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut addrs = Vec::new();
        for addr in &options.listen {
            let (u, t) = crate::cluster::dns_feed::bind_pair(*addr).map_err(listen_error(addr))?;
            addrs.push(u.local_addr().map_err(listen_error(addr))?);
            udp.push(u);
            tcp.push(tokio::net::TcpListener::from_std(t).map_err(listen_error(addr))?);
        }
        let admin_listener = tokio::net::TcpListener::bind(admin)
            .await
            .map_err(listen_error(&admin))?;
        let admin = admin_listener.local_addr().map_err(listen_error(&admin))?;
        let (shutdown, draining) = drain_after(shutdown, options.drain);
        let not_ready = extras.not_ready.take();
        extras.not_ready = Some(Arc::new(move || {
            if draining.load(std::sync::atomic::Ordering::Relaxed) {
                return Some(
                    "shutting down: answering DNS until the Service stops sending queries (--shutdown-delay)"
                        .into(),
                );
            }
            not_ready.as_ref().and_then(|f| f())
        }));
        let workers = usize::from(options.workers);
        let metrics = Arc::new(mcsd_dns::Metrics::new(udp.len() * workers + 1));
        let serve_options = mcsd_dns::ServeOptions {
            udp_workers: workers,
            tcp_idle_timeout: options.tcp_idle_timeout,
            ..Default::default()
        };
        let admin_server = mcsd_dns::serve_admin_with(
            admin_listener,
            zone.clone(),
            metrics.clone(),
            extras,
            shutdown.clone(),
        );
        let server = mcsd_dns::serve(zone.clone(), metrics, udp, tcp, serve_options, shutdown);
        let tasks = vec![
            tokio::spawn(async move {
                admin_server.await;
                Ok(())
            }),
            tokio::spawn(async move { server.await.context("the DNS server stopped") }),
        ];
        Ok(Self {
            addrs,
            admin,
            zone,
            tasks,
        })
    }

    /// Waits until the DNS server and the admin listener have stopped (after their shutdown);
    /// the first error either ended with.
    pub async fn stopped(self) -> anyhow::Result<()> {
        let mut first = Ok(());
        for task in self.tasks {
            let ended = task.await.context("a serving task panicked").and_then(|r| r);
            if first.is_ok() {
                first = ended;
            }
        }
        first
    }
}

/// A token cancelled `drain` after `shutdown` is, and a flag that is set meanwhile.
fn drain_after(
    shutdown: CancellationToken,
    drain: Duration,
) -> (CancellationToken, Arc<std::sync::atomic::AtomicBool>) {
    if drain.is_zero() {
        return (shutdown, Arc::default());
    }
    let (stop, draining) = (
        CancellationToken::new(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let (stop_later, flag) = (stop.clone(), draining.clone());
    tokio::spawn(async move {
        shutdown.cancelled().await;
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(drain).await;
        stop_later.cancel();
    });
    (stop, draining)
}

/// Everything a running mcsd needs, its connections made and its identity established.
pub struct Config {
    /// The controllers.
    pub daemon: daemon::Config,
    /// The DNS server.
    pub dns: DnsOptions,
    /// The admin listener (`/metrics`, `/livez`, `/readyz`, `/why`).
    pub admin: SocketAddr,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("cluster", &self.daemon.identity.cluster)
            .field("dns", &self.dns)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// A running mcsd: the controllers, the DNS feed and server, the admin listener.
#[derive(Debug)]
pub struct Mcsd {
    /// The controllers' handle (write counters, readiness, peers, leadership).
    pub handle: daemon::Handle,
    /// The DNS addresses bound (UDP and TCP).
    pub dns: SocketAddr,
    /// Every DNS address bound, `dns` first.
    pub dns_addrs: Vec<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The zone it answers from.
    pub zone: SharedZone,
    serving: Dns,
}

impl Mcsd {
    /// Starts the controllers, the DNS feed from the local cluster, the DNS server and the admin
    /// listener, all until `shutdown`. Returns once they run (not once they are ready: see
    /// [`Self::wait_ready`]).
    pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Self, Error> {
        let Config {
            daemon: daemon_config,
            dns,
            admin,
        } = config;
        let client = daemon_config.client.clone();
        let handle = daemon::start(daemon_config, shutdown.clone()).await;
        let zone = crate::cluster::dns_feed::feed(client, dns.zone_config(), shutdown.clone()).map_err(
            |source| Error::Zone {
                zone: dns.zone.clone(),
                source,
            },
        )?;
        let serving = Dns::start(zone.clone(), &dns, admin, handle.admin_extras(), shutdown).await?;
        Ok(Self {
            handle,
            dns: serving.addrs[0],
            dns_addrs: serving.addrs.clone(),
            admin: serving.admin,
            zone,
            serving,
        })
    }

    /// Waits until the controllers have listed everything and started, and the zone is synced.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut ready = self.handle.ready.clone();
        tokio::time::timeout(timeout, ready.wait_for(|r| *r))
            .await
            .with_context(|| format!("mcsd did not become ready within {timeout:?}"))??;
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.zone.load().synced() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the DNS zone did not sync within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// After its shutdown: waits until the writers have finished their batch, the Lease is given
    /// up, and the DNS server and admin listener have stopped.
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.handle.stopped().await;
        self.serving.stopped().await
    }
}
