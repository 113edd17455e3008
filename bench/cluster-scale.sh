#!/usr/bin/env bash
# Cluster scaling benchmark (docs/BENCH-cluster.md, "Scaling out"): per-channel
# routing, publish capacity on Redis Cluster against one redis-server and a
# standalone node, 1-3 nodes on 3 shards, cross-node latency, and what a
# primary's failover loses with and without WAIT. Prints markdown tables; the
# loadgen's JSON reports and the logs go to $OUT.
#
#   bench/cluster-scale.sh                       # every part, ~6 min
#   bench/cluster-scale.sh routing publish       # some parts: routing publish scale latency failover
#
# Needs redis-server and redis-cli (>= 7), python3, curl, taskset and release
# builds of the broker and the loadgen (bench/README.md). Everything listens on
# 127.0.0.1. Broker nodes and Redis are pinned to CPU 0, load generators to
# CPU 1 (on this 2-core machine more nodes share one core: see the doc for what
# that means and for the projection to separate machines). REDIS_CPU=1 puts
# the Redis servers on CPU 1 beside the load generator instead: Redis with a
# core the broker does not use, as in any real deployment.
set -euo pipefail
cd "$(dirname "$0")/.."

LG=${LG:-bench/target/release/sse-loadgen}
BIN=${BIN:-target/release/sse-broker}
OUT=${OUT:-/tmp/bench-cluster-scale}
SECS=${SECS:-10}                  # seconds per measured run
CHANNELS=${CHANNELS:-100}         # routing: channels in all …
SHARES=${SHARES:-"10 20 30 40"}   # … served by 4 nodes, this many each (one subscriber per channel)
ROUTE_RATE=${ROUTE_RATE:-1000}    # routing: events/s over all channels, open loop
TP_CHANNELS=${TP_CHANNELS:-100}   # publish/scale: channels per load generator, one subscriber each, closed loop
PUBLISHERS=${PUBLISHERS:-8}       # publish/scale: keep-alive publishers per load generator
PUB_SETUPS=${PUB_SETUPS:-"solo single cluster replicas wait"}  # publish: which setups, in this order
SUBS=${SUBS:-1000}                # latency: subscribers …
LAT_CHANNELS=${LAT_CHANNELS:-10}  # … over this many channels …
LAT_RATE=${LAT_RATE:-500}         # … at this many events/s
FO_RATE=${FO_RATE:-1000}          # failover: events/s over FO_CHANNELS channels, open loop …
FO_CHANNELS=${FO_CHANNELS:-30}
FO_SECS=${FO_SECS:-20}            # … for this long; the primary dies after FO_KILL_AFTER s
FO_KILL_AFTER=${FO_KILL_AFTER:-8}
REDIS_CPU=${REDIS_CPU:-0}        # the CPU the Redis servers are pinned to
REDIS_BASE=${REDIS_BASE:-17100}   # Redis ports: REDIS_BASE.. (cluster), REDIS_BASE+50 (one server)
NODE_BASE=${NODE_BASE:-18190}     # broker nodes: NODE_BASE+1..
PARTS=${*:-routing publish scale latency failover}

[ -x "$LG" ] || { echo "missing $LG (see bench/README.md)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "missing $BIN: cargo build --release" >&2; exit 1; }
mkdir -p "$OUT"
# One load generator on one IP: the per-IP stream limit and the publish rate
# limit would refuse most of the workload.
export SSE_BROKER__LIMITS__MAX_STREAMS_PER_IP=0 SSE_BROKER__LIMITS__PUBLISH_RATE=0
TOKEN=cs$RANDOM
PIDS=()
REDIS_PORTS=()
declare -A REDIS_PID
stop_all() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=(); REDIS_PORTS=(); REDIS_PID=()
}
trap stop_all EXIT

wait_port() {
  for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; return 1
}

# redis_cluster PRIMARIES REPLICAS: a Redis Cluster on REDIS_BASE.., in $SEEDS.
redis_cluster() {
  local n=$(( $1 * (1 + $2) )) dir="$OUT/redis-cluster"
  rm -rf "$dir"; mkdir -p "$dir"
  for i in $(seq 0 $((n - 1))); do
    local port=$((REDIS_BASE + i))
    taskset -c "$REDIS_CPU" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --cluster-enabled yes --cluster-config-file "$dir/nodes-$port.conf" --dir "$dir" \
      --cluster-node-timeout 1000 --cluster-replica-validity-factor 0 \
      --cluster-require-full-coverage no >"$dir/$port.log" 2>&1 & PIDS+=($!)
    REDIS_PORTS+=("$port"); REDIS_PID[$port]=$!
  done
  for port in "${REDIS_PORTS[@]}"; do wait_port "$port"; done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${REDIS_PORTS[@]}") \
    --cluster-replicas "$2" --cluster-yes >"$dir/create.log"
  # Ready: every node says so, and every replica has synced with its primary.
  for _ in $(seq 300); do
    local ok=0
    for port in "${REDIS_PORTS[@]}"; do
      redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' &&
        ! redis-cli -p "$port" info replication | grep -q 'master_link_status:down' && ok=$((ok + 1))
    done
    [ "$ok" = "$n" ] && break; sleep 0.1
  done
  SEEDS=$(printf 'redis://127.0.0.1:%s,' "${REDIS_PORTS[@]:0:$1}"); SEEDS=${SEEDS%,}
  MODE=cluster
}

