#!/bin/sh
# The monitoring figures end to end (docs/metrics.md):
# - the field list: every key of a metrics step line and of its device
#   objects is documented in docs/metrics.md, and every documented one is
#   written (tokens_per_s only by a language model); every Prometheus
#   metric of lib/trace/prometheus.c is documented, and every documented
#   one is in that table;
# - the figures: a data-parallel run's achieved GFLOP/s times its kernel
#   time, summed over its devices, is the step's GEMM FLOPs counted by hand from the model (within
#   0.5%: the cost model also counts the ReLU and loss element operations,
#   0.1% of them; plus the bound of the printed figures' rounding); blocked time split
#   into waiting and transfer within the device's step; peak memory within
#   capacity;
# - the trace of a tensor-parallel run holds its collectives
#   ("tp-allreduce" spans on both devices' tracks), updates and the host's
#   batch loads; --trace-predicted writes the simulator's step of the same
#   plan.
# Skips (77) without Fashion-MNIST.
set -u
. "${MPT_TESTS_SRCDIR:-tests}/cli_lib.sh"
train=${MPT_TRAIN:-./bin/mpt-train}
src="${MPT_TESTS_SRCDIR:-tests}/.."
model="$src/models/mlp-fashion.json"
cli_need_fashion
cli_setup metrics

# ---- the field list, and a data-parallel run's figures -------------------------
# Step 3 is skipped (an injected NaN gradient) so that the keys written
# only for skips are written too.
run 300 env MPT_FAIL_NONFINITE=3 "$train" --model "$model" --devices 0-1 --dp 2 --steps 6 \
    --batch 64 --clip-norm 1 --on-nonfinite skip --metrics "$tmp/dp.jsonl"
[ "$rc" -eq 0 ] || fail "mpt-train --dp 2" "exit $rc"
if /usr/bin/python3 - "$tmp/dp.jsonl" "$src/docs/metrics.md" "$src/lib/trace/prometheus.c" \
    >"$tmp/check" 2>&1 <<'PY'
import json, re, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
steps = [l for l in lines if "devices" in l]
doc = open(sys.argv[2]).read()

def table(after):
    """Backticked names in the first cell of the table after `after`."""
    rest = doc[doc.index(after):].split("\n")
    names, seen = set(), False
    for row in rest[1:]:
        if row.startswith("|"):
            seen = True
            names |= set(re.findall(r"`([a-z_0-9]+)`", row.split("|")[1]))
        elif seen:
            break
    return names

step_doc = table("**A step line**") - {"field", "devices"}
dev_doc = table("Each object of `devices`:")
bad = []
# Written only for a language model (tokens_per_s) or once a step was
# skipped: each of the last two must appear on some line.
sometimes = {"tokens_per_s", "skipped", "skipped_steps"}
for k in sometimes - {"tokens_per_s"}:
    if not any(k in l for l in steps):
        bad.append("the skipped step wrote no %s" % k)
for l in steps:
    keys = set(l) - {"devices"}
    if keys - step_doc:
        bad.append("undocumented step keys %s" % sorted(keys - step_doc))
    # A skipped step's gradient norm is not finite: no grad_norm.
    optional = sometimes | ({"grad_norm"} if "skipped" in l else set())
    if step_doc - keys - optional:
        bad.append("documented step keys not written %s" % sorted(step_doc - keys - optional))
    for d in l["devices"]:
        if set(d) - dev_doc:
            bad.append("undocumented device keys %s" % sorted(set(d) - dev_doc))
        if dev_doc - set(d):
            bad.append("documented device keys not written %s" % sorted(dev_doc - set(d)))
prom_src = {a or b for a, b in re.findall(r'"(mpt_[a-z_]+)"|# TYPE (mpt_[a-z_]+)',
                                         open(sys.argv[3]).read())}
prom_doc = set(re.findall(r"^\| `(mpt_[a-z_]+)` \|", doc, re.M))
if prom_src != prom_doc:
    bad.append("Prometheus metrics in the code only %s, in the docs only %s"
               % (sorted(prom_src - prom_doc), sorted(prom_doc - prom_src)))
