//! The real-Kubernetes tier: N real clusters on loopback, each a real control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, built from the published Go modules
//! by `tests/kube/build.sh`), kwok for its node and pods, mcsd installed as a user installs it
//! (`kubectl apply -k manifests/`) and run as a host process with a TokenRequest token of the
//! `mcsd` ServiceAccount, peers connected through `mcsd.io/peer` Secrets holding `mcsd-peer`
//! tokens, and two real CoreDNS servers per cluster: the cluster DNS, with the README's
//! `clusterset.local` forward stub to mcsd, and CoreDNS's own `multicluster` option over the same
//! cluster, as a reference.
//!
//! With the pod network (the default), the pods are more than kwok's records: every pod gets a
//! network namespace on one flat network joining the clusters ([`network`]), its containers'
//! commands run there with the host's programs, `kubectl exec` and `kubectl logs` reach it
//! ([`kubelet`]), its resolver is the cluster DNS through the `kube-dns` Service, and each
//! node runs the real kube-proxy of the control plane's release (iptables or nftables mode),
//! which routes Services and clusterset IPs to pods in any cluster.
//!
//! [`ClusterSet::up`] brings it up and writes `DIR/<name>.kubeconfig`, `DIR/kubeconfig` (every
//! cluster as a context named after it) and `DIR/sandbox.json`, as `mcsd sandbox` does, with
//! `cluster_dns`, `reference_dns` and `pod_network` added. `tests/kube/up.sh` runs it (binary
//! `kube-up`). With a hub (`--hub`), the clusters peer with no one: a fourth control plane (no
//! node, no pods) is the hub, `DIR/hub.kubeconfig` and context `hub`, set up with `mcsd hub init`
//! and `mcsd join --hub` as a user does. With [`Install::Helm`] (`--install helm`, needs the pod
//! network), mcsd is not a host process: `helm install` puts the chart's Deployment in each
//! cluster, the kubelet runs its pods (image `mcsd` is this mcsd, in-cluster through the
//! `kubernetes` Service with the pod's own ServiceAccount token), and `mcsd join --server` peers
//! the clusters at the addresses their pods reach each other's API servers at.

pub mod kubelet;
pub mod network;
mod pki;
mod process;

use std::{
    ffi::OsString,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use base64::Engine as _;
use ipnet::IpNet;
use mcsd::core::sandbox_file;
pub use process::{Process, free_port};

/// Where the Go programs are (`tests/kube/build.sh` prints the directory): `kube`, `kwok`,
/// `coredns`.
#[derive(Clone, Debug)]
pub struct Programs {
    /// The control plane's multi-call binary (kube-proxy too).
    pub kube: PathBuf,
    /// kwok.
    pub kwok: PathBuf,
    /// The stages kwok runs without the pod network: nodes, and pods turned Ready with an
    /// address and deleted.
    pub kwok_stages: PathBuf,
    /// The stages kwok runs with the pod network: nodes only (the tier's kubelet runs pods, and
    /// deletes them once their containers have stopped).
    pub kwok_node_stages: PathBuf,
    /// CoreDNS.
    pub coredns: PathBuf,
    /// Helm (`Install::Helm`).
    pub helm: PathBuf,
    /// mcsd.
    pub mcsd: PathBuf,
}

impl Programs {
    /// The programs in `bin` (build.sh's directory) and `mcsd`.
    pub fn in_dir(bin: &Path, mcsd: PathBuf) -> anyhow::Result<Self> {
        let find = |name: &str| -> anyhow::Result<PathBuf> {
            let path = bin.join(name);
            anyhow::ensure!(
                path.exists(),
                "{} is missing: run tests/kube/build.sh, which builds it",
                path.display()
            );
            Ok(path)
        };
        anyhow::ensure!(
            mcsd.exists(),
            "{} is missing: cargo build -p mcsd",
            mcsd.display()
        );
        Ok(Self {
            kube: find("kube")?,
            kwok: find("kwok")?,
            kwok_stages: find("kwok-stages.yaml")?,
            kwok_node_stages: find("kwok-node-stages.yaml")?,
            coredns: find("coredns")?,
            helm: find("helm")?,
            mcsd,
        })
    }
}

/// How the ClusterSet is brought up.
#[derive(Clone, Debug)]
pub struct Options {
    /// How many clusters (1–8).
    pub clusters: usize,
    /// Whether the clusters exchange records through a hub API server (`hub`, a fourth control
    /// plane) instead of peering with each other.
    pub hub: bool,
    /// Where every file goes (kubeconfigs, `sandbox.json`, each cluster's data and logs).
    pub dir: PathBuf,
    /// The repository (for `manifests/`).
    pub repo: PathBuf,
    /// mcsd's `--peer-grace-period`, seconds.
    pub peer_grace_period: u64,
    /// mcsd's `--lease-duration`, seconds.
    pub lease_duration: u64,
    /// Whether pods get a network, run their commands and take `kubectl exec` (needs root).
    pub pod_network: bool,
    /// kube-proxy's mode, with the pod network.
    pub proxy_mode: ProxyMode,
    /// How mcsd is installed and run.
    pub install: Install,
}

/// How the tier installs and runs mcsd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Install {
    /// `kubectl apply -k manifests/`, the Deployment scaled to zero, and mcsd run as a host
    /// process with the `mcsd` ServiceAccount's token (tests may stop, restart and signal it);
    /// the tier's own peer Secrets (or `mcsd join --hub`).
    Host,
    /// `helm install mcsd manifests/chart`, its Deployment's pods run by the tier's kubelet
    /// (image `mcsd` is this mcsd, in-cluster with the pod's ServiceAccount token), CoreDNS
    /// forwarding to the `mcsd-dns` Service, and `mcsd join` with the addresses pods reach
    /// each API server at: as an operator installs it. Needs the pod network.
    Helm,
}

/// The Helm release the tier installs with [`Install::Helm`].
pub const HELM_RELEASE: &str = "mcsd";

/// How kube-proxy programs Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyMode {
    /// iptables rules (`--proxy-mode=iptables`).
    Iptables,
    /// nftables rules (`--proxy-mode=nftables`).
    Nftables,
}

impl ProxyMode {
    /// As kube-proxy's `--proxy-mode` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Iptables => "iptables",
            Self::Nftables => "nftables",
        }
    }
}

/// The ClusterSet's name, as every cluster's ClusterProperty `clusterset.k8s.io` says.
pub const CLUSTERSET: &str = "real";

