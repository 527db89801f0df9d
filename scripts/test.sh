#!/usr/bin/env bash
# The whole DMS test suite, on a fresh machine of this kind (run as root, no prompts).
# Installs what the tests need (scripts/setup.sh: protoc, etcd, pyzmq), then runs every
# test of the workspace, the doctests, and checks that the fuzz targets build on stable.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --locked --no-fail-fast
else
  cargo test --workspace --all-features --locked --no-fail-fast
fi
cargo test --doc --workspace --all-features --locked
# The kernel with each transport alone (the workspace run above has both compiled in).
cargo test -p dms --no-default-features --features tcp --locked
cargo test -p dms --no-default-features --features quic --locked
cargo build -p dms-fuzz --bins --locked