# redis_single: one redis-server, in $SEEDS.
redis_single() {
  local port=$((REDIS_BASE + 50))
  taskset -c "$REDIS_CPU" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    >"$OUT/redis-single.log" 2>&1 & PIDS+=($!)
  REDIS_PORTS=("$port"); wait_port "$port"
  SEEDS="redis://127.0.0.1:$port"; MODE=standalone
}

# node N [VAR=value ...]: broker node N on NODE_BASE+N, on $SEEDS ("" = no Redis); pid in NODE_PID[N].
declare -A NODE_PID
node() {
  local n=$1 port=$((NODE_BASE + $1)); shift
  local redis=(); [ -n "$SEEDS" ] && redis=(--redis "$SEEDS")
  env RUST_LOG=warn SSE_BROKER__CLUSTER__REDIS_MODE="$MODE" "$@" taskset -c 0 "$BIN" \
    --bind "127.0.0.1:$port" --demo false "${redis[@]}" >"$OUT/node-$port.log" 2>&1 & PIDS+=($!)
  NODE_PID[$n]=$!
  wait_port "$port"
}

url() { echo "http://127.0.0.1:$((NODE_BASE + $1))"; }
bus_received() { curl -s "$(url "$1")/metrics" | awk '/^sse_broker_bus_events_received_total /{print $2}'; }
# Redis CPU seconds (user + sys) summed over the servers of this part.
redis_cpu() {
  for port in "${REDIS_PORTS[@]}"; do redis-cli -p "$port" info cpu 2>/dev/null || true; done |
    awk -F: '/^used_cpu_(sys|user):/{s += $2} END {printf "%.3f", s}'
}

# Reads of client requests (each one read syscall, whatever number of
# commands it brought: pipelining shows as fewer reads than commands) summed
# over the servers of this part.
redis_reads() {
  for port in "${REDIS_PORTS[@]}"; do redis-cli -p "$port" info stats 2>/dev/null || true; done |
    awk -F: '/^total_reads_processed:/{s += $2} END {printf "%d", s}'
}

# lg NAME SUB_NODE PUB_NODE PID_NODE ARGS...: one load generator run, report in $OUT/NAME.json.
lg() {
  local name=$1 sub=$2 pub=$3 pid=$4; shift 4
  taskset -c 1 "$LG" --sub-url "$(url "$sub")/stream/{channel}" --pub-url "$(url "$pub")/publish/{channel}" \
    --channel-prefix "$name" --broker-pid "${NODE_PID[$pid]}" --duration "$SECS" --max-secs 120 \
    --run-token "$TOKEN" --output "$OUT/$name.json" "$@" 2>"$OUT/$name.err" || true
}

# summary PART ARGS...: the part's markdown table (bench/cluster_report.py).
summary() { python3 bench/cluster_report.py "$OUT" "$@"; }

part_routing() {
  redis_cluster 3 0
  local shares=($SHARES) first=0 coord="$OUT/routing.coord"
  rm -rf "$coord"; mkdir -p "$coord"
  for i in 1 2 3 4; do node "$i"; done
  for i in 2 3 4; do
    first=$((first + shares[i - 2]))
    taskset -c 1 "$LG" --sub-url "$(url "$i")/stream/{channel}" --channel-prefix route --channels "$CHANNELS" \
      --subscribers "${shares[i - 1]}" --first-subscriber "$first" --id $((i - 1)) --coord-dir "$coord" \
      --run-token "$TOKEN" --max-secs 120 --output "$OUT/route-$i.json" 2>"$OUT/route-$i.err" & PIDS+=($!)
  done
  local before=(0 $(for i in 1 2 3 4; do bus_received "$i"; done))
  lg route 1 1 1 --channels "$CHANNELS" --subscribers "${shares[0]}" --rate "$ROUTE_RATE" --publishers 4 \
    --workers 3 --coord-dir "$coord"
  sleep 1
  local line=""
  for i in 1 2 3 4; do line+="$i:${shares[i - 1]}:$(( $(bus_received "$i") - before[i] )) "; done
  summary routing "$CHANNELS" "$line"
  stop_all
}

