//! The command line: one subcommand per job. Each subcommand's `run` is where its wiring lives.

pub mod admin_client;
pub mod hub;
pub mod join;
pub mod status;
pub mod why;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{core::dns_index::DnsIndex, core::objects};

/// Kubernetes Multicluster Services for a ClusterSet, with an embedded `clusterset.local` DNS server.
#[derive(Debug, Parser)]
#[command(name = "mcsd", version, about, long_about = None)]
pub struct Cli {
    /// Log format on standard error: `text` for people, `json` (one object per line) for log
    /// collectors. The level comes from `RUST_LOG` (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the CustomResourceDefinitions (ServiceExport, ServiceImport, ClusterProperty) as YAML.
    Crds(CrdsArgs),
    /// Run the controllers and the clusterset.local DNS server for one cluster (the in-cluster
    /// daemon). Prints one line with the DNS and admin addresses once it serves.
    Run(crate::process::run::RunArgs),
    /// Run a whole ClusterSet on this machine: N simulated clusters (`cluster-a`, `cluster-b`, …)
    /// on 127.0.0.1, each with its own API server, CA and admin kubeconfig, until SIGINT/SIGTERM.
    /// Prints `sandbox ready` when every cluster is up.
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
    /// Serve `clusterset.local` alone, without the controllers: from a cluster's ServiceImports,
    /// MCS EndpointSlices and Namespaces (`--kubeconfig`; for a cluster whose imports another MCS
    /// implementation writes), or from a file of such objects (`--objects`; benchmarks, offline
    /// checks).
    Dns(DnsArgs),
    /// Explain a clusterset.local name: the ServiceImport and EndpointSlices behind it, which
    /// clusters export it, which endpoints and ports are left out and why (not ready, a stale or
    /// refused peer, a lost port conflict), and what the DNS server answers now. Asks a running
    /// mcsd through its admin listener; in a cluster:
    /// `kubectl exec -n mcsd-system deploy/mcsd -- mcsd why NAME`.
    Why(WhyArgs),
    /// Connect clusters, named by kubeconfig contexts, into one ClusterSet: for each pair, a
    /// read-only identity in the exporting cluster and a peer Secret holding a short-lived token
    /// for it in the importing one. Checks every cluster before writing anything; running it
    /// again changes nothing.
    Join(JoinArgs),
    /// Undo `mcsd join`: the peer Secrets removed and the identities deleted, so every token
    /// issued for them stops working at once.
    Leave(LeaveArgs),
    /// Set up a hub: any Kubernetes API server that holds a ClusterSet's exchange records, so
    /// members connect to it instead of to each other (`mcsd hub init CONTEXT`; then
    /// `mcsd join --hub CONTEXT MEMBER...`).
    #[command(subcommand)]
    Hub(HubCommand),
    /// Show the ClusterSet as a cluster's mcsd sees it: its id, ClusterSet and leader, each peer's
    /// state (with the one-line reason), sync lag and credential expiry, and the counts of
    /// exports, imports and conflicts. Needs only a kubeconfig.
    Status(StatusArgs),
}

/// `mcsd hub`.
#[derive(Debug, Subcommand)]
enum HubCommand {
    /// Install what a hub needs (`manifests/hub.yaml`: the ClusterRoles members are bound to).
    Init {
        /// The hub's kubeconfig context (an admin's).
        #[arg(value_name = "CONTEXT")]
        context: String,
        /// The kubeconfig holding it (as for `mcsd join`).
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
    },
}

