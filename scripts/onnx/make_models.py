#!/usr/bin/env python3
"""Writes kiln's ONNX test models and their golden vectors:

  models/onnx/<network>/            small networks in PyTorch's layout (NCHW, batch 1)
  models/onnx/ops/<op>_<variant>/   one operator (or a tiny sub-graph) each
  models/onnx/<network>_q*/         onnxruntime.quantization of some of the float networks

each with model.onnx and golden/{input_<i>.npy, output_<j>.npy, meta.json} (inputs with a
leading samples axis of 8, outputs from onnxruntime's CPU execution provider), plus
models/onnx/README.md. The trained models/onnx/lenet_mnist (train_lenet.py) is only read
here (its int8 twin lenet_mnist_qdq is written from it).

Run through scripts/onnx/regen.sh (pinned versions). Deterministic: every random draw is
seeded from the model's name.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnx_common import (MODELS, MNIST_TEST_DIST, ORT_VERSION, ROUNDING_NOTE, SAMPLES,  # noqa: E402
                         Graph, bn_params, describe, draw, he_normal, mnist, mnist_nchw,
                         rng_for, run_ort, save_model, small_bias, write_golden, write_json)

NETWORKS: dict[str, tuple] = {}
OPS: dict[str, tuple] = {}


def network(name, opset=13, **kw):
    def deco(fn):
        NETWORKS[name] = (fn, opset, kw)
        return fn
    return deco


def op(name, opset=13):
    def deco(fn):
        OPS[name] = (fn, opset, {})
        return fn
    return deco


def mnist_inputs(n=SAMPLES, start=0):
    images, _ = mnist("test")
    return mnist_nchw(images[start:start + n])


# ====================================================================== networks
def build_mlp(g: Graph):
    x = g.input("input", [1, 1, 28, 28])
    h = g.node("Flatten", [x], name="flatten", axis=1)
    h = g.relu(g.gemm(h, 784, 32, name="fc1"), name="relu1")
    h = g.relu(g.gemm(h, 32, 16, name="fc2"), name="relu2")
    h = g.gemm(h, 16, 10, name="fc3", relu_gain=False)
    g.output(g.node("Softmax", [h], "probabilities", name="softmax", axis=1))
    return (f"MLP 784-32-16-10 (random weights, opset {g.opset}): Flatten, Gemm (transB=1, "
            "PyTorch Linear), Relu, Softmax")


for _opset in (11, 13, 17, 21):
    network("mlp" if _opset == 13 else f"mlp_opset{_opset}", _opset, inputs="mnist",
            base="mlp")(build_mlp)


def build_lenet5(g: Graph):
    x = g.input("input", [1, 1, 28, 28])
    h = g.relu(g.conv(x, 1, 6, 5, pads=[2, 2, 2, 2], name="conv1"), name="relu1")
    h = g.node("MaxPool", [h], name="pool1", kernel_shape=[2, 2], strides=[2, 2])
    h = g.relu(g.conv(h, 6, 16, 5, name="conv2"), name="relu2")
    h = g.node("MaxPool", [h], name="pool2", kernel_shape=[2, 2], strides=[2, 2])
    h = g.node("Flatten", [h], name="flatten", axis=1)
    h = g.relu(g.gemm(h, 400, 120, name="fc1"), name="relu3")
    h = g.relu(g.gemm(h, 120, 84, name="fc2"), name="relu4")
    g.output(g.gemm(h, 84, 10, name="fc3", relu_gain=False))
    return ("LeNet-5 (random weights): Conv 5x5 pad 2, Relu, MaxPool 2x2, Conv 5x5, Relu, "
            "MaxPool, Flatten, Gemm 400-120-84-10 with Relu; logits out")


def _fix_output_name(g: Graph, old, new):
    for n in g.nodes:
        n.output[:] = [new if o == old else o for o in n.output]
        n.input[:] = [new if i == old else i for i in n.input]
    g.outputs = [new if o == old else o for o in g.outputs]


def lenet5(g):
    d = build_lenet5(g)
    _fix_output_name(g, "fc3", "logits")
    return d


network("lenet5", inputs="mnist")(lenet5)


@network("residual_block")
def residual_block(g: Graph):
    x = g.input("input", [1, 3, 16, 16])
    h = g.relu(g.bn(g.conv(x, 3, 16, 3, pads=[1] * 4, bias=False, name="stem.conv"),
                    16, name="stem.bn"), name="stem.relu")
    # block 1: identity shortcut
    y = g.relu(g.bn(g.conv(h, 16, 16, 3, pads=[1] * 4, bias=False, name="block1.conv1"),
                    16, name="block1.bn1"), name="block1.relu1")
    y = g.bn(g.conv(y, 16, 16, 3, pads=[1] * 4, bias=False, name="block1.conv2"), 16,
             name="block1.bn2")
    h = g.relu(g.node("Add", [y, h], name="block1.add"), name="block1.relu2")
    # block 2: stride 2, projection shortcut (Conv 1x1 stride 2 + BN)
    y = g.relu(g.bn(g.conv(h, 16, 32, 3, stride=2, pads=[1] * 4, bias=False,
                           name="block2.conv1"), 32, name="block2.bn1"), name="block2.relu1")
    y = g.bn(g.conv(y, 32, 32, 3, pads=[1] * 4, bias=False, name="block2.conv2"), 32,
             name="block2.bn2")
    s = g.bn(g.conv(h, 16, 32, 1, stride=2, bias=False, name="block2.shortcut.conv"), 32,
             name="block2.shortcut.bn")
    out = g.relu(g.node("Add", [y, s], name="block2.add"), name="block2.relu2")
    _rename(g, out, "features")
    g.output("features")
    return ("two ResNet basic blocks (stem Conv-BN-Relu; block 1 with identity skip; block 2 "
            "stride 2 with a Conv 1x1 stride 2 + BN projection shortcut); Conv without bias, "
            "BatchNormalization with non-trivial statistics, Add, Relu; output [1,32,8,8]")


def _rename(g: Graph, old, new):
    _fix_output_name(g, old, new)


def ds_cnn(g: Graph):
    c = 64
    x = g.input("input", [1, 1, 49, 10])
    # TF-style SAME padding of the 10x4 stride-2 kernel: H 4+5, W 1+1 (asymmetric)
    h = g.conv(x, 1, c, (10, 4), stride=2, pads=[4, 1, 5, 1], name="conv0")
    h = g.relu(g.bn(h, c, name="bn0"), name="relu0")
    for i in range(1, 4):
        h = g.conv(h, c, c, 3, pads=[1] * 4, group=c, name=f"dw{i}")
        h = g.relu(g.bn(h, c, name=f"dw{i}.bn"), name=f"dw{i}.relu")
        h = g.conv(h, c, c, 1, name=f"pw{i}")
        h = g.relu(g.bn(h, c, name=f"pw{i}.bn"), name=f"pw{i}.relu")
    h = g.node("GlobalAveragePool", [h], name="gap")
    h = g.node("Flatten", [h], name="flatten", axis=1)
    h = g.gemm(h, c, 12, name="fc", relu_gain=False)
    g.output(g.node("Softmax", [h], "probabilities", name="softmax", axis=-1))
    return (f"DS-CNN keyword spotter (random weights, MLPerf Tiny KWS shape, opset {g.opset}): "
            "Conv 10x4 stride 2 "
            "with asymmetric pads, 3x (depthwise Conv 3x3 group=64 + BN + Relu, pointwise Conv "
            "1x1 + BN + Relu), GlobalAveragePool, Flatten, Gemm, Softmax; input 1x1x49x10 "
            "(MFCC-like features)")


for _opset in (11, 13, 21):
    network("ds_cnn" if _opset == 13 else f"ds_cnn_opset{_opset}", _opset, base="ds_cnn")(ds_cnn)


@network("autoencoder", inputs_dist=("uniform", 0.0, 1.0))
def autoencoder(g: Graph):
    x = g.input("input", [1, 1, 28, 28], dist=("uniform", 0.0, 1.0))
    h = g.relu(g.conv(x, 1, 8, 3, stride=2, pads=[1] * 4, name="enc1"), name="enc1.relu")
    h = g.relu(g.conv(h, 8, 16, 3, stride=2, pads=[1] * 4, name="enc2"), name="enc2.relu")
    h = g.relu(conv_transpose(g, h, 16, 8, 3, stride=2, pads=[1] * 4, output_padding=[1, 1],
                              name="dec1"), name="dec1.relu")
    h = conv_transpose(g, h, 8, 1, 4, stride=2, pads=[1] * 4, name="dec2")
    g.output(g.node("Sigmoid", [h], "reconstruction", name="sigmoid"))
    return ("convolutional autoencoder: Conv 3x3 stride 2 pad 1 (x2, Relu), ConvTranspose 3x3 "
            "stride 2 pad 1 output_padding 1 (14x14), Relu, ConvTranspose 4x4 stride 2 pad 1 "
            "(28x28), Sigmoid")


def conv_transpose(g: Graph, x, cin, cout, k, stride, pads, output_padding=None, bias=True,
                   name=None, group=1):
    w = g.const(f"{name}.weight", he_normal(g.rng, (cin, cout // group, k, k), cin * k * k / 4))
    ins = [x, w]
    if bias:
        ins.append(g.const(f"{name}.bias", small_bias(g.rng, cout)))
    attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=pads, group=group,
                 dilations=[1, 1])
    if output_padding:
        attrs["output_padding"] = output_padding
    return g.node("ConvTranspose", ins, name=name, **attrs)


def torch_constant(g: Graph, name, arr):
    """A Constant node, as PyTorch's exporter emits for small integer tensors."""
    arr = np.asarray(arr)
    return g.node("Constant", [], name=name, value=numpy_helper.from_array(arr, name))


