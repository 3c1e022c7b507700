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
# -- CUDA backend (owner: cuda) ------------------------------------------------------
# No GPU in CI. NVRTC compiles CUDA C on the CPU, so `cargo test` below compiles the
# generated source of both shipped models for sm_87 and sm_90 when $KILN_NVRTC names a
# libnvrtc: the pip wheel nvidia-cuda-nvrtc in a venv under target/ (13 s, 167 MB here).
# boards/jetson (own workspace) is built for x86_64 and, with Debian's cross linker
# (gcc-aarch64-linux-gnu, 31 s to install here), for the Jetson's aarch64-unknown-linux-gnu;
# a crate written by `kiln compile --target cuda` is built too.
T="${CARGO_TARGET_DIR:-$PWD/target}"
NVRTC_VENV="$T/nvrtc-venv"
if [ -z "${KILN_NVRTC:-}" ]; then
  if [ ! -d "$NVRTC_VENV/lib" ] && command -v python3 >/dev/null; then
    echo "== pip install nvidia-cuda-nvrtc into $NVRTC_VENV"
    python3 -m venv "$NVRTC_VENV" && "$NVRTC_VENV/bin/pip" install -q nvidia-cuda-nvrtc==13.5.37 ||
      echo "warning: no NVRTC venv; the NVRTC test will say it skipped" >&2
  fi
  KILN_NVRTC=$(find "$NVRTC_VENV" -name 'libnvrtc.so.1*' ! -name '*builtins*' 2>/dev/null | head -1)
  export KILN_NVRTC
fi
echo "== libnvrtc for the NVRTC test: ${KILN_NVRTC:-none}"
rustup target add aarch64-unknown-linux-gnu
if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y gcc-aarch64-linux-gnu >/dev/null ||
      { apt-get update >/dev/null && apt-get install -y gcc-aarch64-linux-gnu >/dev/null; }
  else
    echo "error: aarch64-linux-gnu-gcc is missing: run \`sudo apt-get install -y gcc-aarch64-linux-gnu\`" >&2
    exit 1
  fi
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
echo "== boards/jetson: fmt, clippy, build (x86_64 and aarch64-unknown-linux-gnu, CUDA 13 and 12.6 bindings), unit tests"
cargo fmt --check --manifest-path boards/jetson/Cargo.toml
for triple in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu; do
  cargo clippy --manifest-path boards/jetson/Cargo.toml --locked --release --target "$triple" \
    --target-dir "$T/boards" -- -D warnings
  cargo build --manifest-path boards/jetson/Cargo.toml --locked --release --target "$triple" \
    --target-dir "$T/boards"
done
# JetPack 6 Jetsons run CUDA 12.6: the same runner with cudarc's 12.6 bindings.
cargo build --manifest-path boards/jetson/Cargo.toml --locked --release \
  --target aarch64-unknown-linux-gnu --no-default-features --features cuda-12060 \
  --target-dir "$T/boards"
# Its output comparison (int8 exact, float32 within 1e-5) needs no GPU.
cargo test --manifest-path boards/jetson/Cargo.toml --locked --release --target-dir "$T/boards"
echo "== a crate from kiln compile --target cuda builds (x86_64 and aarch64)"
cargo run --locked -q -p kiln-cli -- compile models/kws_ref_model/model.tflite \
  --target cuda --batch 8 --out "$T/cuda-kws" >/dev/null
for triple in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu; do
  cargo build --manifest-path "$T/cuda-kws/Cargo.toml" --release --target "$triple" \
    --target-dir "$T/boards"
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
