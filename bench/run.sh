#!/usr/bin/env bash
# Benchmark harness: runs the SSE workloads against our broker and Nchan, alternating
# (workload outer loop, broker inner loop, the broker that goes first alternates), writes
# every JSON report under --out and, with --report FILE, BENCHMARKS.md plus the scaling plot.
#
#   bench/run.sh --broker ours|nchan|both|floor [--workloads 1,2,3,4,5,6,7] [--placement P]
#                [--out DIR] [--report FILE] [--no-plot] [--quick] [--dry-run]
#
#   --placement pinned    broker on CPU $BROKER_CPU, load generator(s) on CPU $LG_CPU
#               unpinned  no taskset for either
#               both      both, one after the other for every workload
#               (default: both for workload 2, the fan-out scaling sweep; pinned for the rest)
#   --report FILE         write the report there (the plot goes to DIR-OF-FILE/bench/bench-scaling.png);
#                         without it the report is written to OUT/BENCHMARKS.md
#   --quick               tiny sizes and short steps, to check the scripts end to end (~3 min)
#   --dry-run             print the plan and the expected duration, run nothing
#
# Needs: bench/target/release/sse-loadgen (see bench/README.md), python3, taskset, timeout;
# for Nchan: nginx + libnginx-mod-nchan; for ours: $OURS_BIN (default target/release/sse-broker).
# --broker floor runs bench/floor (sse-floor, the kernel floor: nothing but the sends) alone and
# prints its figures instead of writing a report.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LG=${LG:-$HERE/target/release/sse-loadgen}
BROKER_CPU=${BROKER_CPU:-0}
LG_CPU=${LG_CPU:-1}
MAX_PER_PROC=${MAX_PER_PROC:-18000}     # subscribers per loadgen process (fd limit is ~20000)
NCHAN_CONF=${NCHAN_CONF:-$HERE/nchan.conf}   # Nchan, as the reference setup runs it
OURS_BIN=${OURS_BIN:-$ROOT/target/release/sse-broker}
OURS_PORT=${OURS_PORT:-8080}
FLOOR_BIN=${FLOOR_BIN:-$HERE/target/release/sse-floor}
NCHAN_PORT=${NCHAN_PORT:-8090}

BROKER=""
WORKLOADS="1,2,3,4,5,6"
OUT="$HERE/results/$(date +%Y%m%d-%H%M%S)"
QUICK=0; DRY=0; PLACEMENT=""; REPORT=""; PLOT_FLAG=""
ORIG_ARGS=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --broker) BROKER=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --placement) PLACEMENT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --report) REPORT=$2; shift 2 ;;
    --no-plot) PLOT_FLAG=--no-plot; shift ;;
    --quick) QUICK=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 64 ;;
  esac
done
case "$BROKER" in ours|nchan|both|floor) ;; *) sed -n '6,7p' "$0" >&2; exit 64 ;; esac
case "$PLACEMENT" in ""|pinned|unpinned|both) ;; *) echo "--placement must be pinned, unpinned or both" >&2; exit 64 ;; esac
if [ "$DRY" = 0 ] && [ -z "${LG_NO_BUILD:-}" ] && [ "$LG" = "$HERE/target/release/sse-loadgen" ] && command -v cargo >/dev/null; then
  # incremental: a no-op when the load generator is up to date
  (cd "$HERE/loadgen" && CARGO_TARGET_DIR="$HERE/target" cargo build --release --quiet) \
    || echo "warning: building the load generator failed; using $LG as it is" >&2
fi
if [ "$BROKER" = floor ] && [ "$DRY" = 0 ] && command -v cargo >/dev/null; then
  (cd "$HERE/floor" && CARGO_TARGET_DIR="$HERE/target" cargo build --release --quiet) \
    || echo "warning: building sse-floor failed; using $FLOOR_BIN as it is" >&2
fi
[ -x "$LG" ] || { echo "missing $LG: build it with (cd bench/loadgen && CARGO_TARGET_DIR=$HERE/target cargo build --release)" >&2; exit 1; }
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

