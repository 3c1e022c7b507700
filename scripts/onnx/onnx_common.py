"""Shared helpers for kiln's ONNX test-model generators (scripts/onnx/*.py).

  * `Graph`: a small builder over onnx.helper (inputs, initializers, nodes; output shapes
    filled by ONNX shape inference, checked with the full checker);
  * `write_model_and_golden`: writes models/onnx/<name>/model.onnx and golden/ (inputs with a
    leading samples axis, outputs from onnxruntime's CPU execution provider, meta.json);
  * MNIST IDX loading from the repository's data/ folder.

Deterministic: every random draw is seeded from a name (crc32), onnxruntime runs with graph
optimizations off and one thread, and files are written in a fixed order.
"""

from __future__ import annotations

import gzip
import json
import zlib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models" / "onnx"
FIXTURES = ROOT / "tests" / "fixtures" / "onnx"
DATA = ROOT / "data"

SAMPLES = 8
PRODUCER = "kiln scripts/onnx"
ORT_VERSION = version("onnxruntime")
ONNX_VERSION = version("onnx")
NUMPY_VERSION = version("numpy")

NP_TO_ONNX = {
    np.dtype("float32"): TensorProto.FLOAT,
    np.dtype("int64"): TensorProto.INT64,
    np.dtype("int32"): TensorProto.INT32,
    np.dtype("int8"): TensorProto.INT8,
    np.dtype("uint8"): TensorProto.UINT8,
    np.dtype("bool"): TensorProto.BOOL,
}

ROUNDING_NOTE = (
    "Golden outputs are onnxruntime's with graph optimizations off. QDQ models then run as "
    "written: float Conv/Gemm/... on dequantized values, QuantizeLinear rounding half to even "
    "and saturating. QOperator models run ORT's integer kernels (QLinearConv, QLinearMatMul: "
    "exact int32 accumulation, requantization by a float multiplier, round to nearest even). "
    "TFLite/TFLM-style kernels (and kiln's int8 kernels) requantize with a fixed-point "
    "multiplier and shift (gemmlowp rounding), so an int8 value may differ from these goldens "
    "by 1 LSB (one output scale after dequantization), more after a Softmax; compare with a "
    "tolerance of 1 LSB. 'ort_enable_all' below counts how often ORT's own fused integer "
    "kernels (QDQ groups fused into QLinearConv etc.) differ from the golden."
)


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(seed_of(name))


# ------------------------------------------------------------------ random weights
def he_normal(rng, shape, fan_in) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def small_bias(rng, n, scale=0.1) -> np.ndarray:
    return (rng.standard_normal(n) * scale).astype(np.float32)


def bn_params(rng, c):
    """BatchNormalization parameters with non-trivial statistics (scale, bias, mean, var)."""
    scale = rng.uniform(0.5, 1.5, c).astype(np.float32)
    bias = (rng.standard_normal(c) * 0.2).astype(np.float32)
    mean = (rng.standard_normal(c) * 0.3).astype(np.float32)
    var = rng.uniform(0.5, 2.0, c).astype(np.float32)
    return scale, bias, mean, var


# ------------------------------------------------------------------ input distributions
def draw(rng, dist, shape) -> np.ndarray:
    """dist: ("normal", std) | ("uniform", lo, hi) | ("abs_uniform", lo, hi) (random sign)."""
    kind = dist[0]
    if kind == "normal":
        x = rng.standard_normal(shape) * dist[1]
    elif kind == "uniform":
        x = rng.uniform(dist[1], dist[2], shape)
    elif kind == "abs_uniform":
        x = rng.uniform(dist[1], dist[2], shape) * rng.choice([-1.0, 1.0], shape)
    else:
        raise ValueError(dist)
    return x.astype(np.float32)


def describe(dist) -> str:
    kind = dist[0]
    if kind == "normal":
        return "standard normal" if dist[1] == 1 else f"normal, mean 0, std {dist[1]:g}"
    if kind == "uniform":
        return f"uniform over [{dist[1]:g}, {dist[2]:g})"
    if kind == "abs_uniform":
        return f"|x| uniform over [{dist[1]:g}, {dist[2]:g}), random sign (kept away from 0)"
    raise ValueError(dist)


