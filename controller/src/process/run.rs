//! `mcsd run`: the in-cluster daemon.

use std::{path::PathBuf, time::Duration};

use mcsd_crds::ClusterId;
use tokio_util::sync::CancellationToken;

use crate::{cluster::identity, cluster::kubeconfig, cluster::preflight, daemon};

/// A peer as given on the command line: `NAME=KUBECONFIG`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerArg {
    /// The peer's cluster id.
    pub cluster: ClusterId,
    /// A kubeconfig whose credentials may read the peer's exchange namespace.
    pub kubeconfig: PathBuf,
}

impl std::str::FromStr for PeerArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((name, path)) = s.split_once('=') else {
            return Err(format!("{s:?} is not NAME=KUBECONFIG"));
        };
        let cluster = ClusterId::new(name).map_err(|e| e.to_string())?;
        if path.is_empty() {
            return Err(format!("peer {name} has no kubeconfig path"));
        }
        Ok(Self {
            cluster,
            kubeconfig: PathBuf::from(path),
        })
    }
}

/// A peer's address ranges as given on the command line: `NAME=CIDR[,CIDR…]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRanges {
    /// The peer's cluster id.
    pub cluster: ClusterId,
    /// The only ranges its endpoint addresses may be in.
    pub ranges: Vec<ipnet::IpNet>,
}

