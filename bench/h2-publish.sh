#!/usr/bin/env bash
# Publishing over HTTP/2 against HTTP/1.1 (BENCHMARKS.md, "HTTP/2 publishing"):
# h2load sends closed-loop publishes to one broker with cleartext HTTP/2 (h2c,
# many publishes multiplexed on one connection) and with HTTP/1.1 keep-alive
# connections, while one subscriber reads the channel. Prints a markdown table.
#
#   bench/h2-publish.sh                 # ROUNDS=3 N=100000
#
# Needs h2load (Debian: nghttp2-client), curl, taskset and a release build
# (cargo build --release). The broker runs on CPU 0, h2load and the subscriber
# on CPU 1; everything listens on 127.0.0.1 and every run stops after N
# requests.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/sse-broker}
ROUNDS=${ROUNDS:-3}   # runs of every setup, alternating
N=${N:-100000}        # publishes per run
PORT=${PORT:-18411}
OUT=${OUT:-/tmp/bench-h2-publish}
command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
[ -x "$BIN" ] || { echo "missing $BIN: cargo build --release" >&2; exit 1; }
mkdir -p "$OUT"
printf '{"n":1,"text":"%090d"}' 0 > "$OUT/body.json"   # ~100 bytes

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run NAME H2LOAD-ARGS...: one h2load run on a fresh broker; prints "rate us_per_publish".
run() {
  local name=$1; shift
  SSE_BROKER__SERVER__TLS__H2C=true SSE_BROKER__LIMITS__PUBLISH_RATE=0 RUST_LOG=warn \
    taskset -c 0 "$BIN" --bind "127.0.0.1:$PORT" --demo false >"$OUT/$name.broker.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.05; done
  taskset -c 1 curl -sN --max-time 600 -H 'Accept: text/event-stream' \
    "http://127.0.0.1:$PORT/stream/h2bench" >/dev/null 2>&1 &
  local sub=$!
  sleep 0.3
  local before; before=$(cpu_ticks "$pid")
  taskset -c 1 h2load -n "$N" -d "$OUT/body.json" -H 'content-type: application/json' "$@" \
    "http://127.0.0.1:$PORT/publish/h2bench" >"$OUT/$name.h2load" 2>&1 || true
  local after; after=$(cpu_ticks "$pid")
  kill "$sub" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local rate ok
  rate=$(awk '/^finished in/{gsub(",","",$4); print $4}' "$OUT/$name.h2load")
  ok=$(awk '/^status codes:/{print $3}' "$OUT/$name.h2load")
  [ "$ok" = "$N" ] || echo "warning: $name: $ok of $N answered 2xx" >&2
  awk -v r="$rate" -v t=$((after - before)) -v n="$N" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%.0f %.1f\n", r, t / hz * 1e6 / n}'
}

declare -A RESULTS
SETUPS=("h2c, 1 connection, 64 streams|-c 1 -m 64" "h2c, 8 connections, 8 streams each|-c 8 -m 8"
        "HTTP/1.1, 8 keep-alive connections|--h1 -c 8 -m 1")
for round in $(seq "$ROUNDS"); do
  for setup in "${SETUPS[@]}"; do
    name=${setup%%|*}; args=${setup#*|}
    # shellcheck disable=SC2086
    RESULTS[$name]+="$(run "r$round-${name//[^a-zA-Z0-9]/_}" $args);"
  done
done
echo "| setup | publishes/s (runs) | broker CPU µs per publish (runs) |"
echo "|---|---|---|"
for setup in "${SETUPS[@]}"; do
  name=${setup%%|*}
  echo "${RESULTS[$name]}" | tr ';' '\n' | awk -v name="$name" 'NF {
      r = r sep $1; c = c sep $2; sep = " / " }
    END { printf "| %s | %s | %s |\n", name, r, c }'
done
