#!/usr/bin/env bash
# Property-based API test: schemathesis (from PyPI) generates requests from
# docs/openapi.json and sends them to a live broker, checking that no answer
# is a 5xx and every answer matches the documented status codes, media
# types and schemas.
#
# One worker: with several, CPython 3.11 sometimes fails inside
# schemathesis itself ("AST constructor recursion depth mismatch").
#
# Excluded: the Mercure hub (/.well-known/mercure…: its subscribe is an
# endless stream too, and its publish is covered by tests/api/mercure.rs),
# GET /stream and GET /stream/{channel}. A successful subscription
# is an endless text/event-stream; schemathesis reads a response to its end,
# so each one would hang until its request timeout. Their refusals (400,
# 401, 403, 429, 503) are checked against the spec by tests/api/openapi.rs.
#
#   BIN=target/release/sse-broker MAX_EXAMPLES=100 MAX_TIME=90 scripts/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/sse-broker}
MAX_EXAMPLES=${MAX_EXAMPLES:-100}
MAX_TIME=${MAX_TIME:-90}

if ! command -v schemathesis >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5' || exit 1
  hash -r
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run_pass NAME SECONDS [schemathesis options…]: starts a broker with the
# environment given to this function, runs schemathesis against it, stops it.
run_pass() {
  local name=$1 seconds=$2; shift 2
  local port log broker status=0
  port=$(free_port)
  log=$(mktemp)
  RUST_LOG=warn "$BIN" --bind "127.0.0.1:$port" --demo false >"$log" 2>&1 &
  broker=$!
  for _ in $(seq 1 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/openapi.json')" \
      >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "--- schemathesis: $name (${seconds} s at most)"
  schemathesis run docs/openapi.json \
    --url "http://127.0.0.1:$port" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --exclude-path-regex '^/(stream|\.well-known/mercure)' \
    --max-examples "$MAX_EXAMPLES" \
    --max-time "$seconds" \
    --request-timeout 5 \
    --workers 1 \
    --no-color \
    --suppress-health-check all \
    --warnings off "$@" || status=$?
  if ! kill -0 "$broker" 2>/dev/null; then
    echo "the broker died during the run:"
    cat "$log"
    status=1
  fi
  kill "$broker" 2>/dev/null
  wait "$broker" 2>/dev/null
  rm -f "$log"
  return $status
}

failed=0
# 1. Development defaults (auth off); no publish rate limit: the point is
#    the contract, not the limits (tests/api/limits.rs covers those).
SSE_BROKER__LIMITS__PUBLISH_RATE=0 run_pass "auth off" "$((MAX_TIME * 2 / 3))" || failed=1

# 2. Auth on, with a private channel pattern and a token that may publish to
#    orders.* only: answers are a mix of 202, 401 and 403.
secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export SSE_BROKER__AUTH__ENABLED=true SSE_BROKER__AUTH__SECRET=$secret
token=$("$BIN" token --publish 'orders.*' --subscribe 'private.*' --ttl 10m --sub schemathesis)
SSE_BROKER__LIMITS__PUBLISH_RATE=0 run_pass "auth on" "$((MAX_TIME / 3))" \
  -H "Authorization: Bearer $token" || failed=1
unset SSE_BROKER__AUTH__ENABLED SSE_BROKER__AUTH__SECRET
exit $failed
