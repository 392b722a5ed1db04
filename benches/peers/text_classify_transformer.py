"""A calibration for the text_classify workload: a transformer classifier of the default
transformer_classifier's shape (2 pre-norm blocks of 128, 4 heads, causal attention, dropout
0.1, mean pooling over the real tokens, AdamW at 1e-3 with weight decay 0.1, 100 warm-up steps
then cosine to a tenth, 1,000 steps of 32), written in PyTorch over word tokens and trained from
scratch on the same split. It shows what a transformer of that size learns from these 4,500
lines, whichever library trains it.

    python text_classify_transformer.py DIR [THREADS]   # DIR holds train.csv, validation.csv

Prints one JSON line: validation accuracy, macro-F1 and the training time.
"""
import csv
import json
import math
import re
import sys
import time

import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn

WIDTH, LAYERS, HEADS, CONTEXT = 128, 2, 4, 64
STEPS, BATCH, LEARNING_RATE, WARMUP = 1000, 32, 1e-3, 100


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["play"] for r in rows]


def words(text):
    return re.findall(r"(?u)\b\w\w+\b", text.lower())  # CountVectorizer's tokens


class Classifier(nn.Module):
    def __init__(self, vocab, classes):
        super().__init__()
        self.tokens = nn.Embedding(vocab, WIDTH)
        self.positions = nn.Embedding(CONTEXT, WIDTH)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(WIDTH, HEADS, 4 * WIDTH, 0.1, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(LAYERS))
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, classes)
        self.dropout = nn.Dropout(0.1)

    def forward(self, tokens, lengths):
        time_steps = tokens.shape[1]
        h = self.dropout(self.tokens(tokens) + self.positions(torch.arange(time_steps)))
        causal = torch.triu(torch.ones(time_steps, time_steps, dtype=torch.bool), 1)
        for block in self.blocks:
            h = block(h, src_mask=causal)
        real = (torch.arange(time_steps)[None, :] < lengths[:, None]).float()
        pooled = (self.norm(h) * real[..., None]).sum(1) / lengths[:, None]
        return self.head(pooled)


def padded(rows, picks):
    lengths = torch.tensor([len(rows[i]) for i in picks])
    tokens = torch.zeros(len(picks), int(lengths.max()), dtype=torch.long)
    for j, i in enumerate(picks):
        tokens[j, :len(rows[i])] = torch.tensor(rows[i])
    return tokens, lengths.float()


def main(directory, threads):
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    train_x, train_y = read(f"{directory}/train.csv")
    val_x, val_y = read(f"{directory}/validation.csv")
    vocab = {w: i + 1 for i, w in enumerate(sorted({w for t in train_x for w in words(t)}))}
    classes = sorted(set(train_y))
    encode = lambda text: [vocab.get(w, 0) for w in words(text)][:CONTEXT] or [0]  # noqa: E731
    train_rows, val_rows = [encode(t) for t in train_x], [encode(t) for t in val_x]
    train_labels = torch.tensor([classes.index(c) for c in train_y])
    model = Classifier(len(vocab) + 1, len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), LEARNING_RATE, weight_decay=0.1)
    started = time.perf_counter()
    for step in range(STEPS):
        warm = min(1.0, (step + 1) / WARMUP)
        decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / STEPS))
        for group in optimizer.param_groups:
            group["lr"] = LEARNING_RATE * warm * decay
        picks = torch.randint(len(train_rows), (BATCH,)).tolist()
        model.train()
        loss = F.cross_entropy(model(*padded(train_rows, picks)), train_labels[picks])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        predicted = model(*padded(val_rows, list(range(len(val_rows))))).argmax(1)
    predicted = [classes[i] for i in predicted.tolist()]
    print(json.dumps({"workload": "text_classify",
                      "peer": f"PyTorch {torch.__version__} transformer classifier (words)",
                      "accuracy": sum(p == y for p, y in zip(predicted, val_y)) / len(val_y),
                      "macro_f1": f1_score(val_y, predicted, average="macro"),
                      "train_seconds": seconds}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2)
