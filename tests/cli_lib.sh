# tests/cli_lib.sh: what the end-to-end scripts share (sourced, not run):
# a temporary directory removed on exit, the captured stdout and stderr of
# the last command, and the ok/fail reporting.
#   cli_setup NAME        makes $tmp, sets $out, $err and $failed = 0
#   run LIMIT COMMAND...  runs COMMAND under `timeout LIMIT`; sets $rc
#   ok WHAT / fail WHAT WHY  report one check (fail shows the output)
#   lines FILE            number of lines, counting an unterminated last one
#   cli_need_fashion      sets $data to Fashion-MNIST's folder; skips (77) without it
#   cli_need_mpi          skips (77) in a build without MPI; lets mpirun run as root

cli_setup() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpt-$1.XXXXXX") || {
        echo "FAIL: mktemp -d failed"
        exit 1
    }
    trap 'rm -rf "$tmp"' EXIT
    trap 'exit 1' HUP INT TERM
    failed=0
    out=$tmp/stdout
    err=$tmp/stderr
}

ok() { echo "ok   $1"; }

fail() {
    echo "FAIL $1: $2"
    if [ -s "$out" ]; then
        echo "     stdout: $(head -c 600 "$out")"
    fi
    if [ -s "$err" ]; then
        echo "     stderr: $(head -c 600 "$err")"
    fi
    failed=1
}

run() {
    limit=$1
    shift
    timeout "$limit" "$@" >"$out" 2>"$err" </dev/null
    rc=$?
}

lines() { awk 'END { print NR }' "$1"; }

cli_need_fashion() {
    data=/usr/share/datasets/fashion-mnist
    if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
        echo "SKIP: $data not installed (apt-get install dataset-fashion-mnist)"
        exit 77
    fi
}

cli_need_mpi() {
    if [ ! -x "${MPT_TOP_BUILDDIR:-.}/tests/mpi_comm" ] || ! command -v mpirun >/dev/null 2>&1; then
        echo "SKIP: built without MPI (configure --with-mpi, Debian libopenmpi-dev openmpi-bin)"
        exit 77
    fi
    if [ "$(id -u)" -eq 0 ]; then
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
}
