#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the Rust targets and components
# it needs, then checks formatting and lints, runs every test, and proves kiln-runtime
# builds for bare-metal Cortex-M (no_std, no alloc).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null || ! command -v rustup >/dev/null; then
  echo "error: cargo and rustup are missing: install a stable Rust toolchain with rustup" >&2
  exit 1
fi
echo "== rustup targets and components"
rustup target add thumbv7em-none-eabihf thumbv6m-none-eabi
rustup component add clippy rustfmt llvm-tools

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# -- real-board firmware (owner: boards) ---------------------------------------------
# Each board crate is its own workspace (host `cargo test` does not build them); they
# share one target folder outside boards/, which `kiln flash` (and so the flash tests
# run by `cargo test` below) reuses: build them first.
BOARDS_TARGET="${CARGO_TARGET_DIR:-$PWD/target}/boards"
for fw in boards/nrf52840-dk boards/nucleo-f767zi; do
  echo "== firmware $fw (thumbv7em-none-eabihf): fmt, clippy, build"
  cargo fmt --check --manifest-path "$fw/Cargo.toml"
  cargo clippy --manifest-path "$fw/Cargo.toml" --locked --release \
    --target thumbv7em-none-eabihf --target-dir "$BOARDS_TARGET" -- -D warnings
  cargo build --manifest-path "$fw/Cargo.toml" --locked --release \
    --target thumbv7em-none-eabihf --target-dir "$BOARDS_TARGET"
done
cargo fmt --check --manifest-path boards/kiln-board/Cargo.toml
# `kiln flash` through the probe-rs library (off by default: minutes of build;
# see host-tools/cli/src/flash.rs): lint it so it keeps compiling. Needs no libudev.
echo "== kiln-cli --features probe-rs: clippy"
cargo clippy -p kiln-cli --features probe-rs --all-targets --locked -- -D warnings
# -----------------------------------------------------------------------------------
# -- QEMU emulation (owner: emulate) -------------------------------------------------
# `cargo test` runs both shipped models in QEMU on the emulated Cortex-M4 (mps2-an386)
# and Cortex-M3 (mps2-an385), and a single-op model on the Cortex-M0 (microbit):
# host-tools/cli/tests/emulate.rs; `kiln bench` (per-layer counts of the KWS model) in
# host-tools/cli/tests/bench.rs. The firmware boards/qemu is its own workspace.
echo "== QEMU and the Rust targets for the emulation tests"
rustup target add thumbv7m-none-eabi
if ! command -v qemu-system-arm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y qemu-system-arm >/dev/null ||
      { apt-get update >/dev/null && apt-get install -y qemu-system-arm >/dev/null; }
  else
    echo "error: qemu-system-arm is missing: run \`sudo apt-get install -y qemu-system-arm\`" >&2
    exit 1
  fi
fi
echo "== firmware boards/qemu (thumbv7em-none-eabihf): fmt, clippy"
cargo fmt --check --manifest-path boards/qemu/Cargo.toml
for features in "" "--features profile"; do
  # shellcheck disable=SC2086 # $features is zero or two words
  KILN_MODEL="$PWD/models/kws_ref_model/model.tflite" cargo clippy --locked --release \
    --manifest-path boards/qemu/Cargo.toml --target thumbv7em-none-eabihf $features \
    --target-dir "${CARGO_TARGET_DIR:-$PWD/target}/kiln-emulate/target" -- -D warnings
done
# -----------------------------------------------------------------------------------
echo "== cargo test"
cargo test --workspace --locked
echo "== kiln-runtime for Cortex-M (no_std, no alloc)"
cargo build -p kiln-runtime --locked --target thumbv7em-none-eabihf
cargo build -p kiln-runtime --locked --target thumbv6m-none-eabi

# -- kiln-runtime: no panic path in any kernel (owner: runtime) ---------------------
echo "== kiln-runtime kernels have no panic path (release, Cortex-M)"
runtime/no-panic-check/check.sh
# -----------------------------------------------------------------------------------
echo "== all tests passed"
