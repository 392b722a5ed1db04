#!/usr/bin/env bash
# Issue 8 measurement; TRAINYARD_BIN picks the binary (default: the release build).
set -e
D=$(mktemp -d); BIN="${TRAINYARD_BIN:-target/release/trainyard}"
TRAINYARD_LOG=warn $BIN serve --addr 127.0.0.1:18090 --data-dir $D --compact-events-after-seconds 10 > $D/out 2>&1 &
S=$!; sleep 2
ID=$(curl -s -X POST localhost:18090/api/models -H 'content-type: application/json' -d '{"name":"long","dataset":"iris","algorithm":"mlp","hyperparameters":{"epochs":1000}}' | python3 -c "import json,sys;print(json.load(sys.stdin)['id'])")
curl -s -X POST localhost:18090/api/models/$ID/train > /dev/null
while [ "$(curl -s localhost:18090/api/models/$ID/status | python3 -c "import json,sys;print(json.load(sys.stdin)['status'])")" != completed ]; do sleep 0.5; done
count() { python3 - "$D/trainyard.db" <<'PY'
import sqlite3,sys
c=sqlite3.connect(sys.argv[1])
rows=c.execute("select kind,count(*),sum(length(data)) from events group by kind").fetchall()
tot=sum(r[1] for r in rows); b=sum(r[2] for r in rows)
print(rows, "total", tot, "rows", b, "bytes of data")
PY
}
echo "right after completion:"; count
sleep 25
echo "after compaction:"; count
kill $S; wait $S || true
