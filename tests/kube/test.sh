#!/usr/bin/env bash
# The real-Kubernetes tier's tests: brings up three real clusters with tests/kube/up.sh, runs
# the end-to-end tests that need no sandbox hook against them (MCSD_E2E_CLUSTERSET), plus the
# tests that exist only here (CoreDNS in front of mcsd, and against CoreDNS's own MCS support),
# then the upstream MCS conformance suite, and stops the clusters. Logs and the conformance
# report stay in DIR (default: a new directory under /tmp, printed).
#   tests/kube/test.sh [--dir DIR] [-- extra cargo test arguments]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=
while (($#)); do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --dir=*) dir=${1#*=}; shift ;;
        --) shift; break ;;
        *) echo "test.sh: unknown argument $1 (usage: test.sh [--dir DIR] [-- cargo test args])" >&2; exit 2 ;;
    esac
done
[ -n "$dir" ] || dir=$(mktemp -d /tmp/mcsd-kube.XXXXXX)
mkdir -p "$dir"
echo "test.sh: clusters, logs and reports in $dir"

# The Go programs, and kubectl of the control plane's release first on PATH for the tests too.
bin=$("$repo/tests/kube/build.sh" | tail -n 1)
export PATH="$bin:$PATH"

# Build the tests first, so the clusters are not kept waiting on a compile.
(cd "$repo" && cargo test --locked --no-run --quiet -p mcsd-tests --test clusterset --test conformance --test walkthrough --test kube)

"$repo/tests/kube/up.sh" --clusters 3 --dir "$dir" > "$dir/up.out" 2> "$dir/up.log" &
up=$!
stop() {
    kill -TERM "$up" 2>/dev/null || true
    wait "$up" 2>/dev/null || true
}
trap stop EXIT
started=$SECONDS
until grep -q '^clusterset ready$' "$dir/up.out" 2>/dev/null; do
    if ! kill -0 "$up" 2>/dev/null; then
        echo "test.sh: the clusters did not come up:" >&2
        tail -n 5 "$dir/up.log" >&2
        exit 1
    fi
    if ((SECONDS - started > 1200)); then
        echo "test.sh: the clusters were not ready after 20 minutes: see $dir/up.log" >&2
        exit 1
    fi
    sleep 1
done
echo "test.sh: clusterset ready after $((SECONDS - started)) s"

cd "$repo"
MCSD_E2E_CLUSTERSET=$dir cargo test --locked -p mcsd-tests \
    --test clusterset --test conformance --test walkthrough --test kube -- --include-ignored --test-threads=1 "$@"

"$repo/tests/kube/conformance/run.sh" "$dir"
