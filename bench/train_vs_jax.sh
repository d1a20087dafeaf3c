#!/bin/sh
# Training throughput of the MLP: mpt-train on one PoCL device using all
# cores, against JAX on the same cores (bench/jax_mlp.py: the same model,
# optimizer and batch, one jit-compiled step), alternating A B A B in one
# run so that a drifting machine load shifts both alike.
#
#   bench/train_vs_jax.sh [STEPS] [BATCH] [ROUNDS]
#       (run from a built tree; defaults 400 steps, batch 128, 2 rounds)
#
# The peer is JAX from PyPI (CPU backend, XLA), in the venv of
# bench/peer_python.sh; its version is printed beside it.  mpt's figure is
# the mean samples/s of its logged steps after the first 20, as in
# bench/train_vs_torch.sh.
set -eu
# One PoCL device using every core, the issue's condition: with a second
# OpenCL implementation installed (Intel's CPU runtime on the same cores)
# the default plan could spread over both.  BENCH_DEVICES overrides.
devices=${BENCH_DEVICES:-pocl}
steps=${1:-400}
batch=${2:-128}
rounds=${3:-2}
train=${MPT_TRAIN:-./bin/mpt-train}
python=$("$(dirname "$0")/peer_python.sh" jax)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/summary.sh"

mean() { # mean of a metrics key over the logged steps after the first 20
    awk -F"\"$1\": " 'NR > 20 && /"loss"/ { split($2, a, /[,}]/); s += a[1]; n++ }
        END { printf "%.2f", s / n }' "$tmp/mpt.jsonl"
}

for r in $(seq "$rounds"); do
    "$train" --devices "$devices" --model models/mlp-fashion.json --steps $((steps + 20)) --batch "$batch" --timing \
        --metrics "$tmp/mpt.jsonl" >/dev/null
    mpt=$(mean samples_per_s)
    peer=$("$python" "$(dirname "$0")/jax_mlp.py" --steps "$steps" --batch "$batch")
    jax=$(echo "$peer" | sed 's/.*"samples_per_s": \([0-9.]*\).*/\1/')
    version=$(echo "$peer" | sed 's/.*"jax": "\([^"]*\)".*/\1/')
    threads=$(echo "$peer" | sed 's/.*"threads": \([0-9]*\).*/\1/')
    printf "round %s, batch %s: mpt %.0f samples/s (device busy %s, BLAS %s); JAX %s (XLA CPU, %s cores) %.0f samples/s; mpt / JAX %s\n" \
        "$r" "$batch" "$mpt" "$(mean device_busy)" "$(mean blas_busy)" "$version" "$threads" \
        "$jax" "$(awk -v a="$mpt" -v b="$jax" 'BEGIN { printf "%.2f", a / b }')"
    summary_add "batch-$batch" "$mpt" "$jax"
    rm -f "$tmp/mpt.jsonl"
done
summary_print JAX
