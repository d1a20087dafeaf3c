#!/bin/sh
# One-device training throughput of two builds of mpt-train, alternating
# A B A B in one run: the figure issue 18 asks for when the one-device
# trainer moved from the executor onto the engine (docs/engine.md).
#
#   bench/one_device.sh A_TRAIN B_TRAIN [REPS] [STEPS]
#
# Each run trains MODEL (default models/mlp-fashion.json on Fashion-MNIST,
# batch 128; MODEL=models/gpt-micro.json trains on the concatenated
# /usr/share/common-licenses, batch 16) on one device (POCL_DEVICES,
# default "pthread": one device on every core) and reports the mean
# samples/s of the logged steps after the first 5 (which include kernel
# compilation and the first allocations).
set -eu
a=$1
b=$2
reps=${3:-3}
steps=${4:-150}
model=${MODEL:-models/mlp-fashion.json}
export POCL_DEVICES="${POCL_DEVICES:-pthread}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case $model in
*gpt*)
    cat /usr/share/common-licenses/* >"$tmp/text.txt"
    data="--data $tmp/text.txt --batch ${BATCH:-16} --optimizer adamw" ;;
*) data="--batch ${BATCH:-128}" ;;
esac

rate() { # TRAIN: mean samples/s of the logged steps after the fifth
    rm -f "$tmp/m.jsonl"
    # shellcheck disable=SC2086 # $data is several arguments
    "$1" --model "$model" $data --steps "$steps" --eval-every 100000 -d 0 \
        --metrics "$tmp/m.jsonl" >/dev/null
    sed -n 's/.*"samples_per_s": \([0-9.]*\).*/\1/p' "$tmp/m.jsonl" |
        awk 'NR > 5 { s += $1; n++ } END { printf "%.0f", s / n }'
}

echo "$model, $steps steps, POCL_DEVICES=\"$POCL_DEVICES\"; A = $a, B = $b"
for r in $(seq "$reps"); do
    ra=$(rate "$a")
    rb=$(rate "$b")
    echo "run $r: A $ra samples/s, B $rb samples/s, B/A $(awk -v a="$ra" -v b="$rb" 'BEGIN { printf "%.3f", b / a }')"
done
