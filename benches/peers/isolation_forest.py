"""scikit-learn's IsolationForest on the split `trainyard bench --anomaly --export DIR` wrote:
100 trees, default max_samples ("auto" = 256), one thread (as Trainyard's fit). Prints one JSON
line with the same keys as Trainyard's."""
import json
import sys
import time

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score


def load(path):
    data = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return np.ascontiguousarray(data[:, :-1]), data[:, -1].astype(bool)


def main(directory):
    train, _ = load(f"{directory}/train.csv")
    test, outlier = load(f"{directory}/test.csv")
    started = time.perf_counter()
    forest = IsolationForest(n_estimators=100, random_state=7, n_jobs=1).fit(train)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scores = -forest.score_samples(test)  # higher = more anomalous, as Trainyard's
    score_seconds = time.perf_counter() - started
    n = int(outlier.sum())
    top = np.argsort(-scores)[:n]
    print(json.dumps({
        "workload": "isolation_forest_shuttle",
        "train_rows": len(train),
        "test_rows": len(test),
        "fit_seconds": fit_seconds,
        "score_seconds": score_seconds,
        "rows_per_second": len(test) / score_seconds,
        "roc_auc": roc_auc_score(outlier, scores),
        "precision_at_n": float(outlier[top].mean()),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
