#!/bin/sh
# The Prometheus endpoint of a running mpt-train (--metrics-port 0: a free
# port, printed on stderr), as scrapers see it:
# - curl: the content type of text format 0.0.4, the documented metric
#   names with device labels, a counter that grows between two scrapes, 404
#   for another path;
# - promtool check metrics (Debian package prometheus) accepts the text;
# - a real Prometheus server scrapes it: its API reports the target up and
#   mpt_steps_total above 0.
# Skips (77) without curl or the dataset, or when libmpt was built without
# libmicrohttpd; exits 77 after the curl checks when the prometheus package
# is absent, since half of what it checks was not run.
set -u
. "${MPT_TESTS_SRCDIR:-tests}/cli_lib.sh"
train=${MPT_TRAIN:-./bin/mpt-train}
model="${MPT_TESTS_SRCDIR:-tests}/../models/mlp-fashion.json"
cli_need_fashion
command -v curl >/dev/null 2>&1 || { echo "SKIP: curl not installed"; exit 77; }
cli_setup prometheus
MPT_DEVICES=0
export MPT_DEVICES
pids=""
# Everything started here ends with the script, whatever happens.
trap 'for p in $pids; do kill "$p" 2>/dev/null; done; wait; rm -rf "$tmp"' EXIT

# A long run (stopped below with SIGTERM, which ends it at a step boundary).
"$train" --model "$model" --steps 1000000 --batch 32 --timing --metrics-port 0 \
    >"$tmp/train.out" 2>"$tmp/train.err" </dev/null &
train_pid=$!
pids="$train_pid"

# Polls `command` (a shell string) every half second for at most `limit`
# seconds; 0 as soon as it succeeds.
poll() {
    limit=$1
    i=0
    while [ "$i" -lt $((limit * 2)) ]; do
        if sh -c "$2" >/dev/null 2>&1; then return 0; fi
        kill -0 "$train_pid" 2>/dev/null || return 1
        sleep 0.5
        i=$((i + 1))
    done
    return 1
}

poll 120 "grep -q 'metrics at' '$tmp/train.err'"
if grep -q "without libmicrohttpd" "$tmp/train.err"; then
    echo "SKIP: $(cat "$tmp/train.err")"
    exit 77
fi
port=$(sed -n 's|.*metrics at http://127\.0\.0\.1:\([0-9]*\)/metrics.*|\1|p' "$tmp/train.err")
[ -n "$port" ] || { echo "FAIL no metrics address printed: $(cat "$tmp/train.err")"; exit 1; }
url=http://127.0.0.1:$port/metrics
# Until the first step's figures are in (kernels compile first).
poll 300 "curl -sf '$url' | grep -q '^mpt_steps_total [1-9]'" ||
    { echo "FAIL no step figures at $url: $(tail -n 3 "$tmp/train.err")"; exit 1; }

curl -sf -D "$tmp/headers" "$url" >"$tmp/scrape1" || fail "scrape" "curl failed"
if grep -qi '^content-type: text/plain; version=0.0.4' "$tmp/headers"; then
    ok "content type is the text format 0.0.4"
else
    fail "content type" "$(cat "$tmp/headers")"
fi
missing=""
for series in 'mpt_info{version="' mpt_steps_total mpt_total_steps mpt_epoch mpt_loss \
    mpt_learning_rate mpt_samples_per_second mpt_step_seconds mpt_busy_ratio \
    'mpt_device_busy_ratio{device="0",rank="0",replica="0",stage="0",member="0"}' \
    'mpt_device_memory_bytes{device="0"' 'mpt_device_kernel_launches{device="0"' \
    'mpt_device_allreduce_bytes_total{device="0"' 'mpt_device_flops_per_second{device="0"' \
    'mpt_device_memory_bandwidth_bytes_per_second{device="0"' \
    'mpt_device_memory_capacity_bytes{device="0"' 'mpt_device_peer_wait_seconds{device="0"'; do
    grep -qF "$series" "$tmp/scrape1" || missing="$missing $series"
done
if [ -z "$missing" ]; then
    ok "the documented metrics are served, with device labels"
else
    fail "metrics missing:$missing" "$(head -c 800 "$tmp/scrape1")"
fi
steps1=$(sed -n 's/^mpt_steps_total //p' "$tmp/scrape1")
poll 60 "[ \"\$(curl -sf '$url' | sed -n 's/^mpt_steps_total //p')\" -gt '$steps1' ]" &&
    ok "mpt_steps_total grows between scrapes (from $steps1)" ||
    fail "mpt_steps_total stays at $steps1" ""
# A second run on the same port fails at once, naming the address.
run 120 "$train" --model "$model" --steps 1 --batch 32 --metrics-port "$port"
[ "$rc" -eq 1 ] && grep -q "127.0.0.1 port $port" "$err" &&
    ok "a port in use: exit 1 naming the address" || fail "port in use" "exit $rc"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/other")
[ "$code" = 404 ] && ok "another path is 404" || fail "another path" "HTTP $code"

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    echo "SKIP: promtool and prometheus not installed (apt-get install prometheus)"
    [ "$failed" -eq 0 ] && exit 77
    exit 1
fi
if promtool check metrics <"$tmp/scrape1" >"$tmp/promtool.out" 2>&1; then
    ok "promtool check metrics accepts the text"
else
    fail "promtool check metrics" "$(cat "$tmp/promtool.out")"
fi

# A real Prometheus scraping every second, on a free port of its own: the
# first of a few tried that it could listen on.
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: mpt
    static_configs:
      - targets: ['127.0.0.1:$port']
EOF
for try in 1 2 3 4 5; do
    pport=$((20000 + ($$ * 7 + try * 1009) % 30000))
    prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb$try" \
        --web.listen-address="127.0.0.1:$pport" >"$tmp/prometheus.log" 2>&1 </dev/null &
    prom_pid=$!
    pids="$pids $prom_pid"
    api=http://127.0.0.1:$pport/api/v1/query
    if poll 30 "curl -sf '$api?query=up' | grep -q success"; then break; fi
    kill "$prom_pid" 2>/dev/null
    prom_pid=""
done
if [ -z "${prom_pid:-}" ]; then
    fail "prometheus did not start" "$(tail -n 5 "$tmp/prometheus.log")"
else
    # up is 1 once a scrape succeeded; the counter is then above 0.
    if poll 60 "curl -sf '$api?query=up%7Bjob%3D%22mpt%22%7D' | grep -q '\"1\"\]'" &&
        poll 30 "curl -sf '$api?query=mpt_steps_total%3E0' | grep -q '\"job\":\"mpt\"'"; then
        ok "a real Prometheus scrapes the run (up 1, mpt_steps_total > 0)"
    else
        fail "prometheus scrape" "$(curl -s "$api?query=up"; tail -n 5 "$tmp/prometheus.log")"
    fi
fi

kill -TERM "$train_pid"
wait "$train_pid"
rc=$?
# SIGTERM ends the run at a step boundary with 128 + 15.
[ "$rc" -eq 143 ] && ok "mpt-train stopped by SIGTERM exits 143" ||
    fail "mpt-train exit status $rc" "$(tail -n 3 "$tmp/train.err")"
exit "$failed"
