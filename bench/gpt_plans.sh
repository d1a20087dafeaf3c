#!/bin/sh
# Language-model training throughput (tokens/s) of every plan on two
# devices against one device, in the same run: one device, DP=2, PP=2 and
# TP=2, each REPS times, with the loss at the last step (the plans must
# agree on it to about 1e-7).
#
#   bench/gpt_plans.sh [MODEL] [TEXT] [STEPS] [BATCH] [REPS]
#       (from a built tree; defaults: models/gpt-micro.json, the
#        concatenated /usr/share/common-licenses, 33 steps, batch 16, 1 run)
#
# The devices are POCL_DEVICES' (default "basic basic": two single-threaded
# devices, one core each; PoCL's pthread devices in one process share one
# worker pool, see docs/gpt.md).  The figure is the mean tokens/s of the
# logged steps after the first 3 (which include kernel compilation).  A run
# that fails (PoCL 3.1's basic driver sometimes aborts in its kernel cache
# with two devices) is retried twice and reported as failed after that.
set -eu
model=${1:-models/gpt-micro.json}
text=${2:-}
steps=${3:-33}
batch=${4:-16}
reps=${5:-1}
train=${MPT_TRAIN:-./bin/mpt-train}
export POCL_DEVICES="${POCL_DEVICES:-basic basic}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$text" ]; then
    text=$tmp/licenses.txt
    cat /usr/share/common-licenses/* >"$text"
fi

echo "$model, batch $batch, $steps steps, POCL_DEVICES=\"$POCL_DEVICES\""
for r in $(seq "$reps"); do
    for plan in "-d 0" "-d 0,1 --dp 2" "-d 0,1 --pp 2" "-d 0,1 --tp 2"; do
        ok=0
        for try in 1 2 3; do
            rm -f "$tmp/m.jsonl"
            # shellcheck disable=SC2086 # the plan is several arguments
            if "$train" --model "$model" --data "$text" --steps "$steps" --batch "$batch" \
                --optimizer adamw --eval-every 100000 --metrics "$tmp/m.jsonl" $plan \
                >"$tmp/out" 2>&1; then
                ok=1
                break
            fi
            echo "  ($plan: try $try failed: $(tail -n 1 "$tmp/out"))"
        done
        if [ "$ok" = 0 ]; then
            echo "run $r  $plan: failed"
            continue
        fi
        rate=$(awk -F'"tokens_per_s": ' 'NR > 3 && /"loss"/ { split($2, a, /[,}]/); s += a[1]; n++ }
               END { printf "%.1f", s / n }' "$tmp/m.jsonl")
        loss=$(grep "\"step\": $steps," "$tmp/m.jsonl" | grep '"loss": ' |
               sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
        echo "run $r  $plan: $rate tokens/s, loss at step $steps $loss"
    done
done
