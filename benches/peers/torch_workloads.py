"""PyTorch's side of the neural workloads, written as a competent PyTorch user would: eager
mode, `torch.set_num_threads` equal to Trainyard's threads, the same network, optimiser, batch
size and data (MNIST's 60,000 training images, 95% of them trained on, standardised with one
mean and std as Trainyard does, reshuffled each epoch). Prints one JSON line per workload:
training samples per second over one epoch, as Trainyard's `bench --workload` reports it.

    python torch_workloads.py DATASETS_DIR THREADS mlp_b128|mlp_b512|cnn
"""
import gzip
import json
import sys
import time

import numpy as np
import torch
from torch import nn


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def data(directory):
    images = read_idx(f"{directory}/mnist-train-images-idx3-ubyte.gz").astype(np.float32)
    labels = read_idx(f"{directory}/mnist-train-labels-idx1-ubyte.gz").astype(np.int64)
    rng = np.random.default_rng(42)
    order = rng.permutation(len(images))
    train = order[: int(len(images) * 0.95)]
    x = images[train].reshape(len(train), -1)
    x = (x - x.mean()) / x.std()
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels[train])


def mlp():
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


class Cnn(nn.Module):
    """Trainyard's default CNN: two 3x3 convolutions (16 and 32 channels, padding 1), each
    followed by ReLU and a 2x2 max pool, then dense 1568-128-10."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.head(self.features(x.view(-1, 1, 28, 28)))


def run(workload, x, y):
    torch.manual_seed(42)
    if workload == "cnn":
        model, batch = Cnn(), 128
        optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    else:
        model, batch = mlp(), 128 if workload == "mlp_b128" else 512
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.001, weight_decay=0.0)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    order = torch.randperm(len(x))
    started = time.perf_counter()
    for start in range(0, len(x), batch):
        rows = order[start:start + batch]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[rows]), y[rows])
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    return {"workload": workload, "peer": f"PyTorch {torch.__version__} eager",
            "samples_per_second": len(x) / seconds, "epoch_seconds": seconds,
            "threads": torch.get_num_threads()}


def main(directory, threads, workload):
    torch.set_num_threads(int(threads))
    x, y = data(directory)
    print(json.dumps(run(workload, x, y)))


if __name__ == "__main__":
    main(*sys.argv[1:4])
