#!/bin/sh
# End-to-end elastic training with mpt-train on two one-core PoCL devices
# (Fashion-MNIST MLP, DP=2; skipped when dataset-fashion-mnist is absent):
# - device 1 lost mid-run (MPT_FAIL_DEVICE): the run finishes all its
#   steps with exit 0, prints one line for the recovery, and the metrics
#   record it ({"step": S, "recovered": {"device": 1, "reason": "lost", ...}}),
#   S at most one snapshot interval before the failure;
# - its last loss equals, within 1e-5 relative (the plan-invariance
#   tolerance, docs/elastic.md), that of an uninterrupted run that trains
#   DP=2 to step S, checkpoints and resumes on device 0 alone;
# - device 0 (replica 0, where evaluations run) lost inside the evaluation
#   after step 12 (--eval-every 12): the run goes back to its snapshot,
#   trains again, evaluates again on device 1 and finishes; that
#   evaluation and the last loss equal those of DP=2 to the snapshot's
#   step, then device 1 alone;
# - in both, the metrics hold every step once, in order (the replayed
#   steps' earlier lines are dropped), and one recovered line;
# - with --no-elastic the same failure ends the run: exit 1, one line
#   naming device 1.
set -u
train=${MPT_TRAIN:-./bin/mpt-train}
srcdir=${MPT_TESTS_SRCDIR:-tests}
data=/usr/share/datasets/fashion-mnist
model="$srcdir/../models/mlp-fashion.json"
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
    echo "SKIP: $data not installed (apt-get install dataset-fashion-mnist)"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpt-elastic-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failed=1; }
loss_at() { sed -n "s/.*\"step\": $2, \"epoch\": [0-9]*, \"loss\": \([^,]*\),.*/\1/p" "$1" | tail -n 1; }
eval_at() { sed -n "s/.*\"step\": $2, \"epoch\": [0-9]*, \"test_loss\": \([^,]*\),.*/\1/p" "$1"; }
# Every step of FILE's step lines once, 1 to N in order.
steps_once() {
    [ "$(sed -n 's/^{"step": \([0-9]*\), "epoch": [0-9]*, "loss".*/\1/p' "$1" | tr '\n' ' ')" = \
        "$(seq 1 "$2" | tr '\n' ' ')" ]
}
# |a - b| <= 1e-5 max(1, |b|): the plan-invariance tolerance.
same() {
    [ -n "$1" ] && [ -n "$2" ] &&
        awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b;
                                        if (m < 1) m = 1; exit !(d <= 1e-5 * m) }'
}
# The uninterrupted reference: DP=2 to step $1, then device $2 alone
# ($3: the name of its files, $4...: more options), metrics in $tmp/$3.jsonl.
reference() {
    ref_to=$1 survivor=$2 name=$3
    shift 3
    MPT_DEVICES=0,1 "$train" --model "$model" --steps "$ref_to" --batch 64 --optimizer adamw \
        --schedule constant --dp 2 --rebalance-after 0 --checkpoint "$tmp/$name.ck" "$@" \
        >"$tmp/$name.1.out" 2>&1 || fail "$name, first part: $(tail -n 1 "$tmp/$name.1.out")"
    MPT_DEVICES=$survivor "$train" --model "$model" --steps $steps --batch 64 --optimizer adamw \
        --schedule constant --checkpoint "$tmp/$name.ck" --resume --metrics "$tmp/$name.jsonl" \
        "$@" >"$tmp/$name.2.out" 2>&1 || fail "$name, second part: $(tail -n 1 "$tmp/$name.2.out")"
}

steps=24
every=5
# Device 1 is lost after its operation 100 (a step of this model is about
# a dozen operations per device: kernels, GEMMs, reads; so near step 8).
fault=1:100:lost
args="--model $model --steps $steps --batch 64 --optimizer adamw --schedule constant --dp 2
      --rebalance-after 0"

MPT_DEVICES=0,1 MPT_FAIL_DEVICE=$fault "$train" $args --snapshot-every $every \
    --metrics "$tmp/elastic.jsonl" >"$tmp/elastic.out" 2>&1
