#!/usr/bin/env bash
# A hand trial of issue 13's third finding (a resumed instance costing a request):
# three `dms node --echo` on a fresh etcd (heartbeat 100 ms), one requester sending to
# battle-2 every 20 ms; battle-2 is SIGSTOPped for 3 s, then SIGCONTed. Prints every
# error that came after the first answer following the resume (none expected) and how
# long that first answer took. REQ_HEARTBEAT_MS sets the requester's heartbeat (100;
# 1000 is the other variant tried). Needs etcd on PATH and a CLI built with etcd:
#   cargo build -p dms-cli --features etcd && bash scripts/sigcont-trial.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DMS=${DMS:-target/debug/dms}
D=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$D"' EXIT
PORT=$((20000 + RANDOM % 20000))
etcd --data-dir "$D/etcd" --listen-client-urls "http://127.0.0.1:$PORT" \
  --advertise-client-urls "http://127.0.0.1:$PORT" \
  --listen-peer-urls "http://127.0.0.1:$((PORT + 1))" >"$D/etcd.log" 2>&1 &
DISC=etcd://127.0.0.1:$PORT
C=/mp/cn/linux/w1/g1/Battle
until "$DMS" ls --discovery "$DISC" >/dev/null 2>&1; do sleep 0.1; done
PIDS=()
for i in 1 2 3; do
  "$DMS" node --discovery "$DISC" --service "$C/battle-$i" --echo --heartbeat-ms 100 \
    >"$D/n$i.out" 2>"$D/n$i.err" &
  PIDS+=($!)
done
until grep -q '^bucket' "$D/n2.out" 2>/dev/null; do sleep 0.1; done
"$DMS" request --discovery "$DISC" --to "$C/battle-2" --count 300 --interval-ms 20 \
  --timeout-ms 1000 --heartbeat-ms "${REQ_HEARTBEAT_MS:-100}" --json --data hi 2>"$D/req.err" |
  while read -r line; do echo "$(date +%s.%N) $line"; done >"$D/req.out" &
REQ=$!
sleep 1
kill -STOP "${PIDS[1]}"
sleep 3
kill -CONT "${PIDS[1]}"
date +%s.%N >"$D/cont"
wait "$REQ" || true  # requests failed during the freeze: expected
python3 - "$D" <<'PY'
import json, sys
d = sys.argv[1]
cont = float(open(d + "/cont").read())
first_ok = None
for line in open(d + "/req.out"):
    at, rest = line.split(" ", 1)
    at = float(at)
    try:
        reply = json.loads(rest)
    except ValueError:
        continue
    if at > cont and "error" not in reply and first_ok is None:
        first_ok = at
    if "error" in reply and first_ok is not None and at > first_ok:
        print(f"error {at - cont:.3f} s after SIGCONT: {reply['error']}")
print(f"first answer {(first_ok or cont) - cont:.3f} s after SIGCONT")
PY
