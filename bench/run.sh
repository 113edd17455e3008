#!/usr/bin/env bash
# Benchmark harness: runs the SSE workloads against our broker and/or Nchan and prints
# markdown table rows "| workload | metric | ours | nchan | ours/nchan |".
#
#   bench/run.sh --broker ours|nchan|both [--workloads 1,2,3,4,5] [--out DIR] [--quick]
#
# Needs: bench/target/release/sse-loadgen (see bench/README.md), python3, taskset;
# for Nchan: nginx + libnginx-mod-nchan; for ours: target/release/sse-broker.
# The broker is pinned to CPU $BROKER_CPU (default 0), the load generator to $LG_CPU (default 1).
# Every workload gets a freshly started broker so RSS figures are not polluted by earlier runs.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LG=${LG:-$HERE/target/release/sse-loadgen}
BROKER_CPU=${BROKER_CPU:-0}
LG_CPU=${LG_CPU:-1}
MAX_PER_PROC=${MAX_PER_PROC:-18000}     # subscribers per loadgen process (fd limit is ~20000)
NCHAN_CONF=${NCHAN_CONF:-/work/shared/peers/nchan.conf}
OURS_BIN=${OURS_BIN:-$ROOT/target/release/sse-broker}

BROKER=""
WORKLOADS="1,2,3,4,5"
OUT="$HERE/results/$(date +%Y%m%d-%H%M%S)"
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --broker) BROKER=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 64 ;;
  esac
done
case "$BROKER" in ours|nchan|both) ;; *) echo "usage: $0 --broker ours|nchan|both [--workloads 1,2,3,4,5] [--out DIR] [--quick]" >&2; exit 64 ;; esac
[ -x "$LG" ] || { echo "missing $LG: build it with (cd bench/loadgen && CARGO_TARGET_DIR=$HERE/target cargo build --release)" >&2; exit 1; }
mkdir -p "$OUT"

# Workload sizes (override through the environment).
IDLE_SIZES=${IDLE_SIZES:-"1000 10000 19000"}
FANOUT_SUBS=${FANOUT_SUBS:-10000}
FANOUT_RAMP_START=${FANOUT_RAMP_START:-20}     # events/s; x1000 deliveries/s at 10k subs / 10 channels
FANOUT_RAMP_FACTOR=${FANOUT_RAMP_FACTOR:-1.2}
FANOUT_RAMP_STEPS=${FANOUT_RAMP_STEPS:-15}
STEP_SECS=${STEP_SECS:-5}
MANYCH_RATE=${MANYCH_RATE:-2000}
MANYCH_SECS=${MANYCH_SECS:-10}
PUB_CHANNELS=${PUB_CHANNELS:-1000}
PUB_PUBLISHERS=${PUB_PUBLISHERS:-8}
PUB_SECS=${PUB_SECS:-10}
RESUME_SUBS=${RESUME_SUBS:-10000}
RESUME_CHANNELS=${RESUME_CHANNELS:-1000}
RESUME_BEHIND=${RESUME_BEHIND:-100}
if [ "$QUICK" = 1 ]; then
  IDLE_SIZES="1000"; FANOUT_SUBS=1000; FANOUT_RAMP_STEPS=4; STEP_SECS=2; MANYCH_SECS=3; PUB_SECS=3
  RESUME_SUBS=1000; RESUME_CHANNELS=100
fi

BPID=""; URLS=(); RUNDIR=""

wait_port() { # host port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "broker did not open $1:$2" >&2; return 1
}

start_broker() { # ours|nchan
  case "$1" in
    nchan)
      RUNDIR=$(mktemp -d /tmp/nchan-bench.XXXXXX)
      mkdir -p "$RUNDIR/logs" "$RUNDIR/tmp"
      sed "s#@RUNDIR@#$RUNDIR#g" "$NCHAN_CONF" \
        | sed 's#^worker_processes 1;#worker_processes 1;\nworker_rlimit_nofile 65536;#' \
        | sed 's#access_log [^;]*;#access_log off;#' > "$RUNDIR/nginx.conf"
      taskset -c "$BROKER_CPU" nginx -c "$RUNDIR/nginx.conf" -p "$RUNDIR/"
      wait_port 127.0.0.1 8090
      BPID=$(cat "$RUNDIR/nginx.pid")   # the master; the loadgen also counts its worker (descendants)
      URLS=(--sub-url 'http://127.0.0.1:8090/sub/{channel}' --pub-url 'http://127.0.0.1:8090/pub/{channel}')
      ;;
    ours)
      if [ ! -x "$OURS_BIN" ]; then
        # TODO(ours): build the broker first (cargo build --release in the repository root).
        echo "TODO: $OURS_BIN does not exist yet; only --broker nchan works until it does" >&2
        return 1
      fi
      ( cd "$ROOT" && SSE_BROKER__DEMO__ENABLED=false RUST_LOG=${RUST_LOG:-warn} \
          exec taskset -c "$BROKER_CPU" "$OURS_BIN" --bind 127.0.0.1:8080 ) >"$OUT/ours-broker.log" 2>&1 &
      BPID=$!
      wait_port 127.0.0.1 8080
      URLS=(--sub-url 'http://127.0.0.1:8080/stream/{channel}' --pub-url 'http://127.0.0.1:8080/publish/{channel}')
      ;;
  esac
}

