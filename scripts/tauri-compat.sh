#!/usr/bin/env bash
# Tests the Tauri plugin and the Kaiku shim against Tauri 2.9.5, the version Kaiku's desktop
# client locks, and builds the demo app with it, in a copy of the workspace whose Cargo.lock
# is pinned to 2.9.5. The real Cargo.lock (the newest 2.x, which the workspace run tests) is
# never touched.
# Usage: bash scripts/tauri-compat.sh
# Env:   TETHER_COMPAT_TARGET=DIR  its own target dir, kept between runs for a CI cache to hold
#                                  (default target/tauri-2.9.5); the copy is DIR/workspace
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

# Kaiku's Cargo.lock holds exactly this family: tauri 2.9.5 and the versions released with
# it, the lowest that 2.9.5 accepts. Tauri 2.9.5 asks for its companions with `^`, not `=`,
# so pinning tauri alone would keep our lock's 2.12-era tauri-runtime, tauri-utils,
# tauri-macros and tauri-plugin: a mix no 2.9.5 app has. Top of the family first, so that
# every step stays resolvable.
pins=(
  tauri@2.9.5
  tauri-runtime-wry@2.9.3
  tauri-runtime@2.9.2
  tauri-macros@2.5.2
  tauri-build@2.5.3
  tauri-plugin@2.5.2
  tauri-codegen@2.5.2
  tauri-utils@2.8.1
)
tauri="${pins[0]#*@}"

fail() {
  echo "tauri-compat: $*" >&2
  exit 1
}

target="${TETHER_COMPAT_TARGET:-$repo/target/tauri-$tauri}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
# Inside the sources, the copy would copy itself next time unless git ignores it.
if [[ "$target/" == "$repo/"* ]] && ! git -C "$repo" check-ignore -q "$target"; then
  fail "the target dir is inside the sources and not ignored by git: $target"
fi
scratch="$target/workspace"

# The versions of a package in a Cargo.lock, one per line.
locked() { awk -v name="$2" '$0 == "name = \"" name "\"" { getline; gsub(/"/, "", $3); print $3 }' "$1"; }

# Pins the Tauri family in one lock; a member the lock does not hold is skipped.
pin_tauri() {
  local dir="$1" pin
  for pin in "${pins[@]}"; do
    if [ -n "$(locked "$dir/Cargo.lock" "${pin%@*}")" ]; then
      (cd "$dir" && cargo update --quiet -p "${pin%@*}" --precise "${pin#*@}") ||
        fail "cargo update -p ${pin%@*} --precise ${pin#*@} failed in $dir"
    fi
  done
}

# Fails unless the lock holds tauri, and exactly the pinned version of each member it holds.
check_pins() {
  local dir="$1" pin have
  for pin in "${pins[@]}"; do
    have="$(locked "$dir/Cargo.lock" "${pin%@*}" | tr '\n' ' ')"
    if [ "$have" != "${pin#*@} " ] && { [ -n "$have" ] || [ "${pin%@*}" = tauri ]; }; then
      have="${have:-none }"
      fail "$dir/Cargo.lock holds ${pin%@*} ${have% }, not ${pin#*@}"
    fi
  done
}

lock_before="$(cksum <"$repo/Cargo.lock")"

# The working tree's files that git tracks or would (new ones not yet added), with their
# mtimes, so that an unchanged crate stays fresh in the kept target dir.
rm -rf "$scratch"
mkdir -p "$scratch"
(
  cd "$repo"
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -
) | tar -xf - -C "$scratch"

# Pinning asks the registry, about 2 s a package; its result only changes with the locks or
# the pins, so it is kept beside the target dir.
demo=drivers/tauri/examples/demo-app
key="$(printf '%s\n' "${pins[@]}" | cat - "$scratch/Cargo.lock" "$scratch/$demo/Cargo.lock" | cksum)"
if [ "$(cat "$target/pinned/key" 2>/dev/null)" = "$key" ]; then
  cp "$target/pinned/workspace.lock" "$scratch/Cargo.lock"
  cp "$target/pinned/demo-app.lock" "$scratch/$demo/Cargo.lock"
else
  pin_tauri "$scratch"
  pin_tauri "$scratch/$demo"
  mkdir -p "$target/pinned"
  cp "$scratch/Cargo.lock" "$target/pinned/workspace.lock"
  cp "$scratch/$demo/Cargo.lock" "$target/pinned/demo-app.lock"
  echo "$key" >"$target/pinned/key"
fi
check_pins "$scratch"
check_pins "$scratch/$demo"
summary=""
for pin in "${pins[@]}"; do
  have="$(locked "$scratch/$demo/Cargo.lock" "${pin%@*}")"
  summary+="${pin%@*} $have, "
done
echo "tauri-compat: testing with ${summary%, }"

export CARGO_TARGET_DIR="$target"
# The shim's outside-tester file (tests/adversary.rs, minutes of timers) runs in the
# workspace run only: what it attacks does not depend on Tauri's version.
(cd "$scratch" && cargo test --locked -q -p tauri-plugin-tether &&
  cargo test --locked -q -p kaiku-shim --lib --test kaiku_frontend --test frontend_events --test guide) ||
  fail "tauri-plugin-tether or kaiku-shim fails with tauri $tauri (the copy: $scratch)"
# A whole app, as Kaiku's client is: the wry runtime, generate_context!, and a build script in
# which tauri-build resolves the plugin's permissions.
(cd "$scratch/$demo" && cargo check --locked -q) ||
  fail "the demo app does not build with tauri $tauri (the copy: $scratch)"

[ "$(cksum <"$repo/Cargo.lock")" = "$lock_before" ] || fail "the workspace's Cargo.lock changed"
echo "tauri-compat: tauri $tauri: tauri-plugin-tether and kaiku-shim pass, the demo app builds"