/// `mcsd status`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").args(["context", "all_contexts"])))]
struct StatusArgs {
    /// The cluster's kubeconfig context (default: the current context); may be repeated.
    #[arg(long, value_name = "CONTEXT")]
    context: Vec<String>,
    /// Every context of the kubeconfig, one after another.
    #[arg(long)]
    all_contexts: bool,
    /// `text` (a line per cluster, a row per peer) or `json`.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
    /// The kubeconfig (as for `mcsd join`).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

/// `mcsd join`.
#[derive(Debug, clap::Args)]
struct JoinArgs {
    /// The kubeconfig contexts of the clusters to join (two or more): every pair, both ways. With
    /// `--hub`, the members to enrol in the hub (one or more).
    #[arg(value_name = "CONTEXT", num_args = 1.., required = true)]
    contexts: Vec<String>,
    /// Only the first context exports to the others (they import from it; it imports nothing).
    #[arg(long, conflicts_with = "hub")]
    one_way: bool,
    /// Enrol the clusters in the hub of this context (`mcsd hub init` first) instead of joining
    /// them with each other: each gets its namespace and identity on the hub, and Secret
    /// `mcsd-system/hub` holding a short-lived token for it.
    #[arg(long, value_name = "CONTEXT")]
    hub: Option<String>,
    /// With `--hub`: the only ranges a member's endpoint addresses may be in, declared on its hub
    /// namespace for every reader (`--ranges ctx-a=10.1.0.0/16,fd00:1::/64`); may be repeated. A
    /// member not named keeps the ranges already declared for it.
    #[arg(long, value_name = "CONTEXT=CIDR,...", value_parser = context_ranges, requires = "hub")]
    ranges: Vec<(String, String)>,
    /// Check every cluster and print each object that would be created or updated (in full) or is
    /// in place already (`unchanged`); write nothing.
    #[arg(long)]
    dry_run: bool,
    /// The API server address the other clusters use for CONTEXT, when the kubeconfig's is not
    /// reachable from them (`--server ctx-a=https://10.0.0.1:6443`); may be repeated.
    #[arg(long, value_name = "CONTEXT=URL", value_parser = context_value)]
    server: Vec<(String, String)>,
    /// How long each peer token lives, in seconds (the importing mcsd renews it before then).
    #[arg(long, value_name = "SECONDS", default_value_t = 86400, value_parser = clap::value_parser!(u64).range(600..=31_536_000))]
    token_ttl: u64,
    /// The kubeconfig holding the contexts (default: KUBECONFIG, several files merged, else
    /// ~/.kube/config, as kubectl finds it).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

/// `mcsd leave`.
#[derive(Debug, clap::Args)]
struct LeaveArgs {
    /// The kubeconfig contexts of the clusters to part (two or more): every pair, both ways. With
    /// `--hub`, the members to remove from the hub (one or more).
    #[arg(value_name = "CONTEXT", num_args = 1.., required = true)]
    contexts: Vec<String>,
    /// Only the first context stops exporting to the others.
    #[arg(long, conflicts_with = "hub")]
    one_way: bool,
    /// Remove the clusters from the hub of this context: their Secret `hub`, and their namespace
    /// (with their records and identity) on the hub.
    #[arg(long, value_name = "CONTEXT")]
    hub: Option<String>,
    /// The kubeconfig holding the contexts (as for `mcsd join`).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

/// `CONTEXT=URL`.
fn context_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((context, url)) if !context.is_empty() && url.starts_with("https://") => {
            Ok((context.to_string(), url.to_string()))
        }
        _ => Err(format!("{s:?} is not CONTEXT=https://HOST:PORT")),
    }
}

/// `CONTEXT=CIDR,...`: the ranges as given, parsed when they are used.
fn context_ranges(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((context, ranges)) if !context.is_empty() && !ranges.is_empty() => {
            Ok((context.to_string(), ranges.to_string()))
        }
        _ => Err(format!(
            "{s:?} is not CONTEXT=CIDR,... (`cluster-a=10.1.0.0/16,fd00:1::/64`)"
        )),
    }
}

