#!/usr/bin/env bash
# Cluster benchmark: delivery latency and publish throughput with one node
# against two nodes on one Redis (subscribers on node A, publisher on node B:
# every event crosses Redis), plus a standalone node as the baseline. Same
# workload, same run. Prints a markdown table; JSON reports go to $OUT.
#
#   bench/cluster.sh        # ~1.5 min; needs redis-server, python3, taskset
#
# Broker nodes and Redis are pinned to CPU 0, the load generator to CPU 1
# (the machine has 2 cores), so "two nodes" measures the cost of the extra
# hop, not scaling over more cores.
set -euo pipefail
cd "$(dirname "$0")/.."

LG=${LG:-bench/target/release/sse-loadgen}
BIN=${BIN:-target/release/sse-broker}
OUT=${OUT:-/tmp/bench-cluster}
SUBS=${SUBS:-1000}          # latency workload: subscribers …
CHANNELS=${CHANNELS:-10}    # … over this many channels
RATE=${RATE:-500}           # events/s in total (x100 deliveries/s each)
SECS=${SECS:-10}            # seconds per run
TP_CHANNELS=${TP_CHANNELS:-100}   # throughput workload: 1 subscriber per channel, closed loop
REDIS_PORT=${REDIS_PORT:-16379}
A=18181; B=18182; SOLO=18183

[ -x "$LG" ] || { echo "missing $LG (see bench/README.md)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "missing $BIN: cargo build --release" >&2; exit 1; }
mkdir -p "$OUT"
# One load generator on one IP: the per-IP stream limit and the publish rate
# limit (config [limits]) would refuse most of the workload.
export SSE_BROKER__LIMITS__MAX_STREAMS_PER_IP=0 SSE_BROKER__LIMITS__PUBLISH_RATE=0
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; return 1
}

taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  >"$OUT/redis.log" 2>&1 & PIDS+=($!)
wait_port "$REDIS_PORT"
for port in $A $B; do
  RUST_LOG=warn taskset -c 0 "$BIN" --bind "127.0.0.1:$port" --demo false \
    --redis "redis://127.0.0.1:$REDIS_PORT" >"$OUT/node-$port.log" 2>&1 & PIDS+=($!)
done
NODE_A=${PIDS[1]}
RUST_LOG=warn taskset -c 0 "$BIN" --bind "127.0.0.1:$SOLO" --demo false \
  >"$OUT/node-$SOLO.log" 2>&1 & PIDS+=($!)
SOLO_PID=${PIDS[3]}
for port in $A $B $SOLO; do wait_port $port; done

# run NAME SUB_PORT PUB_PORT BROKER_PID EXTRA_FLAGS...
run() {
  local name=$1 sub=$2 pub=$3 pid=$4; shift 4
  taskset -c 1 "$LG" --sub-url "http://127.0.0.1:$sub/stream/{channel}" \
    --pub-url "http://127.0.0.1:$pub/publish/{channel}" --channel-prefix "$name" \
    --broker-pid "$pid" --duration "$SECS" --max-secs 90 --output "$OUT/$name.json" "$@" \
    2>"$OUT/$name.err" || true
}

latency=(--subscribers "$SUBS" --channels "$CHANNELS" --rate "$RATE" --publishers 4)
throughput=(--subscribers "$TP_CHANNELS" --channels "$TP_CHANNELS" --rate 0 --publishers 8)
run latsolo $SOLO $SOLO "$SOLO_PID" "${latency[@]}"
run latone $A $A "$NODE_A" "${latency[@]}"
run lattwo $A $B "$NODE_A" "${latency[@]}"
run tpsolo $SOLO $SOLO "$SOLO_PID" "${throughput[@]}"
run tpone $A $A "$NODE_A" "${throughput[@]}"
run tptwo $A $B "$NODE_A" "${throughput[@]}"

python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
def step(name):
    with open(f"{out}/{name}.json") as f:
        r = json.load(f)
    return r["steps"][0]
rows = [("standalone (no Redis)", "solo"), ("cluster, 1 node (sub + pub on A)", "one"),
        ("cluster, 2 nodes (sub on A, pub on B)", "two")]
print("| setup | deliveries/s | latency p50 ms | p99 ms | lost | node A CPU µs/delivery | publishes/s (closed loop) | publish RTT p50 / p99 ms | lost |")
print("|---|---|---|---|---|---|---|---|---|")
for label, key in rows:
    lat, tp = step("lat" + key), step("tp" + key)
    print(f"| {label} | {lat['deliveries_per_s']:.0f} | {lat['latency_ms']['p50']:.2f} | "
          f"{lat['latency_ms']['p99']:.2f} | {lat['lost']} | {lat['cpu_us_per_delivery']:.1f} | {tp['achieved_rate']:.0f} | "
          f"{tp['publish_rtt_ms']['p50']:.2f} / {tp['publish_rtt_ms']['p99']:.2f} | {tp['lost']} |")
EOF
