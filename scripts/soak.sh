#!/usr/bin/env bash
# The long forms of the hostile-client and fault suite (docs/hostile-clients.md).
# CI runs every scenario in its short form (scripts/test.sh); this runs them
# longer, and the soak. Everything is bounded, stops by itself, targets
# loopback only and runs at nice 19 (the machine is shared).
#
#   scripts/soak.sh faults    # the fault scenarios with FAULT_OUTAGE_SECS (10) of outage,
#                             # on both stream writers (~5 min)
#   scripts/soak.sh figures   # the hostile-client tests, printing what they measure (~3 min)
#   scripts/soak.sh soak      # SOAK_MINUTES (10) of SOAK_SUBSCRIBERS (10,000) subscribers on
#                             # SOAK_CHANNELS (1,000) channels at SOAK_RATE (1,000) events/s,
#                             # the broker's RSS and file descriptors sampled every 5 s
#   scripts/soak.sh all       # the three
#
# Results go to OUT (default /tmp/sse-soak-<time>): faults.log, figures.log, and for the soak
# samples.tsv, loadgen.json, broker.log, summary.txt and soak-rss.svg (the plot; copy it to
# docs/ to publish it); SOAK_NO_BUILD=1 uses the binaries as they are. The soak's history budget (SOAK_BUDGET_BYTES, 32 MiB) is sized so that
# retention is full within the first two minutes: from then on RSS must stay flat.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-all}
OUT=${OUT:-/tmp/sse-soak-$(date +%Y%m%d-%H%M%S)}
export FAULT_OUTAGE_SECS=${FAULT_OUTAGE_SECS:-10}
SOAK_MINUTES=${SOAK_MINUTES:-10}
SOAK_SUBSCRIBERS=${SOAK_SUBSCRIBERS:-10000}
SOAK_CHANNELS=${SOAK_CHANNELS:-1000}
SOAK_RATE=${SOAK_RATE:-1000}
SOAK_BUDGET_BYTES=${SOAK_BUDGET_BYTES:-33554432}
SOAK_PUBLISHERS=${SOAK_PUBLISHERS:-16}
BIN=${BIN:-$ROOT/target/release/sse-broker}
LG=${LG:-$ROOT/bench/target/release/sse-loadgen}
mkdir -p "$OUT"
export CARGO_TERM_COLOR=never

case "$MODE" in faults|figures|soak|all) ;; *) sed -n '2,18p' "$0" >&2; exit 64 ;; esac

faults() {
  echo "faults: ${FAULT_OUTAGE_SECS} s outages, both stream writers -> $OUT/faults.log"
  local writer
  for writer in direct body; do
    SSE_BROKER__STREAM__WRITER=$writer nice -n 19 cargo test --release --locked --test api -- \
      --test-threads 1 --nocapture \
      cluster::redis_killed_under_load cluster::redis_frozen_under_load \
      cluster::node_killed_under_load durable::sigkill_during_burst 2>&1 | tee -a "$OUT/faults.log"
  done
  grep -E "under load|test result" "$OUT/faults.log" || true
}

figures() {
  echo "figures: the hostile-client tests -> $OUT/figures.log"
  nice -n 19 cargo test --release --locked --test hostile -- --test-threads 1 --nocapture \
    2>&1 | tee "$OUT/figures.log" | grep -E "^measured:|test result"
}

# Every 5 s: seconds since start, broker RSS (KiB), open file descriptors, threads, and from
# /metrics the retained history bytes, events trimmed for the budget and open streams.
sample() {
  local pid=$1 url=$2 start=$SECONDS
  echo -e "secs\trss_kib\tfds\tthreads\thistory_bytes\tbudget_trimmed\topen_streams" >"$OUT/samples.tsv"
  while kill -0 "$pid" 2>/dev/null; do
    local rss threads fds metrics
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
    metrics=$(curl -s --max-time 2 "$url/metrics" || true)
    metric() { awk -v name="$1" '$1 == name {printf "%d", $2}' <<<"$metrics"; }
    echo -e "$((SECONDS - start))\t${rss:-0}\t$fds\t${threads:-0}\t$(metric sse_broker_history_retained_bytes)\t$(metric sse_broker_history_budget_trimmed_total)\t$(metric sse_broker_open_streams)" >>"$OUT/samples.tsv"
    sleep 5
  done
}

soak() {
  local secs=$((SOAK_MINUTES * 60)) pid port sampler rc
  echo "soak: $SOAK_MINUTES min, $SOAK_SUBSCRIBERS subscribers on $SOAK_CHANNELS channels, $SOAK_RATE events/s -> $OUT"
  if [ -z "${SOAK_NO_BUILD:-}" ]; then
    nice -n 19 cargo build --release --locked --bins --quiet
    CARGO_TARGET_DIR="$ROOT/bench/target" nice -n 19 cargo build --release --locked --quiet \
      --manifest-path bench/loadgen/Cargo.toml
  fi
  SSE_BROKER__LIMITS__MAX_STREAMS_PER_IP=0 SSE_BROKER__LIMITS__PUBLISH_RATE=0 \
    SSE_BROKER__HISTORY__MAX_TOTAL_BYTES=$SOAK_BUDGET_BYTES \
    RUST_LOG=warn,sse_broker::startup=info \
    nice -n 19 "$BIN" --bind 127.0.0.1:0 --demo false 2>"$OUT/broker.log" &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening addr=127.0.0.1:\([0-9]*\).*/\1/p' "$OUT/broker.log")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$OUT/broker.log"; return 1; }
  sample "$pid" "http://127.0.0.1:$port" &
  sampler=$!
  set +e
  (ulimit -n 20000; nice -n 19 timeout $((secs + 600)) "$LG" \
    --sub-url "http://127.0.0.1:$port/stream/{channel}" \
    --pub-url "http://127.0.0.1:$port/publish/{channel}" \
    --subscribers "$SOAK_SUBSCRIBERS" --channels "$SOAK_CHANNELS" --channel-prefix soak \
    --rate "$SOAK_RATE" --duration "$secs" --publishers "$SOAK_PUBLISHERS" --payload-bytes 100 \
    --broker-pid "$pid" --drain-secs 10 --max-secs $((secs + 300)) \
    --output "$OUT/loadgen.json" 2>"$OUT/loadgen.err")
  rc=$?
  set -e
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  kill "$sampler" 2>/dev/null || true
  trap - EXIT
  python3 scripts/soak_report.py "$OUT" | tee "$OUT/summary.txt"
  return $rc
}

case "$MODE" in
  faults) faults ;;
  figures) figures ;;
  soak) soak ;;
  all) faults; figures; soak ;;
esac
