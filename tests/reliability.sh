#!/bin/sh
# tests/reliability.sh: mpt-train never loses work and never lies (issue
# 21, docs/reliability.md): each fault class below failed silently before.
# - a diverging run (--lr 1e6) stops naming the step, exit 1, and the last
#   good checkpoint stays, finite and loadable;
# - SIGINT stops after the step with a checkpoint at that step, exit 130;
#   a resumed run continues it;
# - SIGKILL at random moments, resumed each time: every step logged
#   exactly once in the metrics;
# - writes checked: metrics to /dev/full and stdout to /dev/full exit 1;
# - another run's checkpoint is not replaced without --overwrite; other
#   data is not resumed on without --allow-other-data; --steps not beyond
#   the checkpoint is an error; temporaries of dead writers are removed;
# - counts refuse signs and spaces, reals refuse NaN; an unwritable
#   profile cache keeps the measurement with a warning;
# - under MPI (skipped without it): ranks started with other options are
#   refused naming the rank and the option (--on-nonfinite too), a
#   non-finite step is skipped by every rank alike, and a stopped rank ends
#   the job within --comm-timeout, naming the rank.
set -u
train=${MPT_TRAIN:-./bin/mpt-train}
srcdir=${MPT_TESTS_SRCDIR:-tests}
data=/usr/share/datasets/fashion-mnist
model="$srcdir/../models/mlp-fashion.json"
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
    echo "SKIP: $data not installed (apt-get install dataset-fashion-mnist)"
    exit 77
fi
MPT_DEVICES=0
export MPT_DEVICES
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpt-reliability.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failed=1; }
common="--model $model --batch 64 --schedule constant"
logged() { n=$(grep -c '"loss"' "$1" 2>/dev/null); echo "${n:-0}"; }

# The step a checkpoint is at: a run to step 1 loads it, checks it and
# refuses to go backwards, saying where it is.
ckpt_step() {
    dir=$1
    shift
    "$train" $common "$@" --checkpoint "$dir" --resume --steps 1 2>&1 >/dev/null |
        sed -n 's/.*is at step \([0-9]*\): a run to step 1 has nothing to train.*/\1/p'
}

# ---- divergence -----------------------------------------------------------------
"$train" $common --lr 1e6 --steps 50 --checkpoint "$tmp/nan" --checkpoint-every 1 \
    --metrics "$tmp/nan.jsonl" >"$tmp/nan.out" 2>"$tmp/nan.err"
rc=$?
at=$(sed -n 's/.*step \([0-9]*\): the [a-z ]* is .*: training diverged.*/\1/p' "$tmp/nan.err")
kept=$(ckpt_step "$tmp/nan" --lr 1e6)
if [ "$rc" -eq 1 ] && [ -n "$at" ] && [ -n "$kept" ] && [ "$kept" -lt "$at" ]; then
    ok "--lr 1e6 stops at step $at (exit 1); the checkpoint of step $kept stays and loads"
else
    fail "divergence: exit $rc, stopped at '$at', checkpoint at '$kept': $(cat "$tmp/nan.err")"
fi

# ---- SIGINT ---------------------------------------------------------------------
"$train" $common --steps 100000 --checkpoint "$tmp/int" --metrics "$tmp/int.jsonl" \
    >"$tmp/int.out" 2>"$tmp/int.err" &
pid=$!
waited=0
while [ "$(logged "$tmp/int.jsonl")" -lt 20 ] && [ "$waited" -lt 600 ]; do
    sleep 0.1
    waited=$((waited + 1))
done
kill -INT "$pid"
wait "$pid"
rc=$?
stopped=$(sed -n 's/.*stopped by signal 2 at step \([0-9]*\), checkpoint written.*/\1/p' "$tmp/int.err")
kept=$(ckpt_step "$tmp/int")
if [ "$rc" -eq 130 ] && [ -n "$stopped" ] && [ "$stopped" = "$kept" ]; then
    ok "SIGINT: exit 130 after step $stopped, whose checkpoint was written"
else
    fail "SIGINT: exit $rc, stopped at '$stopped', checkpoint at '$kept': $(tail -n 1 "$tmp/int.err")"
fi
if [ -n "$kept" ] && "$train" $common --steps $((kept + 3)) --checkpoint "$tmp/int" --resume \
    >/dev/null 2>"$tmp/int2.err" && [ "$(ckpt_step "$tmp/int")" = $((kept + 3)) ]; then
    ok "the interrupted run resumes from it"
else
    fail "resuming after SIGINT: $(tail -n 1 "$tmp/int2.err")"
fi

