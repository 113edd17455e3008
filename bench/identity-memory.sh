#!/usr/bin/env bash
# Idle memory per subscriber, anonymous against one that carries an identity
# (a token's `sub`, docs/hooks.md "Identity and presence"): each kind on a
# fresh broker, N idle streams over CHANNELS channels, the broker's resident
# memory (VmRSS) after they are open minus before, divided by N. Also the
# same identities on streams that ask for `?presence=1` (each then also
# watches its channel's joins and leaves). Numbers go in docs/BENCH-hooks.md.
#
#   bench/identity-memory.sh [BROKER_BINARY] [N] [RUNS]
#   bench/identity-memory.sh target/release/sse-broker 5000 3
#
# Loopback only; the streams are held by one Python process (asyncio, raw
# sockets), which needs N file descriptors (ulimit -n is raised to N + 100);
# every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/sse-broker}
N=${2:-5000}
RUNS=${3:-3}
CHANNELS=${CHANNELS:-100}
SECRET=bench-secret-0123456789abcdef-0123456789
[ -x "$BIN" ] || { echo "build the broker: cargo build --release" >&2; exit 1; }
ulimit -n $((N + 100))

BPID=
trap '[ -n "$BPID" ] && kill "$BPID" 2>/dev/null || true' EXIT

# run KIND: one broker, N streams of KIND (anonymous | token | identity |
# presence); prints KiB per stream.
run() {
  local kind=$1 log port
  log=$(mktemp /tmp/identity-memory.XXXXXX)
  SSE_BROKER__DEMO__ENABLED=false SSE_BROKER__LIMITS__MAX_STREAMS_PER_IP=0 \
  SSE_BROKER__SERVER__WORKERS=1 \
  SSE_BROKER__AUTH__ENABLED=$([ "$kind" = anonymous ] && echo false || echo true) \
  SSE_BROKER__AUTH__SECRET=$SECRET RUST_LOG=warn,sse_broker::startup=info \
    "$BIN" --bind 127.0.0.1:0 2>"$log" &
  BPID=$!
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening addr=127.0.0.1:\([0-9]*\).*/\1/p' "$log")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$log"; echo "the broker did not start" >&2; exit 1; }
  python3 - "$port" "$BPID" "$N" "$CHANNELS" "$kind" "$SECRET" <<'PY'
import asyncio, base64, hashlib, hmac, json, sys, time

port, pid, n, channels, kind, secret = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def token(sub):
    claims = {"sse": {"subscribe": ["*"]}, "exp": int(time.time()) + 3600}
    if sub:
        claims["sub"] = sub
        claims["sse"]["info"] = {"name": sub}
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"

def path(i):
    query = []
    if kind == "token":
        query.append("token=" + token(None))
    elif kind in ("identity", "presence"):
        query.append("token=" + token(f"user-{i}"))
    if kind == "presence":
        query.append("presence=1")
    return f"/stream/room{i % channels}" + ("?" + "&".join(query) if query else "")

async def open_stream(i):
    reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
    writer.write(f"GET {path(i)} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    got = b""
    while b"retry:" not in got:
        chunk = await asyncio.wait_for(reader.read(4096), 30)
        if not chunk:
            raise SystemExit(f"stream {i} closed: {got[:300]!r}")
        got += chunk
    if not got.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"stream {i}: {got[:300]!r}")
    return reader, writer

async def main():
    # Warm-up: every channel running and every path taken once.
    warm = [await open_stream(i) for i in range(channels)]
    for _, w in warm:
        w.close()
    await asyncio.sleep(1)
    before = rss_kib()
    streams = []
    for start in range(0, n, 200):
        streams += await asyncio.gather(*(open_stream(i) for i in range(start, min(n, start + 200))))
    await asyncio.sleep(2)
    after = rss_kib()
    print(f"{kind}: {(after - before) / n:.2f} KiB per stream ({n} streams over {channels} channels; RSS {before} -> {after} KiB)")
    for _, w in streams:
        w.close()

asyncio.run(main())
PY
  kill "$BPID"; wait "$BPID" 2>/dev/null || true; BPID=
  rm -f "$log"
}

for r in $(seq "$RUNS"); do
  for kind in anonymous token identity presence; do
    run "$kind"
  done
done
