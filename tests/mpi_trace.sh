#!/bin/sh
# The monitoring of a job of two processes (mpirun -np 2 on loopback, a
# pipeline stage per rank):
# - one trace, written by rank 0: a process per rank ("rank R on HOST"),
#   the clock alignment's offsets and bounds in otherData; each track's
#   spans in order and apart (no span starts before the one before it
#   ended);
# - clocks aligned: rank 1's clock is 1.5 s ahead and runs 20% fast
#   (MPT_CLOCK_SKEW_S, MPT_CLOCK_DRIFT: as if its host's clock were set
#   apart and drifted, exaggerated to show in a run of seconds); the
#   estimated drift is 0.2 (within 0.01), every activation stage 1
#   receives arrives after stage 0 began that micro-batch's forward and
#   every gradient stage 0 receives after stage 1 began that backward
#   (within the bound), and where the receiver was already waiting its
#   receive ends when the sender's pass ends (the median gap under 20 ms;
#   with the offset left out it is 1.5 s, with the drift left out tenths
#   of a second: both tried, both fail);
# - rank 0's metrics and progress carry rank 1's device: rank 1, its
#   busy fraction, launches and achieved GFLOP/s (not null).
# Skipped (77) without MPI or without Fashion-MNIST.
. "${MPT_TESTS_SRCDIR:-$(dirname "$0")}/cli_lib.sh"
cli_setup mpi-trace

train=${MPT_TRAIN:-./bin/mpt-train}
model="${MPT_TESTS_SRCDIR:-tests}/../models/mlp-fashion.json"
cli_need_mpi
cli_need_fashion
export POCL_MAX_PTHREAD_COUNT=1 POCL_DEVICES=pthread
mpi="mpirun --oversubscribe --mca btl self,vader"

args="--model $model --pp 2 --microbatches 2 --steps 5 --batch 64"
run 600 $mpi -np 1 "$train" $args --metrics "$tmp/run.jsonl" --trace "$tmp/trace.json" : \
    -np 1 -x MPT_CLOCK_SKEW_S=1.5 -x MPT_CLOCK_DRIFT=0.2 "$train" $args --metrics "$tmp/run.jsonl" \
    --trace "$tmp/trace.json"
[ "$rc" -eq 0 ] || fail "mpt-train over 2 ranks" "exit $rc"
if [ -e "$tmp/trace.json.rank1" ]; then
    fail "one trace" "rank 1 wrote a file of its own"
fi
if /usr/bin/python3 - "$tmp/trace.json" "$tmp/run.jsonl" >"$tmp/check" 2>&1 <<'PY'
import json, statistics, sys
t = json.load(open(sys.argv[1]))
ev = t["traceEvents"]
bad = []
procs = {e["pid"]: e["args"]["name"] for e in ev if e["name"] == "process_name"}
if sorted(procs) != [0, 1] or not all(procs[r].startswith("rank %d" % r) for r in procs):
    bad.append("processes %s" % procs)
other = t.get("otherData", {})
err = other.get("clock_error_s", [1, 1])[1]
if len(other.get("clock_offset_s", [])) != 2 or not 0 <= err < 0.02 or \
        abs(other["clock_drift"][1] - 0.2) > 0.01 or other["clock_drift"][0] != 0:
    bad.append("clock alignment (rank 1 20%% fast): %s" % other)
spans = [e for e in ev if e["ph"] == "X"]
tracks = {}
for e in spans:
    tracks.setdefault((e["pid"], e["tid"]), []).append(e)
for key, ss in tracks.items():
    for a, b in zip(ss, ss[1:]):
        if b["ts"] < a["ts"] + a["dur"] - 0.01:  # µs; the printed floats' rounding
            bad.append("track %s: %s at %.3f before %s ended at %.3f"
                       % (key, b["name"], b["ts"], a["name"], a["ts"] + a["dur"]))
            break

def of(pid, name):
    return [e for e in spans if e["pid"] == pid and e["name"] == name]

slack = err * 1e6 + 1  # µs
pairs = [("activations", of(0, "forward"), of(1, "recv")),
         ("gradients", of(1, "backward"), of(0, "recv"))]
for what, sent, got in pairs:
    if len(sent) != 10 or len(got) != 10:
        bad.append("%s: %d sent, %d received" % (what, len(sent), len(got)))
    for s, r in zip(sent, got):
        if r["ts"] + r["dur"] < s["ts"] - slack:
            bad.append("%s: received at %.1f us, before the pass that sends began at %.1f"
                       % (what, r["ts"] + r["dur"], s["ts"]))
            break
    gaps = [(r["ts"] + r["dur"]) - (s["ts"] + s["dur"]) for s, r in zip(sent, got)
            if r["ts"] < s["ts"] + s["dur"]]  # the receiver was waiting
    # Each direction waits at least once (stage 1 for the first
    # micro-batch's activations, stage 0 for the gradients after its
    # forwards): none would leave the alignment unchecked.
    if not gaps:
        bad.append("%s: no receive waited for its sender" % what)
    elif abs(statistics.median(gaps)) > 20000 + slack:
        bad.append("%s: receives end %.0f us after the sending passes (median)"
                   % (what, statistics.median(gaps)))
lines = [json.loads(l) for l in open(sys.argv[2])]
last = [l for l in lines if "devices" in l][-1]
ranks = {d["rank"]: d for d in last["devices"]}
d1 = ranks.get(1)
if sorted(ranks) != [0, 1] or d1 is None or d1["busy"] is None or d1["gflops"] is None or \
        "kernels" not in d1 or not d1["busy"] > 0:
    bad.append("rank 1's device in rank 0's metrics: %s" % last["devices"])
print("\n".join(bad) if bad else "drift %.4f, bound %.3g s; rank 1's device busy %s, %s GFLOP/s"
      % (other["clock_drift"][1], err, d1["busy"], d1["gflops"]))
sys.exit(1 if bad else 0)
PY
then
    ok "one trace of both ranks, clocks aligned, spans in order: $(cat "$tmp/check")"
else
    fail "merged trace and gathered figures" "$(head -c 1500 "$tmp/check")"
fi
exit "$failed"
