#!/usr/bin/env bash
# The benchmark of issue 8 (not a test: it asserts nothing and times nothing): builds
# kiln, then runs `kiln bench` on both shipped int8 models on the emulated Cortex-M4
# (QEMU mps2-an386, -icount shift=0), each next to the TFLM+CMSIS-NN figures committed in
# models/<model>/tflm-cmsis-nn.json, and writes one Markdown report: per model a summary
# table (instructions per inference and per MAC, arena, flash beyond the weights, with
# kiln / TFLM ratios) and a per-layer table. Instruction counts are deterministic, so a
# rerun on the same commit prints the same figures.
#
#   scripts/bench.sh [REPORT.md]      # default: target/bench.md; also printed
#   KILN_BENCH_MACHINE=mps2-an385 scripts/bench.sh   # the Cortex-M3 instead
set -euo pipefail
cd "$(dirname "$0")/.."

report=${1:-target/bench.md}
machine=${KILN_BENCH_MACHINE:-mps2-an386}
cargo build --release --locked -p kiln-cli
kiln=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
mkdir -p "$(dirname "$report")"
{
  echo "# kiln bench on $machine"
  echo
  echo "kiln $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)'), made by scripts/bench.sh"
  for model in kws_ref_model pretrainedResnet_quant; do
    echo
    "$kiln" bench "models/$model/model.tflite" --machine "$machine" \
      --compare "models/$model/tflm-cmsis-nn.json" --markdown
  done
} > "$report.tmp"
mv "$report.tmp" "$report"
cat "$report"
echo "wrote $report" >&2
