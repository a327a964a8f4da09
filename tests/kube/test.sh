#!/usr/bin/env bash
# The real-Kubernetes tier's tests. Brings up three real clusters with tests/kube/up.sh (pods with
# a network, kube-proxy in iptables mode) and runs against them the end-to-end tests that need no
# sandbox hook (MCSD_E2E_CLUSTERSET; found by what they call, no list), the tests that exist only
# here (CoreDNS in front of mcsd, against CoreDNS's own MCS support, real faults) and the tests
# through pods (pods.rs); stops the clusters; then brings them up again with kube-proxy in
# nftables mode and runs the tests through pods once more. After each, the host's network must be
# as it was before: no namespace, link, route, rule or /etc/netns entry left. Then three
# clusters with mcsd installed as an operator installs it (up.sh --install helm: helm install,
# the release's pods run mcsd, mcsd join) run the Helm stories (helm.rs, found by
# ClusterSet::installed_with_helm: the upgrade with a DNS probe) and the ClusterSet flow of
# clusterset.rs. Last, three
# clusters connected through a hub (up.sh --hub, no pod network: the hub is about the exchange)
# run the hub's stories (hub.rs, found by ClusterSet::hub_start / hub_with_namespace) and the
# ClusterSet flow of clusterset.rs. Logs stay in DIR (default: a new directory under /tmp,
# printed). The upstream conformance suite is not run here: the Go module proxy does not serve it
# (tests/kube/conformance/run.sh runs it by hand).
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

# Every test file whose stories take whichever ClusterSet they are pointed at; files that start
# sandbox clusters of their own stay on the sandbox tier (tests/tests/tiers.rs keeps the rule).
all_tests=()
for file in $(grep -lE 'ClusterSet::(start|with_namespace|unpeered)\(' "$repo"/tests/tests/*.rs | sort); do
    all_tests+=(--test "$(basename "$file" .rs)")
done
# The stories told on a hub ClusterSet, and the ClusterSet flow again through the hub.
hub_tests=(--test clusterset)
for file in $(grep -lE 'ClusterSet::hub_(start|with_namespace)\(' "$repo"/tests/tests/*.rs | sort); do
    hub_tests+=(--test "$(basename "$file" .rs)")
done
# The stories told on clusters installed with Helm, and the ClusterSet flow through them.
helm_tests=(--test clusterset)
for file in $(grep -lE 'ClusterSet::installed_with_helm\(' "$repo"/tests/tests/*.rs | sort); do
    helm_tests+=(--test "$(basename "$file" .rs)")
done
# Build the tests first, so the clusters are not kept waiting on a compile.
(cd "$repo" && cargo test --locked --no-run --quiet -p mcsd-tests "${all_tests[@]}" "${hub_tests[@]}" "${helm_tests[@]}")

# The production image (.ci/image: no daemon, no registry), which tests/tests/image.rs runs with
# podman (and runc, which starts containers where crun cannot) against a real cluster. Both are
# Debian's; installed here when missing, as the tools of the README's test command are.
if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${MCSD_TEST_INSTALL:-1}" != 0 ]; then
        echo "test.sh: installing podman and runc (apt-get) to run the image"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends podman runc >/dev/null
    else
        echo "test.sh: the image test needs podman and runc: apt-get install podman runc" >&2
        exit 1
    fi
fi
if [ -z "${MCSD_IMAGE:-}" ]; then
    "$repo/.ci/image" --out "$dir/mcsd-image.tar"
    export MCSD_IMAGE="$dir/mcsd-image.tar"
fi

# What needs the Go-built tools but no cluster: our CRDs against upstream's release; the Helm
# chart (lint, and the same objects as manifests/); the alert rules (promtool's checks and unit
# tests).
(cd "$repo" && cargo test --locked -p mcsd-crds --test upstream -- --include-ignored)
(cd "$repo" && cargo test --locked -p mcsd-tests --test chart --test monitoring -- --include-ignored)

# What of the host's network a tier could leave behind.
host_network() {
    ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
    ip -4 route show table all | grep -v expires || true
    ip -6 route show table all | grep -v expires || true
    ip netns list
    nft list ruleset 2>/dev/null || true
    ls -A /etc/netns 2>/dev/null || true
}
# A run killed before it could stop (a machine restarted under it) left its network behind: the
# first tier would remove it, and the comparison below would take that for a change.
"$repo/tests/kube/up.sh" --remove-leftovers | sed 's/^/test.sh: /'
before=$(host_network)

# run_tier NAME "UP_SH_ARGS" CARGO_TEST_ARGS...: brings the clusters up in DIR/NAME with up.sh's
# arguments, runs the tests, stops the clusters and checks the host's network.
run_tier() {
    local name=$1 up_args=$2; shift 2
    local state="$dir/$name"
    mkdir -p "$state"
    # shellcheck disable=SC2086
    "$repo/tests/kube/up.sh" --clusters 3 --dir "$state" $up_args > "$state/up.out" 2> "$state/up.log" &
    local up=$!
    # shellcheck disable=SC2064
    trap "kill -TERM $up 2>/dev/null || true; wait $up 2>/dev/null || true" EXIT
    local started=$SECONDS
    until grep -q '^clusterset ready$' "$state/up.out" 2>/dev/null; do
        if ! kill -0 "$up" 2>/dev/null; then
            echo "test.sh: the clusters ($name) did not come up:" >&2
            tail -n 5 "$state/up.log" >&2
            exit 1
        fi
        if ((SECONDS - started > 1200)); then
            echo "test.sh: the clusters ($name) were not ready after 20 minutes: see $state/up.log" >&2
            exit 1
        fi
        sleep 1
    done
    echo "test.sh: clusterset ready ($name: up.sh $up_args) after $((SECONDS - started)) s"
    local status=0
    (cd "$repo" && MCSD_E2E_CLUSTERSET=$state cargo test --locked -p mcsd-tests "$@") || status=$?
    started=$SECONDS
    kill -TERM "$up"
    wait "$up" || true
    trap - EXIT
    echo "test.sh: clusters ($name) stopped in $((SECONDS - started)) s"
    [ "$status" = 0 ] || exit "$status"
    local after
    after=$(host_network)
    if [ "$after" != "$before" ]; then
        echo "test.sh: the clusters ($name) left the host's network changed (< before, > after):" >&2
        diff <(echo "$before") <(echo "$after") >&2 || true
        exit 1
    fi
}

run_tier iptables "--proxy-mode iptables" "${all_tests[@]}" -- --include-ignored --test-threads=1 "$@"
run_tier nftables "--proxy-mode nftables" --test pods -- --include-ignored --test-threads=1 "$@"
run_tier helm "--install helm" "${helm_tests[@]}" -- --include-ignored --test-threads=1 "$@"
run_tier hub "--hub --no-pod-network" "${hub_tests[@]}" -- --include-ignored --test-threads=1 "$@"
echo "test.sh: the four tiers passed and left the host's network as it was"
