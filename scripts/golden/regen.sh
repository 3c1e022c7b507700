#!/usr/bin/env bash
# Regenerate kiln's single-op test models and all golden vectors:
#   scripts/golden/regen.sh            (venv in scripts/golden/.venv, git-ignored)
#   GOLDEN_VENV=/path/to/venv scripts/golden/regen.sh
# Creates a venv, installs the pinned requirements, runs gen_golden.py. Deterministic:
# the same package versions write the same bytes on every run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${GOLDEN_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
cd "$root"
PYTHONPATH="$here" "$venv/bin/python" "$here/make_bad_models.py"
exec "$venv/bin/python" "$here/gen_golden.py" "$@"
