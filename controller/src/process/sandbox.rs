//! `mcsd sandbox`: a whole ClusterSet on one machine.
//!
//! ```text
//!  cluster-a ─ API server (CRDs, ClusterProperties, manifests/ RBAC) ─ mcsd (as SA mcsd) ─ DNS 127.0.0.1:P
//!  cluster-b ─ …                                                      peers read each other as SA mcsd-peer
//! ```
//!
//! Each member is started in [`start_member`] (API server, the project's namespace and RBAC
//! manifests) and then [`start_mcsd`] (controllers peered with every other member, DNS server).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use kube::Client;
use mcsd_sandbox::{Cluster, ClusterConfig};
use tokio_util::sync::CancellationToken;

use crate::core::sandbox_file;

use crate::daemon;

/// The namespace and RBAC manifests, as installed into real clusters.
const MANIFESTS: [&str; 2] = [
    include_str!("../../../manifests/namespace.yaml"),
    include_str!("../../../manifests/rbac.yaml"),
];

/// One cluster of the sandbox and what runs beside it.
#[derive(Debug)]
pub struct Member {
    /// The simulated cluster (API server, controllers).
    pub cluster: Cluster,
    /// Where its kubeconfig was written.
    pub kubeconfig: PathBuf,
    /// Its DNS server's address (UDP and TCP), once mcsd runs.
    pub dns: Option<SocketAddr>,
    /// Its mcsd's admin listener, once mcsd runs.
    pub admin: Option<SocketAddr>,
}

/// Starts the `index`th member, installs the project's namespace and RBAC manifests, and writes
/// its kubeconfig into `dir`.
pub async fn start_member(index: usize, dir: &Path) -> anyhow::Result<Member> {
    start_member_with(ClusterConfig::nth(index), dir).await
}

/// [`start_member`] with a configuration of its own.
pub async fn start_member_with(config: ClusterConfig, dir: &Path) -> anyhow::Result<Member> {
    let name = config.name.clone();
    let cluster = Cluster::start(config)
        .await
        .with_context(|| format!("starting cluster {name}"))?;
    let kubeconfig = dir.join(format!("{}.kubeconfig", cluster.name()));
    std::fs::write(&kubeconfig, cluster.kubeconfig_yaml())
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    let admin = cluster.admin_client().await?;
    for manifest in MANIFESTS {
        crate::cluster::manifest::apply_all(&admin, "mcsd-sandbox", manifest)
            .await
            .with_context(|| format!("installing manifests in {}", cluster.name()))?;
    }
    Ok(Member {
        cluster,
        kubeconfig,
        dns: None,
        admin: None,
    })
}

/// How the sandbox runs each mcsd.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a peer may be unreachable before its exports are left out.
    pub peer_grace: Duration,
    /// The leader's Lease duration (every mcsd takes part in its cluster's election).
    pub lease_duration: Duration,
    /// Give the Lease up when stopped (false makes a stop look like a crash).
    pub give_up_lease: bool,
    /// What one peer may publish.
    pub limits: crate::core::guard::Limits,
    /// Per peer: the only ranges its endpoint addresses may be in (`--peer-ranges`).
    pub peer_ranges: std::collections::BTreeMap<mcsd_crds::ClusterId, Vec<ipnet::IpNet>>,
    /// Peer every mcsd with every other cluster from the start (`--no-peers`: none, for
    /// `mcsd join` to connect them).
    pub peered: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            peer_grace: Duration::from_secs(300),
            lease_duration: Duration::from_secs(15),
            give_up_lease: true,
            limits: crate::core::guard::Limits::default(),
            peer_ranges: Default::default(),
            peered: true,
        }
    }
}

/// One running mcsd of the sandbox: the same as every running mcsd.
pub use crate::process::Mcsd;

