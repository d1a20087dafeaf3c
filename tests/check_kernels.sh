#!/bin/sh
# tests/check_kernels.sh: `make check-kernels`.  Runs op tests (small
# shapes) on Oclgrind's simulated OpenCL device with its API,
# out-of-bounds (always on), data-race and uninitialised-memory checks, and
# fails on any finding or failed test.  Oclgrind replaces the ICD loader
# in the process (LD_PRELOAD), so the tests see its one device alone.
#
# Which cases: Oclgrind interprets every work-item, so the whole of
# tests/check_ops takes more than 8 minutes here (CLBlast's GEMM kernels
# dominate); the cases below are the custom kernels of kernels/*.cl that
# finish within a minute each (elementwise 18 s, activations 47 s, loss
# under 1 s, measured on the loaded 2-core machine).  CK_RUN_CASE picks one Check test case.
# MPT_CHECK_KERNELS_CASES="suite:case ..." overrides the list.
#
# Not part of `make check` (minutes, and oclgrind is optional); skips (77)
# when oclgrind is not installed (apt-get install oclgrind).
set -u
builddir=${MPT_TOP_BUILDDIR:-.}
if ! command -v oclgrind >/dev/null 2>&1; then
    echo "SKIP: oclgrind is not installed (apt-get install oclgrind)"
    exit 77
fi
cases=${MPT_CHECK_KERNELS_CASES:-"check_ops:elementwise check_ops:activations check_ops:loss"}
# Left out: check_ops:optim (Oclgrind 21.10 reports "uninitialized value
# written" in mpt_sgd_momentum and mpt_adamw although every input buffer is
# written first: see docs/vendors.md), check_ops:blas (CLBlast, too slow).
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpt-check-kernels.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
unset MPT_DEVICES MPT_BLAS
failed=0
for item in $cases; do
    suite=${item%%:*} case=${item#*:}
    log=$tmp/$suite.$case.log
    start=$(date +%s)
    CK_RUN_CASE=$case timeout 900 oclgrind --check-api --data-races --uninitialized \
        "$builddir/tests/$suite" >"$log" 2>&1
    status=$?
    took=$(($(date +%s) - start))
    # Each Oclgrind finding names its kernel ("\tKernel: name"); API misuse
    # and limits are reported on lines starting "Oclgrind".
    findings=$(grep -cE '^[[:space:]]+Kernel: |^Oclgrind|runtime error' "$log")
    summary=$(grep 'Checks:' "$log")
    if [ "$status" -eq 0 ] && [ "$findings" -eq 0 ] && [ -n "$summary" ]; then
        echo "ok   $suite $case under oclgrind (${took} s): $summary, 0 findings"
    else
        echo "FAIL $suite $case under oclgrind (exit $status, $findings finding lines, ${took} s):"
        head -n 40 "$log"
        failed=1
    fi
done
exit "$failed"
