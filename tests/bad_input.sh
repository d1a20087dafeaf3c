#!/bin/sh
# tests/bad_input.sh: end-to-end bad-input checks of mpt-topo (DESIGN.md §4,
# "Clear failure").  Every bad input must give exit status 1, exactly one
# line on stderr naming the thing and the reason, nothing on stdout, and
# finish (each run is bounded by `timeout 60`).  Usage errors exit 2; --help
# and --version exit 0.
#
# Environment (set by `make check`): MPT_TOPO, the mpt-topo to test (default
# ./bin/mpt-topo), POCL_DEVICES="pthread pthread" (two devices).

topo=${MPT_TOPO:-./bin/mpt-topo}
if [ ! -x "$topo" ]; then
    echo "FAIL: mpt-topo not found or not executable: $topo (set MPT_TOPO)"
    exit 1
fi

# What the user might have set must not change the cases below.
unset MPT_DEVICES MPT_TOPOLOGY_XML

. "${MPT_TESTS_SRCDIR:-tests}/cli_lib.sh"
cli_setup bad-input

# expect_failure STATUS ONE_LINE NAME NEEDLE... -- COMMAND...
# COMMAND must exit with STATUS, print nothing on stdout, and print on
# stderr a text containing every NEEDLE (the thing and the reason); with
# ONE_LINE=yes that text must be exactly one line.
expect_failure() {
    want=$1 one_line=$2 name=$3
    shift 3
    needles=
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        needles="$needles$1
"
        shift
    done
    shift
    run 60 "$@"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        fail "$name" "timed out after 60 s"
        return
    fi
    if [ "$rc" -ne "$want" ]; then
        fail "$name" "exit status $rc, expected $want"
        return
    fi
    if [ -s "$out" ]; then
        fail "$name" "wrote to stdout"
        return
    fi
    n=$(lines "$err")
    if [ "$one_line" = yes ] && [ "$n" -ne 1 ]; then
        fail "$name" "$n line(s) on stderr, expected exactly 1"
        return
    fi
    line=$(cat "$err")
    missing=
    old_ifs=$IFS
    IFS='
'
    set -f
    for needle in $needles; do
        case $line in
        *"$needle"*) ;;
        *) missing="$missing '$needle'" ;;
        esac
    done
    set +f
    IFS=$old_ifs
    if [ -n "$missing" ]; then
        fail "$name" "stderr does not mention$missing"
        return
    fi
    ok "$name: $(head -n 1 "$err")"
}

# A bad input: exit 1 and exactly one line on stderr.
expect_error() { expect_failure 1 yes "$@"; }
# A usage error: exit 2 (the usage hint may take a second line).
expect_usage_error() { expect_failure 2 no "$@"; }

# ---- devices -------------------------------------------------------------
expect_error "MPT_DEVICES=7 (2 devices exist)" "'7'" "matches none" -- \
    env MPT_DEVICES=7 "$topo" --no-profile
expect_error "MPT_DEVICES=bogusword" "'bogusword'" "not an index" -- \
    env MPT_DEVICES=bogusword "$topo" --no-profile
expect_error "--devices 9" "'9'" "matches none" -- \
    "$topo" --no-profile --devices 9

# ---- topology XML --------------------------------------------------------
expect_error "--xml of a missing file" "/nonexistent/file.xml" "No such file" -- \
    "$topo" --xml /nonexistent/file.xml

bad_xml=$tmp/malformed.xml
printf '<?xml version="1.0"?>\n<topology version="2.0">\n  <object type="Machine" os_index="0"\n' \
    >"$bad_xml"
expect_error "--xml of a malformed file" "$bad_xml" "cannot read" -- \
    "$topo" --xml "$bad_xml"

# ---- cluster description -------------------------------------------------
expect_error "--cluster of a missing file" "$tmp/missing.json" "No such file" -- \
    "$topo" --cluster "$tmp/missing.json"

bad_json=$tmp/malformed.json
printf '{ "mpt_cluster": 1, "devices": [ { "name": "x" }\n' >"$bad_json"
expect_error "--cluster of malformed JSON" "$bad_json" "malformed JSON" -- \
    "$topo" --cluster "$bad_json"

no_name=$tmp/no-name.json
cat >"$no_name" <<'EOF'
{
  "mpt_cluster": 1,
  "name": "test",
  "devices": [
    { "index": 0, "type": "gpu", "global_mem_bytes": 1073741824 }
  ]
}
EOF
expect_error "--cluster with a device without \"name\"" "$no_name" "devices[0].name" \
    "missing" -- "$topo" --cluster "$no_name"

# ---- no OpenCL platform at all -------------------------------------------
empty_vendors=$tmp/empty-vendors
mkdir "$empty_vendors"
expect_error "no OpenCL platform (empty OCL_ICD_VENDORS)" "no OpenCL platform" -- \
    env OCL_ICD_VENDORS="$empty_vendors" "$topo" --no-profile

# ---- usage errors --------------------------------------------------------
expect_usage_error "unknown option exits 2" "--bogus" "Try 'mpt-topo --help'" -- \
    "$topo" --bogus
expect_usage_error "unexpected argument exits 2" "extra" -- \
    "$topo" --no-profile extra
expect_usage_error "--xml with --cluster exits 2" "--xml" "--cluster" -- \
    "$topo" --xml "$bad_xml" --cluster "$bad_json"

# ---- help and version ----------------------------------------------------
run 60 "$topo" --help
if [ "$rc" -ne 0 ]; then
    fail "--help" "exit status $rc, expected 0"
elif ! grep -F Usage "$out" >/dev/null; then
    fail "--help" "stdout does not contain 'Usage'"
elif [ -s "$err" ]; then
    fail "--help" "wrote to stderr"
else
    ok "--help"
fi

run 60 "$topo" --version
if [ "$rc" -ne 0 ]; then
    fail "--version" "exit status $rc, expected 0"
elif ! grep -E 'mpt-topo .*[0-9]+\.[0-9]+' "$out" >/dev/null; then
    fail "--version" "stdout does not hold 'mpt-topo' and a version number"
else
    ok "--version: $(cat "$out")"
fi

if [ "$failed" -ne 0 ]; then
    echo "bad_input.sh: some checks FAILED"
    exit 1
fi
echo "bad_input.sh: all checks passed"
exit 0
