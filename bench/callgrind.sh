#!/usr/bin/env bash
# Instructions per connect and per publish of the release broker, counted by
# callgrind: instruction counts do not depend on how busy the machine is, so
# this is how a change to the subscribe or publish path is judged here (the
# rates against Nchan come from bench/run.sh on a quiet machine).
#
#   bench/callgrind.sh [BROKER_BINARY] [OUT_DIR]
#   bench/callgrind.sh target/release/sse-broker /tmp/callgrind
#
# Starts the broker under `valgrind --tool=callgrind` on a free loopback port
# with the benchmark's settings (bench/run.sh: one HTTP worker, no demo, no
# per-IP limits, RUST_LOG=warn), then:
# - connect: 100 channels with two subscribers each are started, the counters
#   are zeroed, CONNECTS more subscriptions are opened over those channels
#   (each a new connection whose prelude is read, kept open as in the idle
#   workload), and the counters are dumped;
# - publish: 100 other channels get one subscriber each (bench/run.sh's
#   publish workload), the counters are zeroed, PUBLISHES publishes are sent
#   on two keep-alive connections over those channels (each fanned out to its
#   one subscriber), and the counters are dumped.
# Prints instructions per connect and per publish; the dumps stay in OUT_DIR
# for callgrind_annotate.
#
# With REDIS=1 the broker is a cluster node on its own redis-server (started
# here on a free port, under callgrind too): the publish phase then also
# counts the Redis server's instructions per publish (the script, the bus
# message, the connections' reads and writes). Bounded: a few thousand requests, loopback only,
# every wait has a timeout; takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/sse-broker}
OUT=${2:-$(mktemp -d /tmp/sse-callgrind.XXXXXX)}
CONNECTS=${CONNECTS:-2000}
PUBLISHES=${PUBLISHES:-5000}
mkdir -p "$OUT"
LOG="$OUT/broker.log"
REDIS_ARGS=()
RVG=
if [ -n "${REDIS:-}" ]; then
  RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  valgrind --tool=callgrind --callgrind-out-file="$OUT/redis.%p" \
    redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
  RVG=$!
  for _ in $(seq 300); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  REDIS_ARGS=(--redis "redis://127.0.0.1:$RPORT")
fi

SSE_BROKER__DEMO__ENABLED=false SSE_BROKER__LIMITS__MAX_STREAMS_PER_IP=0 \
SSE_BROKER__LIMITS__PUBLISH_RATE=0 SSE_BROKER__SERVER__WORKERS=1 RUST_LOG=warn,sse_broker::startup=info \
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.%p" \
  "$BIN" --bind 127.0.0.1:0 "${REDIS_ARGS[@]}" 2>"$LOG" &
VG=$!
trap 'kill $VG $RVG 2>/dev/null || true' EXIT
port=
for _ in $(seq 600); do
  port=$(sed -n 's/.*listening addr=127.0.0.1:\([0-9]*\).*/\1/p' "$LOG")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$LOG"; echo "the broker did not start" >&2; exit 1; }

# `callgrind_control -z` zeroes, `-d` dumps (numbered files in OUT).
python3 - "$port" "$VG" "$CONNECTS" "$PUBLISHES" "$OUT" "$RVG" <<'PY'
import glob, os, re, socket, subprocess, sys, time

port, pid, connects, publishes, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
redis_pid = sys.argv[6]
CHANNELS = 100
TIMEOUT = 60

def control(flag, of=None):
    subprocess.run(["callgrind_control", flag, of or pid], check=True, capture_output=True, timeout=TIMEOUT)

def dumped_instructions(prefix="callgrind", of=None):
    """Ir of the newest dump (callgrind numbers them .1, .2, ...)."""
    files = sorted(glob.glob(f"{out}/{prefix}.{of or pid}.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
    with open(files[-1]) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit("no totals in " + files[-1])

def subscribe(channel):
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=TIMEOUT)
    s.sendall(f"GET /stream/{channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    got = b""
    while b"retry:" not in got:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("stream closed: " + got.decode(errors="replace"))
        got += chunk
    return s

def publisher():
    return socket.create_connection(("127.0.0.1", int(port)), timeout=TIMEOUT)

def publish(s, i):
    body = b'{"n":%d,"payload":"0123456789abcdef0123456789abcdef"}' % i
    s.sendall(b"POST /publish/pub%d HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (i % CHANNELS, len(body), body))
    got = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("publisher connection closed")
        got += chunk
        head, sep, rest = got.partition(b"\r\n\r\n")
        if sep:
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            if len(rest) >= length:
                assert head.startswith(b"HTTP/1.1 202"), head
                return

# Warm-up: every path taken once before counting.
streams = [subscribe(f"ch{c}") for c in range(CHANNELS)]
streams += [subscribe(f"ch{c}") for c in range(CHANNELS)]
readers = [subscribe(f"pub{c}") for c in range(CHANNELS)]
pubs = [publisher(), publisher()]
for i in range(200):
    publish(pubs[i % 2], i)

control("-z")
for i in range(connects):
    streams.append(subscribe(f"ch{i % CHANNELS}"))
control("-d")
per_connect = dumped_instructions() / connects

# Every stream reads what reaches it (the bus may bring an event after its
# publish was answered): a full socket would stall the broker.
def drain():
    for s in readers:
        s.setblocking(False)
        try:
            while s.recv(65536):
                pass
        except BlockingIOError:
            pass
        s.setblocking(True)

if redis_pid:
    control("-z", redis_pid)
control("-z")
for i in range(publishes):
    publish(pubs[i % 2], i)
    if i % 500 == 499:
        drain()
time.sleep(0.5)  # the last bus messages
control("-d")
per_publish = dumped_instructions() / publishes
if redis_pid:
    control("-d", redis_pid)
    print(f"Redis instructions per publish: {dumped_instructions('redis', redis_pid) / publishes:,.0f}")

print(f"instructions per connect: {per_connect:,.0f} ({connects} connects over {CHANNELS} running channels)")
print(f"instructions per publish: {per_publish:,.0f} ({publishes} publishes, over {CHANNELS} channels of one subscriber each)")
for s in streams + readers + pubs:
    s.close()
PY
echo "dumps: $OUT (callgrind_annotate $OUT/callgrind.$VG.<n>)"
