#!/usr/bin/env bash
# CI smoke test: a few-second tiny run (20 subscribers, 2 channels, 200 events/s for 2 s)
# against an already running broker. Builds nothing. Exits non-zero on any loss, duplicate,
# reordering, publish error, connect error or unexpected disconnect.
#
#   bench/smoke.sh LOADGEN_BINARY BROKER_BASE_URL [nchan]
#   bench/smoke.sh bench/target/release/sse-loadgen http://127.0.0.1:8080
#   bench/smoke.sh bench/target/release/sse-loadgen http://127.0.0.1:8090 nchan
#
# Our broker: GET {base}/stream/{channel}, POST {base}/publish/{channel}.
# Nchan (third argument "nchan"): GET {base}/sub/{channel}, POST {base}/pub/{channel}.
set -euo pipefail
if [ $# -lt 2 ]; then sed -n '2,12p' "$0" >&2; exit 64; fi
LG=$1; BASE=${2%/}; FLAVOR=${3:-ours}
case "$FLAVOR" in
  nchan) SUB="$BASE/sub/{channel}"; PUB="$BASE/pub/{channel}" ;;
  *)     SUB="$BASE/stream/{channel}"; PUB="$BASE/publish/{channel}" ;;
esac
OUT=$(mktemp /tmp/sse-smoke.XXXXXX.json)
set +e
timeout 60 "$LG" --smoke --sub-url "$SUB" --pub-url "$PUB" --max-secs 30 --output "$OUT"
rc=$?
set -e
if [ $rc -ne 0 ]; then
  echo "smoke: FAILED (exit $rc), report in $OUT" >&2
  exit 1
fi
echo "smoke: OK" >&2
rm -f "$OUT"
