//! The peer-input fuzzing loop on a stable toolchain: mutated exchange watches (records and
//! mirrored slices through the guard into the view and the importer's objects) and peer
//! Secrets, through `mcsd::core::fuzzing`, for a number of inputs (default 1,000,000) and a seed.
//! `cargo run --release -p mcsd --example fuzz_peer -- 1000000 [SEED]`

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let inputs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let seed: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x2545_f491_4f6c_dd1d);
    let started = Instant::now();
    let (decoded, made) = mcsd::core::fuzzing::run(seed, inputs);
    // The most memory the loop ever held: a bounded guard keeps it flat however long it runs.
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l[6..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    #[allow(clippy::print_stdout)]
    {
        println!(
            "fuzz_peer: {inputs} watches ({made} exchange objects, {decoded} decoded and offered to the guard) and {inputs} peer Secrets in {:.1} s, seed {seed}, peak memory {peak}, no failure",
            started.elapsed().as_secs_f64()
        );
    }
}
