//! Quantized ONNX: QuantizeLinear / DequantizeLinear (QDQ) patterns, QLinearConv and
//! QLinearMatMul, imported into the int8 ops of kiln's IR.
//!
//! A DequantizeLinear stays symbolic ([`Value::Dequantized`]). When an op whose kernels
//! have an int8 variant reads only dequantized values and its result goes to exactly
//! one QuantizeLinear, it is emitted as that int8 op: the int8 tensors go in, weights
//! are re-quantized with their own scales (exact, they were int8), biases become int32
//! at `input_scale * weight_scale`, and the QuantizeLinear's parameters become the
//! output's. Anything else runs in float between an explicit Dequantize and Quantize.
//! uint8 tensors are shifted to int8 (`q - 128`, zero point `- 128`), which represents
//! the same real values.

use super::consts::{normalize_axis, Const, ConstData};
use super::convert::{arg, opt};
use super::{Importer, Layout, Problem, QDomain, Value};
use crate::ir::{DType, Op, QuantParams, TensorId};
use std::rc::Rc;

type Result<T> = std::result::Result<T, Problem>;

fn unsupported<T>(m: impl Into<String>) -> Result<T> {
    Err(Problem::Unsupported(m.into()))
}

/// State of an op being emitted as int8 (see the module doc).
#[derive(Debug, Clone)]
pub(super) struct QCtx {
    /// The output's quantization (from the QuantizeLinear that consumes it).
    out: QDomain,
    /// Scale of the first activation operand (for bias scales).
    input_scale: f32,
    /// Per-channel (or per-tensor) weight scales, from the weight's DequantizeLinear.
    weight: Option<QDomain>,
}

impl QDomain {
    fn params(&self, axis: usize) -> QuantParams {
        QuantParams {
            scale: self.scale.clone(),
            zero_point: self.zero_point.clone(),
            axis,
        }
    }
}

/// Ops emitted as int8 when their operands are dequantized and their result quantized.
const FUSABLE: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Relu",
    "LeakyRelu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Concat",
    "Pad",
    "ReduceMean",
];

/// Reads a scale / zero-point pair; `None` zero point means 0 (uint8 in ONNX).
fn domain(
    imp: &mut Importer<'_>,
    scale: Option<&Value>,
    zero_point: Option<&Value>,
    axis: i64,
    rank: usize,
    what: &str,
) -> Result<QDomain> {
    let s = imp.constant_value(scale, &format!("{what} scale"))?;
    let scale = s.to_f32();
    if scale.is_empty() || scale.iter().any(|&v| !(v > 0.0 && v.is_finite())) {
        return Err(Problem::Malformed(format!(
            "{what} scale {scale:?} must be positive"
        )));
    }
    let zero_point = match zero_point {
        None => vec![-128; scale.len()],
        Some(v) => {
            let z = imp.constant_value(Some(v), &format!("{what} zero point"))?;
            let shift = match &z.data {
                ConstData::U8(_) => 128,
                ConstData::I8(_) | ConstData::I32(_) => 0,
                _ => {
                    return unsupported(format!(
                        "{what} zero point of type {} (only int8, uint8 and int32)",
                        z.type_name()
                    ))
                }
            };
            z.to_i64("zero point")?
                .iter()
                .map(|&v| v as i32 - shift)
                .collect()
        }
    };
    if zero_point.len() != scale.len() {
        return Err(Problem::Malformed(format!(
            "{what}: scale and zero point differ in length"
        )));
    }
    let axis = if scale.len() > 1 {
        normalize_axis(axis, rank)?
    } else {
        0
    };
    Ok(QDomain {
        scale,
        zero_point,
        axis,
    })
}

