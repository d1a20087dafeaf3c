#!/bin/sh
# mpt-bench train end to end, short: on the suite's two devices, --rounds 2
# prints "round 1 of 2" and "round 2 of 2", then a median table with the
# one-device row and the data-parallel row: positive samples/s, the one
# device's scaling exactly 1.00x over both rounds (each round's own
# one-device row is its reference), the data-parallel median within its
# range; the closing lines count all 12 rows after calibration; --rounds
# 0 is a usage error (exit 2).
set -u
. "${MPT_TESTS_SRCDIR:-$(dirname "$0")}/cli_lib.sh"
cli_setup bench-train
bench=${MPT_BENCH:-${MPT_TOP_BUILDDIR:-.}/bin/mpt-bench}
check() { # description, condition result (0: holds)
    if [ "$2" -eq 0 ]; then ok "$1"; else fail "$1" "see the output"; fi
}
run 600 "$bench" train --batch 64 --steps 2 --warmup 1 --rounds 2
check "mpt-bench train --rounds 2 exits 0 (got $rc)" "$rc"
grep -q '^round 1 of 2$' "$out" && grep -q '^round 2 of 2$' "$out"
check "both rounds announced" $?
awk '/^median over 2 rounds/ { table = 1; next } table && /^1 device/ { print }' "$out" |
    grep -Eq ' [1-9][0-9]*  1\.00x \(1\.00-1\.00\)'
check "median table: one device, positive samples/s, scaling 1.00x (1.00-1.00)" $?
awk '/^median over 2 rounds/ { table = 1; next }
     table && /^DP \(dp=2/ { if ($(NF - 6) + 0 > 0) ok = 1 } END { exit !ok }' "$out"
check "median table: data parallel over both devices, positive samples/s" $?
# Its scaling: the median within its range, "1.76x (1.73-1.80)".
awk '/^median over 2 rounds/ { table = 1; next }
     table && /^DP \(dp=2/ { m = $(NF - 5) + 0; split($(NF - 4), r, /[()-]/)
                             if (r[2] + 0 <= m && m <= r[3] + 0) ok = 1 } END { exit !ok }' "$out"
check "median table: the data-parallel scaling lies within its range" $?
grep -Eq '^after calibration: [0-9]+ of 12 rows within 15%' "$out"
check "every row of both rounds counted after calibration" $?
run 60 "$bench" train --rounds 0
[ "$rc" -eq 2 ]
check "mpt-bench train --rounds 0: exit 2 (got $rc)" $?
exit "$failed"
