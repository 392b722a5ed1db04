#!/usr/bin/env python3
"""Training in a worker process (release build): `serve --workers 0` plus one `trainyard worker`
on the same data directory.
1. delay from an epoch ending in the worker process to its SSE event reaching a subscriber of
   the API process (the API tails the shared event log),
2. queue latency: from `POST /train` returning to the run's `training` status reaching the
   subscriber, with the worker idle.
Usage: benches/scaleout/worker_events.py [path/to/trainyard]"""
import os, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/trainyard"
import streams_client as client  # noqa: E402

data = tempfile.mkdtemp()
api = subprocess.Popen([BIN, "serve", "--addr", "127.0.0.1:0", "--workers", "0", "--data-dir", data],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
base = client.listening(api)
worker = subprocess.Popen([BIN, "worker", "--data-dir", data, "--slots", "1"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
assert "ready" in worker.stdout.readline()

def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]

# 1. epoch end in the worker -> subscriber of the API
m = client.call(base, "POST", "/api/models", {"name": "d", "dataset": "california_housing", "algorithm": "mlp", "hyperparameters": {"epochs": 150}})
delays = []
def on_event(e, now):
    if e["type"] == "epoch":
        delays.append(now - e["data"]["emitted_at_ms"])
t = threading.Thread(target=client.stream, args=(base, m["id"], on_event)); t.start()
time.sleep(0.2)
client.call(base, "POST", f"/api/models/{m['id']}/train")
t.join()
print(f"worker epoch end -> API subscriber ({len(delays)} epochs): p50 {statistics.median(delays):.1f} ms, "
      f"p99 {pct(delays, 0.99):.1f} ms, max {max(delays):.1f} ms")

# 2. queue latency with an idle worker
latencies = []
for i in range(20):
    m = client.call(base, "POST", "/api/models", {"name": f"q{i}", "dataset": "iris", "algorithm": "mlp", "hyperparameters": {"epochs": 1}})
    seen = {}
    def on_status(e, now, seen=seen):
        if e["type"] == "status" and e["data"]["status"] == "training" and "at" not in seen:
            seen["at"] = now
    t = threading.Thread(target=client.stream, args=(base, m["id"], on_status)); t.start()
    time.sleep(0.1)
    posted = time.time() * 1000
    client.call(base, "POST", f"/api/models/{m['id']}/train")
    t.join()
    latencies.append(seen["at"] - posted)
print(f"queue latency POST /train -> training seen by a subscriber ({len(latencies)} runs): "
      f"p50 {statistics.median(latencies):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms")
worker.terminate(); worker.wait()
api.terminate(); api.wait()
