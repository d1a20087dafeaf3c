#!/bin/sh
# Prints the path of a Python that has current PyTorch from PyPI: the speed
# peer of the bench scripts (bench/train_vs_torch.sh, bench/gpt_vs_torch.sh).
# The wheel brings its own optimised BLAS (MKL), so the peer runs at its
# best on these cores; check the "blas" each bench script prints.
#
# The venv lives in $MPT_PEER_VENV (default $XDG_CACHE_HOME/mpt/peer-venv,
# or ~/.cache/mpt/peer-venv) and is made on first use: `pip install torch
# numpy` from PyPI, about 5.6 GB with the CUDA wheels PyPI's torch pulls in
# (it imports and runs on the CPU without a GPU).  Progress goes to stderr;
# stdout is the interpreter's path alone.
#
#   bench/peer_python.sh [jax]
# With "jax", JAX (CPU) is installed into the same venv too (`pip install
# jax`, about 100 MB), for bench/train_vs_jax.sh.
set -eu
venv=${MPT_PEER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mpt/peer-venv}
if ! "$venv/bin/python" -c 'import torch, numpy' >/dev/null 2>&1; then
    echo "peer_python.sh: installing PyTorch from PyPI into $venv (several GB, once)" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q torch numpy >&2
fi
if [ "${1:-}" = jax ] && ! "$venv/bin/python" -c 'import jax' >/dev/null 2>&1; then
    echo "peer_python.sh: installing JAX (CPU) from PyPI into $venv (once)" >&2
    "$venv/bin/pip" install -q jax >&2
fi
echo "$venv/bin/python"