# ---- SIGKILL loops: every step logged once ---------------------------------------
total=1200
for delay in 1.5 2.5 1 3; do
    resume=
    [ -f "$tmp/kill/checkpoint.safetensors" ] && resume=--resume
    "$train" $common --steps $total --checkpoint "$tmp/kill" --checkpoint-every 25 $resume \
        --metrics "$tmp/kill.jsonl" >/dev/null 2>&1 &
    pid=$!
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
done
resume=
[ -f "$tmp/kill/checkpoint.safetensors" ] && resume=--resume
# (unless a killed run got to the end before its kill)
[ "$(ckpt_step "$tmp/kill")" = "$total" ] ||
    "$train" $common --steps $total --checkpoint "$tmp/kill" --checkpoint-every 25 $resume \
        --metrics "$tmp/kill.jsonl" >/dev/null 2>"$tmp/kill.err" || fail "the last run: $(tail -n 1 "$tmp/kill.err")"
sed -n 's/^{"step": \([0-9]*\), "epoch": [0-9]*, "loss".*/\1/p' "$tmp/kill.jsonl" >"$tmp/kill.steps"
if [ "$(wc -l <"$tmp/kill.steps")" -eq "$total" ] && [ "$(sort -n -u "$tmp/kill.steps" | wc -l)" -eq "$total" ] &&
    python3 -c 'import json, sys; [json.loads(l) for l in open(sys.argv[1])]' "$tmp/kill.jsonl"; then
    ok "4 SIGKILLs, each resumed: all $total steps logged exactly once, every line valid JSON"
else
    fail "after SIGKILLs: $(wc -l <"$tmp/kill.steps") step lines, $(sort -n -u "$tmp/kill.steps" | wc -l) distinct, expected $total"
fi

# ---- bad input and checked writes --------------------------------------------------
expect() {
    want=$1 needle=$2
    shift 2
    timeout 300 "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" -ne "$want" ]; then
        fail "$*: exit $rc, expected $want ($(head -n 1 "$tmp/err"))"
    elif [ -n "$needle" ] && ! grep -q -- "$needle" "$tmp/err"; then
        fail "$*: stderr lacks '$needle': $(head -n 1 "$tmp/err")"
    else
        ok "$*: $(head -n 1 "$tmp/err")"
    fi
}
expect 1 "metrics file /dev/full" "$train" $common --steps 3 --metrics /dev/full
if "$train" $common --steps 3 >/dev/full 2>"$tmp/err"; then
    fail "stdout to /dev/full: exit 0"
elif grep -q "writing standard output" "$tmp/err"; then
    ok "stdout to /dev/full: exit 1, $(head -n 1 "$tmp/err")"
else
    fail "stdout to /dev/full: $(head -n 1 "$tmp/err")"
fi
expect 1 "exists (another run's)" "$train" $common --steps 3 --checkpoint "$tmp/int"
expect 0 "" "$train" $common --steps 3 --checkpoint "$tmp/int" --overwrite
expect 1 "nothing to train" "$train" $common --steps 2 --checkpoint "$tmp/int" --resume
mkdir -p "$tmp/file" && : >"$tmp/file/checkpoint.safetensors.tmp.999999999"
expect 1 "Not a directory" "$train" $common --steps 3 --checkpoint "$tmp/file/checkpoint.safetensors.tmp.999999999/x"
"$train" $common --steps 2 --checkpoint "$tmp/file" >/dev/null 2>&1
[ ! -e "$tmp/file/checkpoint.safetensors.tmp.999999999" ] &&
    ok "a dead writer's temporary file is removed by the next checkpoint" ||
    fail "a dead writer's temporary file was left"
expect 1 "cannot write trace" "$train" $common --steps 3 --trace /nonexistent/dir/t.json
expect 2 "--steps" "$train" $common --steps ' -1'
expect 2 "--steps" "$train" $common --steps -1
expect 2 "--lr" "$train" $common --lr nan

# An unwritable profile cache ($XDG_CACHE_HOME a file; PoCL's cache kept
# where it is): the finished measurement is used, with a warning, exit 0.
: >"$tmp/not-a-dir"
expect 0 "measured but not cached" env XDG_CACHE_HOME="$tmp/not-a-dir" \
    POCL_CACHE_DIR="${POCL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pocl}" MPT_PROFILE_QUICK=1 \
    "${MPT_PLAN:-./bin/mpt-plan}" --model "$model" --devices 0
expect 0 "measured but not cached" env XDG_CACHE_HOME="$tmp/not-a-dir" \
    POCL_CACHE_DIR="${POCL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pocl}" MPT_PROFILE_QUICK=1 \
    "${MPT_TOPO:-./bin/mpt-topo}" --devices 0
grep -q "measured now, not cached" "$tmp/out" && ok "mpt-topo's summary says the profile was not cached" ||
    fail "mpt-topo's summary claims a cache it could not write: $(tail -n 1 "$tmp/out")"

