#!/bin/sh
# One-device training throughput (mlp-fashion batch 128 by default;
# MODEL=models/gpt-micro.json trains the language model on the concatenated
# /usr/share/common-licenses, batch 16, AdamW; one PoCL device using every
# core) of an installed older mpt against this build, and this build
# with its GEMMs forced onto CLBlast (MPT_BLAS=clblast), alternating
# A B C A B C in one run so that a machine whose load drifts shifts all
# three alike.
#
#   bench/train_before_after.sh PREFIX [STEPS] [ROUNDS]
#
# PREFIX holds the older build (PREFIX/bin/mpt-train, PREFIX/lib); run from
# a built tree.  Each figure is the mean samples/s of the logged steps after
# the first 20 (which include kernel compilation), as bench/train_vs_torch.sh
# computes it; the device busy fraction and its BLAS share come from
# --timing.
set -eu
prefix=${1:?usage: bench/train_before_after.sh PREFIX [STEPS] [ROUNDS]}
steps=${2:-400}
rounds=${3:-2}
model=${MODEL:-models/mlp-fashion.json}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case $model in
*gpt*)
    cat /usr/share/common-licenses/* >"$tmp/text.txt"
    data="--data $tmp/text.txt --batch 16 --optimizer adamw --eval-every 100000" ;;
*) data="--batch 128" ;;
esac
# Profiles and plans are not needed for one device; keep any cache apart.
XDG_CACHE_HOME="$tmp/cache"
MPT_DEVICES=0
export XDG_CACHE_HOME MPT_DEVICES

mean() { # mean of a metrics key over the logged steps after the first 20
    awk -F"\"$2\": " 'NR > 20 && /"loss"/ { split($2, a, /[,}]/); s += a[1]; n++ }
        END { printf "%.2f", s / n }' "$1"
}

run() { # label, then the command
    label=$1
    shift
    # shellcheck disable=SC2086 # $data is several arguments
    "$@" --model "$model" $data --steps $((steps + 20)) --timing \
        --metrics "$tmp/run.jsonl" >/dev/null
    printf "%-40s %8.0f samples/s  device busy %s, BLAS %s\n" "$label" \
        "$(mean "$tmp/run.jsonl" samples_per_s)" "$(mean "$tmp/run.jsonl" device_busy)" \
        "$(mean "$tmp/run.jsonl" blas_busy)"
    rm -f "$tmp/run.jsonl"
}

echo "$model ($data), $steps steps after 20, on device 0:"
./bin/mpt-topo --no-profile 2>/dev/null | grep -A1 '^  #'  | head -2
for r in $(seq "$rounds"); do
    run "round $r: before ($prefix)" env LD_LIBRARY_PATH="$prefix/lib" "$prefix/bin/mpt-train"
    run "round $r: this build (auto provider)" ./bin/mpt-train
    run "round $r: this build (MPT_BLAS=clblast)" env MPT_BLAS=clblast ./bin/mpt-train
done
