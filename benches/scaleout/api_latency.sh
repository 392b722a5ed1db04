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
curl -s -X POST "localhost:$PORT/api/models/$IDLE/train" -H "content-type: application/json" > /dev/null
sleep 2
echo "idle:"
wrk -t2 -c64 -d10s --latency "http://127.0.0.1:$PORT/api/models/$IDLE/status" | grep -E "Requests/sec|50%|99%"
BUSY=$(create '{"name":"busy","dataset":"mnist","algorithm":"mlp","hyperparameters":{"epochs":30}}')
curl -s -X POST "localhost:$PORT/api/models/$BUSY/train" -H "content-type: application/json" > /dev/null
sleep 3
echo "one training job ($(curl -s "localhost:$PORT/api/models/$BUSY/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['status'])")):"
wrk -t2 -c64 -d10s --latency "http://127.0.0.1:$PORT/api/models/$IDLE/status" | grep -E "Requests/sec|50%|99%"