/// The address ranges of the `index`th cluster: distinct per cluster, dual-stack, the same as the
/// sandbox's.
fn ranges(index: usize) -> Ranges {
    let net = |s: String| -> IpNet { s.parse().expect("a range") };
    Ranges {
        services: [
            net(format!("10.{}.0.0/16", 96 + index)),
            net(format!("fd00:10:96:{:x}::/112", index + 1)),
        ],
        kubernetes_service_ip: format!("10.{}.0.1", 96 + index),
        dns_service_ip: Ipv4Addr::new(10, 96 + index as u8, 0, 10),
        pods: [
            net(format!("10.{}.0.0/16", 160 + index)),
            net(format!("fd00:10:244:{:x}::/112", index + 1)),
        ],
    }
}

struct Ranges {
    services: [IpNet; 2],
    kubernetes_service_ip: String,
    /// The `kube-dns` Service's address (with the pod network): the pods' nameserver.
    dns_service_ip: Ipv4Addr,
    pods: [IpNet; 2],
}

impl Ranges {
    fn services_flag(&self) -> String {
        format!("{},{}", self.services[0], self.services[1])
    }
}

/// One real cluster and what runs beside it.
#[derive(Debug)]
pub struct Cluster {
    /// `cluster-a`, …
    pub name: String,
    /// Its directory (PKI, data, logs, kubeconfigs).
    pub dir: PathBuf,
    /// The admin's kubeconfig.
    pub kubeconfig: PathBuf,
    /// The API server's URL.
    pub api: String,
    /// mcsd's DNS server (UDP and TCP).
    pub dns: SocketAddr,
    /// mcsd's admin listener.
    pub admin: SocketAddr,
    /// The cluster DNS: CoreDNS with the `clusterset.local` forward stub to mcsd.
    pub cluster_dns: SocketAddr,
    /// CoreDNS's `multicluster` option over the same cluster.
    pub reference_dns: SocketAddr,
    /// The running programs, in start order: etcd, kube-apiserver, kube-controller-manager,
    /// kube-scheduler, kwok, (kube-proxy), mcsd, the two CoreDNS.
    pub processes: Vec<Process>,
    /// mcsd's command line after the program (to restart it as it was).
    pub mcsd_args: Vec<OsString>,
    /// With the pod network: its node there, its kubelet, and the relays of its API server into
    /// the node's namespace and onto the node's address in the root namespace.
    pub pods: Option<PodNetwork>,
}

/// One cluster's part of the pod network.
#[derive(Debug)]
pub struct PodNetwork {
    /// Its node in the network.
    pub node: network::Node,
    /// Its kubelet.
    pub kubelet: Option<kubelet::Kubelet>,
    /// Where pods (through the `kubernetes` Service) and other clusters' pods reach the API
    /// server: the node's DNS address in the root namespace, the API server's port.
    pub api: SocketAddr,
    relays: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// The process named `component` (`etcd`, `kube-apiserver`, `mcsd`, …).
    pub fn process(&mut self, component: &str) -> Option<&mut Process> {
        let name = format!("{}'s {component}", self.name);
        self.processes.iter_mut().find(|p| p.name == name)
    }
}

/// A running ClusterSet of real clusters.
#[derive(Debug)]
pub struct ClusterSet {
    /// The clusters, `cluster-a` first.
    pub clusters: Vec<Cluster>,
    /// Its directory.
    pub dir: PathBuf,
    /// The pod network, if it has one; torn down last (and when dropped, however the tier
    /// ends).
    pub network: Option<network::Network>,
    /// The hub API server of a hub ClusterSet (etcd, kube-apiserver, kube-controller-manager;
    /// its files in `DIR/hub/`, its admin's kubeconfig `DIR/hub.kubeconfig`).
    pub hub: Option<Cluster>,
    /// How mcsd was installed.
    pub install: Install,
}

/// The most clusters the tier brings up (each a control plane of its own: about 0.6 GiB).
pub const MAX_CLUSTERS: usize = 8;

/// The hub's name: its context in `DIR/kubeconfig`, its directory, `DIR/hub.kubeconfig`.
pub const HUB: &str = "hub";

/// The hub's audit log, in its directory: every list and watch of the exchange (JSON lines).
pub const HUB_AUDIT_LOG: &str = "audit.log";

/// Which of [`ranges`] the hub takes for its own Services (it runs no pods): past every
/// cluster's.
const HUB_RANGES: usize = MAX_CLUSTERS;

/// The `index`th cluster's name, as the sandbox names it.
pub fn cluster_name(index: usize) -> String {
    format!("cluster-{}", (b'a' + index as u8) as char)
}