# The step by hand: 64 samples through 784-256-128-100-10, summed over
# the replicas (the planner may share the batch unevenly: FLOPs are
# linear in the samples); forward 2 b in out per linear layer, backward
# twice that (dW and dx) but the first layer's (no dx).
dims = [784, 256, 128, 100, 10]
fwd = sum(2 * 64 * a * b for a, b in zip(dims, dims[1:]))
flops = fwd + 2 * fwd - 2 * 64 * 784 * 256
for l in steps[1:]:  # the first window holds the kernel builds
    if "skipped" in l:
        continue
    measured = sum(d["gflops"] * 1e9 * d["busy"] * l["step_s"] for d in l["devices"])
    # 0.5% for the element operations, plus the bound of the printed
    # figures' rounding (%.3f, %.4f, %.6f)
    tol = 0.005 + max(5e-4 / d["gflops"] + 5e-5 / d["busy"] for d in l["devices"]) \
        + 5e-7 / l["step_s"]
    if abs(measured - flops) > tol * flops:
        bad.append("step %d: gflops x kernel time summed over the devices = %.4g FLOPs, "
                   "by hand %.4g" % (l["step"], measured, flops))
    for d in l["devices"]:
        if not (d["mem_gbps"] > 0 and d["profile_gflops"] > 0 and d["profile_mem_gbps"] > 0):
            bad.append("device %d: rates %s" % (d["device"], d))
        if not (0 < d["peak_memory_bytes"] <= d["memory_capacity_bytes"]):
            bad.append("device %d: peak %s of capacity %s" % (d["device"],
                       d["peak_memory_bytes"], d["memory_capacity_bytes"]))
        # 2e-6 s: the bound of the printed figures' rounding (%.6f)
        blocked = d["peer_wait_s"] + d["transfer_s"]
        if not (0 <= blocked <= d["step_s"] + 2e-6 and d["allreduce_wait_s"] >= 0 and
                d["allreduce_wait_s"] + d["allreduce_transfer_s"] <= d["allreduce_s"] + 2e-6):
            bad.append("device %d: waits %s" % (d["device"], d))
        if d["rank"] != 0:
            bad.append("device %d: rank %s in one process" % (d["device"], d["rank"]))
print("\n".join(bad) if bad else "checked %d step lines" % len(steps))
sys.exit(1 if bad else 0)
PY
then
    ok "every field written is documented and every documented one written; $(cat "$tmp/check")"
    ok "achieved GFLOP/s x kernel time = the step's FLOPs by hand (0.5% + rounding); waits within the step"
else
    fail "metrics fields and figures" "$(head -c 1500 "$tmp/check")"
fi

# ---- a tensor-parallel run's trace, and the prediction beside it --------------
run 300 "$train" --model "$model" --devices 0-1 --tp 2 --steps 4 --batch 64 \
    --trace "$tmp/tp.json" --trace-predicted "$tmp/predicted.json"
[ "$rc" -eq 0 ] || fail "mpt-train --tp 2 --trace" "exit $rc"
if /usr/bin/python3 - "$tmp/tp.json" "$tmp/predicted.json" >"$tmp/check" 2>&1 <<'PY'
import json, re, sys
from collections import Counter
t = json.load(open(sys.argv[1]))
names = {e["tid"]: e["args"]["name"] for e in t["traceEvents"] if e["name"] == "thread_name"}

def device(tid):
    m = re.match(r"device (\d+) ", names.get(tid, ""))
    return m.group(1) if m else names.get(tid, "?")

spans = Counter((device(e["tid"]), e["name"]) for e in t["traceEvents"] if e["ph"] == "X")
host = Counter(e["name"] for e in t["traceEvents"]
               if e["ph"] == "X" and names.get(e["tid"], "").startswith("host"))
bad = []
for dev in ("0", "1"):
    for kind in ("tp-allreduce", "forward", "backward", "update"):
        if spans[(dev, kind)] < 4:
            bad.append("device %s: %d %s spans" % (dev, spans[(dev, kind)], kind))
if host["batch load"] != 4:
    bad.append("host track: %s" % dict(host))
p = json.load(open(sys.argv[2]))
pred = Counter(e.get("cat") for e in p["traceEvents"] if e["ph"] == "X")
if pred["forward"] < 2 or pred["backward"] < 2:
    bad.append("predicted trace: %s" % dict(pred))
print("\n".join(bad) if bad else "%s" % dict(spans))
sys.exit(1 if bad else 0)
PY
then
    ok "a TP=2 trace holds tp-allreduce, forward, backward and update spans on both devices, and the host's batch loads"
    ok "--trace-predicted writes the simulated step of the plan"
else
    fail "TP trace" "$(head -c 1500 "$tmp/check")"
fi
exit "$failed"
