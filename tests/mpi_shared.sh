#!/bin/sh
# tests/mpi_shared.sh: devices of two processes on one host that share
# cores, measured running together (mpt_world_measure_shared).
#
# Two ranks, one PoCL CPU device each.  Unbound (--bind-to none), both
# devices run on every core: the job measures them beside each other,
# each rank logs both devices' GEMM rate and memory bandwidth together as
# a positive share of their rates alone, or (a share above 2: another
# process took the cores in an "alone" phase, as a parallel make check
# once did) the device refused as disturbed, alike on both ranks; the
# description of a plan on both (--dp 2) prices every device measured
# slower together "measured together" (one at its rate alone or above is
# not shared, and not listed).  With a blocking MPI collective as the wait
# between phases, shares reached 153% on an idle machine.  Bound to a core each (Open MPI's default), they share
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
refused=$(sed -n 's/.*device \([01]\), measured beside the devices of other ranks on its cores at .*a disturbed measurement, the estimate stays.*/\1/p' "$out" "$err")
if [ "$rc" -ne 0 ]; then
    fail "two unbound ranks" "exit $rc"
elif [ "$(printf '%s\n%s\n' "$shares" "$refused" | awk 'NF' | wc -l)" -ne 4 ] ||
    [ "$(printf '%s\n%s\n' "$shares" "$refused" | awk 'NF { print $1 }' | sort | uniq -c |
        awk '$1 == 2' | wc -l)" -ne 2 ]; then
    fail "two unbound ranks" "want each rank to log devices 0 and 1, measured together or refused as disturbed: $shares / $refused"
elif ! echo "$shares" | awk 'NF && ($2 <= 0 || $3 <= 0) { bad = 1 } END { exit bad }'; then
    fail "two unbound ranks" "a share of 0: $shares"
elif ! for d in $(echo "$shares" | awk 'NF && $2 < 100 { print $1 }' | sort -u); do
        grep -Eq "Shared cores, the GEMM rate of each device over its rate alone:.* device $d [0-9]+% \(measured together\)" "$out" || exit 1
    done; then
    fail "two unbound ranks" "a device measured slower together is not priced as measured together"
else
    ok "two unbound ranks: $(echo "$shares" | awk 'NF' | sort -u -k1,1 | awk '{ printf "device %s GEMM %s%%, memory %s%%; ", $1, $2, $3 }')${refused:+refused as disturbed: $(echo "$refused" | sort -u | tr '\n' ' ')}measured ones priced as measured together"
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
