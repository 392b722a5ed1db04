#!/usr/bin/env bash
# Memory estimate against the measured peak on every built-in workload (issue 10): each job
# trains in a worker process of a real server (one job at a time), then its final metrics give
# `memory_estimate_mb` (what the job was admitted with) and `memory_peak_mb` (the resident memory
# the job added to its process). Epochs and steps are capped so the whole run takes minutes; the
# peak is reached in the first epoch.
#   cargo build --release -p trainyard-cli && benches/memory_estimates.sh
#   ONLY=transformer_lm benches/memory_estimates.sh   # the rows whose label matches (grep -E)
set -euo pipefail
BIN="${TRAINYARD_BIN:-${CARGO_TARGET_DIR:-target}/release/trainyard}"
BIN="$(realpath "$BIN")"
PORT="${PORT:-18090}"
command -v jq >/dev/null || { echo "needs jq (apt-get install jq)" >&2; exit 1; }
DIR=$(mktemp -d); cd "$DIR"
"$BIN" serve --addr "127.0.0.1:$PORT" --workers 1 > server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER; wait $SERVER 2>/dev/null; rm -rf "$DIR"' EXIT
until curl -sf "localhost:$PORT/health" >/dev/null; do sleep 0.5; done
API="localhost:$PORT/api"
H='content-type: application/json'

# Trains one model and prints its row; LAST_ID is its id, for models that read it.
train() {
  local dataset=$1 algorithm=$2 hp=$3
  local body id status
  if [ -n "${ONLY:-}" ] && ! echo "$algorithm on $dataset $hp" | grep -qE "$ONLY"; then return 0; fi
  body=$(jq -nc --arg d "$dataset" --arg a "$algorithm" --argjson hp "$hp" \
    '{name: ($a + " on " + $d), dataset: $d, algorithm: $a, hyperparameters: $hp}')
  id=$(curl -sf "$API/models" -H "$H" -d "$body" | jq -r .id)
  curl -sf -X POST "$API/models/$id/train" -H "$H" >/dev/null
  while true; do
    status=$(curl -sf "$API/models/$id/status")
    case $(echo "$status" | jq -r .status) in
      completed) break ;;
      failed|cancelled) echo "$algorithm on $dataset: $(echo "$status" | jq -c .error)" >&2; return 1 ;;
    esac
    sleep 1
  done
  echo "$status" | jq -r --arg w "$algorithm on $dataset $hp" \
    '.metrics | [$w, .memory_estimate_mb, .memory_peak_mb,
      (if .memory_peak_mb > 0 then (.memory_estimate_mb / .memory_peak_mb * 100 | round / 100) else null end)]
     | @tsv'
  LAST_ID=$id
}

printf 'workload\testimate MB\tpeak MB\testimate/peak\n'
train iris mlp '{"epochs": 5}'
train wine_quality mlp '{"epochs": 5}'
train california_housing mlp '{"epochs": 2}'
train california_housing linear_regression '{"epochs": 2}'
train mnist logistic_regression '{"epochs": 1}'
train mnist mlp '{"epochs": 1}'
train mnist mlp '{"epochs": 1, "batch_size": 512}'
train mnist cnn '{"epochs": 1}'
train iris random_forest '{}'
train california_housing random_forest '{"n_estimators": 20}'
train shuttle isolation_forest '{}'
train shuttle ecod '{}'
train shuttle hbos '{}'
train shuttle half_space_trees '{}'
train shakespeare transformer_lm '{"max_steps": 200, "eval_interval": 100, "eval_batches": 20}'
LM=${LAST_ID:-}
# A longer context and a larger batch, with and without gradient checkpointing: its saving.
train shakespeare transformer_lm '{"max_steps": 20, "eval_interval": 20, "eval_batches": 2, "batch_size": 32, "block_size": 256}'
train shakespeare transformer_lm '{"max_steps": 20, "eval_interval": 20, "eval_batches": 2, "batch_size": 32, "block_size": 256, "gradient_checkpointing": true}'
# A wide network at batch 1: its parameters, and a checkpoint's copies of them, are its memory.
train shakespeare transformer_lm '{"max_steps": 20, "eval_interval": 10, "eval_batches": 2, "batch_size": 1, "n_embd": 384}'
train shakespeare sparse_autoencoder "$(jq -nc --arg lm "$LM" \
  '{source_model: $lm, max_steps: 200, log_interval: 100}')"
