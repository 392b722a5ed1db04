"""A Trainyard language-model export bundle, run with plain numpy.

Usage: python gpt_numpy.py BUNDLE_DIR PROMPT
Prints JSON: the prompt's token ids (from tokenizer.json, through Hugging Face's `tokenizers`)
and the next-token logits at every position (a language model) or the class logits (a
classifier: `architecture` "gpt-classifier"), computed in float64 from config.json and
model.safetensors alone. Written from the bundle's model card, not from Trainyard's code.
"""

import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer


def layer_norm(x, w, name, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * w[f"{name}.weight"]
    return y + w[f"{name}.bias"] if f"{name}.bias" in w else y


def linear(x, w, name):
    y = x @ w[f"{name}.weight"]
    return y + w[f"{name}.bias"] if f"{name}.bias" in w else y


gelu = np.vectorize(lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))))


def forward(cfg, w, ids):
    t, e, heads = len(ids), cfg["n_embd"], cfg["n_head"]
    d = e // heads
    eps = cfg["layer_norm_epsilon"]
    x = w["wte.weight"][ids] + w["wpe.weight"][:t]
    causal = np.triu(np.ones((t, t), dtype=bool), k=1)
    for i in range(cfg["n_layer"]):
        h = layer_norm(x, w, f"h.{i}.ln_1", eps)
        q, k, v = (linear(h, w, f"h.{i}.attn.{p}").reshape(t, heads, d).transpose(1, 0, 2)
                   for p in ("q", "k", "v"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.where(causal, -np.inf, scores)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = scores / scores.sum(-1, keepdims=True)
        context = (attention @ v).transpose(1, 0, 2).reshape(t, e)
        x = x + linear(context, w, f"h.{i}.attn.proj")
        h = layer_norm(x, w, f"h.{i}.ln_2", eps)
        x = x + linear(gelu(linear(h, w, f"h.{i}.mlp.fc")), w, f"h.{i}.mlp.proj")
    x = layer_norm(x, w, "ln_f", eps)
    if cfg["architecture"] == "gpt-classifier":
        pooled = x.mean(0) if cfg["pooling"] == "mean" else x[-1]
        return [linear(pooled, w, "head")]
    return x @ w["wte.weight"].T


def main():
    folder, prompt = sys.argv[1], sys.argv[2]
    with open(f"{folder}/config.json") as f:
        cfg = json.load(f)
    weights = {k: v.astype(np.float64) for k, v in load_file(f"{folder}/model.safetensors").items()}
    ids = Tokenizer.from_file(f"{folder}/tokenizer.json").encode(prompt).ids
    logits = forward(cfg, weights, ids)
    json.dump({"ids": ids, "logits": [list(map(float, row)) for row in logits]}, sys.stdout)


if __name__ == "__main__":
    main()
