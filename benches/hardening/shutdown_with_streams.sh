#!/usr/bin/env bash
# Issue 8 measurement; TRAINYARD_BIN picks the binary (default: the release build).

D=$(mktemp -d); BIN="${TRAINYARD_BIN:-target/release/trainyard}"
TRAINYARD_LOG=warn $BIN serve --addr 127.0.0.1:18091 --data-dir $D > $D/out 2>&1 &
S=$!; sleep 2
mk() { curl -s -X POST localhost:18091/api/models -H 'content-type: application/json' -d "{\"name\":\"$1\",\"dataset\":\"mnist\",\"algorithm\":\"mlp\",\"hyperparameters\":{\"epochs\":20}}" | python3 -c "import json,sys;print(json.load(sys.stdin)['id'])"; }
A=$(mk a); B=$(mk b)
curl -s -X POST localhost:18091/api/models/$A/train > /dev/null; curl -s -X POST localhost:18091/api/models/$B/train > /dev/null
sleep 6
curl -sN localhost:18091/api/models/$A/events > $D/sse1 & curl -sN localhost:18091/api/events > $D/sse2 &
python3 - <<PY &
import socket,base64,os
s=socket.create_connection(("127.0.0.1",18091))
key=base64.b64encode(os.urandom(16)).decode()
s.send(f"GET /api/models/$B/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
open("$D/ws","wb").write(s.recv(100))
while True:
    d=s.recv(65536)
    if not d: break
PY
sleep 2
T0=$(date +%s.%N); kill -TERM $S; wait $S; RC=$?; T1=$(date +%s.%N)
python3 -c "print('exit', $RC, 'after %.2f s' % ($T1-$T0))"
tail -c 300 $D/sse1; echo; grep -c shutdown $D/sse2
