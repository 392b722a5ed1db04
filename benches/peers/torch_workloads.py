"""PyTorch's side of the neural workloads, written as a competent PyTorch user would: eager
mode, `torch.set_num_threads` equal to Trainyard's threads, the same network, optimiser, batch
size and data (MNIST's 60,000 training images, 95% of them trained on, standardised with one
mean and std as Trainyard does, reshuffled each epoch). Prints one JSON line per workload:
training samples per second over one epoch, as Trainyard's `bench --workload` reports it, and
the accuracy on the 5% held out. A `_bf16` workload trains under
`torch.autocast("cpu", dtype=torch.bfloat16)`, PyTorch's own mixed precision (its products
in bf16 on oneDNN, AMX where the CPU has it), against Trainyard's `precision: "bf16"`.

    python torch_workloads.py DATASETS_DIR THREADS mlp_b128|mlp_b512|cnn[_bf16]
"""
import contextlib
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
    cut = int(len(images) * 0.95)
    x = images.reshape(len(images), -1)[order]
    x = (x - x[:cut].mean()) / x[:cut].std()
    x, y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels[order])
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


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


def run(workload, train, held_out):
    (x, y), (x_val, y_val) = train, held_out
    network = workload.removesuffix("_bf16")
    precision = (torch.autocast("cpu", dtype=torch.bfloat16) if workload.endswith("_bf16")
                 else contextlib.nullcontext())
    torch.manual_seed(42)
    if network == "cnn":
        model, batch = Cnn(), 128
        optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    else:
        model, batch = mlp(), 128 if network == "mlp_b128" else 512
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.001, weight_decay=0.0)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    order = torch.randperm(len(x))
    started = time.perf_counter()
    for start in range(0, len(x), batch):
        rows = order[start:start + batch]
        optimizer.zero_grad(set_to_none=True)
        with precision:
            loss = loss_fn(model(x[rows]), y[rows])
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad(), precision:
        accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
    name = "autocast bf16" if workload.endswith("_bf16") else "eager"
    return {"workload": workload, "peer": f"PyTorch {torch.__version__} {name}",
            "samples_per_second": len(x) / seconds, "epoch_seconds": seconds,
            "accuracy": accuracy, "threads": torch.get_num_threads()}


def main(directory, threads, workload):
    torch.set_num_threads(int(threads))
    train, held_out = data(directory)
    print(json.dumps(run(workload, train, held_out)))


if __name__ == "__main__":
    main(*sys.argv[1:4])
