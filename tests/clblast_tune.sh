#!/bin/sh
# mpt-topo --tune end to end (lib/device/tuning.h) on PoCL's CPU device
# under MPT_BLAS=clblast: a quick tune (small tuner sizes, the four small
# MLP shapes, one round), then
# - the stored file holds both routines, each with the complete parameter
#   set CLBlast's tuner wrote, per-shape timings, and a kept flag that
#   follows the rule (total tuned time below the defaults' by the margin,
#   and most rounds won against the defaults timed beside it);
# - mpt-topo --json shows exactly the kept routines as the device's
#   clblast_tuning, and "" under MPT_CLBLAST_TUNING=off;
# - a profile measured afterwards is keyed (and so recorded) with them.
# Whether tuning wins here is not asserted: that is a timing.  The
# parameters' correctness is tests/check_tuning's.
set -u
topo=${MPT_TOPO:-./bin/mpt-topo}
if ! command -v clblast_tuner_xgemm >/dev/null || ! command -v clblast_tuner_xgemm_direct >/dev/null
then
    echo "SKIP: CLBlast's tuners are not installed (apt-get install clblast-utils)"
    exit 77
fi
cache=$(mktemp -d /tmp/mpt-clblast-tune-XXXXXX) || exit 1
trap 'rm -rf "$cache"' EXIT
XDG_CACHE_HOME=$cache MPT_BLAS=clblast
export XDG_CACHE_HOME MPT_BLAS
failed=0
check() { # name, then a command that must succeed
    what=$1
    shift
    if "$@"; then echo "ok   $what"; else echo "FAIL $what"; failed=1; fi
}

"$topo" --tune-quick --tune-rounds 2 -d 0 --no-profile >"$cache/tune.out" 2>&1
rc=$?
check "mpt-topo --tune-quick exits 0 (got $rc)" test "$rc" -eq 0
sed 's/^/    /' "$cache/tune.out"
file=$(ls "$cache"/mpt/clblast-*.json 2>/dev/null | head -n 1)
check "the tuning is stored beside the profiles" test -n "$file"
[ -n "$file" ] || exit 1

kept=$(python3 - "$file" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
want = {"Xgemm": 16, "XgemmDirect": 10}  # CLBlast 1.5.3's parameters of each kernel
assert t["mpt_clblast_tuning"] == 1 and t["quick"] is True, t
assert sorted(t["routines"]) == sorted(want), t["routines"].keys()
kept = []
for name, r in sorted(t["routines"].items()):
    assert len(r["parameters"]) == want[name], (name, r["parameters"])
    assert "PRECISION" not in r["parameters"]
    assert len(r["shapes"]) == 4 and all(s["default_ms"] > 0 and s["tuned_ms"] > 0
                                         for s in r["shapes"]), r["shapes"]
    d = sum(s["default_ms"] for s in r["shapes"])
    c = sum(s["tuned_ms"] for s in r["shapes"])
    assert abs(d - r["default_ms"]) < 1e-6 * d and abs(c - r["tuned_ms"]) < 1e-6 * c
    # kept: the medians' totals win by the margin, and most rounds won
    assert 0 <= r["rounds_won"] <= r["rounds"] == t["rounds"], r
    assert r["kept"] == (c < d * (1 - t["margin"]) and 2 * r["rounds_won"] > r["rounds"]), \
        (name, r["kept"], c, d, r["rounds_won"])
    if r["kept"]:
        kept.append(name)
print(",".join(kept))
PY
)
check "the file has both routines, complete parameters, and the rule's kept flags" \
    test $? -eq 0
echo "    kept: '${kept}'"

shown() { # the device's clblast_tuning in mpt-topo --json
    "$topo" --no-profile -d 0 --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["devices"][0]["clblast_tuning"])'
}
check "mpt-topo --json shows the kept routines ('$kept')" test "$(shown)" = "$kept"
check "MPT_CLBLAST_TUNING=off shows none" test "$(MPT_CLBLAST_TUNING=off shown)" = ""

MPT_PROFILE_QUICK=1 "$topo" -d 0 >/dev/null 2>&1
check "a quick profile afterwards" test $? -eq 0
if [ -n "$kept" ]; then
    check "the profile is keyed with the tuned routines" \
        grep -q "clblast_tuned=$kept|" "$cache"/mpt/profile-*.json
else
    check "the profile is keyed without tuning" \
        sh -c "! grep -q clblast_tuned '$cache'/mpt/profile-*.json"
fi

"$topo" --tune-fraction 0 >/dev/null 2>&1
check "--tune-fraction 0 is a usage error (exit 2)" test $? -eq 2
"$topo" --tune --cluster /dev/null >/dev/null 2>&1
check "--tune with --cluster is a usage error (exit 2)" test $? -eq 2
exit $failed
