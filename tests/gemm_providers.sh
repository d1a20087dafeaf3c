#!/bin/sh
# The GEMM providers end to end (lib/device/gemm.h):
# - mpt-topo shows the provider MPT_BLAS asks for;
# - mpt-bench gemm --quick prints a row of four positive figures per shape
#   (CLBlast, host, host queued, BLAS),
#   and exits 2 on a usage error;
# - the model-level suites once more with every GEMM on CLBlast
# (MPT_BLAS=clblast): `make check` runs them with the default provider,
# which on PoCL's CPU devices is the host BLAS (lib/device/gemm.h), and
# GPUs run CLBlast, so parity with PyTorch (check_parity, check_nn) and
# plan invariance (check_train, check_engine, check_tp, check_gpt) must
# hold under both.  The op suites loop over both providers themselves.
set -u
builddir=${MPT_TOP_BUILDDIR:-.}
topo=${MPT_TOPO:-$builddir/bin/mpt-topo}
failed=0
# MPT_BLAS must reach the devices: mpt-topo shows each one's provider.
if MPT_BLAS=clblast "$topo" --no-profile 2>&1 | grep -q ' clblast '; then
    echo "ok   mpt-topo shows the clblast provider under MPT_BLAS=clblast"
else
    echo "FAIL mpt-topo does not show the clblast provider under MPT_BLAS=clblast"
    failed=1
fi
bench=${MPT_BENCH:-$builddir/bin/mpt-bench}
rows=$("$bench" gemm --quick --repeats 1 --min-ms 1 2>&1 |
       awk '$NF ~ /x$/ && $(NF-3) + 0 > 0 && $(NF-4) + 0 > 0 && $(NF-5) + 0 > 0 && $(NF-6) + 0 > 0' |
       wc -l)
if [ "$rows" -eq 4 ]; then
    echo "ok   mpt-bench gemm --quick: 4 rows of positive figures"
else
    echo "FAIL mpt-bench gemm --quick: $rows rows of positive figures, expected 4"
    failed=1
fi
"$bench" gemm --no-such-option >/dev/null 2>&1
rc=$?
if [ "$rc" -eq 2 ]; then
    echo "ok   mpt-bench gemm --no-such-option: exit 2"
else
    echo "FAIL mpt-bench gemm --no-such-option: exit $rc, expected 2"
    failed=1
fi
for suite in check_parity check_nn check_train check_engine check_tp check_gpt; do
    if MPT_BLAS=clblast "$builddir/tests/$suite" >"$builddir/tests/gemm_providers-$suite.log" 2>&1; then
        echo "ok   $suite with MPT_BLAS=clblast"
    else
        echo "FAIL $suite with MPT_BLAS=clblast (see tests/gemm_providers-$suite.log)"
        tail -5 "$builddir/tests/gemm_providers-$suite.log"
        failed=1
    fi
done
exit $failed