impl ClusterSet {
    /// Brings up `options.clusters` real clusters with mcsd and CoreDNS, peered with each other,
    /// and writes the kubeconfigs and `sandbox.json`. Progress lines go to `say`. On failure,
    /// everything started is stopped and the error names the component and its log.
    pub async fn up(programs: &Programs, options: &Options, say: &dyn Fn(&str)) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=MAX_CLUSTERS).contains(&options.clusters),
            "--clusters must be 1 to {MAX_CLUSTERS}"
        );
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("creating {}", options.dir.display()))?;
        let dir = std::fs::canonicalize(&options.dir)?;
        let mut set = Self {
            clusters: Vec::new(),
            dir: dir.clone(),
            network: None,
            hub: None,
            install: options.install,
        };
        match set.bring_up(programs, options, say).await {
            Ok(()) => Ok(set),
            Err(error) => {
                set.down().await;
                Err(error)
            }
        }
    }

    async fn bring_up(
        &mut self,
        programs: &Programs,
        options: &Options,
        say: &dyn Fn(&str),
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            options.install == Install::Host || (options.pod_network && !options.hub),
            "--install helm runs mcsd in pods, peered with `mcsd join`: it needs the pod network and no hub"
        );
        if options.pod_network {
            let clusters: Vec<network::ClusterRanges> = (0..options.clusters)
                .map(|index| {
                    let ranges = ranges(index);
                    network::ClusterRanges {
                        name: cluster_name(index),
                        pods: ranges.pods,
                        services: ranges.services,
                    }
                })
                .collect();
            let network = tokio::task::spawn_blocking(move || network::Network::create(&clusters)).await??;
            say(&format!(
                "pod network: {} nodes joined by {} (kube-proxy in {} mode)",
                network.nodes.len(),
                "mcsd-router",
                options.proxy_mode.as_str()
            ));
            self.network = Some(network);
        }
        for index in 0..options.clusters {
            let started = Instant::now();
            let node = self
                .network
                .as_ref()
                .map(|n| (n.nodes[index].clone(), n.ip_program().to_path_buf()));
            let cluster = start_control_plane(programs, &self.dir, index, node, options.proxy_mode).await?;
            say(&format!(
                "{}: control plane ready at {} ({:.1} s)",
                cluster.name,
                cluster.api,
                started.elapsed().as_secs_f64()
            ));
            self.clusters.push(cluster);
        }
        for cluster in &self.clusters {
            match options.install {
                Install::Host => install_mcsd(cluster, &options.repo).await?,
                Install::Helm => helm_install(programs, cluster, &options.repo)?,
            }
        }
        say(match options.install {
            Install::Host => "mcsd installed in every cluster (kubectl apply -k manifests/)",
            Install::Helm => "mcsd installed in every cluster (helm install mcsd manifests/chart)",
        });
        if options.hub {
            let started = Instant::now();
            let hub = start_hub(programs, &self.dir).await?;
            say(&format!(
                "hub: control plane ready at {} ({:.1} s)",
                hub.api,
                started.elapsed().as_secs_f64()
            ));
            self.hub = Some(hub);
            // As a user enrols clusters: `mcsd hub init`, then `mcsd join --hub` with every
            // member's pod ranges declared, through DIR/kubeconfig's contexts.
            self.write_kubeconfig()?;
            self.enrol_in_hub(programs)?;
            say("every cluster enrolled in the hub (mcsd hub init; mcsd join --hub)");
        } else if options.install == Install::Helm {
            // The release's pods name the cluster (the chart's clusterId and clusterSet) as they
            // start; `mcsd join` needs the names.
            for cluster in &mut self.clusters {
                wait_for_release(cluster).await?;
            }
            self.write_kubeconfig()?;
            self.join(programs)?;
            say("every cluster joined with every other (mcsd join --server …)");
        } else {
            self.peer_every_cluster()?;
        }
        for cluster in &mut self.clusters {
            if options.install == Install::Host {
                start_mcsd(programs, cluster, options).await?;
            }
            start_coredns(programs, cluster).await?;
        }
        for cluster in &self.clusters {
            wait_mcsd_ready(cluster).await?;
        }
        self.write_state()?;
        say(if options.hub {
            "every cluster's mcsd is ready and follows the hub, CoreDNS serves in front of it"
        } else {
            "every cluster's mcsd is ready and peered, CoreDNS serves in front of it"
        });
        Ok(())
    }

    /// Every cluster's mcsd-peer credential, stored as a peer Secret in every other cluster.
    fn peer_every_cluster(&self) -> anyhow::Result<()> {
        for (i, exporter) in self.clusters.iter().enumerate() {
            let token = kubectl_out(
                &exporter.kubeconfig,
                &[
                    "create",
                    "token",
                    "mcsd-peer",
                    "-n",
                    "mcsd-system",
                    "--duration=48h",
                ],
            )?;
            let kubeconfig = token_kubeconfig(exporter, "mcsd-peer", token.trim())?;
            for (j, importer) in self.clusters.iter().enumerate() {
                if i != j {
                    apply_peer_secret(importer, &exporter.name, &kubeconfig)?;
                }
            }
        }
        Ok(())
    }

    /// `mcsd join cluster-a cluster-b …` through `DIR/kubeconfig`, each cluster's API server
    /// named for the others as their pods reach it (`--server`), as an operator joins clusters
    /// whose kubeconfigs name addresses only they themselves can reach.
    fn join(&self, programs: &Programs) -> anyhow::Result<()> {
        let mut args: Vec<String> = vec!["join".into()];
        for cluster in &self.clusters {
            let pods = cluster.pods.as_ref().context("the pod network")?;
            args.push(format!("--server={}=https://{}", cluster.name, pods.api));
        }
        args.extend(self.clusters.iter().map(|c| c.name.clone()));
        run_mcsd(programs, &self.dir.join("kubeconfig"), &args)
    }

    /// `mcsd hub init hub`, then `mcsd join --hub hub cluster-a …` with each cluster's pod
    /// ranges, as the README's hub section says.
    fn enrol_in_hub(&self, programs: &Programs) -> anyhow::Result<()> {
        let kubeconfig = self.dir.join("kubeconfig");
        let mcsd = |args: Vec<String>| run_mcsd(programs, &kubeconfig, &args);
        mcsd(vec!["hub".into(), "init".into(), HUB.into()])?;
        let mut join = vec!["join".into(), "--hub".into(), HUB.into()];
        for (index, cluster) in self.clusters.iter().enumerate() {
            let pods = ranges(index).pods;
            join.push("--ranges".into());
            join.push(format!("{}={},{}", cluster.name, pods[0], pods[1]));
        }
        join.extend(self.clusters.iter().map(|c| c.name.clone()));
        mcsd(join)
    }

    /// Writes `DIR/<name>.kubeconfig` (already there), `DIR/kubeconfig` with every cluster as a
    /// context and `DIR/sandbox.json`.
    fn write_state(&self) -> anyhow::Result<()> {
        let members: Vec<sandbox_file::Member> = self
            .clusters
            .iter()
            .map(|c| sandbox_file::Member {
                name: c.name.clone(),
                kubeconfig: c.kubeconfig.clone(),
                api: c.api.clone(),
                dns: c.dns,
                admin: c.admin,
                cluster_dns: Some(c.cluster_dns),
                reference_dns: Some(c.reference_dns),
                pod_network: c.pods.is_some(),
                pod_dns: c.pods.as_ref().map(|p| SocketAddr::from((p.node.dns, 53))),
                helm_release: (self.install == Install::Helm).then(|| HELM_RELEASE.to_string()),
            })
            .collect();
        std::fs::write(self.dir.join(sandbox_file::FILE), sandbox_file::render(&members))?;
        self.write_kubeconfig()
    }

    /// `DIR/kubeconfig`: every cluster as a context named after it, and the hub's (`hub`) in a
    /// hub ClusterSet; the current context `cluster-a`.
    fn write_kubeconfig(&self) -> anyhow::Result<()> {
        let mut merged = serde_yaml::Mapping::new();
        let mut lists: [Vec<serde_yaml::Value>; 3] = Default::default();
        for cluster in self.clusters.iter().chain(&self.hub) {
            let text = std::fs::read_to_string(&cluster.kubeconfig)?;
            let one: serde_yaml::Value = serde_yaml::from_str(&text)?;
            for (list, key) in lists.iter_mut().zip(["clusters", "users", "contexts"]) {
                if let Some(items) = one.get(key).and_then(|v| v.as_sequence()) {
                    list.extend(items.iter().cloned());
                }
            }
        }
        merged.insert("apiVersion".into(), "v1".into());
        merged.insert("kind".into(), "Config".into());
        for (list, key) in lists.into_iter().zip(["clusters", "users", "contexts"]) {
            merged.insert(key.into(), serde_yaml::Value::Sequence(list));
        }
        merged.insert("current-context".into(), self.clusters[0].name.clone().into());
        std::fs::write(self.dir.join("kubeconfig"), serde_yaml::to_string(&merged)?)?;
        Ok(())
    }

    /// Starts again, as a kubelet restarts a crashed static pod, every component that has
    /// exited (killed by a test, or crashed); returns one line per restart.
    pub async fn supervise(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        for cluster in self.clusters.iter_mut().chain(&mut self.hub) {
            for process in &mut cluster.processes {
                let Ok(Some(status)) = process.exited() else {
                    continue;
                };
                let outcome = match process.restart(Duration::from_secs(1)).await {
                    Ok(()) => "restarted it".to_string(),
                    Err(e) => format!("could not restart it: {e:#}"),
                };
                lines.push(format!(
                    "{} exited ({status}); {outcome} (log {})",
                    process.name,
                    process.log.display()
                ));
            }
        }
        lines
    }

    /// Stops everything, last started first; the pods (their processes and namespaces) and the
    /// pod network last.
    pub async fn down(&mut self) {
        // The clusters (and the hub) side by side: each one's processes last started first.
        futures::future::join_all(
            self.clusters
                .iter_mut()
                .chain(&mut self.hub)
                .map(|cluster| async move {
                    for process in cluster.processes.iter_mut().rev() {
                        process.stop(Duration::from_secs(10)).await;
                    }
                    if let Some(pods) = &mut cluster.pods {
                        if let Some(kubelet) = pods.kubelet.take() {
                            kubelet.stop().await;
                        }
                        for relay in &pods.relays {
                            relay.abort();
                        }
                    }
                }),
        )
        .await;
        if let Some(mut network) = self.network.take() {
            let _ = tokio::task::spawn_blocking(move || network.teardown()).await;
        }
    }
}

/// Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok for the
/// `index`th cluster, creates its node, and waits until pods can run there.
/// With the pod network, `pod_network` is the cluster's node there and the `ip` program: the cluster
/// then gets its kubelet (before kwok, whose node names the kubelet's port), the `kube-dns`
/// Service and its node's kube-proxy in `proxy_mode`.
async fn start_control_plane(
    programs: &Programs,
    root: &Path,
    index: usize,
    pod_network: Option<(network::Node, PathBuf)>,
    proxy_mode: ProxyMode,
) -> anyhow::Result<Cluster> {
    let name = cluster_name(index);
    let dir = root.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let ranges = ranges(index);
    let also = pod_network.as_ref().map(|(node, _)| IpAddr::V4(node.dns));
    let (mut cluster, pki, api_port) = new_control_plane(root, name, dir, &ranges, also)?;
    start_etcd_and_api_server(&mut cluster, programs, &pki, &ranges, api_port, Vec::new()).await?;
    start_controllers(&mut cluster, programs, &pki, &ranges, true)?;
    start_kwok(&mut cluster, programs, pod_network.as_ref(), &ranges, api_port).await?;
    add_node(&mut cluster, &ranges).await?;
    if let Some((node, ip)) = &pod_network {
        start_kube_proxy(&mut cluster, programs, node, ip, &ranges, proxy_mode).await?;
        publish_api_server(&cluster)?;
    }
    Ok(cluster)
}

/// A control plane named `name` about to start in `dir`: its PKI, its API server's port, and its
/// admin's kubeconfig `root/<name>.kubeconfig`.
fn new_control_plane(
    root: &Path,
    name: String,
    dir: PathBuf,
    ranges: &Ranges,
    also: Option<IpAddr>,
) -> anyhow::Result<(Cluster, pki::Pki, u16)> {
    let pki = pki::Pki::create(&name, &ranges.kubernetes_service_ip, also, &dir)?;
    let api_port = free_port()?;
    let api = format!("https://127.0.0.1:{api_port}");
    let kubeconfig = root.join(format!("{name}.kubeconfig"));
    std::fs::write(&kubeconfig, admin_kubeconfig(&name, &api, &pki))?;
    let cluster = Cluster {
        name,
        dir,
        kubeconfig,
        api,
        dns: "127.0.0.1:0".parse()?,
        admin: "127.0.0.1:0".parse()?,
        cluster_dns: "127.0.0.1:0".parse()?,
        reference_dns: "127.0.0.1:0".parse()?,
        processes: Vec::new(),
        mcsd_args: Vec::new(),
        pods: None,
    };
    Ok((cluster, pki, api_port))
}

/// The hub of a hub ClusterSet: etcd, kube-apiserver and kube-controller-manager (whose
/// namespace controller removes a member's records with its namespace); no node, no pods.
async fn start_hub(programs: &Programs, root: &Path) -> anyhow::Result<Cluster> {
    let dir = root.join(HUB);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let ranges = ranges(HUB_RANGES);
    let (mut hub, pki, api_port) = new_control_plane(root, HUB.into(), dir, &ranges, None)?;
    // An audit log of the reads members make of the hub: what a test counts after a restart.
    let policy = hub.dir.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "# Who lists and watches the exchange on the hub (tests count members' relists).\n\
         apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
         - level: Metadata\n  verbs: [list, watch]\n  resources:\n  - group: \"\"\n    resources: [configmaps, namespaces]\n  - group: discovery.k8s.io\n    resources: [endpointslices]\n\
         - level: None\n",
    )?;
    let audit = vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", hub.dir.join(HUB_AUDIT_LOG).display()),
        "--audit-log-maxsize=100".into(),
    ];
    start_etcd_and_api_server(&mut hub, programs, &pki, &ranges, api_port, audit).await?;
    start_controllers(&mut hub, programs, &pki, &ranges, false)?;
    wait_for(
        &mut hub,
        "the controller manager to lead",
        Duration::from_secs(90),
        |c| {
            kubectl_out(
                &c.kubeconfig,
                &["get", "lease", "-n", "kube-system", "-o", "name"],
            )
            .is_ok_and(|s| s.lines().any(|l| l.ends_with("/kube-controller-manager")))
        },
    )
    .await?;
    Ok(hub)
}