@network("pytorch_reshape")
def pytorch_reshape(g: Graph):
    x = g.input("input", [1, 3, 8, 8])
    h = g.relu(g.conv(x, 3, 4, 3, pads=[1] * 4, name="conv"), name="relu")
    # x.view(x.size(0), -1), as torch.onnx.export (TorchScript exporter, opset 13) writes it
    shape = g.node("Shape", [h], name="/Shape")
    idx = torch_constant(g, "/Constant", np.array(0, np.int64))
    n = g.node("Gather", [shape, idx], name="/Gather", axis=0)
    axes = torch_constant(g, "/Constant_1", np.array([0], np.int64))
    n1 = g.node("Unsqueeze", [n, axes], name="/Unsqueeze")
    minus1 = torch_constant(g, "/Constant_2", np.array([-1], np.int64))
    cat = g.node("Concat", [n1, minus1], name="/Concat", axis=0)
    flat = g.node("Reshape", [h, cat], name="/Reshape")
    g.output(g.gemm(flat, 256, 10, name="fc", relu_gain=False))
    _rename(g, "fc", "logits")
    g.output_shapes["logits"] = [1, 10]
    return ("Conv + Relu, then the Shape -> Gather(0) -> Unsqueeze -> Concat([n, -1]) -> "
            "Reshape sub-graph PyTorch emits for x.view(x.size(0), -1) (constants as Constant "
            "nodes), feeding a Gemm; the importer must fold it to a static [1, 256]")