/// int8 data of an integer constant (uint8 shifted by -128); int32 stays int32.
fn int_const(c: &Const) -> Result<Const> {
    match &c.data {
        ConstData::I8(_) | ConstData::I32(_) => Ok(c.clone()),
        ConstData::U8(v) => Const::new(
            c.shape.clone(),
            ConstData::I8(v.iter().map(|&x| (x as i16 - 128) as i8).collect()),
        ),
        _ => unsupported(format!("DequantizeLinear of a {} constant", c.type_name())),
    }
}

/// QuantizeLinear, DequantizeLinear, QLinearConv and QLinearMatMul.
pub(super) fn convert(
    imp: &mut Importer<'_>,
    node: &super::proto::NodeProto,
    inputs: &[Option<Value>],
) -> Result<Vec<Value>> {
    let axis = super::Attrs::of(node).int("axis", 1);
    match node.op_type() {
        "DequantizeLinear" => {
            let x = arg(inputs, 0, "x")?;
            let rank = imp.shape_of(x).len();
            let quant = domain(imp, opt(inputs, 1), opt(inputs, 2), axis, rank, "x")?;
            let q = match x {
                Value::Const(c) => Value::Const(Rc::new(int_const(c)?)),
                Value::Tensor { id, .. } if imp.graph.info(*id).dtype == DType::I8 => {
                    let have = imp.graph.info(*id).quant.clone();
                    if have.as_ref() != Some(&quant.params(0)) {
                        return unsupported(
                            "DequantizeLinear with parameters other than its QuantizeLinear's",
                        );
                    }
                    x.clone()
                }
                _ => return unsupported("DequantizeLinear of a run-time tensor that is not int8"),
            };
            Ok(vec![Value::Dequantized {
                q: Box::new(q),
                quant,
            }])
        }
        "QuantizeLinear" => {
            let x = arg(inputs, 0, "x")?;
            let rank = imp.shape_of(x).len();
            let quant = domain(imp, opt(inputs, 1), opt(inputs, 2), axis, rank, "y")?;
            quantize(imp, x, &quant).map(|v| vec![v])
        }
        "QLinearConv" | "QLinearMatMul" => {
            let conv = node.op_type() == "QLinearConv";
            let x = arg(inputs, 0, "x")?.clone();
            let (xr, wr) = (
                imp.shape_of(&x).len(),
                imp.shape_of(arg(inputs, 3, "w")?).len(),
            );
            let xq = domain(imp, opt(inputs, 1), opt(inputs, 2), 1, xr, "x")?;
            let w_axis = if conv { 0 } else { 1 };
            let wq = domain(imp, opt(inputs, 4), opt(inputs, 5), w_axis, wr, "w")?;
            let yq = domain(imp, opt(inputs, 6), opt(inputs, 7), 1, xr, "y")?;
            let (x_scale, wq_scales) = (xq.scale[0], wq.scale.clone());
            let x = match x {
                Value::Tensor { id, .. } if imp.graph.info(id).dtype == DType::I8 => {
                    Value::Dequantized {
                        q: Box::new(x),
                        quant: xq,
                    }
                }
                _ => {
                    return unsupported(format!(
                        "{} of an input that is not an int8 tensor",
                        node.op_type()
                    ))
                }
            };
            let w = Value::Dequantized {
                q: Box::new(Value::Const(Rc::new(int_const(
                    &*imp.constant_value(opt(inputs, 3), "w")?,
                )?))),
                quant: wq,
            };
            let bias_scale: Vec<f32> = wq_scales.iter().map(|&s| s * x_scale).collect();
            let mut operands = vec![Some(x), Some(w)];
            if conv {
                if let Some(b) = opt(inputs, 8) {
                    // The int32 bias is implicitly at x_scale * w_scale.
                    let b = imp.constant_value(Some(b), "B")?;
                    operands.push(Some(Value::Dequantized {
                        q: Box::new(Value::Const(Rc::new(int_const(&b)?))),
                        quant: QDomain {
                            zero_point: vec![0; bias_scale.len()],
                            scale: bias_scale,
                            axis: 0,
                        },
                    }));
                }
            }
            let name = if conv { "Conv" } else { "MatMul" };
            let v = fused(imp, node, name, &operands, yq)?;
            Ok(vec![v])
        }
        _ => unsupported("no kernel for this operator"),
    }
}

