#!/usr/bin/env bash
# What one training job costs the API (release build): wrk (64 connections, 10 s) against
# GET /api/models/{id}/status with the server idle, then while an MNIST MLP trains in its
# worker process. Needs wrk (apt-get install wrk).
#   benches/scaleout/api_latency.sh [path/to/trainyard]
set -euo pipefail
BIN="${1:-target/release/trainyard}"
PORT=18088
DATA="$(mktemp -d)"
"$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$DATA" > /dev/null 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf "localhost:$PORT/health" > /dev/null && break; sleep 0.1; done
create() {
  curl -s "localhost:$PORT/api/models" -H 'content-type: application/json' -d "$1" |
    python3 -c "import json,sys; print(json.load(sys.stdin)['id'])"
}
IDLE=$(create '{"name":"idle","dataset":"iris","algorithm":"mlp","hyperparameters":{"epochs":5}}')
status() {
  curl -s "localhost:$PORT/api/models/$1/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['status'])"
}
# Waits (up to a minute) until model $1's status is one of the rest.
wait_for() {
  local id="$1"; shift
  for _ in $(seq 600); do
    local now; now="$(status "$id")"
    for want in "$@"; do [ "$now" = "$want" ] && return 0; done
    sleep 0.1
  done
  echo "model $id never reached $* (it is $(status "$id")): see the server's log" >&2
  exit 1
}
curl -s -X POST "localhost:$PORT/api/models/$IDLE/train" -H "content-type: application/json" > /dev/null
wait_for "$IDLE" completed
echo "idle:"
wrk -t2 -c64 -d10s --latency "http://127.0.0.1:$PORT/api/models/$IDLE/status" | grep -E "Requests/sec|50%|99%"
BUSY=$(create '{"name":"busy","dataset":"mnist","algorithm":"mlp","hyperparameters":{"epochs":30}}')
curl -s -X POST "localhost:$PORT/api/models/$BUSY/train" -H "content-type: application/json" > /dev/null
wait_for "$BUSY" training
echo "one training job ($(status "$BUSY")):"
wrk -t2 -c64 -d10s --latency "http://127.0.0.1:$PORT/api/models/$IDLE/status" | grep -E "Requests/sec|50%|99%"