# Workload sizes (override through the environment).
IDLE_SIZES=${IDLE_SIZES:-"1000 10000 19000"}
# Workload 2 = fan-out scaling sweep over 10 channels; its 10,000 point is the issue's fan-out figure.
SWEEP_SIZES=${SWEEP_SIZES:-"1000 5000 10000 19000"}
SWEEP_CHANNELS=${SWEEP_CHANNELS:-10}
SWEEP_START_DPS=${SWEEP_START_DPS:-40000}   # first ramp step in deliveries/s (same for both brokers)
SWEEP_FACTOR=${SWEEP_FACTOR:-1.15}
SWEEP_STEPS=${SWEEP_STEPS:-16}              # 40k x 1.15^15 = 325k deliveries/s at most
STEP_SECS=${STEP_SECS:-3}
STEP_DRAIN=${STEP_DRAIN:-2}
MANYCH_SUBS=${MANYCH_SUBS:-10000}
MANYCH_RATE=${MANYCH_RATE:-2000}            # first step; then ramped to find the highest zero-loss rate
MANYCH_FACTOR=${MANYCH_FACTOR:-1.3}
MANYCH_STEPS=${MANYCH_STEPS:-11}            # 2000 x 1.3^10 = 27.6k events/s at most
MANYCH_SECS=${MANYCH_SECS:-5}
PUB_CHANNELS=${PUB_CHANNELS:-1000}
PUB_PUBLISHERS=${PUB_PUBLISHERS:-8}
PUB_SECS=${PUB_SECS:-10}
RESUME_SUBS=${RESUME_SUBS:-10000}
RESUME_CHANNELS=${RESUME_CHANNELS:-1000}
RESUME_BEHIND=${RESUME_BEHIND:-100}
# Workload 6 = linear cost: the same per-subscriber event rate at every size
# (LINEAR_RATE events/s over SWEEP_CHANNELS channels), so CPU per delivery is
# compared like for like; at each ramp's best step it is not (a subscriber
# that gets more events per second gets them in fewer writes).
LINEAR_SIZES=${LINEAR_SIZES:-"1000 5000 10000 19000"}
LINEAR_RATE=${LINEAR_RATE:-20}
LINEAR_SECS=${LINEAR_SECS:-15}
# Workload 7 = Mercure fan-out (ours only: Nchan has no Mercure hub): MERCURE_SUBS subscribers of
# /.well-known/mercure?match=<channel> over SWEEP_CHANNELS topics, form publishes with a
# Mercure 1.0 access token of the development issuer, ramped like workload 2.
MERCURE_SUBS=${MERCURE_SUBS:-10000}
# An RFC 9068 access token (typ at+jwt, iss https://localhost, aud MERCURE_AUDIENCE, publish and
# subscribe on every topic) signed with the development key of config/default.toml: the reference
# hub's conformance-suite token. The broker is started with that resource identifier.
MERCURE_AUDIENCE=https://localhost/.well-known/mercure
MERCURE_JWT=${MERCURE_JWT:-eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJhdWQiOiJodHRwczovL2xvY2FsaG9zdC8ud2VsbC1rbm93bi9tZXJjdXJlIiwiaXNzIjoiaHR0cHM6Ly9sb2NhbGhvc3QiLCJhdXRob3JpemF0aW9uX2RldGFpbHMiOlt7InR5cGUiOiJodHRwczovL21lcmN1cmUucm9ja3MvYXV0aG9yaXphdGlvbi1kZXRhaWwiLCJhY3Rpb25zIjpbInB1Ymxpc2giXSwidG9waWNzIjpbeyJtYXRjaCI6IioifV19LHsidHlwZSI6Imh0dHBzOi8vbWVyY3VyZS5yb2Nrcy9hdXRob3JpemF0aW9uLWRldGFpbCIsImFjdGlvbnMiOlsic3Vic2NyaWJlIl0sInRvcGljcyI6W3sibWF0Y2giOiIqIn1dfV0sImV4cCI6NDEwMjQ0NDgwMH0.z_S8IP5WZsCK8h3pcq0PB5zvJE0OdTrGA70khAYJQy4}
if [ "$QUICK" = 1 ]; then
  IDLE_SIZES="1000"; SWEEP_SIZES="300 1500"; SWEEP_STEPS=3; SWEEP_START_DPS=5000; STEP_SECS=1
  MANYCH_SUBS=1000; MANYCH_RATE=500; MANYCH_STEPS=2; MANYCH_SECS=1; PUB_SECS=2
  RESUME_SUBS=1000; RESUME_CHANNELS=100; LINEAR_SIZES="300 1500"; LINEAR_SECS=2; MERCURE_SUBS=300
  MAX_PER_PROC=1000   # so the 1500 step exercises the multi-process path
