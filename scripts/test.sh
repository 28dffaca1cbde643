#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and the whole test suite.
# Usage: bash scripts/test.sh
# Env:   TETHER_SIM_SEEDS=N    seeds for the deterministic simulation (default 2000)
#        PROPTEST_CASES=N      cases per property test (default 256)
#        TETHER_FUZZ_SECS=N    seconds per fuzz target in the smoke run (default 20; 0 skips)
#        TETHER_COMPAT_TARGET=DIR  target dir of the Tauri 2.9.5 run (default target/tauri-2.9.5)
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cargo; then
  echo "cargo not found: install Rust from https://rustup.rs (this project needs 1.90 or newer)" >&2
  exit 1
fi
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$comp"
  fi
done

# CI machines have 2 cores: no debug info keeps link times and the target dir small.
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
if [ "${CI:-}" = "true" ]; then
  export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0
fi

# System packages the Tauri plugin links against (Tauri 2 on Linux always links webkit/gtk).
# and what its real-window test needs (Xvfb).
if ! pkg-config --exists webkit2gtk-4.1 2>/dev/null || ! command -v xvfb-run >/dev/null 2>&1; then
  echo "== installing libwebkit2gtk-4.1-dev, xvfb, xauth (Tauri plugin build and window test)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    libwebkit2gtk-4.1-dev pkg-config xvfb xauth >/dev/null
fi

# The public-API check reads rustdoc's JSON with Python.
if ! command -v python3 >/dev/null 2>&1; then
  echo "== installing python3 (the public-API check)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3 >/dev/null
fi

# The real proxies and gateway that the network tests start on loopback
# (tests/integration/src/components.rs): tinyproxy (HTTP CONNECT), microsocks (SOCKS5), stunnel4
# (a TLS-inspecting gateway), and curl, the outside client of tests/components_smoke.rs.
if ! need tinyproxy || ! need microsocks || ! need stunnel4 || ! need curl; then
  echo "== installing tinyproxy, microsocks, stunnel4, curl (proxy and gateway tests)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    tinyproxy microsocks stunnel4 curl >/dev/null
  # Where systemd runs, the package starts a machine-wide tinyproxy on port 8888; the tests
  # start their own, and a stray proxy is not wanted.
  if need systemctl; then $SUDO systemctl disable --now tinyproxy >/dev/null 2>&1 || true; fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cross-target: the per-OS clock (tether-clock), the core and the system proxy settings compile for macOS and Windows"
# tether-tokio itself cannot be checked from Linux (ring needs a C cross-compiler), so every
# per-OS line lives in tether-clock, which has no C dependency (D56).
for target in x86_64-apple-darwin x86_64-pc-windows-gnu; do
  if ! rustup target list --installed | grep -x "$target" >/dev/null; then
    rustup target add "$target"
  fi
  cargo clippy --locked -q -p tether-core -p tether-clock --target "$target" -- -D warnings
  # The system's proxy settings (hyper-util's matcher with `client-proxy-system`: macOS
  # SystemConfiguration, the Windows registry), as tether-tokio enables them (D88). hyper-util
  # has no C dependency, so it is checked for each desktop although tether-tokio cannot be
  # (rustls-platform-verifier cannot either: the workspace's rustls brings ring).
  cargo check --locked -q -p hyper-util --target "$target"
done

echo "== cargo test (workspace)"
test_log="$(mktemp)"
cargo test --workspace --locked 2>&1 | tee "$test_log"

# The workspace run offers the default link (v2, MessagePack, no compression). The suites of
# faults (drops, stalls, garbage, oversize, restarts, catch-up, pacing, clocks) run again over every
# other pairing the dev server speaks (issue 12; TETHER_TEST_LINK, tests/integration/src/lib.rs).
for link in v1 v2-json v2-json+deflate v2-msgpack+deflate; do
  echo "== fault suites over ${link}"
  TETHER_TEST_LINK="$link" cargo test --locked -q -p tether-integration \
    --test tokio_driver --test hostile --test pacing --test wake_network --test clocks --test kaiku_server 2>&1 | tee -a "$test_log"
done
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$test_log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$test_log" | awk '{s+=$1} END {print s+0}')
rm -f "$test_log"

