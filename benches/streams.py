#!/usr/bin/env python3
"""Streaming benchmarks on loopback (release build):
1. delay from an epoch ending (the training thread emitting it) to its SSE event reaching a subscriber,
2. events/s one server fans out to 50 concurrent SSE subscribers of one run.
Usage: benches/streams.py [path/to/trainyard]"""
import http.client, json, statistics, subprocess, sys, tempfile, threading, time, urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/trainyard"

def start():
    p = subprocess.Popen([BIN, "serve", "--addr", "127.0.0.1:0", "--data-dir", tempfile.mkdtemp()],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while True:
        line = p.stdout.readline()
        if line.startswith("trainyard listening on "):
            return p, line.split()[-1]

def call(base, method, path, body=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                 method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")

def stream(base, model_id, on_event):
    host = base.split("//")[1]
    conn = http.client.HTTPConnection(host)
    conn.request("GET", f"/api/models/{model_id}/events")
    resp = conn.getresponse()
    buf = b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            return
        buf += chunk
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    on_event(json.loads(line[5:]), time.time() * 1000)

p, base = start()
# 1. epoch-end -> subscriber delay
m = call(base, "POST", "/api/models", {"name": "d", "dataset": "california_housing", "algorithm": "mlp", "hyperparameters": {"epochs": 150}})
delays = []
def on_event(e, now):
    if e["type"] == "epoch":
        delays.append(now - e["data"]["emitted_at_ms"])
t = threading.Thread(target=stream, args=(base, m["id"], on_event)); t.start()
time.sleep(0.2)
call(base, "POST", f"/api/models/{m['id']}/train")
t.join()
delays.sort()
p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
print(f"epoch end -> subscriber ({len(delays)} epochs): median {statistics.median(delays):.1f} ms, p99 {p99:.1f} ms, max {delays[-1]:.1f} ms")

# 2. fan-out to 50 subscribers
m = call(base, "POST", "/api/models", {"name": "f", "dataset": "california_housing", "algorithm": "mlp", "hyperparameters": {"epochs": 200}})
counts = [0] * 50
first, last = [None], [0.0]
lock = threading.Lock()
def counter(i):
    def on(e, now):
        with lock:
            counts[i] += 1
            if first[0] is None: first[0] = now
            last[0] = max(last[0], now)
    return on
threads = [threading.Thread(target=stream, args=(base, m["id"], counter(i))) for i in range(50)]
for t in threads: t.start()
time.sleep(0.5)
call(base, "POST", f"/api/models/{m['id']}/train")
for t in threads: t.join()
total = sum(counts)
seconds = (last[0] - first[0]) / 1000
print(f"fan-out: {total} events to 50 subscribers ({counts[0]} each) in {seconds:.2f} s = {total / seconds:.0f} events/s delivered")
p.terminate(); p.wait()

# 3. fan-out capacity: 50 subscribers replaying a finished run's history at once
p, base = start()
m = call(base, "POST", "/api/models", {"name": "r", "dataset": "california_housing", "algorithm": "mlp", "hyperparameters": {"epochs": 300}})
call(base, "POST", f"/api/models/{m['id']}/train")
while call(base, "GET", f"/api/models/{m['id']}/status")["status"] != "completed":
    time.sleep(0.1)
counts = [0] * 50
threads = [threading.Thread(target=stream, args=(base, m["id"], counter(i))) for i in range(50)]
t0 = time.time()
for t in threads: t.start()
for t in threads: t.join()
seconds = time.time() - t0
print(f"replay fan-out: {sum(counts)} events to 50 subscribers in {seconds:.2f} s = {sum(counts) / seconds:.0f} events/s (Python client-bound)")
p.terminate(); p.wait()
