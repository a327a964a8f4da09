//! The real tier's pod network: one flat network joining every cluster's pods, made of network
//! namespaces on this machine, as a flat multi-cluster network (or an island-free CNI) would
//! join real clusters.
//!
//! ```text
//!   root namespace (the host)            mcsd-router                    mcsd-node-cluster-a
//!   ┌───────────────────────┐  veth  ┌──────────────────┐  veth  ┌────────────────────────────┐
//!   │ mcsd-pods 198.51.100.1├────────┤root  198.51.100.2│        │ kube-proxy (iptables/nft)  │
//!   │  + 203.0.113.N (each  │        │cluster-a   .5    ├────────┤router .6   v<uid> ─┐ veth  │
//!   │   cluster's DNS, :53) │        │cluster-b   .9    ├── …    │ 127.0.0.1:API relay │       │
//!   └───────────────────────┘        └──────────────────┘        └─────────────────────┼───────┘
//!                                                                       mcsd-pod-<uid> │
//!                                                                  eth0 10.160.0.2/32, fd00:…::2/128
//! ```
//!
//! - The **root namespace** gets one veth (`mcsd-pods`) with the clusters' DNS addresses on it,
//!   and routes to the clusters' pod and service ranges through it; nothing else of the host
//!   changes (no forwarding, no iptables rule), and deleting the veth takes all of it away.
//! - **`mcsd-router`** forwards between the clusters' nodes and the root namespace.
//! - **`mcsd-node-<cluster>`**, one per cluster's node, forwards between its pods and the router
//!   and runs that cluster's kube-proxy; its `127.0.0.1:<API port>` is relayed to the API server
//!   on the host's loopback, so a kubeconfig for `https://127.0.0.1:<port>` works inside it.
//!   The same API server is relayed from `203.0.113.N:<API port>` in the root namespace too: the
//!   `kubernetes` Service's endpoint (pods' in-cluster clients) and the address other clusters'
//!   pods reach it at (in the serving certificate, and `mcsd join --server`).
//! - **`mcsd-pod-<uid>`**, one per pod, holds the pod's addresses of both families on `eth0`, a
//!   default route to its node (`169.254.1.1` answered by proxy ARP, `fe80::1`), and under
//!   `/etc/netns/<name>/` its `resolv.conf`, `hosts` and `hostname`, which `ip netns exec`
//!   puts in place of the host's for every process it starts there.
//!
//! Pods' ServiceAccount volumes are mounted at [`SERVICE_ACCOUNT_DIR`], which the network makes
//! (empty) on the host if it is missing and removes when it stops.
//!
//! Everything is named `mcsd-…`; one tier at a time owns them (a lock file), and whatever an
//! interrupted tier left behind is removed when the next one starts and when this one stops.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, bail};
use ipnet::IpNet;
use tokio::net::TcpListener;

/// Every namespace, veth and `/etc/netns` directory of the tier starts with this.
const PREFIX: &str = "mcsd-";
/// The router namespace.
const ROUTER: &str = "mcsd-router";
/// The veth end in the root namespace.
const ROOT_LINK: &str = "mcsd-pods";
/// Held while a tier owns the pod network.
const LOCK: &str = "/run/mcsd-pod-network.lock";
/// The pods' IPv4 gateway (answered by the node's proxy ARP) and IPv6 gateway (on every node
/// end of a pod's veth).
const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// What the network needs to know of one cluster.
#[derive(Clone, Debug)]
pub struct ClusterRanges {
    /// `cluster-a`, …
    pub name: String,
    /// Its pods' ranges (IPv4, IPv6).
    pub pods: [IpNet; 2],
    /// Its Services' ranges (IPv4, IPv6).
    pub services: [IpNet; 2],
}

/// One cluster's node in the network.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its network namespace, `mcsd-node-<cluster>`.
    pub netns: String,
    /// Its addresses on the link to the router (IPv4, IPv6): the node's own address, what a
    /// host-network pod has.
    pub addresses: [IpAddr; 2],
    /// Where the cluster's DNS server listens, port 53, in the root namespace.
    pub dns: Ipv4Addr,
    /// The cluster's ranges.
    pub ranges: ClusterRanges,
}

/// The running network; torn down when dropped (synchronously: it must go even when the tier
/// is stopped halfway through coming up).
#[derive(Debug)]
pub struct Network {
    /// The clusters' nodes, in the order given.
    pub nodes: Vec<Node>,
    ip: PathBuf,
    lock: Option<File>,
    /// Whether `/etc/netns` was there before the tier (then it stays, even empty).
    etc_netns_existed: bool,
    /// The directories the tier made for [`SERVICE_ACCOUNT_DIR`], outermost first (removed
    /// when it stops, if empty).
    made_dirs: Vec<PathBuf>,
}

