"""Single-operator test models (int8 and float32) for kiln's golden vectors.

Each spec is a small function that builds one operator through a `Ctx`. The same
function builds three flavours of the model:

  * "i8"    - the int8 model (int8 activations, int8 weights, int32 bias);
  * "f32"   - the float32 model (weights = the dequantized int8 weights);
  * "calib" - a float32 twin with the fused activation switched off, used only to
              pick the int8 output quantization from the real-valued range of the
              pre-activation result (so outputs are neither saturated nor constant).

Everything is seeded from the model name, so every run writes the same bytes.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Callable, Optional

import numpy as np

from tflite_writer import ACT, SAME, VALID, ModelWriter, Quant


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def real_range(q):
    s, zp = q
    return ((-128 - zp) * s, (127 - zp) * s)


class Ctx:
    def __init__(self, mode: str, name: str, k: float = 1.0, out_q=None):
        assert mode in ("i8", "f32", "calib")
        self.mode = mode
        self.float = mode != "i8"
        self.k = k
        self.out_q = out_q
        self.m = ModelWriter(f"kiln golden op model {name}")
        self.rng = np.random.default_rng(seed_of(name.replace("_f32_", "_i8_")))
        self.inputs = []   # (tensor, shape, dtype, q or real range)
        self.outputs = []
        self.first_in_q = None
        self.has_weights = False

    # -- tensors ----------------------------------------------------------------
    def inp(self, name, shape, q, dtype=None):
        """Activation input; q = (scale, zero_point) of the int8 variant."""
        dtype = dtype or ("float32" if self.float else "int8")
        t = self.m.tensor(name, shape, dtype, Quant(*q) if dtype == "int8" else None)
        self.inputs.append(dict(tensor=t, shape=list(shape), dtype=dtype, q=q))
        if self.first_in_q is None:
            self.first_in_q = q
        return t

    def out(self, name, shape, q="auto", dtype=None):
        """Output; q: (scale, zp) | "auto" | "sym" | "relu" (picked by calibration)
        | "in" (same as the first input)."""
        dtype = dtype or ("float32" if self.float else "int8")
        quant = None
        if dtype == "int8":
            if q == "in":
                q = self.first_in_q
            elif isinstance(q, str):
                q = self.out_q
                assert q is not None, "calibrated output quantization missing"
            quant = Quant(*q)
        t = self.m.tensor(name, shape, dtype, quant)
        self.outputs.append(dict(tensor=t, shape=list(shape), dtype=dtype, q=q))
        return t

    def weight(self, name, wf, qdim: Optional[int]):
        """Symmetric int8 weights; qdim = per-channel axis, or None (per tensor)."""
        self.has_weights = True
        wf = np.asarray(wf, np.float64)
        if qdim is None:
            s0 = np.array([np.abs(wf).max() / 127.0])
            wq = np.clip(np.round(wf / s0[0]), -127, 127)
            deq = wq * s0[0] * self.k
        else:
            axes = tuple(i for i in range(wf.ndim) if i != qdim)
            s0 = np.abs(wf).max(axis=axes) / 127.0
            s0 = np.where(s0 == 0, 1.0 / 127.0, s0)
            bshape = [1] * wf.ndim
            bshape[qdim] = -1
            wq = np.clip(np.round(wf / s0.reshape(bshape)), -127, 127)
            deq = wq * s0.reshape(bshape) * self.k
        s0 = s0.astype(np.float32)
        if self.float:
            t = self.m.tensor(name, wf.shape, "float32", None, deq.astype(np.float32))
        else:
            scales = (s0 * np.float32(self.k)).astype(np.float32)
            t = self.m.tensor(name, wf.shape, "int8",
                              Quant(list(scales), [0] * len(scales), qdim or 0),
                              wq.astype(np.int8))
        return t, s0

    def bias(self, name, bf, in_scale, w_s0):
        """int32 bias, scale = input_scale * weight_scale (per channel)."""
        bf = np.asarray(bf, np.float64)
        bscale0 = np.float64(np.float32(in_scale)) * w_s0.astype(np.float64)
        if bscale0.size == 1:
            bscale0 = np.full(bf.shape, bscale0[0])
        bq = np.round(bf / bscale0).astype(np.int64)
        bq = np.clip(bq, -(2**31) + 1, 2**31 - 1)
        scales = (np.float32(in_scale) * (w_s0 * np.float32(self.k))).astype(np.float32)
        if self.float:
            full = np.full(bf.shape, scales[0]) if scales.size == 1 else scales
            return self.m.tensor(name, bf.shape, "float32", None,
                                 (bq * full.astype(np.float64)).astype(np.float32))
        return self.m.tensor(name, bf.shape, "int32",
                             Quant(list(scales), [0] * len(scales), 0), bq.astype(np.int32))

    def const_i32(self, name, values):
        v = np.asarray(values, np.int32)
        return self.m.tensor(name, list(v.shape), "int32", None, v)

    def act(self, a: str) -> int:
        return ACT["NONE"] if self.mode == "calib" else ACT[a]

    def op(self, opname, ins, outs, options_name=None, options=None):
        self.m.op(opname, ins, outs, options_name, options)

    def finish(self) -> bytes:
        self.m.io([i["tensor"] for i in self.inputs], [o["tensor"] for o in self.outputs])
        return self.m.finish()


@dataclasses.dataclass
class Spec:
    name: str                 # without the dtype; "{op}_{dt}_..." built from op + rest
    op: str
    rest: str
    fn: Callable[[Ctx], None]
    act: str = "NONE"
    out_q: object = "auto"    # "auto" | "sym" | "relu" | "fixed" (fn decides)
    i8: bool = True
    f32: bool = True
    calibrate: bool = True

    def folder(self, dt: str) -> str:
        if self.rest.startswith(("f32_to_", "i8_to_")):  # QUANTIZE / DEQUANTIZE name their types
            return f"{self.op}_{self.rest}"
        return f"{self.op}_{dt}_{self.rest}"


SPECS: list[Spec] = []


def spec(**kw):
    SPECS.append(Spec(**kw))


def conv_out(n, k, s, d, pad):
    eff = d * (k - 1) + 1
    return -(-n // s) if pad == SAME else -(-(n - eff + 1) // s)


# ---------------------------------------------------------------------------- CONV_2D
def conv2d(in_shape, out_ch, kh, kw, sh, sw, pad, dil, act, per_channel, in_q, out_q="auto"):
    def fn(c: Ctx):
        n, h, w, ci = in_shape
        fan_in = kh * kw * ci
        wf = c.rng.normal(0, 1.0 / np.sqrt(fan_in), (out_ch, kh, kw, ci))
        in_std = in_q[0] * 255 / np.sqrt(12)
        bf = c.rng.normal(0, 0.5 * in_std, out_ch)
        x = c.inp("input", in_shape, in_q)
        wt, s0 = c.weight("filter", wf, 0 if per_channel else None)
        b = c.bias("bias", bf, in_q[0], s0)
        oh, ow = conv_out(h, kh, sh, dil, pad), conv_out(w, kw, sw, dil, pad)
        y = c.out("output", [n, oh, ow, out_ch], out_q)
        c.op("CONV_2D", [x, wt, b], [y], "Conv2DOptions",
             dict(Padding=pad, StrideW=sw, StrideH=sh, FusedActivationFunction=c.act(act),
                  DilationWFactor=dil, DilationHFactor=dil))
    return fn


def add_conv(in_shape, out_ch, k, s, pad, dil, act, pc, in_q, out_q="auto", extra="", f32=True):
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (s, s) if isinstance(s, int) else s
    stag = f"s{sh}" if sh == sw else f"s{sh}x{sw}"
    rest = f"{stag}_{'same' if pad == SAME else 'valid'}_dil{dil}_{act.lower()}_" \
           f"{'perchannel' if pc else 'pertensor'}{extra}"
    spec(name=rest, op="conv_2d", rest=rest, act=act, out_q=out_q, f32=f32,
         fn=conv2d(in_shape, out_ch, kh, kw, sh, sw, pad, dil, act, pc, in_q, out_q))


add_conv([1, 8, 8, 3], 8, 3, 1, SAME, 1, "NONE", True, (0.0078125, -128), extra="_k3")
add_conv([1, 9, 9, 4], 8, 3, 2, SAME, 1, "RELU6", True, (0.05, -3), extra="_k3")
add_conv([1, 9, 9, 4], 6, 3, 1, VALID, 1, "RELU", False, (0.5, 17), out_q="relu", extra="_k3")
add_conv([1, 13, 11, 2], 4, (3, 5), 3, VALID, 1, "NONE", True, (0.02, 0), out_q="sym", extra="_k3x5", f32=False)
add_conv([1, 10, 10, 4], 6, 3, 1, SAME, 2, "RELU", True, (0.1, 5), extra="_k3")
add_conv([1, 12, 12, 3], 5, 3, 2, VALID, 2, "RELU_N1_TO_1", False, (0.01, -7), extra="_k3", f32=False)
add_conv([1, 6, 6, 128], 8, 3, 1, SAME, 1, "NONE", True, (0.003, 9), extra="_k3_deep128")
add_conv([2, 6, 6, 3], 4, 3, 1, SAME, 1, "RELU", True, (1.0, -128), out_q="relu", extra="_k3_batch2", f32=False)
add_conv([1, 10, 7, 5], 7, 3, (2, 1), SAME, 1, "NONE", True, (0.25, 31), extra="_k3", f32=False)
add_conv([1, 8, 8, 16], 12, 1, 1, VALID, 1, "RELU6", False, (0.04, -40), extra="_k1", f32=False)
add_conv([1, 7, 7, 4], 4, 3, 1, SAME, 1, "RELU_N1_TO_1", True, (0.001, 60), extra="_k3", f32=False)


# -------------------------------------------------------------------- DEPTHWISE_CONV_2D
def dwconv(in_shape, mult, kh, kw, s, pad, dil, act, per_channel, in_q, out_q="auto"):
    def fn(c: Ctx):
        n, h, w, ci = in_shape
        co = ci * mult
        wf = c.rng.normal(0, 1.0 / np.sqrt(kh * kw), (1, kh, kw, co))
        in_std = in_q[0] * 255 / np.sqrt(12)
        bf = c.rng.normal(0, 0.5 * in_std, co)
        x = c.inp("input", in_shape, in_q)
        wt, s0 = c.weight("filter", wf, 3 if per_channel else None)
        b = c.bias("bias", bf, in_q[0], s0)
        oh, ow = conv_out(h, kh, s, dil, pad), conv_out(w, kw, s, dil, pad)
        y = c.out("output", [n, oh, ow, co], out_q)
        c.op("DEPTHWISE_CONV_2D", [x, wt, b], [y], "DepthwiseConv2DOptions",
             dict(Padding=pad, StrideW=s, StrideH=s, DepthMultiplier=mult,
                  FusedActivationFunction=c.act(act), DilationWFactor=dil, DilationHFactor=dil))
    return fn


def add_dw(in_shape, mult, k, s, pad, dil, act, pc, in_q, out_q="auto", extra="", f32=True):
    rest = f"s{s}_{'same' if pad == SAME else 'valid'}_dil{dil}_m{mult}_{act.lower()}_" \
           f"{'perchannel' if pc else 'pertensor'}{extra}"
    spec(name=rest, op="depthwise_conv_2d", rest=rest, act=act, out_q=out_q, f32=f32,
         fn=dwconv(in_shape, mult, k, k, s, pad, dil, act, pc, in_q, out_q))


add_dw([1, 8, 8, 8], 1, 3, 1, SAME, 1, "NONE", True, (0.02, -128))
add_dw([1, 9, 9, 8], 1, 3, 2, SAME, 1, "RELU6", True, (0.05, 3))
add_dw([1, 7, 7, 4], 2, 3, 1, VALID, 1, "RELU", False, (0.1, -11), out_q="relu")
add_dw([1, 12, 12, 4], 1, 3, 2, VALID, 2, "NONE", True, (0.3, 0), out_q="sym")
add_dw([1, 10, 10, 3], 2, 3, 3, SAME, 1, "RELU_N1_TO_1", True, (0.004, 21), f32=False)
add_dw([1, 9, 9, 6], 1, 3, 1, SAME, 2, "RELU", True, (0.6, -128), f32=False)
add_dw([1, 10, 5, 32], 1, 3, 1, SAME, 1, "RELU", True, (0.03, -5), extra="_c32", f32=False)
add_dw([1, 8, 8, 2], 3, 5, 2, SAME, 1, "NONE", False, (0.07, 13), extra="_k5", f32=False)


# ---------------------------------------------------------------------- FULLY_CONNECTED
def fc(in_shape, units, act, per_channel, in_q, out_q="auto", bias=True):
    def fn(c: Ctx):
        depth = in_shape[-1]
        batches = int(np.prod(in_shape)) // depth
        wf = c.rng.normal(0, 1.0 / np.sqrt(depth), (units, depth))
        in_std = in_q[0] * 255 / np.sqrt(12)
        bf = c.rng.normal(0, 0.5 * in_std, units)
        x = c.inp("input", in_shape, in_q)
        wt, s0 = c.weight("weights", wf, 0 if per_channel else None)
        b = c.bias("bias", bf, in_q[0], s0) if bias else -1
        y = c.out("output", [batches, units], out_q)
        c.op("FULLY_CONNECTED", [x, wt, b], [y], "FullyConnectedOptions",
             dict(FusedActivationFunction=c.act(act), KeepNumDims=False))
    return fn


def add_fc(in_shape, units, act, pc, in_q, out_q="auto", extra="", f32=True, bias=True):
    shp = "x".join(str(d) for d in in_shape)
    rest = f"in{shp}_out{units}_{act.lower()}_{'perchannel' if pc else 'pertensor'}{extra}"
    spec(name=rest, op="fully_connected", rest=rest, act=act, out_q=out_q, f32=f32,
         fn=fc(in_shape, units, act, pc, in_q, out_q, bias))


add_fc([1, 32], 16, "NONE", True, (0.05, -3))
add_fc([1, 64], 10, "RELU", False, (0.02, -128), out_q="relu")
add_fc([4, 24], 8, "RELU6", True, (0.08, 7), extra="_batch4")
add_fc([1, 640], 12, "NONE", False, (0.01, 0), extra="_large")
add_fc([1, 640], 32, "RELU", True, (0.5, -128), extra="_large", f32=False)
add_fc([3, 16], 5, "RELU_N1_TO_1", False, (0.002, 40), extra="_batch3", f32=False)
add_fc([1, 2, 2, 8], 5, "NONE", True, (0.1, 1), extra="_4dinput", f32=False)
add_fc([2, 20], 6, "NONE", False, (0.03, -9), out_q="sym", extra="_nobias", bias=False, f32=False)


# ---------------------------------------------------------------------------- POOLING
def pool(opname, in_shape, fh, fw, s, pad, act, in_q):
    def fn(c: Ctx):
        n, h, w, ch = in_shape
        x = c.inp("input", in_shape, in_q)
        oh, ow = conv_out(h, fh, s, 1, pad), conv_out(w, fw, s, 1, pad)
        y = c.out("output", [n, oh, ow, ch], "in")
        c.op(opname, [x], [y], "Pool2DOptions",
             dict(Padding=pad, StrideW=s, StrideH=s, FilterWidth=fw, FilterHeight=fh,
                  FusedActivationFunction=ACT[act]))
    return fn


def add_pool(op, in_shape, f, s, pad, act, in_q, extra="", f32=True):
    fh, fw = (f, f) if isinstance(f, int) else f
    rest = f"f{fh}x{fw}_s{s}_{'same' if pad == SAME else 'valid'}_{act.lower()}{extra}"
    spec(name=rest, op=op.lower(), rest=rest, act=act, out_q="in", f32=f32, calibrate=False,
         fn=pool(op, in_shape, fh, fw, s, pad, act, in_q))


add_pool("AVERAGE_POOL_2D", [1, 8, 8, 4], 2, 2, VALID, "NONE", (0.05, -3))
add_pool("AVERAGE_POOL_2D", [1, 7, 7, 3], 3, 1, SAME, "RELU", (0.1, 20), f32=False)
add_pool("AVERAGE_POOL_2D", [1, 9, 9, 4], 3, 2, SAME, "RELU6", (0.06, -80), f32=False)
add_pool("AVERAGE_POOL_2D", [1, 5, 5, 16], 5, 1, VALID, "NONE", (0.2, -128), extra="_global")
add_pool("AVERAGE_POOL_2D", [1, 10, 9, 3], (2, 3), 3, VALID, "RELU_N1_TO_1", (0.02, 3), f32=False)
add_pool("MAX_POOL_2D", [1, 8, 8, 4], 2, 2, VALID, "NONE", (0.05, -3))
add_pool("MAX_POOL_2D", [1, 9, 9, 3], 3, 2, SAME, "RELU", (0.1, 20))
add_pool("MAX_POOL_2D", [1, 7, 7, 4], 3, 1, SAME, "RELU6", (0.05, -10), f32=False)
add_pool("MAX_POOL_2D", [2, 9, 9, 2], 3, 3, VALID, "NONE", (0.3, 0), extra="_batch2", f32=False)
add_pool("MAX_POOL_2D", [1, 6, 6, 3], 2, 1, VALID, "RELU_N1_TO_1", (0.01, 3), f32=False)


# ------------------------------------------------------------------------ ADD and MUL
def binary(opname, shape1, shape2, act, q1, q2, out_q="auto"):
    def fn(c: Ctx):
        a = c.inp("input1", shape1, q1)
        b = c.inp("input2", shape2, q2)
        oshape = list(np.broadcast_shapes(tuple(shape1), tuple(shape2)))
        y = c.out("output", oshape, out_q)
        opt = {"ADD": "AddOptions", "MUL": "MulOptions", "SUB": "SubOptions", "DIV": "DivOptions"}[opname]
        c.op(opname, [a, b], [y], opt, dict(FusedActivationFunction=c.act(act)))
    return fn


def add_bin(op, s1, s2, act, q1, q2, out_q="auto", extra="", f32=True, calibrate=True):
    t1 = "x".join(map(str, s1))
    t2 = "x".join(map(str, s2))
    rest = f"{t1}_{t2}_{act.lower()}{extra}"
    spec(name=rest, op=op.lower(), rest=rest, act=act, out_q=out_q, f32=f32, calibrate=calibrate,
         fn=binary(op, s1, s2, act, q1, q2, out_q))


add_bin("ADD", [1, 4, 4, 8], [1, 4, 4, 8], "NONE", (0.05, -3), (0.1, 10), extra="_twoscales")
add_bin("ADD", [1, 4, 4, 8], [1, 1, 1, 8], "RELU", (0.03, 5), (0.08, -20), extra="_bcast")
add_bin("ADD", [1, 4, 4, 8], [1, 4, 1, 1], "RELU6", (0.05, 0), (0.04, -7), extra="_bcast", f32=False)
add_bin("ADD", [1, 1, 4, 1], [1, 3, 1, 5], "NONE", (0.5, -128), (0.25, 9), extra="_bcastboth", f32=False)
add_bin("ADD", [1, 5, 5, 4], [1, 5, 5, 4], "RELU_N1_TO_1", (0.005, 1), (0.007, -2), f32=False)
add_bin("ADD", [2, 3, 6], [2, 3, 6], "NONE", (1.0, -128), (1.0, -128), out_q=(2.0, -128), extra="_zpm128", f32=False)
add_bin("MUL", [1, 4, 4, 8], [1, 4, 4, 8], "NONE", (0.05, -3), (0.1, 10), extra="_twoscales")
add_bin("MUL", [1, 4, 4, 8], [1, 4, 1, 1], "RELU", (0.03, 5), (0.02, -20), extra="_bcast")
add_bin("MUL", [1, 4, 4, 8], [1, 1, 1, 8], "RELU6", (0.04, 0), (0.03, -7), extra="_bcast", f32=False)
add_bin("MUL", [1, 5, 5, 4], [1, 5, 5, 4], "RELU_N1_TO_1", (0.01, 1), (0.009, -2), f32=False)
add_bin("MUL", [1, 6, 6, 4], [1], "NONE", (0.2, -128), (0.01, 0), extra="_scalar", f32=False)
add_bin("SUB", [1, 4, 4, 8], [1, 4, 4, 8], "NONE", (0.05, -3), (0.1, 10), extra="_twoscales")
add_bin("SUB", [1, 4, 4, 8], [1, 1, 1, 8], "RELU", (0.03, 5), (0.08, -20), extra="_bcast")
add_bin("SUB", [1, 1, 4, 1], [1, 3, 1, 5], "RELU6", (0.5, -128), (0.25, 9), extra="_bcastboth", f32=False)
add_bin("SUB", [1, 5, 5, 4], [1, 5, 5, 4], "RELU_N1_TO_1", (0.005, 1), (0.007, -2), f32=False)
add_bin("SUB", [2, 3, 6], [6], "NONE", (0.0123, 7), (0.0371, -50), extra="_oddscales", f32=False)
# DIV: fixed output quantization (quotients by divisors near 0 would stretch a calibrated
# range). Uniform int8 inputs hit the divisor's zero point and dividends of 0 and -1, where
# TFLM's int8 arithmetic relies on x86 shift behaviour (see runtime div.rs).
add_bin("DIV", [1, 4, 4, 8], [1, 4, 4, 8], "NONE", (0.05, -3), (0.05, -128), out_q=(0.1, 0),
        extra="_posdivisor", calibrate=False)
add_bin("DIV", [1, 4, 4, 8], [1, 1, 1, 8], "RELU", (0.03, 5), (0.08, -20), out_q=(0.05, -128),
        extra="_bcast", calibrate=False)
add_bin("DIV", [2, 3, 6], [1], "RELU6", (0.1, 10), (0.02, -128), out_q=(6.0 / 255, -128),
        extra="_scalar", f32=False, calibrate=False)
add_bin("DIV", [1, 64], [1, 64], "NONE", (0.01, 0), (0.5, 0), out_q=(0.02, 1),
        extra="_smallquotients", f32=False, calibrate=False)


# A short chain whose intermediate tensors live in kiln's arena, so the compiled crate
# runs LEAKY_RELU, SUB (into its second operand) and DIV in place over their operands.
def chain_leaky_sub_div(shape, bshape):
    def fn(c: Ctx):
        mid = lambda name, q: c.m.tensor(name, shape, "float32" if c.float else "int8",
                                         None if c.float else Quant(*q))
        x1 = c.inp("input1", shape, (0.05, -3))
        x2 = c.inp("input2", shape, (0.05, 10))
        x3 = c.inp("input3", bshape, (0.05, -128))
        t1 = mid("leaky", (0.04, -60))
        c.op("LEAKY_RELU", [x1], [t1], "LeakyReluOptions", dict(Alpha=0.1))
        t2 = mid("difference", (0.08, 0))
        c.op("SUB", [x2, t1], [t2], "SubOptions", dict(FusedActivationFunction=ACT["NONE"]))
        y = c.out("output", shape, (0.1, 0))
        c.op("DIV", [t2, x3], [y], "DivOptions", dict(FusedActivationFunction=ACT["NONE"]))
    return fn


spec(name="1x4x4x8_chain_leaky_relu_div", op="sub", rest="1x4x4x8_chain_leaky_relu_div",
     out_q="fixed", calibrate=False, fn=chain_leaky_sub_div([1, 4, 4, 8], [1, 1, 1, 8]))


# SUB -> LEAKY_RELU (in place) -> DIV (in place, into its divisor) -> TRANSPOSE.
def chain_sub_leaky_div_transpose(shape, bshape, perm):
    def fn(c: Ctx):
        mid = lambda name, q: c.m.tensor(name, shape, "float32" if c.float else "int8",
                                         None if c.float else Quant(*q))
        x1 = c.inp("input1", shape, (0.05, -3))
        x2 = c.inp("input2", shape, (0.05, 10))
        x3 = c.inp("input3", bshape, (0.04, 7))
        t1 = mid("difference", (0.08, 0))
        c.op("SUB", [x1, x2], [t1], "SubOptions", dict(FusedActivationFunction=ACT["NONE"]))
        t2 = mid("leaky", (0.05, -100))
        c.op("LEAKY_RELU", [t1], [t2], "LeakyReluOptions", dict(Alpha=0.3))
        t3 = mid("quotient", (0.06, 2))
        c.op("DIV", [x3, t2], [t3], "DivOptions", dict(FusedActivationFunction=ACT["RELU"]))
        y = c.out("output", [shape[a] for a in perm], (0.06, 2))
        p = c.const_i32("perm", perm)
        c.op("TRANSPOSE", [t3, p], [y], "TransposeOptions", {})
    return fn


spec(name="1x4x4x8_chain_sub_leaky_relu_transpose", op="div",
     rest="1x4x4x8_chain_sub_leaky_relu_transpose", out_q="fixed", calibrate=False,
     fn=chain_sub_leaky_div_transpose([1, 4, 4, 8], [1, 1, 1, 8], [0, 3, 1, 2]))


# ---------------------------------------------------------------------------- RESHAPE
def reshape(in_shape, out_shape, q):
    def fn(c: Ctx):
        x = c.inp("input", in_shape, q)
        sh = c.const_i32("shape", out_shape)
        y = c.out("output", out_shape, "in")
        c.op("RESHAPE", [x, sh], [y], "ReshapeOptions", dict(NewShape=list(out_shape)))
    return fn


for ins, outs, q in [([1, 4, 4, 8], [1, 128], (0.05, -3)), ([1, 48], [1, 4, 3, 4], (0.1, 17))]:
    rest = "x".join(map(str, ins)) + "_to_" + "x".join(map(str, outs))
    spec(name=rest, op="reshape", rest=rest, out_q="in", calibrate=False,
         f32=(ins[0] == 1 and len(ins) == 4), fn=reshape(ins, outs, q))


# ---------------------------------------------------------------------------- SOFTMAX
def softmax(shape, beta, q):
    def fn(c: Ctx):
        x = c.inp("input", shape, q)
        y = c.out("output", shape, (1.0 / 256, -128))
        c.op("SOFTMAX", [x], [y], "SoftmaxOptions", dict(Beta=beta))
    return fn


# Small input scales keep the int8 probabilities away from 0 (-128); [3, 12] uses a
# KWS-like scale where one class dominates.
for shape, beta, q, f32 in [([1, 10], 1.0, (0.03, 5), True), ([1, 10], 0.5, (0.05, -20), False),
                            ([1, 256], 1.0, (0.01, 0), True), ([1, 4], 2.0, (0.02, -128), True),
                            ([3, 12], 1.0, (0.15, 20), False), ([1, 2, 2, 6], 1.0, (0.04, -1), False),
                            ([1, 100], 0.25, (0.1, 7), False)]:
    rest = "x".join(map(str, shape)) + f"_beta{beta:g}"
    spec(name=rest, op="softmax", rest=rest, out_q="fixed", calibrate=False, f32=f32,
         fn=softmax(shape, beta, q))


# ------------------------------------------------------------------------------- MEAN
def mean(in_shape, axes, keep, in_q, out_q):
    def fn(c: Ctx):
        x = c.inp("input", in_shape, in_q)
        ax = c.const_i32("axis", axes)
        oshape = [1 if i in axes else d for i, d in enumerate(in_shape)] if keep else \
            [d for i, d in enumerate(in_shape) if i not in axes]
        y = c.out("output", oshape, out_q)
        c.op("MEAN", [x, ax], [y], "ReducerOptions", dict(KeepDims=bool(keep)))
    return fn


for ins, axes, keep, qi, qo, f32 in [
        ([1, 6, 6, 8], [1, 2], True, (0.05, -3), "in", True),
        ([1, 6, 6, 8], [1, 2], False, (0.05, -3), (0.02, 10), False),
        ([1, 4, 5, 6], [3], False, (0.1, 7), (0.06, -5), False),
        ([1, 4, 5, 6], [1], True, (0.02, -128), (0.02, -128), False),
        ([1, 32, 32, 4], [1, 2], True, (0.03, 11), (0.005, -2), True),
        ([2, 3, 4, 5], [0, 2], False, (0.5, 0), (0.1, 3), False)]:
    rest = "x".join(map(str, ins)) + "_axes" + "".join(map(str, axes)) + \
        ("_keepdims" if keep else "_nokeepdims") + ("_samequant" if qo in ("in", qi) else "_requant")
    spec(name=rest, op="mean", rest=rest, out_q=qo, calibrate=False, f32=f32,
         fn=mean(ins, axes, keep, qi, qo))


# -------------------------------------------------------------------------------- PAD
def pad(in_shape, paddings, q):
    def fn(c: Ctx):
        x = c.inp("input", in_shape, q)
        p = c.const_i32("paddings", paddings)
        oshape = [d + a + b for d, (a, b) in zip(in_shape, paddings)]
        y = c.out("output", oshape, "in")
        c.op("PAD", [x, p], [y], "PadOptions", {})
    return fn


for ins, pads, q, f32 in [([1, 4, 4, 3], [[0, 0], [1, 1], [1, 1], [0, 0]], (0.05, -5), True),
                          ([1, 5, 3, 2], [[0, 0], [2, 0], [0, 3], [1, 2]], (0.1, 17), True),
                          ([2, 3, 3, 4], [[1, 0], [0, 1], [2, 2], [0, 0]], (0.02, -128), False),
                          ([3, 5], [[1, 2], [3, 0]], (0.3, 0), False)]:
    rest = "x".join(map(str, ins)) + "_p" + "".join(f"{a}{b}" for a, b in pads)
    spec(name=rest, op="pad", rest=rest, out_q="in", calibrate=False, f32=f32, fn=pad(ins, pads, q))


# ---------------------------------------------------------------------- CONCATENATION
def concat(shapes, axis, q):
    def fn(c: Ctx):
        xs = [c.inp(f"input{i}", s, q) for i, s in enumerate(shapes)]
        ax = axis % len(shapes[0])
        oshape = list(shapes[0])
        oshape[ax] = sum(s[ax] for s in shapes)
        y = c.out("output", oshape, "in")
        c.op("CONCATENATION", xs, [y], "ConcatenationOptions",
             dict(Axis=axis, FusedActivationFunction=ACT["NONE"]))
    return fn


for shapes, axis, q, f32 in [([[1, 4, 4, 3], [1, 4, 4, 5]], 3, (0.05, -3), True),
                             ([[1, 2, 4, 3], [1, 3, 4, 3], [1, 1, 4, 3]], 1, (0.1, 17), True),
                             ([[2, 5], [2, 7]], -1, (0.02, -128), False),
                             ([[1, 3], [2, 3]], 0, (0.5, 0), False)]:
    rest = f"axis{axis}_" + "_".join("x".join(map(str, s)) for s in shapes)
    spec(name=rest, op="concatenation", rest=rest, out_q="in", calibrate=False, f32=f32,
         fn=concat(shapes, axis, q))


# -------------------------------------------------------------- QUANTIZE / DEQUANTIZE
def quantize_f32(shape, out_q, in_range):
    def fn(c: Ctx):
        x = c.inp("input", shape, in_range, dtype="float32")
        y = c.out("output", shape, out_q, dtype="int8")
        c.op("QUANTIZE", [x], [y])
    return fn


def requantize(shape, in_q, out_q):
    def fn(c: Ctx):
        x = c.inp("input", shape, in_q, dtype="int8")
        y = c.out("output", shape, out_q, dtype="int8")
        c.op("QUANTIZE", [x], [y])
    return fn


def dequantize(shape, in_q):
    def fn(c: Ctx):
        x = c.inp("input", shape, in_q, dtype="int8")
        y = c.out("output", shape, None, dtype="float32")
        c.op("DEQUANTIZE", [x], [y])
    return fn


def qtag(q):
    return f"s{q[0]:.4g}_zp{q[1]}".replace("-", "m")


# for f32 inputs, the "q" is the int8 quantization whose real range the floats cover
for shape, oq, rq in [([1, 4, 4, 8], (0.05, -3), (0.05, -3)), ([1, 64], (0.003, 0), (0.004, 0)),
                      ([2, 10], (1.0, -128), (1.0, -128))]:
    rest = "f32_to_i8_" + "x".join(map(str, shape)) + "_" + qtag(oq)
    spec(name=rest, op="quantize", rest=rest, out_q="fixed", calibrate=False, f32=False,
         fn=quantize_f32(shape, oq, rq))
for shape, iq, oq in [([1, 4, 4, 8], (0.05, -3), (0.1, 10)), ([1, 32], (0.5, -128), (0.45, -100)),
                      ([1, 6, 6, 2], (0.01, 0), (0.0125, -128))]:
    rest = "i8_to_i8_" + "x".join(map(str, shape)) + f"_{qtag(iq)}_to_{qtag(oq)}"
    spec(name=rest, op="quantize", rest=rest, out_q="fixed", calibrate=False, f32=False,
         fn=requantize(shape, iq, oq))
for shape, iq in [([1, 4, 4, 8], (0.05, -3)), ([1, 10], (1.0 / 256, -128))]:
    rest = "i8_to_f32_" + "x".join(map(str, shape)) + "_" + qtag(iq)
    spec(name=rest, op="dequantize", rest=rest, out_q="fixed", calibrate=False, f32=False,
         fn=dequantize(shape, iq))


# ---------------------------------------------------------------- unary activations
def unary(opname, shape, in_q, out_q):
    def fn(c: Ctx):
        x = c.inp("input", shape, in_q)
        y = c.out("output", shape, out_q)
        c.op(opname, [x], [y])
    return fn


for opname, shape, iq, oq, f32 in [
        ("LOGISTIC", [1, 4, 4, 8], (0.05, 0), (1.0 / 256, -128), True),
        ("LOGISTIC", [1, 64], (0.03, -20), (1.0 / 256, -128), False),
        ("LOGISTIC", [2, 3, 5], (0.06, 10), (1.0 / 256, -128), False),
        ("TANH", [1, 4, 4, 8], (0.02, 3), (1.0 / 128, 0), True),
        ("TANH", [1, 64], (0.01, -128), (1.0 / 128, 0), False),
        ("RELU", [1, 4, 4, 8], (0.05, -10), (0.03, -128), True),
        ("RELU", [1, 64], (0.1, 20), (0.1, 20), False),
        # TFLM's int8 RELU6 clamps in the input's quantization and ignores the output's
        # (LiteRT requantizes), so in and out quantization are equal here.
        ("RELU6", [1, 4, 4, 8], (0.05, 0), (0.05, 0), True),
        ("RELU6", [1, 64], (0.04, -7), (0.04, -7), False)]:
    rest = "x".join(map(str, shape)) + "_" + qtag(iq) + "_to_" + qtag(oq)
    spec(name=rest, op=opname.lower(), rest=rest, out_q="fixed", calibrate=False, f32=f32,
         fn=unary(opname, shape, iq, oq))


# ---------------------------------------------------------------------------- LEAKY_RELU
def leaky_relu(shape, alpha, in_q, out_q):
    def fn(c: Ctx):
        x = c.inp("input", shape, in_q)
        y = c.out("output", shape, out_q)
        c.op("LEAKY_RELU", [x], [y], "LeakyReluOptions", dict(Alpha=alpha))
    return fn


for shape, alpha, iq, oq, f32 in [
        ([1, 4, 4, 8], 0.2, (0.05, -3), (0.04, -40), True),
        ([1, 64], 0.01, (0.1, 20), (0.1, 20), False),
        ([2, 3, 5], 1.5, (0.06, 10), (0.08, 0), False),
        ([1, 32], -0.5, (0.05, 0), (0.03, -60), True)]:
    atag = f"{alpha:g}".replace("-", "m")
    rest = "x".join(map(str, shape)) + f"_alpha{atag}_" + qtag(iq) + "_to_" + qtag(oq)
    spec(name=rest, op="leaky_relu", rest=rest, out_q="fixed", calibrate=False, f32=f32,
         fn=leaky_relu(shape, alpha, iq, oq))


# ---------------------------------------------------------------------------- TRANSPOSE
def transpose(in_shape, perm, q):
    def fn(c: Ctx):
        x = c.inp("input", in_shape, q)
        p = c.const_i32("perm", perm)
        y = c.out("output", [in_shape[a] for a in perm], "in")
        c.op("TRANSPOSE", [x, p], [y], "TransposeOptions", {})
    return fn


for ins, perm, q, f32 in [([1, 2, 3, 4], [0, 3, 1, 2], (0.05, -3), True),
                          ([2, 3, 4], [2, 0, 1], (0.1, 17), False),
                          ([5, 7], [1, 0], (0.02, -128), True),
                          ([1, 2, 3, 2, 2], [4, 2, 0, 3, 1], (0.3, 0), False)]:
    rest = "x".join(map(str, ins)) + "_perm" + "".join(map(str, perm))
    spec(name=rest, op="transpose", rest=rest, out_q="in", calibrate=False, f32=f32,
         fn=transpose(ins, perm, q))


# ---------------------------------------------------------------------- TRANSPOSE_CONV
def transpose_conv_out(n, k, s, pad):
    # The output sizes TFLite's converter gives: (n - 1) * s + k for VALID, n * s for SAME.
    return (n - 1) * s + k if pad == VALID else n * s


def transpose_conv(in_shape, out_ch, kh, kw, sh, sw, pad, act, per_channel, in_q, out_hw=None,
                   bias=True):
    def fn(c: Ctx):
        n, h, w, ci = in_shape
        fan_in = kh * kw * ci
        wf = c.rng.normal(0, 1.0 / np.sqrt(fan_in), (out_ch, kh, kw, ci))
        in_std = in_q[0] * 255 / np.sqrt(12)
        bf = c.rng.normal(0, 0.5 * in_std, out_ch)
        oh, ow = out_hw or (transpose_conv_out(h, kh, sh, pad), transpose_conv_out(w, kw, sw, pad))
        oshape = [n, oh, ow, out_ch]
        shape_t = c.const_i32("output_shape", oshape)
        wt, s0 = c.weight("filter", wf, 0 if per_channel else None)
        x = c.inp("input", in_shape, in_q)
        b = [c.bias("bias", bf, in_q[0], s0)] if bias else []
        y = c.out("output", oshape, "auto")
        c.op("TRANSPOSE_CONV", [shape_t, wt, x] + b, [y], "TransposeConvOptions",
             dict(Padding=pad, StrideW=sw, StrideH=sh, FusedActivationFunction=c.act(act)))
    return fn


def add_tconv(in_shape, out_ch, k, s, pad, act, pc, in_q, out_hw=None, extra="", f32=True,
              bias=True):
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (s, s) if isinstance(s, int) else s
    stag = f"s{sh}" if sh == sw else f"s{sh}x{sw}"
    ktag = f"k{kh}" if kh == kw else f"k{kh}x{kw}"
    rest = f"{stag}_{'same' if pad == SAME else 'valid'}_{act.lower()}_" \
           f"{'perchannel' if pc else 'pertensor'}_{ktag}{extra}"
    spec(name=rest, op="transpose_conv_2d", rest=rest, act=act, f32=f32,
         fn=transpose_conv(in_shape, out_ch, kh, kw, sh, sw, pad, act, pc, in_q, out_hw, bias))


add_tconv([1, 4, 4, 3], 4, 3, 2, SAME, "NONE", True, (0.05, -3))
add_tconv([1, 3, 5, 2], 3, (3, 2), 1, VALID, "RELU", False, (0.1, 20))
add_tconv([1, 3, 3, 4], 2, 4, 2, VALID, "RELU6", True, (0.04, 7), f32=False)
# SAME with an odd output (7 = ceil(7 / 2) * 2 - 1): one row and column of padding on top.
add_tconv([1, 4, 4, 2], 3, 3, 2, SAME, "RELU_N1_TO_1", True, (0.02, -128), out_hw=(7, 7),
          extra="_out7", f32=False)
add_tconv([1, 4, 4, 2], 3, 3, 2, SAME, "NONE", True, (0.05, 0), out_hw=(7, 7), extra="_out7")
# Stride above the filter size leaves output pixels that only get the bias.
add_tconv([2, 3, 3, 3], 4, 2, 3, VALID, "NONE", True, (0.5, -128), extra="_batch2", f32=False)
add_tconv([1, 5, 4, 8], 6, 3, (1, 2), SAME, "RELU", True, (0.01, 40), extra="_nobias", f32=False,
          bias=False)
