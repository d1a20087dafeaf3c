#!/bin/sh
# Training throughput of the CNN (models/cnn-fashion.json): mpt-train on one
# PoCL device using all cores, against PyTorch on the same cores
# (bench/torch_cnn.py: the same model, optimizer and batch), alternating
# A B A B in one run so that a drifting machine load shifts both alike.
#
#   bench/cnn_vs_torch.sh [STEPS] [BATCH] [ROUNDS]
#       (run from a built tree; defaults 40 steps, batch 128, 2 rounds)
#
# PROVIDERS lists the GEMM providers mpt runs under in each round
# (MPT_BLAS values; default "auto", e.g. PROVIDERS="auto clblast");
# MPT_BEFORE=PREFIX adds an older installed build (PREFIX/bin/mpt-train,
# PREFIX/lib) before this one under each provider, for before/after ratios
# in one run.
# The peer is current PyTorch from PyPI in a venv (bench/peer_python.sh),
# with MKL or OpenBLAS; its version and BLAS are printed beside it.
# mpt's figure is the mean samples/s of its logged steps after the first 5
# (which include kernel compilation); its device busy fraction comes from
# OpenCL profiling events (--timing), and of it the share of the BLAS
# routines (the GEMMs).
set -eu
steps=${1:-40}
batch=${2:-128}
rounds=${3:-2}
providers=${PROVIDERS:-auto}
warm=5
threads=$(nproc)
train=${MPT_TRAIN:-./bin/mpt-train}
python=$("$(dirname "$0")/peer_python.sh")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/summary.sh"
# One device; profiles and plans are not needed, keep any cache apart.
XDG_CACHE_HOME="$tmp/cache"
export XDG_CACHE_HOME

mean() { # mean of a metrics key over the logged steps after the first $warm
    awk -F"\"$1\": " -v warm="$warm" \
        'NR > warm && /"loss"/ { split($2, a, /[,}]/); s += a[1]; n++ }
         END { printf "%.2f", s / n }' "$tmp/mpt.jsonl"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

run_mpt() { # label, MPT_BLAS value, mpt-train [, its library folder]: prints the line,
    # leaves $tmp/sps
    env ${4:+LD_LIBRARY_PATH="$4"} MPT_BLAS="$2" "$3" --model models/cnn-fashion.json \
        --devices 0 --steps $((steps + warm)) --batch "$batch" --timing \
        --metrics "$tmp/mpt.jsonl" >/dev/null
    mean samples_per_s >"$tmp/sps"
    printf "  %-22s %8.1f samples/s (device busy %s, BLAS %s)\n" "$1" "$(cat "$tmp/sps")" \
        "$(mean device_busy)" "$(mean blas_busy)"
    rm -f "$tmp/mpt.jsonl"
}

for r in $(seq "$rounds"); do
    echo "round $r, batch $batch, $steps timed steps:"
    results=""
    for p in $providers; do
        if [ -n "${MPT_BEFORE:-}" ]; then
            run_mpt "before ($p)" "$p" "$MPT_BEFORE/bin/mpt-train" "$MPT_BEFORE/lib"
            results="$results before-$p:$(cat "$tmp/sps")"
        fi
        run_mpt "mpt ($p)" "$p" "$train"
        results="$results $p:$(cat "$tmp/sps")"
    done
    peer=$("$python" "$(dirname "$0")/torch_cnn.py" --threads "$threads" --steps "$steps" \
        --batch "$batch")
    torch=$(echo "$peer" | sed 's/.*"samples_per_s": \([0-9.]*\).*/\1/')
    version=$(echo "$peer" | sed 's/.*"torch": "\([^"]*\)".*/\1/')
    blas=$(echo "$peer" | sed 's/.*"blas": "\([^"]*\)".*/\1/')
    printf "  %-22s %8.1f samples/s (%s, %s threads)\n" "PyTorch $version" "$torch" "$blas" \
        "$threads"
    for res in $results; do
        printf "  %s / PyTorch %s\n" "${res%%:*}" "$(ratio "${res#*:}" "$torch")"
        summary_add "${res%%:*}" "${res#*:}" "$torch"
    done
done
summary_print PyTorch
