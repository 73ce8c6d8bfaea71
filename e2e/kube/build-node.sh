#!/usr/bin/env bash
# Builds what a real single-node cluster needs besides kube-apiserver, kubectl and etcd
# (build.sh): kubelet, kube-controller-manager, kube-scheduler and kube-proxy from the Go module
# proxy, a CoreDNS with only the plugins cluster DNS needs, and crictl (to remove pod sandboxes
# on teardown), into Holdfast's binary cache; and installs containerd, runc, the CNI plugins,
# iptables, conntrack and skopeo from Debian when they are missing. Prints where everything is.
# Idempotent: what is built already is reused.
#
#   HOLDFAST_CACHE_DIR  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/holdfast)
#   KUBE_VERSION        Kubernetes version (default v1.34.4)
#   COREDNS_VERSION     CoreDNS version (default v1.12.4)
#   CRICTL_VERSION      cri-tools version (default v1.34.0)
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.34.4}
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.4}
CRICTL_VERSION=${CRICTL_VERSION:-v1.34.0}
cache=${HOLDFAST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/holdfast}
node_dir=$cache/node-$KUBE_VERSION
coredns_dir=$cache/coredns-$COREDNS_VERSION
crictl_dir=$cache/crictl-$CRICTL_VERSION
mkdir -p "$cache"
log() { echo "kube/build-node.sh: $*" >&2; }

exec 9>"$cache/.build-node.lock"
flock 9

packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || [[ -x /usr/sbin/runc ]] || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v skopeo >/dev/null || missing+=(skopeo) # what the image tests push with
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]} from Debian"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

build_node() {
  local cmds="kubelet kube-controller-manager kube-scheduler kube-proxy" c ok=1
  for c in $cmds; do [[ -x $node_dir/$c ]] || ok=0; done
  ((ok)) && return
  log "building $cmds $KUBE_VERSION (cold: ~4 min on 2 cores)"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  local gomod staging staging_version=v0.${KUBE_VERSION#v1.}
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging=$(grep -E '=> \./staging/' "$gomod" | awk '{print $1}')
  {
    echo "module holdfast.local/nodebuild"; echo; echo "go 1.24.0"; echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"; echo
    for m in $staging; do echo "replace $m => $m $staging_version"; done
  } >"$work/go.mod"
  local minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  (
    cd "$work"
    GOFLAGS=-mod=mod go get $(for c in $cmds; do echo "k8s.io/kubernetes/cmd/$c@$KUBE_VERSION"; done) >&2
    mkdir -p out
    for c in $cmds; do CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o out/ "k8s.io/kubernetes/cmd/$c" >&2; done
  )
  rm -rf "$node_dir.tmp"; mkdir -p "$node_dir.tmp"
  for c in $cmds; do mv "$work/out/$c" "$node_dir.tmp/"; done
  rm -rf "$node_dir"; mv "$node_dir.tmp" "$node_dir"
}

# CoreDNS with the plugins cluster DNS uses (the order is the Corefile's processing order), built
# the way CoreDNS documents for a custom plugin set: a main that sets the directives.
build_coredns() {
  [[ -x $coredns_dir/coredns ]] && return
  log "building CoreDNS $COREDNS_VERSION (errors, health, ready, kubernetes, cache, loop, forward)"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  cat >"$work/main.go" <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"errors", "health", "ready", "kubernetes", "cache", "loop", "forward"}
}

func main() { coremain.Run() }
GO
  printf 'module holdfast.local/corednsbuild\n\ngo 1.24.0\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" >"$work/go.mod"
  (
    cd "$work"
    GOFLAGS=-mod=mod go get "github.com/coredns/coredns@$COREDNS_VERSION" >&2
    GOFLAGS=-mod=mod go mod tidy >&2
    mkdir -p out
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o out/coredns . >&2
  )
  rm -rf "$coredns_dir.tmp"; mkdir -p "$coredns_dir.tmp"
  mv "$work/out/coredns" "$coredns_dir.tmp/"
  rm -rf "$coredns_dir"; mv "$coredns_dir.tmp" "$coredns_dir"
}

build_crictl() {
  [[ -x $crictl_dir/crictl ]] && return
  log "building crictl $CRICTL_VERSION"
  mkdir -p "$crictl_dir.tmp"
  GOBIN=$crictl_dir.tmp CGO_ENABLED=0 go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" >&2
  rm -rf "$crictl_dir"; mv "$crictl_dir.tmp" "$crictl_dir"
}

packages
build_node
build_coredns
build_crictl
echo "NODE_BIN_DIR=$node_dir"
echo "COREDNS=$coredns_dir/coredns"
echo "CRICTL=$crictl_dir/crictl"
