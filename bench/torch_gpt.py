#!/usr/bin/python3
"""The PyTorch peer of mpt-train's language-model throughput: the same
GPT-2 style model as a model JSON of embedding / block / layernorm /
lm_head kinds (models/gpt-mini.json by default: pre-norm blocks, causal
attention, tanh-GELU MLP, LM head tied to the token embedding), AdamW at
lr 1e-3 (mpt-train's default for AdamW), the same batch and context, random
windows of the same text file's bytes, on a given number of CPU threads.

    /usr/bin/python3 bench/torch_gpt.py --model models/gpt-mini.json \
        --data FILE.txt --batch 8 --threads 2 --steps 20

Prints one JSON line: tokens_per_s over the timed steps (after a warm-up),
the steps, batch, context and threads.  Used by bench/gpt_vs_torch.sh,
which runs it in the same session as mpt-train so both see one machine.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


class Block(torch.nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(c), torch.nn.LayerNorm(c)
        self.attn, self.proj = torch.nn.Linear(c, 3 * c), torch.nn.Linear(c, c)
        self.fc, self.fc_proj = torch.nn.Linear(c, 4 * c), torch.nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.proj(y)
        return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class GPT(torch.nn.Module):
    def __init__(self, desc):
        super().__init__()
        emb = desc["layers"][0]
        self.context, vocab, c = desc["input"][0], emb["vocab"], emb["dim"]
        self.wte = torch.nn.Parameter(0.02 * torch.randn(vocab, c))
        self.wpe = torch.nn.Parameter(0.02 * torch.randn(self.context, c))
        self.blocks = torch.nn.ModuleList(
            Block(c, spec["heads"]) for spec in desc["layers"] if spec["kind"] == "block")
        self.ln_f = torch.nn.LayerNorm(c)

    def forward(self, idx):
        x = self.wte[idx] + self.wpe[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/gpt-mini.json")
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    desc = json.load(open(args.model))
    model = GPT(desc)
    t = model.context
    data = torch.tensor(list(open(args.data, "rb").read()), dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        start = torch.randint(0, len(data) - t - 1, (args.batch,))
        x = torch.stack([data[s:s + t] for s in start])
        y = torch.stack([data[s + 1:s + t + 1] for s in start])
        opt.zero_grad()
        loss = F.cross_entropy(model(x).reshape(-1, model.wte.shape[0]), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()  # as mpt-train, read the loss back every step

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    secs = time.perf_counter() - t0
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "threads": args.threads,
                      "steps": args.steps, "batch": args.batch, "context": t,
                      "tokens_per_s": round(args.steps * args.batch * t / secs, 1)}))


if __name__ == "__main__":
    main()