/// Where a pod's ServiceAccount volume is mounted (`automountServiceAccountToken`): the
/// network makes this directory on the host if it is missing, as the mount point every pod's
/// own mount namespace binds the pod's files onto; it stays empty on the host.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl Network {
    /// Makes the router, the root namespace's link and a node per cluster. Fails with one line
    /// when this is not root, when `ip` is missing, when another tier owns the network, or when
    /// one of the clusters' ranges is already routed on this machine.
    pub fn create(clusters: &[ClusterRanges]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            is_root(),
            "the pod network needs root (it makes network namespaces): run as root, or pass --no-pod-network"
        );
        let ip = find_ip()?;
        let lock = take_lock()?;
        let mut network = Self {
            nodes: Vec::new(),
            ip,
            lock: Some(lock),
            etc_netns_existed: Path::new("/etc/netns").exists(),
            made_dirs: Vec::new(),
        };
        network.remove_leftovers();
        network.check_ranges_are_free(clusters)?;
        network.build(clusters)?;
        network.made_dirs = make_dirs(Path::new(SERVICE_ACCOUNT_DIR))?;
        Ok(network)
    }

    fn build(&mut self, clusters: &[ClusterRanges]) -> anyhow::Result<()> {
        self.ip(&["netns", "add", ROUTER])?;
        forwarding(ROUTER, false)?;
        self.ip(&["-n", ROUTER, "link", "set", "lo", "up"])?;
        // The root namespace's link.
        self.ip(&[
            "link", "add", ROOT_LINK, "type", "veth", "peer", "name", "root", "netns", ROUTER,
        ])?;
        self.batch(
            None,
            &[
                format!("addr add 198.51.100.1/30 dev {ROOT_LINK}"),
                format!("addr add fd00:10:254::1/64 dev {ROOT_LINK} nodad"),
                format!("link set {ROOT_LINK} up"),
            ],
        )?;
        self.batch(
            Some(ROUTER),
            &[
                "addr add 198.51.100.2/30 dev root".into(),
                "addr add fd00:10:254::2/64 dev root nodad".into(),
                "link set root up".into(),
                "route add 203.0.113.0/24 via 198.51.100.1".into(),
            ],
        )?;
        for (index, ranges) in clusters.iter().enumerate() {
            let node = self.add_node(index, ranges)?;
            self.nodes.push(node);
        }
        Ok(())
    }

    fn add_node(&self, index: usize, ranges: &ClusterRanges) -> anyhow::Result<Node> {
        anyhow::ensure!(index < 50, "the pod network joins at most 50 clusters");
        let netns = format!("{PREFIX}node-{}", ranges.name);
        let base = 4 * (index as u8 + 1);
        let (router_v4, node_v4) = (
            Ipv4Addr::new(198, 51, 100, base + 1),
            Ipv4Addr::new(198, 51, 100, base + 2),
        );
        let subnet = index as u16 + 1;
        let (router_v6, node_v6) = (
            Ipv6Addr::new(0xfd00, 0x10, 0x254, subnet, 0, 0, 0, 1),
            Ipv6Addr::new(0xfd00, 0x10, 0x254, subnet, 0, 0, 0, 2),
        );
        let dns = Ipv4Addr::new(203, 0, 113, index as u8 + 1);
        self.ip(&["netns", "add", &netns])?;
        forwarding(&netns, true)?;
        let router_end = &ranges.name;
        self.ip(&[
            "-n", ROUTER, "link", "add", router_end, "type", "veth", "peer", "name", "router", "netns",
            &netns,
        ])?;
        self.batch(
            Some(&netns),
            &[
                "link set lo up".into(),
                format!("addr add {node_v4}/30 dev router"),
                format!("addr add {node_v6}/64 dev router nodad"),
                "link set router up".into(),
                format!("route add default via {router_v4}"),
                format!("route add default via {router_v6}"),
            ],
        )?;
        let mut router = vec![
            format!("addr add {router_v4}/30 dev {router_end}"),
            format!("addr add {router_v6}/64 dev {router_end} nodad"),
            format!("link set {router_end} up"),
        ];
        let mut root = vec![format!("addr add {dns}/32 dev {ROOT_LINK}")];
        for range in ranges.pods.iter().chain(&ranges.services) {
            let (via_node, via_router) = match range {
                IpNet::V4(_) => (IpAddr::V4(node_v4), "198.51.100.2"),
                IpNet::V6(_) => (IpAddr::V6(node_v6), "fd00:10:254::2"),
            };
            router.push(format!("route add {range} via {via_node}"));
            root.push(format!("route add {range} via {via_router} dev {ROOT_LINK}"));
        }
        self.batch(Some(ROUTER), &router)?;
        self.batch(None, &root)?;
        Ok(Node {
            netns,
            addresses: [IpAddr::V4(node_v4), IpAddr::V6(node_v6)],
            dns,
            ranges: ranges.clone(),
        })
    }

    /// Fails if a route of the root namespace already covers one of the clusters' ranges or
    /// the network's own links (the tier would take over addresses this machine uses).
    fn check_ranges_are_free(&self, clusters: &[ClusterRanges]) -> anyhow::Result<()> {
        let mut wanted: Vec<(String, IpNet)> = ["198.51.100.0/24", "203.0.113.0/24", "fd00:10:254::/48"]
            .iter()
            .map(|r| ("the pod network's links".to_string(), r.parse().expect("a range")))
            .collect();
        for cluster in clusters {
            for range in cluster.pods.iter().chain(&cluster.services) {
                wanted.push((format!("{}'s range", cluster.name), *range));
            }
        }
        for family in ["-4", "-6"] {
            let routes = self.ip_out(&[family, "route", "show", "table", "all"])?;
            for line in routes.lines() {
                // `default`, `local …`, `multicast …` and the like do not parse, and are no range.
                let Some(Ok(existing)) = line.split_whitespace().next().map(|d| {
                    d.parse::<IpNet>()
                        .or_else(|_| d.parse::<IpAddr>().map(IpNet::from))
                }) else {
                    continue;
                };
                for (owner, range) in &wanted {
                    if range.contains(&existing.network()) || existing.contains(&range.network()) {
                        bail!(
                            "{owner} {range} overlaps this machine's route `{}`: the pod network would take over its addresses",
                            line.trim()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes what a tier killed before it could stop left on this machine (namespaces, the
    /// root namespace's link, `/etc/netns/mcsd-*`), and says which namespaces went. Fails when
    /// a running tier owns the network. `tests/kube/test.sh` calls it (through `kube-up
    /// --remove-leftovers`) before it notes the host's network, so a killed run does not make
    /// the next one's before-and-after comparison fail.
    pub fn remove_what_a_killed_tier_left() -> anyhow::Result<Vec<String>> {
        anyhow::ensure!(is_root(), "removing the pod network's leftovers needs root");
        let mut network = Self {
            nodes: Vec::new(),
            ip: find_ip()?,
            lock: Some(take_lock()?),
            etc_netns_existed: false,
            made_dirs: Vec::new(),
        };
        let names = network.leftover_namespaces();
        network.teardown();
        Ok(names)
    }

    /// The `mcsd-` namespaces on this machine.
    fn leftover_namespaces(&self) -> Vec<String> {
        let names = self.ip_out(&["netns", "list"]).unwrap_or_default();
        names
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(PREFIX))
            .map(str::to_string)
            .collect()
    }

    /// Removes what an earlier tier left: processes in `mcsd-` namespaces, the namespaces, the
    /// root namespace's link and `/etc/netns/mcsd-*`.
    fn remove_leftovers(&self) {
        let mut leftovers = self.leftover_namespaces();
        // Pods first, the router last: a pod's veth goes with its namespace.
        leftovers.sort_by_key(|n| (n == ROUTER, n.starts_with("mcsd-node-")));
        for netns in &leftovers {
            self.delete_netns(netns);
        }
        let _ = self.ip_quiet(&["link", "del", ROOT_LINK]);
        remove_etc_netns(|name| name.starts_with(PREFIX));
        if !self.etc_netns_existed {
            // The tier made it: it goes if nothing else is in it.
            let _ = std::fs::remove_dir("/etc/netns");
        }
    }

    /// Kills every process in `netns` and deletes it, with its `/etc/netns` directory.
    pub fn delete_netns(&self, netns: &str) {
        kill_all_in(&self.ip, netns);
        let _ = self.ip_quiet(&["netns", "del", netns]);
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(netns));
    }

    /// Tears everything down (also done when dropped).
    pub fn teardown(&mut self) {
        if self.lock.is_none() {
            return;
        }
        self.remove_leftovers();
        self.nodes.clear();
        for dir in self.made_dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(dir);
        }
        if let Some(lock) = self.lock.take() {
            let _ = lock.unlock();
            let _ = std::fs::remove_file(LOCK);
        }
    }

    /// The `ip` program.
    pub fn ip_program(&self) -> &Path {
        &self.ip
    }

    fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        run_ip(&self.ip, args, None)
    }

    fn ip_quiet(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = std::process::Command::new(&self.ip)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "ip {} failed", args.join(" "));
        Ok(())
    }

    fn ip_out(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new(&self.ip).args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn batch(&self, netns: Option<&str>, lines: &[String]) -> anyhow::Result<()> {
        batch(&self.ip, netns, lines)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Runs `ip ARGS…` (with `input` on its standard input), failing with its error line.
fn run_ip(ip: &Path, args: &[&str], input: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(ip)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ip")?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}{}: {}",
        args.join(" "),
        input
            .map(|i| format!(" <<< {}", i.replace('\n', "; ")))
            .unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// `ip [-n NETNS] -batch -` of `lines`.
fn batch(ip: &Path, netns: Option<&str>, lines: &[String]) -> anyhow::Result<()> {
    let mut args = Vec::new();
    if let Some(netns) = netns {
        args.extend(["-n", netns]);
    }
    args.extend(["-batch", "-"]);
    run_ip(ip, &args, Some(&(lines.join("\n") + "\n")))
}

/// Kills (SIGKILL) every process in `netns` until none is left (a few rounds: a process may
/// fork while it dies).
fn kill_all_in(ip: &Path, netns: &str) {
    for _ in 0..20 {
        let Ok(out) = std::process::Command::new(ip)
            .args(["netns", "pids", netns])
            .stderr(Stdio::null())
            .output()
        else {
            return;
        };
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if pids.is_empty() {
            return;
        }
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn remove_etc_netns(matches: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir("/etc/netns") else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(&matches) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn find_ip() -> anyhow::Result<PathBuf> {
    mcsd_test_tools::find_on(&std::env::var_os("PATH").unwrap_or_default(), "ip")
        .context("the pod network needs `ip` (Debian package iproute2): apt-get install -y iproute2")
}

/// Takes the lock that says a tier owns the network, or fails with one line.
fn take_lock() -> anyhow::Result<File> {
    let lock = File::create(LOCK).with_context(|| format!("creating {LOCK}"))?;
    if lock.try_lock().is_err() {
        bail!(
            "another real tier with a pod network runs on this machine (it holds {LOCK}): stop it, or pass --no-pod-network"
        );
    }
    Ok(lock)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Runs `f` on a thread of its own that has entered the network namespace `netns`: sockets it
/// makes belong there, and `/proc/sys/net` is that namespace's.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = Path::new("/run/netns").join(netns);
    let netns = netns.to_string();
    std::thread::spawn(move || {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering network namespace {netns}"))?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread entering a network namespace panicked"))?
}

/// Turns on forwarding in `netns` (both families); on a node, also proxy ARP and no duplicate
/// address detection for the pods' veths to come.
fn forwarding(netns: &str, node: bool) -> anyhow::Result<()> {
    in_netns(netns, move || {
        let mut settings = vec![
            ("ipv4/ip_forward", "1"),
            ("ipv6/conf/all/forwarding", "1"),
            ("ipv6/conf/default/forwarding", "1"),
        ];
        if node {
            settings.extend([
                ("ipv4/conf/default/proxy_arp", "1"),
                ("ipv6/conf/default/accept_dad", "0"),
            ]);
        }
        write_sysctls(&settings)
    })
}

/// Makes `dir` and whichever of its parents are missing; returns those it made, outermost
/// first.
fn make_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.exists())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    for d in &missing {
        std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    Ok(missing)
}

fn write_sysctls(settings: &[(&str, &str)]) -> anyhow::Result<()> {
    for (key, value) in settings {
        let path = Path::new("/proc/sys/net").join(key);
        std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Relays `127.0.0.1:port` inside `netns` to `127.0.0.1:port` of the host, for as long as the
/// returned task runs: a program in that namespace reaches the API server at the address its
/// kubeconfig (and the server's certificate) names.
pub fn relay_loopback(netns: &str, port: u16) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = in_netns(netns, move || {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })?;
    Ok(relay(TcpListener::from_std(listener)?, port))
}

/// Relays `listen`, an address of the root namespace on the pod network's link, to
/// `127.0.0.1:port` of the host, for as long as the returned task runs: pods (through the
/// `kubernetes` Service) and other clusters' mcsd reach the API server there.
pub async fn relay_from(
    listen: std::net::SocketAddr,
    port: u16,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen} to relay the API server"))?;
    Ok(relay(listener, port))
}

fn relay(listener: TcpListener, port: u16) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut inside, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut host) = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut host).await;
                }
            });
        }
    })
}

