#!/usr/bin/env python3
"""The PyTorch peer of mpt-train's language-model throughput: the same
GPT-2 style model as a model JSON of embedding / block / layernorm /
lm_head kinds (models/gpt-mini.json by default), built by
tests/torch_reference.py's build() as the parity test builds it, AdamW at
lr 1e-3 (mpt-train's default for AdamW), the same batch and context, random
windows of the same text file's bytes, on a given number of CPU threads.

    "$(bench/peer_python.sh)" bench/torch_gpt.py --model models/gpt-mini.json \
        --data FILE.txt --batch 8 --threads 2 --steps 20

Prints one JSON line: tokens_per_s over the timed steps (after a warm-up),
the steps, batch, context and threads.  Used by bench/gpt_vs_torch.sh,
which runs it in the same session as mpt-train so both see one machine.
"""
import argparse
import json
import re
import os
import sys
import time

import torch
import torch.nn.functional as F

# The PyTorch model of a model JSON, as the parity test builds it: one
# definition of the GPT kinds for both.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from torch_reference import build  # noqa: E402


def blas():
    """The BLAS this torch was built with (BLAS_INFO of its build
    configuration): the figure means nothing without it."""
    found = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return found.group(1) if found else "unknown"


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
    model = build(desc).float()
    t, vocab = desc["input"][0], desc["layers"][0]["vocab"]
    data = torch.tensor(list(open(args.data, "rb").read()), dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        start = torch.randint(0, len(data) - t - 1, (args.batch,))
        x = torch.stack([data[s:s + t] for s in start])
        y = torch.stack([data[s + 1:s + t + 1] for s in start])
        opt.zero_grad()
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()  # as mpt-train, read the loss back every step

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    secs = time.perf_counter() - t0
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "blas": blas(), "threads": args.threads,
                      "steps": args.steps, "batch": args.batch, "context": t,
                      "tokens_per_s": round(args.steps * args.batch * t / secs, 1)}))


if __name__ == "__main__":
    main()
