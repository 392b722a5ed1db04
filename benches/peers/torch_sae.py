"""The PyTorch side of the sparse-autoencoder speed workloads, written as SAELens trains:
a dense encoder, ReLU (L1 weighted by decoder norms) or torch.topk (k = 32, decoder rows
kept at unit norm: the gradient's parallel component removed before the step, rows
renormalised after), Adam, SAE 512 -> 4096, batches of 1024 tokens, at Trainyard's thread
count. Steps per second over 100 steps after 5 warm-up steps, on the same formula-built
activations as Trainyard's side (crates/trainyard-cli/src/bench_sae.rs).

    python torch_sae.py THREADS sae_relu|sae_topk|sae_products

sae_products times only the five matrix products of one dense relu step at these shapes
(into preallocated outputs): what PyTorch's kernel (MKL) makes of them, the ceiling of any
step that computes them.
"""
import json
import os
import sys
import time

import torch

D_IN, D_SAE, BATCH, K, L1 = 512, 4096, 1024, 32, 5.0
ROWS, STEPS = 16 * BATCH, 100
WARMUP = int(os.environ.get("SAE_WARMUP", "5"))


def activations():
    i = torch.arange(ROWS, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(D_IN, dtype=torch.float64).unsqueeze(0)
    x = torch.sin(0.013 * i * (j + 1)) + 0.5 * torch.cos(0.37 * i + 0.11 * j) - 0.25 * torch.sin(0.07 * j)
    return x.float()


PRODUCT_ROUNDS = 40


def products(threads):
    torch.set_num_threads(threads)
    n, d, m = BATCH, D_IN, D_SAE
    x, g_out = torch.randn(n, d), torch.randn(n, d)
    w_enc, w_dec = torch.randn(m, d), torch.randn(m, d)
    z, g_pre = torch.empty(n, m), torch.empty(n, m)
    x_hat, g_w_dec, g_w_enc = torch.empty(n, d), torch.empty(m, d), torch.empty(m, d)

    def round_():
        torch.mm(x, w_enc.t(), out=z)
        torch.mm(z, w_dec, out=x_hat)
        torch.mm(z.t(), g_out, out=g_w_dec)
        torch.mm(g_out, w_dec.t(), out=g_pre)
        torch.mm(g_pre.t(), x, out=g_w_enc)

    round_()
    start = time.perf_counter()
    for _ in range(PRODUCT_ROUNDS):
        round_()
    seconds = time.perf_counter() - start
    flops = 5 * 2 * n * d * m * PRODUCT_ROUNDS
    print(json.dumps({"workload": "sae_products", "matmul_gflops": flops / seconds / 1e9,
                      "products_per_second": PRODUCT_ROUNDS / seconds, "threads": threads,
                      "peer": f"PyTorch {torch.__version__}"}))


def main(threads, workload):
    if workload == "sae_products":
        return products(threads)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    topk = workload == "sae_topk"
    x_all = activations()
    w_dec = torch.randn(D_SAE, D_IN)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    W_dec = torch.nn.Parameter(w_dec.clone())
    W_enc = torch.nn.Parameter(w_dec.t().clone())
    b_enc = torch.nn.Parameter(torch.zeros(D_SAE))
    b_dec = torch.nn.Parameter(x_all.mean(0))
    params = [W_enc, b_enc, W_dec, b_dec]
    optimizer = torch.optim.Adam(params, lr=4e-4)
    start = whole = time.perf_counter()
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            start = time.perf_counter()
        rows = (step * BATCH) % ROWS
        x = x_all[rows:rows + BATCH]
        pre = (x - b_dec) @ W_enc + b_enc
        if topk:
            values, indices = torch.topk(pre, K, dim=-1)
            z = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
        else:
            z = torch.relu(pre)
        x_hat = z @ W_dec + b_dec
        loss = (x_hat - x).pow(2).sum(-1).mean()
        if not topk:
            loss = loss + L1 * (z * W_dec.norm(dim=1)).sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if topk:
            with torch.no_grad():
                parallel = (W_dec.grad * W_dec.data).sum(-1, keepdim=True)
                W_dec.grad -= parallel * W_dec.data
        optimizer.step()
        if topk:
            with torch.no_grad():
                W_dec.data /= W_dec.data.norm(dim=1, keepdim=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"workload": workload, "steps_per_second": STEPS / seconds,
                      "warmup_steps": WARMUP, "final_l0": float((z > 0).sum(-1).float().mean()),
                      "run_steps_per_second": (WARMUP + STEPS) / (time.perf_counter() - whole),
                      "threads": threads, "peer": f"PyTorch {torch.__version__}"}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
