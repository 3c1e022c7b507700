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
rustup component add clippy rustfmt

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
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
