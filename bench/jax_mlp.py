#!/usr/bin/env python3
"""The JAX peer of mpt-train's MLP throughput: the same model
(models/mlp-fashion.json: 784-256-128-100-10, ReLU), the same optimizer
(SGD, momentum 0.9, lr 0.05, PyTorch's form: v = 0.9 v + g, p -= lr v),
the same batch, on Fashion-MNIST's training images (read by torch_mlp.py's
reader from the same IDX files), on JAX's CPU backend.

    "$(bench/peer_python.sh jax)" bench/jax_mlp.py --steps 400 --batch 128

One jit-compiled step (forward, gradients, update) with the loss read
back every step, as mpt-train does.  XLA's CPU backend uses every core of
the process's affinity mask (no thread-count switch of its own): run it
under taskset to use fewer.  Prints one JSON line like torch_mlp.py's.
"""
import argparse
import json
import os
import time

import numpy as np

import jax
import jax.numpy as jnp

from torch_mlp import load_idx

SIZES = [784, 256, 128, 100, 10]


def init(key):
    """PyTorch's nn.Linear initialisation: weights and biases uniform in
    +-1/sqrt(fan_in)."""
    params = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        key, kw, kb = jax.random.split(key, 3)
        bound = 1.0 / np.sqrt(fan_in)
        params.append((jax.random.uniform(kw, (fan_out, fan_in), jnp.float32, -bound, bound),
                       jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound)))
    return params


def loss_fn(params, x, y):
    for i, (w, b) in enumerate(params):
        x = x @ w.T + b
        if i + 1 < len(params):
            x = jax.nn.relu(x)
    logp = jax.nn.log_softmax(x)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


@jax.jit
def step(params, velocity, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    velocity = jax.tree_util.tree_map(lambda v, g: 0.9 * v + g, velocity, grads)
    params = jax.tree_util.tree_map(lambda p, v: p - 0.05 * v, params, velocity)
    return params, velocity, loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    images = load_idx(f"{args.data}/train-images-idx3-ubyte.gz").reshape(-1, 784)
    labels = load_idx(f"{args.data}/train-labels-idx1-ubyte.gz").astype(np.int32)
    x_all = (images.astype(np.float32) / 255.0 - 0.2860) / 0.3530
    order = np.random.default_rng(1).permutation(len(labels))
    per_epoch = len(labels) // args.batch

    params = init(jax.random.PRNGKey(1))
    velocity = jax.tree_util.tree_map(jnp.zeros_like, params)

    def one(i, params, velocity):
        idx = order[(i % per_epoch) * args.batch:(i % per_epoch + 1) * args.batch]
        params, velocity, loss = step(params, velocity, x_all[idx], labels[idx])
        float(loss)  # as mpt-train, read the loss back every step
        return params, velocity

    for i in range(args.warmup):
        params, velocity = one(i, params, velocity)
    t0 = time.perf_counter()
    for i in range(args.steps):
        params, velocity = one(args.warmup + i, params, velocity)
    secs = time.perf_counter() - t0
    print(json.dumps({"peer": "jax", "jax": jax.__version__,
                      "threads": len(os.sched_getaffinity(0)), "steps": args.steps,
                      "batch": args.batch,
                      "samples_per_s": round(args.steps * args.batch / secs, 1)}))


if __name__ == "__main__":
    main()
