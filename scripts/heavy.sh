#!/usr/bin/env bash
# The heavier tiers (docs/RELIABILITY.md §4): checks slower than scripts/test.sh (which CI
# runs), run by hand, before touching unsafe code or a release, not on every submission.
# One command each:
#
#   bash scripts/heavy.sh miri                  miri over the shm ring's unsafe code
#   bash scripts/heavy.sh fuzz [SECONDS]        every fuzz target, SECONDS each (600)
#   bash scripts/heavy.sh soak [SECONDS]        the L9 soak, SECONDS long (3600)
#   bash scripts/heavy.sh l3 [SECONDS]          the L3 fan-in of 1,000 peers (600)
#   bash scripts/heavy.sh netns                 F3 in network namespaces (root)
#   bash scripts/heavy.sh all                   all five, with the defaults
#
# Each prints its figures and exits non-zero when its check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

need_nightly() {
  if ! rustup +nightly --version >/dev/null 2>&1; then
    echo "heavy.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
  fi
}

# Miri over the shared-memory ring's unit tests (dms-transport-shm ring::tests: the
# unsafe copies in and out of the ring, the header behind raw pointers), under Stacked
# Borrows then Tree Borrows. ~1 min from cold (the miri sysroot and the crate's
# dependencies built for miri) plus the nightly component install; seconds once built.
miri() {
  need_nightly
  rustup +nightly component add miri rust-src
  cargo +nightly miri test -p dms-transport-shm --lib --locked ring::tests
  MIRIFLAGS="-Zmiri-tree-borrows" cargo +nightly miri test -p dms-transport-shm --lib --locked ring::tests
}

# libFuzzer on every target of fuzz/fuzz_targets for SECONDS each, with the limits of
# RELIABILITY B1. New inputs go to target/heavy/fuzz/corpus/TARGET (the committed seeds in
# fuzz/corpus/TARGET are read, never written); a crash, OOM or timeout leaves its input in
# target/heavy/fuzz/artifacts/TARGET/ and fails the run.
fuzz() {
  local secs="${1:-600}"
  need_nightly
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
  fi
  local work=target/heavy/fuzz
  mkdir -p "$work"
  local failed=() summary=() t log cpu
  # Build every target first, so that the CPU time below is the fuzzing's alone.
  cargo +nightly fuzz build
  for src in fuzz/fuzz_targets/*.rs; do
    t=$(basename "$src" .rs)
    log="$work/$t.log"
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
    echo "heavy.sh fuzz: $t for $secs s (log $log)"
    local status=0 t0=$SECONDS
    local times_file="$work/$t.time"
    { TIMEFORMAT='%U %S'; time cargo +nightly fuzz run "$t" "$work/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=64 -timeout=1 \
        -artifact_prefix="$work/artifacts/$t/" >"$log" 2>&1; } 2>"$times_file" || status=$?
    cpu=$(awk '{printf "%.0f", $1 + $2}' "$times_file" 2>/dev/null || echo "?")
    local done_line execs cov corpus
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    [[ -n "$done_line" ]] || done_line=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    execs=$(sed -E 's/^#([0-9]+).*/\1/' <<<"$done_line")
    cov=$(grep -oE 'cov: [0-9]+' <<<"$done_line" | head -1 | grep -oE '[0-9]+' || true)
    corpus=$(grep -oE 'corp: [0-9]+' <<<"$done_line" | head -1 | grep -oE '[0-9]+' || true)
    local rate=""
    if [[ "$execs" =~ ^[0-9]+$ ]]; then
      rate=$(awk -v e="$execs" -v s="$secs" 'BEGIN {printf "%.0f", e / s}')
    fi
    local line="$t: ${execs:-?} execs (${rate:-?}/s), ${cov:-?} edges, corpus ${corpus:-?} inputs, CPU ${cpu} s, wall $((SECONDS - t0)) s"
    if ((status != 0)); then
      line="$line: FAILED (exit $status; see $log and $work/artifacts/$t/)"
      failed+=("$t")
    fi
    echo "heavy.sh fuzz: $line"
    summary+=("$line")
  done
  echo "fuzz figures ($secs s per target, -rss_limit_mb=512 -malloc_limit_mb=64 -timeout=1):"
  printf '  %s\n' "${summary[@]}"
  if ((${#failed[@]} > 0)); then
    echo "heavy.sh fuzz: crashes, OOMs or timeouts in: ${failed[*]}" >&2
    return 1
  fi
}

# RELIABILITY L9: two nodes over TCP for SECONDS with requests, notifications,
# broadcasts and a client restarted every 10 s; asserts no failure, RSS growth after the
# warm-up < 10 MiB, descriptors and tokio tasks back at their baseline; prints a
# `soak figures` line (dms/tests/soak.rs).
soak() {
  local secs="${1:-3600}"
  DMS_SOAK_SECS="$secs" cargo test --release -p dms --test soak -- --ignored --nocapture
}

# L3 at its full length: 1,000 peers of a generator process fan in to one TCP ROUTER at
# 10 messages of 256 B a second each, for SECONDS (the PR tier runs 60): every message in
# order, RSS flat, nothing left (dms-transport-tcp tests/load_smoke.rs).
l3() {
  local secs="${1:-600}"
  DMS_L3_SECONDS="$secs" cargo test --release -p dms-transport-tcp --test load_smoke \
    --locked -- --nocapture l3_
}

# RELIABILITY F3, nightly variant: a half-open link made with nftables (or iptables) in
# network namespaces, detection time asserted against the heartbeat bound.
netns() {
  bash scripts/netns-f3.sh
}

cmd="${1:-}"
[[ -n "$cmd" ]] || usage
shift
case "$cmd" in
  miri) miri "$@" ;;
  fuzz) fuzz "$@" ;;
  soak) soak "$@" ;;
  l3) l3 "$@" ;;
  netns) netns "$@" ;;
  all)
    failed=()
    for step in miri fuzz soak l3 netns; do
      echo "=== heavy.sh $step"
      "$step" || failed+=("$step")
    done
    if ((${#failed[@]} > 0)); then
      echo "heavy.sh all: failed: ${failed[*]}" >&2
      exit 1
    fi
    echo "heavy.sh all: miri, fuzz, soak, l3 and netns passed"
    ;;
  -h | --help | help) usage ;;
  *)
    echo "heavy.sh: unknown command '$cmd'" >&2
    usage
    ;;
esac
