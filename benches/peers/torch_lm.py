"""The PyTorch side of the language-model workloads: nanoGPT's CPU recipe for character-level
Shakespeare (n_layer 4, n_head 4, n_embd 128, block 64, batch 12, dropout 0, AdamW betas
0.9/0.99, weight decay 0.1 on matrices only, warm-up 100 then cosine 1e-3 -> 1e-4, clip 1.0),
on the same corpus and 90/10 contiguous split as Trainyard, at Trainyard's thread count.

    python torch_lm.py DATASETS_DIR THREADS lm_speed|lm_quality|lm_generate

lm_speed: tokens/s over 300 training steps. lm_quality: 2000 steps, then validation loss over
50 batches. lm_generate: 2000 tokens sampled after "ROMEO:" with nanoGPT's `generate` loop
(the context cropped to the block, a full forward per token, no key-value cache). Prints one
JSON line.
"""
import gzip
import json
import math
import sys
import time

import torch
import torch.nn as nn
from torch.nn import functional as F

N_LAYER, N_HEAD, N_EMBD, BLOCK, BATCH = 4, 4, 128, 64, 12
LR, MIN_LR, WARMUP, WEIGHT_DECAY, CLIP = 1e-3, 1e-4, 100, 0.1, 1.0


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(N_EMBD)
        self.attn = nn.Linear(N_EMBD, 3 * N_EMBD)
        self.proj = nn.Linear(N_EMBD, N_EMBD)
        self.ln_2 = nn.LayerNorm(N_EMBD)
        self.fc = nn.Linear(N_EMBD, 4 * N_EMBD)
        self.fc_proj = nn.Linear(4 * N_EMBD, N_EMBD)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.attn(self.ln_1(x)).split(N_EMBD, dim=2)
        q, k, v = (z.view(b, t, N_HEAD, c // N_HEAD).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x))))


class Gpt(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.wte = nn.Embedding(vocab, N_EMBD)
        self.wpe = nn.Embedding(BLOCK, N_EMBD)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(N_EMBD)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * N_LAYER))

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()  # tied head


def corpus(directory):
    text = gzip.open(f"{directory}/shakespeare.txt.gz", "rt", encoding="utf-8").read()
    cut = round(len(text) * 0.9)
    train_text, val_text = text[:cut], text[cut:]
    chars = sorted(set(train_text))
    index = {c: i + 1 for i, c in enumerate(chars)}  # 0: unknown, as Trainyard's tokenizer
    encode = lambda s: torch.tensor([index.get(c, 0) for c in s], dtype=torch.long)
    return encode(train_text), encode(val_text), len(chars) + 1


def windows(data, generator):
    starts = torch.randint(len(data) - BLOCK, (BATCH,), generator=generator)
    x = torch.stack([data[i:i + BLOCK] for i in starts])
    y = torch.stack([data[i + 1:i + 1 + BLOCK] for i in starts])
    return x, y


def lr_at(step, max_steps):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = min(1.0, (step - WARMUP) / max(1, max_steps - WARMUP))
    return MIN_LR + 0.5 * (1 + math.cos(math.pi * t)) * (LR - MIN_LR)


def generate(directory, tokens=2000):
    torch.manual_seed(42)
    _, _, vocab = corpus(directory)
    model = Gpt(vocab).eval()
    idx = torch.randint(vocab, (1, 6))
    started = time.perf_counter()
    with torch.no_grad():
        for _ in range(tokens):
            logits = model(idx[:, -BLOCK:])[:, -1, :]
            following = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, following), dim=1)
    seconds = time.perf_counter() - started
    return {"workload": "lm_generate", "peer": f"PyTorch {torch.__version__} eager, no KV cache",
            "tokens_per_second": tokens / seconds, "threads": torch.get_num_threads()}


def run(directory, workload):
    if workload == "lm_generate":
        return generate(directory)
    torch.manual_seed(42)
    train, val, vocab = corpus(directory)
    model = Gpt(vocab)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR, betas=(0.9, 0.99))
    steps = 300 if workload == "lm_speed" else 2000
    generator = torch.Generator().manual_seed(42)
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps)
        x, y = windows(train, generator)
        loss = F.cross_entropy(model(x).view(-1, vocab), y.view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
    seconds = time.perf_counter() - started
    result = {"workload": workload, "peer": f"PyTorch {torch.__version__} eager",
              "tokens_per_second": steps * BATCH * BLOCK / seconds, "train_seconds": seconds,
              "threads": torch.get_num_threads()}
    if workload == "lm_quality":
        model.eval()
        eval_generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            losses = [F.cross_entropy(model(x).view(-1, vocab), y.view(-1)).item()
                      for x, y in (windows(val, eval_generator) for _ in range(50))]
        result["val_loss"] = sum(losses) / len(losses)
    return result


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[2]))
    print(json.dumps(run(sys.argv[1], sys.argv[3])))
