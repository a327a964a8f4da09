//! End-to-end tests of mcsd, through the interfaces users touch: `kubectl`, `dig`, and the `mcsd`
//! command line. The tests live in `tests/tests/`; this library holds what they share: a
//! ClusterSet of sandbox clusters, each running mcsd with exactly the rights of
//! `manifests/rbac.yaml`, and helpers that wait with a deadline instead of sleeping.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use mcsd::{
    daemon::{self, Peer},
    identity,
};
use mcsd_sandbox::{Cluster, ClusterConfig};
use tokio_util::sync::CancellationToken;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs the real kubectl against `kubeconfig`; panics with its output if it fails.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl must be installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "kubectl {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One cluster of a test ClusterSet.
#[derive(Debug)]
pub struct Member {
    /// The simulated cluster.
    pub cluster: Cluster,
    /// Its admin kubeconfig (for kubectl, as a user would).
    pub kubeconfig: PathBuf,
    /// mcsd's handle (write counters, readiness).
    pub daemon: daemon::Handle,
}

/// A ClusterSet of sandbox clusters, each running mcsd, peered with every other.
#[derive(Debug)]
pub struct ClusterSet {
    /// The clusters, `cluster-a` first.
    pub members: Vec<Member>,
    dir: PathBuf,
    shutdown: CancellationToken,
}

impl ClusterSet {
    /// Starts `n` clusters, installs the project's manifests (namespace and RBAC) with kubectl,
    /// and runs mcsd in each as the `mcsd` ServiceAccount, reading its peers as their
    /// `mcsd-peer` ServiceAccount: exactly the rights the manifests grant.
    pub async fn start(n: usize) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "mcsd-e2e-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ (n as u128) ^ rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut clusters = Vec::new();
        for i in 0..n {
            let cluster = Cluster::start(ClusterConfig::nth(i))
                .await
                .expect("sandbox cluster starts");
            let kubeconfig = dir.join(format!("{}.kubeconfig", cluster.name()));
            std::fs::write(&kubeconfig, cluster.kubeconfig_yaml()).unwrap();
            let manifests = repo_root().join("manifests");
            kubectl(
                &kubeconfig,
                &["apply", "-f", manifests.join("namespace.yaml").to_str().unwrap()],
            );
            kubectl(
                &kubeconfig,
                &["apply", "-f", manifests.join("rbac.yaml").to_str().unwrap()],
            );
            clusters.push((cluster, kubeconfig));
        }
        let shutdown = CancellationToken::new();
        let mut members = Vec::new();
        for (i, (cluster, kubeconfig)) in clusters.iter().enumerate() {
            let client = cluster
                .service_account_client("mcsd-system", "mcsd")
                .await
                .unwrap();
            let identity = identity::establish(&client, None, None)
                .await
                .expect("the sandbox sets ClusterProperties");
            let mut peers = Vec::new();
            for (j, (other, _)) in clusters.iter().enumerate() {
                if i != j {
                    peers.push(Peer {
                        cluster: other.name().parse().unwrap(),
                        client: other
                            .service_account_client("mcsd-system", "mcsd-peer")
                            .await
                            .unwrap(),
                    });
                }
            }
            let config = daemon::Config {
                client,
                identity,
                exchange_namespace: "mcsd-system".into(),
                peers,
                peer_sync_timeout: Duration::from_secs(10),
            };
            let handle = daemon::start(config, shutdown.clone()).await;
            members.push((kubeconfig.clone(), handle));
        }
        let members = clusters
            .into_iter()
            .zip(members)
            .map(|((cluster, kubeconfig), (_, daemon))| Member {
                cluster,
                kubeconfig,
                daemon,
            })
            .collect::<Vec<_>>();
        for m in &members {
            let mut ready = m.daemon.ready.clone();
            tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r))
                .await
                .expect("mcsd becomes ready")
                .unwrap();
        }
        Self {
            members,
            dir,
            shutdown,
        }
    }

    /// kubectl against the `i`th cluster.
    pub fn kubectl(&self, i: usize, args: &[&str]) -> String {
        kubectl(&self.members[i].kubeconfig, args)
    }

    /// kubectl apply of a YAML document on the `i`th cluster.
    pub fn apply(&self, i: usize, yaml: &str) {
        let path = self.dir.join(format!("apply-{}-{}.yaml", i, rand_suffix()));
        std::fs::write(&path, yaml).unwrap();
        kubectl(
            &self.members[i].kubeconfig,
            &["apply", "-f", path.to_str().unwrap()],
        );
    }

    /// Stops every mcsd and cluster.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for m in self.members {
            m.cluster.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    u128::from(N.fetch_add(1, Ordering::Relaxed))
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
}
