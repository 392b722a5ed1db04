"""Pairs Trainyard's and the peers' JSON lines by workload and prints medians, spreads and
ratios (above 1: Trainyard ahead).

    python table.py trainyard.jsonl peer.jsonl [--json]
"""
import json
import statistics
import sys

# metric -> kind: a time (lower is better), a rate or a quality (higher is better)
METRICS = {
    "fit_seconds": "time", "score_seconds": "time", "fit_and_score_seconds": "time",
    "rows_per_second": "rate", "roc_auc": "quality", "precision_at_n": "quality",
    "samples_per_second": "rate", "tokens_per_second": "rate", "train_seconds": "time",
    "val_loss": "time",  # lower is better, like a time
    "accuracy": "quality", "r2": "quality", "macro_f1": "quality", "steps_per_second": "rate",
    "run_steps_per_second": "rate", "matmul_gflops": "rate", "products_per_second": "rate",
}


def main(ours_path, peer_path, mode):
    ours = [json.loads(line) for line in open(ours_path)]
    peer = [json.loads(line) for line in open(peer_path)]
    for r in ours + peer:
        if "fit_seconds" in r:
            r["fit_and_score_seconds"] = r["fit_seconds"] + r["score_seconds"]
    rows = []
    for workload in sorted({r["workload"] for r in ours}):
        mine = [r for r in ours if r["workload"] == workload]
        theirs = [r for r in peer if r["workload"] == workload]
        for key, kind in METRICS.items():
            if key not in mine[0] or not theirs or key not in theirs[0]:
                continue
            a = [r[key] for r in mine]
            b = [r[key] for r in theirs]
            ma, mb = statistics.median(a), statistics.median(b)
            ratio = mb / ma if kind == "time" else ma / mb
            rows.append({"workload": workload, "metric": key, "trainyard": ma, "peer": mb,
                         "trainyard_spread": [min(a), max(a)], "peer_spread": [min(b), max(b)],
                         "ratio": ratio, "peer_name": theirs[0]["peer"], "reps": len(a)})
    if mode == "--json":
        print(json.dumps({"results": rows}, indent=2))
        return
    width = max([26] + [len(r["workload"]) for r in rows])
    print(f"{'workload':<{width}} {'metric':<22} {'trainyard':>12} {'peer':>12} {'ratio':>7}  peer"
          f"   (ratio > 1: Trainyard ahead; medians of {rows[0]['reps'] if rows else 0})")
    for r in rows:
        print(f"{r['workload']:<{width}} {r['metric']:<22} {r['trainyard']:>12.4g} {r['peer']:>12.4g}"
              f" {r['ratio']:>7.2f}  {r['peer_name']}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