impl Cluster {
    /// Starts `program args…` as this cluster's `component`, its output in `<component>.log`.
    fn spawn(&mut self, component: &str, program: &Path, args: Vec<String>) -> anyhow::Result<()> {
        let process = Process::start(
            format!("{}'s {component}", self.name),
            program,
            args.into_iter().map(OsString::from).collect(),
            self.dir.join(format!("{component}.log")),
        )?;
        self.processes.push(process);
        Ok(())
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// etcd and kube-apiserver, until the API server is ready.
async fn start_etcd_and_api_server(
    cluster: &mut Cluster,
    programs: &Programs,
    pki: &pki::Pki,
    ranges: &Ranges,
    api_port: u16,
    extra: Vec<String>,
) -> anyhow::Result<()> {
    let etcd_client = free_port()?;
    let etcd_peer = free_port()?;
    let etcd_url = format!("http://127.0.0.1:{etcd_client}");
    let peer_url = format!("http://127.0.0.1:{etcd_peer}");
    cluster.spawn(
        "etcd",
        &programs.kube,
        vec![
            "etcd".into(),
            "--name=etcd".into(),
            format!("--data-dir={}", cluster.dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=etcd={peer_url}"),
            "--listen-metrics-urls=".into(),
            "--unsafe-no-fsync".into(),
            "--quota-backend-bytes=4294967296".into(),
            "--log-level=warn".into(),
        ],
    )?;

    cluster.spawn(
        "kube-apiserver",
        &programs.kube,
        vec![
            "apiserver".into(),
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", path(&pki.serving_cert)),
            format!("--tls-private-key-file={}", path(&pki.serving_key)),
            format!("--client-ca-file={}", path(&pki.ca)),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!(
                "--service-account-key-file={}",
                path(&pki.service_account_public_key)
            ),
            format!(
                "--service-account-signing-key-file={}",
                path(&pki.service_account_key)
            ),
            format!("--service-cluster-ip-range={}", ranges.services_flag()),
            "--authorization-mode=Node,RBAC".into(),
            "--endpoint-reconciler-type=none".into(),
            // kwok's node has the address 127.0.0.1 and the hostname `localhost`, which may
            // resolve to ::1 where nothing listens.
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ]
        .into_iter()
        .chain(extra)
        .collect(),
    )?;
    wait_api_ready(cluster).await
}

/// kube-controller-manager, and kube-scheduler if `scheduler`.
fn start_controllers(
    cluster: &mut Cluster,
    programs: &Programs,
    pki: &pki::Pki,
    ranges: &Ranges,
    scheduler: bool,
) -> anyhow::Result<()> {
    // The controller manager and the scheduler as the admin (a test control plane); each holds
    // its Lease in kube-system once it runs.
    let component_kubeconfig = path(&cluster.kubeconfig);
    cluster.spawn(
        "kube-controller-manager",
        &programs.kube,
        vec![
            "controller-manager".into(),
            format!("--kubeconfig={component_kubeconfig}"),
            format!("--authentication-kubeconfig={component_kubeconfig}"),
            format!("--authorization-kubeconfig={component_kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()?),
            format!("--root-ca-file={}", path(&pki.ca)),
            format!(
                "--service-account-private-key-file={}",
                path(&pki.service_account_key)
            ),
            format!("--service-cluster-ip-range={}", ranges.services_flag()),
            "--use-service-account-credentials=false".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ],
    )?;
    if !scheduler {
        return Ok(());
    }
    cluster.spawn(
        "kube-scheduler",
        &programs.kube,
        vec![
            "scheduler".into(),
            format!("--kubeconfig={component_kubeconfig}"),
            format!("--authentication-kubeconfig={component_kubeconfig}"),
            format!("--authorization-kubeconfig={component_kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()?),
            "--profiling=false".into(),
            "--v=1".into(),
        ],
    )?;
    Ok(())
}

/// kwok, and with the pod network the tier's kubelet in front of it (with the API server relayed
/// into the node's network namespace).
async fn start_kwok(
    cluster: &mut Cluster,
    programs: &Programs,
    pod_network: Option<&(network::Node, PathBuf)>,
    ranges: &Ranges,
    api_port: u16,
) -> anyhow::Result<()> {
    let component_kubeconfig = path(&cluster.kubeconfig);
    // Without the pod network kwok plays the whole kubelet: it gives pods their address and
    // turns them Ready. With it, the tier's kubelet does that (and runs them), serving the
    // node's kubelet port, and deletes pods once stopped; kwok keeps the node and serves exec
    // behind the kubelet.
    let kwok_port = free_port()?;
    let mut kwok_args = vec![
        format!("--kubeconfig={component_kubeconfig}"),
        "--manage-all-nodes=true".into(),
        "--node-ip=127.0.0.1".into(),
        "--node-name=localhost".into(),
        format!("--server-address=127.0.0.1:{kwok_port}"),
        "--node-lease-duration-seconds=40".into(),
    ];
    if let Some((node, ip)) = pod_network {
        let client = admin_client(&cluster.kubeconfig).await?;
        let kubelet = kubelet::Kubelet::start(
            client,
            kubelet::Config {
                cluster: cluster.name.clone(),
                node_name: format!("{}-node", cluster.name),
                node: node.clone(),
                ip: ip.clone(),
                dir: cluster.dir.clone(),
                cluster_dns: ranges.dns_service_ip,
                kwok: SocketAddr::from((Ipv4Addr::LOCALHOST, kwok_port)),
                api_service: SocketAddr::new(ranges.kubernetes_service_ip.parse()?, 443),
                images: vec![("mcsd".into(), programs.mcsd.clone())],
            },
        )
        .await?;
        let exec = cluster.dir.join("kwok-exec.yaml");
        std::fs::write(
            &exec,
            "# Exec in every pod, as a command on this machine: the kubelet in front rewrites it to\n\
             # run inside the pod.\n\
             apiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterExec\nmetadata: {name: every-pod}\nspec:\n  execs:\n  - local: {workDir: /}\n",
        )?;
        kwok_args.extend([
            format!("--config={}", path(&programs.kwok_node_stages)),
            format!("--config={}", path(&exec)),
            format!("--node-port={}", kubelet.port),
        ]);
        let api = SocketAddr::from((node.dns, api_port));
        let relays = vec![
            network::relay_loopback(&node.netns, api_port)?,
            network::relay_from(api, api_port).await?,
        ];
        cluster.pods = Some(PodNetwork {
            node: node.clone(),
            kubelet: Some(kubelet),
            api,
            relays,
        });
    } else {
        kwok_args.push(format!("--config={}", path(&programs.kwok_stages)));
    }
    cluster.spawn("kwok", &programs.kwok, kwok_args)?;
    Ok(())
}

/// The cluster's one node, with its pod ranges; waits until it is Ready and the controllers lead.
async fn add_node(cluster: &mut Cluster, ranges: &Ranges) -> anyhow::Result<()> {
    // One node, with this cluster's pod ranges: kwok gives every pod bound to it an address of
    // each family from them.
    let name = &cluster.name;
    let node = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}-node\n  annotations: {{kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: \"0\"}}\n  labels: {{kubernetes.io/hostname: {name}-node, kubernetes.io/os: linux, type: kwok}}\nspec:\n  podCIDR: {}\n  podCIDRs: [{}, {}]\n",
        ranges.pods[0], ranges.pods[0], ranges.pods[1]
    );
    kubectl_apply_text(&cluster.kubeconfig, &cluster.dir, "node.yaml", &node)?;
    wait_for(
        cluster,
        "its node to turn Ready (kwok)",
        Duration::from_secs(60),
        |c| {
            kubectl_out(
                &c.kubeconfig,
                &[
                    "get",
                    "node",
                    &format!("{}-node", c.name),
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
            )
            .is_ok_and(|s| s.trim() == "True")
        },
    )
    .await?;
    wait_for(
        cluster,
        "the controller manager and the scheduler to lead",
        Duration::from_secs(90),
        |c| {
            kubectl_out(
                &c.kubeconfig,
                &["get", "lease", "-n", "kube-system", "-o", "name"],
            )
            .is_ok_and(|s| {
                s.lines().any(|l| l.ends_with("/kube-controller-manager"))
                    && s.lines().any(|l| l.ends_with("/kube-scheduler"))
            }) && kubectl_out(
                &c.kubeconfig,
                &["get", "serviceaccount", "default", "-n", "default", "-o", "name"],
            )
            .is_ok()
        },
    )
    .await?;
    Ok(())
}

/// The `kube-dns` Service and the node's kube-proxy, until it has programmed the rules.
async fn start_kube_proxy(
    cluster: &mut Cluster,
    programs: &Programs,
    node: &network::Node,
    ip: &Path,
    ranges: &Ranges,
    proxy_mode: ProxyMode,
) -> anyhow::Result<()> {
    let component_kubeconfig = path(&cluster.kubeconfig);
    start_cluster_dns_service(cluster, ranges, node)?;
    let args = [
        "netns".into(),
        "exec".into(),
        node.netns.clone(),
        programs.kube.display().to_string(),
        "proxy".into(),
        format!("--kubeconfig={component_kubeconfig}"),
        format!("--hostname-override={}-node", cluster.name),
        format!("--proxy-mode={}", proxy_mode.as_str()),
        format!("--cluster-cidr={},{}", ranges.pods[0], ranges.pods[1]),
        // Conntrack's table size is the host's, not a namespace's to set.
        "--conntrack-max-per-core=0".into(),
        "--metrics-bind-address=127.0.0.1:10249".into(),
        "--healthz-bind-address=127.0.0.1:10256".into(),
        "--v=1".into(),
    ];
    cluster.spawn("kube-proxy", ip, args.to_vec())?;
    wait_for(
        cluster,
        "kube-proxy to program the cluster's Services",
        Duration::from_secs(60),
        |c| {
            let netns = c.pods.as_ref().map(|p| p.node.netns.clone()).unwrap_or_default();
            network::in_netns(&netns, || {
                Ok(healthz_ok(SocketAddr::from((Ipv4Addr::LOCALHOST, 10256))))
            })
            .unwrap_or(false)
        },
    )
    .await?;
    Ok(())
}

/// Whether `GET /healthz` at `addr` answers 200 (kube-proxy's: once it has programmed the
/// node's rules), asked from the calling thread's network namespace.
fn healthz_ok(addr: SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 12];
    stream.read_exact(&mut reply).is_ok() && reply.ends_with(b" 200")
}

/// A kube client with the admin's kubeconfig.
async fn admin_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// The `kube-dns` Service every pod's resolver names, as in a kubeadm cluster, its endpoint the
/// cluster DNS (CoreDNS on this machine, listening on the node's DNS address, port 53): pods
/// reach it through kube-proxy, as they reach any Service.
fn start_cluster_dns_service(cluster: &Cluster, ranges: &Ranges, node: &network::Node) -> anyhow::Result<()> {
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: kube-dns\n  namespace: kube-system\n  labels: {{k8s-app: kube-dns}}\nspec:\n  clusterIP: {ip}\n  ports:\n  - {{name: dns, port: 53, protocol: UDP}}\n  - {{name: dns-tcp, port: 53, protocol: TCP}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: kube-dns-host\n  namespace: kube-system\n  labels: {{kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: mcsd-tests}}\naddressType: IPv4\nendpoints:\n- addresses: [\"{dns}\"]\n  conditions: {{ready: true}}\nports:\n- {{name: dns, port: 53, protocol: UDP}}\n- {{name: dns-tcp, port: 53, protocol: TCP}}\n",
        ip = ranges.dns_service_ip,
        dns = node.dns,
    );
    kubectl_apply_text(&cluster.kubeconfig, &cluster.dir, "kube-dns.yaml", &service)
}

/// The `kubernetes` Service's endpoint (the API server, as pods reach it: the relay on the node's
/// address), which a control plane's own reconciler would keep but this tier's does not run:
/// in-cluster clients in pods (mcsd installed with Helm) reach the API server through it.
fn publish_api_server(cluster: &Cluster) -> anyhow::Result<()> {
    let api = cluster.pods.as_ref().context("the pod network")?.api;
    let slice = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: kubernetes-relay\n  namespace: default\n  labels: {{kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: mcsd-tests}}\naddressType: IPv4\nendpoints:\n- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\nports:\n- {{name: https, port: {port}, protocol: TCP}}\n",
        ip = api.ip(),
        port = api.port(),
    );
    kubectl_apply_text(
        &cluster.kubeconfig,
        &cluster.dir,
        "kubernetes-endpoints.yaml",
        &slice,
    )
}

/// Waits for `/readyz` with the admin's kubeconfig.
async fn wait_api_ready(cluster: &mut Cluster) -> anyhow::Result<()> {
    wait_for(
        cluster,
        "the API server to be ready",
        Duration::from_secs(90),
        |c| kubectl_out(&c.kubeconfig, &["get", "--raw", "/readyz"]).is_ok_and(|s| s.trim() == "ok"),
    )
    .await
}

/// Polls `ready` every 250 ms until it holds, failing with the component that has exited (and
/// its log) or, past `timeout`, with what was awaited and where the logs are.
async fn wait_for(
    cluster: &mut Cluster,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut(&Cluster) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        for process in &mut cluster.processes {
            process.check_running()?;
        }
        if ready(cluster) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{}: timed out after {timeout:?} waiting for {what}: see the logs in {}",
                cluster.name,
                cluster.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The admin's kubeconfig: client certificate of `system:masters`, context named after the cluster.
fn admin_kubeconfig(name: &str, api: &str, pki: &pki::Pki) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {api}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}-admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\ncurrent-context: {name}\n",
        ca = b64(&pki.ca_pem),
        cert = b64(&pki.admin_cert_pem),
        key = b64(&pki.admin_key_pem),
    )
}

/// A kubeconfig for `cluster` authenticating with a ServiceAccount `token` as `user`.
fn token_kubeconfig(cluster: &Cluster, user: &str, token: &str) -> anyhow::Result<String> {
    let admin: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&cluster.kubeconfig)?)?;
    let ca = admin["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .context("the admin kubeconfig has the CA")?;
    let name = &cluster.name;
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {api}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {user}\ncurrent-context: {name}\n",
        api = cluster.api,
    ))
}

