#!/usr/bin/env bash
# Regenerate the ONNX export golden test (tests/export_onnx.rs): kiln exports the test
# models into tests/fixtures/export/<name>/model.onnx (KILN_BLESS=1), then onnxruntime
# computes their golden outputs (scripts/onnx/make_export_goldens.py, which also runs
# onnx.checker.check_model(full_check=True)). Run after a deliberate exporter change:
#   scripts/onnx/regen_export.sh
#   ONNX_VENV=/path/to/venv scripts/onnx/regen_export.sh
# Uses the same venv and pinned requirements as regen.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${ONNX_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
cd "$root"
KILN_BLESS=1 cargo test --quiet -p kiln-tests --test export_onnx exports_equal_the_committed_models
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 PYTHONHASHSEED=0
"$venv/bin/python" "$here/make_export_goldens.py"
cargo test --quiet -p kiln-tests --test export_onnx
