#!/bin/sh
# tests/cross_vendor.sh: the plan-invariance suites with devices of two
# OpenCL implementations in one process (PoCL and a second platform, e.g.
# Intel's CPU runtime from scripts/install-intel-opencl.sh).
#
# make check shows the tests PoCL's ICD alone (Makefile.am); this script
# lets the ICD loader read every installed ICD again, finds one device of
# another platform, and reruns the existing suites with MPT_DEVICES naming
# it among three PoCL devices (the set follows MPT_DEVICES's order):
#   tests/check_engine  [P, X, P, P]: PP=2 GPipe, PP=2/3 1F1B, DP=2 (even,
#                       2:1), DP=2 x PP=2: every plan mixes the vendors;
#                       the one-device reference runs on PoCL
#   tests/check_engine  [X, P, P, P] with CLBlast GEMMs: the reference on
#                       the second vendor, CLBlast's kernels on both
#   tests/check_tp      [P, X, P, P]: TP=2 even and uneven, TP x PP, DP x TP,
#                       a TP=2 checkpoint resumed under PP=2 and one device
#   tests/check_gpt     [P, X, P, P]: the GPT under DP, PP, TP, DP x PP and
#                       a PP=2 checkpoint resumed
# Each suite keeps its own tolerance (1e-5 relative per step, see their
# headers).  Then mpt-train saves a checkpoint on one vendor and resumes
# it on the other, both ways: the 12 losses match an uninterrupted run on
# the resuming device within the same 1e-5.
#
# Skips (77) when no device of a second platform exists, saying how to
# install one.
set -u
builddir=${MPT_TOP_BUILDDIR:-.}
srcdir=${MPT_TESTS_SRCDIR:-tests}
topo=${MPT_TOPO:-$builddir/bin/mpt-topo}
train=${MPT_TRAIN:-$builddir/bin/mpt-train}
. "$srcdir/cli_lib.sh"
cli_setup cross-vendor

# Every installed ICD (make check's environment names PoCL's alone), and
# the four one-core PoCL devices the suites ask for themselves.
unset OCL_ICD_VENDORS MPT_DEVICES MPT_BLAS
POCL_DEVICES="pthread pthread pthread pthread"
POCL_MAX_PTHREAD_COUNT=1
export POCL_DEVICES POCL_MAX_PTHREAD_COUNT

# "index driver" of each device, from mpt-topo's table.
run 300 "$topo" --no-profile
[ "$rc" -eq 0 ] || { fail "mpt-topo --no-profile" "exit $rc"; exit 1; }
sed -n '/^Devices/,/^$/p' "$out" | awk '$1 ~ /^[0-9]+$/ { print $1, $2 }' >"$tmp/devices"
pocl=$(awk '$2 == "pocl" { print $1 }' "$tmp/devices" | head -n 3 | tr '\n' ' ')
other=$(awk '$2 != "pocl" { print $1, $2; exit }' "$tmp/devices")
if [ -z "$other" ]; then
    echo "SKIP: no OpenCL device besides PoCL's (clinfo -l lists the platforms);"
    echo "      scripts/install-intel-opencl.sh installs Intel's CPU runtime as a second one"
    exit 77
fi
set -- $pocl
if [ $# -lt 3 ]; then
    fail "PoCL devices" "expected 4 with POCL_DEVICES=\"$POCL_DEVICES\", found: $pocl"
    exit 1
fi
x=${other% *}
echo "# second platform: device $x ($(echo "$other" | cut -d' ' -f2)); PoCL devices $pocl"
mixed="$1,$x,$2,$3"
other_first="$x,$1,$2,$3"

# The set must follow the order asked: the whole point of the runs below.
run 300 env MPT_DEVICES="$mixed" "$topo" --no-profile
order=$(sed -n '/^Devices/,/^$/p' "$out" | awk '$1 ~ /^[0-9]+$/ { printf "%s,", $1 }')
if [ "$order" = "$mixed," ]; then
    ok "MPT_DEVICES=$mixed opens the devices in that order"
else
    fail "MPT_DEVICES=$mixed order" "mpt-topo lists $order"
fi

suite() { # NAME DEVICES [ENV...]: one Check suite on DEVICES
    name=$1 devices=$2
    shift 2
    log=$tmp/$name.$devices.log
    env MPT_DEVICES="$devices" "$@" timeout 900 "$builddir/tests/$name" >"$log" 2>&1
    status=$?
    grep '^# ' "$log" | sed "s/^# /#   /"
    summary=$(grep 'Checks:' "$log")
    if [ "$status" -eq 0 ] && [ -n "$summary" ]; then
        ok "$name on devices $devices $*: $summary"
    else
        echo "FAIL $name on devices $devices $* (exit $status):"
        grep -E ':[FE]:|Checks:' "$log" | head -n 20
        failed=1
    fi
}
suite check_engine "$mixed"
suite check_engine "$other_first" MPT_BLAS=clblast
suite check_tp "$mixed"
suite check_gpt "$mixed"

# ---- a checkpoint saved on one vendor, resumed on the other --------------------------
data=/usr/share/datasets/fashion-mnist
model="$srcdir/../models/mlp-fashion.json"
losses() { sed -n 's/.*"step": \([0-9]*\), "epoch": [0-9]*, "loss": \([^,]*\),.*/\1 \2/p' "$1"; }
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
    echo "# $data not installed: the mpt-train checkpoint part is left out"
else
    common="--model $model --batch 64 --optimizer adamw --schedule constant"
    for pair in "$x $1" "$1 $x"; do
        from=${pair% *} to=${pair#* }
        # shellcheck disable=SC2086
        "$train" $common --devices "$to" --steps 12 --metrics "$tmp/whole.jsonl" \
            >"$tmp/whole.out" 2>&1 || fail "uninterrupted run on $to" "$(tail -n 1 "$tmp/whole.out")"
        rm -rf "$tmp/ck"
        # shellcheck disable=SC2086
        "$train" $common --devices "$from" --steps 6 --checkpoint "$tmp/ck" \
            --metrics "$tmp/first.jsonl" >"$tmp/first.out" 2>&1 ||
            fail "first half on $from" "$(tail -n 1 "$tmp/first.out")"
        # shellcheck disable=SC2086
        "$train" $common --devices "$to" --steps 12 --checkpoint "$tmp/ck" --resume \
            --metrics "$tmp/second.jsonl" >"$tmp/second.out" 2>&1 ||
            fail "resumed half on $to" "$(tail -n 1 "$tmp/second.out")"
        losses "$tmp/whole.jsonl" >"$tmp/whole.losses"
        { losses "$tmp/first.jsonl"; losses "$tmp/second.jsonl"; } >"$tmp/split.losses"
        if [ "$(wc -l <"$tmp/split.losses")" -ne 12 ]; then
            fail "checkpoint $from -> $to" "$(wc -l <"$tmp/split.losses") loss lines, expected 12"
        elif worst=$(paste "$tmp/whole.losses" "$tmp/split.losses" | awk '
                { d = $2 - $4; if (d < 0) d = -d; m = $2 < 1 ? 1 : $2; r = d / m
                  if (r > w) w = r; if (r > 1e-5) bad = 1 }
                END { printf "%.2g", w; exit bad }'); then
            ok "checkpoint saved on device $from after 6 steps, resumed on device $to: 12 losses within $worst relative of $to alone"
        else
            fail "checkpoint $from -> $to" "losses differ by $worst: $(paste "$tmp/whole.losses" "$tmp/split.losses" | tr '\n' ';')"
        fi
    done
fi
exit "$failed"
