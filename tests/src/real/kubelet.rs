//! The part of a kubelet that kwok does not play, for one cluster's node on the real tier: its
//! pods get a network, their containers' commands run, and `kubectl exec` and `kubectl logs`
//! reach them; a pod being deleted is stopped (SIGTERM, SIGKILL after its grace period) and then
//! deleted for good. kwok keeps the node (its status, its Lease).
//!
//! ```text
//!   kube-apiserver ──exec, logs──▶ front (HTTPS, the node's kubelet port) ──other──▶ kwok
//!         ▲                           │ exec: the command rewritten to run in the pod
//!         │ pod status                ▼
//!   Kubelet: watches the node's pods ─▶ one task per pod (pod.rs):
//!       addresses from the node's pod ranges, a sandbox (network.rs), the containers'
//!       commands (containers.rs) with the host's programs standing in for the image's,
//!       readiness probes, and the status a kubelet reports (phase, IPs, conditions)
//! ```
//!
//! What a container runs: `command` + `args`, or, for an image with a stand-in (`Config::images`:
//! `mcsd`), that program + `args`; otherwise an image's entrypoint is taken as empty, so a
//! container with neither runs nothing and stays running. The host's programs run in the pod's
//! network namespace with the pod's `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`, a
//! private `/tmp` shared by the pod's containers and execs, its volumes mounted (projected
//! ServiceAccount tokens bound to the pod, ConfigMaps and Secrets read-only, emptyDirs:
//! `volumes.rs`), a `HOME` of its own, and the environment a kubelet gives (the `kubernetes`
//! Service's address, `env` and `envFrom` with the downward API, ConfigMaps and Secrets,
//! `$(VAR)` expanded). Readiness probes (exec, tcpSocket, httpGet) run; liveness and startup
//! probes, resource limits and users do not.

mod containers;
mod front;
mod pod;
mod volumes;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use futures::StreamExt as _;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use super::network::Node;

/// What one cluster's kubelet needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cluster's name (for lines in its log).
    pub cluster: String,
    /// The Node whose pods it runs.
    pub node_name: String,
    /// That node in the pod network.
    pub node: Node,
    /// The `ip` program.
    pub ip: PathBuf,
    /// Where pods' logs and private `/tmp` go (`DIR/pods/<namespace>_<name>_<uid>/`), and the
    /// kubelet's own log (`DIR/kubelet.log`).
    pub dir: PathBuf,
    /// The cluster DNS Service's address: every pod's nameserver.
    pub cluster_dns: Ipv4Addr,
    /// Where kwok serves its own kubelet endpoints (plain HTTP): what the front passes on.
    pub kwok: SocketAddr,
    /// The `kubernetes` Service (cluster IP, port): where every container is told the API
    /// server is (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`).
    pub api_service: SocketAddr,
    /// Programs of this machine that stand in for images' entrypoints, by image name (`mcsd`:
    /// a container of image `…/mcsd:<tag>` with no `command` runs this mcsd with its `args`).
    pub images: Vec<(String, PathBuf)>,
}

/// A running kubelet: its pods, its front and the watch that drives them.
#[derive(Debug)]
pub struct Kubelet {
    shared: Arc<Shared>,
    stop: CancellationToken,
    watch: tokio::task::JoinHandle<()>,
    front: tokio::task::JoinHandle<()>,
    /// The port of its HTTPS endpoint on 127.0.0.1 (the node's kubelet port).
    pub port: u16,
}

