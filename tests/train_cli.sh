#!/bin/sh
# End-to-end checks of mpt-train on Fashion-MNIST (skipped when the Debian
# package dataset-fashion-mnist is not installed):
# - a run resumed from a checkpoint logs, bit for bit, the losses of an
#   uninterrupted run (losses are printed with 9 significant digits, which
#   identify a float exactly);
# - killing the process (SIGKILL) while it checkpoints every step always
#   leaves a checkpoint that loads;
# - metrics lines carry the documented keys;
# - on two devices, PP=2 and a DP=2 plan file give the one-device losses;
# - bad input fails with exit 1 and one line naming the thing, usage errors
#   exit 2.
set -u
train=${MPT_TRAIN:-./bin/mpt-train}
srcdir=${MPT_TESTS_SRCDIR:-tests}
data=/usr/share/datasets/fashion-mnist
model="$srcdir/../models/mlp-fashion.json"
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
    echo "SKIP: $data not installed (apt-get install dataset-fashion-mnist)"
    exit 77
fi
# The cases below train on one device (the first); the section "several
# devices" selects two itself.
MPT_DEVICES=0
export MPT_DEVICES
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpt-train-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failed=1; }

losses() { sed -n 's/.*"step": \([0-9]*\), "epoch": [0-9]*, "loss": \([^,]*\),.*/\1 \2/p' "$1"; }

# ---- resume equals uninterrupted ------------------------------------------------
# A constant schedule: the cosine one depends on --steps, which differs
# between the halves here (a checkpoint of a cosine run is refused by a run
# of another length; a real resume repeats the interrupted command).
"$train" --model "$model" --steps 12 --batch 64 --optimizer adamw --schedule constant --metrics "$tmp/whole.jsonl" \
    >"$tmp/whole.out" 2>&1 || fail "uninterrupted run: $(tail -n 1 "$tmp/whole.out")"
"$train" --model "$model" --steps 6 --batch 64 --optimizer adamw --schedule constant --checkpoint "$tmp/ck" \
    --metrics "$tmp/first.jsonl" >"$tmp/first.out" 2>&1 || fail "first half: $(tail -n 1 "$tmp/first.out")"
"$train" --model "$model" --steps 12 --batch 64 --optimizer adamw --schedule constant --checkpoint "$tmp/ck" --resume \
    --metrics "$tmp/second.jsonl" >"$tmp/second.out" 2>&1 || fail "resumed half: $(tail -n 1 "$tmp/second.out")"
losses "$tmp/whole.jsonl" >"$tmp/whole.losses"
{ losses "$tmp/first.jsonl"; losses "$tmp/second.jsonl"; } >"$tmp/split.losses"
if [ "$(wc -l <"$tmp/whole.losses")" -eq 12 ] && cmp -s "$tmp/whole.losses" "$tmp/split.losses"; then
    ok "resumed run logs the uninterrupted run's 12 losses bit for bit"
else
    fail "resumed losses differ:"; diff "$tmp/whole.losses" "$tmp/split.losses" | head -5
fi

# ---- metrics keys -------------------------------------------------------------------
if grep -q '"step": 12, "epoch": 1, "loss": .*"lr": .*"samples_per_s"' "$tmp/whole.jsonl" &&
    grep -q '"step": 12, .*"test_accuracy": 0\.[0-9]' "$tmp/whole.jsonl"; then
    ok "metrics lines carry step, epoch, loss, lr, samples_per_s and test_accuracy"
else
    fail "metrics lines lack documented keys: $(head -n 1 "$tmp/whole.jsonl")"
fi

