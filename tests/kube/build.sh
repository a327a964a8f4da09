#!/usr/bin/env bash
# Builds the real-Kubernetes tier's programs from the Go module proxy into a cache outside the
# repository, and prints the directory that holds them (the last line of standard output):
#   kube     kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and etcd
#            (controlplane/); linked as kubectl, it is kubectl of the same release
#   kwok     fake nodes and pods (sigs.k8s.io/kwok, with kwok/exec_fixes.go's fixes), with
#            kwok-stages.yaml and kwok-node-stages.yaml
#   coredns  CoreDNS (github.com/coredns/coredns)
#   helm     Helm (helm.sh/helm/v4): the chart's lint and rendering; the real tier's Helm install
#   helm3    Helm 3 (helm.sh/helm/v3): the chart's lint and rendering, as Helm 4's
#   prometheus, promtool   Prometheus (github.com/prometheus/prometheus): a server scraping the
#            real tier's mcsd for the dashboard's and alerts' queries; the alert rules' checks and
#            unit tests
# and, asked for alone (`build.sh --only crane`, whose last line is then the program's path):
#   crane    crane (github.com/google/go-containerregistry): assembles the image (.ci/image)
# Each is keyed by its version, its inputs and the Go version, so a reused machine rebuilds
# nothing and a changed version rebuilds only that program. Progress goes to standard error.
# Cache: $MCSD_KUBE_CACHE, default ${XDG_CACHE_HOME:-~/.cache}/mcsd/kube.
set -euo pipefail
shopt -s inherit_errexit
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"

command -v go >/dev/null 2>&1 || {
    echo "build.sh: the real-Kubernetes tier needs Go (1.24 or newer) on PATH to build the control plane, kwok and CoreDNS from the Go module proxy" >&2
    exit 1
}
cache=${MCSD_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcsd/kube}
gover=$(go env GOVERSION)
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

say() { echo "build.sh: $*" >&2; }

# Runs `go SUBCOMMAND -v ARGS...`, printing a line every 100 packages compiled and every line
# that is not a package's name (errors) as it comes.
go_with_progress() {
    local what=$1 subcommand=$2; shift 2
    local started=$SECONDS n=0 line
    go "$subcommand" -v "$@" 2>&1 | while IFS= read -r line; do
        if [[ $line =~ ^[A-Za-z0-9._~/-]+$ ]]; then
            n=$((n + 1))
            ((n % 100)) || say "$what: $n packages compiled ($((SECONDS - started)) s)"
        else
            echo "$line" >&2
        fi
    done
    return "${PIPESTATUS[0]}"
}

# build NAME KEY COMMAND...: runs COMMAND (which writes $out/NAME) unless $cache/NAME-KEY exists.
build() {
    local name=$1 key=$2; shift 2
    local dir="$cache/$name-$key"
    if [ -x "$dir/$name" ]; then
        echo "$dir/$name"
        return
    fi
    say "building $name (cold on 2 cores: a few minutes; cached afterwards in $dir)"
    local started=$SECONDS
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    out="$dir.tmp" "$@"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    say "built $name in $((SECONDS - started)) s"
    echo "$dir/$name"
}

sum_of() { cat "$@" | sha256sum | cut -c1-12; }

