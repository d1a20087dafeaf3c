#!/bin/sh
# Language-model training throughput (tokens/s): mpt-train on one PoCL
# device using all cores, against PyTorch on the same cores
# (bench/torch_gpt.py), one after the other in the same run, same model,
# batch, context and text.
#
#   bench/gpt_vs_torch.sh [MODEL] [TEXT] [STEPS] [BATCH]
#       (from a built tree; defaults: models/gpt-mini.json, the concatenated
#        /usr/share/common-licenses, 20 steps, batch 8)
#
# mpt's figure is the mean tokens/s of its logged steps after the first 3
# (which include kernel compilation).
set -eu
model=${1:-models/gpt-mini.json}
text=${2:-}
steps=${3:-20}
batch=${4:-8}
threads=$(nproc)
train=${MPT_TRAIN:-./bin/mpt-train}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$text" ]; then
    text=$tmp/licenses.txt
    cat /usr/share/common-licenses/* >"$text"
fi

"$train" --model "$model" --data "$text" --steps $((steps + 3)) --batch "$batch" \
    --optimizer adamw --eval-every 100000 --metrics "$tmp/mpt.jsonl" >/dev/null
mpt=$(awk -F'"tokens_per_s": ' 'NR > 3 && /"loss"/ { split($2, a, /[,}]/); s += a[1]; n++ }
      END { printf "%.1f", s / n }' "$tmp/mpt.jsonl")
peer=$(/usr/bin/python3 "$(dirname "$0")/torch_gpt.py" --model "$model" --data "$text" \
    --threads "$threads" --steps "$steps" --batch "$batch")
torch=$(echo "$peer" | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/')
echo "mpt (PoCL, $threads cores):     $mpt tokens/s"
echo "PyTorch ($threads threads):      $torch tokens/s   ($peer)"
awk -v a="$mpt" -v b="$torch" 'BEGIN { printf "ratio mpt / PyTorch:       %.2f\n", a / b }'
