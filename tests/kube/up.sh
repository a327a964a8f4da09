#!/usr/bin/env bash
# Real Kubernetes on this machine, with the same contract as `mcsd sandbox`:
#   tests/kube/up.sh [--clusters N] [--hub] [--dir DIR] [--no-pod-network] [--proxy-mode iptables|nftables]
#                    [--install host|helm]
#                    (N: 1–8, default 3; DIR default ./kube-state; kube-proxy's mode default iptables)
# brings up N real clusters on 127.0.0.1 (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler built from the published Go modules; kwok for nodes and pods), installs mcsd with
# `kubectl apply -k manifests/`, runs it per cluster as a host process with the `mcsd`
# ServiceAccount's token, peers the clusters through `mcsd.io/peer` Secrets, and puts two real
# CoreDNS in front: the cluster DNS (forward stub for clusterset.local) and CoreDNS's own
# `multicluster` option (the reference). Writes DIR/<name>.kubeconfig, DIR/kubeconfig (every
# cluster as a context), DIR/sandbox.json (name, kubeconfig, api, dns, admin, cluster_dns,
# reference_dns) and each cluster's logs under DIR/<name>/; prints `clusterset ready`; stops
# everything on SIGINT or SIGTERM.
# --hub connects the clusters through a hub instead of peer Secrets: a fourth control plane
# (etcd, kube-apiserver, kube-controller-manager; context `hub`, DIR/hub.kubeconfig) set up with
# `mcsd hub init hub` and `mcsd join --hub hub cluster-a …`, as the README's hub section says.
# Needs Go (the first run builds the Go programs, a few minutes).
# Pods have a network by default (tests/src/real/network.rs): each gets a network namespace on one
# flat network joining the clusters, runs its containers' commands with this machine's programs,
# takes `kubectl exec` and `kubectl logs`, and resolves through the cluster DNS; each node runs
# the real kube-proxy. That needs root, and the programs below (installed with apt-get when
# missing); --no-pod-network leaves pods as kwok's records.
# --install helm installs mcsd as an operator does instead (needs the pod network, no hub):
# `helm install mcsd manifests/chart` in each cluster, the release's pods run by the tier's
# kubelet (image `mcsd` is this mcsd, in-cluster with the pod's ServiceAccount token), CoreDNS
# forwarding to the mcsd-dns Service, and `mcsd join --server …` peering the clusters; dns and
# admin in sandbox.json are then the release's Services, and helm_release names it.
# --release runs mcsd built with the release profile (for benchmarks).
# --remove-leftovers removes what a tier killed before it could stop left of the pod network
# (namespaces, the host's link, /etc/netns entries), says so, and exits.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
clusters=3
dir=./kube-state
profile=debug
pod_network=(); proxy_mode=(--proxy-mode iptables); leftovers=(); hub=(); install=(--install host)
while (($#)); do
    case $1 in
        --clusters) clusters=$2; shift 2 ;;
        --clusters=*) clusters=${1#*=}; shift ;;
        --hub) hub=(--hub); shift ;;
        --dir) dir=$2; shift 2 ;;
        --dir=*) dir=${1#*=}; shift ;;
        --release) profile=release; shift ;;
        --no-pod-network) pod_network=(--no-pod-network); shift ;;
        --remove-leftovers) leftovers=(--remove-leftovers); shift ;;
        --proxy-mode) proxy_mode=(--proxy-mode "$2"); shift 2 ;;
        --proxy-mode=*) proxy_mode=(--proxy-mode "${1#*=}"); shift ;;
        --install) install=(--install "$2"); shift 2 ;;
        --install=*) install=(--install "${1#*=}"); shift ;;
        *) echo "up.sh: unknown argument $1 (usage: up.sh [--clusters N] [--hub] [--dir DIR] [--release] [--no-pod-network] [--proxy-mode iptables|nftables] [--install host|helm] [--remove-leftovers])" >&2; exit 2 ;;
    esac
done

# What the pod network runs on this machine: the network (ip), kube-proxy's two modes (iptables,
# nft), and the programs the tests' pods run in place of their images' (socat, nc, nslookup,
# curl). Missing ones are installed as root with apt-get; otherwise one line names them.
if [ ${#pod_network[@]} -eq 0 ]; then
    missing=()
    for pair in ip:iproute2 iptables:iptables ip6tables:iptables nft:nftables socat:socat \
        nc:netcat-openbsd nslookup:bind9-dnsutils curl:curl; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "up.sh: the pod network needs ${missing[*]}: installing with apt-get" >&2
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y -q "${missing[@]}" >&2 \
                || { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; }
        else
            echo "up.sh: the pod network needs ${missing[*]}: install with \`sudo apt-get install -y ${missing[*]}\`, or pass --no-pod-network" >&2
            exit 1
        fi
    fi
fi

bin=$("$repo/tests/kube/build.sh" | tail -n 1)
echo "up.sh: building mcsd and kube-up" >&2
release=()
[ "$profile" = release ] && release=(--release)
(cd "$repo" && cargo build --locked --quiet -p mcsd --bin mcsd -p mcsd-tests --bin kube-up "${release[@]}")
target=${CARGO_TARGET_DIR:-$repo/target}
# kubectl of the control plane's own release comes first on PATH (kube-up creates tokens with it).
export PATH="$bin:$PATH"
exec "$target/$profile/kube-up" --clusters "$clusters" --dir "$dir" --bin "$bin" --mcsd "$target/$profile/mcsd" \
    "${hub[@]}" "${pod_network[@]}" "${proxy_mode[@]}" "${install[@]}" "${leftovers[@]}"
