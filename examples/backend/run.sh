#!/usr/bin/env bash
# The example game backend on one machine, from scratch (Debian, as root, no prompts):
# installs what it needs (scripts/setup.sh: protoc and etcd among the rest), builds the
# example in release, starts etcd on a free loopback port with a temporary data dir,
# starts 2 Battle, 1 Club, 2 Trade, 2 Broker and 1 Lobby processes, plays PLAYERS
# players through them with the driver, prints what happens, and stops everything
# (nothing is left running, the data dir is removed). Exits with the driver's status:
# 0 when no request was lost, nothing failed unexpectedly and every match and trade
# stayed on one instance.
#
#   bash examples/backend/run.sh            # PLAYERS=40 by default
#   PLAYERS=101 bash examples/backend/run.sh
#
# DMS_CARGO_LOCK=FILE runs cargo under `flock FILE` (machines that share one build).
set -euo pipefail
cd "$(dirname "$0")/../.."

PLAYERS=${PLAYERS:-40}
say() { printf '== %s\n' "$*"; }

cargo_() {
  if [ -n "${DMS_CARGO_LOCK:-}" ]; then flock "$DMS_CARGO_LOCK" cargo "$@"; else cargo "$@"; fi
}

# Rust itself, if this machine has none (rustup, the stable toolchain).
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    say "installing Rust (rustup, stable)"
    command -v curl >/dev/null 2>&1 || {
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -q >/dev/null
      apt-get install -y -q --no-install-recommends curl ca-certificates >/dev/null
    }
    curl -sSf https://sh.rustup.rs | sh -s -- -y -q --profile minimal
  }
  export PATH="$HOME/.cargo/bin:$PATH"
fi
# What the repository's builds and tests need (protoc for the etcd backend, etcd).
bash scripts/setup.sh

say "building the example (release)"
cargo_ build --release --locked --quiet -p dms-example-backend
backend="${CARGO_TARGET_DIR:-target}/release/backend"

tmp=$(mktemp -d /tmp/dms-backend.XXXXXX)
pids=()
names=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    # A process that does not stop within 5 s is killed.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two free loopback ports for etcd (client, peer).
read -r client_port peer_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
etcd_url="http://127.0.0.1:$client_port"
say "starting etcd on 127.0.0.1:$client_port (data in $tmp/etcd.data)"
etcd --name backend --data-dir "$tmp/etcd.data" \
  --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "backend=http://127.0.0.1:$peer_port" >"$tmp/etcd.log" 2>&1 &
pids+=($!)
names+=(etcd)

healthy() {
  local answer
  answer=$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/127.0.0.1/$client_port" || exit 1
    printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    cat <&3
  ) || return 1
  [[ $answer == *'"health":"true"'* ]]
}
deadline=$((SECONDS + 20))
until healthy; do
  if ! kill -0 "${pids[0]}" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    echo "etcd did not become healthy:" >&2
    tail -20 "$tmp/etcd.log" >&2
    exit 1
  fi
  sleep 0.05
done
discovery="etcd://127.0.0.1:$client_port"

# start ROLE INSTANCE: one process, its output in $tmp/INSTANCE.log; waits for `ready`.
start() {
  local role=$1 instance=$2 log="$tmp/$2.log"
  "$backend" "$role" --discovery "$discovery" --instance "$instance" >"$log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  names+=("$instance")
  local deadline=$((SECONDS + 20))
  until grep -q '^ready ' "$log"; do
    if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      echo "$instance did not start:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.05
  done
  say "$role $instance: $(grep -m1 '^ready ' "$log" | cut -d' ' -f2-)"
}

say "starting the backend: 2 brokers, 2 Trade (linked to the brokers only), 2 Battle, 1 Club, 1 Lobby"
start broker broker-1
start broker broker-2
start trade trade-1
start trade trade-2
start battle battle-1
start battle battle-2
start club club-1
start lobby lobby-1

say "driver: $PLAYERS players"
set +e
"$backend" driver --discovery "$discovery" --instance driver-1 --players "$PLAYERS" \
  --battles 2 --trades 2 --brokers 2
driver_status=$?
set -e

say "stopping the backend (SIGTERM); what each process says as it stops:"
for i in "${!pids[@]}"; do
  [ "${names[$i]}" = etcd ] && continue
  kill -TERM "${pids[$i]}" 2>/dev/null || true
done
for i in "${!pids[@]}"; do
  [ "${names[$i]}" = etcd ] && continue
  wait "${pids[$i]}" 2>/dev/null || true
  grep -v '^ready ' "$tmp/${names[$i]}.log" | sed 's/^/   /' || true
done
say "done (driver exit status $driver_status)"
exit "$driver_status"
