#!/bin/sh
# tests/lm_cli.sh: mpt-train on a language model, end to end (one device):
# - models/gpt-micro.json on a text file (the licenses of this machine, or
#   a generated text when they are missing): the validation loss after 40
#   AdamW steps is below the first step's training loss, the metrics carry
#   val_loss and tokens_per_s, --sample writes the asked number of bytes
#   after the prompt, and the same run from its checkpoint (--resume at the
#   same step) samples the same text, on one device and under a PP=2 plan;
# - bad input exits 1 with one line naming the file and the numbers: a
#   text shorter than the context, an llm.c shard of the wrong version or
#   with a token count that does not match its size, token ids beyond the
#   model's vocabulary, a language model without --data, --sample with a
#   classifier.
. "${MPT_TESTS_SRCDIR:-$(dirname "$0")}/cli_lib.sh"
cli_setup lm-cli
train=${MPT_TRAIN:-./bin/mpt-train}
srcdir=${MPT_TESTS_SRCDIR:-tests}
micro="$srcdir/../models/gpt-micro.json"
tiny="$srcdir/fixtures/torch/gpt-tiny.json"
export POCL_DEVICES=pthread

text=$tmp/corpus.txt
if ls /usr/share/common-licenses/* >/dev/null 2>&1; then
    cat /usr/share/common-licenses/* >"$text"
else
    i=0
    while [ $i -lt 3000 ]; do
        echo "line $i of a generated text, for the language model test." >>"$text"
        i=$((i + 1))
    done
fi

common="--model $micro --data $text --batch 8 --optimizer adamw --lr 3e-3 --seed 2"
run 600 "$train" $common --steps 40 --eval-every 40 --metrics "$tmp/m.jsonl" \
    --checkpoint "$tmp/ck" --sample 80 --prompt "The " --temperature 0.8 --top-k 20
first=$(sed -n 's/.*"step": 1, .*"loss": \([^,]*\),.*/\1/p' "$tmp/m.jsonl")
val=$(sed -n 's/.*"val_loss": \([^,]*\),.*/\1/p' "$tmp/m.jsonl" | tail -n 1)
if [ "$rc" -ne 0 ]; then
    fail "training gpt-micro" "exit $rc"
elif [ -z "$first" ] || [ -z "$val" ] || ! awk -v a="$val" -v b="$first" 'BEGIN { exit !(a < b) }'; then
    fail "training gpt-micro" "validation loss '$val' not below the first loss '$first'"
elif ! grep -q '"tokens_per_s"' "$tmp/m.jsonl" || ! grep -q 'val loss' "$out"; then
    fail "training gpt-micro" "no tokens_per_s in the metrics or no validation loss printed"
else
    ok "gpt-micro: loss $first at step 1, validation loss $val after 40 steps"
fi
# The sample ends stdout: the prompt, 80 bytes, a newline.
sed -n '/^The /,$p' "$out" >"$tmp/sample1"
if [ "$(wc -c <"$tmp/sample1")" -ne 85 ]; then
    fail "--sample 80" "expected 'The ', 80 bytes and a newline, got $(wc -c <"$tmp/sample1") bytes"
else
    ok "--sample 80: the prompt and 80 bytes"
fi
run 600 "$train" $common --steps 40 --checkpoint "$tmp/ck" --resume --sample 80 --prompt "The " \
    --temperature 0.8 --top-k 20
sed -n '/^The /,$p' "$out" >"$tmp/sample2"
if [ "$rc" -ne 0 ] || ! cmp -s "$tmp/sample1" "$tmp/sample2"; then
    fail "sampling from the checkpoint" "exit $rc, or another text than the trained run's"
else
    ok "sampling from the checkpoint alone gives the trained run's text"
fi
# The logits come from the last stage of any plan: two pipeline stages
# sample the same text as one device.
export POCL_DEVICES="pthread pthread" POCL_MAX_PTHREAD_COUNT=1
run 600 "$train" $common --steps 40 --checkpoint "$tmp/ck" --resume --pp 2 \
    --sample 80 --prompt "The " --temperature 0.8 --top-k 20
export POCL_DEVICES=pthread
sed -n '/^The /,$p' "$out" >"$tmp/sample3"
if [ "$rc" -ne 0 ] || ! cmp -s "$tmp/sample1" "$tmp/sample3"; then
    fail "sampling under a PP=2 plan" "exit $rc, or another text than one device's"
else
    ok "sampling under a PP=2 plan gives one device's text"
fi

# ---- bad input -----------------------------------------------------------------
expect() { # name, pattern, command...
    name=$1 pattern=$2
    shift 2
    run 120 "$@"
    if [ "$rc" -ne 1 ]; then
        fail "$name" "exit $rc, expected 1"
    elif ! grep -q -- "$pattern" "$err"; then
        fail "$name" "stderr lacks '$pattern'"
    else
        ok "$name: $(tail -n 1 "$err")"
    fi
}
printf 'too short' >"$tmp/short.txt"
expect "text shorter than the context" "short.txt: 9 tokens: too few" \
    "$train" --model "$micro" --data "$tmp/short.txt" --steps 1
# llm.c shards: header of 256 int32 (magic 20240520, version, count), uint16 tokens
shard() { # file version count tokens (perl: in every Debian, as perl-base)
    perl -e 'my ($f, $v, $n, $k) = @ARGV; open(my $o, ">:raw", $f) or die;
        print $o pack("l<256", 20240520, $v, $n, (0) x 253), pack("S<*", map { $_ % 60 } 0 .. $k - 1);' "$@"
}
shard "$tmp/v2.bin" 2 100 100
expect "shard of version 2" "v2.bin: an llm.c token shard of version 2" \
    "$train" --model "$tiny" --data "$tmp/v2.bin" --steps 1
shard "$tmp/count.bin" 1 500 100
expect "shard whose count does not match its size" "count.bin: its llm.c header says 500 tokens" \
    "$train" --model "$tiny" --data "$tmp/count.bin" --steps 1
expect "token ids beyond the vocabulary" "beyond the model's vocabulary of 64" \
    "$train" --model "$tiny" --data "$text" --steps 1
expect "a language model without --data" "is a language model: give it --data FILE" \
    "$train" --model "$micro" --steps 1
expect "--sample with a classifier" "--sample writes text from a language model" \
    "$train" --model "$srcdir/../models/mlp-fashion.json" --sample 5 --steps 1
exit "$failed"