fi

has() { case ",$WORKLOADS," in *",$1,"*) return 0 ;; esac; return 1; }
brokers_in_order() { # index -> broker order for that unit (alternating)
  case "$BROKER" in both) if [ $(($1 % 2)) -eq 0 ]; then echo "ours nchan"; else echo "nchan ours"; fi ;; *) echo "$BROKER" ;; esac
}
placements_for() { # workload number
  if [ -n "$PLACEMENT" ]; then
    case "$PLACEMENT" in both) echo "pinned unpinned" ;; *) echo "$PLACEMENT" ;; esac
  elif [ "$1" = 2 ]; then echo "pinned unpinned"
  else echo "pinned"; fi
}
nbrokers() { case "$BROKER" in both) echo 2 ;; *) echo 1 ;; esac; }

# ---------------------------------------------------------------- time estimate (worst case)
OVERHEAD=7   # start broker + connect + settle + stop, seconds per loadgen run (19k subscribers: ~8)
estimate() {
  local t=0 nb np n
  nb=$(nbrokers)
  if has 1; then np=$(placements_for 1 | wc -w); for n in $IDLE_SIZES; do t=$((t + nb * np * (OVERHEAD + 1))); done; fi
  if has 2; then np=$(placements_for 2 | wc -w); for n in $SWEEP_SIZES; do
    t=$(python3 -c "print($t + $nb*$np*($OVERHEAD + $SWEEP_STEPS*($STEP_SECS + 0.3) + $STEP_DRAIN))"); done; fi
  if has 3; then np=$(placements_for 3 | wc -w); t=$(python3 -c "print($t + $nb*$np*($OVERHEAD + $MANYCH_STEPS*($MANYCH_SECS + 0.3) + 3))"); fi
  if has 4; then np=$(placements_for 4 | wc -w); t=$(python3 -c "print($t + $nb*$np*($OVERHEAD + $PUB_SECS + 3))"); fi
  if has 5; then np=$(placements_for 5 | wc -w); t=$(python3 -c "print($t + $nb*$np*($OVERHEAD + 25))"); fi
  if has 6; then np=$(placements_for 6 | wc -w); for n in $LINEAR_SIZES; do t=$(python3 -c "print($t + $nb*$np*($OVERHEAD + $LINEAR_SECS + 3))"); done; fi
  if has 7; then np=$(placements_for 7 | wc -w); t=$(python3 -c "print($t + $np*($OVERHEAD + $SWEEP_STEPS*($STEP_SECS + 0.3) + $STEP_DRAIN))"); fi
  python3 -c "print(int($t))"
}
EST=$(estimate)
{
  echo "plan: brokers=$BROKER workloads=$WORKLOADS placement=${PLACEMENT:-default (2: pinned+unpinned, others: pinned)} out=$OUT"
  has 1 && echo "  1 idle: $IDLE_SIZES subscribers / 100 channels [$(placements_for 1)]"
  has 2 && echo "  2 fan-out sweep: $SWEEP_SIZES subscribers / $SWEEP_CHANNELS channels, ramp from $SWEEP_START_DPS deliveries/s x$SWEEP_FACTOR, <= $SWEEP_STEPS steps of ${STEP_SECS}s [$(placements_for 2)]"
  has 3 && echo "  3 many channels: $MANYCH_SUBS subscribers / $MANYCH_SUBS channels, ramp from $MANYCH_RATE events/s x$MANYCH_FACTOR, <= $MANYCH_STEPS steps of ${MANYCH_SECS}s [$(placements_for 3)]"
  has 4 && echo "  4 publish: $PUB_CHANNELS channels x 1 subscriber, $PUB_PUBLISHERS publishers, closed loop ${PUB_SECS}s [$(placements_for 4)]"
  has 5 && echo "  5 resume storm: $RESUME_SUBS subscribers / $RESUME_CHANNELS channels, $RESUME_BEHIND behind [$(placements_for 5)]"
  has 6 && echo "  6 linear cost: $LINEAR_SIZES subscribers / $SWEEP_CHANNELS channels, $LINEAR_RATE events/s for ${LINEAR_SECS}s [$(placements_for 6)]"
  echo "expected duration: at most ~$(( (EST + 59) / 60 )) min (worst case: every ramp runs all its steps); typically less"
} >&2
[ "$DRY" = 1 ] && exit 0
mkdir -p "$OUT"

