#!/usr/bin/env bash
# Static device-code figures of a model compiled with `kiln compile --target cuda`,
# without a GPU: compiles DIR/src/model.cu to a CUBIN with NVRTC (as kiln-cuda's
# Session::load does) and counts, per kernel, the SASS instructions and among them the
# 4-way dot products (IDP), global loads (LDG) and indexed constant-bank loads (LDC).
# The kernels' loops over taps and channels are unrolled, so for a thread whose window
# lies inside the input the static count is close to what it executes: a repeatable
# figure for comparing kernel changes where no GPU is at hand (it says nothing about
# memory latency or occupancy).
#
#   scripts/gpu/sass-stats.sh DIR [ARCH]        (ARCH: sm_90 by default)
#
# Needs: libnvrtc ($KILN_NVRTC, or the loader path) and nvdisasm (PyPI:
# nvidia-cuda-nvdisasm; $NVDISASM or the PATH), and cargo for the `cubin` example.
set -euo pipefail
DIR=$(realpath "${1:?usage: scripts/gpu/sass-stats.sh DIR [ARCH]}")
ARCH=${2:-sm_90}
cd "$(dirname "$0")/../.."
SRC="$DIR/src/model.cu"; [ -f "$SRC" ] || SRC="$DIR/model.cu"
[ -f "$SRC" ] || { echo "error: no model.cu in $DIR or $DIR/src" >&2; exit 1; }
NVDISASM=${NVDISASM:-$(command -v nvdisasm || true)}
[ -x "$NVDISASM" ] || { echo "error: nvdisasm not found: pip install nvidia-cuda-nvdisasm and set NVDISASM" >&2; exit 1; }
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
cargo run -q --release -p kiln-cuda --example cubin -- "$SRC" "$ARCH" "$WORK/model.cubin"
"$NVDISASM" -c "$WORK/model.cubin" > "$WORK/model.sass"
awk '
  /^\.text\./ { name = substr($1, 7); sub(/:$/, "", name); names[++k] = name; next }
  name != "" && /\/\*[0-9a-f]+\*\/ / {
    n[name]++
    if ($0 ~ /IDP\.4A/) idp[name]++
    if ($0 ~ / LDG\./) ldg[name]++
    if ($0 ~ / LDC[ .].*c\[0x3\]\[R/) ldc[name]++
  }
  END {
    printf "%-16s %7s %5s %5s %5s\n", "kernel", "instrs", "IDP", "LDG", "LDC[R]"
    for (i = k; i >= 1; i--) {
      m = names[i]; total += n[m]; ti += idp[m]; tl += ldg[m]; tc += ldc[m]
      printf "%-16s %7d %5d %5d %5d\n", m, n[m], idp[m], ldg[m], ldc[m]
    }
    printf "%-16s %7d %5d %5d %5d\n", "total", total, ti, tl, tc
  }' "$WORK/model.sass"