@network("external_data", external=True)
def external_data(g: Graph):
    x = g.input("input", [1, 3, 12, 12])
    h = g.relu(g.conv(x, 3, 8, 3, pads=[1] * 4, name="conv1"), name="relu1")
    h = g.relu(g.conv(h, 8, 8, 3, stride=2, pads=[1] * 4, name="conv2"), name="relu2")
    h = g.node("GlobalAveragePool", [h], name="gap")
    h = g.node("Flatten", [h], name="flatten", axis=1)
    g.output(g.gemm(h, 8, 4, name="fc", relu_gain=False))
    _rename(g, "fc", "logits")
    return ("small conv net saved with every initializer in one external file model.onnx.data "
            "(onnx.save_model(save_as_external_data=True, all_tensors_to_one_file=True, "
            "size_threshold=0)): Conv, Relu, GlobalAveragePool, Flatten, Gemm")


@network("mlp_initializers_as_inputs", inputs="mnist", init_as_inputs=True, base="mlp")
def mlp_init_inputs(g: Graph):
    build_mlp(g)
    return ("the mlp with every initializer also listed as a graph input (as IR version 3 "
            "required and torch.onnx.export(keep_initializers_as_inputs=True) still writes); "
            "the only real input is "
            "'input', the others have initializers as defaults and must be treated as constants")


# ====================================================================== single ops
CONV_IN = [1, 3, 8, 8]


def conv_op(name, desc, shape=CONV_IN, **kw):
    def fn(g: Graph):
        x = g.input("x", shape)
        args = dict(kw)
        cout = args.pop("cout", 4)
        g.output(g.conv(x, shape[1], cout, args.pop("k", 3), name="conv", **args))
        return desc
    op(name)(fn)


conv_op("conv_plain", "Conv 3x3, 3->4 channels, stride 1, no padding, with bias")
conv_op("conv_stride2_pad1", "Conv 3x3 stride 2, pads 1 on all sides", stride=2, pads=[1] * 4)
conv_op("conv_stride2_pad_asym", "Conv 3x3 stride 2, asymmetric pads [0,0,1,1] (TF SAME)",
        stride=2, pads=[0, 0, 1, 1])
conv_op("conv_dilated", "Conv 3x3 dilation 2, pads 2", dilation=2, pads=[2] * 4)
conv_op("conv_grouped", "Conv 3x3 group=2, 4->6 channels, pads 1", shape=[1, 4, 8, 8], cout=6,
        group=2, pads=[1] * 4)
conv_op("conv_depthwise", "depthwise Conv 3x3 group=C=4, pads 1", shape=[1, 4, 8, 8], cout=4,
        group=4, pads=[1] * 4)
conv_op("conv_depthwise_mult2", "depthwise Conv 3x3 group=4, 4->8 channels (depth multiplier "
        "2), stride 2, pads 1", shape=[1, 4, 8, 8], cout=8, group=4, stride=2, pads=[1] * 4)
conv_op("conv_nobias", "Conv 3x3 pads 1 without the bias input", bias=False, pads=[1] * 4)
conv_op("conv_autopad_same_upper", "Conv 3x3 stride 2, auto_pad=SAME_UPPER on a 7x8 input (H "
        "pads 1+1, W pads 0+1)", shape=[1, 3, 7, 8], stride=2, auto_pad="SAME_UPPER")
conv_op("conv_1x1", "pointwise Conv 1x1, 8->16 channels", shape=[1, 8, 6, 6], cout=16, k=1)
conv_op("conv_rect_kernel", "Conv 10x4 stride 2, pads [4,1,5,1] on 1x1x49x10 (KWS first layer)",
        shape=[1, 1, 49, 10], cout=8, k=(10, 4), stride=2, pads=[4, 1, 5, 1])


@op("conv_transpose_s2_pad1_outpad1")
def _(g):
    x = g.input("x", [1, 4, 5, 5])
    g.output(conv_transpose(g, x, 4, 3, 3, 2, [1] * 4, output_padding=[1, 1], name="deconv"))
    return "ConvTranspose 3x3 stride 2, pads 1, output_padding 1, with bias: 5x5 -> 10x10"


@op("conv_transpose_s2_nobias")
def _(g):
    x = g.input("x", [1, 4, 5, 5])
    g.output(conv_transpose(g, x, 4, 6, 4, 2, [1] * 4, bias=False, name="deconv"))
    return "ConvTranspose 4x4 stride 2, pads 1, no bias, 4->6 channels: 5x5 -> 10x10"


@op("conv_transpose_s1_nopad")
def _(g):
    x = g.input("x", [1, 3, 4, 4])
    g.output(conv_transpose(g, x, 3, 2, 3, 1, [0] * 4, name="deconv"))
    return "ConvTranspose 3x3 stride 1, no padding: 4x4 -> 6x6"


def gemm_op(name, desc, trans_b=1, alpha=1.0, beta=1.0, c_shape=(8,)):
    def fn(g: Graph):
        x = g.input("x", [1, 16])
        w = he_normal(g.rng, (8, 16), 16)
        ins = [x, g.const("B", w if trans_b else w.T.copy())]
        if c_shape is not None:
            ins.append(g.const("C", small_bias(g.rng, int(np.prod(c_shape)), 0.5)
                               .reshape(c_shape)))
        g.output(g.node("Gemm", ins, name="gemm", alpha=alpha, beta=beta, transB=trans_b))
        return desc
    op(name)(fn)


gemm_op("gemm_transb1", "Gemm x[1,16] * B^T (B [8,16], transB=1) + C[8] (PyTorch Linear)")
gemm_op("gemm_transb0", "Gemm x[1,16] * B (B [16,8], transB=0) + C[8]", trans_b=0)
gemm_op("gemm_alpha_beta", "Gemm alpha=0.5, beta=2.0, transB=1, C [1,8]", alpha=0.5, beta=2.0,
        c_shape=(1, 8))
gemm_op("gemm_no_c", "Gemm transB=1 without the C input", c_shape=None)