stop_broker() { # ours|nchan
  case "$1" in
    nchan) [ -n "$RUNDIR" ] && [ -f "$RUNDIR/nginx.pid" ] && kill "$(cat "$RUNDIR/nginx.pid")" 2>/dev/null || true ;;
    ours) [ -n "$BPID" ] && kill "$BPID" 2>/dev/null || true; wait "$BPID" 2>/dev/null || true ;;
  esac
  sleep 1
  BPID=""
}

# lg NAME N_SUBSCRIBERS [loadgen flags...]  -> $OUT/NAME.json (merged when split over processes)
lg() {
  local name=$1 n=$2; shift 2
  local token="r${RANDOM}x${RANDOM}"
  local procs=$(( (n + MAX_PER_PROC - 1) / MAX_PER_PROC )); [ "$procs" -lt 1 ] && procs=1
  echo "== $name: $n subscribers, $procs process(es): $*" >&2
  if [ "$procs" -eq 1 ]; then
    taskset -c "$LG_CPU" "$LG" "${URLS[@]}" --subscribers "$n" --broker-pid "$BPID" --run-token "$token" \
      --output "$OUT/$name.json" "$@" 2>"$OUT/$name.log" || true
    grep -E '^\[0\] (connected|broker|step|resume|ramp|subscribers)' "$OUT/$name.log" | sed 's/^/   /' >&2 || true
    return 0
  fi
  local dir="$OUT/$name.coord"; rm -rf "$dir"; mkdir -p "$dir"
  local share=$(( (n + procs - 1) / procs )) pids=() p first cnt
  for ((p = 1; p < procs; p++)); do
    first=$((p * share)); cnt=$share; [ $((first + cnt)) -gt "$n" ] && cnt=$((n - first))
    taskset -c "$LG_CPU" "$LG" "${URLS[@]}" --id "$p" --coord-dir "$dir" --subscribers "$cnt" --first-subscriber "$first" \
      --source-addrs "127.0.0.$((p + 1))" --run-token "$token" --output "$dir/$p.json" "$@" 2>"$dir/$p.log" &
    pids+=($!)
  done
  taskset -c "$LG_CPU" "$LG" "${URLS[@]}" --id 0 --workers $((procs - 1)) --coord-dir "$dir" --subscribers "$share" \
    --source-addrs 127.0.0.1 --broker-pid "$BPID" --run-token "$token" --output "$dir/0.json" "$@" 2>"$dir/0.log" || true
  wait "${pids[@]}" || true
  "$LG" --merge "$dir"/[0-9]*.json --output "$OUT/$name.json" 2>"$OUT/$name.log" || true
  grep -E '^\[0\] (merged|step|subscribers)' "$OUT/$name.log" | sed 's/^/   /' >&2 || true
}

# jget FILE PYTHON_EXPR_ON_r  (prints "-" when the file or field is missing)
jget() {
  python3 - "$1" "$2" <<'EOF' 2>/dev/null || echo "-"
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    v = eval(sys.argv[2])
except Exception:
    v = None
if v is None: print("-")
elif isinstance(v, float): print(f"{v:.3f}" if abs(v) < 10 else (f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"))
else: print(v)
EOF
}

has() { case ",$WORKLOADS," in *",$1,"*) return 0 ;; esac; return 1; }
brokers() { case "$BROKER" in both) echo "nchan ours" ;; *) echo "$BROKER" ;; esac; }

run_workloads() { # broker
  local b=$1 n
  if has 1; then
    for n in $IDLE_SIZES; do
      start_broker "$b" || return 0
      lg "$b-idle-$n" "$n" --channels 100 --duration 0 --settle-secs 2 --connect-concurrency 512 --max-secs 120
      stop_broker "$b"
    done
  fi
  if has 2; then
    start_broker "$b" || return 0
    lg "$b-fanout" "$FANOUT_SUBS" --channels 10 --ramp-start "$FANOUT_RAMP_START" --ramp-factor "$FANOUT_RAMP_FACTOR" \
      --ramp-steps "$FANOUT_RAMP_STEPS" --duration "$STEP_SECS" --drain-secs 3 --max-secs 600
    stop_broker "$b"
  fi
  if has 3; then
    start_broker "$b" || return 0
    lg "$b-manych" 10000 --channels 10000 --rate "$MANYCH_RATE" --duration "$MANYCH_SECS" --publishers 8 --max-secs 180
    stop_broker "$b"
  fi
  if has 4; then
    start_broker "$b" || return 0
    lg "$b-publish" "$PUB_CHANNELS" --channels "$PUB_CHANNELS" --rate 0 --publishers "$PUB_PUBLISHERS" --duration "$PUB_SECS" --max-secs 180
    stop_broker "$b"
  fi
  if has 5; then
    start_broker "$b" || return 0
    lg "$b-resume" "$RESUME_SUBS" --channels "$RESUME_CHANNELS" --resume-behind "$RESUME_BEHIND" --publishers 8 \
      --drain-secs 10 --max-secs 300
    stop_broker "$b"
  fi
}

