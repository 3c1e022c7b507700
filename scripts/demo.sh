#!/usr/bin/env bash
# The main job, end to end on a fresh machine with no hardware: builds kiln, checks the
# shipped keyword-spotting and ResNet-8 models, and runs them on the host with kiln's
# int8 kernels on their golden inputs, comparing bit for bit with TensorFlow Lite
# Micro's reference outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "error: cargo is missing: install a stable Rust toolchain with rustup" >&2
  exit 1
fi
cargo build --release --locked -p kiln-cli
kiln=target/release/kiln

for model in kws_ref_model pretrainedResnet_quant; do
  dir=models/$model
  echo
  echo "=== $model"
  "$kiln" check "$dir/model.tflite"
  "$kiln" run "$dir/model.tflite" --input "$dir/golden/input_0.npy" \
    --expect "$dir/golden/output_0.npy" --show 1
done