impl std::str::FromStr for PeerRanges {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((name, ranges)) = s.split_once('=') else {
            return Err(format!("{s:?} is not NAME=CIDR[,CIDR...]"));
        };
        let cluster = ClusterId::new(name).map_err(|e| e.to_string())?;
        let ranges = ranges
            .split(',')
            .map(|r| {
                r.trim()
                    .parse::<ipnet::IpNet>()
                    .map_err(|e| format!("{r:?} is not a CIDR range: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { cluster, ranges })
    }
}

/// `mcsd run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kubeconfig of this cluster. Default: in-cluster configuration, then `$KUBECONFIG`, then
    /// `~/.kube/config`.
    #[arg(long, env = "MCSD_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// This cluster's id. Creates ClusterProperty `cluster.clusterset.k8s.io` when it is missing;
    /// start-up fails when the property holds another value. A lowercase DNS label (≤ 63 characters).
    #[arg(long, env = "MCSD_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: Option<ClusterId>,
    /// The ClusterSet's name. Creates ClusterProperty `clusterset.k8s.io` when it is missing;
    /// start-up fails when the property holds another value.
    #[arg(long, env = "MCSD_CLUSTERSET", value_name = "NAME")]
    pub clusterset: Option<String>,
    /// The namespace where every cluster publishes its exports for its peers (the same name in
    /// every cluster).
    #[arg(long, env = "MCSD_NAMESPACE", default_value = crate::core::exchange::DEFAULT_NAMESPACE, value_name = "NAMESPACE")]
    pub exchange_namespace: String,
    /// A peer cluster, as `NAME=KUBECONFIG` (repeat for each peer). NAME is the peer's cluster id;
    /// the kubeconfig's credentials need only the `mcsd-peer` rights in the peer.
    #[arg(long = "peer", value_name = "NAME=KUBECONFIG")]
    pub peers: Vec<PeerArg>,
    /// How long to wait at start-up for peers to list their records before writing anyway.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub peer_sync_timeout: u64,
    /// How many services each writer (exports, imports) reconciles at once. Each service's own
    /// writes stay in order; a 429 from the API server (after the client's own retries, which
    /// honour `Retry-After`) halves it for a while.
    #[arg(long, default_value_t = crate::daemon::DEFAULT_WRITE_CONCURRENCY, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub write_concurrency: u16,
    /// How long a peer may be unreachable before its endpoints are withdrawn from this cluster's
    /// EndpointSlices and DNS (its ServiceImports then say so in condition `ClustersExcluded`).
    /// A shorter outage withdraws nothing.
    #[arg(long, default_value_t = 300, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub peer_grace_period: u64,
    /// Elect a leader among the replicas with Lease `mcsd` in the exchange namespace: only the
    /// leader writes, every replica serves DNS. `false` makes this replica write unconditionally
    /// (run exactly one replica then).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_election: bool,
    /// How long the leader's Lease lasts without renewal: the longest a handover takes when a
    /// leader dies without giving it up (2–600).
    #[arg(long, default_value_t = 15, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(2..=600))]
    pub lease_duration: u64,
    /// Address to serve DNS on, UDP and TCP; repeat for several (IPv4 and IPv6). Port 0 picks a
    /// free port.
    #[arg(long = "dns-listen", value_name = "ADDR", default_value = "0.0.0.0:5353")]
    pub dns_listen: Vec<std::net::SocketAddr>,
    /// The DNS zone to serve.
    #[arg(long, value_name = "NAME", default_value = mcsd_crds::names::DEFAULT_ZONE)]
    pub zone: String,
    /// TTL in seconds of the data records (0–3600); also the SOA minimum.
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub ttl: u32,
    /// UDP worker threads per DNS listen address.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Close a DNS TCP connection after this many seconds without a query.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub tcp_idle_timeout: u64,
    /// The EDNS(0) UDP payload size advertised, and the largest UDP reply sent (512–4096).
    #[arg(long, value_name = "BYTES", default_value_t = 1232, value_parser = clap::value_parser!(u16).range(512..=4096))]
    pub max_udp_payload: u16,
    /// On SIGTERM, go on answering DNS this long (`/readyz` failing meanwhile) while the
    /// `mcsd-dns` Service stops sending queries here; the writers stop and the Lease is given up
    /// at once. Keep it well below the pod's terminationGracePeriodSeconds (30 by default).
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_delay: u64,
    /// Address of the admin HTTP listener (`/metrics`, `/livez`, `/readyz`).
    #[arg(long = "admin-listen", value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub admin_listen: std::net::SocketAddr,
    /// A namespace that may export and be imported even though denied (a name, or a prefix
    /// ending in `*`; repeat). Every `kube-*` namespace and the exchange namespace are denied
    /// unless named here.
    #[arg(long = "allow-namespace", value_name = "NAMESPACE")]
    pub allow_namespaces: Vec<String>,
    /// A namespace that may neither export nor be imported, besides `kube-*` and the exchange
    /// namespace (a name, or a prefix ending in `*`; repeat). Its ServiceExports get
    /// `Valid=False/NamespaceDenied`; peers' records for it are ignored and counted.
    #[arg(long = "deny-namespace", value_name = "NAMESPACE")]
    pub deny_namespaces: Vec<String>,
    /// Only accept endpoint addresses of a peer inside these ranges, as `NAME=CIDR[,CIDR…]`
    /// (repeat per peer; a peer Secret's `ranges` key does the same).
    #[arg(long = "peer-ranges", value_name = "NAME=CIDRS")]
    pub peer_ranges: Vec<PeerRanges>,
    /// The most services one peer may export into this cluster; its others are refused.
    #[arg(long, value_name = "N", default_value_t = crate::core::guard::Limits::default().records)]
    pub max_peer_records: usize,
    /// The most endpoints one peer may publish for one service; a slice past it is refused.
    #[arg(long, value_name = "N", default_value_t = crate::core::guard::Limits::default().endpoints_per_service)]
    pub max_peer_endpoints_per_service: usize,
    /// The most bytes of one peer record (an export record's JSON, or a slice's addresses and
    /// names); a larger one is refused.
    #[arg(long, value_name = "BYTES", default_value_t = crate::core::guard::Limits::default().bytes_per_record)]
    pub max_peer_record_bytes: usize,
}

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A kubeconfig is unusable.
    #[error(transparent)]
    Kubeconfig(#[from] kubeconfig::Error),
    /// The credentials cannot do what the daemon needs, or the API server cannot be reached.
    #[error(transparent)]
    Preflight(#[from] preflight::Error),
    /// The cluster's identity could not be established.
    #[error(transparent)]
    Identity(#[from] identity::Error),
    /// The peers are misconfigured.
    #[error("{0}")]
    Peers(String),
    /// The DNS server or the admin listener could not start.
    #[error(transparent)]
    Serve(#[from] crate::process::Error),
}

impl RunArgs {
    /// Starts the controllers, the DNS server and the admin listener, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<crate::process::Mcsd, Error> {
        let Self {
            kubeconfig,
            cluster_id,
            clusterset,
            exchange_namespace,
            peers,
            peer_sync_timeout,
            write_concurrency,
            peer_grace_period,
            leader_election,
            lease_duration,
            dns_listen,
            zone,
            ttl,
            workers,
            tcp_idle_timeout,
            max_udp_payload,
            shutdown_delay,
            admin_listen,
            allow_namespaces,
            deny_namespaces,
            peer_ranges,
            max_peer_records,
            max_peer_endpoints_per_service,
            max_peer_record_bytes,
        } = self;
        let conn = kubeconfig::connect(kubeconfig.as_deref()).await?;
        preflight::daemon(&conn, &exchange_namespace).await?;
        let client = conn.client.clone();
        let identity = identity::establish(&client, cluster_id.as_ref(), clusterset.as_deref()).await?;
        tracing::info!(cluster = %identity.cluster, clusterset = %identity.clusterset, "identity established");
        let mut seen = std::collections::BTreeSet::from([identity.cluster.clone()]);
        for peer in &peers {
            if !seen.insert(peer.cluster.clone()) {
                return Err(Error::Peers(if peer.cluster == identity.cluster {
                    format!("--peer {} names this cluster itself", peer.cluster)
                } else {
                    format!(
                        "--peer {} is given twice; each peer needs its own id",
                        peer.cluster
                    )
                }));
            }
        }
        let mut peer_clients = Vec::new();
        for peer in peers {
            let conn = kubeconfig::connect_file(&peer.kubeconfig).await?;
            peer_clients.push(daemon::Peer {
                client: conn.client,
                url: conn.url,
                renew: format!(
                    "put fresh credentials in {} (--peer {}) and restart mcsd",
                    peer.kubeconfig.display(),
                    peer.cluster
                ),
                cluster: peer.cluster,
            });
        }
        let election = leader_election.then(|| daemon::leader::Election {
            connection: Some(conn.config),
            ..daemon::leader::Election::new(&exchange_namespace, Duration::from_secs(lease_duration))
        });
        let guard = crate::core::guard::Guard {
            namespaces: crate::core::guard::NamespacePolicy::new(
                &exchange_namespace,
                allow_namespaces,
                deny_namespaces,
            ),
            limits: crate::core::guard::Limits {
                records: max_peer_records,
                endpoints_per_service: max_peer_endpoints_per_service,
                bytes_per_record: max_peer_record_bytes,
            },
        };
        let config = daemon::Config {
            client,
            identity,
            exchange_namespace,
            peers: peer_clients,
            peer_sync_timeout: Duration::from_secs(peer_sync_timeout),
            peer_grace: Duration::from_secs(peer_grace_period),
            write_concurrency: usize::from(write_concurrency),
            election,
            guard,
            peer_ranges: peer_ranges.into_iter().map(|p| (p.cluster, p.ranges)).collect(),
        };
        let dns = crate::process::DnsOptions {
            listen: dns_listen,
            zone,
            ttl,
            workers,
            tcp_idle_timeout: Duration::from_secs(tcp_idle_timeout),
            max_udp_payload,
            drain: Duration::from_secs(shutdown_delay),
        };
        let config = crate::process::Config {
            daemon: config,
            dns,
            admin: admin_listen,
        };
        Ok(crate::process::Mcsd::start(config, shutdown).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_name_equals_kubeconfig() {
        let p: PeerArg = "cluster-b=/etc/mcsd/b.kubeconfig".parse().unwrap();
        assert_eq!(p.cluster.as_str(), "cluster-b");
        assert_eq!(p.kubeconfig, PathBuf::from("/etc/mcsd/b.kubeconfig"));
        assert!(
            "cluster-b"
                .parse::<PeerArg>()
                .unwrap_err()
                .contains("NAME=KUBECONFIG")
        );
        assert!(
            "Cluster-B=/x"
                .parse::<PeerArg>()
                .unwrap_err()
                .contains("lowercase")
        );
        assert!(
            "cluster-b="
                .parse::<PeerArg>()
                .unwrap_err()
                .contains("no kubeconfig")
        );
    }
}
