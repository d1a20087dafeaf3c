#!/bin/sh
# Training throughput of the MLP: mpt-train on one PoCL device using all
# cores, against PyTorch on the same cores (bench/torch_mlp.py: the same
# model, optimizer and batch), alternating A B A B in one run so that a
# drifting machine load shifts both alike.
#
#   bench/train_vs_torch.sh [STEPS] [BATCH] [ROUNDS]
#       (run from a built tree; defaults 400 steps, batch 128, 2 rounds)
#
# The peer is current PyTorch from PyPI in a venv (bench/peer_python.sh),
# with MKL or OpenBLAS; its version and BLAS are printed beside it.
# mpt's figure is the mean samples/s of its logged steps after the first 20
# (which include kernel compilation); its device busy fraction comes from
# OpenCL profiling events (--timing), and of it the share of the BLAS
# routines (the GEMMs).
set -eu
# One PoCL device using every core, the issue's condition: with a second
# OpenCL implementation installed (Intel's CPU runtime on the same cores)
# the default plan could spread over both.  BENCH_DEVICES overrides.
devices=${BENCH_DEVICES:-pocl}
steps=${1:-400}
batch=${2:-128}
rounds=${3:-2}
threads=$(nproc)
train=${MPT_TRAIN:-./bin/mpt-train}
python=$("$(dirname "$0")/peer_python.sh")
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
    peer=$("$python" "$(dirname "$0")/torch_mlp.py" --threads "$threads" --steps "$steps" \
        --batch "$batch")
    torch=$(echo "$peer" | sed 's/.*"samples_per_s": \([0-9.]*\).*/\1/')
    version=$(echo "$peer" | sed 's/.*"torch": "\([^"]*\)".*/\1/')
    blas=$(echo "$peer" | sed 's/.*"blas": "\([^"]*\)".*/\1/')
    printf "round %s, batch %s: mpt %.0f samples/s (device busy %s, BLAS %s); PyTorch %s (%s, %s threads) %.0f samples/s; mpt / PyTorch %s\n" \
        "$r" "$batch" "$mpt" "$(mean device_busy)" "$(mean blas_busy)" "$version" "$blas" \
        "$threads" "$torch" "$(awk -v a="$mpt" -v b="$torch" 'BEGIN { printf "%.2f", a / b }')"
    summary_add "batch-$batch" "$mpt" "$torch"
    rm -f "$tmp/mpt.jsonl"
done
summary_print PyTorch