/// `f(value, scale, zero_point)` for every element of `c`, with the parameters of the
/// element's channel along `quant.axis` (or the one pair of a per-tensor `quant`).
fn per_channel<T>(c: &Const, quant: &QDomain, f: impl Fn(f32, f32, i32) -> T) -> Vec<T> {
    let per = quant.scale.len();
    let inner: usize = c
        .shape
        .get(quant.axis + 1..)
        .map(|s| s.iter().product())
        .unwrap_or(1)
        .max(1);
    c.to_f32()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = if per == 1 { 0 } else { (i / inner) % per };
            f(v, quant.scale[ch], quant.zero_point[ch])
        })
        .collect()
}

/// QuantizeLinear of `x` to `quant` (per tensor for run-time values).
fn quantize(imp: &mut Importer<'_>, x: &Value, quant: &QDomain) -> Result<Value> {
    match x {
        Value::Const(c) => {
            let q: Vec<i8> = per_channel(c, quant, |v, scale, zp| {
                let r = (v / scale).round_ties_even() as i64 + zp as i64;
                r.clamp(-128, 127) as i8
            });
            Ok(Value::Const(Rc::new(Const::new(
                c.shape.clone(),
                ConstData::I8(q),
            )?)))
        }
        _ if quant.scale.len() > 1 => {
            unsupported("per-channel QuantizeLinear of a run-time tensor")
        }
        Value::Tensor { id, layout } => {
            let info = imp.graph.info(*id);
            let want = quant.params(0);
            if info.dtype == DType::I8 {
                if info.quant.as_ref() == Some(&want) {
                    return Ok(x.clone());
                }
            } else if info.dtype != DType::F32 {
                return unsupported("QuantizeLinear of a non-float tensor");
            }
            let out = imp.emit(Op::Quantize, vec![*id], DType::I8, Some(want), &[])?;
            Ok(Value::Tensor {
                id: out,
                layout: *layout,
            })
        }
        Value::Dequantized { q, quant: have } => {
            if have == quant {
                return Ok((**q).clone());
            }
            let inner = (**q).clone();
            quantize(imp, &inner, quant)
        }
        Value::Poisoned => unsupported("QuantizeLinear of an unsupported value"),
    }
}

/// The float value of a dequantized one: folded for constants, a Dequantize node for
/// tensors.
pub(super) fn dequantize(imp: &mut Importer<'_>, v: &Value) -> Result<Value> {
    let Value::Dequantized { q, quant } = v else {
        return Ok(v.clone());
    };
    match &**q {
        Value::Const(c) => {
            let f: Vec<f32> = per_channel(c, quant, |x, scale, zp| (x - zp as f32) * scale);
            Ok(Value::Const(Rc::new(Const::new(
                c.shape.clone(),
                ConstData::F32(f),
            )?)))
        }
        Value::Tensor { id, layout } => {
            let out = imp.emit(Op::Dequantize, vec![*id], DType::F32, None, &[])?;
            Ok(Value::Tensor {
                id: out,
                layout: *layout,
            })
        }
        _ => unsupported("DequantizeLinear of an unsupported value"),
    }
}