/// Starts mcsd for `clusters[index]` until `shutdown`: the controllers, as the `mcsd`
/// ServiceAccount, peered with every other cluster through its `mcsd-peer` ServiceAccount, and a
/// DNS server on 127.0.0.1.
pub async fn start_mcsd(
    clusters: &[&Cluster],
    index: usize,
    options: &Options,
    shutdown: CancellationToken,
) -> anyhow::Result<Mcsd> {
    let me = clusters[index];
    let kubeconfig = me.service_account_kubeconfig("mcsd-system", "mcsd")?;
    let client = mcsd_sandbox::Cluster::client_from_kubeconfig(&kubeconfig).await?;
    let election_connection = mcsd_sandbox::Cluster::config_from_kubeconfig(&kubeconfig).await?;
    let identity = crate::cluster::identity::establish(&client, None, None).await?;
    let mut peers = Vec::new();
    for (j, other) in clusters.iter().enumerate() {
        if j != index && options.peered {
            peers.push(daemon::Peer {
                cluster: other.name().parse()?,
                client: other.service_account_client("mcsd-system", "mcsd-peer").await?,
                url: other.api_url(),
                renew: "restart mcsd (the sandbox gives it a fresh mcsd-peer token)".into(),
            });
        }
    }
    let config = daemon::Config {
        client: client.clone(),
        identity,
        exchange_namespace: crate::core::exchange::DEFAULT_NAMESPACE.to_string(),
        peers,
        peer_sync_timeout: Duration::from_secs(10),
        write_concurrency: usize::from(crate::daemon::DEFAULT_WRITE_CONCURRENCY),
        peer_grace: options.peer_grace,
        election: Some(daemon::leader::Election {
            give_up_on_shutdown: options.give_up_lease,
            connection: Some(election_connection),
            ..daemon::leader::Election::new(crate::core::exchange::DEFAULT_NAMESPACE, options.lease_duration)
        }),
        guard: crate::core::guard::Guard {
            namespaces: crate::core::guard::NamespacePolicy::new(
                crate::core::exchange::DEFAULT_NAMESPACE,
                vec![],
                vec![],
            ),
            limits: options.limits,
        },
        peer_ranges: options.peer_ranges.clone(),
    };
    let config = crate::process::Config {
        daemon: config,
        dns: crate::process::DnsOptions {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Default::default()
        },
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    Ok(Mcsd::start(config, shutdown).await?)
}

/// The contents of `DIR/sandbox.json`.
pub fn manifest(members: &[Member]) -> Vec<sandbox_file::Member> {
    members
        .iter()
        .map(|m| sandbox_file::Member {
            name: m.cluster.name().to_string(),
            kubeconfig: m.kubeconfig.clone(),
            api: m.cluster.api_url(),
            dns: m.dns.expect("started before it is listed"),
            admin: m.admin.expect("started before it is listed"),
            cluster_dns: None,
            reference_dns: None,
            pod_network: false,
            pod_dns: None,
            helm_release: None,
        })
        .collect()
}

/// One kubeconfig with every member's admin credentials, a context per cluster named after it
/// (`DIR/kubeconfig`: `kubectl --context cluster-b`, `mcsd join cluster-a cluster-b`), and the
/// hub's (context `hub`) if there is one.
pub fn merged_kubeconfig(members: &[Member], hub: Option<&Cluster>) -> anyhow::Result<String> {
    let mut merged: Option<kube::config::Kubeconfig> = None;
    for cluster in members.iter().map(|m| &m.cluster).chain(hub) {
        let one = kube::config::Kubeconfig::from_yaml(&cluster.kubeconfig_yaml())?;
        merged = Some(match merged {
            None => one,
            Some(all) => all.merge(one)?,
        });
    }
    Ok(serde_yaml::to_string(&merged.unwrap_or_default())?)
}

/// How the sandbox's clusters are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connect {
    /// Each peered with every other (full mesh).
    Mesh,
    /// Not at all: `mcsd join` connects them.
    Later,
    /// Through a hub API server started beside them, every member enrolled.
    Hub,
}

/// The name of the sandbox's hub API server (and of its context in `DIR/kubeconfig`).
pub const HUB: &str = "hub";

