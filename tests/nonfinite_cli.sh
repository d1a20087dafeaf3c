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
#   resume, and loaded with a warning under --allow-nonfinite-checkpoint,
#   after which training diverges at once and --sample refuses the NaN
#   logits of a language model;
# - usage errors: an unknown policy, --max-skips without skip or of 0,
#   --allow-nonfinite-checkpoint without --resume.
# (That a skipped step equals a run without it, number for number, is
# tests/check_nonfinite.c's.)
. "${MPT_TESTS_SRCDIR:-$(dirname "$0")}/cli_lib.sh"
cli_setup nonfinite-cli
train=${MPT_TRAIN:-./bin/mpt-train}
srcdir=${MPT_TESTS_SRCDIR:-tests}
cli_need_fashion
model="$srcdir/../models/mlp-fashion.json"
base="--model $model --batch 64 --schedule constant"
common="$base --devices 0"

# A metrics file's step lines as "step skipped skipped_steps", one per line.
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
    run 300 env MPT_FAIL_NONFINITE=3 "$train" $base $where --steps 6 --on-nonfinite skip \
        --metrics "$tmp/skip.jsonl"
    lines=$(step_lines "$tmp/skip.jsonl" | tr '\n' ',')
    want="1 - 0,2 - 0,3 nonfinite 1,4 - 1,5 - 1,6 - 1,"
    if [ "$rc" -eq 0 ] && [ "$lines" = "$want" ]; then
        ok "--on-nonfinite skip, $where: step 3 skipped and counted, exit 0"
    else
        fail "--on-nonfinite skip, $where" "exit $rc, lines '$lines', want '$want'"
    fi
done

# ---- stop, the default: the NaN update is applied, step 4's loss is NaN ------------
run 300 env MPT_FAIL_NONFINITE=3 "$train" $common --steps 6
if [ "$rc" -eq 1 ] && grep -q "step 4: the loss is nan: training diverged" "$err"; then
    ok "stop (the default): exit 1 at step 4, whose loss is NaN"
else
    fail "stop (the default)" "exit $rc"
fi

# ---- too many skips in a row -------------------------------------------------------
run 300 env MPT_FAIL_NONFINITE=2,3,4 "$train" $common --steps 6 --on-nonfinite skip --max-skips 2
if [ "$rc" -eq 1 ] && grep -q "step 4: .*3 steps in a row were not finite (at most 2" "$err"; then
    ok "--max-skips 2: the third bad step in a row ends the run, exit 1"
else
    fail "--max-skips 2" "exit $rc"
fi

# ---- a finite loss far above the first -----------------------------------------------
run 300 "$train" $common --lr 10 --steps 4
if [ "$rc" -eq 0 ] && grep -q "warning: step [0-9]*: the loss .* is over 100 times the first step's" "$err"; then
    ok "--lr 10: $(sed -n 's/.*warning: \(step [0-9]*: the loss [^ ]*\) .*/\1/p' "$err") is warned of"
else
    fail "--lr 10: a loss far above the first" "exit $rc, no warning"
fi

# ---- a checkpoint holding NaN ------------------------------------------------------
mkdir "$tmp/nan"
run 300 "$train" $common --steps 2 --checkpoint "$tmp/good"
[ "$rc" -eq 0 ] || fail "writing a checkpoint" "exit $rc"
python3 "$srcdir/nan_checkpoint.py" "$tmp/good/checkpoint.safetensors" \
    "$tmp/nan/checkpoint.safetensors" || fail "tests/nan_checkpoint.py" "failed"
run 300 "$train" $common --steps 4 --checkpoint "$tmp/nan" --resume
if [ "$rc" -eq 1 ] &&
    grep -q "200704 of the 247766 parameters are not finite (the first: float 0 is nan).*not loaded" "$err"; then
    ok "a NaN checkpoint is refused on resume, exit 1"
else
    fail "a NaN checkpoint" "exit $rc"
fi
run 300 "$train" $common --steps 4 --checkpoint "$tmp/nan" --resume --allow-nonfinite-checkpoint
if [ "$rc" -eq 1 ] && grep -q "warning: .*not finite .*loaded anyway" "$err" &&
    grep -q "step 3: the loss is nan" "$err"; then
    ok "--allow-nonfinite-checkpoint loads it with a warning (its next step then diverges)"
else
    fail "--allow-nonfinite-checkpoint" "exit $rc"
fi

# A language model's: --sample from it alone refuses the NaN logits.
text=$tmp/text.txt
i=0
while [ $i -lt 300 ]; do
    echo "line $i of a generated text, for the language model." >>"$text"
    i=$((i + 1))
done
lm="--model $srcdir/../models/gpt-micro.json --data $text --batch 4 --devices 0"
run 300 "$train" $lm --steps 2 --checkpoint "$tmp/lm"
[ "$rc" -eq 0 ] || fail "writing gpt-micro's checkpoint" "exit $rc"
mkdir "$tmp/lmnan"
python3 "$srcdir/nan_checkpoint.py" "$tmp/lm/checkpoint.safetensors" \
    "$tmp/lmnan/checkpoint.safetensors" || fail "tests/nan_checkpoint.py on gpt-micro" "failed"
run 300 "$train" $lm --steps 2 --checkpoint "$tmp/lmnan" --resume --allow-nonfinite-checkpoint \
    --sample 5
if [ "$rc" -eq 1 ] && grep -q "loaded anyway" "$err" && grep -q "logit [0-9]* of token 0 is nan" "$err"; then
    ok "--allow-nonfinite-checkpoint --sample: $(grep -o "logit [0-9]* of token 0 is nan[^;]*" "$err")"
else
    fail "sampling from a NaN checkpoint" "exit $rc"
fi

# ---- usage errors ------------------------------------------------------------------
for args in "--on-nonfinite ignore" "--max-skips 3" "--on-nonfinite skip --max-skips 0" \
    "--allow-nonfinite-checkpoint"; do
    run 60 "$train" $common --steps 1 $args
    if [ "$rc" -eq 2 ]; then ok "$args: usage error"; else fail "$args" "exit $rc, expected 2"; fi
done

[ "$failed" -eq 0 ] && echo "nonfinite_cli.sh: all checks passed"
exit "$failed"
