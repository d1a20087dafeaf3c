#!/bin/sh
# The machine's speed over time: mpt-train's MLP and PyTorch's
# (bench/torch_mlp.py) alternating, each run printing its samples/s over
# every EVERY steps, so that a change of speed within a run shows.  On a
# shared machine (a VM) both can switch between a fast and a slow mode
# mid-run (docs/performance.md, "Two speeds"); the bench scripts' single
# figure per round cannot show it.
#
#   bench/spells.sh [STEPS] [BATCH] [ROUNDS] [EVERY]
#       (run from a built tree; defaults 1000 steps, batch 1024, 3 rounds,
#       every 100 steps)
set -eu
devices=${BENCH_DEVICES:-pocl}
steps=${1:-1000}
batch=${2:-1024}
rounds=${3:-3}
every=${4:-100}
train=${MPT_TRAIN:-./bin/mpt-train}
python=$("$(dirname "$0")/peer_python.sh")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for r in $(seq "$rounds"); do
    "$python" "$(dirname "$0")/torch_mlp.py" --threads "$(nproc)" --steps "$steps" \
        --batch "$batch" --every "$every" >"$tmp/peer.json"
    printf "round %s PyTorch: " "$r"
    sed 's/.*"every": \[\([^]]*\)\].*/\1/' "$tmp/peer.json" |
        tr ',' '\n' | awk '{ printf "%.0fk ", $1 / 1000 } END { print "" }'
    # mpt's metrics carry each step's samples/s; the first 20 steps compile
    # kernels, as the peer's warm-up does.
    "$train" --devices "$devices" --model models/mlp-fashion.json --steps $((steps + 20)) \
        --batch "$batch" --metrics "$tmp/mpt.jsonl" >/dev/null
    printf "round %s mpt:     " "$r"
    awk -F'"samples_per_s": ' -v every="$every" \
        'NR > 20 && /"loss"/ && $2 + 0 > 0 { split($2, a, /[,}]/); s += 1 / a[1]; n++
                               if (n % every == 0) { printf "%.0fk ", every / s / 1000; s = 0 } }
         END { print "" }' "$tmp/mpt.jsonl"
done
