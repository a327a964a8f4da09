//! `mcsd sandbox`: a whole ClusterSet on one machine.
//!
//! Each member is started in one place, [`start_member`]: today its API server (with the CRDs
//! and ClusterProperties); the DNS server and the peered mcsd join it there.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mcsd_sandbox::{Cluster, ClusterConfig};
use serde_json::json;

/// One cluster of the sandbox and what runs beside it.
#[derive(Debug)]
pub struct Member {
    /// The simulated cluster (API server, controllers).
    pub cluster: Cluster,
    /// Where its kubeconfig was written.
    pub kubeconfig: PathBuf,
    /// Its DNS server's address, once the DNS server runs in the sandbox.
    pub dns: Option<std::net::SocketAddr>,
}

/// Starts the `index`th member and writes its kubeconfig into `dir`.
pub async fn start_member(index: usize, dir: &Path) -> anyhow::Result<Member> {
    let cluster = Cluster::start(ClusterConfig::nth(index))
        .await
        .with_context(|| format!("starting cluster {index}"))?;
    let kubeconfig = dir.join(format!("{}.kubeconfig", cluster.name()));
    std::fs::write(&kubeconfig, cluster.kubeconfig_yaml())
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    Ok(Member {
        cluster,
        kubeconfig,
        dns: None,
    })
}

/// The contents of `DIR/sandbox.json`.
pub fn manifest(members: &[Member]) -> serde_json::Value {
    json!(
        members
            .iter()
            .map(|m| json!({
                "name": m.cluster.name(),
                "kubeconfig": m.kubeconfig.display().to_string(),
                "api": m.cluster.api_url(),
                "dns": m.dns.map(|a| a.to_string()),
            }))
            .collect::<Vec<_>>()
    )
}

/// Starts `clusters` members, writes the files, prints `sandbox ready`, and runs until SIGINT or
/// SIGTERM.
pub async fn run(clusters: usize, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let mut members = Vec::with_capacity(clusters);
    for index in 0..clusters {
        members.push(start_member(index, &dir).await?);
    }
    let path = dir.join("sandbox.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest(&members))?)
        .with_context(|| format!("writing {}", path.display()))?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "sandbox ready")?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    for m in members {
        m.cluster.shutdown().await;
    }
    Ok(())
}