/// `mcsd why`.
#[derive(Debug, clap::Args)]
struct WhyArgs {
    /// The name to explain, e.g. `hello.demo.svc.clusterset.local` (also SRV names
    /// `_http._tcp.hello.demo.svc.clusterset.local` and endpoint names
    /// `web-0.cluster-a.hello.demo.svc.clusterset.local`).
    name: String,
    /// The admin listener of the mcsd to ask (`mcsd run --admin-listen`).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        conflicts_with = "sandbox"
    )]
    admin: SocketAddr,
    /// Ask the mcsd of one cluster of a running `mcsd sandbox`, found in `DIR/sandbox.json`.
    #[arg(long, value_name = "DIR", requires = "cluster")]
    sandbox: Option<PathBuf>,
    /// With `--sandbox`: the cluster whose mcsd to ask (`cluster-a`, …).
    #[arg(long, value_name = "NAME", requires = "sandbox")]
    cluster: Option<String>,
    /// `text` for people, `json` for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// `mcsd why --output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// `mcsd sandbox`.
#[cfg(feature = "sandbox")]
#[derive(Debug, clap::Args)]
struct SandboxArgs {
    /// How many clusters to run (1 to 26).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=26))]
    clusters: u8,
    /// Where to write `<cluster>.kubeconfig` for every cluster, `kubeconfig` with all of them (a
    /// context per cluster, named after it) and `sandbox.json`
    /// (`[{"name", "kubeconfig", "api", "dns", "admin"}]`).
    #[arg(long, value_name = "DIR", default_value = "./sandbox-state")]
    dir: PathBuf,
    /// Start the clusters unconnected: each mcsd has no peers until `mcsd join` connects them
    /// (`mcsd join --kubeconfig DIR/kubeconfig cluster-a cluster-b …`).
    #[arg(long, conflicts_with = "hub")]
    no_peers: bool,
    /// Connect the clusters through a hub instead of with each other: one more API server
    /// (`DIR/hub.kubeconfig`, context `hub` in `DIR/kubeconfig`) holding every member's
    /// exchange records, each member enrolled in it (README, "A hub for many clusters").
    #[arg(long)]
    hub: bool,
}

/// `mcsd dns`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["objects", "kubeconfig"])))]
struct DnsArgs {
    /// Multi-document YAML of ServiceImports (multicluster.x-k8s.io v1beta1 or v1alpha1),
    /// EndpointSlices (discovery.k8s.io/v1, with the multicluster.kubernetes.io/service-name and
    /// …/source-cluster labels) and Namespaces. An invalid document stops start-up. The zone
    /// counts as synced from the start.
    #[arg(long, value_name = "FILE")]
    objects: Option<PathBuf>,
    /// Watch these objects in the cluster this kubeconfig names (its credentials need `list` and
    /// `watch` on the three kinds). Until each has been listed, names not yet known are answered
    /// SERVFAIL, never NXDOMAIN, and `/readyz` says not ready.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Address to serve DNS on, UDP and TCP; repeat for several (IPv4 and IPv6). Port 0 picks a
    /// free port, the same for UDP and TCP.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5353")]
    listen: Vec<SocketAddr>,
    /// The zone to serve.
    #[arg(long, value_name = "NAME", default_value = mcsd_crds::names::DEFAULT_ZONE)]
    zone: String,
    /// TTL in seconds of the data records (0–3600); also the SOA minimum (negative caching).
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=3600))]
    ttl: u32,
    /// Address of the admin HTTP listener (`/metrics`, `/livez`, `/readyz`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9153")]
    admin: SocketAddr,
    /// UDP worker threads per listen address.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Close a TCP connection after this many seconds without a query.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    tcp_idle_timeout: u64,
    /// The EDNS(0) UDP payload size advertised, and the largest UDP reply sent (512–4096).
    #[arg(long, value_name = "BYTES", default_value_t = 1232, value_parser = clap::value_parser!(u16).range(512..=4096))]
    max_udp_payload: u16,
    /// On SIGTERM, go on answering this long (`/readyz` failing meanwhile) while whatever sends
    /// queries here stops.
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=300))]
    shutdown_delay: u64,
}

