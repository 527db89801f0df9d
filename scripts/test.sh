#!/usr/bin/env bash
# The whole DMS test suite, on a fresh machine of this kind (run as root, no prompts).
# Installs what the tests need (scripts/setup.sh: protoc, etcd, pyzmq, cargo-deny), checks
# the supply chain (deny.toml), then runs every test of the workspace, the doctests, and
# checks that the fuzz targets build on stable.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Shared memory must leave nothing behind: /dev/shm is compared before and after the suite.
shm_before=$(ls -A /dev/shm 2>/dev/null | sort || true)

# Supply chain (docs/RELIABILITY.md, S7): licences, banned and wildcard versions, sources.
cargo deny --locked check bans licenses sources
# Advisories need the RustSec database from github.com; where that cannot be reached,
# say so and go on (the other checks above ran).
if GIT_TERMINAL_PROMPT=0 timeout 10 git ls-remote --quiet \
  https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  cargo deny --locked check advisories
else
  echo "cargo deny: advisories SKIPPED: github.com unreachable, the RustSec advisory DB" \
    "cannot be fetched (bans, licenses and sources were checked)" >&2
fi

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
# The shared-memory ring's protocol, model-checked by loom (dms-transport-shm/src/ring/
# loom_tests.rs: no byte lost or reordered, no data race, no lost wake-up). Its own target
# dir, as the cfg rebuilds every crate; ~55 s from cold (build ~50 s, models ~3 s at 3
# preemptions: ~0.3 s at 2, ~30 s at 4).
LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg dms_loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p dms-transport-shm --lib --release --locked -- loom

shm_after=$(ls -A /dev/shm 2>/dev/null | sort || true)
if [ "$shm_before" != "$shm_after" ]; then
  echo "left behind in /dev/shm by the suite:" >&2
  comm -13 <(echo "$shm_before") <(echo "$shm_after") >&2
  exit 1
fi
