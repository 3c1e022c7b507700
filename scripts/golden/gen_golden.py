#!/usr/bin/env python3
"""Generate kiln's test models and golden vectors.

  * writes the single-operator models (make_op_models.py) to models/ops/<name>/model.tflite;
  * for every model folder under models/ (ops and the real MLPerf Tiny models), writes
    golden/input_<i>.npy and golden/output_<j>.npy ([N, *tensor_shape], the tensor's dtype)
    with outputs from TensorFlow Lite Micro (the reference), and golden/meta.json with the
    comparison against LiteRT's BUILTIN_REF kernels on the same inputs;
  * writes models/GOLDEN.md with the models where LiteRT disagrees with TFLM.

Deterministic: every random draw is seeded from the model's folder name.
Run through regen.sh (which pins the package versions).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_op_models import SPECS, Ctx, real_range, seed_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
OPS = MODELS / "ops"

OP_SAMPLES = 8
REAL_SAMPLES = 20
# Extra samples (not stored) on which LiteRT is also compared, to catch rare differences.
OP_EXTRA = 200
REAL_EXTRA = 80
CALIB_SAMPLES = 16
FLOAT_RTOL = 1e-5
FLOAT_ATOL = 1e-6

# The real models: folder -> description of the input distribution.
REAL_MODELS = {
    "kws_ref_model": None,          # int8: uniform over [-128, 127]
    "pretrainedResnet_quant": None,  # int8: uniform over [-128, 127]
    # float ResNet-8: raw pixel values in [0, 255], no normalisation. mlcommons/tiny's
    # model_converter.py calibrates with the CIFAR-10 test images as float32 0..255, and
    # the int8 twin's input quantization (scale 1.0, zero point -128) is that range.
    "pretrainedResnet": (0.0, 255.0),
}

TFLM_VERSION = version("tflite-micro")
LITERT_VERSION = version("ai-edge-litert")


# ------------------------------------------------------------------ interpreters
def run_tflm(model: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(model, arena_size=arena_size(model))
    n = inputs[0].shape[0]
    n_out = num_io(model)[1]
    outs = [[] for _ in range(n_out)]
    for s in range(n):
        for i, x in enumerate(inputs):
            it.set_input(np.ascontiguousarray(x[s]), i)
        it.invoke()
        for j in range(n_out):
            outs[j].append(np.array(it.get_output(j), copy=True))
    return [np.stack(o) for o in outs]


def run_litert(model: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=model, num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    ind = it.get_input_details()
    outd = it.get_output_details()
    outs = [[] for _ in outd]
    for s in range(inputs[0].shape[0]):
        for d, x in zip(ind, inputs):
            it.set_tensor(d["index"], np.ascontiguousarray(x[s]))
        it.invoke()
        for j, d in enumerate(outd):
            outs[j].append(np.array(it.get_tensor(d["index"]), copy=True))
    return [np.stack(o) for o in outs]


def tflm_io_details(model: bytes):
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(model, arena_size=arena_size(model))
    return [it.get_input_details(i) for i in range(num_io(model)[0])]


def num_io(model: bytes) -> tuple[int, int]:
    from tflite.Model import Model

    sg = Model.GetRootAs(model, 0).Subgraphs(0)
    return sg.InputsLength(), sg.OutputsLength()


def arena_size(model: bytes) -> int:
    # TFLM's default (10x the model size) is too small for tiny models with big tensors.
    return max(10 * len(model), 4 << 20)


# ------------------------------------------------------------------ op models
def dequant(x, q):
    return ((x.astype(np.float64) - q[1]) * q[0]).astype(np.float32)


def random_inputs(ctx: Ctx, n: int, rng) -> tuple[list[np.ndarray], list[str]]:
    xs, desc = [], []
    for i in ctx.inputs:
        shape = [n] + i["shape"]
        if i["dtype"] == "int8":
            xs.append(rng.integers(-128, 128, shape, dtype=np.int64).astype(np.int8))
            desc.append("int8 uniform over [-128, 127]")
        else:
            lo, hi = real_range(i["q"])
            xs.append(rng.uniform(lo, hi, shape).astype(np.float32))
            desc.append(f"float32 uniform over [{lo:.6g}, {hi:.6g}]")
    return xs, desc


def choose_out_q(p: np.ndarray, act: str, mode):
    lo, hi = float(p.min()), float(p.max())
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if act == "RELU6":
        hi = max(hi, 6.0)
    if act == "RELU_N1_TO_1":
        lo, hi = min(lo, -1.0), max(hi, 1.0)
    if mode == "sym":
        m = max(-lo, hi)
        return (float(np.float32(m / 127.0)), 0)
    if mode == "relu":
        return (float(np.float32(hi / 255.0)), -128)
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return (scale, zp)


def calibrate(spec, folder_i8: str):
    """Pick the int8 output quantization (and, for RELU6/RELU_N1_TO_1 ops with weights,
    a weight-scale factor k so the pre-activation range reaches past the clamp)."""
    c = Ctx("calib", folder_i8)
    spec.fn(c)
    model = c.finish()
    rng = np.random.default_rng(seed_of(folder_i8) + 1)
    xs = []
    for i in c.inputs:
        q = i["q"]
        xi = rng.integers(-128, 128, [CALIB_SAMPLES] + i["shape"]).astype(np.int8)
        xs.append(dequant(xi, q))
    p = run_tflm(model, xs)[0].astype(np.float64)
    k = 1.0
    if c.has_weights and spec.act in ("RELU6", "RELU_N1_TO_1"):
        # Scale so the clamps are hit: RELU6 - 6 is the 95th percentile of the
        # pre-activation; RELU_N1_TO_1 - 1 is the 90th percentile of its magnitude.
        if spec.act == "RELU6":
            k = float(np.float32(6.0 / np.percentile(p, 95)))
        else:
            k = float(np.float32(1.0 / np.percentile(np.abs(p), 90)))
        p = p * k
    return k, choose_out_q(p, spec.act, spec.out_q)


def build_op_models():
    built = []  # (folder, model bytes, inputs, input descriptions)
    for spec in SPECS:
        folder_i8 = spec.folder("i8")
        k, q = (1.0, None)
        if spec.calibrate:
            k, q = calibrate(spec, folder_i8)
        for dt in ("i8", "f32"):
            if not getattr(spec, dt):
                continue
            folder = spec.folder(dt)
            c = Ctx(dt, folder_i8, k=k, out_q=q)
            spec.fn(c)
            model = c.finish()
            rng = np.random.default_rng(seed_of(folder))
            xs, desc = random_inputs(c, OP_SAMPLES + OP_EXTRA, rng)
            built.append((f"ops/{folder}", model, xs, desc, OP_SAMPLES))
    return built


def real_model_inputs(name: str, model: bytes):
    rng = np.random.default_rng(seed_of(name))
    xs, desc = [], []
    for d in tflm_io_details(model):
        shape = [REAL_SAMPLES + REAL_EXTRA] + [int(v) for v in d["shape"]]
        if d["dtype"] == np.int8:
            xs.append(rng.integers(-128, 128, shape, dtype=np.int64).astype(np.int8))
            desc.append("int8 uniform over [-128, 127]")
        else:
            lo, hi = REAL_MODELS[name]
            xs.append(rng.uniform(lo, hi, shape).astype(np.float32))
            desc.append(f"float32 uniform over [{lo:g}, {hi:g}] (raw pixel values)")
    return xs, desc


# ------------------------------------------------------------------ comparison
def compare(ref: list[np.ndarray], other: list[np.ndarray]):
    mism, maxd = 0, 0.0
    for a, b in zip(ref, other):
        if a.shape != b.shape:
            return dict(mismatched_elements=int(a.size), max_abs_diff=float("inf"), shape_mismatch=True)
        if a.dtype.kind == "f":
            d = np.abs(a.astype(np.float64) - b.astype(np.float64))
            tol = FLOAT_ATOL + FLOAT_RTOL * np.abs(a.astype(np.float64))
            mism += int((d > tol).sum())
        else:
            d = np.abs(a.astype(np.int64) - b.astype(np.int64))
            mism += int((d != 0).sum())
        maxd = max(maxd, float(d.max()) if d.size else 0.0)
    if all(a.dtype.kind != "f" for a in ref):
        maxd = int(maxd)
    return dict(mismatched_elements=mism, max_abs_diff=maxd)


def sanity(outputs: list[np.ndarray]) -> list[str]:
    notes = []
    for j, o in enumerate(outputs):
        u = np.unique(o)
        if u.size <= 2:
            notes.append(f"output_{j}: only {u.size} distinct values")
        if o.dtype == np.int8:
            sat = float(np.mean((o == -128) | (o == 127)))
            if sat > 0.5:
                notes.append(f"output_{j}: {sat:.0%} saturated")
    return notes


def write_golden(rel: str, model: bytes, xs_all, desc, n: int, write_model: bool):
    """xs_all: the n golden samples followed by the extra (unstored) comparison samples."""
    d = MODELS / rel
    g = d / "golden"
    g.mkdir(parents=True, exist_ok=True)
    if write_model:
        (d / "model.tflite").write_bytes(model)
    for old in g.glob("*.npy"):
        old.unlink()
    outs_all = run_tflm(model, xs_all)
    xs = [x[:n] for x in xs_all]
    outs = [o[:n] for o in outs_all]
    for i, x in enumerate(xs):
        np.save(g / f"input_{i}.npy", x)
    for j, o in enumerate(outs):
        np.save(g / f"output_{j}.npy", o)
    try:
        lo_all = run_litert(model, xs_all)
        cmp = compare(outs, [o[:n] for o in lo_all])
        ext = compare(outs_all, lo_all)
        err = None
    except Exception as e:  # LiteRT refused the model
        cmp = dict(mismatched_elements=None, max_abs_diff=None)
        ext = dict(cmp)
        err = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
    is_float = any(o.dtype.kind == "f" for o in outs)
    litert = {
        "version": f"ai-edge-litert {LITERT_VERSION}",
        "op_resolver": "BUILTIN_REF",
        "agrees": bool(err is None and cmp["mismatched_elements"] == 0),
        "mismatched_elements": cmp["mismatched_elements"],
        "max_abs_diff": cmp["max_abs_diff"],
        "comparison": (f"float: |tflm - litert| <= {FLOAT_ATOL:g} + {FLOAT_RTOL:g}*|tflm|"
                       if is_float else "exact"),
        # The same comparison on the golden samples plus more random samples of the same
        # distribution (the extra inputs are not stored).
        "extended": {
            "samples": int(xs_all[0].shape[0]),
            "agrees": bool(err is None and ext["mismatched_elements"] == 0),
            "mismatched_elements": ext["mismatched_elements"],
            "max_abs_diff": ext["max_abs_diff"],
        },
    }
    if err:
        litert["error"] = err
    meta = {
        "reference": f"tflite-micro {TFLM_VERSION}",
        "samples": int(xs[0].shape[0]),
        "inputs": [{"file": f"input_{i}.npy", "dtype": str(x.dtype), "shape": list(x.shape),
                    "distribution": dsc} for i, (x, dsc) in enumerate(zip(xs, desc))],
        "outputs": [{"file": f"output_{j}.npy", "dtype": str(o.dtype), "shape": list(o.shape)}
                    for j, o in enumerate(outs)],
        "litert": litert,
    }
    (g / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta, sanity(outs)


def main():
    OPS.mkdir(parents=True, exist_ok=True)
    jobs = []
    for name in REAL_MODELS:
        model = (MODELS / name / "model.tflite").read_bytes()
        xs, desc = real_model_inputs(name, model)
        jobs.append((name, model, xs, desc, REAL_SAMPLES, False))
    built = build_op_models()
    folders = {b[0] for b in built}
    if len(folders) != len(built):
        raise SystemExit("duplicate op model folder names")
    # Drop op folders that are no longer generated.
    for old in OPS.iterdir():
        if old.is_dir() and f"ops/{old.name}" not in folders:
            for f in sorted(old.rglob("*"), reverse=True):
                f.unlink() if f.is_file() else f.rmdir()
            old.rmdir()
    jobs += [(rel, m, xs, desc, n, True) for rel, m, xs, desc, n in built]

    rows, disagree, warns = [], [], []
    for rel, model, xs, desc, n, write_model in jobs:
        meta, notes = write_golden(rel, model, xs, desc, n, write_model)
        lt = meta["litert"]
        rows.append((rel, lt))
        ex = lt["extended"]
        status = "agree" if lt["agrees"] else (
            "LiteRT error" if "error" in lt else
            f"DIFF {lt['mismatched_elements']} el, max {lt['max_abs_diff']:.6g}")
        if "error" not in lt and not ex["agrees"]:
            status += (f" (on {ex['samples']} samples: DIFF {ex['mismatched_elements']} el, "
                       f"max {ex['max_abs_diff']:.6g})")
        print(f"{rel:75s} {status}" + (f"   [{'; '.join(notes)}]" if notes else ""))
        if not lt["agrees"]:
            disagree.append((rel, meta))
        if notes:
            warns.append((rel, notes))

    write_summary(rows, disagree, warns)
    ext = [(rel, lt) for rel, lt in rows if "error" not in lt and not lt["extended"]["agrees"]]
    print()
    print(f"{len(rows)} models ({len(built)} op models); LiteRT disagrees on {len(disagree)}:")
    print(f"  {'model':70s} {'elements':>9s} {'of':>8s} {'max diff':>10s}")
    for rel, meta in disagree:
        lt = meta["litert"]
        total = sum(int(np.prod(o["shape"])) for o in meta["outputs"])
        if "error" in lt:
            print(f"  {rel:70s} LiteRT error: {lt['error']}")
        else:
            print(f"  {rel:70s} {lt['mismatched_elements']:9d} {total:8d} {lt['max_abs_diff']:10.6g}")
    print(f"on golden + extra samples ({OP_SAMPLES}+{OP_EXTRA} per op model, "
          f"{REAL_SAMPLES}+{REAL_EXTRA} per real model) LiteRT disagrees on {len(ext)}:")
    for rel, lt in ext:
        e = lt["extended"]
        print(f"  {rel:70s} {e['mismatched_elements']:9d} of {e['samples']} samples, "
              f"max {e['max_abs_diff']:.6g}")
    if warns:
        print(f"sanity notes on {len(warns)} models (see above)")


def write_summary(rows, disagree, warns):
    lines = [
        "# Golden vectors: TFLM vs LiteRT",
        "",
        "Generated by `scripts/golden/regen.sh` (do not edit by hand).",
        "",
        f"Reference: tflite-micro {TFLM_VERSION} (its Python interpreter, reference kernels). "
        f"Cross-check: ai-edge-litert {LITERT_VERSION} with `OpResolverType.BUILTIN_REF`, same inputs. "
        "int8 outputs are compared exactly; float32 outputs with "
        f"|tflm - litert| <= {FLOAT_ATOL:g} + {FLOAT_RTOL:g}*|tflm|. Where the two differ, the "
        "golden outputs are TFLM's.",
        "",
        f"{len(rows)} models, LiteRT agrees on {len(rows) - len(disagree)}, "
        f"disagrees on {len(disagree)}.",
        "",
    ]
    if disagree:
        lines += ["| model | mismatched elements | of | max abs diff |", "|---|---:|---:|---:|"]
        for rel, meta in disagree:
            lt = meta["litert"]
            total = sum(int(np.prod(o["shape"])) for o in meta["outputs"])
            if "error" in lt:
                lines.append(f"| `{rel}` | LiteRT error: {lt['error']} | {total} | |")
            else:
                lines.append(f"| `{rel}` | {lt['mismatched_elements']} | {total} | "
                             f"{lt['max_abs_diff']:.6g} |")
        lines.append("")
    ext = [(rel, lt["extended"]) for rel, lt in rows
           if "error" not in lt and not lt["extended"]["agrees"]]
    lines += [
        "## Extended comparison",
        "",
        f"The same comparison on more random inputs of the same distributions ({OP_SAMPLES} golden "
        f"+ {OP_EXTRA} extra samples per op model, {REAL_SAMPLES} + {REAL_EXTRA} per real model; "
        "the extra inputs are not stored, `meta.json` has the counts under `litert.extended`), "
        f"to catch rare differences. LiteRT disagrees with TFLM on {len(ext)} models:",
        "",
    ]
    if ext:
        lines += [
            "Cause, checked by hand for these versions: LiteRT's int8 FULLY_CONNECTED "
            "requantizes with single rounding, `(acc * M + 2^(s-1)) >> s`, where TFLM uses "
            "gemmlowp's double rounding (SaturatingRoundingDoublingHighMul, then "
            "RoundingDivideByPOT); a numpy re-implementation of each matches its interpreter "
            "exactly on 2000 samples. The results differ by 1 in rare cases (about 0.1-0.5% of FC outputs). "
            "In pretrainedResnet_quant the first differing tensor is the FULLY_CONNECTED output "
            "(1 LSB), which SOFTMAX then amplifies. int8 DIV differs too: LiteRT refuses a "
            "divisor equal to its zero point (TFLM divides it, and kiln follows TFLM), and a few "
            "quotients differ by 1 (not analysed further). CONV_2D, DEPTHWISE_CONV_2D and every "
            "other op agree exactly.",
            "",
        ]
        lines += ["| model | samples | mismatched elements | max abs diff |", "|---|---:|---:|---:|"]
        for rel, e in ext:
            lines.append(f"| `{rel}` | {e['samples']} | {e['mismatched_elements']} | "
                         f"{e['max_abs_diff']:.6g} |")
        lines.append("")
    if warns:
        lines += ["## Sanity notes", "",
                  "Outputs with many saturated (-128/127) or few distinct values. Expected here: "
                  "softmax outputs of the real models and of a peaked softmax (most probabilities "
                  "round to 0, i.e. -128), RELU outputs with zero point -128, PAD with zero point "
                  "-128 (the padding is -128).", ""]
        for rel, notes in warns:
            lines.append(f"- `{rel}`: {'; '.join(notes)}")
        lines.append("")
    lines += ["## All models", ""]
    for rel, lt in rows:
        lines.append(f"- `{rel}`: {'agrees' if lt['agrees'] else 'differs'}")
    lines.append("")
    (MODELS / "GOLDEN.md").write_text("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
