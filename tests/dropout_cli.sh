#!/bin/sh
# End-to-end: the shipped CNN (models/cnn-fashion.json, dropout 0.25) under
# the default plan and under pinned multi-device plans on two devices
# trains as one device does (skipped without dataset-fashion-mnist):
# - four steps, batch 64, on one device, under the plan mpt-train makes
#   for two devices, and under DP=2 and PP=2 (both devices used: more
#   than one replica, stage or micro-batch); the losses agree within 1e-5 relative,
#   the plan-invariance tolerance (tests/check_engine.c: only the order of
#   float sums differs; a mask drawn for the wrong sample moves the loss
#   by ~1e-2, tests/check_dropout.c);
# - --allreduce hierarchical with two replicas in one process is refused
#   with exit 1 and the reason, instead of running the ring under its name.
. "${MPT_TESTS_SRCDIR:-$(dirname "$0")}/cli_lib.sh"
cli_setup dropout-cli
train=${MPT_TRAIN:-./bin/mpt-train}
srcdir=${MPT_TESTS_SRCDIR:-tests}
model="$srcdir/../models/cnn-fashion.json"
cli_need_fashion
# Two one-core devices (make check sets these too).
POCL_DEVICES=${POCL_DEVICES:-pthread pthread}
POCL_MAX_PTHREAD_COUNT=${POCL_MAX_PTHREAD_COUNT:-1}
MPT_PROFILE_QUICK=1
export POCL_DEVICES POCL_MAX_PTHREAD_COUNT MPT_PROFILE_QUICK

losses() { sed -n 's/.*"step": \([0-9]*\), "epoch": [0-9]*, "loss": \([^,]*\),.*/\1 \2/p' "$1"; }
common="--model $model --steps 4 --batch 64 --schedule constant"

run 600 "$train" $common --devices 0 --metrics "$tmp/one.jsonl"
[ "$rc" -eq 0 ] || fail "one device" "exit $rc"
losses "$tmp/one.jsonl" >"$tmp/one.losses"

# $1: what is checked; the rest: mpt-train's plan options on devices 0-1.
# Four steps, whose losses must equal one device's; with $1 "multi", the
# plan must use both devices.
against_one() {
    what=$1 name=$2
    shift 2
    run 600 "$train" $common --devices 0-1 "$@" --metrics "$tmp/plan.jsonl"
    plan=$(grep '^Plan: ' "$out")
    losses "$tmp/plan.jsonl" >"$tmp/plan.losses"
    if [ "$rc" -ne 0 ]; then
        fail "$name" "exit $rc"
    elif [ -z "$plan" ] || { [ "$what" = multi ] && echo "$plan" | grep -q 'dp=1 pp=1 tp=1, 1 micro-batch'; }; then
        fail "$name" "no multi-device plan printed: '$plan'"
    elif [ "$(lines "$tmp/plan.losses")" -ne 4 ] || [ "$(lines "$tmp/one.losses")" -ne 4 ]; then
        fail "$name" "$(lines "$tmp/plan.losses") and $(lines "$tmp/one.losses") loss lines, expected 4"
    elif ! paste "$tmp/one.losses" "$tmp/plan.losses" |
        awk '{ d = $2 - $4; if (d < 0) d = -d; m = $2 < 1 ? 1 : $2; if (d > 1e-5 * m) bad = 1 } END { exit bad }'; then
        fail "$name" "losses differ from one device: $(paste "$tmp/one.losses" "$tmp/plan.losses" | tr '\n' ';')"
    else
        ok "$name: cnn-fashion under '$plan': 4 losses within 1e-5 of one device"
    fi
}
# The planner's own choice may be one device: PoCL's pthread devices of
# one process share one worker thread, which the shared-core profile
# measures (docs/planning.md).  Pinned plans must use both.
against_one any "the default plan on two devices"
against_one multi "DP=2" --dp 2
against_one multi "PP=2, 2 micro-batches" --pp 2 --microbatches 2

run 600 "$train" $common --steps 1 --devices 0-1 --dp 2 --allreduce hierarchical
if [ "$rc" -eq 1 ] && grep -q 'hierarchical all-reduce needs the replicas on two or more MPI ranks' "$err" &&
    [ "$(lines "$err")" -eq 1 ]; then
    ok "--allreduce hierarchical in one process: refused in one line naming the reason"
else
    fail "--allreduce hierarchical in one process" "exit $rc"
fi
exit $failed
