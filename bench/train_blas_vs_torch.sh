#!/bin/sh
# MLP training throughput of this build against another built tree of mpt
# (OTHER, typically configured with the other host BLAS: ./configure
# --with-host-blas=scipy-openblas or =openblas) and PyTorch, on one PoCL
# device using every core, alternating A B C in each round so that a
# drifting machine load shifts all three.  Each tree's host BLAS is
# printed beside its figure.
#
#   OTHER=/path/to/other/tree bench/train_blas_vs_torch.sh [STEPS] [BATCH] [ROUNDS]
#       (run from this built tree; defaults 100 steps, batch 1024, 3 rounds)
#
# Each mpt figure is bench/train_vs_torch.sh's: the mean samples/s of the
# logged steps after the first 20 (--timing); the peer is PyTorch from
# PyPI (bench/peer_python.sh), bench/torch_mlp.py.
set -eu
other=${OTHER:?set OTHER to another built mpt tree}
steps=${1:-100}
batch=${2:-1024}
rounds=${3:-3}
devices=${BENCH_DEVICES:-pocl}
top=$(pwd)
python=$("$top/bench/peer_python.sh")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mpt() { # tree: its mean samples/s
    (cd "$1" && ./bin/mpt-train --devices "$devices" --model models/mlp-fashion.json \
        --steps $((steps + 20)) --batch "$batch" --timing --metrics "$tmp/m.jsonl" >/dev/null)
    awk -F'"samples_per_s": ' 'NR > 20 && /"loss"/ { split($2, a, /[,}]/); s += a[1]; n++ }
        END { printf "%.0f", s / n }' "$tmp/m.jsonl"
    rm -f "$tmp/m.jsonl"
}
blas() { # tree: the host BLAS its configure chose
    sed -n 's/^#define MPT_HOST_BLAS "\(.*\)"/\1/p' "$1/config.h"
}

for r in $(seq "$rounds"); do
    a=$(mpt "$other")
    b=$(mpt "$top")
    peer=$("$python" "$top/bench/torch_mlp.py" --threads "$(nproc)" --steps "$steps" --batch "$batch")
    t=$(echo "$peer" | sed 's/.*"samples_per_s": \([0-9.]*\).*/\1/')
    printf "round %s, batch %s: other (%s) %s, this (%s) %s, PyTorch %.0f samples/s; other / PyTorch %s, this / PyTorch %s\n" \
        "$r" "$batch" "$(blas "$other")" "$a" "$(blas "$top")" "$b" "$t" \
        "$(awk -v a="$a" -v b="$t" 'BEGIN { printf "%.2f", a / b }')" \
        "$(awk -v a="$b" -v b="$t" 'BEGIN { printf "%.2f", a / b }')"
done