/// `mcsd crds`.
#[derive(Debug, clap::Args)]
struct CrdsArgs {
    /// Write one file per CRD into this directory (normally the repository's `crds/`) instead of
    /// printing a multi-document YAML stream on standard output.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// What the user typed to run mcsd: `kubectl mcsd` when the binary was started as kubectl's plugin
/// (`kubectl-mcsd` on `PATH`, which kubectl runs for `kubectl mcsd …`), else `mcsd`.
fn invoked_as(argv0: Option<std::ffi::OsString>) -> &'static str {
    let file = argv0
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_stem)
        .and_then(std::ffi::OsStr::to_str)
        .unwrap_or_default();
    if file == "kubectl-mcsd" {
        "kubectl mcsd"
    } else {
        "mcsd"
    }
}

/// A bad command line in one line: clap's first paragraph (it lists missing arguments on the
/// lines after the first) joined, and where to look.
fn one_line(error: &clap::Error, name: &str) -> String {
    let rendered = error.render().to_string();
    let paragraph: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = paragraph.join(" ");
    let first = match joined.trim_start_matches("error: ") {
        "" => "invalid arguments",
        message => message,
    };
    format!("{name}: {first} (see `{name} --help`)")
}

impl Cli {
    /// Parses the command line. `--help` and `--version` print as usual; a bad flag prints one
    /// line that names the problem (and where to look), and gives the exit code to leave with.
    pub fn parse_args() -> Result<Self, ExitCode> {
        use clap::{CommandFactory, FromArgMatches};
        let name = invoked_as(std::env::args_os().next());
        let parsed = Self::command()
            .bin_name(name)
            .try_get_matches()
            .and_then(|mut matches| Self::from_arg_matches_mut(&mut matches));
        parsed.map_err(|error| {
            use clap::error::ErrorKind;
            if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                let _ = error.print();
                return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
            }
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{}", one_line(&error, name));
            }
            ExitCode::from(2)
        })
    }

    /// Runs the chosen subcommand; errors are printed as one line on standard error.
    pub fn run(self) -> ExitCode {
        let _ = LOG_FORMAT.set(self.log_format);
        let result = match self.command {
            Command::Crds(args) => args.run(),
            Command::Run(args) => run_daemon(args),
            #[cfg(feature = "sandbox")]
            Command::Sandbox(args) => args.run(),
            Command::Dns(args) => args.run(),
            Command::Why(args) => args.run(),
            Command::Join(args) => args.run(),
            Command::Leave(args) => args.run(),
            Command::Hub(HubCommand::Init { context, kubeconfig }) => {
                block_on(crate::commands::hub::init(kubeconfig.as_deref(), &context))
                    .and_then(|lines| print_lines(&lines))
            }
            Command::Status(args) => args.run(),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                #[allow(clippy::print_stderr)]
                {
                    // One line, an API server's refusal as its message and code.
                    eprintln!("mcsd: {}", crate::cluster::preflight::one_line(error.as_ref()));
                }
                ExitCode::FAILURE
            }
        }
    }
}

impl CrdsArgs {
    fn run(self) -> anyhow::Result<()> {
        let Self { dir } = self;
        match dir {
            Some(dir) => {
                mcsd_crds::generate::write_all(&dir)?;
            }
            None => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                for (i, crd) in mcsd_crds::generate::crds()?.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b"---\n")?;
                    }
                    out.write_all(mcsd_crds::generate::render(crd)?.as_bytes())?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(feature = "sandbox")]
impl SandboxArgs {
    fn run(self) -> anyhow::Result<()> {
        let Self {
            clusters,
            dir,
            no_peers,
            hub,
        } = self;
        // Three daemons' worth of info lines would bury the sandbox's own output.
        init_tracing_at("warn");
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let connect = match (no_peers, hub) {
            (_, true) => crate::process::sandbox::Connect::Hub,
            (true, false) => crate::process::sandbox::Connect::Later,
            (false, false) => crate::process::sandbox::Connect::Mesh,
        };
        runtime.block_on(crate::process::sandbox::run(usize::from(clusters), &dir, connect))
    }
}
impl WhyArgs {
    fn run(self) -> anyhow::Result<()> {
        let Self {
            name,
            admin,
            sandbox,
            cluster,
            output,
        } = self;
        let admin = match (sandbox, cluster) {
            (Some(dir), Some(cluster)) => why::admin_of(&dir, &cluster)?,
            _ => admin,
        };
        let explanation = block_on(why::fetch(admin, &name))?;
        let text = match output {
            Output::Text => crate::core::why::render(&explanation),
            Output::Json => format!("{}\n", serde_json::to_string_pretty(&explanation)?),
        };
        use std::io::Write;
        std::io::stdout().lock().write_all(text.as_bytes())?;
        Ok(())
    }
}

