//! `mcsd`: Kubernetes Multicluster Services controllers and the `clusterset.local` DNS server.

/// jemalloc, not glibc's malloc: mcsd keeps hundreds of thousands of small, long-lived objects
/// (one per endpoint and slice at 10,000 services) and glibc's free-list work per allocation grows
/// with that heap, so the CPU one changed service costs grew with the ClusterSet's size. With
/// jemalloc it does not (benches/README.md, "Session 5").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    match mcsd::commands::Cli::parse_args() {
        Ok(cli) => cli.run(),
        Err(code) => code,
    }
}
