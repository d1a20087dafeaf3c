#!/bin/sh
# mpt-report end to end: a short two-stage run on two devices writes its
# metrics, trace and plan; mpt-report turns them into one page that
# - needs no network (no http(s) source, Chart.js inside);
# - in headless Chromium (Debian package chromium) logs nothing to the
#   console and reports every chart drawn with points and painted pixels
#   (the page's own check, <body data-mpt-status="ok">), loss, accuracy,
#   throughput, step time, utilisation, memory and the Gantt chart among them;
# and a page whose Chart.js is broken fails that check (the check can fail).
# Bad input: exit 1 naming the file and line, usage errors exit 2, a torn
# last line (a killed run) is left out with a warning.
# Skips (77) without the dataset or Chart.js; exits 77 after the checks
# that need no browser when Chromium is absent.
set -u
. "${MPT_TESTS_SRCDIR:-tests}/cli_lib.sh"
train=${MPT_TRAIN:-./bin/mpt-train}
plan=${MPT_PLAN:-./bin/mpt-plan}
report=${MPT_REPORT:-./bin/mpt-report}
model="${MPT_TESTS_SRCDIR:-tests}/../models/mlp-fashion.json"
cli_need_fashion
cli_setup report
if ! "$report" --help | grep -q 'chart.min.js\|chartjs'; then
    echo "FAIL mpt-report --help"
    exit 1
fi

# ---- a run to report ------------------------------------------------------
run 300 "$plan" --model "$model" --devices 0-1 --batch 64 --pp 2 --microbatches 4 --json \
    --trace "$tmp/predicted.json"
cp "$out" "$tmp/plan.json"
[ "$rc" -eq 0 ] || fail "mpt-plan" "exit $rc"
run 600 "$train" --model "$model" --devices 0-1 --plan "$tmp/plan.json" --steps 60 --batch 64 \
    --eval-every 20 --metrics "$tmp/run.jsonl" --trace "$tmp/trace.json"
[ "$rc" -eq 0 ] || fail "mpt-train" "exit $rc"
run 60 "$report" "$tmp/run.jsonl" --trace "$tmp/trace.json" --trace "$tmp/predicted.json" \
    --plan "$tmp/plan.json" -o "$tmp/report.html"
if [ "$rc" -eq 0 ] && [ -s "$tmp/report.html" ]; then
    ok "mpt-report writes the page"
    # Both timelines: the measured tracks and the planner's, by file.
    grep -q '"track":"device 0 ' "$tmp/report.html" &&
        grep -qF '"track":"replica 0 \/ link 0->1"' "$tmp/report.html" &&
        ok "the Gantt data holds the measured and the predicted tracks" ||
        fail "Gantt tracks" "$(grep -o '"track":"[^"]*"' "$tmp/report.html" | sort -u | head -5)"
else
    fail "mpt-report" "exit $rc"
fi
if grep -q 'Chart.js v3' "$tmp/report.html" &&
    ! grep -Eiq '(src|href)="(https?:)?//' "$tmp/report.html"; then
    ok "the page is self-contained (Chart.js inside, no network source)"
else
    fail "self-contained page" "$(grep -Eio '(src|href)="[^"]*"' "$tmp/report.html" | head -3)"
fi

# ---- bad input ----------------------------------------------------------------
run 30 "$report" "$tmp/missing.jsonl" -o "$tmp/x.html"
[ "$rc" -eq 1 ] && grep -q 'missing.jsonl' "$err" && ok "a missing metrics file: exit 1 naming it" ||
    fail "missing metrics file" "exit $rc"
{ head -n 3 "$tmp/run.jsonl"; echo '{"step": 4, oops'; tail -n 2 "$tmp/run.jsonl"; } >"$tmp/bad.jsonl"
run 30 "$report" "$tmp/bad.jsonl" -o "$tmp/x.html"
[ "$rc" -eq 1 ] && grep -q 'bad.jsonl line 4' "$err" &&
    ok "a malformed line: exit 1 naming the file and line" || fail "malformed line" "exit $rc"
{ head -n 5 "$tmp/run.jsonl"; printf '{"step": 6, "epo'; } >"$tmp/torn.jsonl"
run 30 "$report" "$tmp/torn.jsonl" -o "$tmp/torn.html"
[ "$rc" -eq 0 ] && grep -q 'line 6 is cut short' "$err" &&
    ok "a torn last line is left out with a warning" || fail "torn last line" "exit $rc"
run 30 "$report" "$tmp/run.jsonl"
[ "$rc" -eq 2 ] && ok "no -o: usage error (exit 2)" || fail "no -o" "exit $rc"
run 30 "$report" "$tmp/run.jsonl" --trace "$tmp/run.jsonl" -o "$tmp/x.html"
[ "$rc" -eq 1 ] && grep -q 'trace' "$err" && ok "a trace that is not one: exit 1" ||
    fail "bad trace" "exit $rc"

# ---- in a real browser ----------------------------------------------------------
chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
    echo "SKIP: chromium not installed (apt-get install chromium): the page was not rendered"
    [ "$failed" -eq 0 ] && exit 77
    exit 1
fi
# Renders a page; its DOM after the scripts ran in $tmp/dom.html, the
# browser's log (console messages are its "CONSOLE" lines) in $tmp/console.
render() {
    HOME=$tmp timeout 120 "$chromium" --headless --no-sandbox --disable-gpu \
        --user-data-dir="$tmp/chromium" --enable-logging=stderr --v=0 \
        --virtual-time-budget=10000 --dump-dom "file://$1" >"$tmp/dom.html" 2>"$tmp/browser.log"
    grep 'CONSOLE' "$tmp/browser.log" >"$tmp/console"
}
render "$tmp/report.html"
status=$(sed -n 's/.*data-mpt-status="\([^"]*\)".*/\1/p' "$tmp/dom.html" | head -n 1)
charts=$(sed -n 's/.*data-mpt-charts="\([^"]*\)".*/\1/p' "$tmp/dom.html" | sed 's/&quot;/"/g')
if [ "$status" = ok ] && [ ! -s "$tmp/console" ]; then
    ok "Chromium renders the page: no console message, every chart has points and pixels"
else
    fail "rendering" "status '$status', console: $(head -c 400 "$tmp/console")"
fi
missing=""
for id in loss accuracy throughput step_time busy gflops bandwidth waits memory gantt; do
    echo "$charts" | grep -q "\"id\":\"$id\",\"points\":[1-9]" || missing="$missing $id"
done
[ -z "$missing" ] && ok "charts drawn: loss, accuracy, throughput, step time, busy, GFLOP/s, bandwidth, waits, memory, gantt" ||
    fail "charts missing:$missing" "$charts"

# The check fails when the charts cannot be drawn: Chart.js replaced by a
# script that throws.
echo 'throw new Error("no chart library");' >"$tmp/broken.js"
run 30 "$report" "$tmp/run.jsonl" --chartjs "$tmp/broken.js" -o "$tmp/broken.html"
render "$tmp/broken.html"
status=$(sed -n 's/.*data-mpt-status="\([^"]*\)".*/\1/p' "$tmp/dom.html" | head -n 1)
if [ "$status" != ok ] && [ -s "$tmp/console" ]; then
    ok "a page whose charts cannot be drawn fails the check ($status)"
else
    fail "broken page passed" "status '$status'"
fi
exit "$failed"