@op("matmul_2d_const")
def _(g):
    x = g.input("x", [1, 16])
    g.output(g.node("MatMul", [x, g.const("W", he_normal(g.rng, (16, 8), 16))], name="matmul"))
    return "MatMul [1,16] x constant [16,8]"


@op("matmul_3d_const")
def _(g):
    x = g.input("x", [1, 5, 16])
    g.output(g.node("MatMul", [x, g.const("W", he_normal(g.rng, (16, 8), 16))], name="matmul"))
    return "MatMul [1,5,16] x constant 2-D [16,8] (broadcast over the leading dims) -> [1,5,8]"


# ---------------------------------------------------------------- binary elementwise
DIV_DIST = ("abs_uniform", 0.5, 2.0)
BIN_A = [1, 3, 4, 5]


def binary_op(opname, variant, desc, b_shape=None, const=None, const_lhs=False,
              a_shape=BIN_A):
    def fn(g: Graph):
        a = g.input("a", a_shape)
        if const is None:
            b = g.input("b", b_shape, dist=DIV_DIST if opname == "Div" else ("normal", 1.0))
            ins = [a, b]
        else:
            c = const(g.rng)
            b = g.const("c", c.astype(np.float32))
            ins = [b, a] if const_lhs else [a, b]
        if const_lhs and opname == "Div":
            g.dists["a"] = DIV_DIST
        g.output(g.node(opname, ins, name=opname.lower()))
        return desc
    op(f"{opname.lower()}_{variant}")(fn)


for _op, _bshape in (("Add", [1, 3, 1, 1]), ("Sub", [4, 5]), ("Mul", [1, 1, 4, 5]),
                     ("Div", [1, 3, 4, 1])):
    binary_op(_op, "bcast", f"{_op} of two activations [1,3,4,5] and "
              f"{str(_bshape).replace(' ', '')} "
              "(numpy-style broadcasting)", b_shape=_bshape)
    binary_op(_op, "const_scalar", f"{_op} of an activation and a scalar constant (shape [])",
              const=lambda r: np.array(r.uniform(0.5, 2.0), np.float32))
    binary_op(_op, "const_perchannel", f"{_op} of an NCHW activation and a per-channel "
              "constant of shape [3,1,1]", const=lambda r: r.uniform(0.5, 2.0, (3, 1, 1)) *
              r.choice([-1.0, 1.0], (3, 1, 1)))
binary_op("Add", "same_shape", "Add of two activations of the same shape [1,3,4,5]",
          b_shape=BIN_A)
binary_op("Add", "bcast_both", "Add of [1,3,1,5] and [1,1,4,1] (both operands broadcast)",
          a_shape=[1, 3, 1, 5], b_shape=[1, 1, 4, 1])
binary_op("Sub", "const_lhs", "Sub with the constant first: c - x, c of shape [1,3,4,5] "
          "(PyTorch's 1 - x, rsub)", const=lambda r: r.standard_normal(BIN_A), const_lhs=True)
binary_op("Div", "const_lhs", "Div with the scalar constant first: 1.5 / x (x away from 0)",
          const=lambda r: np.array(1.5, np.float32), const_lhs=True)


# ---------------------------------------------------------------- activations
ACT_SHAPE = [1, 3, 4, 5]
WIDE = ("normal", 3.0)


def unary_op(name, opname, desc, opset=13, dist=WIDE, **attrs):
    def fn(g: Graph):
        x = g.input("x", ACT_SHAPE, dist=dist)
        g.output(g.node(opname, [x], name=opname.lower(), **attrs))
        return desc
    op(name, opset)(fn)


unary_op("relu", "Relu", "Relu")
unary_op("leaky_relu_alpha0p1", "LeakyRelu", "LeakyRelu alpha=0.1", alpha=0.1)
unary_op("sigmoid", "Sigmoid", "Sigmoid")
unary_op("tanh", "Tanh", "Tanh")
unary_op("hard_sigmoid_default", "HardSigmoid", "HardSigmoid, default alpha=0.2 beta=0.5")
unary_op("hard_sigmoid_custom", "HardSigmoid", "HardSigmoid alpha=1/6 beta=0.5 (what PyTorch's "
         "hardsigmoid exports)", alpha=1.0 / 6.0, beta=0.5)
unary_op("hard_swish_opset14", "HardSwish", "HardSwish (opset 14)", opset=14)
unary_op("identity", "Identity", "Identity", dist=("normal", 1.0))


@op("clip_opset11_min_max", opset=11)
def _(g):
    x = g.input("x", ACT_SHAPE, dist=WIDE)
    g.output(g.node("Clip", [x, g.const("min", np.array(0.0, np.float32)),
                             g.const("max", np.array(6.0, np.float32))], name="clip"))
    return "Clip opset 11, min 0 and max 6 as scalar initializer inputs (ReLU6)"


@op("clip_opset13_min_max")
def _(g):
    x = g.input("x", ACT_SHAPE, dist=WIDE)
    lo = torch_constant(g, "min", np.array(-1.0, np.float32))
    hi = torch_constant(g, "max", np.array(2.5, np.float32))
    g.output(g.node("Clip", [x, lo, hi], name="clip"))
    return "Clip opset 13, min -1 and max 2.5 from Constant nodes (as PyTorch exports clamp)"


@op("clip_opset13_max_only")
def _(g):
    x = g.input("x", ACT_SHAPE, dist=WIDE)
    g.output(g.node("Clip", [x, "", g.const("max", np.array(1.0, np.float32))], name="clip"))
    return "Clip opset 13 with only max (1.0): the min input is the empty name ''"


