#!/bin/sh
# tests/mpi_shared.sh: devices of two processes on one host that share
# cores, measured running together (mpt_world_measure_shared).
#
# Two ranks, one PoCL CPU device each.  Unbound (--bind-to none), both
# devices run on every core: the job measures them beside each other,
# each rank logs both devices' GEMM rate and memory bandwidth together as
# a share of their rates alone (a positive share, at most 1.5: two
# devices on the same cores cannot run much faster together than alone;
# with a blocking MPI collective as the wait between phases, up to 153%), and
# the description of a plan on both (--dp 2) prices every device measured
# slower together "measured together" (one at its rate alone or above is
# not shared, and not listed).  Bound to a core each (Open MPI's default), they share
# nothing: no measurement.
# Skipped (77) without MPI or without Fashion-MNIST.
. "${MPT_TESTS_SRCDIR:-$(dirname "$0")}/cli_lib.sh"
cli_setup mpi-shared

train=${MPT_TRAIN:-./bin/mpt-train}
cli_need_mpi
cli_need_fashion
export POCL_DEVICES=pthread MPT_PROFILE_QUICK=1 XDG_CACHE_HOME="$tmp/cache"
# Each device with a worker per core, as a process alone would have: with
# one (the suite's POCL_MAX_PTHREAD_COUNT=1) two devices on two cores
# hardly meet, and measure at about their rates alone.
unset POCL_MAX_PTHREAD_COUNT
common="--devices pocl --steps 2 --batch 64 --rebalance-after 0 -v"
mpi="mpirun --oversubscribe --mca btl self,vader -np 2"

run 300 $mpi --bind-to none "$train" $common --dp 2
shares=$(sed -n 's/.*device \([01]\), measured beside the devices of other ranks on its cores: GEMM rate \([0-9]*\)% of its rate alone, memory bandwidth \([0-9]*\)%.*/\1 \2 \3/p' "$out" "$err")
if [ "$rc" -ne 0 ]; then
    fail "two unbound ranks" "exit $rc"
elif [ "$(echo "$shares" | awk 'NF == 3' | wc -l)" -ne 4 ]; then
    fail "two unbound ranks" "want each rank to log devices 0 and 1 measured together: $shares"
elif ! echo "$shares" | awk '$2 <= 0 || $2 > 150 || $3 <= 0 || $3 > 150 { bad = 1 } END { exit bad }'; then
    fail "two unbound ranks" "a share outside (0, 150%]: $shares"
elif ! for d in $(echo "$shares" | awk '$2 < 100 { print $1 }' | sort -u); do
        grep -Eq "Shared cores, the GEMM rate of each device over its rate alone:.* device $d [0-9]+% \(measured together\)" "$out" || exit 1
    done; then
    fail "two unbound ranks" "a device measured slower together is not priced as measured together"
else
    ok "two unbound ranks: $(echo "$shares" | sort -u -k1,1 | awk '{ printf "device %s GEMM %s%%, memory %s%%; ", $1, $2, $3 }')priced as measured together"
fi

run 300 $mpi --bind-to core "$train" $common
if [ "$rc" -ne 0 ]; then
    fail "two ranks bound to a core each" "exit $rc"
elif grep -q 'measured beside the devices of other ranks' "$out" "$err"; then
    fail "two ranks bound to a core each" "measured together, though they share no core"
else
    ok "two ranks bound to a core each: nothing shared, nothing measured"
fi
exit "$failed"