trap 'for b in $(brokers); do stop_broker "$b"; done' EXIT
for b in $(brokers); do run_workloads "$b"; done

# ---------------------------------------------------------------- table
row() { # workload metric file-stem expr
  local o n ratio
  o=$(jget "$OUT/ours-$3.json" "$4"); n=$(jget "$OUT/nchan-$3.json" "$4")
  ratio=$(python3 -c "import sys
try: print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')
except Exception: print('-')" "$o" "$n")
  echo "| $1 | $2 | $o | $n | $ratio |"
}
S0="r['steps'][0]"
BEST="r['steps'][r['best_passing_step']]"
{
echo
echo "| workload | metric | ours | nchan | ours/nchan |"
echo "|---|---|---:|---:|---:|"
if has 1; then for n in $IDLE_SIZES; do
  row "idle $n subs / 100 ch" "subscribers connected" "idle-$n" "r['connect']['ok']"
  row "idle $n subs / 100 ch" "broker RSS KiB / connection" "idle-$n" "r['broker']['rss_per_conn_kib']"
  row "idle $n subs / 100 ch" "connect rate (subs/s)" "idle-$n" "r['connect']['rate_per_s']"
done; fi
if has 2; then
  row "fan-out $FANOUT_SUBS subs / 10 ch (ramp)" "highest zero-loss deliveries/s, p99 < 100 ms" fanout "r['best_passing_deliveries_per_s']"
  row "fan-out $FANOUT_SUBS subs / 10 ch (ramp)" "publish rate of that step (events/s)" fanout "r['best_passing_rate']"
  row "fan-out $FANOUT_SUBS subs / 10 ch (ramp)" "p99 latency ms at that step" fanout "$BEST['latency_ms']['p99']"
  row "fan-out $FANOUT_SUBS subs / 10 ch (ramp)" "broker CPU µs / delivery at that step" fanout "$BEST['cpu_us_per_delivery']"
fi
if has 3; then
  row "10000 subs / 10000 ch @ $MANYCH_RATE ev/s" "lost deliveries" manych "$S0['lost']"
  row "10000 subs / 10000 ch @ $MANYCH_RATE ev/s" "achieved publish rate" manych "$S0['achieved_rate']"
  row "10000 subs / 10000 ch @ $MANYCH_RATE ev/s" "latency p50 ms" manych "$S0['latency_ms']['p50']"
  row "10000 subs / 10000 ch @ $MANYCH_RATE ev/s" "latency p99 ms" manych "$S0['latency_ms']['p99']"
  row "10000 subs / 10000 ch @ $MANYCH_RATE ev/s" "latency p99.9 ms" manych "$S0['latency_ms']['p999']"
fi
if has 4; then
  row "publish, $PUB_PUBLISHERS keep-alive conns, $PUB_CHANNELS ch x 1 sub" "publishes/s" publish "$S0['achieved_rate']"
  row "publish, $PUB_PUBLISHERS keep-alive conns, $PUB_CHANNELS ch x 1 sub" "publish RTT p99 ms" publish "$S0['publish_rtt_ms']['p99']"
  row "publish, $PUB_PUBLISHERS keep-alive conns, $PUB_CHANNELS ch x 1 sub" "lost deliveries" publish "$S0['lost']"
  row "publish, $PUB_PUBLISHERS keep-alive conns, $PUB_CHANNELS ch x 1 sub" "broker CPU µs / publish" publish "$S0['broker_cpu_secs']*1e6/max($S0['published'],1)"
fi
if has 5; then
  row "resume storm $RESUME_SUBS subs, $RESUME_BEHIND behind" "seconds until all caught up" resume "r['resume']['all_caught_up_secs']"
  row "resume storm $RESUME_SUBS subs, $RESUME_BEHIND behind" "lost" resume "r['resume']['lost']"
  row "resume storm $RESUME_SUBS subs, $RESUME_BEHIND behind" "reconnect failures" resume "r['resume']['reconnect_failed']"
fi
} | tee "$OUT/table.md"
echo "results: $OUT" >&2