# ---------------------------------------------------------------- pooling / normalization
def pool_op(name, opname, desc, shape, **attrs):
    def fn(g: Graph):
        x = g.input("x", shape)
        g.output(g.node(opname, [x], name=opname.lower(), **attrs))
        return desc
    op(name)(fn)


pool_op("max_pool_k2s2", "MaxPool", "MaxPool 2x2 stride 2, 8x8 -> 4x4", [1, 4, 8, 8],
        kernel_shape=[2, 2], strides=[2, 2])
pool_op("max_pool_k3s2p1", "MaxPool", "MaxPool 3x3 stride 2 pads 1, ceil_mode=0, 9x9 -> 5x5",
        [1, 4, 9, 9], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4, ceil_mode=0)
pool_op("average_pool_k2s2", "AveragePool", "AveragePool 2x2 stride 2, no padding",
        [1, 4, 8, 8], kernel_shape=[2, 2], strides=[2, 2])
pool_op("average_pool_k3s2p1_exclude_pad", "AveragePool", "AveragePool 3x3 stride 2 pads 1, "
        "count_include_pad=0 (border windows divide by the valid count)", [1, 4, 9, 9],
        kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4, count_include_pad=0)
pool_op("average_pool_k3s2p1_include_pad", "AveragePool", "AveragePool 3x3 stride 2 pads 1, "
        "count_include_pad=1 (border windows divide by 9)", [1, 4, 9, 9],
        kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4, count_include_pad=1)
pool_op("global_average_pool", "GlobalAveragePool", "GlobalAveragePool [1,8,5,5] -> [1,8,1,1]",
        [1, 8, 5, 5])


@op("batch_norm_after_conv")
def _(g):
    x = g.input("x", [1, 3, 8, 8])
    g.output(g.bn(g.conv(x, 3, 8, 3, pads=[1] * 4, name="conv"), 8, name="bn"))
    return "Conv 3x3 followed by BatchNormalization (foldable into the Conv)"


@op("batch_norm_standalone")
def _(g):
    x = g.input("x", [1, 8, 5, 5])
    g.output(g.bn(x, 8, name="bn", epsilon=1e-3))
    return "BatchNormalization directly on the graph input, epsilon 1e-3"


# ---------------------------------------------------------------- shape ops
@op("flatten_axis1")
def _(g):
    x = g.input("x", [1, 3, 4, 5])
    g.output(g.node("Flatten", [x], name="flatten", axis=1))
    return "Flatten axis=1: [1,3,4,5] -> [1,60]"


@op("reshape_minus1")
def _(g):
    x = g.input("x", [1, 3, 4, 5])
    g.output(g.node("Reshape", [x, g.const("shape", np.array([1, -1], np.int64))],
                    name="reshape"))
    return "Reshape to [1,-1]: [1,3,4,5] -> [1,60]"


@op("reshape_zero_minus1")
def _(g):
    x = g.input("x", [1, 3, 4, 5])
    g.output(g.node("Reshape", [x, g.const("shape", np.array([0, -1, 5], np.int64))],
                    name="reshape"))
    return "Reshape to [0,-1,5] (0 copies the input dim): [1,3,4,5] -> [1,12,5]"


@op("transpose_nchw_to_nhwc")
def _(g):
    x = g.input("x", [1, 3, 4, 5])
    g.output(g.node("Transpose", [x], name="transpose", perm=[0, 2, 3, 1]))
    return "Transpose perm [0,2,3,1] (NCHW -> NHWC)"


@op("transpose_3d")
def _(g):
    x = g.input("x", [1, 5, 7])
    g.output(g.node("Transpose", [x], name="transpose", perm=[0, 2, 1]))
    return "Transpose perm [0,2,1] on [1,5,7]"


@op("squeeze_opset11", opset=11)
def _(g):
    x = g.input("x", [1, 4, 1, 6])
    g.output(g.node("Squeeze", [x], name="squeeze", axes=[2]))
    return "Squeeze opset 11, axes=[2] attribute: [1,4,1,6] -> [1,4,6]"


@op("squeeze_opset13")
def _(g):
    x = g.input("x", [1, 8, 1, 1])
    g.output(g.node("Squeeze", [x, g.const("axes", np.array([2, 3], np.int64))],
                    name="squeeze"))
    return "Squeeze opset 13, axes [2,3] as an input: [1,8,1,1] -> [1,8]"


@op("unsqueeze_opset11", opset=11)
def _(g):
    x = g.input("x", [1, 8])
    g.output(g.node("Unsqueeze", [x], name="unsqueeze", axes=[2, 3]))
    return "Unsqueeze opset 11, axes=[2,3] attribute: [1,8] -> [1,8,1,1]"


@op("unsqueeze_opset13")
def _(g):
    x = g.input("x", [1, 4, 6])
    g.output(g.node("Unsqueeze", [x, g.const("axes", np.array([-3], np.int64))],
                    name="unsqueeze"))
    return "Unsqueeze opset 13, axes [-3] as an input (negative): [1,4,6] -> [1,1,4,6]"


@op("concat_axis1")
def _(g):
    a = g.input("a", [1, 2, 4, 4])
    b = g.input("b", [1, 3, 4, 4])
    c = g.input("c", [1, 1, 4, 4])
    g.output(g.node("Concat", [a, b, c], name="concat", axis=1))
    return "Concat of three NCHW activations on the channel axis (axis=1)"


@op("concat_axis_minus1")
def _(g):
    a = g.input("a", [1, 3, 4, 2])
    b = g.input("b", [1, 3, 4, 5])
    g.output(g.node("Concat", [a, b], name="concat", axis=-1))
    return "Concat axis=-1: [1,3,4,2] + [1,3,4,5] -> [1,3,4,7]"


