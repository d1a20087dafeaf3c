#!/bin/sh
# tests/mpt_run.sh: mpt-run supervising `mpirun ... mpt-train` on one
# machine, ranks as "hosts" (3 slots of localhost, one PoCL device each):
# - rank 1 killed with SIGKILL mid-run: mpt-run prints one restart line
#   (2 ranks, from the checkpoint), the job resumes on 2 ranks and
#   finishes every step, exit 0; the time from the kill to the first
#   checkpoint written after the restart is printed (not asserted: the
#   machine is shared);
# - Ctrl-C (SIGINT to mpt-run) reaches the ranks through mpirun: they stop
#   at a step with a checkpoint, and nothing is restarted;
# - without --checkpoint in the program's arguments: usage error (exit 2);
# - a failure that is no death (mpt-train cannot read its model) is not
#   restarted: exit 1 and no restart line.
# Skipped (77) without MPI or without Fashion-MNIST.
. "${MPT_TESTS_SRCDIR:-$(dirname "$0")}/cli_lib.sh"
cli_setup mpt-run

train=${MPT_TRAIN:-./bin/mpt-train}
supervisor=$(dirname "$train")/mpt-run
cli_need_mpi
cli_need_fashion
POCL_DEVICES=pthread POCL_MAX_PTHREAD_COUNT=1
export POCL_DEVICES POCL_MAX_PTHREAD_COUNT
margs="--oversubscribe --mca btl self,vader"
steps=40
# batch 66: divisible among 3 and 2 ranks; no rebalancing (one plan per world)
targs="--steps $steps --batch 66 --schedule constant --rebalance-after 0 --checkpoint $tmp/ck
       --checkpoint-every 1 --metrics $tmp/m.jsonl"

"$supervisor" --np 3 --mpirun-args "$margs" -- "$train" $targs >"$out" 2>"$err" </dev/null &
job=$!
victim=
for _ in $(seq 1 3000); do # up to 300 s: start-up with cold caches, three steps
    if [ -f "$tmp/m.jsonl" ] && [ "$(grep -c '"loss"' "$tmp/m.jsonl")" -ge 3 ]; then
        for p in $(pgrep -f "mpt-train --steps $steps" 2>/dev/null); do
            if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1'; then
                victim=$p
            fi
        done
        break
    fi
    sleep 0.1
done
if [ -z "$victim" ]; then
    kill "$job" 2>/dev/null
    wait "$job"
    fail "kill a rank" "rank 1 not found running after three steps"
else
    kill -9 "$victim"
    t0=$(date +%s)
    # the first checkpoint written after the restart line: a step trained
    restarted=
    for _ in $(seq 1 6000); do
        if [ -z "$restarted" ] && grep -q "restart 1 of" "$out"; then
            restarted=$(date +%s)
        fi
        if [ -n "$restarted" ] && [ "$(stat -c %Y "$tmp/ck/checkpoint.safetensors")" -gt "$restarted" ]; then
            break
        fi
        kill -0 "$job" 2>/dev/null || break
        sleep 0.1
    done
    t1=$(date +%s)
    ( sleep 900; kill -9 "$job" 2>/dev/null ) &
    watchdog=$!
    wait "$job"
    rc=$?
    kill "$watchdog" 2>/dev/null
    if [ "$rc" -eq 0 ] && [ "$(grep -c 'restart 1 of 3 on 2 rank(s) from' "$out")" -eq 1 ] &&
        ! grep -q "restart 2" "$out" &&
        grep -q "\"step\": $steps, \"epoch\": 1, \"loss\"" "$tmp/m.jsonl" &&
        grep -q "on 2 devices of 2 ranks" "$out"; then
        ok "rank 1 killed: restarted once on 2 ranks from the checkpoint, all $steps steps, exit 0; kill to the first step after restart: $((t1 - t0)) s"
    else
        fail "kill rank 1" "exit $rc; $(grep mpt-run "$out" "$err" | head -n 3)"
    fi
fi

rm -rf "$tmp/ck" "$tmp/m.jsonl"
"$supervisor" --np 2 --mpirun-args "$margs" -- "$train" --steps 100000 --batch 64 \
    --schedule constant --rebalance-after 0 --checkpoint "$tmp/ck" --metrics "$tmp/m.jsonl" \
    >"$out" 2>"$err" </dev/null &
job=$!
for _ in $(seq 1 3000); do
    [ -f "$tmp/m.jsonl" ] && [ "$(grep -c '"loss"' "$tmp/m.jsonl")" -ge 3 ] && break
    sleep 0.1
done
kill -INT "$job"
( sleep 300; kill -9 "$job" 2>/dev/null ) &
watchdog=$!
wait "$job"
rc=$?
kill "$watchdog" 2>/dev/null
if [ "$rc" -ne 0 ] && grep -q "stopped by signal .* checkpoint written" "$err" &&
    [ -f "$tmp/ck/checkpoint.safetensors" ] && ! grep -q "restart" "$out"; then
    ok "SIGINT: the ranks stop with a checkpoint, no restart (exit $rc)"
else
    fail "SIGINT" "exit $rc"
fi

run 60 "$supervisor" --np 2 -- "$train" --steps 2
if [ "$rc" -eq 2 ] && grep -q "checkpoint DIR" "$err"; then
    ok "no --checkpoint: usage error"
else
    fail "no --checkpoint" "exit $rc"
fi
run 300 "$supervisor" --np 2 --mpirun-args "$margs" -- "$train" --steps 2 --model "$tmp/none.json" \
    --checkpoint "$tmp/ck2"
if [ "$rc" -eq 1 ] && ! grep -q "restart 1" "$out" && grep -q "without a rank dying" "$err"; then
    ok "a failure that is no death (a missing model): not restarted, exit 1"
else
    fail "a missing model" "exit $rc"
fi
exit $failed
