//! `mcsd`: Kubernetes Multicluster Services controllers and the `clusterset.local` DNS server.

fn main() -> std::process::ExitCode {
    match mcsd::cli::Cli::parse_args() {
        Ok(cli) => cli.run(),
        Err(code) => code,
    }
}