# ---------------------------------------------------------------- run metadata
RUNS="$OUT/runs.jsonl"; : > "$RUNS"
meta() {
  python3 - "$OUT/meta.json" "$@" <<'EOF'
import json, sys, os
path = sys.argv[1]
m = json.load(open(path)) if os.path.exists(path) else {}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    m[k] = v
json.dump(m, open(path, "w"), indent=1)
EOF
}
ours_repo=$(cd "$(dirname "$OURS_BIN")" 2>/dev/null && git rev-parse --show-toplevel 2>/dev/null || echo "")
env_overrides=$(env | grep -E '^(IDLE_SIZES|SWEEP_[A-Z_]+|STEP_SECS|STEP_DRAIN|MANYCH_[A-Z]+|PUB_[A-Z]+|RESUME_[A-Z]+|LINEAR_[A-Z]+|MAX_PER_PROC|BROKER_CPU|LG_CPU|OURS_BIN|OURS_PORT|NCHAN_PORT|NCHAN_CONF|LG)=' | sort | tr '\n' ' ' || true)
meta "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "command=${env_overrides}bench/run.sh ${ORIG_ARGS[*]}" \
  "quick=$QUICK" "placement=${PLACEMENT:-default}" "workloads=$WORKLOADS" "brokers=$BROKER" \
  "nproc=$(nproc)" "cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  "kernel=$(uname -srm)" "mem_total=$(grep MemTotal /proc/meminfo | awk '{printf "%.1f GiB", $2/1048576}')" \
  "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)" \
  "ours_bin=$OURS_BIN" \
  "ours_version=$("$OURS_BIN" --version 2>/dev/null || echo '?')" \
  "ours_commit=$( [ -n "$ours_repo" ] && git -C "$ours_repo" log -1 --format='%h %s' 2>/dev/null || echo '?')" \
  "ours_dirty=$( [ -n "$ours_repo" ] && git -C "$ours_repo" status --porcelain --untracked-files=no 2>/dev/null | wc -l || echo '?')" \
  "ours_bin_mtime=$(date -u -r "$OURS_BIN" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo '?')" \
  "ours_bin_stale=$( [ -n "$ours_repo" ] && [ -e "$OURS_BIN" ] && find "$ours_repo/src" "$ours_repo/Cargo.toml" "$ours_repo/Cargo.lock" -newer "$OURS_BIN" -print -quit 2>/dev/null | head -1)" \
  "nginx_version=$(nginx -v 2>&1 || echo '?')" \
  "nchan_version=$(dpkg-query -W -f='${Package} ${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')" \
  "nchan_conf=$NCHAN_CONF" \
  "loadgen_commit=$(git -C "$HERE" log -1 --format='%h' 2>/dev/null || echo '?')" \
  "broker_cpu=$BROKER_CPU" "lg_cpu=$LG_CPU" \
  "sweep_channels=$SWEEP_CHANNELS" "sweep_start_dps=$SWEEP_START_DPS" "sweep_factor=$SWEEP_FACTOR" \
  "step_secs=$STEP_SECS" "manych_rate=$MANYCH_RATE" "pub_publishers=$PUB_PUBLISHERS" "pub_channels=$PUB_CHANNELS" \
  "resume_behind=$RESUME_BEHIND" "linear_rate=$LINEAR_RATE" "estimate_secs=$EST"

