#!/usr/bin/env bash
# RELIABILITY F3, the nightly variant: a half-open TCP link made by the kernel, not by the
# fault proxy. Run by `bash scripts/heavy.sh netns` (root; installs iproute2, nftables and
# etcd-server with apt-get when missing).
#
# Two network namespaces joined by a veth pair:
#   dmsf3a (10.203.0.1): `dms node --echo` a-1
#   dmsf3b (10.203.0.2): etcd (on the veth address, so a-1 reaches it too), a second
#                        `dms node --echo` b-1, and `dms request` sending to the cluster
#                        every 20 ms (keys spread over a-1 and b-1)
# Then every packet on dmsf3a's veth is dropped (nftables, or iptables without nft): no FIN,
# no RST, both sockets stay open. The requester must declare a-1 lost by heartbeats within
# B = 3 x interval + interval/10 + 50 ms (plus DMS_F3_SLACK_MS, default 500 ms, for the log
# line and a loaded 2-core machine), a-1 must drop the requester by the READY timeout
# within the same bound, and requests must stop failing (they go to b-1). After the heal a
# request must reach a-1 again within the redial cap (5 s) + 5 s.
#
# Environment: DMS_BIN (default target/release/dms, built with `cargo build --release -p
# dms-cli --features etcd` when missing), DMS_F3_HEARTBEAT_MS (default 1000, the
# production default), DMS_F3_SLACK_MS (500).
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "netns-f3: $*" >&2
  exit 1
}

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces and nftables)"

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || command -v iptables >/dev/null || missing+=(nftables)
command -v etcd >/dev/null || missing+=(etcd-server)
if ((${#missing[@]} > 0)); then
  echo "netns-f3: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

DMS="${DMS_BIN:-target/release/dms}"
if [[ ! -x "$DMS" ]] || timeout 10 "$DMS" ls --discovery etcd://127.0.0.1:1 2>&1 | grep -q "without etcd support"; then
  cargo build --release -p dms-cli --features etcd
  DMS=target/release/dms
fi
DMS=$(readlink -f "$DMS")

HB_MS="${DMS_F3_HEARTBEAT_MS:-1000}"
SLACK_MS="${DMS_F3_SLACK_MS:-500}"
BOUND_MS=$((3 * HB_MS + HB_MS / 10 + 50))
NS_A=dmsf3a
NS_B=dmsf3b
IP_A=10.203.0.1
IP_B=10.203.0.2
ETCD="etcd://$IP_B:2379"
WORLD=/f3/ns/linux/w1/g1
CLUSTER="$WORLD/Echo"

work=$(mktemp -d /tmp/dms-netns-f3.XXXXXX)
pids=()
# Every process this script started runs inside one of its two namespaces (`ip netns pids`
# lists them); the background shells around them are in `pids`.
in_namespaces() { ip netns pids "$NS_A" 2>/dev/null || true; ip netns pids "$NS_B" 2>/dev/null || true; }
cleanup() {
  local pid
  for pid in $(in_namespaces) "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for _ in $(seq 20); do
    [[ -z "$(in_namespaces)" ]] && break
    sleep 0.1
  done
  for pid in $(in_namespaces); do
    kill -9 "$pid" 2>/dev/null || true
  done
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
  if [[ -z "${DMS_F3_KEEP:-}" ]]; then rm -rf "$work"; else echo "netns-f3: logs kept in $work"; fi
}
trap cleanup EXIT

# The namespaces, from scratch.
ip netns del "$NS_A" 2>/dev/null || true
ip netns del "$NS_B" 2>/dev/null || true
ip netns add "$NS_A" || die "cannot create network namespaces here"
ip netns add "$NS_B"
ip link add f3a netns "$NS_A" type veth peer name f3b netns "$NS_B"
ip -n "$NS_A" addr add "$IP_A/24" dev f3a
ip -n "$NS_B" addr add "$IP_B/24" dev f3b
for ns in "$NS_A" "$NS_B"; do
  ip -n "$ns" link set lo up
done
ip -n "$NS_A" link set f3a up
ip -n "$NS_B" link set f3b up

in_a() { ip netns exec "$NS_A" env NO_COLOR=1 "$@"; }
in_b() { ip netns exec "$NS_B" env NO_COLOR=1 "$@"; }
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }
# The microseconds since the epoch of a tracing log line (RFC 3339 UTC at its start).
log_us() { date -d "$(sed -E 's/\x1b\[[0-9;]*m//g' <<<"$1" | awk '{print $1}')" +%s%6N; }

# etcd in dmsf3b on the veth address.
in_b etcd --name f3 --data-dir "$work/etcd" \
  --listen-client-urls "http://$IP_B:2379" --advertise-client-urls "http://$IP_B:2379" \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster f3=http://127.0.0.1:2380 >"$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  in_a "$DMS" ls --discovery "$ETCD" >/dev/null 2>&1 && break
  sleep 0.2
done
in_a "$DMS" ls --discovery "$ETCD" >/dev/null || die "etcd unreachable from $NS_A (see $work/etcd.log)"

# The two echo nodes, then the requester.
in_a "$DMS" node --discovery "$ETCD" --service "$CLUSTER/a-1" --bind "tcp://$IP_A:0" --echo \
  --heartbeat-ms "$HB_MS" --lease-ttl-s 60 --log dms=info >"$work/a.out" 2>"$work/a.log" &
pids+=($!)
in_b "$DMS" node --discovery "$ETCD" --service "$CLUSTER/b-1" --bind "tcp://$IP_B:0" --echo \
  --heartbeat-ms "$HB_MS" --lease-ttl-s 60 --log dms=info >"$work/b.out" 2>"$work/b.log" &
pids+=($!)
for _ in $(seq 100); do
  [[ $(in_b "$DMS" ls --discovery "$ETCD" 2>/dev/null | grep -c -- '-1') -ge 2 ]] && break
  sleep 0.2
done
# Each reply or error line, stamped with the time it was printed (microseconds).
in_b "$DMS" request --discovery "$ETCD" --to "$CLUSTER" --count 100000 --interval-ms 20 \
  --timeout-ms 500 --heartbeat-ms "$HB_MS" --json --log dms=info 2>"$work/req.log" |
  while IFS= read -r line; do echo "${EPOCHREALTIME/[.,]/} $line"; done >"$work/req.ts" &
pids+=($!)

wait_for() { # seconds, description, command...
  local secs=$1 what=$2
  shift 2
  local until=$((SECONDS + secs))
  while ((SECONDS < until)); do
    "$@" && return 0
    sleep 0.05
  done
  die "timed out after ${secs} s waiting for $what (logs: DMS_F3_KEEP=1)"
}
replies_from_a_after() { awk -v t="$1" '$1 > t && /"instance":"[^"]*a-1"/' "$work/req.ts" | grep -q .; }
start=$(now_us)
wait_for 20 "replies from a-1" replies_from_a_after "$start"
sleep 2

# The cut: every packet in and out of dmsf3a's veth dropped, silently.
if command -v nft >/dev/null; then
  tool=nft
  cut() {
    in_a nft -f - <<'EOF'
table inet dmsf3 {
  chain in { type filter hook input priority 0; policy accept; iifname "f3a" drop; }
  chain out { type filter hook output priority 0; policy accept; oifname "f3a" drop; }
}
EOF
  }
  heal() { in_a nft delete table inet dmsf3; }
else
  tool=iptables
  cut() {
    in_a iptables -I INPUT -i f3a -j DROP
    in_a iptables -I OUTPUT -o f3a -j DROP
  }
  heal() {
    in_a iptables -D INPUT -i f3a -j DROP
    in_a iptables -D OUTPUT -o f3a -j DROP
  }
fi
lost_a_at_requester() { grep "peer lost" "$work/req.log" | grep -q "a-1"; }
lost_at_a() { grep -q "peer lost" "$work/a.log"; }
t_cut=$(now_us)
cut
wait_for $(((BOUND_MS + SLACK_MS) / 1000 + 10)) "the requester to lose a-1" lost_a_at_requester
wait_for 10 "a-1 to lose the requester" lost_at_a
sleep 1
t_req=$(log_us "$(grep "peer lost" "$work/req.log" | grep "a-1" | head -1)")
t_a=$(log_us "$(grep "peer lost" "$work/a.log" | head -1)")
det_req=$(((t_req - t_cut) / 1000))
det_a=$(((t_a - t_cut) / 1000))
# Requests that failed during the cut, and when the last one failed.
read -r failed last_fail < <(awk -v t="$t_cut" '$1 > t && /"error"/ {n++; last=$1} END {printf "%d %.0f\n", n, last}' "$work/req.ts")
failover_ms=$(((last_fail > 0 ? last_fail - t_cut : 0) / 1000))
answered_b=$(awk -v t="$t_cut" '$1 > t && /"instance":"[^"]*b-1"/' "$work/req.ts" | wc -l)

t_heal=$(now_us)
heal
wait_for 15 "a reply from a-1 after the heal" replies_from_a_after "$t_heal"
t_back=$(awk -v t="$t_heal" '$1 > t && /"instance":"[^"]*a-1"/ {print $1; exit}' "$work/req.ts")
back_ms=$(((t_back - t_heal) / 1000))

echo "F3 netns figures: $tool drop on the veth of $NS_A, heartbeat ${HB_MS} ms x 3 (B = ${BOUND_MS} ms):" \
  "requester declared a-1 lost after ${det_req} ms, a-1 dropped the requester after ${det_a} ms;" \
  "${failed} requests failed during the cut (500 ms timeouts, the last ${failover_ms} ms after the cut)," \
  "${answered_b} answered by b-1 meanwhile; after the heal a-1 answered again after ${back_ms} ms"
ok=1
for d in "$det_req" "$det_a"; do
  if ((d > BOUND_MS + SLACK_MS)); then
    echo "netns-f3: detection ${d} ms is over the bound ${BOUND_MS} ms + ${SLACK_MS} ms slack" >&2
    ok=0
  fi
  if ((d < 2 * HB_MS)); then
    echo "netns-f3: detection ${d} ms is under (missed - 1) x interval = $((2 * HB_MS)) ms: a false positive" >&2
    ok=0
  fi
done
if ((failover_ms > BOUND_MS + SLACK_MS + 500)); then
  echo "netns-f3: requests still failed ${failover_ms} ms after the cut" >&2
  ok=0
fi
((ok == 1)) || exit 1
echo "netns-f3: passed"
