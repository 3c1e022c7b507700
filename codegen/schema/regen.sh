#!/usr/bin/env bash
# Regenerates src/import/tflite/generated.rs from the official TFLite schema.
# Input: schema/tflite_schema.fbs, copied unchanged from TensorFlow Lite Micro
# (tensorflow/compiler/mlir/lite/schema/schema.fbs, commit 90b983c, Apache-2.0).
# planus (cargo install planus-cli --version 1.3.0) rejects the `(deprecated)` attribute on
# enum values and union members, so it is stripped on the fly.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -E 's/ \(deprecated\)//' schema/tflite_schema.fbs > "$tmp/tflite_schema.fbs"
planus rust -o "$tmp/generated.rs" "$tmp/tflite_schema.fbs"
# planus derives serde traits on the owned types; kiln does not serialize them, so the
# derives are dropped rather than compiling serde for 70k lines of generated code.
sed -E -e '/^ *::serde::(Serialize|Deserialize),$/d' -e 's/, ::serde::Serialize, ::serde::Deserialize//' \
  -e 's#File `/tmp/[^/]*/tflite_schema.fbs`#File `schema/tflite_schema.fbs`#' \
  "$tmp/generated.rs" > src/import/tflite/generated.rs
