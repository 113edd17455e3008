#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (nginx, redis-server, pebble, openssl and Chromium from Debian, npm and PyPI packages), builds once in
# release mode, and runs every stage against that one build. Exits non-zero when any
# stage fails.
#
#   scripts/test.sh            # everything
#   SKIP_BROWSER=1 scripts/test.sh   # without the Chromium stage
#   FUZZ_SECONDS=10 SCHEMATHESIS_SECONDS=30 scripts/test.sh   # shorter fuzz/API stages
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=never

passed=0
failed=0
failures=()

stage() {
  local name=$1; shift
  echo
  echo "==> $name"
  local start=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "<== $name: ok ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "<== $name: FAILED ($((SECONDS - start)) s)"
  fi
}

# Installs Debian packages that are missing; apt-get update only when needed.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_tools() {
  # The reverse-proxy tests (tests/api/proxy.rs) run a real nginx.
  apt_install nginx || return 1
  if ! command -v schemathesis >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5' || return 1
  fi
  # The third-party SSE clients the hostile-client tests subscribe with.
  if ! python3 -c 'import httpx_sse, sseclient, requests' >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check \
      'httpx>=0.27' 'httpx-sse==0.4.*' 'requests>=2.31' 'sseclient-py==1.8.*' || return 1
  fi
  # The occupancy webhook tests' receiver (tests/apps/webhook_receiver.py)
  # verifies every delivery with the Standard Webhooks reference library.
  if ! python3 -c 'import standardwebhooks' >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check 'standardwebhooks==1.1.*' || return 1
  fi
  # The cluster tests (tests/api/cluster.rs, redis_cluster.rs) start their own
  # redis-server, Redis Cluster (redis-cli --cluster create) and sentinel.
  apt_install redis-server redis-tools || return 1
  # The Mercure JWK Set test (tests/api/mercure_issuers.rs) and the HTTPS
  # browser test make their certificates with the openssl command; the ACME
  # test (tests/api/acme.rs) runs Let's Encrypt's test authority, pebble.
  apt_install pebble openssl || return 1
  # npm packages: playwright-core (browser tests and the Chromium client
  # test), eventsource (client tests).
  npm ci --no-audit --no-fund --loglevel=error || return 1
  if [ -z "${SKIP_BROWSER:-}" ]; then
    apt_install chromium || return 1
  fi
}

build() {
  # One release build serves every stage: the test binaries and the broker binary.
  cargo build --release --locked --bins && cargo test --release --locked --no-run
}

# Everything but the third-party clients (their own stage below). The
# hostile-client suite (tests/hostile) and the faults under load
# (tests/api/cluster.rs, durable.rs) run here in their short forms; the long
# forms are scripts/soak.sh (docs/hostile-clients.md).
rust_tests() {
  cargo test --release --locked -- --skip clients::
}

# The integration and hostile-client tests again, every stream served by the
# body writer (the one HTTPS and HTTP/2 use) instead of the direct one; the
# same build.
body_writer_tests() {
  SSE_BROKER__STREAM__WRITER=body cargo test --release --locked --test api --test hostile \
    -- --skip clients::
}

# httpx-sse, sseclient-py, Node's eventsource and Chromium's EventSource
# through the connect prelude, heartbeats, a replay and a gap notice
# (tests/hostile/clients.rs), on both stream writers. Without Chromium
# (SKIP_BROWSER) its case says so and passes.
client_tests() {
  cargo test --release --locked --test hostile clients:: &&
    SSE_BROKER__STREAM__WRITER=body cargo test --release --locked --test hostile clients::
}

# vendor/actix-http is exactly the crates.io release plus our patches, and the
# actix-http Cargo resolves (docs/streams.md).
vendored_actix_http() {
  scripts/vendor-actix-http.sh --check
}

lint() {
  cargo fmt --check && cargo clippy --release --locked --all-targets -- -D warnings
}

bench_smoke() {
  # The load generator must not rot: a few-second tiny run against the release broker.
  CARGO_TARGET_DIR="$ROOT/bench/target" cargo build --release --locked --quiet \
    --manifest-path bench/loadgen/Cargo.toml || return 1
  local log port pid rc
  log=$(mktemp)
  SSE_BROKER__DEMO__ENABLED=false RUST_LOG=info "$ROOT/target/release/sse-broker" --bind 127.0.0.1:0 2>"$log" &
  pid=$!
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening addr=127.0.0.1:\([0-9]*\).*/\1/p' "$log")
    [ -n "$port" ] && break
    sleep 0.1
  done
  if [ -z "$port" ]; then kill "$pid"; cat "$log"; return 1; fi
  bench/smoke.sh "$ROOT/bench/target/release/sse-loadgen" "http://127.0.0.1:$port"
  rc=$?
  kill "$pid"; wait "$pid" 2>/dev/null
  rm -f "$log"
  return $rc
}

# The long proptest over the publish body parser and the SSE encoder
# (tests/fuzz_inputs.rs): each of its properties runs fresh cases for
# FUZZ_SECONDS, two at a time, so about a minute in all.
fuzz_tests() {
  FUZZ_SECONDS=${FUZZ_SECONDS:-20} cargo test --release --locked --test fuzz_inputs -- --test-threads 2
}

# schemathesis against the live release binary and docs/openapi.json.
api_contract() {
  BIN="$ROOT/target/release/sse-broker" MAX_TIME=${SCHEMATHESIS_SECONDS:-90} scripts/schemathesis.sh
}

# The lean binary and its debug file (docs/operations.md, "Shipping the
# binary"), from the release build: objcopy and the debuglink work.
package_check() {
  local out
  out=$(mktemp -d)
  scripts/package.sh "$out" && rm -rf "$out"
}

browser_tests() {
  SSE_BROKER_BIN="$ROOT/target/release/sse-broker" npm run --silent test:browser
}

stage "install test tools" install_tools
stage "vendored actix-http is the release plus our patches" vendored_actix_http
stage "build (release)" build
stage "rust unit, architecture and integration tests" rust_tests
stage "integration tests on the body stream writer" body_writer_tests
stage "third-party SSE clients: httpx-sse, sseclient-py, Node eventsource, Chromium" client_tests
stage "lint: rustfmt and clippy" lint
stage "benchmark harness smoke run" bench_smoke
stage "package: lean binary, debug info beside it" package_check
stage "fuzz: long proptest (body parser, SSE encoder)" fuzz_tests
stage "API contract: schemathesis against docs/openapi.json" api_contract
if [ -z "${SKIP_BROWSER:-}" ]; then
  stage "browser end-to-end tests (Chromium)" browser_tests
fi

echo
if [ $failed -gt 0 ]; then
  printf 'failed stage: %s\n' "${failures[@]}"
fi
echo "stages: $passed passed, $failed failed"
[ $failed -eq 0 ]
