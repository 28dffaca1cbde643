#!/usr/bin/env bash
# Checks that tether-core's public API is the committed list (`core/public-api.txt`), so a
# change to the surface is deliberate (D58). `--bless` writes the current list instead.
# rustdoc's JSON output is unstable: RUSTC_BOOTSTRAP lets the stable toolchain emit it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -Z unstable-options --output-format json" \
  cargo doc --locked -q -p tether-core --lib --no-deps
current="$(mktemp)"
trap 'rm -f "$current"' EXIT
python3 scripts/public-api.py target/doc/tether_core.json >"$current"
if [ "${1:-}" = "--bless" ]; then
  cp "$current" core/public-api.txt
  echo "core/public-api.txt: $(wc -l <core/public-api.txt) items"
elif ! diff -u core/public-api.txt "$current"; then
  echo "tether-core's public API changed (above). If that is deliberate:" >&2
  echo "  bash scripts/public-api.sh --bless   and commit core/public-api.txt" >&2
  exit 1
else
  echo "public API: $(wc -l <core/public-api.txt) items, as committed"
fi
