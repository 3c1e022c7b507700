"""Writes tests/fixtures/unsupported_ops.tflite: a well-formed model that kiln must
reject, listing every unsupported operator at once (an unsupported builtin, an int16
operand of a supported builtin, a custom operator) while its supported CONV_2D passes.

Run from the repository root with the golden venv: python scripts/golden/make_bad_models.py
"""

import pathlib

import numpy as np

from tflite_writer import ModelWriter, Quant, SAME, ACT

m = ModelWriter(description="kiln fixture: unsupported operators")
x = m.tensor("x", [1, 4, 4, 2], "int8", quant=Quant(0.05, 0))
w = m.tensor("w", [2, 1, 1, 2], "int8", quant=Quant([0.01, 0.02], [0, 0], dim=0),
             data=np.array([[1, 2], [3, 4]], dtype=np.int8).reshape(2, 1, 1, 2))
y = m.tensor("conv_out", [1, 4, 4, 2], "int8", quant=Quant(0.05, 0))
m.op("CONV_2D", [x, w, -1], [y], "Conv2DOptions",
     dict(Padding=SAME, StrideW=1, StrideH=1, FusedActivationFunction=ACT["NONE"],
          DilationWFactor=1, DilationHFactor=1))
z = m.tensor("squared", [1, 4, 4, 2], "int8", quant=Quant(0.05, 0))
m.op("SQUARED_DIFFERENCE", [y, y], [z])
a = m.tensor("a16", [1, 4, 4, 2], "int16", quant=Quant(0.001, 0))
b = m.tensor("b16", [1, 4, 4, 2], "int16", quant=Quant(0.001, 0))
m.op("ADD", [a, a], [b], "AddOptions", dict(FusedActivationFunction=ACT["NONE"]))
m.io([x, a], [z, b])

out = pathlib.Path("tests/fixtures/unsupported_ops.tflite")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_bytes(m.finish())
print(f"wrote {out}")

# Supported operators with quantization TFLM's int8 kernels refuse: kiln check lists both.
m = ModelWriter(description="kiln fixture: quantization the int8 kernels refuse")
x = m.tensor("x", [1, 10], "int8", quant=Quant(0.1, 0))
y = m.tensor("probabilities", [1, 10], "int8", quant=Quant(0.1, 0))
m.op("SOFTMAX", [x], [y], "SoftmaxOptions", dict(Beta=1.0))
c = m.tensor("joined", [1, 20], "int8", quant=Quant(0.2, 0))
m.op("CONCATENATION", [x, y], [c], "ConcatenationOptions",
     dict(Axis=1, FusedActivationFunction=ACT["NONE"]))
m.io([x], [c])
out = pathlib.Path("tests/fixtures/bad_quantization.tflite")
out.write_bytes(m.finish())
print(f"wrote {out}")

# A dynamic (unknown) batch dimension: kiln plans memory ahead of time and refuses it.
m = ModelWriter(description="kiln fixture: dynamic shape")
x = m.tensor("x", [-1, 10], "int8", quant=Quant(0.1, 0))
y = m.tensor("y", [-1, 10], "int8", quant=Quant(0.1, 0))
m.op("RELU", [x], [y])
m.io([x], [y])
out = pathlib.Path("tests/fixtures/dynamic_shape.tflite")
out.write_bytes(m.finish())
print(f"wrote {out}")
