#!/bin/sh
# tests/check_kernels.sh: `make check-kernels`.  Runs the op and layer tests
# (small shapes: MPT_TEST_SMALL=1) on Oclgrind's simulated OpenCL device
# with its API, out-of-bounds (always on), data-race and
# uninitialised-memory checks, and fails on any finding or failed test.
#
# Oclgrind's runtime is preloaded in place of the ICD loader, so the tests
# see its one device alone ("Oclgrind Simulator", GPU type: CLBlast GEMMs,
# and the host provider where a test asks for it).  The checks are
# switched on by Oclgrind's environment variables (what `oclgrind
# --check-api --data-races --uninitialized` sets) because the runtime is
# preloaded here directly, after tests/oclgrind_whole_writes.so: that
# library makes every host store into a buffer a store of the whole
# buffer, working around Oclgrind's uninitialised checker, which replaces
# a buffer's whole shadow on a partial host write and then reports reads
# of data written by the host; it also ends each test process before the
# library destructors, as CLBlast's release of its programs corrupts the
# heap under Oclgrind (see its header and docs/vendors.md).
# mpt's kernels are built unoptimised (MPT_CL_BUILD_OPTIONS=-cl-opt-disable):
# Oclgrind 21.10's uninitialised checker stops with "Unsupported
# instruction: freeze" on the freeze that clang's optimiser puts beside a
# division and remainder pair (mpt_dropout, mpt_conv_col2im; supported
# upstream after 21.10), and the unoptimised code is the source as written.
#
# The cases (Check test cases, CK_RUN_CASE; times in docs/vendors.md):
#   check_ops        elementwise, activations, loss, optim, blas
#   check_ops_conv   layer norm, max pooling, dropout, im2col/col2im
#   check_nn         every layer kind forward and backward, small shapes
#   check_parity     the tiny MLP and CNN against PyTorch's fixtures
#                    (forward, backward, SGD and AdamW steps), and the tiny
#                    GPT's forward and backward (embedding, causal softmax,
#                    attention GEMMs); its training steps (case gpt_training)
#                    are left out: minutes each, their kernels run above
# MPT_CHECK_KERNELS_CASES="suite:case ..." overrides the list.  First,
# tests/oclgrind_canary.c must draw one report from each check.
#
# Not part of `make check` (minutes, and oclgrind is optional); skips (77)
# when oclgrind is not installed (apt-get install oclgrind).
set -u
builddir=${MPT_TOP_BUILDDIR:-.}
srcdir=${MPT_TESTS_SRCDIR:-tests}
if ! command -v oclgrind >/dev/null 2>&1; then
    echo "SKIP: oclgrind is not installed (apt-get install oclgrind)"
    exit 77
fi
# Oclgrind's runtime library: OCLGRIND_RT, else beside the oclgrind
# program as Debian (lib/oclgrind/) and upstream's install (lib/) put it.
prefix=$(dirname "$(dirname "$(readlink -f "$(command -v oclgrind)")")")
rt=${OCLGRIND_RT:-}
for candidate in "$prefix/lib/oclgrind/liboclgrind-rt.so" "$prefix/lib/liboclgrind-rt.so"; do
    [ -z "$rt" ] && [ -f "$candidate" ] && rt=$candidate
done
if [ -z "$rt" ] || [ ! -f "$rt" ]; then
    echo "FAIL: liboclgrind-rt.so not found under $prefix/lib (set OCLGRIND_RT)"
    exit 1
fi
cases=${MPT_CHECK_KERNELS_CASES:-"check_ops:elementwise check_ops:activations check_ops:loss
    check_ops:optim check_ops:blas check_ops_conv:ops_conv check_nn:layers
    check_parity:pytorch check_parity:gpt"}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpt-check-kernels.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
shim=$tmp/oclgrind_whole_writes.so
# shellcheck disable=SC2086 # OPENCL_CFLAGS is a list of flags
if ! ${CC:-cc} -shared -fPIC ${OPENCL_CFLAGS:-} -o "$shim" "$srcdir/oclgrind_whole_writes.c" \
    -ldl; then
    echo "FAIL: could not build $srcdir/oclgrind_whole_writes.c"
    exit 1
fi
# shellcheck disable=SC2086
if ! ${CC:-cc} ${OPENCL_CFLAGS:-} -o "$tmp/canary" "$srcdir/oclgrind_canary.c" \
    ${OPENCL_LIBS:--lOpenCL}; then
    echo "FAIL: could not build $srcdir/oclgrind_canary.c"
    exit 1
fi
unset MPT_DEVICES MPT_BLAS
MPT_TEST_SMALL=1 MPT_CL_BUILD_OPTIONS=-cl-opt-disable
OCLGRIND_CHECK_API=1 OCLGRIND_DATA_RACES=1 OCLGRIND_UNINITIALIZED=1
export MPT_TEST_SMALL MPT_CL_BUILD_OPTIONS
export OCLGRIND_CHECK_API OCLGRIND_DATA_RACES OCLGRIND_UNINITIALIZED
failed=0 total_start=$(date +%s)
# The canary's four deliberate errors must each be reported: the checks
# are live, so the tests' "0 findings" below means something.
LD_PRELOAD="$shim:$rt" "$tmp/canary" >"$tmp/canary.log" 2>&1
status=$?
for expected in '^Oclgrind - OpenCL runtime error' '^Invalid read' '^Uninitialized value' \
    'data race'; do
    if [ "$status" -ne 0 ] || ! grep -qE "$expected" "$tmp/canary.log"; then
        echo "FAIL: the canary's error ($expected) was not reported (exit $status):"
        head -n 20 "$tmp/canary.log"
        exit 1
    fi
done
echo "ok   canary: API misuse, out-of-bounds, uninitialised read and data race reported"
for item in $cases; do
    suite=${item%%:*} case=${item#*:}
    log=$tmp/$suite.$case.log
    start=$(date +%s)
    CK_RUN_CASE=$case LD_PRELOAD="$shim:$rt" timeout 900 "$builddir/tests/$suite" >"$log" 2>&1
    status=$?
    took=$(($(date +%s) - start))
    # Each Oclgrind finding names its kernel ("\tKernel: name"); API misuse
    # and limits are reported on lines starting "Oclgrind", what it cannot
    # check on "OCLGRIND FATAL ERROR" (which names the kernel too).
    findings=$(grep -cE '^[[:space:]]+Kernel: |^Oclgrind|^OCLGRIND|runtime error' "$log")
    summary=$(grep 'Checks:' "$log")
    if [ "$status" -eq 0 ] && [ "$findings" -eq 0 ] && [ -n "$summary" ]; then
        echo "ok   $suite $case under oclgrind (${took} s): $summary, 0 findings"
    else
        echo "FAIL $suite $case under oclgrind (exit $status, $findings finding lines, ${took} s):"
        head -n 40 "$log"
        failed=1
    fi
done
echo "# $(($(date +%s) - total_start)) s in all"
exit "$failed"
