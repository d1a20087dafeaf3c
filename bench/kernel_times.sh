#!/bin/sh
# Device time per kernel of a training step, from PoCL's own event trace
# (POCL_TRACING=text: every command's queued/submitted/running/complete
# times), for mpt-train on one PoCL device; with MPT_BEFORE=PREFIX an
# older installed build (PREFIX/bin/mpt-train, PREFIX/lib) runs before
# this one in each round (A B A B), so that the ratios of one round share
# the machine's load.
#
#   bench/kernel_times.sh [MODEL] [STEPS] [BATCH] [ROUNDS]
#       (run from a built tree; defaults models/cnn-fashion.json, 12 steps,
#       batch 128, 2 rounds)
#
# A step's kernels are those that started running between the end of the
# optimizer kernel of step 3 (compilation and warm-up before it) and the
# end of the last step's (the evaluation that follows is left out); each
# row is a kernel's summed running time divided by the steps in that
# window, in ms.  The host BLAS provider's GEMMs run on the host, outside
# the trace: their time per step is the "host BLAS" row (mpt-train
# --timing's blas_busy times its step_s, over the same steps).  Tracing
# itself slows the launches; compare rows of one round, not samples/s.
set -eu
model=${1:-models/cnn-fashion.json}
steps=${2:-12}
batch=${3:-128}
rounds=${4:-2}
warm=3
top=$(pwd)
train=${MPT_TRAIN:-$top/bin/mpt-train}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
XDG_CACHE_HOME="$tmp/cache"
export XDG_CACHE_HOME

# label, mpt-train [, its library folder]: leaves "$tmp/<label>.txt", one
# "name ms-per-step" line per kernel
run() {
    rm -f "$tmp/pocl_trace_events.log" "$tmp/m.jsonl"
    (cd "$tmp" && env ${3:+LD_LIBRARY_PATH="$3"} POCL_TRACING=text \
        "$2" --model "$top/$model" --devices 0 --steps "$steps" --batch "$batch" --timing \
        --metrics "$tmp/m.jsonl" >/dev/null)
    awk -F' [|] ' -v warm="$warm" '
        # $1 time (ns), $2 "EV ID n", $5 command type, $6 state, name=... for kernels
        { split($2, e, " "); id = e[3] + 0; name = $5
          if (match($0, /name=[A-Za-z0-9_]+/)) name = substr($0, RSTART + 5, RLENGTH - 5)
          if ($6 == "running") run[id] = $1 + 0
          else if ($6 == "complete" && (id in run)) { t0[id] = run[id]; t1[id] = $1 + 0; nm[id] = name } }
        END { n = 0
              for (id in nm) if (nm[id] ~ /^mpt_(sgd|sgd_momentum|adamw)$/) opt[++n] = t1[id]
              # the optimizer ends each step: sort its end times
              for (i = 2; i <= n; i++) { v = opt[i]; for (j = i - 1; j >= 1 && opt[j] > v; j--) opt[j + 1] = opt[j]; opt[j + 1] = v }
              if (n <= warm) { print "too few steps" > "/dev/stderr"; exit 1 }
              lo = opt[warm]; hi = opt[n]; k = n - warm
              for (id in nm) if (t0[id] >= lo && t0[id] < hi) { s[nm[id]] += t1[id] - t0[id]; tot += t1[id] - t0[id] }
              for (x in s) printf "%s %.3f\n", x, s[x] / k / 1e6
              printf "all-device-commands %.3f\n", tot / k / 1e6 }' \
        "$tmp/pocl_trace_events.log" >"$tmp/$1.txt"
    awk -F'"blas_busy": ' -v warm="$warm" 'NR > warm && /"loss"/ {
            split($2, a, /[,}]/); split($0, b, /"step_s": /); split(b[2], c, /[,}]/)
            s += a[1] * c[1]; n++ }
        END { printf "host-BLAS %.3f\n", 1000 * s / n }' "$tmp/m.jsonl" >>"$tmp/$1.txt"
}

for r in $(seq "$rounds"); do
    labels=""
    if [ -n "${MPT_BEFORE:-}" ]; then
        run before "$MPT_BEFORE/bin/mpt-train" "$MPT_BEFORE/lib"
        labels="before"
    fi
    run after "$train"
    labels="$labels after"
    echo "round $r: $model, batch $batch, ms of device time per step ($((steps - warm)) steps)"
    # one row per kernel, a column per build, and after/before
    cat $(for l in $labels; do echo "$tmp/$l.txt"; done) | awk '{ print $1 }' | sort -u |
        while read -r name; do
            printf "%-28s" "$name"
            for l in $labels; do
                printf " %9s" "$(awk -v n="$name" '$1 == n { print $2 }' "$tmp/$l.txt")"
            done
            if [ -n "${MPT_BEFORE:-}" ]; then
                awk -v n="$name" '$1 == n { v[FILENAME] = $2 }
                    END { a = v[ARGV[1]]; b = v[ARGV[2]]
                          if (a > 0 && b != "") printf "  %.2fx", b / a }' \
                    "$tmp/before.txt" "$tmp/after.txt"
            fi
            echo
        done | sort -k2 -nr
done
