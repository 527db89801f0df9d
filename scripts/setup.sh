#!/usr/bin/env bash
# Installs what the full build and test suite need on a fresh machine of this kind
# (Debian, run as root, no prompts). Idempotent: does nothing when all is present.
#   protoc       (protobuf-compiler, libprotobuf-dev) to build the etcd backend (feature `etcd`)
#   etcd         (etcd-server) started by the etcd tests on loopback ports
#   libzmq       (libzmq3-dev, pkg-config) for the libzmq peer of `dms bench --peers`
#                (feature `zmq` of dms-cli)
#   pyzmq        for the libzmq interop tests and the Python DMS peer
#   cargo-deny   for the supply-chain checks of scripts/test.sh (deny.toml); built from
#                crates.io (~3.5 min on 2 cores, once), pinned to a version that builds
#                with the stable toolchain
set -euo pipefail

missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
# etcd-client's build also needs protobuf's well-known .proto files.
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -f /usr/include/zmq.h ] || missing+=(libzmq3-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY=${DMS_PYTHON:-python3}
if ! "$PY" -c 'import zmq' 2>/dev/null; then
  echo "installing pyzmq for $PY" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore pyzmq
fi

CARGO_DENY_VERSION=0.20.2
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "installing cargo-deny $CARGO_DENY_VERSION (cargo install, from crates.io)" >&2
  cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --quiet
fi
