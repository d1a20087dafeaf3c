#!/bin/sh
# Language-model training throughput (tokens/s): mpt-train on one PoCL
# device using all cores, against PyTorch on the same cores
# (bench/torch_gpt.py), same model, batch, context and text, alternating
# A B A B in one run.
#
#   bench/gpt_vs_torch.sh [MODEL] [TEXT] [STEPS] [BATCH] [ROUNDS]
#       (from a built tree; defaults: models/gpt-mini.json, the concatenated
#        /usr/share/common-licenses, 20 steps, batch 8, 2 rounds)
#
# The peer is current PyTorch from PyPI in a venv (bench/peer_python.sh),
# with MKL or OpenBLAS; its version and BLAS are printed beside it.
# mpt's figure is the mean tokens/s of its logged steps after the first 3
# (which include kernel compilation).
set -eu
# One PoCL device using every core, the issue's condition: with a second
# OpenCL implementation installed (Intel's CPU runtime on the same cores)
# the default plan could spread over both.  BENCH_DEVICES overrides.
devices=${BENCH_DEVICES:-pocl}
model=${1:-models/gpt-mini.json}
text=${2:-}
steps=${3:-20}
batch=${4:-8}
rounds=${5:-2}
threads=$(nproc)
train=${MPT_TRAIN:-./bin/mpt-train}
python=$("$(dirname "$0")/peer_python.sh")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/summary.sh"
if [ -z "$text" ]; then
    text=$tmp/licenses.txt
    cat /usr/share/common-licenses/* >"$text"
fi

for r in $(seq "$rounds"); do
    "$train" --devices "$devices" --model "$model" --data "$text" --steps $((steps + 3)) --batch "$batch" \
        --optimizer adamw --eval-every 100000 --metrics "$tmp/mpt.jsonl" >/dev/null
    mpt=$(awk -F'"tokens_per_s": ' 'NR > 3 && /"loss"/ { split($2, a, /[,}]/); s += a[1]; n++ }
          END { printf "%.1f", s / n }' "$tmp/mpt.jsonl")
    peer=$("$python" "$(dirname "$0")/torch_gpt.py" --model "$model" --data "$text" \
        --threads "$threads" --steps "$steps" --batch "$batch")
    torch=$(echo "$peer" | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/')
    version=$(echo "$peer" | sed 's/.*"torch": "\([^"]*\)".*/\1/')
    blas=$(echo "$peer" | sed 's/.*"blas": "\([^"]*\)".*/\1/')
    printf "round %s, %s batch %s: mpt %.0f tokens/s; PyTorch %s (%s, %s threads) %.0f tokens/s; mpt / PyTorch %s\n" \
        "$r" "$model" "$batch" "$mpt" "$version" "$blas" "$threads" "$torch" \
        "$(awk -v a="$mpt" -v b="$torch" 'BEGIN { printf "%.2f", a / b }')"
    summary_add "$(basename "$model" .json)-batch-$batch" "$mpt" "$torch"
    rm -f "$tmp/mpt.jsonl"
done
summary_print PyTorch