rc=$?
rec=$(grep '"recovered"' "$tmp/elastic.jsonl" 2>/dev/null)
back=$(echo "$rec" | sed -n 's/^{"step": \([0-9]*\), "recovered".*/\1/p')
replayed=$(echo "$rec" | sed -n 's/.*"replayed": \([0-9]*\).*/\1/p')
if [ "$rc" -eq 0 ] && [ -n "$(loss_at "$tmp/elastic.jsonl" $steps)" ] &&
    echo "$rec" | grep -q '"device": 1, "reason": "lost", "plan": "dp=1 pp=1 tp=1' &&
    [ "$(echo "$rec" | wc -l)" -eq 1 ] && [ -n "$back" ] && [ "$replayed" -lt "$every" ] &&
    grep -q "device 1 failed (lost): recovered on" "$tmp/elastic.out" &&
    steps_once "$tmp/elastic.jsonl" $steps; then
    ok "device 1 lost: recovered at step $back ($replayed replayed), all $steps steps trained"
else
    fail "elastic run (exit $rc): $(tail -n 3 "$tmp/elastic.out") / $rec"
fi

# The reference: DP=2 to the restored step, then device 0 alone.
if [ -n "$back" ] && [ "$back" -gt 0 ]; then
    reference "$back" 0 ref
    a=$(loss_at "$tmp/elastic.jsonl" $steps)
    b=$(loss_at "$tmp/ref.jsonl" $steps)
    if same "$a" "$b"; then
        ok "final loss $a equals the reference's $b (moved to device 0 at step $back)"
    else
        fail "final loss '$a', the reference's '$b'"
    fi
fi

# Device 0 lost inside the evaluation after step 12: a step is about a
# dozen operations per device, the evaluation of the 10,000 test images
# over a thousand, so operation 400 falls in it.
MPT_DEVICES=0,1 MPT_FAIL_DEVICE=0:400:lost "$train" $args --snapshot-every $every \
    --eval-every 12 --metrics "$tmp/eval.jsonl" >"$tmp/eval.out" 2>&1
rc=$?
rec=$(grep '"recovered"' "$tmp/eval.jsonl" 2>/dev/null)
back=$(echo "$rec" | sed -n 's/^{"step": \([0-9]*\), "recovered".*/\1/p')
evals=$(sed -n 's/^{"step": \([0-9]*\), "epoch": [0-9]*, "test_loss".*/\1/p' "$tmp/eval.jsonl" |
        tr '\n' ' ')
if [ "$rc" -eq 0 ] && grep -q "the evaluation after step 12 failed" "$tmp/eval.out" &&
    echo "$rec" | grep -q '"device": 0, "reason": "lost", "plan": "dp=1 pp=1 tp=1' &&
    [ "$(echo "$rec" | wc -l)" -eq 1 ] && [ -n "$back" ] && [ "$back" -le 12 ] &&
    [ "$back" -gt $((12 - every)) ] && [ "$evals" = "12 $steps " ] &&
    steps_once "$tmp/eval.jsonl" $steps; then
    ok "device 0 lost in an evaluation: back to step $back, evaluated again, all $steps steps"
else
    fail "evaluation run (exit $rc): $(tail -n 3 "$tmp/eval.out") / $rec / evaluations $evals"
fi
if [ -n "$back" ] && [ "$back" -gt 0 ]; then
    reference "$back" 1 evalref --eval-every 12
    a=$(eval_at "$tmp/eval.jsonl" 12)
    b=$(eval_at "$tmp/evalref.jsonl" 12)
    c=$(loss_at "$tmp/eval.jsonl" $steps)
    d=$(loss_at "$tmp/evalref.jsonl" $steps)
    if same "$a" "$b" && same "$c" "$d"; then
        ok "evaluation at step 12 $a and final loss $c equal the reference's $b and $d"
    else
        fail "evaluation at step 12 '$a', the reference's '$b'; final loss '$c', '$d'"
    fi
fi

MPT_DEVICES=0,1 MPT_FAIL_DEVICE=$fault "$train" $args --no-elastic >"$tmp/rigid.out" 2>&1
rc=$?
if [ "$rc" -eq 1 ] && tail -n 1 "$tmp/rigid.out" | grep -q "device 1"; then
    ok "--no-elastic: exit 1 naming device 1"
else
    fail "--no-elastic run: exit $rc, $(tail -n 1 "$tmp/rigid.out")"
fi
exit $failed
