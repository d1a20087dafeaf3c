#!/bin/sh
# tests/nonfinite_cli.sh: what mpt-train does with non-finite numbers
# (issue 21, docs/reliability.md), with MPT_FAIL_NONFINITE making every
# gradient of chosen steps NaN as a diverging step's would be:
# - --on-nonfinite skip: the bad step applies no update, its metrics line
#   says "skipped": "nonfinite", the later ones count it, exit 0, on one
#   device and on two data-parallel replicas;
# - the default (stop) still ends the run, exit 1, naming the step;
# - skip ends the run past --max-skips bad steps in a row, naming them;
# - a finite loss 100 times the first step's is warned of (--lr 10);
# - a checkpoint holding NaN (tests/nan_checkpoint.py) is refused on
#   resume, and loaded with a warning under --allow-nonfinite-checkpoint;
# - usage errors: an unknown policy, --max-skips without skip,
#   --allow-nonfinite-checkpoint without --resume.
# (That a skipped step equals a run without it, number for number, is
# tests/check_nonfinite.c's.)
set -u
train=${MPT_TRAIN:-./bin/mpt-train}
srcdir=${MPT_TESTS_SRCDIR:-tests}
data=/usr/share/datasets/fashion-mnist
model="$srcdir/../models/mlp-fashion.json"
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
    echo "SKIP: $data not installed (apt-get install dataset-fashion-mnist)"
    exit 77
fi
MPT_DEVICES=0
export MPT_DEVICES
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpt-nonfinite.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failed=1; }
common="--model $model --batch 64 --schedule constant"

# The JSON of a metrics file's step lines: "step skipped skipped_steps" each.
step_lines() {
    python3 -c '
import json, sys
for line in open(sys.argv[1]):
    o = json.loads(line)
    if "loss" in o:
        print(o["step"], o.get("skipped", "-"), o.get("skipped_steps", 0))
' "$1"
}

# ---- skip, on one device and on two replicas --------------------------------------
for where in "--devices 0" "--devices 0,1 --dp 2"; do
    MPT_FAIL_NONFINITE=3 "$train" $common $where --steps 6 --on-nonfinite skip \
        --metrics "$tmp/skip.jsonl" >"$tmp/skip.out" 2>"$tmp/skip.err"
    rc=$?
    lines=$(step_lines "$tmp/skip.jsonl" | tr '\n' ',')
    want="1 - 0,2 - 0,3 nonfinite 1,4 - 1,5 - 1,6 - 1,"
    if [ "$rc" -eq 0 ] && [ "$lines" = "$want" ]; then
        ok "--on-nonfinite skip, $where: step 3 skipped and counted, exit 0"
    else
        fail "skip, $where: exit $rc, lines '$lines' (want '$want'): $(tail -n 1 "$tmp/skip.err")"
    fi
done

# ---- stop, the default ------------------------------------------------------------
MPT_FAIL_NONFINITE=3 "$train" $common --steps 6 >"$tmp/stop.out" 2>"$tmp/stop.err"
rc=$?
# The NaN update is applied (stop decides after the step): step 4's loss is NaN.
if [ "$rc" -eq 1 ] && grep -q "step 4: the loss is nan: training diverged" "$tmp/stop.err"; then
    ok "stop (the default): exit 1, $(sed -n 's/.*\(step 4: the loss is nan\).*/\1/p' "$tmp/stop.err")"
else
    fail "stop: exit $rc: $(tail -n 1 "$tmp/stop.err")"
fi

# ---- too many skips in a row ------------------------------------------------------
MPT_FAIL_NONFINITE=2,3,4 "$train" $common --steps 6 --on-nonfinite skip --max-skips 2 \
    >"$tmp/many.out" 2>"$tmp/many.err"
rc=$?
if [ "$rc" -eq 1 ] && grep -q "step 4: .*3 steps in a row were not finite (at most 2" "$tmp/many.err"; then
    ok "--max-skips 2: the third bad step in a row ends the run, exit 1"
else
    fail "--max-skips 2: exit $rc: $(tail -n 1 "$tmp/many.err")"
fi

# ---- a finite loss far above the first: said --------------------------------------
"$train" $common --lr 10 --steps 4 >/dev/null 2>"$tmp/huge.err"
rc=$?
if [ "$rc" -eq 0 ] && grep -q "warning: step [0-9]*: the loss .* is over 100 times the first step's" "$tmp/huge.err"; then
    ok "--lr 10: $(sed -n 's/.*warning: \(step [0-9]*: the loss [^ ]*\) .*/\1/p' "$tmp/huge.err") is warned of"
else
    fail "--lr 10: exit $rc, no warning: $(cat "$tmp/huge.err")"
fi

# ---- a checkpoint holding NaN -----------------------------------------------------
mkdir "$tmp/nan"
"$train" $common --steps 2 --checkpoint "$tmp/good" >/dev/null 2>"$tmp/good.err" ||
    fail "writing a checkpoint: $(tail -n 1 "$tmp/good.err")"
python3 "$srcdir/nan_checkpoint.py" "$tmp/good/checkpoint.safetensors" \
    "$tmp/nan/checkpoint.safetensors" || fail "tests/nan_checkpoint.py failed"
"$train" $common --steps 4 --checkpoint "$tmp/nan" --resume >/dev/null 2>"$tmp/refused.err"
rc=$?
if [ "$rc" -eq 1 ] && grep -q "1 of the .* parameters are not finite (the first: float 0 is nan).*not loaded" "$tmp/refused.err"; then
    ok "a NaN checkpoint is refused on resume, exit 1"
else
    fail "a NaN checkpoint: exit $rc: $(tail -n 1 "$tmp/refused.err")"
fi
"$train" $common --steps 4 --checkpoint "$tmp/nan" --resume --allow-nonfinite-checkpoint \
    >/dev/null 2>"$tmp/allowed.err"
rc=$?
if [ "$rc" -eq 1 ] && grep -q "warning: .*not finite .*loaded anyway" "$tmp/allowed.err" &&
    grep -q "step 3: the loss is nan" "$tmp/allowed.err"; then
    ok "--allow-nonfinite-checkpoint loads it with a warning (its next step then diverges)"
else
    fail "--allow-nonfinite-checkpoint: exit $rc: $(cat "$tmp/allowed.err")"
fi

# ---- usage errors -----------------------------------------------------------------
usage() {
    "$train" $common --steps 1 "$@" >/dev/null 2>"$tmp/usage.err"
    rc=$?
    if [ "$rc" -eq 2 ]; then ok "$*: usage error"; else fail "$*: exit $rc, expected 2"; fi
}
usage --on-nonfinite ignore
usage --max-skips 3
usage --on-nonfinite skip --max-skips 0
usage --allow-nonfinite-checkpoint

[ "$failed" -eq 0 ] && echo "nonfinite_cli.sh: all checks passed"
exit "$failed"