impl Kubelet {
    /// Starts the front on a free port, then the watch of `config.node_name`'s pods.
    pub async fn start(client: kube::Client, config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(config.dir.join("pods"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.dir.join("kubelet.log"))
            .context("opening kubelet.log")?;
        let shared = Arc::new(Shared {
            addresses: AddressPool::new(&config.node.ranges.pods),
            config,
            client,
            pods: Mutex::new(HashMap::new()),
            log: Mutex::new(log),
        });
        let stop = CancellationToken::new();
        let (port, front) = front::start(shared.clone(), stop.clone()).await?;
        let watch = tokio::spawn(watch(shared.clone(), stop.clone()));
        Ok(Self {
            shared,
            stop,
            watch,
            front,
            port,
        })
    }

    /// Stops watching, stops every pod (their processes killed, their namespaces removed) and
    /// the front.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.watch.await;
        let pods: Vec<Arc<PodHandle>> = self.shared.pods.lock().unwrap().values().cloned().collect();
        for pod in &pods {
            pod.stop.cancel();
        }
        for pod in pods {
            pod.done.cancelled().await;
        }
        let _ = self.front.await;
    }
}

/// What the watch, the pods and the front share.
struct Shared {
    config: Config,
    client: kube::Client,
    /// Every pod started and not yet torn down, by uid.
    pods: Mutex<HashMap<String, Arc<PodHandle>>>,
    addresses: AddressPool,
    log: Mutex<std::fs::File>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("pods", &self.pods)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A line in `kubelet.log`.
    fn say(&self, line: &str) {
        let now = jiff::Timestamp::now();
        let mut log = self.log.lock().unwrap();
        let _ = writeln!(log, "{now} {line}");
    }

    /// The running pod `namespace/name` (not one being torn down), and what is cancelled when
    /// it stops.
    fn running(&self, namespace: &str, name: &str) -> Option<(Arc<pod::Runtime>, CancellationToken)> {
        let pods = self.pods.lock().unwrap();
        pods.values()
            .filter(|p| p.namespace == namespace && p.name == name && !p.stop.is_cancelled())
            .find_map(|p| Some((p.runtime.get()?.clone(), p.stop.clone())))
    }
}

/// One pod the kubelet runs.
#[derive(Debug)]
struct PodHandle {
    namespace: String,
    name: String,
    /// Cancelled when the pod is deleted (or the kubelet stops).
    stop: CancellationToken,
    /// Set when the pod is being deleted: its grace period (its containers get SIGTERM, and
    /// SIGKILL once it is over; once they have exited the kubelet deletes the pod for good).
    /// Unset when the kubelet stops or the pod is force-deleted: SIGKILL at once.
    deleting: Arc<std::sync::OnceLock<std::time::Duration>>,
    /// Cancelled once it is torn down.
    done: CancellationToken,
    /// Set once its sandbox is up: what exec and logs need.
    runtime: std::sync::OnceLock<Arc<pod::Runtime>>,
}

