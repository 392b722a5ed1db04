"""The peers of Trainyard's anomaly detectors on the split `trainyard bench --anomaly --export DIR`
wrote: scikit-learn's IsolationForest (100 trees, max_samples "auto" = 256, one thread, as
Trainyard's fit) and PyOD's ECOD and HBOS (n_bins 10, alpha 0.1, tol 0.5, as Trainyard's).
Prints one JSON line per detector with the same keys as Trainyard's."""
import json
import sys
import time

import numpy as np
from pyod.models.ecod import ECOD
from pyod.models.hbos import HBOS
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score


def load(path):
    data = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return np.ascontiguousarray(data[:, :-1]), data[:, -1].astype(bool)


def isolation_forest(train):
    forest = IsolationForest(n_estimators=100, random_state=7, n_jobs=1).fit(train)
    return lambda rows: -forest.score_samples(rows)  # higher = more anomalous, as Trainyard's


def pyod(model):
    def fit(train):
        fitted = model().fit(train)
        return fitted.decision_function
    return fit


PEERS = {
    "isolation_forest": ("scikit-learn IsolationForest", isolation_forest),
    "ecod": ("PyOD ECOD", pyod(lambda: ECOD(n_jobs=1))),
    "hbos": ("PyOD HBOS", pyod(lambda: HBOS(n_bins=10, alpha=0.1, tol=0.5))),
}


def main(directory):
    train, _ = load(f"{directory}/train.csv")
    test, outlier = load(f"{directory}/test.csv")
    n = int(outlier.sum())
    for name, (peer, fit) in PEERS.items():
        started = time.perf_counter()
        score = fit(train)
        fit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        scores = score(test)
        score_seconds = time.perf_counter() - started
        top = np.argsort(-scores)[:n]
        print(json.dumps({
            "workload": f"{name}_shuttle",
            "peer": peer,
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
