#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from the Go module proxy into Holdfast's binary cache,
# and prints the directory that holds them. Idempotent: a version already built is reused.
#
#   HOLDFAST_CACHE_DIR  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/holdfast)
#   KUBE_VERSION        Kubernetes version (default v1.34.4)
#   ETCD_VERSION        etcd version       (default v3.5.21)
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every staging module with
# ./staging/..., so we build it from a throwaway wrapper module that replaces each staging module
# with the published k8s.io/<m> v0.<minor>.<patch> instead.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.5.21}
cache=${HOLDFAST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/holdfast}
kube_dir=$cache/kube-$KUBE_VERSION
etcd_dir=$cache/etcd-$ETCD_VERSION
mkdir -p "$cache"

log() { echo "kube/build.sh: $*" >&2; }

# One build at a time, even when several test packages ask at once.
exec 9>"$cache/.build.lock"
flock 9

staging_version=v0.${KUBE_VERSION#v1.}

build_kube() {
  if [[ -x $kube_dir/kube-apiserver && -x $kube_dir/kubectl ]]; then return; fi
  log "building kube-apiserver and kubectl $KUBE_VERSION (cold: ~8 min on 2 cores)"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  local gomod; gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  local staging; staging=$(grep -E '=> \./staging/' "$gomod" | awk '{print $1}')
  [[ $(wc -l <<<"$staging") -gt 20 ]] || { log "unexpected go.mod for k8s.io/kubernetes: found $(wc -l <<<"$staging") staging modules"; exit 1; }
  {
    echo "module holdfast.local/kubebuild"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    for m in $staging; do echo "replace $m => $m $staging_version"; done
  } >"$work/go.mod"
  local major=${KUBE_VERSION#v}; major=${major%%.*}
  local minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  (
    cd "$work"
    GOFLAGS=-mod=mod go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" "k8s.io/kubernetes/cmd/kubectl@$KUBE_VERSION" >&2
    mkdir -p out
    CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o out/ k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl >&2
  )
  mkdir -p "$kube_dir.tmp"
  mv "$work/out/kube-apiserver" "$work/out/kubectl" "$kube_dir.tmp/"
  rm -rf "$kube_dir"; mv "$kube_dir.tmp" "$kube_dir"
}

build_etcd() {
  if [[ -x $etcd_dir/etcd ]]; then return; fi
  log "building etcd $ETCD_VERSION (cold: ~2 min)"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  printf 'module holdfast.local/etcdbuild\n\ngo 1.23\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$work/go.mod"
  (
    cd "$work"
    GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
    mkdir -p out
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o out/etcd go.etcd.io/etcd/server/v3 >&2
  )
  mkdir -p "$etcd_dir.tmp"
  mv "$work/out/etcd" "$etcd_dir.tmp/"
  rm -rf "$etcd_dir"; mv "$etcd_dir.tmp" "$etcd_dir"
}

build_etcd
build_kube
# The starter finds the binaries through these two lines.
echo "KUBE_BIN_DIR=$kube_dir"
echo "ETCD_BIN_DIR=$etcd_dir"
