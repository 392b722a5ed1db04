"""A minimal HTTP and SSE client for the benchmark scripts (standard library only)."""
import http.client
import json
import time
import urllib.request


def listening(process):
    """Reads `trainyard serve`'s stdout until it says where it listens."""
    while True:
        line = process.stdout.readline()
        if not line:
            raise SystemExit("the server exited before listening")
        if line.startswith("trainyard listening on "):
            return line.split()[-1]


def call(base, method, path, body=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                 method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


def stream(base, model_id, on_event):
    """Follows a model's SSE stream until the server ends it, calling on_event(event, now_ms)."""
    conn = http.client.HTTPConnection(base.split("//")[1])
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
