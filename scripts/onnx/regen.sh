#!/usr/bin/env bash
# Regenerate kiln's ONNX test models, golden vectors and bad-model fixtures:
#   scripts/onnx/regen.sh            models/onnx/** and tests/fixtures/onnx/** (keeps the
#                                    committed trained models/onnx/lenet_mnist)
#   scripts/onnx/regen.sh --train    also retrains models/onnx/lenet_mnist (a few minutes)
#   ONNX_VENV=/path/to/venv scripts/onnx/regen.sh
# Creates a venv (scripts/onnx/.venv, git-ignored), installs the pinned requirements and runs
# the generators. Deterministic: the same package versions write the same bytes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${ONNX_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

train=0
for arg in "$@"; do
  case "$arg" in
    --train) train=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "regen.sh: unknown argument '$arg' (only --train)" >&2; exit 2 ;;
  esac
done

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
cd "$root"
# One BLAS thread: numpy's float results (training, weight folding) do not depend on the
# machine's core count.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 PYTHONHASHSEED=0
if [ "$train" = 1 ]; then
  "$venv/bin/python" "$here/train_lenet.py"
fi
"$venv/bin/python" "$here/make_models.py"
"$venv/bin/python" "$here/make_bad_models.py"
