#!/usr/bin/env bash
# Connect rate with the application's authorization hook (docs/hooks.md) on,
# cache cold and warm, against the hook off; 3 runs of each. Then how long
# a client waits for its 503 when the hook is down or slow (and once the
# breaker opened), and how long a revocation takes on a node with
# SUBSCRIBERS running channels. Numbers go in docs/BENCH-hooks.md.
#
#   bench/hooks.sh [SUBSCRIBERS] [RUNS]
#   bench/hooks.sh 2000 3
#
# The hook is tests/apps/hook_app.py in its "open" mode (it allows every
# stream, answering {"cacheFor": "60s"}): a Python standard-library server,
# so "cold" measures the broker plus a simple application; a real one is
# slower or faster. Every subscriber asks for its own channel (channel i),
# so every question is a different cache key: "cold" asks the hook for every
# stream; "warm" is a second connect of the same subscribers within cacheFor
# on the same broker (every answer from the cache).
#
# Env: OURS_BIN (target/release/sse-broker), LOADGEN (bench/target/release/sse-loadgen),
# PORT (18080), CONCURRENCY (64, loadgen --connect-concurrency).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-2000}
RUNS=${2:-3}
OURS_BIN=${OURS_BIN:-$ROOT/target/release/sse-broker}
LOADGEN=${LOADGEN:-$ROOT/bench/target/release/sse-loadgen}
PORT=${PORT:-18080}
CONCURRENCY=${CONCURRENCY:-64}
OUT=$(mktemp -d /tmp/bench-hooks.XXXXXX)
[ -x "$OURS_BIN" ] || { echo "build the broker: cargo build --release" >&2; exit 1; }
[ -x "$LOADGEN" ] || { echo "build the load generator (bench/README.md)" >&2; exit 1; }

APP_PID=
BPID=
cleanup() {
  [ -n "$BPID" ] && kill "$BPID" 2>/dev/null || true
  [ -n "$APP_PID" ] && kill "$APP_PID" 2>/dev/null || true
}
trap cleanup EXIT

python3 "$ROOT/tests/apps/hook_app.py" --mode open --cache-for 60s >"$OUT/app.out" 2>&1 &
APP_PID=$!
for _ in $(seq 100); do grep -q listening "$OUT/app.out" && break; sleep 0.1; done
APP_PORT=$(sed -n 's/^listening //p' "$OUT/app.out")
[ -n "$APP_PORT" ] || { echo "the hook application did not start" >&2; exit 1; }

# start_broker HOOK_URL: the broker on $PORT (per-IP limits lifted: the load
# generator speaks from one address).
start_broker() {
  SSE_BROKER__DEMO__ENABLED=false SSE_BROKER__LIMITS__MAX_STREAMS_PER_IP=0 \
    SSE_BROKER__LIMITS__PUBLISH_RATE=0 RUST_LOG=warn \
    SSE_BROKER__HOOKS__SUBSCRIBE_URL="$1" \
    "$OURS_BIN" --bind "127.0.0.1:$PORT" >>"$OUT/broker.log" 2>&1 &
  BPID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && return 0
    sleep 0.1
  done
  echo "the broker did not start" >&2
  exit 1
}

stop_broker() {
  kill "$BPID" && wait "$BPID" 2>/dev/null || true
  BPID=
}

# connect NAME: one idle loadgen run; prints its connect rate, the
# connects that succeeded and failed, and the broker's CPU per connect (µs;
# the broker process alone, not the hook application: steadier than the
# rate on a shared machine).
connect() {
  "$LOADGEN" --sub-url "http://127.0.0.1:$PORT/stream/{channel}" \
    --pub-url "http://127.0.0.1:$PORT/publish/{channel}" \
    --subscribers "$N" --channels "$N" --duration 0 --settle-secs 0.2 \
    --connect-concurrency "$CONCURRENCY" --broker-pid "$BPID" \
    --output "$OUT/$1.json" >/dev/null 2>>"$OUT/loadgen.log"
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); r=j['connect']; \
cpu=j['broker']['connect_cpu_secs']*1e6/max(r['ok'],1); \
print(f\"{r['rate_per_s']:.0f} {r['ok']} {r['failed']} {cpu:.0f}\")" "$OUT/$1.json"
}

printf '%-6s %-4s %12s %6s %6s %s\n' mode run connects/s ok failed 'broker-cpu-us/connect'
for run in $(seq "$RUNS"); do
  start_broker ""
  read -r rate ok failed cpu < <(connect "off-$run")
  printf '%-6s %-4s %12s %6s %6s %s\n' off "$run" "$rate" "$ok" "$failed" "$cpu"
  stop_broker

  start_broker "http://127.0.0.1:$APP_PORT/hook"
  read -r rate ok failed cpu < <(connect "cold-$run")
  printf '%-6s %-4s %12s %6s %6s %s\n' cold "$run" "$rate" "$ok" "$failed" "$cpu"
  read -r rate ok failed cpu < <(connect "warm-$run")
  printf '%-6s %-4s %12s %6s %6s %s\n' warm "$run" "$rate" "$ok" "$failed" "$cpu"
  stop_broker
done

# The failure policy (deny): time to the 503, 8 connects each, with the
# default timeout (2 s) and breaker (5 failures, 10 s).
echo
printf '%-5s %-3s %6s %10s %s\n' hook try status seconds retry-after
failures() {
  start_broker "$2"
  for i in $(seq 8); do
    curl -s -o /dev/null -w "%{http_code} %{time_total} %header{retry-after}\n" \
      "http://127.0.0.1:$PORT/stream/news" | {
      read -r code secs retry
      printf '%-5s %-3s %6s %10s %s\n' "$1" "$i" "$code" "$secs" "$retry"
    }
  done
  stop_broker
}
failures down "http://127.0.0.1:1/hook"
curl -s -XPOST "http://127.0.0.1:$APP_PORT/control" -d '{"mode": "slow", "delay": 30}'
failures slow "http://127.0.0.1:$APP_PORT/hook"

# Revocation on one node: SUBSCRIBERS streams on as many channels (the hook
# off), and POST /users/nobody/disconnect 5 times (it asks every running
# channel and ends none).
echo
start_broker ""
"$LOADGEN" --sub-url "http://127.0.0.1:$PORT/stream/{channel}" \
  --pub-url "http://127.0.0.1:$PORT/publish/{channel}" \
  --subscribers "$N" --channels "$N" --rate 1 --duration 15 \
  --connect-concurrency "$CONCURRENCY" --output "$OUT/revoke.json" >/dev/null 2>>"$OUT/loadgen.log" &
LPID=$!
for _ in $(seq 200); do
  [ "$(curl -s "http://127.0.0.1:$PORT/channels" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null)" = "$N" ] && break
  sleep 0.1
done
for i in $(seq 5); do
  curl -s -XPOST -w " %{time_total}s\n" "http://127.0.0.1:$PORT/users/nobody/disconnect"
done
wait "$LPID" || true
stop_broker
echo "reports: $OUT" >&2
