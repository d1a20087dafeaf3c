#!/bin/sh
# tests/mpi_rebalance.sh: rebalancing (--rebalance-after) across two
# processes that moves to a plan leaving one rank without a device.
#
# Rank 1's device is slow (MPT_FAIL_DEVICE=0:0:slow: every operation
# waits 5 ms first, a throttled device) but profiles like rank 0's, so the
# first plan gives it work.  After 10 steps the calibration measures it
# and the re-plan moves to rank 0's device alone: a one-device plan is
# faster whenever rank 0's whole step takes less than the ~100 ms of waits
# on rank 1's half, which holds on a loaded machine too.
# Checks: the job finishes (before this, a rank that decided apart from
# the others waited until the deadline: docs/elastic.md); both ranks log
# the same decision (rank 0's, with its calibrated figures: each rank's
# own wall clock gave figures a few percent apart); the metrics record the
# move to a one-device plan; the losses equal the one-device run's within
# 1e-5 relative (plan invariance, as tests/mpi_train.sh).
# Skipped (77) without MPI or without Fashion-MNIST.
. "${MPT_TESTS_SRCDIR:-$(dirname "$0")}/cli_lib.sh"
cli_setup mpi-rebalance

train=${MPT_TRAIN:-./bin/mpt-train}
topo=${MPT_TOPO:-./bin/mpt-topo}
cli_need_mpi
cli_need_fashion
export POCL_DEVICES=pthread POCL_MAX_PTHREAD_COUNT=1 MPT_PROFILE_QUICK=1
mpi="mpirun --tag-output --oversubscribe --mca btl self,vader"
common="--devices pocl --steps 24 --batch 256 --schedule constant"
losses() { sed -n 's/.*"step": \([0-9]*\), "epoch": [0-9]*, "loss": \([^,]*\),.*/\1 \2/p' "$1"; }

# One profile for both ranks (the same device), measured before the job.
mkdir -p "$tmp/c0"
XDG_CACHE_HOME=$tmp/c0 run 300 "$topo" --devices pocl
[ "$rc" -eq 0 ] || fail "profiling the device" "exit $rc"

XDG_CACHE_HOME=$tmp/c0 run 300 "$train" $common --metrics "$tmp/one.jsonl"
[ "$rc" -eq 0 ] || fail "one-device reference run" "exit $rc"

args="$common --rebalance-after 10 --comm-timeout 60 -v --metrics $tmp/job.jsonl"
run 300 $mpi -np 1 -x XDG_CACHE_HOME="$tmp/c0" "$train" $args \
    : -np 1 -x XDG_CACHE_HOME="$tmp/c0" -x MPT_FAIL_DEVICE=0:0:slow "$train" $args
d0=$(sed -n 's/^\[1,0\]<stderr>:.*info: \(rebalance at step .*\)/\1/p' "$out" "$err")
d1=$(sed -n 's/^\[1,1\]<stderr>:.*info: \(rebalance at step .*\)/\1/p' "$out" "$err")
moved=$(grep '"replan"' "$tmp/job.jsonl" 2>/dev/null)
if [ "$rc" -ne 0 ]; then
    fail "rebalance over 2 ranks" "exit $rc"
elif [ -z "$d0" ] || [ "$d0" != "$d1" ]; then
    fail "rebalance over 2 ranks" "the ranks logged different decisions: '$d0' and '$d1'"
elif ! echo "$moved" | grep -q '"new": "dp=1 pp=1 tp=1 m=1 gpipe on devices 0".*"moved": true'; then
    fail "rebalance over 2 ranks" "no move to a one-device plan: $moved"
else
    a=$(losses "$tmp/one.jsonl" | tr '\n' ' ') b=$(losses "$tmp/job.jsonl" | tr '\n' ' ')
    if [ "$(losses "$tmp/job.jsonl" | awk 'END { print NR }')" -ne 24 ] ||
        ! awk -v a="$a" -v b="$b" 'BEGIN { n = split(a, x, " "); split(b, y, " ")
            for (i = 2; i <= n; i += 2) { d = x[i] - y[i]; if (d < 0) d = -d
                if (x[i - 1] != y[i - 1] || d > 1e-5 * x[i]) exit 1 } }'; then
        fail "rebalance over 2 ranks" "losses differ from one device: $b"
    else
        ok "rebalance over 2 ranks: $(echo "$moved" | sed 's/.*"new": "\([^"]*\)".*/moved to \1/'), one rank idle; both ranks logged rank 0's decision; the one-device losses within 1e-5"
    fi
fi
exit "$failed"
