"""Golden vectors for kiln's ONNX exporter (tests/export_onnx.rs).

For every tests/fixtures/export/<name>/model.onnx (written by kiln's exporter: run
scripts/onnx/regen_export.sh, which exports them first), checks the model with
onnx.checker.check_model(full_check=True), checks that the batch dimension is the symbol
"N" on every input and output, and writes:

  * input.npy: a batch of 8 NCHW samples (lenet: the first 8 MNIST test digits, pixel/255;
    others: standard normal, seeded from the name);
  * output.npy: onnxruntime's outputs for the whole batch in one run (so the symbolic batch
    is exercised), CPUExecutionProvider, graph optimizations off, one thread;
  * meta.json: versions, shapes, and how far one-sample-at-a-time runs, ORT's optimized
    graph and onnx's pure-NumPy reference evaluator are from output.npy.

Deterministic: the same package versions write the same bytes.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_common import (ONNX_VERSION, ORT_VERSION, ROOT, mnist, op_types, ort_session,  # noqa: E402
                         reference_diff, rng_for, shape_of, write_json)

EXPORT = ROOT / "tests" / "fixtures" / "export"
SAMPLES = 8
REFERENCE_NOTE = (
    "onnx.reference's MaxPool sizes its output wrongly for asymmetric pads (pads [0, 0, 1, 1] "
    "on a 3x3 input gives 2x4 instead of 3x3, checked with onnx 1.23.2), so its difference is "
    "large on a model with such a pool (layers); onnxruntime follows the spec and kiln matches it")


def save_npy(path: Path, arr: np.ndarray):
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    path.write_bytes(buf.getvalue())


def make_input(name: str, shape: list) -> tuple[np.ndarray, str]:
    if name == "lenet":
        images, _ = mnist("test")
        x = (images[:SAMPLES].astype(np.float32) / 255.0).reshape(SAMPLES, 1, 28, 28)
        return x, "first 8 digits of the official MNIST test set (data/mnist-test), pixel/255, NCHW"
    x = rng_for(name).standard_normal([SAMPLES, *shape[1:]]).astype(np.float32)
    return x, f"standard normal, seeded from crc32('{name}'), NCHW"


def main():
    folders = sorted(p.parent for p in EXPORT.glob("*/model.onnx"))
    assert folders, f"no exported models under {EXPORT}; run scripts/onnx/regen_export.sh"
    for folder in folders:
        name = folder.name
        path = folder / "model.onnx"
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert model.producer_name == "kiln", f"{path}: producer {model.producer_name!r}"
        graph = model.graph
        for vi in list(graph.input) + list(graph.output):
            assert shape_of(vi)[0] == "N", f"{path}: {vi.name} batch is {shape_of(vi)[0]!r}"
        assert len(graph.input) == 1, f"{path}: one input expected"
        x, dist = make_input(name, shape_of(graph.input[0]))
        feed = {graph.input[0].name: x}
        sess = ort_session(path)
        names = [o.name for o in sess.get_outputs()]
        outs = [np.asarray(o) for o in sess.run(names, feed)]
        # One sample at a time, ORT's optimized graph and onnx's reference evaluator,
        # for the record (float reordering noise).
        single = [np.concatenate([sess.run([n], {k: v[s:s + 1] for k, v in feed.items()})[0]
                                  for s in range(SAMPLES)]) for n in names]
        optimized = ort_session(path, optimize=True).run(names, feed)
        per_sample = {k: v[:, None] for k, v in feed.items()}
        ref = reference_diff(path, per_sample, [o[:, None] for o in outs])
        assert len(outs) == 1, f"{path}: one output expected"
        save_npy(folder / "input.npy", x)
        save_npy(folder / "output.npy", outs[0])
        write_json(folder / "meta.json", {
            "reference": f"onnxruntime {ORT_VERSION}",
            "execution_provider": "CPUExecutionProvider",
            "graph_optimization_level": "ORT_DISABLE_ALL",
            "threads": 1,
            "onnx": f"onnx {ONNX_VERSION}",
            "checker": "onnx.checker.check_model(full_check=True) passed",
            "producer": f"{model.producer_name} {model.producer_version}",
            "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "ir_version": model.ir_version,
            "operators": op_types(model),
            "samples": SAMPLES,
            "input": {"file": "input.npy", "name": graph.input[0].name,
                      "shape": list(x.shape), "declared": shape_of(graph.input[0]),
                      "distribution": dist},
            "output": {"file": "output.npy", "name": names[0], "shape": list(outs[0].shape),
                       "declared": shape_of(graph.output[0]),
                       "computed": "one run on the whole batch of 8"},
            "one_sample_per_run_max_abs_diff": float(np.max(np.abs(single[0] - outs[0]))),
            "ort_enable_all_max_abs_diff": float(np.max(np.abs(optimized[0] - outs[0]))),
            "onnx_reference_max_abs_diff": ref[0],
            "onnx_reference_note": REFERENCE_NOTE,
        })
        print(f"{name}: {list(x.shape)} -> {list(outs[0].shape)}, ops {op_types(model)}")


if __name__ == "__main__":
    main()
