"""Issue 8 measurement: seconds from cancel to `cancelled` for a 100-tree forest, per dataset.
Usage: TRAINYARD_BIN=... python3 benches/hardening/forest_cancel.py california_housing mnist"""
import json, os, subprocess, tempfile, time, urllib.request, sys
d = tempfile.mkdtemp()
p = subprocess.Popen([os.environ.get("TRAINYARD_BIN", "target/release/trainyard"), "serve", "--addr", "127.0.0.1:18092", "--data-dir", d],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"TRAINYARD_LOG": "warn"})
time.sleep(2)
def req(method, path, body=None):
    r = urllib.request.Request("http://127.0.0.1:18092" + path, method=method,
        data=json.dumps(body).encode() if body is not None else None, headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(r))
for ds in sys.argv[1:]:
    m = req("POST", "/api/models", {"name": "f", "dataset": ds, "algorithm": "random_forest", "hyperparameters": {"n_estimators": 100}})
    req("POST", f"/api/models/{m['id']}/train", {})
    while req("GET", f"/api/models/{m['id']}/status")["progress"]["percent"] < 5: time.sleep(0.01)
    st = req("GET", f"/api/models/{m['id']}/status")
    t0 = time.time(); req("POST", f"/api/models/{m['id']}/cancel", {})
    while (s := req("GET", f"/api/models/{m['id']}/status"))["status"] != "cancelled": time.sleep(0.005)
    print(ds, "trees built at cancel ~%.0f%%" % st["progress"]["percent"], "cancel took %.3f s" % (time.time() - t0), "stopped at %.0f%%" % s["progress"]["percent"])
p.terminate(); p.wait()
