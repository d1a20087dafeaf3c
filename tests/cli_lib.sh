# tests/cli_lib.sh: what the end-to-end scripts share (sourced, not run):
# a temporary directory removed on exit, the captured stdout and stderr of
# the last command, and the ok/fail reporting.
#   cli_setup NAME        makes $tmp, sets $out, $err and $failed = 0
#   run LIMIT COMMAND...  runs COMMAND under `timeout LIMIT`; sets $rc
#   ok WHAT / fail WHAT WHY  report one check (fail shows the output)
#   lines FILE            number of lines, counting an unterminated last one

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
