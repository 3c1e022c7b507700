"""A small TFLite model writer for one-operator (or few-operator) test models.

Built on the flatc-generated `tflite` Python package (TFLite schema builders) and
`flatbuffers`. It writes schema version 3 models that both TensorFlow Lite Micro
and LiteRT load.

Usage:

    m = ModelWriter()
    x = m.tensor("x", [1, 8, 8, 3], "int8", quant=Quant(0.05, -3))
    w = m.tensor("w", [4, 3, 3, 3], "int8", quant=Quant([...], [0]*4, dim=0), data=w_int8)
    b = m.tensor("b", [4], "int32", quant=Quant([...], [0]*4), data=b_int32)
    y = m.tensor("y", [1, 8, 8, 4], "int8", quant=Quant(0.1, 7))
    m.op("CONV_2D", [x, w, b], [y], "Conv2DOptions",
         dict(Padding=SAME, StrideW=1, StrideH=1, FusedActivationFunction=RELU,
              DilationWFactor=1, DilationHFactor=1))
    m.io([x], [y])
    data = m.finish()  # bytes
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import flatbuffers
import numpy as np
import importlib


def _mod(name):
    """The flatc-generated module tflite.<name> (the package re-exports classes
    under the same names, so import the modules explicitly)."""
    return importlib.import_module(f"tflite.{name}")


_Buffer = _mod("Buffer")
_Model = _mod("Model")
_Operator = _mod("Operator")
_OperatorCode = _mod("OperatorCode")
_QP = _mod("QuantizationParameters")
_SubGraph = _mod("SubGraph")
_TensorMod = _mod("Tensor")
_TensorType = _mod("TensorType").TensorType
_BuiltinOperator = _mod("BuiltinOperator").BuiltinOperator
_BuiltinOptions = _mod("BuiltinOptions").BuiltinOptions

SCHEMA_VERSION = 3

# Padding and activation enums (tflite.Padding / tflite.ActivationFunctionType)
SAME = 0
VALID = 1
ACT = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}

_TYPES = {
    "float32": (_TensorType.FLOAT32, np.float32),
    "int8": (_TensorType.INT8, np.int8),
    "int32": (_TensorType.INT32, np.int32),
    "int16": (_TensorType.INT16, np.int16),
    "uint8": (_TensorType.UINT8, np.uint8),
}


@dataclasses.dataclass
class Quant:
    """Affine quantization: per tensor (one scale) or per channel (dim)."""

    scale: Sequence[float] | float
    zero_point: Sequence[int] | int = 0
    dim: int = 0

    def scales(self) -> list:
        s = self.scale
        return [float(v) for v in (s if isinstance(s, (list, tuple, np.ndarray)) else [s])]

    def zero_points(self) -> list:
        z = self.zero_point
        zs = [int(v) for v in (z if isinstance(z, (list, tuple, np.ndarray)) else [z])]
        if len(zs) == 1 and len(self.scales()) > 1:
            zs = zs * len(self.scales())
        return zs


@dataclasses.dataclass
class _Tensor:
    name: str
    shape: list
    dtype: str
    quant: Optional[Quant]
    buffer: int


@dataclasses.dataclass
class _Op:
    opcode: int
    inputs: list
    outputs: list
    options_name: Optional[str]
    options: dict


def _op_code(name: str) -> int:
    return getattr(_BuiltinOperator, name)


class ModelWriter:
    def __init__(self, description: str = "kiln golden test model"):
        self.description = description
        self.tensors: list[_Tensor] = []
        self.buffers: list[bytes] = [b""]  # buffer 0: the empty sentinel
        self.ops: list[_Op] = []
        self.opcodes: list[tuple[int, int]] = []  # (builtin code, version)
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    # -- graph construction -------------------------------------------------
    def tensor(self, name, shape, dtype, quant: Optional[Quant] = None, data=None) -> int:
        if dtype not in _TYPES:
            raise ValueError(f"unsupported dtype {dtype}")
        buf = 0
        if data is not None:
            arr = np.ascontiguousarray(np.asarray(data, dtype=_TYPES[dtype][1]))
            if int(np.prod(shape)) != arr.size:
                raise ValueError(f"{name}: data size {arr.size} != shape {shape}")
            self.buffers.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
            buf = len(self.buffers) - 1
        else:
            # Every tensor gets its own (empty) buffer, as the converter does.
            self.buffers.append(b"")
            buf = len(self.buffers) - 1
        self.tensors.append(_Tensor(name, [int(d) for d in shape], dtype, quant, buf))
        return len(self.tensors) - 1

    def op(self, opname: str, inputs, outputs, options_name=None, options=None, version=1):
        code = _op_code(opname)
        key = (code, version)
        if key not in self.opcodes:
            self.opcodes.append(key)
        self.ops.append(_Op(self.opcodes.index(key), list(inputs), list(outputs),
                            options_name, dict(options or {})))

    def io(self, inputs, outputs):
        self.inputs = list(inputs)
        self.outputs = list(outputs)

    # -- serialization ------------------------------------------------------
    @staticmethod
    def _int_vector(b, start_fn, values):
        start_fn(b, len(values))
        for v in reversed(values):
            b.PrependInt32(int(v))
        return b.EndVector()

    @staticmethod
    def _float_vector(b, start_fn, values):
        start_fn(b, len(values))
        for v in reversed(values):
            b.PrependFloat32(float(v))
        return b.EndVector()

    @staticmethod
    def _int64_vector(b, start_fn, values):
        start_fn(b, len(values))
        for v in reversed(values):
            b.PrependInt64(int(v))
        return b.EndVector()

    def _options(self, b, op: _Op):
        name = op.options_name
        mod = _mod(name)
        # Vector fields must be created before the table starts.
        vecs = {}
        for field, val in op.options.items():
            if isinstance(val, (list, tuple)):
                start = getattr(mod, f"{name}Start{field}Vector")
                vecs[field] = self._int_vector(b, start, val)
        getattr(mod, f"{name}Start")(b)
        for field, val in op.options.items():
            add = getattr(mod, f"{name}Add{field}")
            add(b, vecs[field] if field in vecs else val)
        return getattr(mod, f"{name}End")(b)

    def finish(self) -> bytes:
        b = flatbuffers.Builder(1024)
        QP = _QP

        # Buffers (data aligned to 16 bytes).
        buf_offsets = []
        for data in self.buffers:
            data_off = None
            if data:
                b.StartVector(1, len(data), 16)
                b.head = b.head - len(data)
                b.Bytes[b.head:b.head + len(data)] = data
                data_off = b.EndVector()
            _Buffer.BufferStart(b)
            if data_off is not None:
                _Buffer.BufferAddData(b, data_off)
            buf_offsets.append(_Buffer.BufferEnd(b))

        # Tensors.
        tensor_offsets = []
        for t in self.tensors:
            name_off = b.CreateString(t.name)
            shape_off = self._int_vector(b, _TensorMod.TensorStartShapeVector, t.shape)
            q_off = None
            if t.quant is not None:
                sc = self._float_vector(b, QP.QuantizationParametersStartScaleVector, t.quant.scales())
                zp = self._int64_vector(b, QP.QuantizationParametersStartZeroPointVector,
                                        t.quant.zero_points())
                QP.QuantizationParametersStart(b)
                QP.QuantizationParametersAddScale(b, sc)
                QP.QuantizationParametersAddZeroPoint(b, zp)
                QP.QuantizationParametersAddQuantizedDimension(b, t.quant.dim)
                q_off = QP.QuantizationParametersEnd(b)
            _TensorMod.TensorStart(b)
            _TensorMod.TensorAddShape(b, shape_off)
            _TensorMod.TensorAddType(b, _TYPES[t.dtype][0])
            _TensorMod.TensorAddBuffer(b, t.buffer)
            _TensorMod.TensorAddName(b, name_off)
            if q_off is not None:
                _TensorMod.TensorAddQuantization(b, q_off)
            tensor_offsets.append(_TensorMod.TensorEnd(b))

        # Operators.
        op_offsets = []
        for op in self.ops:
            ins = self._int_vector(b, _Operator.OperatorStartInputsVector, op.inputs)
            outs = self._int_vector(b, _Operator.OperatorStartOutputsVector, op.outputs)
            opt_off = self._options(b, op) if op.options_name else None
            _Operator.OperatorStart(b)
            _Operator.OperatorAddOpcodeIndex(b, op.opcode)
            _Operator.OperatorAddInputs(b, ins)
            _Operator.OperatorAddOutputs(b, outs)
            if opt_off is not None:
                _Operator.OperatorAddBuiltinOptionsType(
                    b, getattr(_BuiltinOptions, op.options_name))
                _Operator.OperatorAddBuiltinOptions(b, opt_off)
            op_offsets.append(_Operator.OperatorEnd(b))

        def table_vector(start_fn, offsets):
            start_fn(b, len(offsets))
            for o in reversed(offsets):
                b.PrependUOffsetTRelative(o)
            return b.EndVector()

        SG = _SubGraph
        tensors_vec = table_vector(SG.SubGraphStartTensorsVector, tensor_offsets)
        ops_vec = table_vector(SG.SubGraphStartOperatorsVector, op_offsets)
        in_vec = self._int_vector(b, SG.SubGraphStartInputsVector, self.inputs)
        out_vec = self._int_vector(b, SG.SubGraphStartOutputsVector, self.outputs)
        sg_name = b.CreateString("main")
        SG.SubGraphStart(b)
        SG.SubGraphAddTensors(b, tensors_vec)
        SG.SubGraphAddInputs(b, in_vec)
        SG.SubGraphAddOutputs(b, out_vec)
        SG.SubGraphAddOperators(b, ops_vec)
        SG.SubGraphAddName(b, sg_name)
        sg = SG.SubGraphEnd(b)

        OC = _OperatorCode
        code_offsets = []
        for code, version in self.opcodes:
            OC.OperatorCodeStart(b)
            OC.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            OC.OperatorCodeAddBuiltinCode(b, code)
            OC.OperatorCodeAddVersion(b, version)
            code_offsets.append(OC.OperatorCodeEnd(b))

        M = _Model
        codes_vec = table_vector(M.ModelStartOperatorCodesVector, code_offsets)
        sgs_vec = table_vector(M.ModelStartSubgraphsVector, [sg])
        bufs_vec = table_vector(M.ModelStartBuffersVector, buf_offsets)
        desc = b.CreateString(self.description)
        M.ModelStart(b)
        M.ModelAddVersion(b, SCHEMA_VERSION)
        M.ModelAddOperatorCodes(b, codes_vec)
        M.ModelAddSubgraphs(b, sgs_vec)
        M.ModelAddDescription(b, desc)
        M.ModelAddBuffers(b, bufs_vec)
        model = M.ModelEnd(b)
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())