@op("concat_const")
def _(g):
    a = g.input("a", [1, 2, 4, 4])
    c = g.const("c", draw(g.rng, ("normal", 1.0), [1, 3, 4, 4]))
    g.output(g.node("Concat", [a, c], name="concat", axis=1))
    return "Concat of an activation and a constant on axis 1"


@op("pad_opset11_constant", opset=11)
def _(g):
    x = g.input("x", [1, 3, 4, 4])
    pads = g.const("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))
    g.output(g.node("Pad", [x, pads], name="pad", mode="constant"))
    return ("Pad opset 11, mode constant, pads input [0,0,1,2,0,0,2,1] (H 1+2, W 2+1), no "
            "constant_value input (zero)")


@op("pad_opset18_axes", opset=18)
def _(g):
    x = g.input("x", [1, 3, 4, 4])
    pads = g.const("pads", np.array([1, 0, 0, 2], np.int64))
    axes = g.const("axes", np.array([2, 3], np.int64))
    g.output(g.node("Pad", [x, pads, "", axes], name="pad", mode="constant"))
    return ("Pad opset 18 with the axes input [2,3]: pads [1,0,0,2] are H begin 1, W begin 0, "
            "H end 0, W end 2; constant_value input empty (zero)")


@op("softmax_opset11_axis1_2d", opset=11)
def _(g):
    x = g.input("x", [1, 10], dist=("normal", 2.0))
    g.output(g.node("Softmax", [x], name="softmax", axis=1))
    return "Softmax opset 11, axis=1 on [1,10]"


@op("softmax_opset13_axis_minus1_4d")
def _(g):
    x = g.input("x", [1, 3, 4, 5], dist=("normal", 2.0))
    g.output(g.node("Softmax", [x], name="softmax", axis=-1))
    return "Softmax opset 13, axis=-1 on [1,3,4,5]"


@op("reduce_mean_opset13_keepdims1")
def _(g):
    x = g.input("x", [1, 4, 5, 6])
    g.output(g.node("ReduceMean", [x], name="reduce_mean", axes=[2, 3], keepdims=1))
    return "ReduceMean opset 13, axes=[2,3] attribute, keepdims=1 -> [1,4,1,1]"


@op("reduce_mean_opset13_keepdims0")
def _(g):
    x = g.input("x", [1, 4, 5, 6])
    g.output(g.node("ReduceMean", [x], name="reduce_mean", axes=[2, 3], keepdims=0))
    return "ReduceMean opset 13, axes=[2,3] attribute, keepdims=0 -> [1,4]"


@op("reduce_mean_opset18_axes_input", opset=18)
def _(g):
    x = g.input("x", [1, 4, 5, 6])
    g.output(g.node("ReduceMean", [x, g.const("axes", np.array([-2, -1], np.int64))],
                    name="reduce_mean", keepdims=1))
    return "ReduceMean opset 18, axes [-2,-1] as an input, keepdims=1 -> [1,4,1,1]"


@op("dropout_opset13_ratio")
def _(g):
    x = g.input("x", [1, 3, 4, 5])
    g.output(g.node("Dropout", [x, g.const("ratio", np.array(0.25, np.float32))],
                    name="dropout"))
    return ("Dropout opset 13 with a ratio input (0.25) and no training_mode: inference, so "
            "the output equals the input")


@op("constant_add")
def _(g):
    x = g.input("x", [1, 3, 4, 5])
    c = g.node("Constant", [], "c", name="constant",
               value=numpy_helper.from_array(draw(g.rng, ("normal", 1.0), [1, 3, 1, 1]), "c"))
    g.output(g.node("Add", [x, c], name="add"))
    return "a Constant node (value [1,3,1,1]) feeding an Add"


# ====================================================================== writing
def model_inputs(name: str, g: Graph, kw: dict):
    if kw.get("inputs") == "mnist":
        x = mnist_inputs()
        return {g.inputs[0].name: x}, {g.inputs[0].name: MNIST_TEST_DIST.format(n=SAMPLES)}
    rng = rng_for(name + "/inputs")
    inputs, dists = {}, {}
    for vi in g.inputs:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        dist = g.dists[vi.name]
        inputs[vi.name] = draw(rng, dist, [SAMPLES, *shape])
        dists[vi.name] = describe(dist)
    return inputs, dists


def build_and_write(rel: str, fn, opset: int, kw: dict, index: list):
    g = Graph(kw.get("base", rel.split("/")[-1]), opset)
    desc = fn(g)
    if kw.get("base") and kw["base"] != rel:
        desc += f"; same weights and inputs as {kw['base']}, so the same outputs"
    m = g.model()
    if kw.get("init_as_inputs"):
        existing = {i.name for i in m.graph.input}
        for t in m.graph.initializer:
            if t.name not in existing:
                m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type,
                                                                   list(t.dims)))
        onnx.checker.check_model(m, full_check=True)
    folder = MODELS / rel
    if folder.exists():
        shutil.rmtree(folder)
    path = folder / "model.onnx"
    save_model(m, path, external_data=kw.get("external", False))
    inputs, dists = model_inputs(kw.get("base", rel.split("/")[-1]), g, kw)
    write_golden(folder, path, inputs, dists, desc)
    index.append((rel, desc, m))
    return m, inputs


