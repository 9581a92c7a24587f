#!/usr/bin/env bash
# Builds the pinned Kubernetes control-plane binaries (kube-apiserver,
# kube-controller-manager, kubectl) and etcd into a cache directory, skipping
# any binary already built at the pinned version. Prints the cache directory
# on stdout; progress goes to stderr.
#
# Cold, on 2 cores, the Kubernetes binaries take about 15-19 minutes and etcd
# about 2; a warm cache costs a few stat calls.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# One place for the pinned versions: the tools modules' go.mod files.
k8s_version=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$here/k8s-tools/go.mod")
etcd_version=$(awk '$1=="go.etcd.io/etcd/server/v3" {print $2}' "$here/etcd-tools/go.mod")
cache_root=${VLLM_HPA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-hpa}
dir="$cache_root/bin/k8s-$k8s_version-etcd-$etcd_version"
mkdir -p "$dir"

log() { printf '%s build-k8s-cache: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# build MODULE_DIR VERSION_LDFLAGS PKG BIN
build() {
  local module=$1 ldflags=$2 pkg=$3 bin=$4
  if [[ -x "$dir/$bin" ]]; then
    log "$bin: cached"
    return
  fi
  log "$bin: building $pkg (cold builds take minutes)"
  local start=$SECONDS
  # Build to a temporary name and rename, so an interrupted build never leaves
  # a half-written binary that a later run would take as cached.
  (cd "$module" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$dir/.$bin.tmp" "$pkg")
  mv "$dir/.$bin.tmp" "$dir/$bin"
  log "$bin: built in $((SECONDS - start))s"
}

k8s_ldflags="-X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$k8s_version" | cut -d. -f2)"
build "$here/etcd-tools" "" go.etcd.io/etcd/server/v3 etcd
build "$here/k8s-tools" "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver
build "$here/k8s-tools" "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager
build "$here/k8s-tools" "$k8s_ldflags" k8s.io/kubernetes/cmd/kubectl kubectl
echo "$dir"