/// Emits `node` as an int8 op when it sits in a DequantizeLinear → op → QuantizeLinear
/// pattern; `None` when it does not.
pub(super) fn try_fuse(
    imp: &mut Importer<'_>,
    node: &super::proto::NodeProto,
    inputs: &[Option<Value>],
) -> Result<Option<Vec<Value>>> {
    let op = node.op_type();
    if imp.qctx.is_some() || !FUSABLE.contains(&op) || node.output.is_empty() {
        return Ok(None);
    }
    // QOperator models run pooling directly on int8 tensors: the output keeps the
    // input's parameters.
    if let (Some(Some(Value::Tensor { id, .. })), "MaxPool") = (inputs.first(), op) {
        let info = imp.graph.info(*id);
        if let (DType::I8, Some((scale, zp))) = (info.dtype, info.scale_zero_point()) {
            let out = QDomain {
                scale: vec![scale],
                zero_point: vec![zp],
                axis: 0,
            };
            return fused(imp, node, op, inputs, out).map(|v| {
                let mut outs = vec![v];
                outs.resize(node.output.len(), Value::Poisoned);
                Some(outs)
            });
        }
    }
    let Some(out) = imp.quantize_after.get(&node.output[0]).cloned() else {
        return Ok(None);
    };
    // Ops whose int8 kernels fix the output quantization run in float otherwise.
    let fixed = match op {
        "Softmax" | "Sigmoid" => Some((1.0 / 256.0, -128)),
        "Tanh" => Some((1.0 / 128.0, 0)),
        _ => None,
    };
    if let Some((scale, zp)) = fixed {
        if (out.scale[0] - scale).abs() > scale * 1e-6 || out.zero_point[0] != zp {
            return Ok(None);
        }
    }
    let first_is_int8 = matches!(
        inputs.first(),
        Some(Some(Value::Dequantized { q, .. })) if matches!(**q, Value::Tensor { .. })
    );
    // Operands that are not data (shapes, axes, clip bounds, bias) may be plain constants.
    let data_inputs = match op {
        "Conv" | "Gemm" => 2,
        "Add" | "Sub" | "Mul" | "MatMul" => 2,
        "Concat" => inputs.len(),
        _ => 1,
    };
    let all_dequantized = inputs
        .iter()
        .take(data_inputs)
        .flatten()
        .all(|v| matches!(v, Value::Dequantized { .. }));
    if !first_is_int8 || !all_dequantized || out.scale.len() != 1 {
        return Ok(None);
    }
    fused(imp, node, op, inputs, out).map(|v| {
        let mut outs = vec![v];
        outs.resize(node.output.len(), Value::Poisoned);
        Some(outs)
    })
}

/// Runs the float converter of `op` with the int8 context set.
fn fused(
    imp: &mut Importer<'_>,
    node: &super::proto::NodeProto,
    op: &str,
    inputs: &[Option<Value>],
    out: QDomain,
) -> Result<Value> {
    let input_scale = match inputs.first() {
        Some(Some(Value::Dequantized { quant, .. })) => quant.scale[0],
        Some(Some(Value::Tensor { id, .. })) if imp.graph.info(*id).dtype == DType::I8 => imp
            .graph
            .info(*id)
            .scale_zero_point()
            .map_or(1.0, |(s, _)| s),
        _ => return unsupported("quantized op without a quantized input"),
    };
    let weight = match (op, inputs.get(1)) {
        ("Conv" | "Gemm" | "MatMul", Some(Some(Value::Dequantized { quant, .. }))) => {
            if quant.zero_point.iter().any(|&z| z != 0) {
                return unsupported(
                    "asymmetric int8 weights (kiln's int8 kernels need zero point 0)",
                );
            }
            Some(quant.clone())
        }
        _ => None,
    };
    imp.qctx = Some(QCtx {
        out,
        input_scale,
        weight,
    });
    let mut renamed = node.clone();
    renamed.op_type = Some(op.to_string());
    let r = imp.convert(&renamed, inputs);
    imp.qctx = None;
    let mut v = r?;
    Ok(v.swap_remove(0))
}