echo "== chaos soak (short): 20 clients, 5 channels, seeded faults, 45 s"
# Fails the suite on any loss, duplicate or reordering (exit 1).
cargo run --locked -q -p tether-integration --bin tether-soak -- --secs "${TETHER_SOAK_SECS:-45}" --clients 20 --channels 5 --seed "${TETHER_SOAK_SEED:-1}"

echo "== flood (short): the app stops reading for 5 s while 50,000 messages arrive"
cargo run --locked -q -p tether-integration --bin tether-flood -- --messages 50000 --pause-secs 5 --max-rss-mib 64

echo "== benchmarks: build every one (release), run each briefly; speed is never checked here"
cargo bench --locked -q -p tether-bench --no-run
cargo bench --locked -q -p tether-bench --bench core -- --test
cargo run --locked -q -p tether-bench --bin tether-bench-driver -- --quick
cargo run --locked -q -p tether-bench --bin tether-bench-wire -- --rounds 20 --live 20
cargo run --locked -q -p tether-integration --bin tether-reconnect -- --rounds 2
cargo run --locked -q -p tether-integration --bin tether-many -- --steps 50,200 --idle-secs 2
# Paced catch-up: 40 channels under 15 reads / 2 s; fails on an incomplete channel, more than
# one 429 per window, or a read inside a Retry-After pause.
cargo run --locked -q -p tether-integration --bin tether-catchup -- --channels 40 --budget 15 --window 2

echo "== Tauri: the demo app in a real window under Xvfb (post, drop, reconnect, catch up, close;"
echo "   then a short emit-vs-channel throughput smoke of 2,000 events)"
cargo build --locked -q --manifest-path drivers/tauri/examples/demo-app/Cargo.toml --target-dir target
cargo run --locked -q -p tether-integration --bin tether-window-e2e -- target/debug/tether-demo-app 2000

echo "== Tauri 2.9.5 (what Kaiku's client locks): the plugin's and the shim's tests, the demo app's build"
# The workspace run above tested the newest 2.x of Cargo.lock; this runs in a pinned copy
# with its own target dir (target/tauri-2.9.5, TETHER_COMPAT_TARGET).
bash scripts/tauri-compat.sh

echo "== guest-js: the TypeScript bindings type-check (tsc)"
if command -v npm >/dev/null 2>&1; then
  (cd drivers/tauri/guest-js && npm ci --no-audit --no-fund --loglevel=error && npx tsc -p tsconfig.json --noEmit)
else
  echo "npm not found: install Node.js (20+) to check the guest-js package" >&2
  exit 1
fi

echo "== sans-IO check: tether-core depends on no I/O crate"
if cargo tree -p tether-core -e normal --prefix none | grep -E '^(tokio|reqwest|tungstenite|tokio-tungstenite|tauri|mio|socket2) ' ; then
  echo "tether-core must not depend on an I/O crate" >&2
  exit 1
fi
echo "== public API: tether-core's surface is the committed list (core/public-api.txt)"
bash scripts/public-api.sh

FUZZ_SECS="${TETHER_FUZZ_SECS:-20}"
if [ "$FUZZ_SECS" != "0" ]; then
  echo "== fuzz smoke: build every target, run each ${FUZZ_SECS}s on its seed corpus"
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version ^0.13 --locked
  fi
  # Stable toolchain: cargo-fuzz needs -Z flags, which RUSTC_BOOTSTRAP allows.
  export RUSTC_BOOTSTRAP=1
  (
    cd fuzz
    cargo fuzz build -O
    for target in server_frame rest_body operations extensions; do
      corpus="$(mktemp -d)"
      cp seeds/"$target"/* "$corpus"/
      log="$(mktemp)"
      if ! cargo fuzz run -O "$target" "$corpus" -- -dict=protocol.dict \
        -max_total_time="$FUZZ_SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz target $target failed; the input is under fuzz/artifacts/$target" >&2
        exit 1
      fi
      echo "$target: $(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}') runs, no crash"
      rm -rf "$corpus" "$log"
    done
  )
fi

echo "all checks passed (fmt, clippy, cross-target clock, tests, soak, flood, benchmark smokes, window e2e, Tauri 2.9.5, guest-js, sans-IO, public API, fuzz smoke)"
echo "tests: $passed passed, $failed failed"
