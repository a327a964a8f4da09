//! `kube-up`: brings up the real-Kubernetes tier (see `mcsd_tests::real`) and keeps it up until
//! SIGINT or SIGTERM, then stops everything it started and exits 0. A component that exits
//! meanwhile (a test kills kube-apiserver or mcsd, or it crashes) is started again with the same
//! command line, as a kubelet restarts a static pod, and said in one line. Every component's
//! process id is in `DIR/<cluster>/<component>.pid`. Run by `tests/kube/up.sh`, which builds the
//! programs first.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use mcsd_tests::real::{ClusterSet, Install, Options, Programs, ProxyMode};

/// Real clusters on loopback with mcsd and CoreDNS, as `mcsd sandbox` runs sandbox clusters.
#[derive(Debug, Parser)]
struct Args {
    /// How many clusters (1–8).
    #[arg(long, default_value_t = 3)]
    clusters: usize,
    /// Connect the clusters through a hub API server (a fourth control plane, context `hub`,
    /// `DIR/hub.kubeconfig`) with `mcsd hub init` and `mcsd join --hub`, instead of peering
    /// them with each other.
    #[arg(long)]
    hub: bool,
    /// Where the kubeconfigs, `sandbox.json`, and each cluster's data and logs go.
    #[arg(long, default_value = "./kube-state")]
    dir: PathBuf,
    /// The directory `tests/kube/build.sh` printed (kube, kwok, coredns).
    #[arg(long)]
    bin: PathBuf,
    /// The mcsd binary to run.
    #[arg(long)]
    mcsd: PathBuf,
    /// mcsd's --peer-grace-period (seconds).
    #[arg(long, default_value_t = 300)]
    peer_grace_period: u64,
    /// mcsd's --lease-duration (seconds).
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Leave pods as kwok's records: no network, no process, no exec (the pod network needs
    /// root).
    #[arg(long)]
    no_pod_network: bool,
    /// How each node's kube-proxy programs Services and clusterset IPs.
    #[arg(long, value_enum, default_value_t = ProxyMode::Iptables)]
    proxy_mode: ProxyMode,
    /// How mcsd is installed: `host` (kubectl apply -k manifests/, mcsd run as a host process
    /// that tests may stop and restart) or `helm` (helm install, mcsd in the release's pods,
    /// `mcsd join`; needs the pod network).
    #[arg(long, value_enum, default_value_t = Install::Host)]
    install: Install,
    /// Remove what a tier killed before it could stop left of the pod network, say it, and exit
    /// (fails while a tier runs).
    #[arg(long)]
    remove_leftovers: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.remove_leftovers {
        return match mcsd_tests::real::network::Network::remove_what_a_killed_tier_left() {
            Ok(names) => {
                if !names.is_empty() {
                    println!("removed what a killed tier left: {}", names.join(" "));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kube-up: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let programs = match Programs::in_dir(&args.bin, args.mcsd.clone()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kube-up: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let options = Options {
        clusters: args.clusters,
        hub: args.hub,
        dir: args.dir.clone(),
        repo: mcsd_tests::repo_root(),
        peer_grace_period: args.peer_grace_period,
        lease_duration: args.lease_duration,
        pod_network: !args.no_pod_network,
        proxy_mode: args.proxy_mode,
        install: args.install,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    let say = |line: &str| eprintln!("kube-up: {line}");
    let up = tokio::select! {
        up = ClusterSet::up(&programs, &options, &say) => up,
        _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        _ = term.recv() => return ExitCode::SUCCESS,
    };
    let mut set = match up {
        Ok(set) => set,
        Err(e) => {
            eprintln!("kube-up: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("clusterset ready");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                for line in set.supervise().await {
                    eprintln!("kube-up: {line}");
                }
            }
        }
    }
    set.down().await;
    ExitCode::SUCCESS
}
