"""scikit-learn's closest equivalents of Trainyard's default tabular runs, on the splits
`trainyard bench --workload tabular --export DIR` wrote (the rows Trainyard trained and scored
on, already standardised) with Trainyard's resolved hyperparameters:

- mlp: MLPClassifier / MLPRegressor with the same hidden sizes, activation, batch size,
  learning rate and epochs (adam for adam and adamw, sgd with the same momentum for sgd;
  weight decay as sklearn's L2 `alpha`; no early stopping, so every epoch runs);
- logistic_regression: LogisticRegression (lbfgs, to convergence);
- linear_regression: LinearRegression (least squares);
- random_forest: RandomForestClassifier / RandomForestRegressor with the same number of trees
  and depth, sqrt(features) per split (as Trainyard's trees), on every thread.

Prints one JSON line per run: fit seconds and validation accuracy or R^2.

    python sklearn_tabular.py DIR THREADS
"""
import json
import pathlib
import sys
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor

ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "logistic", "gelu": "relu"}


def load(path):
    data = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    return np.ascontiguousarray(data[:, :-1]), data[:, -1]


def mlp(hp, regression):
    sgd = hp["optimizer"] == "sgd"
    settings = dict(
        hidden_layer_sizes=tuple(hp["hidden_layers"]),
        activation=ACTIVATIONS.get(hp["activation"], "relu"),
        solver="sgd" if sgd else "adam",
        alpha=hp["weight_decay"],
        batch_size=hp["batch_size"],
        learning_rate_init=hp["learning_rate"],
        max_iter=hp["epochs"],
        shuffle=True,
        random_state=hp["seed"] % 2**32,
        tol=0.0,
        n_iter_no_change=hp["epochs"] + 1,
        early_stopping=False,
    )
    if sgd:
        settings["momentum"] = hp["momentum"]
        settings["nesterovs_momentum"] = False
    return (MLPRegressor if regression else MLPClassifier)(**settings)


def model_for(case, threads):
    hp, regression = case["hyperparameters"], case["task"] == "regression"
    algorithm = case["algorithm"]
    if algorithm == "mlp":
        return mlp(hp, regression), f"scikit-learn {'MLPRegressor' if regression else 'MLPClassifier'}"
    if algorithm == "logistic_regression":
        return LogisticRegression(max_iter=1000), "scikit-learn LogisticRegression"
    if algorithm == "linear_regression":
        return LinearRegression(), "scikit-learn LinearRegression"
    forest = RandomForestRegressor if regression else RandomForestClassifier
    return (
        forest(n_estimators=hp["n_estimators"], max_depth=hp["max_depth"], max_features="sqrt",
               random_state=hp["seed"] % 2**32, n_jobs=threads),
        f"scikit-learn {forest.__name__}",
    )


def main(directory, threads):
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    for case_dir in sorted(pathlib.Path(directory).iterdir()):
        case = json.loads((case_dir / "case.json").read_text())
        x, y = load(case_dir / "train.csv")
        vx, vy = load(case_dir / "validation.csv")
        regression = case["task"] == "regression"
        model, name = model_for(case, threads)
        started = time.perf_counter()
        model.fit(x, y if regression else y.astype(int))
        seconds = time.perf_counter() - started
        predicted = model.predict(vx)
        quality = r2_score(vy, predicted) if regression else accuracy_score(vy.astype(int), predicted)
        metric = "r2" if regression else "accuracy"
        print(json.dumps({"workload": case["workload"], "peer": name, "train_seconds": seconds,
                          metric: float(quality)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
