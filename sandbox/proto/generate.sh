#!/usr/bin/env bash
# Regenerates kubernetes.pb: the protobuf descriptors of every `v1` API group of k8s.io/api and
# of apimachinery (meta/v1, runtime, intstr, resource), compiled from the .proto files published
# in those Go modules at the version tests/kube/versions.env pins. The sandbox decodes
# `application/vnd.kubernetes.protobuf` request bodies with them (sandbox/src/proto.rs).
# Run after changing KUBERNETES_VERSION; needs Go and protoc (Debian: protobuf-compiler).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../tests/kube/versions.env"
v=0.${KUBERNETES_VERSION#1.}
command -v protoc >/dev/null 2>&1 || { echo "generate.sh: needs protoc: apt-get install protobuf-compiler" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/k8s.io"
for module in api apimachinery; do
    dir=$(go mod download -json "k8s.io/$module@v$v" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    ln -s "$dir" "$root/k8s.io/$module"
done
files=$(cd "$root/k8s.io/api/" && find . -path './*/v1/generated.proto' | sed 's|^\./|k8s.io/api/|' | sort)
(cd "$root" && protoc --include_imports -I . --descriptor_set_out="$here/kubernetes.pb" $files 2>/dev/null)
echo "k8s.io/api v$v, $(echo "$files" | wc -l) groups: $(wc -c < "$here/kubernetes.pb") bytes" > "$here/kubernetes.pb.txt"
cat "$here/kubernetes.pb.txt"