/// Starts a hub API server beside `members` members (its own ranges after theirs), and writes
/// `DIR/hub.kubeconfig`; with `initialise`, installs what a hub needs (as `mcsd hub init`).
pub async fn start_hub(members: usize, dir: &Path, initialise: bool) -> anyhow::Result<Cluster> {
    let config = ClusterConfig {
        name: HUB.to_string(),
        install_crds: false,
        ..ClusterConfig::nth(members)
    };
    let hub = Cluster::start(config)
        .await
        .context("starting the hub API server")?;
    let path = dir.join(format!("{HUB}.kubeconfig"));
    std::fs::write(&path, hub.kubeconfig_yaml()).with_context(|| format!("writing {}", path.display()))?;
    if initialise {
        crate::cluster::hub::install(&hub.admin_client().await?)
            .await
            .context("installing manifests/hub.yaml on the hub")?;
    }
    Ok(hub)
}

/// Enrols `member` in `hub` (its namespace, identity and rights there, its pod ranges declared),
/// and gives its mcsd the hub credential: Secret `mcsd-system/hub`.
pub async fn enrol(hub: &Cluster, member: &ClusterConfig, client: &Client) -> anyhow::Result<()> {
    let id: mcsd_crds::ClusterId = member.name.parse()?;
    crate::cluster::hub::enrol(&hub.admin_client().await?, &id, &member.pod_cidrs).await?;
    let kubeconfig = hub.service_account_kubeconfig(
        &crate::core::hub::member_namespace(&id),
        crate::core::hub::MEMBER_SERVICE_ACCOUNT,
    )?;
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": crate::core::hub::SECRET, "namespace": crate::core::exchange::DEFAULT_NAMESPACE},
        "stringData": {crate::core::hub::KEY_KUBECONFIG: kubeconfig},
    });
    crate::cluster::manifest::apply(client, "mcsd-sandbox", &secret)
        .await
        .with_context(|| format!("writing Secret mcsd-system/hub in {}", member.name))
}

/// Starts `clusters` members, each with mcsd and DNS, connected as `connect` says, writes the
/// files, prints `sandbox ready` once every mcsd is ready and every zone is synced, and runs
/// until SIGINT or SIGTERM.
pub async fn run(clusters: usize, dir: &Path, connect: Connect) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let mut members = Vec::with_capacity(clusters);
    for index in 0..clusters {
        members.push(start_member(index, &dir).await?);
    }
    let hub = match connect {
        Connect::Hub => {
            let hub = start_hub(clusters, &dir, true).await?;
            for (index, member) in members.iter().enumerate() {
                enrol(
                    &hub,
                    &ClusterConfig::nth(index),
                    &member.cluster.admin_client().await?,
                )
                .await?;
            }
            Some(hub)
        }
        Connect::Mesh | Connect::Later => None,
    };
    let shutdown = CancellationToken::new();
    let mut running = Vec::new();
    for index in 0..clusters {
        let all: Vec<&Cluster> = members.iter().map(|m| &m.cluster).collect();
        let options = Options {
            peered: connect == Connect::Mesh,
            ..Options::default()
        };
        let mcsd = start_mcsd(&all, index, &options, shutdown.clone()).await?;
        members[index].dns = Some(mcsd.dns);
        members[index].admin = Some(mcsd.admin);
        running.push(mcsd);
    }
    for mcsd in &running {
        mcsd.wait_ready(Duration::from_secs(60)).await?;
    }
    // Handle SIGTERM from before `sandbox ready` is printed: whoever reads that line may stop us.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let path = dir.join("kubeconfig");
    std::fs::write(&path, merged_kubeconfig(&members, hub.as_ref())?)
        .with_context(|| format!("writing {}", path.display()))?;
    let path = dir.join(sandbox_file::FILE);
    std::fs::write(&path, sandbox_file::render(&manifest(&members)))
        .with_context(|| format!("writing {}", path.display()))?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "sandbox ready")?;
        out.flush()?;
    }
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    // Each mcsd first (its writers finish, it gives its Lease up), then the API servers it
    // talks to: the other way round, every mcsd would log the API server's disappearance.
    shutdown.cancel();
    for mcsd in running {
        if let Err(e) = mcsd.stopped().await {
            tracing::warn!(error = %e, "an mcsd did not stop cleanly");
        }
    }
    for m in members {
        m.cluster.shutdown().await;
    }
    if let Some(hub) = hub {
        hub.shutdown().await;
    }
    Ok(())
}
