#!/usr/bin/env python3
"""Recovery benchmarks against a real server on loopback (release build):
1. work lost to SIGKILL under the default checkpoint policy (time from the newest checkpoint to the kill),
2. graceful shutdown time with two running jobs,
3. checkpoint size for the MNIST mlp (write time is reported by `trainyard bench`).
Usage: benches/recovery.py [path/to/trainyard]"""
import json, os, random, signal, subprocess, sys, tempfile, time, urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/trainyard"

def start(data_dir, *extra):
    p = subprocess.Popen([BIN, "serve", "--addr", "127.0.0.1:0", "--data-dir", data_dir, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while True:
        line = p.stdout.readline()
        if line.startswith("trainyard listening on "):
            return p, line.split()[-1]

def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")

def wait_training(base, mid, min_epoch=0):
    while True:
        s = call(base, "GET", f"/api/models/{mid}/status")
        if s["status"] == "training" and s["progress"]["epoch"] >= min_epoch:
            return s
        time.sleep(0.02)

# 1. work lost to SIGKILL
losses = []
for trial in range(5):
    d = tempfile.mkdtemp()
    p, base = start(d)
    m = call(base, "POST", "/api/models", {"name": "k", "dataset": "mnist", "algorithm": "mlp", "hyperparameters": {"epochs": 20}})
    call(base, "POST", f"/api/models/{m['id']}/train")
    wait_training(base, m["id"], 1)
    time.sleep(random.uniform(0.2, 2.0))
    kill_ms = time.time() * 1000
    p.send_signal(signal.SIGKILL); p.wait()
    p, base = start(d, "--workers", "0")
    ck = call(base, "GET", f"/api/models/{m['id']}/checkpoints")["checkpoints"]
    newest = max(ck, key=lambda c: c["step"])
    import datetime
    t = datetime.datetime.fromisoformat(newest["created_at"].replace("Z", "+00:00")).timestamp() * 1000
    losses.append(kill_ms - t)
    size = newest["bytes"]
    p.send_signal(signal.SIGTERM); p.wait()
print(f"work lost to SIGKILL (ms since newest checkpoint, 5 kills at random times): {[round(x) for x in losses]}, max {max(losses):.0f}")
print(f"MNIST mlp (784-256-10, Adam) checkpoint size: {size / 1e6:.2f} MB")

# 2. graceful shutdown with two running jobs
times = []
for trial in range(3):
    d = tempfile.mkdtemp()
    p, base = start(d)
    ids = []
    for i in range(2):
        m = call(base, "POST", "/api/models", {"name": f"g{i}", "dataset": "mnist", "algorithm": "mlp", "hyperparameters": {"epochs": 20}})
        call(base, "POST", f"/api/models/{m['id']}/train")
        ids.append(m["id"])
    for i in ids:
        wait_training(base, i, 1)
    t0 = time.time()
    p.send_signal(signal.SIGTERM); code = p.wait()
    times.append((time.time() - t0) * 1000)
    assert code == 0, code
print(f"graceful shutdown with two running jobs (ms, 3 trials): {[round(x) for x in times]}")