# ---------------------------------------------------------------- brokers
BPID=""; URLS=(); RUNDIR=""

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port pid
  for _ in $(seq 1 100); do
    kill -0 "$2" 2>/dev/null || { echo "broker (pid $2) exited while starting" >&2; return 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "broker did not open 127.0.0.1:$1" >&2; return 1
}

start_broker() { # ours|nchan placement
  local b=$1 pl=$2 pin=()
  [ "$pl" = pinned ] && pin=(taskset -c "$BROKER_CPU")
  case "$b" in
    nchan)
      port_free "$NCHAN_PORT" || { echo "port $NCHAN_PORT is busy (another broker running?)" >&2; return 1; }
      RUNDIR=$(mktemp -d /tmp/nchan-bench.XXXXXX)
      mkdir -p "$RUNDIR/logs" "$RUNDIR/tmp"
      sed "s#@RUNDIR@#$RUNDIR#g" "$NCHAN_CONF" \
        | sed 's#^worker_processes 1;#worker_processes 1;\nworker_rlimit_nofile 65536;#' \
        | sed 's#access_log [^;]*;#access_log off;#' \
        | sed "s#listen 127.0.0.1:8090;#listen 127.0.0.1:$NCHAN_PORT;#" > "$RUNDIR/nginx.conf"
      "${pin[@]}" nginx -c "$RUNDIR/nginx.conf" -p "$RUNDIR/"
      for _ in $(seq 1 50); do [ -s "$RUNDIR/nginx.pid" ] && break; sleep 0.1; done
      BPID=$(cat "$RUNDIR/nginx.pid")   # the master; the loadgen also counts its worker (descendants)
      wait_port "$NCHAN_PORT" "$BPID" || return 1
      URLS=(--sub-url "http://127.0.0.1:$NCHAN_PORT/sub/{channel}" --pub-url "http://127.0.0.1:$NCHAN_PORT/pub/{channel}")
      ;;
    floor)
      port_free "$OURS_PORT" || { echo "port $OURS_PORT is busy (another broker running?)" >&2; return 1; }
      "${pin[@]}" "$FLOOR_BIN" "127.0.0.1:$OURS_PORT" >>"$OUT/floor.log" 2>&1 &
      BPID=$!
      wait_port "$OURS_PORT" "$BPID" || return 1
      URLS=(--sub-url "http://127.0.0.1:$OURS_PORT/stream/{channel}" --pub-url "http://127.0.0.1:$OURS_PORT/publish/{channel}")
      ;;
    ours)
      [ -x "$OURS_BIN" ] || { echo "$OURS_BIN does not exist: build it (cargo build --release) or set OURS_BIN" >&2; return 1; }
      port_free "$OURS_PORT" || { echo "port $OURS_PORT is busy (another broker running?)" >&2; return 1; }
      # The load generator speaks from one IP (or a few), so the per-IP abuse
      # limits (streams per IP, publish rate) would refuse it: they are lifted
      # here, as they would be for traffic spread over many real clients.
      ( cd "$ROOT" && SSE_BROKER__DEMO__ENABLED=false SSE_BROKER__LIMITS__MAX_STREAMS_PER_IP=0 \
          SSE_BROKER__MERCURE__RESOURCE_IDENTIFIER="$MERCURE_AUDIENCE" \
          SSE_BROKER__LIMITS__PUBLISH_RATE=0 RUST_LOG=${RUST_LOG:-warn} \
          exec "${pin[@]}" "$OURS_BIN" --bind "127.0.0.1:$OURS_PORT" ) >>"$OUT/ours-broker.log" 2>&1 &
      BPID=$!
      wait_port "$OURS_PORT" "$BPID" || return 1
      URLS=(--sub-url "http://127.0.0.1:$OURS_PORT/stream/{channel}" --pub-url "http://127.0.0.1:$OURS_PORT/publish/{channel}")
      if [ "$CUR_WL" = mercure ]; then
        URLS=(--sub-url "http://127.0.0.1:$OURS_PORT/.well-known/mercure?match={channel}"
              --pub-url "http://127.0.0.1:$OURS_PORT/.well-known/mercure"
              --pub-form 'topic={channel}&data={payload}' --content-type application/x-www-form-urlencoded
              --pub-header "Authorization: Bearer $MERCURE_JWT")
      fi
      ;;
  esac
}

