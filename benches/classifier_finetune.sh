#!/usr/bin/env bash
# The text classifier against a bag-of-words logistic regression (issue 13), three ways on the
# same split of 5,000 lines from five plays: the default transformer_classifier from scratch
# (`trainyard bench --workload text_classify`), the peer (scikit-learn, benches/peers), and
# the classifier fine-tuned from the default transformer_lm pretrained on the corpus
# (`init_from`; the language model never sees a label). Prints each one's accuracy.
#   cargo build --release -p trainyard-cli && benches/classifier_finetune.sh
# FINETUNE='{"learning_rate": 3e-4}' adds hyperparameters to the fine-tuned classifier.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$(realpath "${TRAINYARD_BIN:-$TARGET/release/trainyard}")"
VENV="$TARGET/peers-venv"
command -v jq >/dev/null || { echo "needs jq (apt-get install jq)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || { echo "run benches/peers/run once first: it creates $VENV" >&2; exit 1; }
DIR=$(mktemp -d)
echo "from scratch (default transformer_classifier):"
"$BIN" bench --workload text_classify --export "$DIR/plays"
echo "peer:"
"$VENV/bin/python" "$ROOT/benches/peers/text_classify.py" "$DIR/plays"
cd "$DIR"
"$BIN" serve --addr 127.0.0.1:18081 --job-memory-mb 8000 > server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER' EXIT
until curl -sf localhost:18081/health >/dev/null; do sleep 0.5; done
H='content-type: application/json'
wait_done() { while true; do s=$(curl -s localhost:18081/api/models/$1/status); st=$(echo "$s" | jq -r .status); if [ "$st" = completed ] || [ "$st" = failed ]; then echo "$s"; return; fi; sleep 5; done; }
curl -sf -X POST 'localhost:18081/api/datasets?name=plays&task=text&target=play' \
  -H 'content-type: text/csv' --data-binary @plays/plays.csv | jq -c '{name, n_rows, classes}'
LM=$(curl -s localhost:18081/api/models -H "$H" -d '{"name":"bard","dataset":"shakespeare","algorithm":"transformer_lm"}' | jq -r .id)
curl -s -X POST localhost:18081/api/models/$LM/train -H "$H" >/dev/null
echo "pretraining the default transformer_lm:"
wait_done $LM | jq -c '{status, val_loss: .metrics.val_loss}'
HP=$(jq -nc --arg lm "$LM" --argjson extra "${FINETUNE:-{\}}" '{init_from: $lm} + $extra')
CLS=$(curl -s localhost:18081/api/models -H "$H" -d "{\"name\":\"plays\",\"dataset\":\"plays\",\"algorithm\":\"transformer_classifier\",\"hyperparameters\":$HP}" | jq -r .id)
curl -s -X POST localhost:18081/api/models/$CLS/train -H "$H" >/dev/null
echo "fine-tuned from it ($HP):"
wait_done $CLS | jq -c '{status, accuracy: .metrics.accuracy, macro_f1: .metrics.macro_f1, train_seconds: .metrics.train_seconds}'
curl -s localhost:18081/api/models/$CLS/metrics | jq -c '.epochs[] | {epoch, val_loss, accuracy}'
