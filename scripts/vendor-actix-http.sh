#!/usr/bin/env bash
# Rebuilds vendor/actix-http from the crates.io release it names plus our
# patches (vendor/actix-http-patches/*.patch, applied in order), or checks
# that the committed tree is exactly that and that Cargo builds with it.
#
#   scripts/vendor-actix-http.sh           # rebuild vendor/actix-http
#   scripts/vendor-actix-http.sh --check   # CI: fail on any difference
#
# --check fails when
#   - the release does not download or its SHA-256 is not the one below;
#   - a patch no longer applies cleanly to the release;
#   - vendor/actix-http differs from release + patches by a single byte;
#   - Cargo.lock resolves an actix-http other than vendor/actix-http (for
#     example an actix-web upgrade that needs a newer actix-http: Cargo would
#     then take the crates.io one and silently drop the patch), or the
#     vendored version is not the one named here.
#
# To move to a new actix-http release: set VERSION and SHA256 (the `cksum`
# of that version in the crates.io index), run this script without
# arguments, fix any patch that no longer applies (docs/streams.md says what
# each one does), and run the stream tests on both writers.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=3.20.0
SHA256=d20a22850ea7fecad12c5f8cd97d246c3af1f04ef400033977c2f13425c45816
URL="https://static.crates.io/crates/actix-http/actix-http-$VERSION.crate"
VENDOR=vendor/actix-http
PATCHES=vendor/actix-http-patches

MODE=write
case "${1:-}" in
  "") ;;
  --check) MODE=check ;;
  *) echo "usage: $0 [--check]" >&2; exit 64 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. The release, verified.
curl -sSfL --retry 3 -o "$work/release.crate" "$URL"
echo "$SHA256  $work/release.crate" | sha256sum --check --quiet - ||
  { echo "actix-http $VERSION: the download's SHA-256 is not $SHA256" >&2; exit 1; }
tar -xzf "$work/release.crate" -C "$work"
tree="$work/actix-http-$VERSION"

# 2. Only what building the library needs: no examples, tests, benches or
#    dev-dependencies (Cargo.toml's sections for them go too), no packaging
#    leftovers.
rm -rf "$tree"/{benches,examples,tests} "$tree"/Cargo.toml.orig "$tree"/Cargo.lock \
  "$tree"/.cargo_vcs_info.json
python3 - "$tree/Cargo.toml" <<'EOF'
import sys
path = sys.argv[1]
keep, out = True, []
for line in open(path).read().split("\n"):
    if line.startswith("["):
        keep = not line.startswith(("[[example]]", "[[test]]", "[[bench]]", "[dev-dependencies"))
    if keep:
        out.append(line)
open(path, "w").write("\n".join(out))
EOF

# 3. Our patches, in order; each must apply without fuzz.
for patch in "$PATCHES"/*.patch; do
  patch --quiet --forward --fuzz=0 --no-backup-if-mismatch -p1 -d "$tree" < "$patch" ||
    { echo "$patch does not apply to actix-http $VERSION" >&2; exit 1; }
done

if [ "$MODE" = write ]; then
  rm -rf "$VENDOR"
  cp -r "$tree" "$VENDOR"
  echo "$VENDOR: actix-http $VERSION + $(ls "$PATCHES"/*.patch | wc -l) patch(es)"
  exit 0
fi

# 4. The committed tree is release + patches, byte for byte.
if ! diff -r "$tree" "$VENDOR" >"$work/diff"; then
  echo "$VENDOR is not actix-http $VERSION + $PATCHES (run $0 and commit):" >&2
  head -50 "$work/diff" >&2
  exit 1
fi

# 5. Cargo uses it: one actix-http in the lock file, the vendored one.
host=$(rustc -vV | sed -n "s/^host: //p")
cargo metadata --locked --format-version 1 --filter-platform "$host" >"$work/metadata.json" 2>"$work/metadata.log" ||
  { cat "$work/metadata.log" >&2; exit 1; }
python3 - "$work/metadata.json" "$VERSION" <<'EOF'
import json, os, sys
meta, version = json.load(open(sys.argv[1])), sys.argv[2]
found = [p for p in meta["packages"] if p["name"] == "actix-http"]
vendored = os.path.realpath("vendor/actix-http/Cargo.toml")
problems = []
if len(found) != 1:
    names = ", ".join(f"{p['version']} from {p['source'] or 'a path'}" for p in found)
    problems.append(f"{len(found)} actix-http packages resolved: {names}")
for p in found:
    if p["source"] is not None or os.path.realpath(p["manifest_path"]) != vendored:
        problems.append(f"actix-http {p['version']} comes from {p['source']}, not vendor/actix-http")
    elif p["version"] != version:
        problems.append(f"the vendored actix-http is {p['version']}, the script names {version}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
EOF
echo "$VENDOR: actix-http $VERSION + $(ls "$PATCHES"/*.patch | wc -l) patch(es), the one Cargo resolves"