# ---------------------------------------------------------------- quantization
class Reader:
    """onnxruntime.quantization.CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds):
        self.feeds = list(feeds)
        self.i = 0

    def get_next(self):
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self):
        self.i = 0


def fold_bn(model: onnx.ModelProto) -> onnx.ModelProto:
    """Folds every Conv -> BatchNormalization pair into the Conv (what torch.onnx.export does
    in eval mode and what ORT's quantization pre-processing does); numerically equivalent."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    keep = []
    folded = set()
    for n in m.graph.node:
        if n.op_type == "BatchNormalization":
            conv = producers.get(n.input[0])
            if conv is not None and conv.op_type == "Conv" and consumers[n.input[0]] == 1:
                eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
                s, b, mu, var = (inits[i].astype(np.float64) for i in n.input[1:5])
                w = inits[conv.input[1]].astype(np.float64)
                cb = (inits[conv.input[2]].astype(np.float64) if len(conv.input) > 2
                      else np.zeros(w.shape[0]))
                k = s / np.sqrt(var + eps)
                inits[conv.input[1]] = (w * k[:, None, None, None]).astype(np.float32)
                bias_name = conv.input[1].rsplit(".", 1)[0] + ".bias_folded"
                inits[bias_name] = ((cb - mu) * k + b).astype(np.float32)
                if len(conv.input) > 2:
                    conv.input[2] = bias_name
                else:
                    conv.input.append(bias_name)
                conv.output[0] = n.output[0]
                folded.add(id(n))
                continue
        keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    used = {i for n in m.graph.node for i in n.input}
    del m.graph.initializer[:]
    m.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items()
                               if k in used)
    onnx.checker.check_model(m, full_check=True)
    return m


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Gemm(transB=1) -> MatMul(W^T) + Add(bias), so that QOperator quantization writes the
    standard QLinearMatMul (a Gemm becomes com.microsoft.QGemm)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: t for t in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        if n.op_type != "Gemm":
            nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        inits[n.input[1]].CopyFrom(numpy_helper.from_array(w.T.copy(), n.input[1]))
        mm = n.name + ".matmul"
        nodes.append(helper.make_node("MatMul", [n.input[0], n.input[1]], [mm], name=mm))
        nodes.append(helper.make_node("Add", [mm, n.input[2]], [n.output[0]],
                                      name=n.name + ".add"))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.checker.check_model(m, full_check=True)
    return m


def quantize(float_model: onnx.ModelProto, out_path: Path, calib: list[dict], fmt: str,
             activation: str = "QInt8", op_types=None):
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "float.onnx"
        src.write_bytes(float_model.SerializeToString())
        out_path.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(
            str(src), str(out_path), Reader(calib),
            quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
            op_types_to_quantize=op_types,
            per_channel=True,
            reduce_range=False,
            activation_type=getattr(QuantType, activation),
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=dict(ActivationSymmetric=False, WeightSymmetric=True),
        )
    # Stable bytes: ORT names the producer after itself; keep ours plus the ORT version.
    q = onnx.load(str(out_path))
    q.producer_name = f"{float_model.producer_name} + onnxruntime.quantization {ORT_VERSION}"
    q.producer_version = "1"
    onnx.checker.check_model(q)
    out_path.write_bytes(q.SerializeToString())
    return q


def quant_info(q: onnx.ModelProto):
    """Summarises a quantized graph: dtypes of the quantized activations, per-channel
    weights."""
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    zp_types = set()
    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear",) and len(n.input) > 2 and n.input[2] in inits:
            zp_types.add(inits[n.input[2]].dtype.name)
    return sorted(zp_types)


def write_quantized(name: str, base: str, float_model: onnx.ModelProto, inputs: dict,
                    dists: dict, calib: list[dict], calib_desc: str, fmt: str, index: list,
                    activation="QInt8", op_types=None, desc_extra="", prepared="",
                    extra_meta=None):
    folder = MODELS / name
    if folder.exists():
        shutil.rmtree(folder)
    path = folder / "model.onnx"
    q = quantize(float_model, path, calib, fmt, activation, op_types)
    act_types = quant_info(q)
    desc = (f"{base} quantized by onnxruntime.quantization.quantize_static: "
            f"{'QDQ (QuantizeLinear/DequantizeLinear pairs around float ops)' if fmt == 'QDQ' else 'QOperator (QLinear* operators)'}, "
            f"activations {activation}, weights QInt8 per channel (symmetric), int32 bias, "
            f"MinMax calibration{desc_extra}")
    meta = dict(quantization=dict(
        tool=f"onnxruntime.quantization.quantize_static (onnxruntime {ORT_VERSION})",
        quant_format=fmt, activation_type=activation, weight_type="QInt8", per_channel=True,
        reduce_range=False, calibrate_method="MinMax", activation_symmetric=False,
        weight_symmetric=True, op_types_to_quantize=op_types or "all supported",
        calibration=calib_desc, float_model=f"models/onnx/{base}" + (
            f" ({prepared})" if prepared else ""),
        quantized_activation_dtypes=act_types,
        rounding=ROUNDING_NOTE))
    if extra_meta:
        meta.update(extra_meta)
    meta["quantization"].update(io_quantization(q))
    _, golden = write_golden(folder, path, inputs, dists, desc, extra=meta, cross_check=False)
    meta_path = folder / "golden" / "meta.json"
    full = json.loads(meta_path.read_text())
    full["ort_enable_all"] = lsb_cross_check(path, inputs, golden,
                                             full["quantization"]["outputs"])
    write_json(meta_path, full)
    index.append((name, desc, q))
    return q


def io_quantization(q: onnx.ModelProto):
    """Scale and zero point of each graph input (its QuantizeLinear) and output (the
    DequantizeLinear producing it)."""
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}

    def params(n):
        zp = inits[n.input[2]] if len(n.input) > 2 else np.array(0, np.uint8)
        return dict(scale=float(inits[n.input[1]]), zero_point=int(zp), dtype=zp.dtype.name)

    ins, outs = [], []
    for vi in q.graph.input:
        qn = next((n for n in q.graph.node
                   if n.op_type == "QuantizeLinear" and n.input[0] == vi.name), None)
        ins.append(dict(name=vi.name, **params(qn)) if qn else dict(name=vi.name))
    for vi in q.graph.output:
        dq = next((n for n in q.graph.node
                   if n.op_type == "DequantizeLinear" and n.output[0] == vi.name), None)
        outs.append(dict(name=vi.name, **params(dq)) if dq else dict(name=vi.name))
    return dict(inputs=ins, outputs=outs)