impl JoinArgs {
    fn run(self) -> anyhow::Result<()> {
        let Self {
            contexts,
            one_way,
            hub,
            ranges,
            dry_run,
            server,
            token_ttl,
            kubeconfig,
        } = self;
        for (context, _) in &server {
            anyhow::ensure!(
                contexts.contains(context) || hub.as_ref() == Some(context),
                "--server names context {context:?}, which is not one of those to join ({})",
                contexts.join(", ")
            );
        }
        let options = crate::commands::join::JoinOptions {
            dry_run,
            token_ttl: Duration::from_secs(token_ttl),
        };
        if let Some(hub) = hub {
            let mut declared = std::collections::BTreeMap::new();
            for (context, text) in ranges {
                anyhow::ensure!(
                    contexts.contains(&context),
                    "--ranges names context {context:?}, which is not one of those to enrol ({})",
                    contexts.join(", ")
                );
                let parsed = text
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(|r| {
                        r.parse::<ipnet::IpNet>().map_err(|e| {
                            anyhow::anyhow!("--ranges {context}: {r:?} is not a CIDR range: {e}")
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                declared.insert(context, parsed);
            }
            let lines = block_on(crate::commands::hub::join(
                kubeconfig.as_deref(),
                &hub,
                &contexts,
                &server.into_iter().collect(),
                &declared,
                &options,
            ))?;
            return print_lines(&lines);
        }
        anyhow::ensure!(
            contexts.len() >= 2,
            "mcsd join connects two or more contexts (or enrols members in a hub with --hub CONTEXT)"
        );
        let lines = block_on(crate::commands::join::join(
            kubeconfig.as_deref(),
            &contexts,
            &server.into_iter().collect(),
            one_way,
            &options,
        ))?;
        print_lines(&lines)
    }
}

impl LeaveArgs {
    fn run(self) -> anyhow::Result<()> {
        let Self {
            contexts,
            one_way,
            hub,
            kubeconfig,
        } = self;
        if let Some(hub) = hub {
            let lines = block_on(crate::commands::hub::leave(
                kubeconfig.as_deref(),
                &hub,
                &contexts,
            ))?;
            return print_lines(&lines);
        }
        anyhow::ensure!(
            contexts.len() >= 2,
            "mcsd leave parts two or more contexts (or removes members from a hub with --hub CONTEXT)"
        );
        let lines = block_on(crate::commands::join::leave(
            kubeconfig.as_deref(),
            &contexts,
            one_way,
        ))?;
        print_lines(&lines)
    }
}

impl StatusArgs {
    fn run(self) -> anyhow::Result<()> {
        let Self {
            context,
            all_contexts,
            output,
            kubeconfig,
        } = self;
        let statuses = block_on(crate::commands::status::read(
            kubeconfig.as_deref(),
            &context,
            all_contexts,
        ))?;
        let text = match output {
            Output::Text => crate::commands::status::render(&statuses, k8s_openapi::jiff::Timestamp::now()),
            Output::Json => format!("{}\n", serde_json::to_string_pretty(&statuses)?),
        };
        use std::io::Write;
        std::io::stdout().lock().write_all(text.as_bytes())?;
        Ok(())
    }
}

/// Runs a command's one request-and-answer job on a runtime of its own.
fn block_on<T>(job: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(job)
}

fn print_lines(lines: &[String]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

impl DnsArgs {
    fn run(self) -> anyhow::Result<()> {
        let Self {
            objects,
            kubeconfig,
            listen,
            zone,
            ttl,
            admin,
            workers,
            tcp_idle_timeout,
            max_udp_payload,
            shutdown_delay,
        } = self;
        init_tracing();
        let options = crate::process::DnsOptions {
            listen,
            zone: zone.clone(),
            ttl,
            workers,
            tcp_idle_timeout: Duration::from_secs(tcp_idle_timeout),
            max_udp_payload,
            drain: Duration::from_secs(shutdown_delay),
        };
        let config = options.zone_config();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the runtime")?;
        runtime.block_on(async move {
            let shutdown = CancellationToken::new();
            let shared = match (objects, kubeconfig) {
                (Some(objects), _) => {
                    let text = std::fs::read_to_string(&objects)
                        .with_context(|| format!("reading {}", objects.display()))?;
                    let parsed =
                        objects::parse_objects(&text).with_context(|| format!("{}", objects.display()))?;
                    let mut index = DnsIndex::new(config).context("zone configuration")?;
                    objects::reset_index(&mut index, &parsed);
                    index.mark_synced();
                    index.publish();
                    index.zone()
                }
                (None, kubeconfig) => {
                    let conn = crate::cluster::kubeconfig::connect(kubeconfig.as_deref()).await?;
                    crate::cluster::preflight::dns(&conn).await?;
                    crate::cluster::dns_feed::feed(conn.client, config, shutdown.clone())
                        .context("zone configuration")?
                }
            };
            let serving = crate::process::Dns::start(
                shared.clone(),
                &options,
                admin,
                mcsd_dns::AdminExtras::default(),
                shutdown.clone(),
            )
            .await?;
            let signal = shutdown_signal();
            let z = shared.load();
            info!(zone = %z.origin(), records = z.record_count(), serial = z.serial(), "zone loaded");
            let dns_list = serving
                .addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(",");
            #[allow(clippy::print_stdout)]
            {
                println!("mcsd dns: serving {zone} dns={dns_list} admin={}", serving.admin);
            }
            signal.await;
            info!("shutting down (a second signal stops at once)");
            shutdown.cancel();
            let second = shutdown_signal();
            tokio::select! {
                stopped = serving.stopped() => stopped,
                _ = second => {
                    tracing::warn!("second signal: exiting without waiting");
                    Ok(())
                }
            }
        })
    }
}

fn run_daemon(args: crate::process::run::RunArgs) -> anyhow::Result<()> {
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        // In-flight work's bound: the writers' batch, and the DNS server's answering on.
        let wind_down = Duration::from_secs(30 + args.shutdown_delay);
        let running = args.run(shutdown.clone()).await?;
        let signal = shutdown_signal();
        let dns = running
            .dns_addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",");
        #[allow(clippy::print_stdout)]
        {
            println!("mcsd run: serving dns={dns} admin={}", running.admin);
        }
        signal.await;
        // Readiness turns false at once; the writers finish their batch and the Lease is given
        // up, so a successor takes over without waiting for it to expire; then the DNS server
        // and the admin listener stop. A second signal does not wait.
        info!("shutting down (a second signal stops at once)");
        shutdown.cancel();
        let second = shutdown_signal();
        tokio::select! {
            stopped = tokio::time::timeout(wind_down, running.stopped()) => match stopped {
                Ok(result) => result?,
                Err(_) => tracing::warn!("in-flight work did not finish within {wind_down:?}; exiting anyway"),
            },
            _ = second => tracing::warn!("second signal: exiting without waiting"),
        }
        Ok(())
    })
}

/// SIGINT or SIGTERM. The handlers are installed when this is called, not when it is first
/// awaited: call it before printing the line that tells a supervisor it may now stop us.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wait(term.take()) => {}
            _ = wait(int.take()) => {}
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (default: info).
fn init_tracing() {
    init_tracing_at("info");
}

/// Logs to standard error, filtered by `RUST_LOG` (default: `default`).
fn init_tracing_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match LOG_FORMAT.get().copied().unwrap_or(LogFormat::Text) {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
