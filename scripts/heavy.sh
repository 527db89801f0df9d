#!/usr/bin/env bash
# Heavier checks than scripts/test.sh (which CI runs): run by hand before touching unsafe
# code, not on every submission.
set -euo pipefail
cd "$(dirname "$0")/.."

# Miri over the shared-memory ring's unit tests (dms-transport-shm ring::tests: the
# unsafe copies in and out of the ring, the header behind raw pointers), under Stacked
# Borrows then Tree Borrows. Here rather than in scripts/test.sh: ~1 min from cold (the
# miri sysroot and the crate's dependencies built for miri) plus the nightly component
# install; seconds once built. Needs the nightly toolchain (rustup).
if ! rustup +nightly --version >/dev/null 2>&1; then
  echo "heavy.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
rustup +nightly component add miri rust-src
cargo +nightly miri test -p dms-transport-shm --lib --locked ring::tests
MIRIFLAGS="-Zmiri-tree-borrows" cargo +nightly miri test -p dms-transport-shm --lib --locked ring::tests
