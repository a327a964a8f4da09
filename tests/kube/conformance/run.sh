#!/usr/bin/env bash
# Runs the upstream MCS conformance suite against the first two clusters of a running real tier:
#   tests/kube/conformance/run.sh DIR        (DIR: where tests/kube/up.sh wrote kubeconfig)
# cluster-a exports (the suite's first context), cluster-b imports. Every spec that needs no pod
# network runs: label filter `!DNS && !Connectivity`, and "should be inaccessible" is skipped
# because without exec into pods it would pass without testing anything (DNS is tested through
# the real CoreDNS in tests/tests/kube.rs instead). The report goes to DIR/conformance.xml and
# DIR/conformance.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../versions.env"
dir=${1:?usage: run.sh DIR}
module=sigs.k8s.io/mcs-api/conformance
if ! go mod download -json "$module@$MCS_CONFORMANCE_VERSION" > /dev/null 2>&1; then
    echo "conformance: NOT RUN: $module@$MCS_CONFORMANCE_VERSION is not served by this machine's Go module proxy ($(go env GOPROXY)), so the upstream suite cannot be built here"
    exit 0
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
cd "$dir"
"$build/conformance.test" \
    -kubeconfig "$dir/kubeconfig" -contexts cluster-a,cluster-b \
    -organization mcsd -project mcsd -url https://github.com/mcsd-io/mcsd \
    -ginkgo.label-filter='!DNS && !Connectivity' -ginkgo.skip='should be inaccessible' \
    -ginkgo.junit-report="$dir/conformance.xml" -ginkgo.v 2>&1 | tee "$dir/conformance.log" | grep -E '^\[|Ran |PASS|FAIL|•' || true
exit "${PIPESTATUS[0]}"