stop_broker() { # ours|nchan
  case "$1" in
    nchan) if [ -n "$RUNDIR" ] && [ -f "$RUNDIR/nginx.pid" ]; then
             local p; p=$(cat "$RUNDIR/nginx.pid"); kill "$p" 2>/dev/null || true
             for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
           fi
           [ -n "$RUNDIR" ] && rm -rf "$RUNDIR"; RUNDIR="" ;;
    ours|floor) if [ -n "$BPID" ]; then kill "$BPID" 2>/dev/null || true; wait "$BPID" 2>/dev/null || true; fi ;;
  esac
  sleep 1
  BPID=""
}

# lg NAME N_SUBSCRIBERS PLACEMENT MAX_SECS [loadgen flags...]  -> $OUT/NAME.json (merged when split)
lg() {
  local name=$1 n=$2 pl=$3 maxs=$4; shift 4
  local token="r${RANDOM}x${RANDOM}" pin=() to=$((maxs + 30))
  [ "$pl" = pinned ] && pin=(taskset -c "$LG_CPU")
  local procs=$(( (n + MAX_PER_PROC - 1) / MAX_PER_PROC )); [ "$procs" -lt 1 ] && procs=1
  echo "== $(date +%H:%M:%S) $name: $n subscribers, $procs process(es), $pl: $*" >&2
  local cmds=()
  if [ "$procs" -eq 1 ]; then
    # Spread even a single process over several source addresses: earlier runs
    # leave thousands of 127.0.0.1 ports in TIME_WAIT, and a run that opens
    # 10,000 subscriptions plus publishers would otherwise run out of ports.
    local addrs="127.0.0.11,127.0.0.12,127.0.0.13,127.0.0.14"
    cmds+=("${pin[*]} sse-loadgen ${URLS[*]} --subscribers $n --source-addrs $addrs --broker-pid PID --run-token T --max-secs $maxs $*")
    timeout "$to" "${pin[@]}" "$LG" "${URLS[@]}" --subscribers "$n" --source-addrs "$addrs" --broker-pid "$BPID" --run-token "$token" \
      --max-secs "$maxs" --output "$OUT/$name.json" "$@" 2>"$OUT/$name.log" || true
    grep -E '^\[0\] (connected|broker|step|resume|ramp|subscribers)' "$OUT/$name.log" | sed 's/^/   /' >&2 || true
  else
    local dir="$OUT/$name.coord"; rm -rf "$dir"; mkdir -p "$dir"
    local share=$(( (n + procs - 1) / procs )) pids=() p first cnt
    for ((p = 1; p < procs; p++)); do
      first=$((p * share)); cnt=$share; [ $((first + cnt)) -gt "$n" ] && cnt=$((n - first))
      cmds+=("${pin[*]} sse-loadgen ${URLS[*]} --id $p --coord-dir D --subscribers $cnt --first-subscriber $first --source-addrs 127.0.0.$((p + 1)) --run-token T --max-secs $maxs $*")
      timeout "$to" "${pin[@]}" "$LG" "${URLS[@]}" --id "$p" --coord-dir "$dir" --subscribers "$cnt" --first-subscriber "$first" \
        --source-addrs "127.0.0.$((p + 1))" --run-token "$token" --max-secs "$maxs" --output "$dir/$p.json" "$@" 2>"$dir/$p.log" &
      pids+=($!)
    done
    cmds+=("${pin[*]} sse-loadgen ${URLS[*]} --id 0 --workers $((procs - 1)) --coord-dir D --subscribers $share --source-addrs 127.0.0.1 --broker-pid PID --run-token T --max-secs $maxs $*")
    timeout "$to" "${pin[@]}" "$LG" "${URLS[@]}" --id 0 --workers $((procs - 1)) --coord-dir "$dir" --subscribers "$share" \
      --source-addrs 127.0.0.1 --broker-pid "$BPID" --run-token "$token" --max-secs "$maxs" --output "$dir/0.json" "$@" 2>"$dir/0.log" || true
    wait "${pids[@]}" || true
    "$LG" --merge "$dir"/[0-9]*.json --output "$OUT/$name.json" 2>"$OUT/$name.log" || true
    grep -E '^\[0\] (merged|step|subscribers)' "$OUT/$name.log" | sed 's/^/   /' >&2 || true
  fi
  python3 - "$RUNS" "$name" "$CUR_BROKER" "$pl" "$CUR_WL" "$n" "$procs" "$(date -u +%H:%M:%S)" "${cmds[@]}" <<'EOF'
import json, sys
f, name, broker, pl, wl, n, procs, t = sys.argv[1:9]
json.dump({"name": name, "file": name + ".json", "broker": broker, "placement": pl, "workload": wl,
           "subscribers": int(n), "processes": int(procs), "finished": t, "commands": sys.argv[9:]}, open(f, "a"))
open(f, "a").write("\n")
EOF
}

