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
    grep -q "device 1 failed (lost): recovered on" "$tmp/elastic.out"; then
    ok "device 1 lost: recovered at step $back ($replayed replayed), all $steps steps trained"
else
    fail "elastic run (exit $rc): $(tail -n 3 "$tmp/elastic.out") / $rec"
fi

# The reference: DP=2 to the restored step, then device 0 alone.
if [ -n "$back" ] && [ "$back" -gt 0 ]; then
    MPT_DEVICES=0,1 "$train" --model "$model" --steps "$back" --batch 64 --optimizer adamw \
        --schedule constant --dp 2 --rebalance-after 0 --checkpoint "$tmp/ck" >"$tmp/ref1.out" 2>&1 ||
        fail "reference, first part: $(tail -n 1 "$tmp/ref1.out")"
    MPT_DEVICES=0 "$train" --model "$model" --steps $steps --batch 64 --optimizer adamw \
        --schedule constant --checkpoint "$tmp/ck" --resume --metrics "$tmp/ref.jsonl" \
        >"$tmp/ref2.out" 2>&1 || fail "reference, second part: $(tail -n 1 "$tmp/ref2.out")"
    a=$(loss_at "$tmp/elastic.jsonl" $steps)
    b=$(loss_at "$tmp/ref.jsonl" $steps)
    if [ -n "$a" ] && [ -n "$b" ] &&
        awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b;
                                        if (m < 1) m = 1; exit !(d <= 1e-5 * m) }'; then
        ok "final loss $a equals the reference's $b (moved to device 0 at step $back)"
    else
        fail "final loss '$a', the reference's '$b'"
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