def lsb_cross_check(path: Path, inputs, golden, out_q):
    """The same inputs with ORT_ENABLE_ALL (fused integer kernels): differences in output
    LSBs."""
    _, outs = run_ort(path, inputs, optimize=True)
    res = []
    for a, b, oq in zip(golden, outs, out_q):
        d = np.abs(a.astype(np.float64) - b.astype(np.float64))
        if "scale" in oq:
            d = np.rint(d / oq["scale"])
            res.append(dict(output=oq["name"], mismatched_elements=int(np.count_nonzero(d)),
                            of=int(d.size), max_abs_diff_lsb=int(d.max())))
        else:
            res.append(dict(output=oq["name"], max_abs_diff=float(d.max())))
    return res


def mnist_calib(n=32):
    images, _ = mnist("train")
    return [{"input": x} for x in mnist_nchw(images[:n])]


def build_quantized(built: dict, index: list):
    # LeNet-5 (random weights), calibrated on MNIST training digits.
    lenet, lin = built["lenet5"]
    ldist = {"input": MNIST_TEST_DIST.format(n=SAMPLES)}
    cdesc = ("the first 32 digits of data/mnist-10k (MNIST training digits), pixel/255")
    write_quantized("lenet5_qdq", "lenet5", lenet, lin, ldist, mnist_calib(), cdesc, "QDQ",
                    index)
    mm = gemm_to_matmul(lenet)
    for name, act in (("lenet5_qoperator", "QInt8"), ("lenet5_qoperator_u8", "QUInt8")):
        write_quantized(
            name, "lenet5", mm, lin, ldist, mnist_calib(), cdesc, "QOperator", index,
            activation=act, op_types=["Conv", "MatMul", "MaxPool", "Relu", "Flatten"],
            desc_extra=("; the float model's Gemm layers were first rewritten as MatMul + Add "
                        "(so ORT writes QLinearMatMul, not com.microsoft.QGemm) and only Conv, "
                        "MatMul, MaxPool, Relu and Flatten are quantized: the Relu after each "
                        "QLinearConv is absorbed into its output quantization, MaxPool and "
                        "Flatten run on the quantized tensor, and each bias Add (+ Relu) runs in "
                        "float between DequantizeLinear and QuantizeLinear (avoiding "
                        "com.microsoft.QLinearAdd)"),
            prepared="Gemm -> MatMul + Add")
    # DS-CNN, calibrated on random MFCC-like inputs of the float model's distribution.
    ds, din = built["ds_cnn"]
    rng = rng_for("ds_cnn/calibration")
    calib = [{"input": draw(rng, ("normal", 1.0), [1, 1, 49, 10])} for _ in range(32)]
    write_quantized("ds_cnn_qdq", "ds_cnn", fold_bn(ds), din, {"input": "standard normal"},
                    calib, "32 standard-normal samples (seeded, not the golden inputs)", "QDQ",
                    index, desc_extra="; BatchNormalization folded into the Conv layers first",
                    prepared="BatchNormalization folded into Conv")
    # The trained LeNet, if present (written by train_lenet.py).
    trained = MODELS / "lenet_mnist" / "model.onnx"
    if trained.exists():
        tm = onnx.load(str(trained))
        images, labels = mnist("test")
        x = mnist_nchw(images[:SAMPLES])
        tr_images, _ = mnist("train")
        calib = [{"input": v} for v in mnist_nchw(tr_images[:100])]
        q = write_quantized("lenet_mnist_qdq", "lenet_mnist", tm, {"input": x},
                            {"input": MNIST_TEST_DIST.format(n=SAMPLES)}, calib,
                            "the first 100 digits of data/mnist-10k, pixel/255", "QDQ", index,
                            desc_extra="; the trained LeNet-5")
        acc = mnist_accuracy(MODELS / "lenet_mnist_qdq" / "model.onnx", images, labels)
        meta_path = MODELS / "lenet_mnist_qdq" / "golden" / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta["test_accuracy"] = dict(value=acc, dataset="data/mnist-test (10,000 digits)",
                                     runtime=f"onnxruntime {ORT_VERSION}")
        write_json(meta_path, meta)
        print(f"lenet_mnist_qdq: int8 test accuracy {acc:.4f}")


def mnist_accuracy(path: Path, images, labels) -> float:
    from onnx_common import ort_session

    sess = ort_session(path)
    x = mnist_nchw(images)
    correct = 0
    for i in range(len(x)):
        y = sess.run(None, {"input": x[i]})[0]
        correct += int(np.argmax(y) == labels[i])
    return correct / len(x)


def main():
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's pre-processing advice
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", help="substring filter on model names (for development)")
    args = ap.parse_args()
    index: list = []
    built = {}
    if not args.only:
        # Start from a clean tree (models removed from the specs disappear), keeping the
        # trained model, which train_lenet.py writes.
        for d in sorted(MODELS.glob("*")) if MODELS.exists() else []:
            if d.is_dir() and d.name != "lenet_mnist":
                shutil.rmtree(d)
    for name, (fn, opset, kw) in NETWORKS.items():
        if args.only and args.only not in name:
            continue
        built[name] = build_and_write(name, fn, opset, kw, index)
    for name, (fn, opset, kw) in OPS.items():
        if args.only and args.only not in name:
            continue
        build_and_write(f"ops/{name}", fn, opset, kw, index)
    if not args.only:
        build_quantized(built, index)
        write_index(index)
    print(f"wrote {len(index)} models under {MODELS}")


def write_index(index):
    from readme import write_readme
    write_readme(index)


if __name__ == "__main__":
    main()
