#!/usr/bin/env bash
# Benchmark (not a test): kiln train against PyTorch on the CPU, same LeNet-5, same recipe
# (models/lenet/model.toml; scripts/train/pytorch_lenet.py is its PyTorch twin), same batch
# size and thread count, both run back to back in this one script, alternating, so the
# throughput ratio is measured under the same machine load.
#   scripts/train/compare_pytorch.sh [--epochs N] [--threads T] [--seeds "1 2 3"]
#   TORCH_VENV=/path/to/venv scripts/train/compare_pytorch.sh   # reuse a venv with torch
# Creates scripts/train/.venv (git-ignored) with the pinned torch from PyPI (the Linux wheel
# pulls NVIDIA libraries: about 5 GB on disk; it runs on the CPU) and prints a Markdown
# table: test accuracy on data/mnist-test and training images/s (steps only) per seed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
epochs=5 threads=2 seeds="1 2 3" batch=32
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs) epochs="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "compare_pytorch.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
venv="${TORCH_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
cd "$root"
cargo build --release --locked -p kiln-cli
kiln="${CARGO_TARGET_DIR:-$root/target}/release/kiln"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "| seed | kiln float acc | kiln int8 acc | PyTorch float acc | kiln images/s | PyTorch images/s | kiln / PyTorch |"
echo "|---|---|---|---|---|---|---|"
for seed in $seeds; do
  "$kiln" train --model models/lenet/model.toml --data data/mnist-10k --test data/mnist-test \
    --epochs "$epochs" --batch "$batch" --lr 1e-3 --optimizer adam --seed "$seed" \
    --threads "$threads" --quantize int8 --out "$out/kiln-$seed" > "$out/kiln-$seed.log"
  "$venv/bin/python" "$here/pytorch_lenet.py" --data data/mnist-10k --test data/mnist-test \
    --epochs "$epochs" --batch "$batch" --lr 1e-3 --seed "$seed" --threads "$threads" > "$out/torch-$seed.json"
  "$venv/bin/python" - "$out/kiln-$seed.log" "$out/torch-$seed.json" "$seed" <<'PY'
import json, re, sys
log = open(sys.argv[1]).read()
torch = json.load(open(sys.argv[2]))
ips = float(re.search(r"training: [\d.]+ s in steps \((\d+) images/s", log).group(1))
fl = float(re.search(r"float test accuracy: ([\d.]+)% by kiln's executor", log).group(1))
i8 = float(re.search(r"int8 test accuracy:\s+([\d.]+)%", log).group(1))
t_acc = torch["test_accuracy"] * 100
t_ips = torch["images_per_s"]
print(f"| {sys.argv[3]} | {fl:.2f}% | {i8:.2f}% | {t_acc:.2f}% | {ips:,.0f} | {t_ips:,.0f} | {ips / t_ips:.2f} |")
PY
done
echo
echo "($epochs epochs of Adam 1e-3, batch $batch, $threads threads; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