# ---- SIGKILL while checkpointing every step --------------------------------------
loaded=0
for delay in 0.05 0.2 0.4 0.7 1.1; do
    rm -rf "$tmp/kill"
    "$train" --model "$model" --steps 100000 --batch 32 --schedule constant \
        --checkpoint "$tmp/kill" --checkpoint-every 1 >/dev/null 2>&1 &
    pid=$!
    # Start-up (data, kernels) takes a while on a busy machine: kill only
    # once checkpoints are being written, at a different moment each time.
    waited=0
    while [ ! -f "$tmp/kill/checkpoint.safetensors" ] && [ "$waited" -lt 1200 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    if [ ! -f "$tmp/kill/checkpoint.safetensors" ]; then
        fail "no checkpoint written within 120 s"
        continue
    fi
    # --steps 1 with a checkpoint past step 1: the checkpoint loads and is
    # checked, then the run refuses to go backwards (exit 1, saying so).
    "$train" --model "$model" --batch 32 --schedule constant --checkpoint "$tmp/kill" --resume --steps 1 \
        >"$tmp/kill.out" 2>&1
    if grep -q "is at step [0-9]*: a run to step 1 has nothing to train" "$tmp/kill.out"; then
        loaded=$((loaded + 1))
    else
        fail "checkpoint after SIGKILL ${delay}s into checkpointing does not load: $(tail -n 1 "$tmp/kill.out")"
    fi
done
[ "$loaded" -eq 5 ] && ok "the checkpoints left by 5 SIGKILLs mid-checkpointing all load"

# ---- bad input ----------------------------------------------------------------------
expect() {
    want=$1 needle=$2
    shift 2
    timeout 120 "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" -ne "$want" ]; then
        fail "$*: exit $rc, expected $want ($(head -n 1 "$tmp/err"))"
    elif ! grep -q -- "$needle" "$tmp/err"; then
        fail "$*: stderr lacks '$needle': $(head -n 1 "$tmp/err")"
    elif [ "$want" -eq 1 ] && [ "$(wc -l <"$tmp/err")" -ne 1 ]; then
        fail "$*: $(wc -l <"$tmp/err") lines on stderr, expected 1"
    else
        ok "$*: $(head -n 1 "$tmp/err")"
    fi
}
printf '{"input": [784], "layers": [{"kind": "lineer", "units": 3}, {"kind": "softmax_cross_entropy"}]}' \
    >"$tmp/bad-model.json"
expect 1 "/nonexistent/data" "$train" --model "$model" --data /nonexistent/data --steps 1
expect 1 'layers\[0\] (lineer)' "$train" --model "$tmp/bad-model.json" --steps 1
expect 1 "missing.json" "$train" --model "$tmp/missing.json" --steps 1
cp "$tmp/ck/checkpoint.safetensors" "$tmp/corrupt.safetensors"
size=$(wc -c <"$tmp/corrupt.safetensors")
printf '\377\377\377\377' | dd of="$tmp/corrupt.safetensors" bs=1 seek=$((size - 8)) conv=notrunc status=none
mkdir -p "$tmp/ck2" && cp "$tmp/corrupt.safetensors" "$tmp/ck2/checkpoint.safetensors"
expect 1 "checksum" "$train" --devices 0 --model "$model" --steps 12 --batch 64 --optimizer adamw --schedule constant --checkpoint "$tmp/ck2" --resume
mkdir -p "$tmp/ck3" && cp "$tmp/ck/checkpoint.safetensors" "$tmp/ck3/"
sed -i 's/"step":"12"/"step":"13"/' "$tmp/ck3/checkpoint.safetensors"
expect 1 "checksum" "$train" --devices 0 --model "$model" --steps 12 --batch 64 --optimizer adamw --schedule constant --checkpoint "$tmp/ck3" --resume
"$train" --devices 0 --model "$model" --steps 3 --batch 64 --checkpoint "$tmp/ck4" >/dev/null 2>&1
expect 1 "total_steps" "$train" --devices 0 --model "$model" --steps 5 --batch 64 --checkpoint "$tmp/ck4" --resume
expect 1 "inputs per sample" "$train" --devices 0 --model "$srcdir/fixtures/torch/mlp-tiny.json" --steps 1
expect 2 "--batch" "$train" --batch 0
expect 2 "--checkpoint" "$train" --resume
expect 2 "adam" "$train" --optimizer adam