/// One pod's sandbox: its namespace, its veth and its addresses.
#[derive(Clone, Debug)]
pub struct PodSandbox {
    /// The pod's network namespace, `mcsd-pod-<uid>` (the node's, for a host-network pod).
    pub netns: String,
    /// The node's end of its veth, `v<uid>` (none for a host-network pod).
    veth: Option<String>,
    /// The node's namespace.
    node_netns: String,
}

/// What a pod's `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname` say.
#[derive(Clone, Debug)]
pub struct PodFiles {
    /// `resolv.conf`.
    pub resolv_conf: String,
    /// `hosts`.
    pub hosts: String,
    /// `hostname`.
    pub hostname: String,
}

impl PodSandbox {
    /// Makes the namespace of the pod `uid` in `node`'s, with `addresses` (one per family) on
    /// its `eth0`, routes both ways and its `/etc` files. A namespace left by a pod of the same
    /// uid is replaced.
    pub fn create(
        ip: &Path,
        node: &Node,
        uid: &str,
        addresses: &[IpAddr],
        files: &PodFiles,
    ) -> anyhow::Result<Self> {
        let short: String = uid.chars().filter(|c| *c != '-').take(12).collect();
        let netns = format!("{PREFIX}pod-{short}");
        let veth = format!("v{short}");
        let sandbox = Self {
            netns: netns.clone(),
            veth: Some(veth.clone()),
            node_netns: node.netns.clone(),
        };
        sandbox.remove(ip);
        run_ip(ip, &["netns", "add", &netns], None)?;
        in_netns(&netns, || {
            write_sysctls(&[
                ("ipv6/conf/default/accept_dad", "0"),
                ("ipv6/conf/all/accept_dad", "0"),
            ])
        })?;
        write_files(&netns, files)?;
        run_ip(
            ip,
            &[
                "-n",
                &node.netns,
                "link",
                "add",
                &veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &netns,
            ],
            None,
        )?;
        let mut inside = vec!["link set lo up".to_string(), "link set eth0 up".to_string()];
        let mut outside = vec![
            format!("link set {veth} up"),
            format!("addr add {GATEWAY_V6}/64 dev {veth} nodad"),
        ];
        for address in addresses {
            let width = if address.is_ipv4() { 32 } else { 128 };
            inside.push(format!("addr add {address}/{width} dev eth0 nodad"));
            outside.push(format!("route replace {address}/{width} dev {veth}"));
        }
        inside.extend([
            format!("route add {GATEWAY_V4} dev eth0 scope link"),
            format!("route add default via {GATEWAY_V4} dev eth0"),
            format!("route add default via {GATEWAY_V6} dev eth0"),
        ]);
        batch(ip, Some(&netns), &inside)?;
        batch(ip, Some(&node.netns), &outside)?;
        Ok(sandbox)
    }