CUR_BROKER=""; CUR_WL=""; UNIT=0
# unit WORKLOAD_ID PLACEMENT MAX_SECS N NAME_SUFFIX [flags...]: one workload run against every broker, alternating
unit() {
  local wl=$1 pl=$2 maxs=$3 n=$4 suffix=$5 b; shift 5
  for b in $(brokers_in_order "$UNIT"); do
    CUR_BROKER=$b; CUR_WL=$wl
    if start_broker "$b" "$pl"; then
      lg "$b-$pl-$suffix" "$n" "$pl" "$maxs" "$@"
    else
      echo "!! $b did not start; skipping $b-$pl-$suffix" >&2
      python3 -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "file": sys.argv[1] + ".json", "broker": sys.argv[2], "placement": sys.argv[3], "workload": sys.argv[4], "subscribers": int(sys.argv[5]), "skipped": "the broker did not start (see the run output)", "commands": []}))' \
        "$b-$pl-$suffix" "$b" "$pl" "$wl" "$n" >> "$RUNS"
    fi
    stop_broker "$b"
  done
  UNIT=$((UNIT + 1))
}

trap 'stop_broker ours; stop_broker nchan' EXIT
T_START=$(date +%s)

if has 1; then for pl in $(placements_for 1); do for n in $IDLE_SIZES; do
  unit idle "$pl" 60 "$n" "idle-$n" --channels 100 --duration 0 --settle-secs 2 --connect-concurrency 512
done; done; fi
if has 2; then for pl in $(placements_for 2); do for n in $SWEEP_SIZES; do
  start=$(python3 -c "print(round($SWEEP_START_DPS / ($n / $SWEEP_CHANNELS), 3))")
  unit fanout "$pl" 300 "$n" "fanout-$n" --channels "$SWEEP_CHANNELS" --ramp-start "$start" --ramp-factor "$SWEEP_FACTOR" \
    --ramp-steps "$SWEEP_STEPS" --duration "$STEP_SECS" --drain-secs "$STEP_DRAIN" --settle-secs 2 --connect-concurrency 512