# ---- several devices: plans train the same model ------------------------------------
# Five steps of the MLP on one device, under PP=2 with 2 micro-batches (the
# planner choosing the rest), under TP=2 (each layer split over both), and under a DP=2 plan written by mpt-plan and
# read back with --plan: losses within 1e-5 relative of one device (only
# the order of float sums differs: see tests/check_engine.c), and metrics
# lines carry one "devices" entry per device.
plan_tool=${MPT_PLAN:-./bin/mpt-plan}
"$train" --model "$model" --steps 5 --batch 64 --schedule constant --metrics "$tmp/one.jsonl" \
    >"$tmp/one.out" 2>&1 || fail "one device: $(tail -n 1 "$tmp/one.out")"
MPT_PROFILE_QUICK=1 "$train" --model "$model" --steps 5 --batch 64 --schedule constant --devices 0-1 \
    --pp 2 --microbatches 2 --metrics "$tmp/pp.jsonl" --trace "$tmp/trace.json" >"$tmp/pp.out" 2>&1 ||
    fail "--pp 2: $(tail -n 1 "$tmp/pp.out")"
MPT_PROFILE_QUICK=1 "$plan_tool" --model "$model" --devices 0-1 --batch 64 --dp 2 --json \
    >"$tmp/plan.json" 2>"$tmp/plan.err" || fail "mpt-plan --json: $(tail -n 1 "$tmp/plan.err")"
MPT_PROFILE_QUICK=1 "$train" --model "$model" --steps 5 --batch 64 --schedule constant --devices 0-1 \
    --plan "$tmp/plan.json" --metrics "$tmp/dp.jsonl" >"$tmp/dp.out" 2>&1 ||
    fail "--plan FILE (dp=2): $(tail -n 1 "$tmp/dp.out")"
MPT_PROFILE_QUICK=1 "$train" --model "$model" --steps 5 --batch 64 --schedule constant --devices 0-1 \
    --tp 2 --metrics "$tmp/tp.jsonl" >"$tmp/tp.out" 2>&1 ||
    fail "--tp 2: $(tail -n 1 "$tmp/tp.out")"
losses "$tmp/one.jsonl" >"$tmp/one.losses"
for kind in pp dp tp; do
    losses "$tmp/$kind.jsonl" >"$tmp/$kind.losses"
    if [ "$(wc -l <"$tmp/$kind.losses")" -ne 5 ]; then
        fail "$kind: $(wc -l <"$tmp/$kind.losses") loss lines, expected 5"
    elif ! paste "$tmp/one.losses" "$tmp/$kind.losses" |
        awk '{ d = $2 - $4; if (d < 0) d = -d; m = $2 < 1 ? 1 : $2; if (d > 1e-5 * m) bad = 1 } END { exit bad }'; then
        fail "$kind: losses differ from one device: $(paste "$tmp/one.losses" "$tmp/$kind.losses" | tr '\n' ';')"
    elif ! grep -q '"devices": \[{"device": 0, .*}, {"device": 1, ' "$tmp/$kind.jsonl"; then
        fail "$kind: no \"devices\" entries for devices 0 and 1 in the metrics"
    else
        ok "$kind on 2 devices: 5 losses within 1e-5 of one device, per-device metrics"
    fi
done
if [ "$(head -c 14 "$tmp/trace.json" 2>/dev/null)" = '{"traceEvents"' ] &&
    grep -q '"name":"backward"' "$tmp/trace.json" && grep -q 'stage 1)' "$tmp/trace.json"; then
    ok "--trace writes a Chrome trace with a track per device"
else
    fail "--trace: $tmp/trace.json is not a trace with backward spans on stage 1"
fi
grep -q '^Replica 0' "$tmp/pp.out" && ok "the plan is printed before training" ||
    fail "no plan summary (\"Replica 0\") before training"

[ "$failed" -eq 0 ] && echo "train_cli.sh: all checks passed"
exit "$failed"
