#!/usr/bin/env bash
# Server benchmarks on loopback: time from `trainyard serve` to ready, latency from
# POST /train to the run's `training` status with an idle worker, and GET status throughput
# with 64 concurrent clients (wrk). Usage: benches/server.sh [path/to/trainyard]
set -euo pipefail
BIN=${1:-target/release/trainyard}
PORT=${PORT:-18555}
BASE=http://127.0.0.1:$PORT
DIR=$(mktemp -d)
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
now_ms() { date +%s%3N; }

# 1. serve -> ready, median of 5 cold starts (fresh data dir each: includes creating the database)
starts=()
for i in 1 2 3 4 5; do
  d=$(mktemp -d)
  t0=$(now_ms)
  "$BIN" serve --addr 127.0.0.1:$PORT --data-dir "$d" >/dev/null 2>&1 &
  pid=$!
  until curl -sf $BASE/ready >/dev/null; do sleep 0.005; done
  starts+=($(( $(now_ms) - t0 )))
  kill -TERM $pid; wait $pid || true
  rm -rf "$d"
done
echo "serve -> ready (ms, 5 cold starts): ${starts[*]}"

"$BIN" serve --addr 127.0.0.1:$PORT --data-dir "$DIR" --workers 1 >/dev/null 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DIR"' EXIT
until curl -sf $BASE/ready >/dev/null; do sleep 0.01; done

# 2. POST /train -> status training, with an idle worker (20 runs)
lat=()
for i in $(seq 1 20); do
  id=$(curl -s -X POST $BASE/api/models -H 'content-type: application/json' \
    -d '{"name":"b","dataset":"iris","algorithm":"mlp","hyperparameters":{"epochs":400}}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
  t0=$(now_ms)
  curl -s -X POST $BASE/api/models/$id/train >/dev/null
  until curl -s $BASE/api/models/$id/status | grep -q '"status":"training"'; do :; done
  lat+=($(( $(now_ms) - t0 )))
  curl -s -X POST $BASE/api/models/$id/cancel >/dev/null
  until curl -s $BASE/api/models/$id/status | grep -q '"status":"cancelled"'; do sleep 0.01; done
done
sorted=($(printf '%s\n' "${lat[@]}" | sort -n))
echo "POST /train -> training (ms, 20 runs, includes curl polling): median ${sorted[10]}, min ${sorted[0]}, max ${sorted[19]}"

# 3. GET /api/models/{id}/status, 64 concurrent connections, 10 s
echo "GET status throughput (wrk -t2 -c64 -d10s):"
wrk -t2 -c64 -d10s $BASE/api/models/$id/status | grep -E 'Requests/sec|Latency|requests in'
