"""The peer of the text_classify workload: a bag-of-words logistic regression (scikit-learn's
CountVectorizer, word unigrams, and LogisticRegression) on the split Trainyard wrote.

    python text_classify.py DIR [WORKLOAD]   # DIR holds train.csv and validation.csv (text, play)

WORKLOAD names the line (text_classify, or text_classify_pretrained: the same peer against
Trainyard's classifier started from a language model); the peer itself is the same.

Prints one JSON line: validation accuracy, macro-F1 and the fit time.
"""
import csv
import json
import sys
import time

import sklearn
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["play"] for r in rows]


def main(directory, workload):
    train_x, train_y = read(f"{directory}/train.csv")
    val_x, val_y = read(f"{directory}/validation.csv")
    started = time.perf_counter()
    words = CountVectorizer()
    model = LogisticRegression(max_iter=2000).fit(words.fit_transform(train_x), train_y)
    seconds = time.perf_counter() - started
    predicted = model.predict(words.transform(val_x))
    print(json.dumps({"workload": workload,
                      "peer": f"scikit-learn {sklearn.__version__} bag-of-words LogisticRegression",
                      "accuracy": accuracy_score(val_y, predicted),
                      "macro_f1": f1_score(val_y, predicted, average="macro"),
                      "train_seconds": seconds}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "text_classify")
