#!/usr/bin/env bash
# Real Kubernetes on this machine, with the same contract as `mcsd sandbox`:
#   tests/kube/up.sh [--clusters N] [--dir DIR]        (N: 1–3, default 3; DIR default ./kube-state)
# brings up N real clusters on 127.0.0.1 (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler built from the published Go modules; kwok for nodes and pods), installs mcsd with
# `kubectl apply -k manifests/`, runs it per cluster as a host process with the `mcsd`
# ServiceAccount's token, peers the clusters through `mcsd.io/peer` Secrets, and puts two real
# CoreDNS in front: the cluster DNS (forward stub for clusterset.local) and CoreDNS's own
# `multicluster` option (the reference). Writes DIR/<name>.kubeconfig, DIR/kubeconfig (every
# cluster as a context), DIR/sandbox.json (name, kubeconfig, api, dns, admin, cluster_dns,
# reference_dns) and each cluster's logs under DIR/<name>/; prints `clusterset ready`; stops
# everything on SIGINT or SIGTERM. Needs Go (the first run builds the Go programs, a few minutes).
# --release runs mcsd built with the release profile (for benchmarks).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
clusters=3
dir=./kube-state
profile=debug
while (($#)); do
    case $1 in
        --clusters) clusters=$2; shift 2 ;;
        --clusters=*) clusters=${1#*=}; shift ;;
        --dir) dir=$2; shift 2 ;;
        --dir=*) dir=${1#*=}; shift ;;
        --release) profile=release; shift ;;
        *) echo "up.sh: unknown argument $1 (usage: up.sh [--clusters N] [--dir DIR] [--release])" >&2; exit 2 ;;
    esac
done

bin=$("$repo/tests/kube/build.sh" | tail -n 1)
echo "up.sh: building mcsd and kube-up" >&2
release=()
[ "$profile" = release ] && release=(--release)
(cd "$repo" && cargo build --locked --quiet -p mcsd --bin mcsd -p mcsd-tests --bin kube-up "${release[@]}")
target=${CARGO_TARGET_DIR:-$repo/target}
# kubectl of the control plane's own release comes first on PATH (kube-up creates tokens with it).
export PATH="$bin:$PATH"
exec "$target/$profile/kube-up" --clusters "$clusters" --dir "$dir" --bin "$bin" --mcsd "$target/$profile/mcsd"
