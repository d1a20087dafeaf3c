#!/usr/bin/env python3
"""The PyTorch peer of mpt-train's MLP throughput: the same model
(models/mlp-fashion.json: 784-256-128-100-10, ReLU), the same optimizer
(SGD, momentum 0.9, lr 0.05), batch 128, on Fashion-MNIST's training images
(read from the same IDX files), on a given number of CPU threads.

    "$(bench/peer_python.sh)" bench/torch_mlp.py --threads 2 --steps 400

Prints one JSON line: samples_per_s over the timed steps (after a warm-up),
the step count, the threads.  Used by bench/train_vs_torch.sh, which runs
it in the same session as mpt-train so that both see the same machine.
"""
import argparse
import gzip
import json
import re
import time

import numpy as np
import torch


def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def blas():
    """The BLAS this torch was built with (BLAS_INFO of its build
    configuration): the figure means nothing without it."""
    found = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return found.group(1) if found else "unknown"


def run(make_net, shape, steps, warmup):
    """Times SGD steps of make_net() on Fashion-MNIST's training images reshaped to
    `shape` per sample and prints the JSON line; the classifier peers
    (torch_mlp.py, torch_cnn.py) differ only in the model."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--every", type=int, default=0,
                    help="also list samples/s over each N timed steps (bench/spells.sh)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)

    images = load_idx(f"{args.data}/train-images-idx3-ubyte.gz").reshape(-1, *shape)
    labels = load_idx(f"{args.data}/train-labels-idx1-ubyte.gz").astype(np.int64)
    x_all = torch.from_numpy((images.astype(np.float32) / 255.0 - 0.2860) / 0.3530)
    y_all = torch.from_numpy(labels)

    net = make_net()
    net.train()  # dropout on, as in mpt-train's training steps
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    order = torch.randperm(len(y_all))
    per_epoch = len(y_all) // args.batch

    def step(i):
        idx = order[(i % per_epoch) * args.batch:(i % per_epoch + 1) * args.batch]
        x, y = x_all[idx], y_all[idx]
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()  # as mpt-train, read the loss back every step

    for i in range(args.warmup):
        step(i)
    t0 = last = time.perf_counter()
    every = []
    for i in range(args.steps):
        step(args.warmup + i)
        if args.every and (i + 1) % args.every == 0:
            now = time.perf_counter()
            every.append(round(args.every * args.batch / (now - last), 1))
            last = now
    secs = time.perf_counter() - t0
    out = {"peer": "pytorch", "torch": torch.__version__, "blas": blas(),
           "threads": args.threads, "steps": args.steps, "batch": args.batch,
           "samples_per_s": round(args.steps * args.batch / secs, 1)}
    if args.every:
        out["every"] = every
    print(json.dumps(out))


def model():
    """models/mlp-fashion.json, layer for layer."""
    nn = torch.nn
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 100), nn.ReLU(), nn.Linear(100, 10))


if __name__ == "__main__":
    run(model, (784,), steps=400, warmup=20)
