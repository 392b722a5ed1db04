#!/usr/bin/env python3
"""End-to-end throughput of N one-second jobs with 1, 2 and 4 worker processes (release build):
`serve --workers 0` plus W `trainyard worker` processes on one data directory. Each job is an
iris MLP whose epoch count is calibrated to about one second of training on this machine.
Usage: benches/scaleout/throughput.py [path/to/trainyard] [jobs, default 200] [database URL]"""
import os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import streams_client as client  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/trainyard"
JOBS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
DB = sys.argv[3] if len(sys.argv) > 3 else None


def start(workers):
    data = tempfile.mkdtemp()
    db = ["--database-url", DB] if DB else []
    api = subprocess.Popen([BIN, "serve", "--addr", "127.0.0.1:0", "--workers", "0", "--data-dir", data, *db],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    base = client.listening(api)
    procs = [subprocess.Popen([BIN, "worker", "--data-dir", data, "--slots", "1", *db],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(workers)]
    for p in procs:
        assert "ready" in p.stdout.readline()
    return api, procs, base


def stop(api, procs):
    for p in procs + [api]:
        p.terminate()
        p.wait()


def wait_done(base, ids):
    for i in ids:
        while client.call(base, "GET", f"/api/models/{i}/status")["status"] not in ("completed", "failed"):
            time.sleep(0.05)


def run(base, n, epochs, tag):
    ids = [client.call(base, "POST", "/api/models", {"name": f"{tag}{i}", "dataset": "iris", "algorithm": "mlp",
                                                     "hyperparameters": {"epochs": epochs}})["id"] for i in range(n)]
    started = time.time()
    for i in ids:
        client.call(base, "POST", f"/api/models/{i}/train")
    wait_done(base, ids)
    return time.time() - started


api, procs, base = start(1)
probe = run(base, 1, 400, "probe")
epochs = max(1, int(400 / probe))
one = run(base, 1, epochs, "one")
stop(api, procs)
print(f"one job: {epochs} iris MLP epochs, {one:.2f} s end to end with one idle worker")
for workers in (1, 2, 4):
    if DB:
        print("(reset the database between rounds yourself when using PostgreSQL)")
    api, procs, base = start(workers)
    seconds = run(base, JOBS, epochs, f"w{workers}-")
    stop(api, procs)
    print(f"{workers} worker process(es): {JOBS} jobs in {seconds:.1f} s = {JOBS / seconds:.2f} jobs/s")
