#!/usr/bin/env bash
# Instructions a redis-server spends per run of a publish script (the
# request read, the script, its redis.calls, the reply), counted by callgrind
# so that the machine's load does not matter: how a change to
# src/cluster/publish.lua is judged (docs/BENCH-cluster.md).
#
#   bench/script-cost.sh [SCRIPT.lua ...]       # default: src/cluster/publish.lua
#   bench/script-cost.sh src/cluster/publish.lua /tmp/variant.lua
#   bench/script-cost.sh …/centrifuge/internal/redis_lua/broker_history_add_stream.lua
#
# A script named broker_history_add_stream.lua is Centrifugo's publish with
# history (centrifugal/centrifuge): it gets the arguments its Redis broker
# sends for the same event (history of 1,000, TTLs set, PUBLISH, no
# idempotency result key, no delta), so both are counted on one machine.
# Each script gets a fresh redis-server (under callgrind, on a free loopback
# port) and the publish script's arguments for one 100-byte event without an
# idempotency key on one channel: 200 warm-up calls, then CALLS counted.
# Bounded: a few thousand requests, every wait has a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${CALLS:-2000}
OUT=$(mktemp -d /tmp/script-cost.XXXXXX)
[ $# -gt 0 ] || set -- src/cluster/publish.lua
DATA=$(printf '%100s' | tr ' ' x)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null || true' EXIT

for script in "$@"; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" \
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
  PID=$!
  for _ in $(seq 300); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  sha=$(redis-cli -p "$port" script load "$(cat "$script")")
  case "$(basename "$script")" in
    broker_history_add_stream.lua)
      call() {
        redis-benchmark -p "$port" -q -n "$1" -c 1 EVALSHA "$sha" 3 'centrifuge.stream.{b}' \
          'centrifuge.stream.meta.{b}' '' "$DATA" 1000 3600 'centrifuge.client.{b}' 3600 \
          'epoch' publish '' 0 0 '' >/dev/null 2>&1
      } ;;
    *)
      call() {
        redis-benchmark -p "$port" -q -n "$1" -c 1 EVALSHA "$sha" 2 'sse:{b}:log' 'sse:{b}:events' \
          PUBLISH 'sse:{b}:bus' b 1000 3600000 4294967296 '' 0 300000 '' "$DATA" 0 '' >/dev/null 2>&1
      } ;;
  esac
  call 200
  callgrind_control -z "$PID" >/dev/null 2>&1
  call "$CALLS"
  callgrind_control -d "$PID" >/dev/null 2>&1
  dump=$(ls -v "$OUT"/cg."$PID".* | tail -1)
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
  echo "$script: $((total / CALLS)) instructions per call ($CALLS calls)"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
done
echo "dumps: $OUT"
