#!/usr/bin/env python3
"""The PyTorch peer of mpt-train's CNN throughput: the same model
(models/cnn-fashion.json: conv 3x3 32 pad 1, ReLU, max-pool 2; conv 3x3 64
pad 1, ReLU, max-pool 2; linear 3136-128, ReLU, dropout 0.25, linear
128-10), the same optimizer as mpt-train's default (SGD, momentum 0.9, lr
0.05), batch 128, on Fashion-MNIST's training images (read from the same
IDX files), on a given number of CPU threads.

    "$(bench/peer_python.sh)" bench/torch_cnn.py --threads 2 --steps 40

Prints one JSON line: samples_per_s over the timed steps (after a warm-up),
the step count, the threads, torch's version and BLAS.  Used by
bench/cnn_vs_torch.sh, which runs it in the same session as mpt-train so
that both see the same machine.  The loss is read back every step, as
mpt-train does; mpt-train's cosine learning-rate decay is left out (one
scalar per step: no cost either way).
"""
import torch

from torch_mlp import run  # the same data, optimizer, timing and output


def model():
    """models/cnn-fashion.json, layer for layer."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, 10))


if __name__ == "__main__":
    run(model, (1, 28, 28), steps=40, warmup=5)
