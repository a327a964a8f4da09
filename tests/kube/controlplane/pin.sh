#!/usr/bin/env bash
# Pins the control plane module to KUBERNETES_VERSION (tests/kube/versions.env): requires
# k8s.io/kubernetes at that version and replaces every staging module that release's own go.mod
# maps to ./staging/... with its published v0.X.Y. Run after changing the version; commit the
# resulting go.mod and go.sum.
set -euo pipefail
cd "$(dirname "$0")"
. ../versions.env
v=$KUBERNETES_VERSION
gomod=$(go mod download -json "k8s.io/kubernetes@v$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -n "$gomod" ] || { echo "pin.sh: k8s.io/kubernetes@v$v is not served by the Go module proxy" >&2; exit 1; }
for m in $(sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => k8s.io/.*|\1|p' go.mod); do
    go mod edit -dropreplace="$m"
done
for m in $(sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*|\1|p' "$gomod"); do
    go mod edit -replace="$m=$m@v0.${v#1.}"
done
go mod edit -require="k8s.io/kubernetes@v$v"
go mod tidy
echo "pinned k8s.io/kubernetes v$v and $(grep -c '=> k8s.io' go.mod) staging modules"
