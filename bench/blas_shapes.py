#!/usr/bin/env python3
"""The eight GEMMs of an MLP (mlp-fashion) training step at one batch size,
each called directly on the host: a CBLAS library through ctypes, or
torch.mm (the peer's MKL).  Best of 5 samples of 50 calls; prints GFLOP/s
and ms per call and the step's total.  docs/performance.md ("The host
BLAS") has figures and the command lines.

    bench/blas_shapes.py --lib /usr/lib/x86_64-linux-gnu/libopenblas.so.0
    bench/blas_shapes.py --lib .../libscipy_openblas.so --prefix scipy_
    bench/blas_shapes.py --torch          (with the peer venv's python)

Needs numpy (the peer venv, bench/peer_python.sh, has it).  OPENBLAS_CORETYPE
and friends apply as usual.
"""
import argparse
import ctypes
import time

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def shapes(batch):
    # name, m, n, k, A transposed, B transposed: forward C = X W^T (NT),
    # weight gradient dW = dY^T X (TN), input gradient dX = dY W (NN)
    return [("fc1 forward", batch, 256, 784, False, True),
            ("fc1 weight grad", 256, 784, batch, True, False),
            ("fc2 forward", batch, 128, 256, False, True),
            ("fc2 weight grad", 128, 256, batch, True, False),
            ("fc2 input grad", batch, 256, 128, False, False),
            ("fc3 forward", batch, 10, 128, False, True),
            ("fc3 weight grad", 10, 128, batch, True, False),
            ("fc3 input grad", batch, 128, 10, False, False)]


def best_seconds(call):
    for _ in range(20):
        call()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(50):
            call()
        best = min(best, (time.perf_counter() - t) / 50)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", help="a CBLAS shared library")
    ap.add_argument("--prefix", default="", help="its symbol prefix (scipy_)")
    ap.add_argument("--torch", action="store_true", help="torch.mm instead")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1024)
    a = ap.parse_args()
    if a.torch:
        import torch
        torch.set_num_threads(a.threads)
        print("torch", torch.__version__)
    elif a.lib:
        blas = ctypes.CDLL(a.lib)
        getattr(blas, a.prefix + "openblas_set_num_threads")(a.threads)
        config = getattr(blas, a.prefix + "openblas_get_config")
        config.restype = ctypes.c_char_p
        print(config().decode())
        sgemm = getattr(blas, a.prefix + "cblas_sgemm")
    else:
        ap.error("--lib or --torch")
    fp = ctypes.POINTER(ctypes.c_float)
    total = 0.0
    for name, m, n, k, ta, tb in shapes(a.batch):
        x = np.random.randn(*((k, m) if ta else (m, k))).astype(np.float32)
        y = np.random.randn(*((n, k) if tb else (k, n))).astype(np.float32)
        if a.torch:
            xa = torch.from_numpy(x).t() if ta else torch.from_numpy(x)
            ya = torch.from_numpy(y).t() if tb else torch.from_numpy(y)
            s = best_seconds(lambda: torch.mm(xa, ya))
        else:
            c = np.zeros((m, n), np.float32)
            args = (ROW_MAJOR, TRANS if ta else NO_TRANS, TRANS if tb else NO_TRANS, m, n, k,
                    ctypes.c_float(1.0), x.ctypes.data_as(fp), m if ta else k,
                    y.ctypes.data_as(fp), k if tb else n, ctypes.c_float(0.0),
                    c.ctypes.data_as(fp), n)
            s = best_seconds(lambda: sgemm(*args))
        total += s
        print(f"{name:16s} {m:5d}x{n:4d}x{k:4d} {2 * m * n * k / s / 1e9:7.1f} GFLOP/s {s * 1e3:7.3f} ms")
    print(f"total {total * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
