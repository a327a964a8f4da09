//! The command line: one subcommand per job. Each subcommand's `run` is where its wiring lives.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Kubernetes Multicluster Services for a ClusterSet, with an embedded `clusterset.local` DNS server.
#[derive(Debug, Parser)]
#[command(name = "mcsd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the CustomResourceDefinitions (ServiceExport, ServiceImport, ClusterProperty) as YAML.
    Crds(CrdsArgs),
    /// Run a whole ClusterSet on this machine: N simulated clusters (`cluster-a`, `cluster-b`, …)
    /// on 127.0.0.1, each with its own API server, CA and admin kubeconfig, until SIGINT/SIGTERM.
    /// Prints `sandbox ready` when every cluster is up.
    Sandbox(SandboxArgs),
}

/// `mcsd sandbox`.
#[derive(Debug, clap::Args)]
struct SandboxArgs {
    /// How many clusters to run (1 to 26).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=26))]
    clusters: u8,
    /// Where to write `<cluster>.kubeconfig` for every cluster and `sandbox.json`
    /// (`[{"name", "kubeconfig", "api", "dns"}]`).
    #[arg(long, value_name = "DIR", default_value = "./sandbox-state")]
    dir: PathBuf,
}

/// `mcsd crds`.
#[derive(Debug, clap::Args)]
struct CrdsArgs {
    /// Write one file per CRD into this directory (normally the repository's `crds/`) instead of
    /// printing a multi-document YAML stream on standard output.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl Cli {
    /// Parses the command line. `--help` and `--version` print as usual; a bad flag prints one
    /// line that names the problem (and where to look), and gives the exit code to leave with.
    pub fn parse_args() -> Result<Self, ExitCode> {
        Self::try_parse().map_err(|error| {
            use clap::error::ErrorKind;
            if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                let _ = error.print();
                return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
            }
            let rendered = error.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            #[allow(clippy::print_stderr)]
            {
                eprintln!("mcsd: {first} (see `mcsd --help`)");
            }
            ExitCode::from(2)
        })
    }

    /// Runs the chosen subcommand; errors are printed as one line on standard error.
    pub fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Crds(args) => args.run(),
            Command::Sandbox(args) => args.run(),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("mcsd: {error:#}");
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

impl SandboxArgs {
    fn run(self) -> anyhow::Result<()> {
        let Self { clusters, dir } = self;
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(crate::sandbox::run(usize::from(clusters), &dir))
    }
}
