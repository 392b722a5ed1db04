#!/usr/bin/env python3
"""Streaming benchmarks on loopback (release build):
1. delay from an epoch ending (the training thread emitting it) to its SSE event reaching a subscriber,
2. events/s one server fans out to 50 concurrent SSE subscribers of one run.
Usage: benches/streams.py [path/to/trainyard]"""
import os, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(__file__))
from streams_client import call, listening, stream  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/trainyard"

def start():
    p = subprocess.Popen([BIN, "serve", "--addr", "127.0.0.1:0", "--data-dir", tempfile.mkdtemp()],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return p, listening(p)

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
