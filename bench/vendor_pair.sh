#!/bin/sh
# PoCL and Intel's OpenCL CPU runtime as one pair (docs/vendors.md, issue
# 25 part 3): mpt-bench train on both devices (one device, DP, PP, TP and
# the planner's choice) against each device alone, alternating
# pair, PoCL alone, Intel alone in every round so that a drift of the
# machine's load shifts the three alike.  Both devices share the same cores.
#
#   bench/vendor_pair.sh [ROUNDS] [STEPS]
#
# Run from a built tree with Intel's runtime installed
# (scripts/install-intel-opencl.sh).  The ICD loader reads every installed
# ICD (OCL_ICD_VENDORS unset, as tests/cross_vendor.sh does) and each
# device is chosen by its driver word, not by an index: the platforms'
# order is not stable.  Each row is the median of STEPS timed steps (and
# STEPS more, dealt between them, that test its calibration).
set -eu
rounds=${1:-3}
steps=${2:-20}
bench=${MPT_BENCH:-bin/mpt-bench}
unset OCL_ICD_VENDORS MPT_DEVICES MPT_BLAS POCL_DEVICES POCL_MAX_PTHREAD_COUNT
echo "# load before: $(cat /proc/loadavg)"
round=1
while [ "$round" -le "$rounds" ]; do
    for devices in pocl,intel pocl intel; do
        echo "## round $round, devices $devices"
        "$bench" train --steps "$steps" --devices "$devices"
    done
    round=$((round + 1))
done
echo "# load after: $(cat /proc/loadavg)"
