#!/usr/bin/env bash
# A lean binary to ship, and its debug information beside it.
#
#   scripts/package.sh [OUT_DIR]     # default: dist/
#
# Builds the release binary (Cargo.toml keeps line tables in it: 130 MB),
# then writes OUT_DIR/sse-broker (the code and its symbol table, ~19 MB) and
# OUT_DIR/sse-broker.debug (the DWARF), linked by `.gnu_debuglink` and by
# the binary's build id. Function names are always in the binary, so a
# panic's backtrace (RUST_BACKTRACE=1) and `perf` name every frame; with
# sse-broker.debug beside the binary (or under
# /usr/lib/debug/.build-id/xx/yyyy.debug), backtraces carry file and line
# too, and perf, gdb and valgrind find it on their own (docs/operations.md,
# "Shipping the binary").
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
mkdir -p "$out"
cargo build --release --locked --bin sse-broker
bin=target/release/sse-broker
objcopy --only-keep-debug "$bin" "$out/sse-broker.debug"
chmod -x "$out/sse-broker.debug"
# The debuglink names the file only: it is looked up next to the binary,
# in .debug/ below it, and in /usr/lib/debug.
objcopy --strip-debug --add-gnu-debuglink="$out/sse-broker.debug" "$bin" "$out/sse-broker"
readelf --string-dump=.gnu_debuglink "$out/sse-broker" | grep -q sse-broker.debug ||
  { echo "no .gnu_debuglink in $out/sse-broker" >&2; exit 1; }
id=$(readelf -n "$out/sse-broker" | sed -n 's/.*Build ID: //p')
printf '%s\t%s bytes (build id %s)\n%s\t%s bytes\n' \
  "$out/sse-broker" "$(stat -c %s "$out/sse-broker")" "${id:-none}" \
  "$out/sse-broker.debug" "$(stat -c %s "$out/sse-broker.debug")"