    /// A host-network pod's sandbox: its node's namespace, with the pod's own `/etc` files
    /// nowhere (it sees the node's, which are the host's).
    pub fn host(node: &Node) -> Self {
        Self {
            netns: node.netns.clone(),
            veth: None,
            node_netns: node.netns.clone(),
        }
    }

    /// Kills every process in the pod's namespace and removes it: its veth and its route go
    /// with it. Nothing is done for a host-network pod.
    pub fn remove(&self, ip: &Path) {
        if self.veth.is_none() {
            return;
        }
        kill_all_in(ip, &self.netns);
        let _ = std::process::Command::new(ip)
            .args(["netns", "del", &self.netns])
            .stderr(Stdio::null())
            .status();
        // A process that entered the namespace after the kill keeps it (and its veth) alive
        // until it exits; the veth is deleted now so the node routes nothing to it.
        if let Some(veth) = &self.veth {
            let _ = std::process::Command::new(ip)
                .args(["-n", &self.node_netns, "link", "del", veth])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.netns));
    }
}

fn write_files(netns: &str, files: &PodFiles) -> anyhow::Result<()> {
    let dir = Path::new("/etc/netns").join(netns);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in [
        ("resolv.conf", &files.resolv_conf),
        ("hosts", &files.hosts),
        ("hostname", &files.hostname),
    ] {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {}/{name}", dir.display()))?;
    }
    Ok(())
}