/// Installs mcsd as the README says (`kubectl apply -k manifests/`), sets the cluster's
/// ClusterProperties, and scales the Deployment to zero: its pods would be kwok's, running
/// nothing; mcsd runs as a host process instead, with the same ServiceAccount.
async fn install_mcsd(cluster: &Cluster, repo: &Path) -> anyhow::Result<()> {
    let manifests = repo.join("manifests");
    kubectl_out(
        &cluster.kubeconfig,
        &["apply", "-k", &manifests.display().to_string()],
    )?;
    kubectl_out(
        &cluster.kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/serviceexports.multicluster.x-k8s.io",
            "crd/serviceimports.multicluster.x-k8s.io",
            "crd/clusterproperties.about.k8s.io",
        ],
    )?;
    kubectl_out(
        &cluster.kubeconfig,
        &["scale", "deployment/mcsd", "-n", "mcsd-system", "--replicas=0"],
    )?;
    name_cluster(cluster)
}

/// The cluster's ClusterProperties: its id (its name) and the ClusterSet's.
fn name_cluster(cluster: &Cluster) -> anyhow::Result<()> {
    let properties = format!(
        "apiVersion: about.k8s.io/v1alpha1\nkind: ClusterProperty\nmetadata: {{name: cluster.clusterset.k8s.io}}\nspec: {{value: {}}}\n---\napiVersion: about.k8s.io/v1alpha1\nkind: ClusterProperty\nmetadata: {{name: clusterset.k8s.io}}\nspec: {{value: {CLUSTERSET}}}\n",
        cluster.name
    );
    kubectl_apply_text(
        &cluster.kubeconfig,
        &cluster.dir,
        "clusterproperties.yaml",
        &properties,
    )
}