/// The int8 tensor behind a dequantized operand (inside a fused op).
pub(super) fn int8_operand(imp: &mut Importer<'_>, v: &Value) -> Result<(TensorId, Layout)> {
    match v {
        Value::Dequantized { q, quant } => match &**q {
            Value::Tensor { id, layout } => Ok((*id, *layout)),
            Value::Const(c) if quant.scale.len() == 1 => {
                let id = imp.constant(c, Some(quant.params(0)))?;
                Ok((id, Layout::Plain))
            }
            _ => unsupported("a per-channel quantized constant as an element-wise operand"),
        },
        Value::Tensor { id, layout } if imp.graph.info(*id).dtype == DType::I8 => {
            Ok((*id, *layout))
        }
        _ => unsupported("a float operand of a quantized op"),
    }
}

impl Importer<'_> {
    /// dtype and quantization of the op being emitted: float, or the fused int8 output.
    pub(super) fn out_type(&self) -> (DType, Option<QuantParams>) {
        match &self.qctx {
            Some(c) => (DType::I8, Some(c.out.params(0))),
            None => (DType::F32, None),
        }
    }

    /// A weight constant (already in kiln's layout, channel axis `axis`): f32, or int8
    /// re-quantized with the weight's own scales inside a fused op.
    pub(super) fn weight(&mut self, w: &Const, axis: usize) -> Result<TensorId> {
        let Some(wq) = self.qctx.as_ref().and_then(|c| c.weight.clone()) else {
            return self.constant(w, None);
        };
        let per = wq.scale.len();
        if per > 1 && w.shape.get(axis) != Some(&per) {
            return unsupported(format!(
                "weight scales for {per} channels on a weight of shape {:?}",
                w.shape
            ));
        }
        let inner: usize = w.shape[axis + 1..].iter().product();
        let q: Vec<i8> = w
            .to_f32()
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = if per == 1 { 0 } else { (i / inner) % per };
                (v / wq.scale[ch]).round().clamp(-127.0, 127.0) as i8
            })
            .collect();
        let c = Const::new(w.shape.clone(), ConstData::I8(q))?;
        self.constant(&c, Some(wq.params(if per == 1 { 0 } else { axis })))
    }

    /// A bias constant: f32, or int32 at `input_scale * weight_scale[c]` inside a fused op.
    pub(super) fn bias(&mut self, b: &Const) -> Result<TensorId> {
        let Some(ctx) = self.qctx.clone() else {
            return self.constant(b, None);
        };
        let Some(wq) = ctx.weight else {
            return unsupported("a bias without quantized weights");
        };
        let n = b.shape.iter().product::<usize>();
        let scales: Vec<f32> = (0..n)
            .map(|c| ctx.input_scale * wq.scale[if wq.scale.len() == 1 { 0 } else { c }])
            .collect();
        let q: Vec<i32> = b
            .to_f32()
            .iter()
            .zip(&scales)
            .map(|(&v, &s)| {
                (v as f64 / s as f64)
                    .round()
                    .clamp(i32::MIN as f64, i32::MAX as f64) as i32
            })
            .collect();
        let c = Const::new(b.shape.clone(), ConstData::I32(q))?;
        let quant = QuantParams {
            zero_point: vec![0; scales.len()],
            scale: scales,
            axis: 0,
        };
        self.constant(&c, Some(quant))
    }
}

/// The per-tensor output parameters of a QuantizeLinear whose scale and zero point are
/// initializers, if they are.
pub(super) fn constant_domain(
    imp: &mut Importer<'_>,
    node: &super::proto::NodeProto,
) -> Option<QDomain> {
    let value = |i: usize| {
        node.input
            .get(i)
            .filter(|n| !n.is_empty())
            .map(|n| imp.values.get(n).cloned())
    };
    let scale = value(1)??;
    let zero_point = match value(2) {
        None => None,
        Some(v) => Some(v?),
    };
    if !matches!(scale, Value::Const(_)) || !matches!(zero_point, None | Some(Value::Const(_))) {
        return None;
    }
    domain(imp, Some(&scale), zero_point.as_ref(), 1, 1, "y")
        .ok()
        .filter(|q| q.scale.len() == 1)
}
