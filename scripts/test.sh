#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (Chromium from Debian, npm packages), builds once in release mode, and runs
# every stage against that one build. Exits non-zero when any stage fails.
#
#   scripts/test.sh            # everything
#   SKIP_BROWSER=1 scripts/test.sh   # without the Chromium stage
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
  # The cluster tests (tests/api/cluster.rs) start their own redis-server.
  apt_install redis-server || return 1
  if [ -z "${SKIP_BROWSER:-}" ]; then
    apt_install chromium || return 1
    npm ci --no-audit --no-fund --loglevel=error || return 1
  fi
}

build() {
  # One release build serves every stage: the test binaries and the broker binary.
  cargo build --release --locked --bins && cargo test --release --locked --no-run
}

rust_tests() {
  cargo test --release --locked
}

browser_tests() {
  SSE_BROKER_BIN="$ROOT/target/release/sse-broker" npm run --silent test:browser
}

stage "install test tools" install_tools
stage "build (release)" build
stage "rust unit and integration tests" rust_tests
if [ -z "${SKIP_BROWSER:-}" ]; then
  stage "browser end-to-end tests (Chromium)" browser_tests
fi

echo
if [ $failed -gt 0 ]; then
  printf 'failed stage: %s\n' "${failures[@]}"
fi
echo "stages: $passed passed, $failed failed"
[ $failed -eq 0 ]
