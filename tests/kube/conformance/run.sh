#!/usr/bin/env bash
# Runs the upstream MCS conformance suite (sigs.k8s.io/mcs-api/conformance) against the first two
# clusters of a running real tier, all 27 specs:
#   tests/kube/conformance/run.sh DIR [--suite BINARY] [-- EXTRA SUITE FLAGS]
# DIR is where tests/kube/up.sh wrote its kubeconfig; cluster-a exports (the suite's first
# context), cluster-b imports. The DNS and Connectivity specs exec into pods, so the tier needs
# its pod network (up.sh's default). The suite is built from the Go module proxy when the proxy
# serves it; otherwise pass --suite with a test binary built by hand from a checkout of
# kubernetes-sigs/mcs-api (outside this repository; docs/decisions.md says how it was run). With
# neither, this fails. The report goes to DIR/conformance.xml and DIR/conformance.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../versions.env"
dir=${1:?usage: run.sh DIR [--suite BINARY] [-- EXTRA SUITE FLAGS]}
shift
suite=
while (($#)); do
    case $1 in
        --suite) suite=$2; shift 2 ;;
        --suite=*) suite=${1#*=}; shift ;;
        --) shift; break ;;
        *) echo "run.sh: unknown argument $1 (usage: run.sh DIR [--suite BINARY] [-- EXTRA SUITE FLAGS])" >&2; exit 2 ;;
    esac
done
dir=$(cd "$dir" && pwd)
if ! grep -q '"pod_network": true' "$dir/sandbox.json"; then
    echo "conformance: the tier in $dir has no pod network: its DNS and Connectivity specs exec into pods; start it without --no-pod-network" >&2
    exit 1
fi
if [ -z "$suite" ]; then
    module=sigs.k8s.io/mcs-api/conformance
    if ! go mod download -json "$module@$MCS_CONFORMANCE_VERSION" > /dev/null 2>&1; then
        echo "conformance: $module@$MCS_CONFORMANCE_VERSION is not served by this machine's Go module proxy ($(go env GOPROXY)): build the suite by hand from a checkout of kubernetes-sigs/mcs-api and pass --suite BINARY" >&2
        exit 1
    fi
    cache=${MCSD_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcsd/kube}
    build="$cache/conformance-$MCS_CONFORMANCE_VERSION-$(cat "$here/go.mod" "$here/conformance_test.go" | sha256sum | cut -c1-12)"
    if [ ! -x "$build/conformance.test" ]; then
        echo "conformance: building the suite ($module $MCS_CONFORMANCE_VERSION)" >&2
        rm -rf "$build.tmp" && mkdir -p "$build.tmp/src"
        cp "$here/go.mod" "$here/conformance_test.go" "$build.tmp/src/"
        (cd "$build.tmp/src" && go mod tidy && CGO_ENABLED=0 go test -c -o "$build.tmp/conformance.test" .)
        rm -rf "$build" && mv "$build.tmp" "$build"
    fi
    suite="$build/conformance.test"
fi
cd "$dir"
started=$SECONDS
set +e
"$suite" \
    -kubeconfig "$dir/kubeconfig" -contexts cluster-a,cluster-b \
    -organization mcsd -project mcsd -url https://github.com/mcsd-io/mcsd \
    -ginkgo.junit-report="$dir/conformance.xml" -ginkgo.v -ginkgo.no-color "$@" > "$dir/conformance.log" 2>&1
status=$?
set -e
grep -E '^(Ran |PASS|FAIL|Test Suite|SUCCESS|•)|\[FAIL\]' "$dir/conformance.log" || true
echo "conformance: exit $status after $((SECONDS - started)) s; log $dir/conformance.log, report $dir/conformance.xml"
exit "$status"
