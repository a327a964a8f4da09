#!/usr/bin/env bash
# Runs the shared loopback bench (../shared/bench/dns/run.py) with knot, nsd and `mcsd dns` in the
# same run. mcsd loads the same data as Kubernetes objects (gen_objects.py of the harness: same
# names, same addresses as the zone file the others load) and is probed with svc-0.ns-0.svc
# (its zone has no ns1.clusterset.local; its apex NS is ns.dns.clusterset.local).
# usage: benches/dns/compare.sh [extra run.py args]   (needs: apt-get install dnsperf knot nsd bind9-dnsutils)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bench=${BENCH_DIR:-$repo/../shared/bench/dns}
work=${WORK:-/tmp/dnsbench}
mkdir -p "$work"
cargo build --release -p mcsd --manifest-path "$repo/Cargo.toml"
target=${CARGO_TARGET_DIR:-$repo/target}
cp "$target/release/mcsd" "$work/mcsd-bench"
[ -s "$work/objects.yaml" ] || python3 "$bench/gen_objects.py" > "$work/objects.yaml"
cd "$bench"
exec ./run.py --only "${ONLY:-knot,nsd,mcsd}" --pin --threads 1 --out "$work/out" --objects "$work/objects.yaml" \
  --server "mcsd=exec $work/mcsd-bench dns --objects \$OBJECTS --listen 127.0.0.1:\$PORT --admin 127.0.0.1:0 --workers \$THREADS" \
  --probe svc-0.ns-0.svc.clusterset.local "$@"
