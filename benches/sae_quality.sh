#!/usr/bin/env bash
# Sparse-autoencoder quality on the default Shakespeare language model (issue 14): trains the
# default transformer_lm (about 5 minutes), then on 2M tokens of its layer-2 residual stream
# topk (k 32, x8, resampling on) and relu (target_l0 32), printing final metrics, the curve
# per evaluation, the most frequent features and the strongest feature's contexts.
#   cargo build --release -p trainyard-cli && benches/sae_quality.sh
set -euo pipefail
BIN="${TRAINYARD_BIN:-${CARGO_TARGET_DIR:-target}/release/trainyard}"
BIN="$(realpath "$BIN")"
command -v jq >/dev/null || { echo "needs jq (apt-get install jq)" >&2; exit 1; }
DIR=$(mktemp -d); cd "$DIR"
$BIN serve --addr 127.0.0.1:18080 --job-memory-mb 8000 > server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER' EXIT
until curl -sf localhost:18080/health >/dev/null; do sleep 0.5; done
H='content-type: application/json'
wait_done() { while true; do s=$(curl -s localhost:18080/api/models/$1/status); st=$(echo "$s" | jq -r .status); if [ "$st" = completed ] || [ "$st" = failed ]; then echo "$s"; return; fi; sleep 5; done; }
LM=$(curl -s localhost:18080/api/models -H "$H" -d '{"name":"bard","dataset":"shakespeare","algorithm":"transformer_lm"}' | jq -r .id)
curl -s -X POST localhost:18080/api/models/$LM/train -H "$H" >/dev/null
date; wait_done $LM | jq -c '{status, metrics: {val_loss: .metrics.val_loss, tokens_per_second: .metrics.tokens_per_second}}'; date
for ARCH in topk relu; do
  if [ $ARCH = topk ]; then HP='{"architecture":"topk","k":32,"expansion_factor":8,"resample_dead":true}'; else HP='{"architecture":"relu","target_l0":32,"expansion_factor":8}'; fi
  BODY=$(jq -nc --arg lm "$LM" --argjson hp "$HP" '{name:"sae",dataset:"shakespeare",algorithm:"sparse_autoencoder",hyperparameters:($hp + {source_model:$lm, layers:[2], n_tokens:2000000, total_tokens:2000000})}')
  SAE=$(curl -s localhost:18080/api/models -H "$H" -d "$BODY" | jq -r .id)
  curl -s -X POST localhost:18080/api/models/$SAE/train -H "$H" >/dev/null
  date; wait_done $SAE | jq -c '.status, .metrics'; date
  curl -s localhost:18080/api/models/$SAE/metrics | jq -c '.epochs[] | {epoch, l0: .["layer2.l0"], ev: .["layer2.val_explained_variance"], dead: .["layer2.dead_latents"], l1: .["layer2.l1_coefficient"]}'
  curl -s "localhost:18080/api/models/$SAE/features?sort=frequency&limit=3" | jq -c .
  TOP=$(curl -s "localhost:18080/api/models/$SAE/features?sort=max_activation&limit=1" | jq -r '.items[0].index')
  curl -s "localhost:18080/api/models/$SAE/features/$TOP" | jq -c '{index, frequency, top_contexts: .top_contexts[:3], promoted: [.promoted_tokens[:5][].token]}'
done