# publish_run NAME: the closed-loop workload on node 1 alone (subscribers and publishers there).
publish_run() {
  local cpu0 reads0; cpu0=$(redis_cpu); reads0=$(redis_reads)
  lg "$1" 1 1 1 --subscribers "$TP_CHANNELS" --channels "$TP_CHANNELS" --rate 0 --publishers "$PUBLISHERS"
  echo "$(redis_cpu) $cpu0" > "$OUT/$1.redis-cpu"
  echo "$(redis_reads) $reads0" > "$OUT/$1.redis-reads"
}

part_publish() {
  local runs=()
  for setup in $PUB_SETUPS; do
    case $setup in
      solo) SEEDS=""; MODE=standalone; node 1 ;;
      single) redis_single; node 1 ;;
      cluster) redis_cluster 3 0; node 1 ;;
      replicas) redis_cluster 3 1; node 1 ;;
      wait) redis_cluster 3 1; node 1 SSE_BROKER__CLUSTER__PUBLISH_WAIT_REPLICAS=1 ;;
      *) echo "unknown publish setup $setup" >&2; return 1 ;;
    esac
    publish_run "pub$setup"; stop_all; runs+=("pub$setup")
  done
  summary publish "${runs[@]}"
}

part_scale() {
  local runs=()
  for n in 1 2 3; do
    redis_cluster 3 0
    for i in $(seq 1 "$n"); do node "$i"; done
    local cpu0 jobs=(); cpu0=$(redis_cpu)
    for i in $(seq 1 "$n"); do
      lg "scale${n}n$i" "$i" "$i" "$i" --subscribers "$TP_CHANNELS" --channels "$TP_CHANNELS" --rate 0 \
        --publishers "$PUBLISHERS" & jobs+=($!)
    done
    wait "${jobs[@]}"
    echo "$(redis_cpu) $cpu0" > "$OUT/scale$n.redis-cpu"
    runs+=("$n")
    stop_all
  done
  summary scale "${runs[@]}"
}

part_latency() {
  local latency=(--subscribers "$SUBS" --channels "$LAT_CHANNELS" --rate "$LAT_RATE" --publishers 4)
  redis_single; node 1; node 2; lg latsingle 1 2 1 "${latency[@]}"; stop_all
  redis_cluster 3 0; node 1; node 2; lg latcluster 1 2 1 "${latency[@]}"; stop_all
  summary latency latsingle latcluster
}

# owner_of SLOT: the port of the primary that serves SLOT.
owner_of() {
  for port in "${REDIS_PORTS[@]}"; do
    redis-cli -p "$port" cluster nodes 2>/dev/null | awk -v s="$1" -v p="$port" '
      /myself/ && /master/ { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (r[2] == "") r[2] = r[1]
        if (s + 0 >= r[1] + 0 && s + 0 <= r[2] + 0) print p } }'
  done | head -1
}

# failover_run NAME WAIT [LOADGEN ARGS]: open-loop publishes through node 2 to subscribers
# on node 1; the primary of the first channel's slot gets SIGKILL midway (two replicas each,
# so the promoted one still has a replica to WAIT for).
failover_run() {
  redis_cluster 3 2
  node 1 SSE_BROKER__CLUSTER__PUBLISH_WAIT_REPLICAS="$2"
  node 2 SSE_BROKER__CLUSTER__PUBLISH_WAIT_REPLICAS="$2"
  local victim
  victim=$(owner_of "$(redis-cli -p "${REDIS_PORTS[0]}" cluster keyslot "{${1}0}")")
  ( sleep "$FO_KILL_AFTER"; kill -9 "${REDIS_PID[$victim]}" 2>/dev/null || true ) &
  SECS=$FO_SECS lg "$1" 1 2 1 --subscribers "$FO_CHANNELS" --channels "$FO_CHANNELS" --rate "$FO_RATE" \
    --publishers 4 --drain-secs 15 "${@:3}"
  echo "$victim" > "$OUT/$1.victim"
  stop_all
}

part_failover() {
  failover_run foasync 0
  failover_run fowait 1
  # The publisher a backend job is: an Idempotency-Key on every publish, a failed one sent
  # again under its key (the loadgen's --idempotency-keys).
  failover_run fokeyed 1 --idempotency-keys
  summary failover foasync fowait fokeyed
}

for part in $PARTS; do
  echo "== $part" >&2
  "part_$part"
done
