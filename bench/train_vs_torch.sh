#!/bin/sh
# Training throughput of the MLP at batch 128: mpt-train on one PoCL device
# using all cores, against PyTorch on the same cores, measured one after the
# other in the same run (bench/torch_mlp.py is the peer).
#
#   bench/train_vs_torch.sh [STEPS]      (run from a built tree, default 400)
#
# mpt's figure is the mean samples/s of its logged steps after the first 20
# (which include kernel compilation); its device busy fraction comes from
# OpenCL profiling events (--timing), and of it the share of CLBlast's
# routines (the GEMMs).
set -eu
steps=${1:-400}
threads=$(nproc)
train=${MPT_TRAIN:-./bin/mpt-train}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$train" --model models/mlp-fashion.json --steps $((steps + 20)) --batch 128 --timing \
    --metrics "$tmp/mpt.jsonl" >/dev/null
mpt=$(awk -F'"samples_per_s": ' 'NR > 20 && /"loss"/ { split($2, a, /[,}]/); s += a[1]; n++ }
      END { printf "%.1f", s / n }' "$tmp/mpt.jsonl")
busy=$(awk -F'"device_busy": ' 'NR > 20 && /"loss"/ { split($2, a, /[,}]/); s += a[1]; n++ }
       END { printf "%.2f", s / n }' "$tmp/mpt.jsonl")
blas=$(awk -F'"blas_busy": ' 'NR > 20 && /"loss"/ { split($2, a, /[,}]/); s += a[1]; n++ }
       END { printf "%.2f", s / n }' "$tmp/mpt.jsonl")
peer=$(/usr/bin/python3 "$(dirname "$0")/torch_mlp.py" --threads "$threads" --steps "$steps")
torch=$(echo "$peer" | sed 's/.*"samples_per_s": \([0-9.]*\).*/\1/')
echo "mpt (PoCL, $threads cores):     $mpt samples/s, device busy $busy of the time ($blas in CLBlast)"
echo "PyTorch ($threads threads):      $torch samples/s   ($peer)"
awk -v a="$mpt" -v b="$torch" 'BEGIN { printf "ratio mpt / PyTorch:       %.2f\n", a / b }'