# ------------------------------------------------------------------ graph builder
class Graph:
    """Builds one ONNX graph; names are explicit so that golden files stay stable."""

    def __init__(self, name: str, opset: int = 13):
        self.name = name
        self.opset = opset
        self.rng = rng_for(name + "/weights")
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[str] = []
        self.dists: dict[str, tuple] = {}
        self._count: dict[str, int] = {}
        self.output_shapes: dict[str, list] = {}

    def input(self, name, shape, dist=("normal", 1.0), dtype=TensorProto.FLOAT):
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        self.dists[name] = dist
        return name

    def const(self, name, arr) -> str:
        arr = np.asarray(arr)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def _auto(self, op):
        i = self._count.get(op, 0)
        self._count[op] = i + 1
        return f"{op.lower()}_{i}"

    def node(self, op, inputs, outputs=None, name=None, n_out=1, domain=None, **attrs):
        name = name or self._auto(op)
        if outputs is None:
            outputs = [name] if n_out == 1 else [f"{name}_out{k}" for k in range(n_out)]
        elif isinstance(outputs, str):
            outputs = [outputs]
        self.nodes.append(helper.make_node(op, list(inputs), outputs, name=name,
                                           domain=domain, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def output(self, *names, shape=None):
        """Marks graph outputs; shape overrides shape inference (which cannot always see
        through shape-computing sub-graphs)."""
        self.outputs.extend(names)
        if shape is not None:
            self.output_shapes.update({n: shape for n in names})

    # Common layers in PyTorch's layout (NCHW, OIHW weights, Linear as Gemm transB=1).
    def conv(self, x, cin, cout, k, stride=1, pads=None, dilation=1, group=1, bias=True,
             name=None, auto_pad=None):
        kh, kw = (k, k) if isinstance(k, int) else k
        name = name or self._auto("Conv")
        w = self.const(f"{name}.weight",
                       he_normal(self.rng, (cout, cin // group, kh, kw), cin // group * kh * kw))
        ins = [x, w]
        if bias:
            ins.append(self.const(f"{name}.bias", small_bias(self.rng, cout)))
        attrs = dict(kernel_shape=[kh, kw], strides=[stride, stride] if isinstance(stride, int)
                     else list(stride), dilations=[dilation, dilation], group=group)
        if auto_pad is not None:
            attrs["auto_pad"] = auto_pad
        else:
            attrs["pads"] = list(pads) if pads is not None else [0, 0, 0, 0]
        return self.node("Conv", ins, name=name, **attrs)

    def bn(self, x, c, name=None, epsilon=1e-5):
        name = name or self._auto("BatchNormalization")
        s, b, m, v = bn_params(self.rng, c)
        ins = [x, self.const(f"{name}.weight", s), self.const(f"{name}.bias", b),
               self.const(f"{name}.running_mean", m), self.const(f"{name}.running_var", v)]
        return self.node("BatchNormalization", ins, name=name, epsilon=epsilon)

    def gemm(self, x, fin, fout, name=None, relu_gain=True):
        name = name or self._auto("Gemm")
        w = he_normal(self.rng, (fout, fin), fin if relu_gain else 2 * fin)
        ins = [x, self.const(f"{name}.weight", w), self.const(f"{name}.bias",
                                                               small_bias(self.rng, fout))]
        return self.node("Gemm", ins, name=name, alpha=1.0, beta=1.0, transB=1)

    def relu(self, x, name=None):
        return self.node("Relu", [x], name=name)

    def model(self, ir_version=None, opsets=None) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None)
                for n in self.outputs]
        graph = helper.make_graph(self.nodes, self.name.replace("/", "_"), self.inputs, outs,
                                  initializer=self.inits)
        opset_imports = opsets or [helper.make_opsetid("", self.opset)]
        m = helper.make_model(graph, opset_imports=opset_imports, producer_name=PRODUCER,
                              producer_version="1")
        m.ir_version = ir_version or helper.find_min_ir_version_for(opset_imports)
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
        by_name = {o.name: o for o in inferred.graph.output}
        del m.graph.output[:]
        for n in self.outputs:
            o = by_name[n]
            if n in self.output_shapes:
                o = helper.make_tensor_value_info(n, o.type.tensor_type.elem_type,
                                                  self.output_shapes[n])
            tt = o.type.tensor_type
            if (not tt.HasField("shape") or tt.elem_type == TensorProto.UNDEFINED
                    or any(d.dim_value <= 0 for d in tt.shape.dim)):
                raise RuntimeError(f"{self.name}: output {n} has no static shape: {o}")
            m.graph.output.append(o)
        onnx.checker.check_model(m, full_check=True)
        return m


# ------------------------------------------------------------------ onnxruntime
def ort_session(model_path: Path, optimize=False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])


def run_ort(model_path: Path, inputs: dict[str, np.ndarray], optimize=False):
    """Runs each sample separately (the models have a fixed batch of 1); returns
    (output names, [N, *shape] arrays)."""
    sess = ort_session(model_path, optimize)
    names = [o.name for o in sess.get_outputs()]
    n = next(iter(inputs.values())).shape[0]
    outs = [[] for _ in names]
    for s in range(n):
        res = sess.run(names, {k: v[s] for k, v in inputs.items()})
        for j, r in enumerate(res):
            outs[j].append(np.asarray(r))
    return names, [np.stack(o) for o in outs]


def op_types(model: onnx.ModelProto) -> list[str]:
    ops = set()
    for n in model.graph.node:
        ops.add(f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type)
    return sorted(ops)


def dtype_name(t: int) -> str:
    return helper.tensor_dtype_to_np_dtype(t).name


def shape_of(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in vi.type.tensor_type.shape.dim]


def write_json(path: Path, obj):
    path.write_text(json.dumps(obj, indent=2) + "\n")


def save_model(model: onnx.ModelProto, path: Path, external_data=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data:
        data = path.parent / (path.name + ".data")
        if data.exists():
            data.unlink()  # onnx appends to an existing external data file
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data.name,
                        size_threshold=0, convert_attribute=False)
    else:
        path.write_bytes(model.SerializeToString())


def write_golden(folder: Path, model_path: Path, inputs: dict[str, np.ndarray],
                 distributions: dict[str, str], description: str, extra: dict | None = None,
                 cross_check=True):
    """Writes folder/golden/{input_i,output_j}.npy and meta.json for the model at model_path
    (already saved). Inputs are [N, *shape] in the order of the graph's inputs."""
    model = onnx.load(str(model_path), load_external_data=False)
    golden = folder / "golden"
    golden.mkdir(parents=True, exist_ok=True)
    for old in golden.glob("*.npy"):
        old.unlink()
    graph_inputs = [i for i in model.graph.input
                    if i.name not in {t.name for t in model.graph.initializer}]
    assert [i.name for i in graph_inputs] == list(inputs), (list(inputs), graph_inputs)
    names, outs = run_ort(model_path, inputs)
    meta_in, meta_out = [], []
    for i, vi in enumerate(graph_inputs):
        x = inputs[vi.name]
        assert list(x.shape[1:]) == shape_of(vi), (vi.name, x.shape, shape_of(vi))
        np.save(golden / f"input_{i}.npy", x)
        meta_in.append(dict(file=f"input_{i}.npy", name=vi.name, dtype=x.dtype.name,
                            shape=list(x.shape), tensor_shape=shape_of(vi),
                            distribution=distributions[vi.name]))
    by_name = {o.name: o for o in model.graph.output}
    for j, (n, y) in enumerate(zip(names, outs)):
        vi = by_name[n]
        assert list(y.shape[1:]) == shape_of(vi), (n, y.shape, shape_of(vi))
        assert np.all(np.isfinite(y)) if y.dtype.kind == "f" else True, n
        np.save(golden / f"output_{j}.npy", y)
        meta_out.append(dict(file=f"output_{j}.npy", name=n, dtype=y.dtype.name,
                             shape=list(y.shape), tensor_shape=shape_of(vi)))
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    meta = dict(
        reference=f"onnxruntime {ORT_VERSION}",
        execution_provider="CPUExecutionProvider",
        graph_optimization_level="ORT_DISABLE_ALL",
        threads=1,
        onnx=f"onnx {ONNX_VERSION}",
        opset=opsets.get("ai.onnx"),
        opset_imports=opsets,
        ir_version=model.ir_version,
        samples=int(next(iter(inputs.values())).shape[0]),
        description=description,
        operators=op_types(model),
        inputs=meta_in,
        outputs=meta_out,
    )
    if cross_check:
        # Same inputs with all of onnxruntime's graph optimizations (fusions, constant
        # folding, layout changes): how far a differently-fused float computation lands.
        _, outs2 = run_ort(model_path, inputs, optimize=True)
        diffs = [float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                 for a, b in zip(outs, outs2)]
        meta["ort_enable_all_max_abs_diff"] = diffs
    meta["onnx_reference_max_abs_diff"] = reference_diff(model_path, inputs, outs)
    if extra:
        meta.update(extra)
    write_json(golden / "meta.json", meta)
    return names, outs


def _test_mode_batchnorm():
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        """Inference-mode BatchNormalization. onnx's own BatchNormalization_9 (opsets 9-13)
        fills in the schema's default momentum and then normalizes with batch statistics,
        which is wrong for inference; onnxruntime follows the spec."""

        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None,
                 training_mode=None):
            shape = (-1,) + (1,) * (x.ndim - 2)
            eps = 1e-5 if epsilon is None else epsilon
            y = (scale.reshape(shape) * (x - mean.reshape(shape)) /
                 np.sqrt(var.reshape(shape) + eps) + bias.reshape(shape))
            return (y.astype(x.dtype),)

    return BatchNormalization


def _latest_qdq():
    """onnx's reference has QuantizeLinear/DequantizeLinear from opset 19 on only; the
    opset-13 semantics used here (int8/uint8, per-tensor or per-axis) are the same."""
    import onnx.reference.ops.op_dequantize_linear as dq
    import onnx.reference.ops.op_quantize_linear as q

    latest_dq = max((n for n in dir(dq) if n.startswith("DequantizeLinear_")),
                    key=lambda n: int(n.rsplit("_", 1)[1]))
    latest_q = max((n for n in dir(q) if n.startswith("QuantizeLinear_")),
                   key=lambda n: int(n.rsplit("_", 1)[1]))
    DequantizeLinear = type("DequantizeLinear", (getattr(dq, latest_dq),), {"op_domain": ""})
    QuantizeLinear = type("QuantizeLinear", (getattr(q, latest_q),), {"op_domain": ""})
    return [DequantizeLinear, QuantizeLinear]


def reference_diff(model_path: Path, inputs: dict[str, np.ndarray], outs) -> list[float]:
    """Largest |onnx.reference - onnxruntime| per output: an independent implementation of
    the ONNX spec (onnx's pure-NumPy ReferenceEvaluator, its inference BatchNormalization
    fixed) on the same inputs."""
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(str(model_path), new_ops=[_test_mode_batchnorm(), *_latest_qdq()])
    n = next(iter(inputs.values())).shape[0]
    diffs = [0.0] * len(outs)
    for s in range(n):
        res = ref.run(None, {k: v[s] for k, v in inputs.items()})
        for j, r in enumerate(res):
            d = np.max(np.abs(np.asarray(r, np.float64) - outs[j][s].astype(np.float64)))
            diffs[j] = max(diffs[j], float(d))
    return diffs


# ------------------------------------------------------------------ MNIST
def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    magic = int.from_bytes(raw[0:4], "big")
    ndim = magic & 0xFF
    assert magic >> 8 == 0x08, f"{path}: not unsigned-byte IDX (magic {magic:#x})"
    dims = [int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def mnist(split: str):
    """split: 'train' (data/mnist-10k) or 'test' (data/mnist-test). Returns (uint8 images
    [N,28,28], uint8 labels [N])."""
    if split == "train":
        d = DATA / "mnist-10k"
        return (read_idx(d / "train-images-idx3-ubyte.gz"),
                read_idx(d / "train-labels-idx1-ubyte.gz"))
    d = DATA / "mnist-test"
    return read_idx(d / "t10k-images-idx3-ubyte.gz"), read_idx(d / "t10k-labels-idx1-ubyte.gz")


def mnist_nchw(images: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28] -> float32 [N,1,1,28,28] scaled to [0,1] (pixel/255), one sample per
    leading index (for golden inputs)."""
    return (images.astype(np.float32) / 255.0).reshape(-1, 1, 1, 28, 28)


MNIST_TEST_DIST = ("first {n} digits of the official MNIST test set (data/mnist-test), "
                   "pixel/255 in [0, 1], NCHW")