done; done; fi
if has 3; then for pl in $(placements_for 3); do
  unit manych "$pl" 300 "$MANYCH_SUBS" manych --channels "$MANYCH_SUBS" --ramp-start "$MANYCH_RATE" --ramp-factor "$MANYCH_FACTOR" \
    --ramp-steps "$MANYCH_STEPS" --duration "$MANYCH_SECS" --drain-secs 3 --publishers 8 --connect-concurrency 512
done; fi
if has 4; then for pl in $(placements_for 4); do
  unit publish "$pl" 120 "$PUB_CHANNELS" publish --channels "$PUB_CHANNELS" --rate 0 --publishers "$PUB_PUBLISHERS" --duration "$PUB_SECS"
done; fi
if has 5; then for pl in $(placements_for 5); do
  unit resume "$pl" 180 "$RESUME_SUBS" resume --channels "$RESUME_CHANNELS" --resume-behind "$RESUME_BEHIND" --publishers 8 \
    --drain-secs 10 --connect-concurrency 512
done; fi
if has 6; then for pl in $(placements_for 6); do for n in $LINEAR_SIZES; do
  unit linear "$pl" 120 "$n" "linear-$n" --channels "$SWEEP_CHANNELS" --rate "$LINEAR_RATE" --duration "$LINEAR_SECS" \
    --drain-secs 3 --settle-secs 2 --connect-concurrency 512
done; done; fi

if has 7; then for pl in $(placements_for 7); do
  start=$(python3 -c "print(round($SWEEP_START_DPS / ($MERCURE_SUBS / $SWEEP_CHANNELS), 3))")
  # Mercure is ours alone: BROKER=ours for this unit whatever --broker says.
  if [ "$BROKER" != nchan ]; then
    BROKER_SAVED=$BROKER; BROKER=ours
    unit mercure "$pl" 300 "$MERCURE_SUBS" "mercure-$MERCURE_SUBS" --channels "$SWEEP_CHANNELS" --ramp-start "$start" \
      --ramp-factor "$SWEEP_FACTOR" --ramp-steps "$SWEEP_STEPS" --duration "$STEP_SECS" --drain-secs "$STEP_DRAIN" \
      --settle-secs 2 --connect-concurrency 512
    BROKER=$BROKER_SAVED
  fi
done; fi

meta "finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)" "elapsed_secs=$(( $(date +%s) - T_START ))" \
  "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
echo "runs took $(( ($(date +%s) - T_START) / 60 )) min $(( ($(date +%s) - T_START) % 60 )) s; results: $OUT" >&2

# ---------------------------------------------------------------- report
if [ "$BROKER" = floor ]; then
  # The floor is a measuring instrument, not a broker to compare: its figures only.
  python3 - "$OUT" <<'EOF'
import glob, json, os, sys
for path in sorted(glob.glob(os.path.join(sys.argv[1], "floor-*.json"))):
    report = json.load(open(path))
    for step in report.get("steps", []):
        cpu, share = step.get("cpu_us_per_delivery"), step.get("loadgen_core_share") or 0
        lat = step.get("latency_ms") or {}
        print(f"{os.path.basename(path)[:-5]:<28} step {step.get('step'):>2}: {step.get('deliveries_per_s', 0):>9.0f} deliveries/s, "
              f"CPU {cpu if cpu is None else round(cpu, 2)} us/delivery, p50 {lat.get('p50')} p99 {lat.get('p99')} ms, "
              f"loadgen {share:.0%} of a core, {'PASS' if step.get('pass') else 'FAIL'}")
EOF
  exit 0
fi
[ -n "$REPORT" ] || REPORT="$OUT/BENCHMARKS.md"
python3 "$HERE/report.py" --results "$OUT" --output "$REPORT" $PLOT_FLAG