/// The peer Secret in `importer` that holds `exporter`'s mcsd-peer kubeconfig.
fn apply_peer_secret(importer: &Cluster, exporter: &str, kubeconfig: &str) -> anyhow::Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: peer-{exporter}\n  namespace: mcsd-system\n  labels: {{mcsd.io/peer: \"\"}}\ndata:\n  name: {}\n  kubeconfig: {}\n",
        b64(exporter),
        b64(kubeconfig)
    );
    kubectl_apply_text(
        &importer.kubeconfig,
        &importer.dir,
        &format!("peer-{exporter}.yaml"),
        &secret,
    )
}

/// Runs `mcsd args… --kubeconfig kubeconfig` to success, or fails with its standard error.
fn run_mcsd(programs: &Programs, kubeconfig: &Path, args: &[String]) -> anyhow::Result<()> {
    let output = std::process::Command::new(&programs.mcsd)
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .with_context(|| format!("running {}", programs.mcsd.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "mcsd {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// `helm install mcsd manifests/chart --set clusterId=<name> --set clusterSet=real`: the chart's
/// defaults (the image `mcsd`, which the tier's kubelet runs as this mcsd), naming the cluster
/// as it installs, as the README's Helm section says.
fn helm_install(programs: &Programs, cluster: &Cluster, repo: &Path) -> anyhow::Result<()> {
    let chart = repo.join("manifests/chart");
    let output = std::process::Command::new(&programs.helm)
        .args(["install", HELM_RELEASE])
        .arg(&chart)
        .args(["--set", &format!("clusterId={}", cluster.name)])
        .args(["--set", &format!("clusterSet={CLUSTERSET}")])
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .output()
        .context("running helm")?;
    anyhow::ensure!(
        output.status.success(),
        "{}: helm install {HELM_RELEASE} {} failed: {}",
        cluster.name,
        chart.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// With [`Install::Helm`]: waits for the release's Deployment to roll out, and takes the
/// addresses of its Services (`mcsd-dns` port 53, `mcsd-metrics` port 8080) as the cluster's
/// mcsd DNS and admin addresses (this machine reaches Services as pods do).
async fn wait_for_release(cluster: &mut Cluster) -> anyhow::Result<()> {
    wait_for(
        cluster,
        "the release's pods to be ready (kubectl rollout status deployment/mcsd -n mcsd-system)",
        Duration::from_secs(180),
        |c| {
            kubectl_out(
                &c.kubeconfig,
                &[
                    "rollout",
                    "status",
                    "deployment/mcsd",
                    "-n",
                    "mcsd-system",
                    "--timeout=5s",
                ],
            )
            .is_ok()
        },
    )
    .await?;
    let ip = |service: &str| -> anyhow::Result<IpAddr> {
        let ip = kubectl_out(
            &cluster.kubeconfig,
            &[
                "get",
                "service",
                service,
                "-n",
                "mcsd-system",
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
        )?;
        ip.trim()
            .parse()
            .with_context(|| format!("{}: Service {service} has no cluster IP ({ip:?})", cluster.name))
    };
    cluster.dns = SocketAddr::new(ip("mcsd-dns")?, 53);
    cluster.admin = SocketAddr::new(ip("mcsd-metrics")?, 8080);
    Ok(())
}

/// Starts mcsd for `cluster` as a host process authenticated with a TokenRequest token of the
/// `mcsd` ServiceAccount, so it has exactly the manifests' rights.
async fn start_mcsd(programs: &Programs, cluster: &mut Cluster, options: &Options) -> anyhow::Result<()> {
    let token = kubectl_out(
        &cluster.kubeconfig,
        &["create", "token", "mcsd", "-n", "mcsd-system", "--duration=48h"],
    )?;
    let kubeconfig = cluster.dir.join("mcsd.kubeconfig");
    std::fs::write(&kubeconfig, token_kubeconfig(cluster, "mcsd", token.trim())?)?;
    cluster.dns = format!("127.0.0.1:{}", free_port()?).parse()?;
    cluster.admin = format!("127.0.0.1:{}", free_port()?).parse()?;
    let args: Vec<OsString> = vec![
        "run".into(),
        format!("--kubeconfig={}", kubeconfig.display()).into(),
        format!("--dns-listen={}", cluster.dns).into(),
        format!("--admin-listen={}", cluster.admin).into(),
        format!("--peer-grace-period={}", options.peer_grace_period).into(),
        format!("--lease-duration={}", options.lease_duration).into(),
    ];
    cluster.mcsd_args = args.clone();
    // Every flag on a line of its own, for tests that start another replica like this one.
    let lines: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    std::fs::write(cluster.dir.join("mcsd.args"), lines.join("\n") + "\n")?;
    // As the Deployment names its replicas: the Lease holder's identity starts with the pod name.
    let process = Process::start_with_env(
        format!("{}'s mcsd", cluster.name),
        &programs.mcsd,
        args,
        vec![("MCSD_POD_NAME".into(), "mcsd-0".into())],
        cluster.dir.join("mcsd.log"),
    )?;
    cluster.processes.push(process);
    Ok(())
}

/// Waits for mcsd's `/readyz`.
async fn wait_mcsd_ready(cluster: &Cluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if http_status(cluster.admin, "/readyz").await == Some(200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            // What mcsd says it waits for.
            let why = mcsd::commands::admin_client::get(cluster.admin, "/readyz", Duration::from_secs(2))
                .await
                .map_or_else(|e| e.to_string(), |r| format!("{} {}", r.status, r.body.trim()));
            bail!(
                "{}'s mcsd did not turn ready within 90 s (/readyz: {why}): see {}",
                cluster.name,
                cluster.dir.join("mcsd.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The status code of `GET path` on `addr`, if it answers within 2 s.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let reply = mcsd::commands::admin_client::get(addr, path, Duration::from_secs(2)).await;
    reply.ok().map(|r| r.status)
}

/// Starts the cluster's two CoreDNS servers: the cluster DNS (the README's forward stub for
/// `clusterset.local` to mcsd, the `kubernetes` plugin for `cluster.local`) and the reference
/// (`kubernetes … { multicluster clusterset.local }`), and waits until both answer.
async fn start_coredns(programs: &Programs, cluster: &mut Cluster) -> anyhow::Result<()> {
    cluster.cluster_dns = format!("127.0.0.1:{}", free_port()?).parse()?;
    cluster.reference_dns = format!("127.0.0.1:{}", free_port()?).parse()?;
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let name = &cluster.name;
    // The same servers again on the address the pods reach (port 53, as resolv.conf has no
    // port), with the pod network.
    let pod_dns = cluster.pods.as_ref().map(|p| p.node.dns);
    let mut forwarding = format!(
        "# The cluster DNS of {name}, with the clusterset.local stub of manifests/coredns-stub.md.\n"
    );
    let mut listeners = vec![("127.0.0.1".to_string(), cluster.cluster_dns.port())];
    if let Some(address) = pod_dns {
        listeners.push((address.to_string(), 53));
    }
    for (address, port) in &listeners {
        forwarding.push_str(&format!(
            ".:{port} {{\n    bind {address}\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        kubeconfig {kubeconfig} {name}\n        fallthrough in-addr.arpa ip6.arpa\n    }}\n}}\n\
             clusterset.local:{port} {{\n    bind {address}\n    errors\n    forward . {mcsd}\n}}\n",
            mcsd = cluster.dns,
        ));
    }
    let reference = format!(
        "# CoreDNS's own MCS support over {name}: the reference mcsd's answers are compared with.\n\
         .:{port} {{\n    bind 127.0.0.1\n    errors\n    kubernetes cluster.local clusterset.local {{\n        kubeconfig {kubeconfig} {name}\n        multicluster clusterset.local\n    }}\n}}\n",
        port = cluster.reference_dns.port(),
    );
    for (component, corefile, addr) in [
        ("coredns", forwarding, cluster.cluster_dns),
        ("coredns-reference", reference, cluster.reference_dns),
    ] {
        let path = cluster.dir.join(format!("{component}.Corefile"));
        std::fs::write(&path, corefile)?;
        let process = Process::start(
            format!("{}'s {component}", cluster.name),
            &programs.coredns,
            vec!["-conf".into(), path.into_os_string()],
            cluster.dir.join(format!("{component}.log")),
        )?;
        cluster.processes.push(process);
        wait_for(
            cluster,
            &format!("{component} to answer on {addr}"),
            Duration::from_secs(60),
            |_| answers_soa(addr),
        )
        .await?;
    }
    Ok(())
}

/// Whether a DNS server at `addr` answers `cluster.local SOA` with NOERROR.
fn answers_soa(addr: SocketAddr) -> bool {
    use hickory_proto::{
        op::{Message, Query, ResponseCode},
        rr::{Name, RecordType},
    };
    let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(500)));
    let mut query = Message::query();
    query.metadata.id = 4242;
    query.add_query(Query::query(
        Name::from_ascii("cluster.local.").unwrap(),
        RecordType::SOA,
    ));
    let Ok(bytes) = query.to_vec() else { return false };
    if socket.send_to(&bytes, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 2048];
    let Ok((n, _)) = socket.recv_from(&mut buf) else {
        return false;
    };
    Message::from_vec(&buf[..n]).is_ok_and(|m| m.metadata.response_code == ResponseCode::NoError)
}

/// Runs kubectl with `kubeconfig`; its standard output, or an error with its standard error.
pub fn kubectl_out(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl apply -f` of `text`, kept as `dir/file` for whoever reads the logs.
fn kubectl_apply_text(kubeconfig: &Path, dir: &Path, file: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, text)?;
    kubectl_out(kubeconfig, &["apply", "-f", &path.display().to_string()])?;
    Ok(())
}
