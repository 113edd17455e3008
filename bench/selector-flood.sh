#!/usr/bin/env bash
# What expensive Mercure selectors cost the broker (issue 24; results in
# docs/security.md, "Selector cost"). Starts the release binary on loopback
# in compatibility mode 8, then, RUNS times (a fresh broker each run):
#   1. CPU time per request, one request at a time (bench/selector_flood.py
#      cost): `same` (issue 24's HEAD: 100 copies of
#      https://example.com/:a(\w{200})/0), `distinct` (100 such patterns,
#      new in every request), `templates` (a 0.x QUERY with 1,000 new URI
#      templates of 95 `{+a}` expressions: a 1 MB body) and `variables` (the
#      same with one expression of 200 variables each);
#   2. floods (bench/selector_flood.py flood): PROCS processes x CONNS
#      keep-alive connections sending `distinct`, then `same`, then `plain`
#      requests (one exact matcher: the control) for FLOOD_SECONDS each,
#      while GET /healthz is timed every 100 ms; and the same probe with no
#      flood (`idle`: what the machine itself adds now).
#
#   bench/selector-flood.sh [BINARY]          (default target/release/sse-broker)
#   RUNS=5 PROCS=3 CONNS=50 FLOOD_SECONDS=20 COST_REQUESTS=50 PORT=18090 bench/selector-flood.sh
#   COST_KINDS="same" FLOOD_KINDS="idle same" …   (a subset)
#
# With PIN=1 (the default, on 2 cores or more) the broker runs on core 0
# (one HTTP worker, one compile slot) and the clients on core 1, so the
# clients' own CPU does not count as the broker's; PIN=0 runs both where
# the scheduler puts them.
#
# An unmodified build (before issue 24) may take a minute per request:
# COST_REQUESTS=1 and a short FLOOD_SECONDS keep its run bounded (every step
# has a timeout, a broker that does not stop is killed).
set -euo pipefail
BIN=${1:-target/release/sse-broker}
RUNS=${RUNS:-5}
PROCS=${PROCS:-3}
CONNS=${CONNS:-50}
FLOOD_SECONDS=${FLOOD_SECONDS:-20}
COST_REQUESTS=${COST_REQUESTS:-50}
COST_TIMEOUT=${COST_TIMEOUT:-120}
PORT=${PORT:-18090}
PIN=${PIN:-1}
COST_KINDS=${COST_KINDS-same distinct templates variables}
FLOOD_KINDS=${FLOOD_KINDS-idle distinct same plain}
BROKER_ON=(); CLIENT_ON=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  BROKER_ON=(taskset -c 0); CLIENT_ON=(taskset -c 1)
fi
HERE=$(cd "$(dirname "$0")" && pwd)
CLIENT="$HERE/selector_flood.py"
LOG=$(mktemp /tmp/selector-flood.XXXXXX.log)

if [ ! -x "$BIN" ]; then echo "no binary at $BIN (cargo build --release --bins)" >&2; exit 64; fi
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "port $PORT is taken: PORT=… to move" >&2; exit 1
fi

BROKER=""
stop_broker() {
  if [ -n "$BROKER" ]; then
    kill "$BROKER" 2>/dev/null || true
    # A broker stuck in a compile is not waited for forever.
    timeout 15 tail --pid="$BROKER" -f /dev/null || kill -9 "$BROKER" 2>/dev/null || true
    BROKER=""
  fi
}
trap stop_broker EXIT

start_broker() {
  SSE_BROKER__DEMO__ENABLED=false \
  SSE_BROKER__MERCURE__PROTOCOL_VERSION_COMPATIBILITY=8 \
  RUST_LOG=warn "${BROKER_ON[@]}" "$BIN" --bind "127.0.0.1:$PORT" >>"$LOG" 2>&1 &
  BROKER=$!
  for _ in $(seq 100); do
    if curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz"; then return; fi
    sleep 0.1
  done
  echo "the broker did not start (log: $LOG)" >&2; exit 1
}

echo "binary=$BIN runs=$RUNS flood=${PROCS}x${CONNS} connections for ${FLOOD_SECONDS}s cost_requests=$COST_REQUESTS cores=$(nproc) pinned=${BROKER_ON[*]:-no} load=$(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq "$RUNS"); do
  echo "== run $run load=$(cut -d" " -f1-3 /proc/loadavg)"
  start_broker
  for kind in $COST_KINDS; do
    timeout $((COST_REQUESTS * COST_TIMEOUT + 30)) "${CLIENT_ON[@]}" python3 "$CLIENT" cost --port "$PORT" \
      --pid "$BROKER" --kind "$kind" --requests "$COST_REQUESTS" --timeout "$COST_TIMEOUT" \
      || echo "cost kind=$kind: timed out or failed"
  done
  stop_broker
  # A fresh broker per flood: what one flood left running (an unbounded
  # compile goes on after its client left) does not slow the next.
  for kind in $FLOOD_KINDS; do
    start_broker
    timeout $((FLOOD_SECONDS + 120)) "${CLIENT_ON[@]}" python3 "$CLIENT" flood --port "$PORT" --kind "$kind" \
      --procs "$PROCS" --conns "$CONNS" --seconds "$FLOOD_SECONDS" --timeout 30 \
      || echo "flood kind=$kind: timed out or failed"
    stop_broker
  done
done
echo "broker log: $LOG"