/// Follows the node's pods: a new pod is started, a deleted one (or one being deleted) stopped;
/// after a re-list, pods that are gone are stopped too.
async fn watch(shared: Arc<Shared>, stop: CancellationToken) {
    let api: kube::Api<Pod> = kube::Api::all(shared.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.config.node_name));
    let mut events = std::pin::pin!(watcher(api, config));
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            None => return,
            Some(Ok(watcher::Event::Init)) => listed.clear(),
            Some(Ok(watcher::Event::InitApply(pod))) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    listed.insert(uid);
                }
                observe(&shared, pod);
            }
            Some(Ok(watcher::Event::InitDone)) => {
                let gone: Vec<Arc<PodHandle>> = shared
                    .pods
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(uid, _)| !listed.contains(*uid))
                    .map(|(_, p)| p.clone())
                    .collect();
                for pod in gone {
                    pod.stop.cancel();
                }
            }
            Some(Ok(watcher::Event::Apply(pod))) => observe(&shared, pod),
            Some(Ok(watcher::Event::Delete(pod))) => {
                let uid = pod.metadata.uid.unwrap_or_default();
                if let Some(handle) = shared.pods.lock().unwrap().get(&uid) {
                    handle.stop.cancel();
                }
            }
            Some(Err(error)) => {
                shared.say(&format!("watching pods: {error}"));
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

/// Starts `pod` if it is new, stops it if it is being deleted.
fn observe(shared: &Arc<Shared>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let mut pods = shared.pods.lock().unwrap();
    if pod.metadata.deletion_timestamp.is_some() {
        match pods.get(&uid) {
            Some(handle) => {
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                    .unwrap_or(30)
                    .max(0);
                let _ = handle.deleting.set(std::time::Duration::from_secs(grace as u64));
                handle.stop.cancel();
            }
            // Nothing of it runs here: it can go at once.
            None => {
                let shared = shared.clone();
                tokio::spawn(async move { delete_for_good(&shared, &pod).await });
            }
        }
        return;
    }
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    if pods.contains_key(&uid) || finished {
        return;
    }
    let handle = Arc::new(PodHandle {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        stop: CancellationToken::new(),
        deleting: Arc::default(),
        done: CancellationToken::new(),
        runtime: std::sync::OnceLock::new(),
    });
    pods.insert(uid.clone(), handle.clone());
    drop(pods);
    let shared = shared.clone();
    tokio::spawn(async move {
        let deleting = pod::run(&shared, pod.clone(), &handle).await;
        shared.pods.lock().unwrap().remove(&uid);
        if deleting {
            delete_for_good(&shared, &pod).await;
        }
        handle.done.cancel();
    });
}

/// Deletes `pod` with no grace period once nothing of it runs, as a kubelet does when its
/// containers have stopped: until then it is Terminating (its ServiceAccount token still valid).
async fn delete_for_good(shared: &Shared, pod: &Pod) {
    let api: kube::Api<Pod> = kube::Api::namespaced(
        shared.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let params = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match api.delete(name, &params).await {
        Ok(_) => {}
        // Gone already, or a new pod of the same name.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => shared.say(&format!("deleting {name}: {error}")),
    }
}

/// The node's pod addresses: the n-th free slot gives the n-th address of each of the node's
/// ranges (the first two of each are left out: the network's and a gateway's).
#[derive(Debug)]
struct AddressPool {
    ranges: Vec<IpNet>,
    used: Mutex<BTreeSet<u128>>,
}

impl AddressPool {
    fn new(ranges: &[IpNet]) -> Self {
        Self {
            ranges: ranges.to_vec(),
            used: Mutex::new(BTreeSet::new()),
        }
    }

    /// The lowest free slot's addresses, one per range; `None` when the ranges are full.
    fn take(&self) -> Option<(u128, Vec<IpAddr>)> {
        let capacity = self
            .ranges
            .iter()
            .map(|r| 1u128 << (u32::from(r.max_prefix_len() - r.prefix_len())).min(100))
            .min()?;
        let mut used = self.used.lock().unwrap();
        let slot = (2..capacity.saturating_sub(1)).find(|s| !used.contains(s))?;
        used.insert(slot);
        let addresses = self
            .ranges
            .iter()
            .map(|range| match range {
                IpNet::V4(net) => IpAddr::V4((u32::from(net.network()) + slot as u32).into()),
                IpNet::V6(net) => IpAddr::V6((u128::from(net.network()) + slot).into()),
            })
            .collect();
        Some((slot, addresses))
    }

    /// Gives `slot` back, once nothing uses its addresses any more.
    fn give_back(&self, slot: u128) {
        self.used.lock().unwrap().remove(&slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_hands_out_one_address_per_family_and_reuses_freed_slots() {
        let pool = AddressPool::new(&[
            "10.160.0.0/16".parse().unwrap(),
            "fd00:10:244:1::/112".parse().unwrap(),
        ]);
        let (first, addresses) = pool.take().unwrap();
        assert_eq!(
            addresses,
            [
                "10.160.0.2".parse::<IpAddr>().unwrap(),
                "fd00:10:244:1::2".parse().unwrap()
            ]
        );
        let (_, second) = pool.take().unwrap();
        assert_eq!(second[0], "10.160.0.3".parse::<IpAddr>().unwrap());
        pool.give_back(first);
        let (_, again) = pool.take().unwrap();
        assert_eq!(again[1], "fd00:10:244:1::2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_full_pool_says_so() {
        let pool = AddressPool::new(&["10.0.0.0/30".parse().unwrap()]);
        assert!(pool.take().is_some());
        assert!(pool.take().is_none());
    }
}
