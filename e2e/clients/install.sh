#!/usr/bin/env bash
# Installs the xDS client implementations the e2e tests drive besides grpc-go, pinned, and
# prints where they are. Idempotent: what is installed already is only checked.
#
#   gRPC for Node: @grpc/grpc-js + @grpc/grpc-js-xds, `npm ci` from the committed lockfile into
#                  $HOLDFAST_CACHE_DIR/node-xdsapp-<lockfile hash>/ (Debian's nodejs and npm are
#                  installed when the machine has no Node).
#   gRPC C-core:   Debian's python3-grpcio (1.51), used through /usr/bin/python3.
#
# Output, for the harness: NODE=..., NODE_PATH=..., PYTHON=...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${HOLDFAST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/holdfast}
mkdir -p "$cache"
log() { echo "clients/install.sh: $*" >&2; }

GRPC_CORE_VERSION=1.51   # what Debian bookworm serves; the tests record what they ran
PYTHON=/usr/bin/python3  # Debian's: its python3-grpcio is built for it, not for a pyenv python

exec 9>"$cache/.clients.lock"
flock 9

apt_install() {
  log "installing $* from Debian"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
  fi
}

# Node: the machine's own if it has one (>= 18), else Debian's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if (( node_major < 18 )); then
  log "Node.js >= 18 is needed for @grpc/grpc-js 1.14, found $(node --version)"
  exit 1
fi
lock_hash=$(cat "$here/node/package.json" "$here/node/package-lock.json" | sha256sum | cut -c1-16)
node_dir=$cache/node-xdsapp-$lock_hash
if [[ ! -f $node_dir/.complete ]]; then
  log "npm ci (@grpc/grpc-js, @grpc/grpc-js-xds) into $node_dir"
  rm -rf "$node_dir"
  tmp=$(mktemp -d "$cache/node-xdsapp.XXXXXX")
  cp "$here/node/package.json" "$here/node/package-lock.json" "$tmp/"
  # --ignore-scripts: nothing here needs an install script (protobufjs' only prints a warning).
  (cd "$tmp" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
  touch "$tmp/.complete"
  mv "$tmp" "$node_dir"
fi

# gRPC C-core through Debian's Python.
have_core() { "$PYTHON" -c "import grpc, sys; sys.exit(0 if grpc.__version__.startswith('$GRPC_CORE_VERSION.') else 1)" 2>/dev/null; }
if ! have_core; then
  apt_install python3 python3-grpcio
  if ! have_core; then
    log "python3-grpcio from Debian is not gRPC $GRPC_CORE_VERSION: $("$PYTHON" -c 'import grpc; print(grpc.__version__)' 2>&1)"
    exit 1
  fi
fi

echo "NODE=$(command -v node)"
echo "NODE_PATH=$node_dir/node_modules"
echo "PYTHON=$PYTHON"
