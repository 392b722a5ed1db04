#!/usr/bin/env bash
# What authentication costs (issue 12's bar: under 10%): wrk (64 connections) against
# GET /api/models/{id}/status on two release servers started side by side, one keyless on
# loopback, one requiring a key (rate limit off so it measures checking, not refusing),
# measured alternately, REPS rounds of SECONDS each. Needs wrk (apt-get install wrk).
#   benches/security/auth_overhead.sh [path/to/trainyard]
set -euo pipefail
BIN="${1:-target/release/trainyard}"
REPS="${REPS:-3}"
SECONDS_EACH="${SECONDS_EACH:-8}"
DATA="$(mktemp -d)"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT

start() { # name port [extra args...]
  local name=$1 port=$2
  shift 2
  "$BIN" serve --addr "127.0.0.1:$port" --data-dir "$DATA/$name" --workers 1 --rate-limit-per-minute 0 "$@" \
    > /dev/null 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf "localhost:$port/health" > /dev/null && break; sleep 0.1; done
}
model() { # port [auth header]
  curl -s "localhost:$1/api/models" -H 'content-type: application/json' ${2:+-H "$2"} \
    -d '{"name":"m","dataset":"iris","algorithm":"mlp","hyperparameters":{"epochs":3}}' |
    python3 -c "import json,sys; print(json.load(sys.stdin)['id'])"
}
command -v wrk > /dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
KEY="$("$BIN" keys --data-dir "$DATA/on" create --project default --role viewer --name bench)"
start off 18091
start on 18092
AUTH="authorization: Bearer $KEY"
OFF_ID=$(model 18091)
EDITOR="$("$BIN" keys --data-dir "$DATA/on" create --project default --role editor --name bench-editor)"
ON_ID=$(model 18092 "authorization: Bearer $EDITOR")
[ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:18092/api/models/$ON_ID/status")" = 401 ] ||
  { echo "the keyed server answered without a key" >&2; exit 1; }

measure() { # url [header]
  wrk -t2 -c64 -d"${SECONDS_EACH}s" --latency ${2:+-H "$2"} "$1" |
    awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} END {print rps, p99}'
}
echo "round  auth   requests/s  p99"
for r in $(seq "$REPS"); do
  echo "$r      off    $(measure "http://127.0.0.1:18091/api/models/$OFF_ID/status")"
  echo "$r      on     $(measure "http://127.0.0.1:18092/api/models/$ON_ID/status" "$AUTH")"
done | tee "$DATA/rounds"
python3 - "$DATA/rounds" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
off = [float(r[2]) for r in rows if r[1] == "off"]
on = [float(r[2]) for r in rows if r[1] == "on"]
p_off = [ms(r[3]) for r in rows if r[1] == "off"]
p_on = [ms(r[3]) for r in rows if r[1] == "on"]
print(f"median requests/s: off {statistics.median(off):.0f}, on {statistics.median(on):.0f}; "
      f"auth costs {100 * (1 - statistics.median(on) / statistics.median(off)):.1f}% of throughput")
print(f"median p99: off {statistics.median(p_off):.2f} ms, on {statistics.median(p_on):.2f} ms")
PY