kube_build() {
    (cd "$here/controlplane" && go_with_progress kube build -trimpath -o "$out/kube" -ldflags "-s -w \
        -X k8s.io/component-base/version.gitVersion=v$KUBERNETES_VERSION \
        -X k8s.io/component-base/version.gitMajor=${KUBERNETES_VERSION%%.*} \
        -X k8s.io/component-base/version.gitMinor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)" .)
}
go_install() { local what=$1; shift; GOBIN=$out go_with_progress "$what" install -trimpath -ldflags "-s -w" "$@"; }
# kwok, with mcsd's fixes to exec (kwok/exec_fixes.go, put in place of the module's own
# debugging_exec_other.go in a copy of the module, Go taking no overlay of the module cache; and
# one line of debugging_exec.go made to report an exit status through it), and the stages it
# runs (read from its published module; kwok has no built-in ones): nodes turn Ready and keep a
# Lease; deleted pods go away; and, for the tier without a pod network, pods bound to a node get
# an address of each family from the node's podCIDRs and turn Ready (with the pod network the
# tier's own kubelet does that).
kwok_build() {
    local module
    module=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    local server=pkg/kwok/server
    cp -r "$module" "$out/src" && chmod -R u+w "$out/src"
    [ -f "$out/src/$server/debugging_exec_other.go" ] || { say "kwok $KWOK_VERSION has no $server/debugging_exec_other.go: check kwok/exec_fixes.go against it"; return 1; }
    cp "$here/kwok/exec_fixes.go" "$out/src/$server/debugging_exec_other.go"
    local plain='return s.execInContainer(ctx, cmd, in, stdout, stderr)'
    sed -i "s/^\treturn s\.execInContainer(ctx, cmd, in, stdout, stderr)\$/\treturn exitCodeOf(s.execInContainer(ctx, cmd, in, stdout, stderr))/" \
        "$out/src/$server/debugging_exec.go"
    grep -q "exitCodeOf(s.execInContainer(" "$out/src/$server/debugging_exec.go" \
        || { say "kwok $KWOK_VERSION's $server/debugging_exec.go has no line \`$plain\`: check kwok/exec_fixes.go against it"; return 1; }
    (cd "$out/src" && go_with_progress kwok build -mod=mod -trimpath -ldflags "-s -w" -o "$out/kwok" ./cmd/kwok)
    stages() {
        local stage
        for stage in "$@"; do
            echo "---"
            cat "$module/kustomize/stage/$stage.yaml"
        done
    }
    stages node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
        pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete > "$out/kwok-stages.yaml"
    # With the pod network the tier's kubelet deletes a pod once its containers have stopped.
    stages node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
        > "$out/kwok-node-stages.yaml"
    rm -rf "$out/src"
}

crane_build() { build crane "$CRANE_VERSION-$gover" go_install crane "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"; }
case "${1:-}" in
    "") ;;
    --only)
        case "${2:-}" in
            crane) crane_build; exit ;;
            *) say "--only takes crane (the tier's programs are built together)"; exit 2 ;;
        esac ;;
    *) say "unknown argument $1 (usage: build.sh [--only crane])"; exit 2 ;;
esac

kube=$(build kube "v$KUBERNETES_VERSION-$(sum_of "$here/controlplane/go.mod" "$here/controlplane/go.sum" "$here/controlplane/main.go" <(echo "$gover"))" kube_build)
kwok=$(build kwok "$KWOK_VERSION-$(sum_of "$here/kwok/exec_fixes.go" <(echo "$gover") <(declare -f kwok_build))" kwok_build)
coredns=$(build coredns "$COREDNS_VERSION-$gover" go_install coredns "github.com/coredns/coredns@$COREDNS_VERSION")
helm=$(build helm "$HELM_VERSION-$gover" go_install helm "helm.sh/helm/v4/cmd/helm@$HELM_VERSION")
helm3_build() { go_install helm3 "helm.sh/helm/v3/cmd/helm@$HELM3_VERSION" && mv "$out/helm" "$out/helm3"; }
helm3=$(build helm3 "$HELM3_VERSION-$gover" helm3_build)
prometheus=$(build prometheus "$PROMETHEUS_VERSION-$gover" go_install prometheus \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION")

# One directory of links, so callers find every program in one place.
bin="$cache/bin-$(sum_of <(echo "$kube $kwok $coredns $helm $helm3 $prometheus"))"
if [ ! -d "$bin" ]; then
    mkdir -p "$bin.tmp"
    ln -sf "$kube" "$kwok" "$kwok-stages.yaml" "$kwok-node-stages.yaml" "$coredns" "$helm" "$helm3" \
        "$prometheus" "$(dirname "$prometheus")/promtool" "$bin.tmp/"
    ln -sf "$kube" "$bin.tmp/kubectl"
    rm -rf "$bin" && mv "$bin.tmp" "$bin"
fi
echo "$bin"
