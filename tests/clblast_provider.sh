#!/bin/sh
# The model-level suites once more with every GEMM on CLBlast
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
for suite in check_parity check_nn check_train check_engine check_tp check_gpt; do
    if MPT_BLAS=clblast "$builddir/tests/$suite" >"$builddir/tests/clblast_provider-$suite.log" 2>&1; then
        echo "ok   $suite with MPT_BLAS=clblast"
    else
        echo "FAIL $suite with MPT_BLAS=clblast (see tests/clblast_provider-$suite.log)"
        tail -5 "$builddir/tests/clblast_provider-$suite.log"
        failed=1
    fi
done
exit $failed
