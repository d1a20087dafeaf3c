#!/bin/sh
# tests/plan_cli.sh: end-to-end checks of mpt-plan.
# - on a shipped cluster file: --json prints a plan (checked with python3's
#   json module when /usr/bin/python3 exists, else by its keys), --explain
#   lists the alternatives, --trace writes a Chrome trace;
# - without --cluster it plans for this machine's devices (two PoCL devices
#   under make check; MPT_PROFILE_QUICK=1 keeps their profiling short);
# - mpt-bench plan runs a small generated case, and refuses a device count
#   its template cannot make;
# - a cluster too small for the model and an impossible pin (--dp 3 on 4
#   devices) exit 1 with one stderr line naming the problem and nothing on
#   stdout; usage errors exit 2; --help exits 0.
# Every run is bounded by `timeout` (60 s, 300 s for the local profiling).
#
# Environment (set by `make check`): MPT_PLAN, the mpt-plan to test
# (default ./bin/mpt-plan); MPT_TESTS_SRCDIR, the tests/ source directory.
set -u
plan=${MPT_PLAN:-./bin/mpt-plan}
srcdir=${MPT_TESTS_SRCDIR:-tests}
model="$srcdir/../models/mlp-fashion.json"
cluster="$srcdir/../models/clusters/node-2nvidia-2amd.json"
if [ ! -x "$plan" ]; then
    echo "FAIL: mpt-plan not found or not executable: $plan (set MPT_PLAN)"
    exit 1
fi

# What the user might have set must not change the cases below.
unset MPT_DEVICES MPT_PLAN_DEBUG

. "$srcdir/cli_lib.sh"
cli_setup plan-cli

# expect_exit NAME STATUS: $rc must be STATUS (and not a timeout).
expect_exit() {
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        fail "$1" "timed out"
        return 1
    fi
    if [ "$rc" -ne "$2" ]; then
        fail "$1" "exit status $rc, expected $2"
        return 1
    fi
    return 0
}

# ---- a plan for a cluster file ----------------------------------------------------
run 60 "$plan" --model "$model" --cluster "$cluster" --json --all-devices
if expect_exit "--json" 0; then
    if ! grep -q '"dp"' "$out" || ! grep -q '"replicas"' "$out"; then
        fail "--json" "no \"dp\" or \"replicas\" key"
    elif [ -x /usr/bin/python3 ] &&
        ! /usr/bin/python3 -c 'import json, sys; p = json.load(open(sys.argv[1])); assert p["dp"] * p["pp"] * p["tp"] == 4 and len(p["replicas"]) == p["dp"]' "$out" 2>"$tmp/py"; then
        fail "--json" "not a plan of 4 devices: $(tail -n 1 "$tmp/py")"
    else
        ok "--json prints a plan with \"dp\" and \"replicas\""
    fi
fi

run 60 "$plan" --model "$model" --cluster "$cluster" --explain
if expect_exit "--explain" 0; then
    # The header, then at least one configuration line under it.
    if grep -q '^Plan: dp=' "$out" &&
        [ "$(sed -n '/^Alternatives (/,$p' "$out" | grep -c '^  dp=')" -ge 1 ]; then
        ok "--explain lists the alternatives"
    else
        fail "--explain" "no \"Plan:\" line or no \"Alternatives\" section with a configuration"
    fi
fi

run 60 "$plan" --model "$model" --cluster "$cluster" --trace "$tmp/trace.json"
if expect_exit "--trace" 0; then
    if [ "$(head -c 14 "$tmp/trace.json" 2>/dev/null)" = '{"traceEvents"' ]; then
        ok "--trace writes a Chrome trace"
    else
        fail "--trace" "$tmp/trace.json does not start with {\"traceEvents\""
    fi
fi

# ---- this machine's devices -------------------------------------------------------
run 300 env MPT_PROFILE_QUICK=1 "$plan" --model "$model"
if expect_exit "local devices" 0; then
    if grep -q '^Plan: ' "$out" && grep -q 'this machine' "$out"; then
        ok "plans for this machine's devices without --cluster"
    else
        fail "local devices" "no \"Plan:\" line for this machine"
    fi
fi

# ---- failures: exit 1, one line on stderr, nothing on stdout ------------------------
# one_line_failure NAME NEEDLE...: checks the last run.
one_line_failure() {
    name=$1
    shift
    expect_exit "$name" 1 || return
    if [ -s "$out" ]; then
        fail "$name" "wrote to stdout"
        return
    fi
    if [ "$(lines "$err")" -ne 1 ]; then
        fail "$name" "$(lines "$err") lines on stderr, expected 1"
        return
    fi
    for needle in "$@"; do
        if ! grep -q -- "$needle" "$err"; then
            fail "$name" "stderr does not mention '$needle'"
            return
        fi
    done
    ok "$name: exit 1, $(cat "$err")"
}

cat >"$tmp/small.json" <<'EOF'
{"mpt_cluster": 1, "name": "small", "devices": [
 {"name": "tiny0", "type": "gpu", "global_mem_bytes": 1000, "profile":
  {"gemm_gflops": 1000, "mem_gbps": 100, "h2d_gbps": 10, "d2h_gbps": 10}},
 {"name": "tiny1", "type": "gpu", "global_mem_bytes": 1000, "profile":
  {"gemm_gflops": 1000, "mem_gbps": 100, "h2d_gbps": 10, "d2h_gbps": 10}}]}
EOF
run 60 "$plan" --model "$model" --cluster "$tmp/small.json"
one_line_failure "too small a cluster" "device [0-9]" "[0-9] bytes"

run 60 "$plan" --model "$model" --cluster "$cluster" --dp 3 --all-devices
one_line_failure "--dp 3 on 4 devices" "pinned" "4 device"

# ---- usage --------------------------------------------------------------------------
run 60 "$plan" --model "$model" --cluster "$cluster" --no-such-option
expect_exit "unknown option" 2 && ok "unknown option: exit 2"
run 60 "$plan" --cluster "$cluster"
expect_exit "missing --model" 2 && ok "missing --model: exit 2"
run 60 "$plan" --help
if expect_exit "--help" 0; then
    if grep -q 'Usage' "$out"; then
        ok "--help: exit 0 with Usage"
    else
        fail "--help" "no Usage on stdout"
    fi
fi

# ---- mpt-bench plan: a small generated case runs and prints both parts --------------
bench=${MPT_BENCH:-./bin/mpt-bench}
if [ -x "$bench" ]; then
    run 120 "$bench" plan --layers 8 --devices 16 --repeat 1 --cluster "$cluster"
    if expect_exit "mpt-bench plan" 0; then
        if grep -q 'planning 8 layers on 16 devices' "$out" &&
            grep -q '^node-2nvidia-2amd .*x$' "$out"; then
            ok "mpt-bench plan: timing and a comparison row"
        else
            fail "mpt-bench plan" "no timing line or no node-2nvidia-2amd row"
        fi
    fi
    run 60 "$bench" plan --devices 12
    expect_exit "mpt-bench plan --devices 12" 2 &&
        ok "mpt-bench plan --devices 12 (not a multiple of 8): exit 2"
    run 60 "$bench" no-such-command
    expect_exit "mpt-bench no-such-command" 2 && ok "mpt-bench unknown command: exit 2"
else
    fail "mpt-bench" "not found: $bench (set MPT_BENCH)"
fi

exit $failed
