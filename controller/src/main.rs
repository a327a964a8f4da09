//! `mcsd`: Kubernetes Multicluster Services controllers and the `clusterset.local` DNS server.

use clap::Parser;

fn main() -> std::process::ExitCode {
    mcsd::cli::Cli::parse().run()
}
