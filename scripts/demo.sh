#!/usr/bin/env bash
# The main job, end to end on a fresh machine with no hardware: builds kiln, checks the
# shipped keyword-spotting and ResNet-8 models, runs them on the host with kiln's int8
# kernels on their golden inputs (compared bit for bit with TensorFlow Lite Micro's
# reference outputs), compiles each into a no_std crate for a Cortex-M4 and reports its
# arena, weights and code size measured on that target, then builds QEMU firmware with
# each model and runs it on an emulated Cortex-M4 (mps2-an386): outputs, pass/fail
# against the golden outputs, instructions per inference, flash and RAM.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "error: cargo is missing: install a stable Rust toolchain with rustup" >&2
  exit 1
fi
if command -v rustup >/dev/null; then
  rustup target add thumbv7em-none-eabihf
  rustup component add llvm-tools
else
  echo "note: rustup is missing, so the Cortex-M4 code size cannot be measured" >&2
fi
if ! command -v qemu-system-arm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y qemu-system-arm >/dev/null ||
      { apt-get update >/dev/null && apt-get install -y qemu-system-arm >/dev/null; }
  else
    echo "error: qemu-system-arm is missing: run \`sudo apt-get install -y qemu-system-arm\`" >&2
    exit 1
  fi
fi
cargo build --release --locked -p kiln-cli
target="${CARGO_TARGET_DIR:-target}"
kiln=$target/release/kiln
out=target/demo

for model in kws_ref_model pretrainedResnet_quant; do
  dir=models/$model
  echo
  echo "=== $model"
  "$kiln" check "$dir/model.tflite"
  "$kiln" run "$dir/model.tflite" --input "$dir/golden/input_0.npy" \
    --expect "$dir/golden/output_0.npy" --show 1
  echo
  echo "--- $model compiled for cortex-m4 (crate in $out/$model)"
  "$kiln" compile "$dir/model.tflite" --target cortex-m4 --out "$out/$model" --name "$model" | tail -n 6
  echo
  echo "--- $model on an emulated Cortex-M4 (QEMU mps2-an386), 20 golden inputs"
  "$kiln" emulate "$dir/model.tflite" --machine mps2-an386 --target-dir "$target/kiln-emulate"
done
