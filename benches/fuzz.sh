#!/usr/bin/env bash
# Fuzzes the DNS query path for SECONDS (default 60). With cargo-fuzz and a nightly toolchain it
# runs the libFuzzer target dns/fuzz (query); otherwise the stable random loop
# (dns/examples/fuzz_loop.rs) checks the same property. Not part of CI.
set -euo pipefail
secs=${1:-60}
repo=$(cd "$(dirname "$0")/.." && pwd)
if cargo +nightly fuzz --version >/dev/null 2>&1; then
  cd "$repo/dns"
  exec cargo +nightly fuzz run query -- -max_total_time="$secs"
else
  echo "cargo-fuzz or nightly missing: running the stable random loop instead" >&2
  exec cargo run --release --manifest-path "$repo/Cargo.toml" -p mcsd-dns --example fuzz_loop -- "$secs"
fi