# A plan made for another model with as many layers.
sed 's/"units": 100/"units": 99/' "$model" >"$tmp/other.json"
"${MPT_PLAN:-./bin/mpt-plan}" --model "$model" --batch 64 --json >"$tmp/plan.json" 2>/dev/null
expect 1 "was made for another model" "$train" --model "$tmp/other.json" --batch 64 --plan "$tmp/plan.json" --steps 1

# Other data: a tiny language model on two texts.
printf '{"name": "lm", "input": [16], "layers": [{"kind": "embedding", "vocab": 256, "dim": 16}, {"kind": "layernorm"}, {"kind": "lm_head"}, {"kind": "softmax_cross_entropy"}]}' >"$tmp/lm.json"
awk 'BEGIN { for (i = 0; i < 400; i++) print "the quick brown fox jumps over the lazy dog " i }' >"$tmp/a.txt"
awk 'BEGIN { for (i = 0; i < 400; i++) print "pack my box with five dozen liquor jugs " i }' >"$tmp/b.txt"
lm="--model $tmp/lm.json --batch 8 --schedule constant"
"$train" $lm --data "$tmp/a.txt" --steps 3 --checkpoint "$tmp/lmck" >/dev/null 2>&1
expect 1 "written for other data" "$train" $lm --data "$tmp/b.txt" --steps 6 --checkpoint "$tmp/lmck" --resume
expect 0 "" "$train" $lm --data "$tmp/b.txt" --steps 6 --checkpoint "$tmp/lmck" --resume --allow-other-data

# ---- MPI: agreement and liveness ---------------------------------------------------
if [ -x "${MPT_TOP_BUILDDIR:-.}/tests/mpi_comm" ] && command -v mpirun >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
    export POCL_MAX_PTHREAD_COUNT=1 POCL_DEVICES=pthread
    unset MPT_DEVICES
    mpi="mpirun --oversubscribe --mca btl self,vader"
    expect 1 "rank 1's training configuration differs from rank 0's: seed 2 there, 1 here" \
        $mpi -np 1 "$train" $common --steps 3 : -np 1 "$train" $common --seed 2 --steps 3
    expect 1 "rank 1's non-finite policy differs from rank 0's: on_nonfinite \"skip\" there" \
        $mpi -np 1 "$train" $common --steps 3 : -np 1 "$train" $common --on-nonfinite skip --steps 3
    # A non-finite step is skipped by both ranks alike: the run goes on.
    if MPT_FAIL_NONFINITE=2 $mpi -np 2 "$train" $common --steps 4 --on-nonfinite skip \
        --metrics "$tmp/mpiskip.jsonl" >/dev/null 2>"$tmp/mpiskip.err" &&
        grep -q '"step": 2,.*"skipped": "nonfinite"' "$tmp/mpiskip.jsonl" &&
        grep -q '"step": 4,.*"skipped_steps": 1' "$tmp/mpiskip.jsonl"; then
        ok "2 ranks, --on-nonfinite skip: step 2 skipped on both, the run finishes"
    else
        fail "2 ranks, --on-nonfinite skip: $(tail -n 1 "$tmp/mpiskip.err")"
    fi
    # A stopped rank: the other one gives up after --comm-timeout.
    $mpi -np 2 "$train" $common --steps 100000 --comm-timeout 5 --metrics "$tmp/mpi.jsonl" \
        >"$tmp/mpi.out" 2>"$tmp/mpi.err" &
    job=$!
    waited=0
    while [ "$(logged "$tmp/mpi.jsonl")" -lt 3 ] && [ "$waited" -lt 1200 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    rank1=
    for p in $(pgrep -f "mpt-train.*--comm-timeout 5"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then
            rank1=$p
        fi
    done
    start=$(date +%s)
    [ -n "$rank1" ] && kill -STOP "$rank1"
    waited=0
    while kill -0 "$job" 2>/dev/null && [ "$waited" -lt 600 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    took=$(($(date +%s) - start))
    if kill -0 "$job" 2>/dev/null; then
        fail "a stopped rank: the job still runs after 60 s"
        kill -9 "$job" 2>/dev/null
    elif [ -z "$rank1" ]; then
        fail "a stopped rank: rank 1 not found running"
    elif grep -q "rank 1 .* stopped, hung or dead" "$tmp/mpi.err"; then
        ok "a stopped rank ends the job in ${took} s (--comm-timeout 5), naming rank 1"
    else
        fail "a stopped rank: the job ended without naming rank 1: $(grep mpt-train "$tmp/mpi.err" | head -n 2)"
    fi
    [ -n "$rank1" ] && kill -CONT "$rank1" 2>/dev/null && kill -9 "$rank1" 2>/dev/null
    wait "$job" 2>/dev/null
else
    echo "skip MPI checks: built without MPI"
fi

[ "$failed" -eq 0 ] && echo "reliability.sh: all checks passed"
exit "$failed"
