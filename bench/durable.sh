#!/bin/sh
# Publish throughput and latency, memory vs durable history: one broker run per
# label on 127.0.0.1:18088, the load generator in publish-throughput mode.
# Usage: bench/durable.sh <label> [broker flags...]   (PUBLISHERS=8, PAYLOAD_BYTES=100 by default)
# Build first: cargo build --release and
#   CARGO_TARGET_DIR=/tmp/lg-durable cargo build --release --manifest-path bench/loadgen/Cargo.toml
set -e
label=$1; shift
out=${OUT:-/tmp/bench-durable}; mkdir -p "$out"
BIN=${BIN:-target/release/sse-broker}
LG=${LG:-/tmp/lg-durable/release/sse-loadgen}
# The load generator speaks from one IP: lift the per-IP abuse limits, as
# traffic spread over many clients would never meet them.
SSE_BROKER__LIMITS__MAX_STREAMS_PER_IP=0 SSE_BROKER__LIMITS__PUBLISH_RATE=0 \
RUST_LOG=warn $BIN --bind 127.0.0.1:18088 --demo false "$@" 2>"$out/$label.log" &
pid=$!
sleep 1
$LG --rate 0 --publishers "${PUBLISHERS:-8}" --payload-bytes "${PAYLOAD_BYTES:-100}" --channels 1000 --subscribers 1000 --duration 10 \
  --sub-url 'http://127.0.0.1:18088/stream/{channel}' --pub-url 'http://127.0.0.1:18088/publish/{channel}' \
  --broker-pid $pid --output "$out/$label.json"
kill -TERM $pid; wait $pid || true
