//! One converter per ONNX operator: ONNX node in, kiln IR nodes (or a folded constant)
//! out. Layout bookkeeping (NCHW in the model, NHWC in kiln) lives in the importer; here
//! each op asks for its operands in the layout it needs.

use super::consts::{element_count, is_permutation, normalize_axis, BinaryOp, Const, ConstData};
use super::{nhwc_axis, quant, tensor, Attrs, Importer, Layout, Problem, Value};
use crate::ir::{
    Activation, Conv2dAttrs, DType, DepthwiseConv2dAttrs, Op, Padding, Pool2dAttrs,
    TransposeConv2dAttrs,
};
use std::rc::Rc;

type Result<T> = std::result::Result<T, Problem>;

fn unsupported<T>(m: impl Into<String>) -> Result<T> {
    Err(Problem::Unsupported(m.into()))
}

fn malformed<T>(m: impl Into<String>) -> Result<T> {
    Err(Problem::Malformed(m.into()))
}

pub(super) fn arg<'v>(inputs: &'v [Option<Value>], i: usize, what: &str) -> Result<&'v Value> {
    inputs
        .get(i)
        .and_then(Option::as_ref)
        .ok_or_else(|| Problem::Malformed(format!("missing {what} (input {i})")))
}

pub(super) fn opt(inputs: &[Option<Value>], i: usize) -> Option<&Value> {
    inputs.get(i).and_then(Option::as_ref)
}

fn konst(c: Const) -> Value {
    Value::Const(Rc::new(c))
}

fn positive(v: &[i64], what: &str) -> Result<Vec<usize>> {
    v.iter()
        .map(|&x| usize::try_from(x).ok().filter(|&x| x > 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Problem::Malformed(format!("{what} {v:?} must be positive")))
}

fn non_negative(v: &[i64], what: &str) -> Result<Vec<usize>> {
    v.iter()
        .map(|&x| usize::try_from(x).ok())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Problem::Unsupported(format!("negative {what} {v:?}")))
}

/// Spatial window attributes shared by Conv, ConvTranspose and the pools.
struct Window {
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    /// `[top, left, bottom, right]` when explicit.
    pads: [usize; 4],
    auto_pad: String,
}

impl Window {
    fn read(a: &Attrs, kernel: Option<[usize; 2]>) -> Result<Window> {
        let two = |name: &str, default: [usize; 2]| -> Result<[usize; 2]> {
            match a.ints(name) {
                None => Ok(default),
                Some(v) if v.len() == 2 => {
                    let p = positive(v, name)?;
                    Ok([p[0], p[1]])
                }
                Some(v) => unsupported(format!(
                    "{name} {v:?}: only 2-D (NCHW) windows are supported"
                )),
            }
        };
        let kernel = match (a.ints("kernel_shape"), kernel) {
            (Some(_), _) => two("kernel_shape", [1, 1])?,
            (None, Some(k)) => k,
            (None, None) => return malformed("kernel_shape is missing"),
        };
        let pads = match a.ints("pads") {
            None => [0; 4],
            Some(v) if v.len() == 4 => {
                let p = non_negative(v, "pads")?;
                [p[0], p[1], p[2], p[3]]
            }
            Some(v) => return unsupported(format!("pads {v:?}: only 2-D windows are supported")),
        };
        Ok(Window {
            kernel,
            stride: two("strides", [1, 1])?,
            dilation: two("dilations", [1, 1])?,
            pads,
            auto_pad: a.string("auto_pad").unwrap_or_else(|| "NOTSET".into()),
        })
    }

    /// The IR padding for a forward window over an `in_hw` input.
    fn padding(&self, in_hw: [usize; 2]) -> Result<Padding> {
        match self.auto_pad.as_str() {
            "NOTSET" | "" => Ok(if self.pads == [0; 4] {
                Padding::Valid
            } else {
                Padding::Explicit {
                    top: self.pads[0],
                    left: self.pads[1],
                    bottom: self.pads[2],
                    right: self.pads[3],
                }
            }),
            "VALID" => Ok(Padding::Valid),
            "SAME_UPPER" => Ok(Padding::Same),
            "SAME_LOWER" => {
                let total = |a: usize| {
                    let out = in_hw[a].div_ceil(self.stride[a]);
                    let eff = (self.kernel[a] - 1) * self.dilation[a] + 1;
                    ((out - 1) * self.stride[a] + eff).saturating_sub(in_hw[a])
                };
                let (th, tw) = (total(0), total(1));
                Ok(Padding::Explicit {
                    top: th.div_ceil(2),
                    bottom: th / 2,
                    left: tw.div_ceil(2),
                    right: tw / 2,
                })
            }
            other => malformed(format!("auto_pad '{other}'")),
        }
    }
}

impl Importer<'_> {
    /// Converts one node; returns one value per node output.
    pub(super) fn convert(
        &mut self,
        node: &super::proto::NodeProto,
        inputs: &[Option<Value>],
    ) -> Result<Vec<Value>> {
        let a = Attrs::of(node);
        let op = node.op_type();
        if let Some(fused) = quant::try_fuse(self, node, inputs)? {
            return Ok(fused);
        }
        let one = |v: Value| Ok(vec![v]);
        match op {
            "Identity" => one(arg(inputs, 0, "input")?.clone()),
            "Dropout" => {
                if node.output.len() > 1 && self.consumer_count(&node.output[1]) > 0 {
                    return unsupported("Dropout's mask output is used");
                }
                Ok(vec![arg(inputs, 0, "input")?.clone(), Value::Poisoned])
            }
            "Constant" => one(konst(self.constant_node(&a)?)),
            "Shape" => {
                let s: Vec<i64> = self
                    .shape_of(arg(inputs, 0, "input")?)
                    .iter()
                    .map(|&d| d as i64)
                    .collect();
                let r = s.len() as i64;
                let clip = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let (start, end) = (clip(a.int("start", 0)), clip(a.int("end", r)));
                let s = s[start..end.max(start)].to_vec();
                one(konst(Const::new(vec![s.len()], ConstData::I64(s))?))
            }
            "Gather" => {
                let data = self.constant_value(opt(inputs, 0), "Gather's data")?;
                let idx = self.constant_value(opt(inputs, 1), "Gather's indices")?;
                one(konst(data.gather(&idx, a.int("axis", 0))?))
            }
            "Cast" => match arg(inputs, 0, "input")? {
                Value::Const(c) => one(konst(c.cast(a.int("to", 0) as i32)?)),
                v @ Value::Tensor { id, .. }
                    if a.int("to", 0) == 1 && self.graph.info(*id).dtype == DType::F32 =>
                {
                    one(v.clone())
                }
                _ => unsupported(format!(
                    "Cast of a run-time tensor to {}",
                    tensor::type_name(a.int("to", 0) as i32)
                )),
            },
            "ConstantOfShape" => {
                let shape = self.constant_value(opt(inputs, 0), "ConstantOfShape's shape")?;
                let shape = non_negative(&shape.to_i64("shape")?, "shape")?;
                let fill = match a.tensor("value") {
                    Some(t) => tensor::decode(t, None)?,
                    None => Const::scalar_f32(0.0),
                };
                let n = element_count(&shape)?;
                let data = match &fill.data {
                    ConstData::F32(v) => ConstData::F32(vec![v.first().copied().unwrap_or(0.0); n]),
                    _ => {
                        ConstData::I64(vec![fill.to_i64("value")?.first().copied().unwrap_or(0); n])
                    }
                };
                one(konst(Const::new(shape, data)?))
            }
            "Slice" => {
                let data = self.constant_value(opt(inputs, 0), "Slice's data")?;
                let ints = |s: &mut Self, i: usize, what: &str| -> Result<Option<Vec<i64>>> {
                    match opt(inputs, i) {
                        None => Ok(None),
                        v => Ok(Some(s.constant_value(v, what)?.to_i64(what)?)),
                    }
                };
                let starts = ints(self, 1, "starts")?.unwrap_or_default();
                let ends = ints(self, 2, "ends")?.unwrap_or_default();
                let rank = data.shape.len();
                let axes = match ints(self, 3, "axes")? {
                    Some(v) => v
                        .iter()
                        .map(|&x| normalize_axis(x, rank))
                        .collect::<Result<Vec<_>>>()?,
                    None => (0..starts.len()).collect(),
                };
                let steps = ints(self, 4, "steps")?.unwrap_or_else(|| vec![1; axes.len()]);
                if starts.len() != axes.len()
                    || ends.len() != axes.len()
                    || steps.len() != axes.len()
                {
                    return malformed("Slice starts/ends/axes/steps differ in length");
                }
                one(konst(data.slice(&starts, &ends, &axes, &steps)?))
            }
            "Unsqueeze" | "Squeeze" => self.squeeze(node, &a, inputs).map(|v| vec![v]),
            "Reshape" => {
                let x = arg(inputs, 0, "data")?;
                let target = self.constant_value(opt(inputs, 1), "Reshape's shape")?;
                let shape = reshape_target(
                    &self.shape_of(x),
                    &target.to_i64("shape")?,
                    a.int("allowzero", 0) != 0,
                )?;
                self.reshape(x, shape).map(|v| vec![v])
            }
            "Flatten" => {
                let x = arg(inputs, 0, "input")?;
                let s = self.shape_of(x);
                let axis = a.int("axis", 1);
                let axis = if axis == s.len() as i64 {
                    s.len()
                } else {
                    normalize_axis(axis, s.len())?
                };
                let shape = vec![s[..axis].iter().product(), s[axis..].iter().product()];
                self.reshape(x, shape).map(|v| vec![v])
            }
            "Transpose" => self.transpose(&a, arg(inputs, 0, "data")?).map(|v| vec![v]),
            "Concat" => self.concat(&a, inputs).map(|v| vec![v]),
            "Add" | "Sub" | "Mul" | "Div" => self.binary(op, inputs).map(|v| vec![v]),
            "Equal" => {
                let x = self.constant_value(opt(inputs, 0), "Equal's A")?;
                let y = self.constant_value(opt(inputs, 1), "Equal's B")?;
                one(konst(x.binary(&y, BinaryOp::Equal)?))
            }
            "Where" => {
                let c = self.constant_value(opt(inputs, 0), "Where's condition")?;
                let x = self.constant_value(opt(inputs, 1), "Where's X")?;
                let y = self.constant_value(opt(inputs, 2), "Where's Y")?;
                // where(c, x, y) = c*x + (1-c)*y, exact for the integer shape values
                // PyTorch computes with it.
                let one_c = Const::new(vec![], ConstData::I64(vec![1]))?;
                let c = c.cast(7)?;
                let not_c = one_c.binary(&c, BinaryOp::Sub)?;
                let r = c
                    .binary(&x, BinaryOp::Mul)?
                    .binary(&not_c.binary(&y, BinaryOp::Mul)?, BinaryOp::Add)?;
                one(konst(r))
            }
            "Relu" => self.unary(inputs, Op::Relu).map(|v| vec![v]),
            "Sigmoid" => self.unary(inputs, Op::Logistic).map(|v| vec![v]),
            "Tanh" => self.unary(inputs, Op::Tanh).map(|v| vec![v]),
            "LeakyRelu" => self
                .unary(
                    inputs,
                    Op::LeakyRelu {
                        alpha: a.float("alpha", 0.01),
                    },
                )
                .map(|v| vec![v]),
            "Clip" => {
                let bound = |s: &mut Self, i: usize, default: f32| -> Result<f32> {
                    match opt(inputs, i) {
                        None => Ok(default),
                        v => {
                            let c = s.constant_value(v, "Clip's bound")?;
                            c.to_f32()
                                .first()
                                .copied()
                                .ok_or_else(|| Problem::Malformed("empty Clip bound".into()))
                        }
                    }
                };
                let min = bound(self, 1, f32::NEG_INFINITY)?;
                let max = bound(self, 2, f32::INFINITY)?;
                if min > max {
                    return malformed(format!("Clip min {min} > max {max}"));
                }
                self.unary(inputs, Op::Clip { min, max }).map(|v| vec![v])
            }
            "HardSigmoid" => {
                let x = arg(inputs, 0, "X")?.clone();
                self.hard_sigmoid(&x, a.float("alpha", 0.2), a.float("beta", 0.5))
                    .map(|v| vec![v])
            }
            "HardSwish" => {
                let x = arg(inputs, 0, "X")?.clone();
                let h = self.hard_sigmoid(&x, 1.0 / 6.0, 0.5)?;
                self.binary_values("Mul", &x, &h).map(|v| vec![v])
            }
            "Conv" => self.conv(&a, inputs).map(|v| vec![v]),
            "ConvTranspose" => self.conv_transpose(&a, inputs).map(|v| vec![v]),
            "Gemm" => self.gemm(&a, inputs).map(|v| vec![v]),
            "MatMul" => self.matmul(inputs).map(|v| vec![v]),
            "MaxPool" | "AveragePool" => {
                if node.output.len() > 1 && self.consumer_count(&node.output[1]) > 0 {
                    return unsupported("MaxPool's Indices output is used");
                }
                self.pool(op, &a, inputs).map(|v| vec![v, Value::Poisoned])
            }
            "GlobalAveragePool" => {
                let x = arg(inputs, 0, "X")?;
                if self.shape_of(x).len() != 4 {
                    return unsupported("GlobalAveragePool of a tensor that is not NCHW");
                }
                let id = self.operand_in(x, Layout::Nhwc)?;
                let op = Op::Mean {
                    axes: vec![1, 2],
                    keep_dims: true,
                };
                let (dt, q) = self.out_type();
                let id = self.emit(op, vec![id], dt, q, &[])?;
                one(Value::Tensor {
                    id,
                    layout: Layout::Nhwc,
                })
            }
            "BatchNormalization" => {
                if a.int("training_mode", 0) != 0 {
                    return unsupported("BatchNormalization in training mode");
                }
                if node
                    .output
                    .iter()
                    .skip(1)
                    .any(|o| self.consumer_count(o) > 0)
                {
                    return unsupported("BatchNormalization's running statistics outputs are used");
                }
                self.batch_norm(a.float("epsilon", 1e-5), inputs)
                    .map(|v| vec![v])
            }
            "Pad" => self.pad(&a, inputs).map(|v| vec![v]),
            "Softmax" => self.softmax(&a, arg(inputs, 0, "input")?).map(|v| vec![v]),
            "ReduceMean" => self.reduce_mean(&a, inputs).map(|v| vec![v]),
            "QuantizeLinear" | "DequantizeLinear" | "QLinearConv" | "QLinearMatMul" => {
                quant::convert(self, node, inputs)
            }
            _ => unsupported("no kernel for this operator"),
        }
    }

    fn constant_node(&mut self, a: &Attrs) -> Result<Const> {
        if let Some(t) = a.tensor("value") {
            return tensor::decode(t, self.base_dir);
        }
        if let Some(at) = a.get("value_float") {
            return Ok(Const::scalar_f32(at.f()));
        }
        if let Some(at) = a.get("value_floats") {
            return Const::new(vec![at.floats.len()], ConstData::F32(at.floats.clone()));
        }
        if let Some(at) = a.get("value_int") {
            return Const::new(vec![], ConstData::I64(vec![at.i()]));
        }
        if let Some(at) = a.get("value_ints") {
            return Const::new(vec![at.ints.len()], ConstData::I64(at.ints.clone()));
        }
        unsupported("Constant without a dense tensor, float(s) or int(s) value")
    }

    /// A run-time operand with its layout: a float tensor, or inside a quantized pattern
    /// (see `quant::try_fuse`) the int8 tensor or constant behind a DequantizeLinear.
    /// Constants become tensors.
    fn operand(&mut self, v: &Value) -> Result<(crate::ir::TensorId, Layout)> {
        if self.qctx.is_some() {
            return quant::int8_operand(self, v);
        }
        let v = match v {
            Value::Dequantized { .. } => quant::dequantize(self, v)?,
            v => v.clone(),
        };
        match v {
            Value::Tensor { id, layout } if self.graph.info(id).dtype == DType::F32 => {
                Ok((id, layout))
            }
            Value::Tensor { id, .. } => unsupported(format!(
                "a {} operand outside a QuantizeLinear/DequantizeLinear pattern",
                self.graph.info(id).dtype.name()
            )),
            Value::Const(c) => {
                let id = self.constant(
                    &Const::new(c.shape.clone(), ConstData::F32(c.to_f32()))?,
                    None,
                )?;
                Ok((id, Layout::Plain))
            }
            Value::Dequantized { .. } | Value::Poisoned => {
                malformed("internal: unresolved operand")
            }
        }
    }

    /// [`Self::operand`] in a given layout.
    fn operand_in(&mut self, v: &Value, layout: Layout) -> Result<crate::ir::TensorId> {
        let (id, have) = self.operand(v)?;
        self.relayout(id, have, layout)
    }

    fn unary(&mut self, inputs: &[Option<Value>], op: Op) -> Result<Value> {
        let (id, layout) = self.operand(arg(inputs, 0, "input")?)?;
        let (dt, q) = self.out_type();
        let id = self.emit(op, vec![id], dt, q, &[])?;
        Ok(Value::Tensor { id, layout })
    }

    fn hard_sigmoid(&mut self, x: &Value, alpha: f32, beta: f32) -> Result<Value> {
        let scaled = self.binary_values("Mul", x, &konst(Const::scalar_f32(alpha)))?;
        let shifted = self.binary_values("Add", &scaled, &konst(Const::scalar_f32(beta)))?;
        self.unary(&[Some(shifted)], Op::Clip { min: 0.0, max: 1.0 })
    }

    fn squeeze(
        &mut self,
        node: &super::proto::NodeProto,
        a: &Attrs,
        inputs: &[Option<Value>],
    ) -> Result<Value> {
        let x = arg(inputs, 0, "data")?;
        let shape = self.shape_of(x);
        let axes = match (a.ints("axes"), opt(inputs, 1)) {
            (Some(v), _) => Some(v.to_vec()),
            (None, Some(v)) => Some(self.constant_value(Some(v), "axes")?.to_i64("axes")?),
            (None, None) => None,
        };
        let out = if node.op_type() == "Unsqueeze" {
            let axes = axes.ok_or_else(|| Problem::Malformed("Unsqueeze without axes".into()))?;
            let rank = shape.len() + axes.len();
            let mut axes = axes
                .iter()
                .map(|&x| normalize_axis(x, rank))
                .collect::<Result<Vec<_>>>()?;
            axes.sort_unstable();
            let mut out = shape.clone();
            for &ax in &axes {
                out.insert(ax, 1);
            }
            out
        } else {
            let axes = match axes {
                Some(v) => v
                    .iter()
                    .map(|&x| normalize_axis(x, shape.len()))
                    .collect::<Result<Vec<_>>>()?,
                None => (0..shape.len()).filter(|&i| shape[i] == 1).collect(),
            };
            if let Some(&ax) = axes.iter().find(|&&ax| shape[ax] != 1) {
                return malformed(format!("Squeeze axis {ax} of shape {shape:?} is not 1"));
            }
            shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect()
        };
        self.reshape(x, out)
    }

    /// Reshape in ONNX's (logical) element order.
    fn reshape(&mut self, x: &Value, shape: Vec<usize>) -> Result<Value> {
        if let Value::Const(c) = x {
            return Ok(konst(c.reshaped(shape)?));
        }
        if let Value::Dequantized { q, quant } = x {
            if quant.scale.len() == 1 {
                let q = self.reshape(q, shape)?;
                return Ok(Value::Dequantized {
                    q: Box::new(q),
                    quant: quant.clone(),
                });
            }
        }
        let id = self.tensor(x, Layout::Plain)?;
        let info = self.graph.info(id);
        if info.shape == shape {
            return Ok(Value::Tensor {
                id,
                layout: Layout::Plain,
            });
        }
        let (dtype, q) = (info.dtype, info.quant.clone());
        let id = self.emit(Op::Reshape, vec![id], dtype, q, &shape)?;
        Ok(Value::Tensor {
            id,
            layout: Layout::Plain,
        })
    }

    fn transpose(&mut self, a: &Attrs, x: &Value) -> Result<Value> {
        let rank = self.shape_of(x).len();
        let perm: Vec<usize> = match a.ints("perm") {
            Some(p) => p
                .iter()
                .map(|&v| usize::try_from(v).unwrap_or(usize::MAX))
                .collect(),
            None => (0..rank).rev().collect(),
        };
        if perm.len() != rank || !is_permutation(&perm) {
            return malformed(format!("perm {perm:?} for a rank-{rank} input"));
        }
        match x {
            Value::Const(c) => Ok(konst(c.transposed(&perm)?)),
            Value::Dequantized { q, quant } if quant.scale.len() == 1 => {
                let q = self.transpose(a, q)?;
                Ok(Value::Dequantized {
                    q: Box::new(q),
                    quant: quant.clone(),
                })
            }
            _ => {
                let (id, layout) = match x {
                    Value::Tensor { id, layout } => (*id, *layout),
                    v => (self.tensor(v, Layout::Plain)?, Layout::Plain),
                };
                let stored: Vec<usize> = match layout {
                    Layout::Plain => perm,
                    Layout::Nhwc => perm.iter().map(|&p| nhwc_axis(p)).collect(),
                };
                if stored.iter().enumerate().all(|(i, &p)| i == p) {
                    return Ok(Value::Tensor {
                        id,
                        layout: Layout::Plain,
                    });
                }
                let info = self.graph.info(id);
                let (dtype, q) = (info.dtype, info.quant.clone());
                let id = self.emit(Op::Transpose { perm: stored }, vec![id], dtype, q, &[])?;
                Ok(Value::Tensor {
                    id,
                    layout: Layout::Plain,
                })
            }
        }
    }

    fn concat(&mut self, a: &Attrs, inputs: &[Option<Value>]) -> Result<Value> {
        let values: Vec<&Value> = inputs.iter().flatten().collect();
        let axis = a
            .get("axis")
            .map(|x| x.i())
            .ok_or_else(|| Problem::Malformed("Concat without axis".into()))?;
        if values.iter().all(|v| matches!(v, Value::Const(_))) {
            let consts: Vec<&Const> = values
                .iter()
                .map(|v| match v {
                    Value::Const(c) => c.as_ref(),
                    _ => unreachable!("all constants"),
                })
                .collect();
            return Ok(konst(Const::concat(&consts, axis)?));
        }
        let rank = self.shape_of(values[0]).len();
        let axis = normalize_axis(axis, rank)?;
        let nhwc = rank == 4
            && values.iter().any(|v| {
                matches!(
                    v,
                    Value::Tensor {
                        layout: Layout::Nhwc,
                        ..
                    }
                )
            });
        let layout = if nhwc { Layout::Nhwc } else { Layout::Plain };
        let mut ids = Vec::new();
        for v in &values {
            let (id, have) = match v {
                Value::Const(c) => {
                    let c = Const::new(c.shape.clone(), ConstData::F32(c.to_f32()))?;
                    (self.tensor(&konst(c), layout)?, layout)
                }
                v => self.operand(v)?,
            };
            ids.push(self.relayout(id, have, layout)?);
        }
        let axis = if nhwc { nhwc_axis(axis) } else { axis };
        let op = Op::Concatenation {
            axis,
            activation: Activation::None,
        };
        let (dt, q) = self.out_type();
        let id = self.emit(op, ids, dt, q, &[])?;
        Ok(Value::Tensor { id, layout })
    }

    fn binary(&mut self, op: &str, inputs: &[Option<Value>]) -> Result<Value> {
        let x = arg(inputs, 0, "A")?.clone();
        let y = arg(inputs, 1, "B")?.clone();
        self.binary_values(op, &x, &y)
    }

    /// Add/Sub/Mul/Div of two values: folded when both are constants; a constant right
    /// operand of Sub/Div becomes an Add/Mul of its negation/reciprocal so that later
    /// passes can fold it into a convolution.
    fn binary_values(&mut self, op: &str, x: &Value, y: &Value) -> Result<Value> {
        let bop = match op {
            "Add" => BinaryOp::Add,
            "Sub" => BinaryOp::Sub,
            "Mul" => BinaryOp::Mul,
            _ => BinaryOp::Div,
        };
        let as_const = |s: &mut Self, v: &Value| -> Result<Option<Rc<Const>>> {
            match v {
                Value::Const(c) => Ok(Some(c.clone())),
                Value::Dequantized { q, .. } if matches!(**q, Value::Const(_)) => {
                    s.constant_value(Some(v), "operand").map(Some)
                }
                _ => Ok(None),
            }
        };
        let (cx, cy) = if self.qctx.is_some() {
            (None, None)
        } else {
            (as_const(self, x)?, as_const(self, y)?)
        };
        if let (Some(a), Some(b)) = (&cx, &cy) {
            return Ok(konst(a.binary(b, bop)?));
        }
        let (op, y) = match (&cy, bop) {
            (Some(c), BinaryOp::Sub) => (
                BinaryOp::Add,
                konst(Const::scalar_f32(0.0).binary(c, BinaryOp::Sub)?),
            ),
            (Some(c), BinaryOp::Div) => (
                BinaryOp::Mul,
                konst(Const::scalar_f32(1.0).binary(c, BinaryOp::Div)?),
            ),
            _ => (bop, y.clone()),
        };
        let (sx, sy) = (self.shape_of(x), self.shape_of(&y));
        let rank = sx.len().max(sy.len());
        let is_nhwc = |v: &Value| {
            matches!(
                v,
                Value::Tensor {
                    layout: Layout::Nhwc,
                    ..
                }
            )
        };
        let dyn_low_rank = |v: &Value, s: &[usize]| !matches!(v, Value::Const(_)) && s.len() < 4;
        let layout = if rank == 4
            && (is_nhwc(x) || is_nhwc(&y))
            && !dyn_low_rank(x, &sx)
            && !dyn_low_rank(&y, &sy)
        {
            Layout::Nhwc
        } else {
            Layout::Plain
        };
        let mut ids = Vec::new();
        for v in [x, &y] {
            let id = match v {
                Value::Const(c) => {
                    let c = Const::new(c.shape.clone(), ConstData::F32(c.to_f32()))?;
                    self.tensor(&konst(c), layout)?
                }
                v => {
                    let (id, have) = self.operand(v)?;
                    self.relayout(id, have, layout)?
                }
            };
            ids.push(id);
        }
        let activation = Activation::None;
        let op = match op {
            BinaryOp::Add => Op::Add { activation },
            BinaryOp::Sub => Op::Sub { activation },
            BinaryOp::Mul => Op::Mul { activation },
            _ => Op::Div { activation },
        };
        let (dt, q) = self.out_type();
        let id = self.emit(op, ids, dt, q, &[])?;
        Ok(Value::Tensor { id, layout })
    }

    fn conv(&mut self, a: &Attrs, inputs: &[Option<Value>]) -> Result<Value> {
        let x = arg(inputs, 0, "X")?;
        let w = self.constant_value(opt(inputs, 1), "Conv's weight W")?;
        let xs = self.shape_of(x);
        if xs.len() != 4 || w.shape.len() != 4 {
            return unsupported(format!(
                "Conv of a rank-{} input: only 2-D (NCHW) convolutions are supported",
                xs.len()
            ));
        }
        let group = usize::try_from(a.int("group", 1))
            .ok()
            .filter(|&g| g > 0)
            .ok_or_else(|| Problem::Malformed("group must be positive".into()))?;
        let (m, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
        let c = xs[1];
        if cg * group != c || m % group != 0 {
            return malformed(format!(
                "weight {:?} with group {group} does not fit {c} input channels",
                w.shape
            ));
        }
        let win = Window::read(a, Some([kh, kw]))?;
        if win.kernel != [kh, kw] {
            return malformed(format!(
                "kernel_shape {:?} differs from the weight {:?}",
                win.kernel, w.shape
            ));
        }
        let padding = win.padding([xs[2], xs[3]])?;
        let bias = match opt(inputs, 2) {
            None => None,
            v => {
                let b = self.constant_value(v, "Conv's bias B")?;
                if b.shape != [m] {
                    return malformed(format!("bias shape {:?} for {m} output channels", b.shape));
                }
                Some(Const::new(vec![m], ConstData::F32(b.to_f32()))?)
            }
        };
        let w = Const::new(w.shape.clone(), ConstData::F32(w.to_f32()))?;
        let input = self.operand_in(x, Layout::Nhwc)?;
        let (op, filter) = if group == 1 {
            let op = Op::Conv2d(Conv2dAttrs {
                stride: win.stride,
                dilation: win.dilation,
                padding,
                activation: Activation::None,
                residual: None,
            });
            (op, w.transposed(&[0, 2, 3, 1])?)
        } else if group == c && cg == 1 {
            let op = Op::DepthwiseConv2d(DepthwiseConv2dAttrs {
                stride: win.stride,
                dilation: win.dilation,
                padding,
                depth_multiplier: m / c,
                activation: Activation::None,
            });
            (op, w.transposed(&[1, 2, 3, 0])?)
        } else {
            // A general grouped convolution runs as one convolution whose filter is zero
            // outside each group's input channels: exact, at `group` times the MACs.
            let src = w.to_f32();
            let mut full = vec![0f32; m * kh * kw * c];
            let per_group_out = m / group;
            for o in 0..m {
                let g = o / per_group_out;
                for i in 0..cg {
                    for y in 0..kh {
                        for xx in 0..kw {
                            full[((o * kh + y) * kw + xx) * c + g * cg + i] =
                                src[((o * cg + i) * kh + y) * kw + xx];
                        }
                    }
                }
            }
            let op = Op::Conv2d(Conv2dAttrs {
                stride: win.stride,
                dilation: win.dilation,
                padding,
                activation: Activation::None,
                residual: None,
            });
            (op, Const::new(vec![m, kh, kw, c], ConstData::F32(full))?)
        };
        let axis = if matches!(op, Op::DepthwiseConv2d(_)) {
            3
        } else {
            0
        };
        let mut operands = vec![input, self.weight(&filter, axis)?];
        if let Some(b) = bias {
            operands.push(self.bias(&b)?);
        }
        let (dt, q) = self.out_type();
        let id = self.emit(op, operands, dt, q, &[])?;
        Ok(Value::Tensor {
            id,
            layout: Layout::Nhwc,
        })
    }

    fn conv_transpose(&mut self, a: &Attrs, inputs: &[Option<Value>]) -> Result<Value> {
        let x = arg(inputs, 0, "X")?;
        let w = self.constant_value(opt(inputs, 1), "ConvTranspose's weight W")?;
        let xs = self.shape_of(x);
        if xs.len() != 4 || w.shape.len() != 4 {
            return unsupported("only 2-D (NCHW) ConvTranspose is supported");
        }
        if a.int("group", 1) != 1 {
            return unsupported("grouped ConvTranspose");
        }
        let (c, m, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
        if c != xs[1] {
            return malformed(format!("weight {:?} for {} input channels", w.shape, xs[1]));
        }
        let win = Window::read(a, Some([kh, kw]))?;
        let out_pad = match a.ints("output_padding") {
            None => [0, 0],
            Some(v) if v.len() == 2 => {
                let p = non_negative(v, "output_padding")?;
                [p[0], p[1]]
            }
            Some(v) => return malformed(format!("output_padding {v:?}")),
        };
        let full = |ax: usize| {
            win.stride[ax] * (xs[2 + ax] - 1)
                + out_pad[ax]
                + (win.kernel[ax] - 1) * win.dilation[ax]
                + 1
        };
        // (begin, end) padding per spatial axis and the output size.
        let mut pads = [(win.pads[0], win.pads[2]), (win.pads[1], win.pads[3])];
        let explicit_out = a.ints("output_shape").map(|v| v.to_vec());
        let same = matches!(win.auto_pad.as_str(), "SAME_UPPER" | "SAME_LOWER");
        if explicit_out.is_some() || same {
            for ax in 0..2 {
                let target = match &explicit_out {
                    Some(v) if v.len() == 2 => positive(&v[ax..ax + 1], "output_shape")?[0],
                    Some(v) => return malformed(format!("output_shape {v:?}")),
                    None => xs[2 + ax] * win.stride[ax],
                };
                let total = full(ax).checked_sub(target).ok_or_else(|| {
                    Problem::Unsupported(format!(
                        "output_shape {target} larger than the full output"
                    ))
                })?;
                pads[ax] = if win.auto_pad == "SAME_LOWER" {
                    (total - total / 2, total / 2)
                } else {
                    (total / 2, total - total / 2)
                };
            }
        } else if win.auto_pad == "VALID" {
            pads = [(0, 0), (0, 0)];
        }
        let out_hw: Vec<usize> = (0..2)
            .map(|ax| {
                full(ax)
                    .checked_sub(pads[ax].0 + pads[ax].1)
                    .filter(|&o| o > 0)
                    .ok_or_else(|| Problem::Malformed("ConvTranspose output is empty".into()))
            })
            .collect::<Result<_>>()?;
        let bias = match opt(inputs, 2) {
            None => None,
            v => {
                let b = self.constant_value(v, "ConvTranspose's bias B")?;
                if b.shape != [m] {
                    return malformed(format!("bias shape {:?} for {m} output channels", b.shape));
                }
                Some(Const::new(vec![m], ConstData::F32(b.to_f32()))?)
            }
        };
        let filter =
            Const::new(w.shape.clone(), ConstData::F32(w.to_f32()))?.transposed(&[1, 2, 3, 0])?;
        let input = self.operand_in(x, Layout::Nhwc)?;
        let mut operands = vec![input, self.weight(&filter, 0)?];
        if let Some(b) = bias {
            operands.push(self.bias(&b)?);
        }
        let op = Op::TransposeConv2d(TransposeConv2dAttrs {
            stride: win.stride,
            dilation: win.dilation,
            padding: Padding::Explicit {
                top: pads[0].0,
                bottom: pads[0].1,
                left: pads[1].0,
                right: pads[1].1,
            },
            activation: Activation::None,
        });
        let declared = [xs[0], out_hw[0], out_hw[1], m];
        let (dt, q) = self.out_type();
        let id = self.emit(op, operands, dt, q, &declared)?;
        Ok(Value::Tensor {
            id,
            layout: Layout::Nhwc,
        })
    }

    fn gemm(&mut self, a: &Attrs, inputs: &[Option<Value>]) -> Result<Value> {
        let x = arg(inputs, 0, "A")?;
        if a.int("transA", 0) != 0 {
            return unsupported("Gemm with transA=1 on a run-time A");
        }
        let w = self.constant_value(opt(inputs, 1), "Gemm's B")?;
        if w.shape.len() != 2 || self.shape_of(x).len() != 2 {
            return malformed("Gemm operands must be 2-D");
        }
        let w = Const::new(w.shape.clone(), ConstData::F32(w.to_f32()))?;
        let w = if a.int("transB", 0) == 0 {
            w.transposed(&[1, 0])?
        } else {
            w
        };
        let alpha = a.float("alpha", 1.0);
        let w = if alpha != 1.0 {
            w.binary(&Const::scalar_f32(alpha), BinaryOp::Mul)?
        } else {
            w
        };
        let n = w.shape[0];
        let (bias, extra) = match opt(inputs, 2) {
            None => (None, None),
            v => {
                let c = self.constant_value(v, "Gemm's C")?;
                let c = Const::new(c.shape.clone(), ConstData::F32(c.to_f32()))?
                    .binary(&Const::scalar_f32(a.float("beta", 1.0)), BinaryOp::Mul)?;
                let rows: usize = c.shape.iter().rev().skip(1).product();
                match (c.shape.last(), rows) {
                    (Some(&k), 1) if k == n => (Some(c.reshaped(vec![n])?), None),
                    (None | Some(1), 1) => {
                        let v = c.to_f32()[0];
                        (Some(Const::new(vec![n], ConstData::F32(vec![v; n]))?), None)
                    }
                    _ => (None, Some(c)),
                }
            }
        };
        let input = self.operand_in(x, Layout::Plain)?;
        let mut operands = vec![input, self.weight(&w, 0)?];
        if let Some(b) = bias {
            operands.push(self.bias(&b)?);
        }
        let op = Op::FullyConnected {
            activation: Activation::None,
            keep_num_dims: false,
        };
        let (dt, q) = self.out_type();
        let id = self.emit(op, operands, dt, q, &[])?;
        let out = Value::Tensor {
            id,
            layout: Layout::Plain,
        };
        match extra {
            Some(c) => self.binary_values("Add", &out, &konst(c)),
            None => Ok(out),
        }
    }

    fn matmul(&mut self, inputs: &[Option<Value>]) -> Result<Value> {
        let x = arg(inputs, 0, "A")?;
        let b = match opt(inputs, 1) {
            Some(Value::Const(_)) | Some(Value::Dequantized { .. }) => {
                self.constant_value(opt(inputs, 1), "MatMul's B")?
            }
            _ => return unsupported("MatMul of two run-time tensors (B must be a constant)"),
        };
        let rank = self.shape_of(x).len();
        if b.shape.len() != 2 || rank < 2 {
            return unsupported(format!(
                "MatMul of rank {rank} by rank {}: kiln supports an N-D input times a 2-D constant",
                b.shape.len()
            ));
        }
        let w = Const::new(b.shape.clone(), ConstData::F32(b.to_f32()))?.transposed(&[1, 0])?;
        let (input, layout) = self.operand(x)?;
        let input = self.relayout(input, layout, Layout::Plain)?;
        let op = Op::FullyConnected {
            activation: Activation::None,
            keep_num_dims: rank > 2,
        };
        let operands = vec![input, self.weight(&w, 0)?];
        let (dt, q) = self.out_type();
        let id = self.emit(op, operands, dt, q, &[])?;
        Ok(Value::Tensor {
            id,
            layout: Layout::Plain,
        })
    }

    fn pool(&mut self, op: &str, a: &Attrs, inputs: &[Option<Value>]) -> Result<Value> {
        let x = arg(inputs, 0, "X")?;
        let xs = self.shape_of(x);
        if xs.len() != 4 {
            return unsupported(format!("{op} of a rank-{} input: only 2-D pools", xs.len()));
        }
        let win = Window::read(a, None)?;
        if win.dilation != [1, 1] {
            return unsupported("dilated pooling");
        }
        let mut padding = win.padding([xs[2], xs[3]])?;
        if a.int("ceil_mode", 0) != 0 {
            for ax in 0..2 {
                let (b, e) = padding.explicit(ax).unwrap_or((0, 0));
                let span = (xs[2 + ax] + b + e).saturating_sub(win.kernel[ax]);
                if matches!(padding, Padding::Same) || span % win.stride[ax] != 0 {
                    return unsupported("ceil_mode=1 where it changes the output size");
                }
            }
        }
        let mut input = self.operand_in(x, Layout::Nhwc)?;
        if op == "AveragePool" && a.int("count_include_pad", 0) != 0 {
            if let Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } = padding
            {
                // Padded zeros count in the mean: pad explicitly, then pool VALID.
                let p = Op::Pad {
                    paddings: vec![[0, 0], [top, bottom], [left, right], [0, 0]],
                };
                let (dt, q) = (
                    self.graph.info(input).dtype,
                    self.graph.info(input).quant.clone(),
                );
                input = self.emit(p, vec![input], dt, q, &[])?;
                padding = Padding::Valid;
            } else if matches!(padding, Padding::Same) {
                return unsupported("AveragePool with SAME auto_pad and count_include_pad=1");
            }
        }
        let attrs = Pool2dAttrs {
            filter: win.kernel,
            stride: win.stride,
            padding,
            activation: Activation::None,
        };
        let op = if op == "MaxPool" {
            Op::MaxPool2d(attrs)
        } else {
            Op::AveragePool2d(attrs)
        };
        let (dt, q) = self.out_type();
        let id = self.emit(op, vec![input], dt, q, &[])?;
        Ok(Value::Tensor {
            id,
            layout: Layout::Nhwc,
        })
    }

    fn batch_norm(&mut self, eps: f32, inputs: &[Option<Value>]) -> Result<Value> {
        let x = arg(inputs, 0, "X")?;
        let mut p = Vec::new();
        for (i, what) in [(1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")] {
            p.push(
                self.constant_value(opt(inputs, i), &format!("BatchNormalization's {what}"))?
                    .to_f32(),
            );
        }
        let xs = self.shape_of(x);
        let c = *xs
            .get(1)
            .ok_or_else(|| Problem::Malformed("BatchNormalization of a rank-1 input".into()))?;
        if p.iter().any(|v| v.len() != c) {
            return malformed(format!(
                "parameters must have {c} elements (the channel count)"
            ));
        }
        let scale: Vec<f32> = (0..c).map(|i| p[0][i] / (p[3][i] + eps).sqrt()).collect();
        let shift: Vec<f32> = (0..c).map(|i| p[1][i] - p[2][i] * scale[i]).collect();
        // Broadcast shape [C, 1, ...] against the logical [N, C, ...] input.
        let mut shape = vec![c];
        shape.extend(std::iter::repeat_n(1, xs.len().saturating_sub(2)));
        let s = konst(Const::new(shape.clone(), ConstData::F32(scale))?);
        let t = konst(Const::new(shape, ConstData::F32(shift))?);
        let y = self.binary_values("Mul", x, &s)?;
        self.binary_values("Add", &y, &t)
    }

    fn pad(&mut self, a: &Attrs, inputs: &[Option<Value>]) -> Result<Value> {
        let x = arg(inputs, 0, "data")?;
        let mode = a.string("mode").unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            return unsupported(format!("Pad mode '{mode}' (only constant)"));
        }
        let xs = self.shape_of(x);
        let rank = xs.len();
        let pads = self
            .constant_value(opt(inputs, 1), "Pad's pads")?
            .to_i64("pads")?;
        if let Some(v) = opt(inputs, 2) {
            let cv = self
                .constant_value(Some(v), "Pad's constant_value")?
                .to_f32();
            if cv.iter().any(|&v| v != 0.0) {
                return unsupported(format!("Pad with constant_value {cv:?} (only 0)"));
            }
        }
        let axes: Vec<usize> = match opt(inputs, 3) {
            None => (0..rank).collect(),
            v => self
                .constant_value(v, "Pad's axes")?
                .to_i64("axes")?
                .iter()
                .map(|&x| normalize_axis(x, rank))
                .collect::<Result<_>>()?,
        };
        if pads.len() != 2 * axes.len() {
            return malformed(format!("{} pads for {} axes", pads.len(), axes.len()));
        }
        let pads = non_negative(&pads, "pads")?;
        let mut logical = vec![[0usize; 2]; rank];
        for (k, &ax) in axes.iter().enumerate() {
            logical[ax] = [pads[k], pads[k + axes.len()]];
        }
        let layout = if rank == 4 {
            Layout::Nhwc
        } else {
            Layout::Plain
        };
        let (id, have) = self.operand(x)?;
        let id = self.relayout(id, have, layout)?;
        let paddings = match layout {
            Layout::Nhwc => vec![logical[0], logical[2], logical[3], logical[1]],
            Layout::Plain => logical,
        };
        let (dt, q) = self.out_type();
        let id = self.emit(Op::Pad { paddings }, vec![id], dt, q, &[])?;
        Ok(Value::Tensor { id, layout })
    }

    fn softmax(&mut self, a: &Attrs, x: &Value) -> Result<Value> {
        let xs = self.shape_of(x);
        let rank = xs.len();
        let default = if self.opset < 13 { 1 } else { -1 };
        let axis = normalize_axis(a.int("axis", default), rank)?;
        let (id, layout) = self.operand(x)?;
        let softmax = Op::Softmax { beta: 1.0 };
        if layout == Layout::Nhwc && axis == 1 && self.opset >= 13 {
            let (dt, q) = self.out_type();
            let id = self.emit(softmax, vec![id], dt, q, &[])?;
            return Ok(Value::Tensor { id, layout });
        }
        let plain = Value::Tensor { id, layout };
        if axis == rank - 1 {
            let id = self.tensor(&plain, Layout::Plain)?;
            let (dt, q) = self.out_type();
            let id = self.emit(softmax, vec![id], dt, q, &[])?;
            return Ok(Value::Tensor {
                id,
                layout: Layout::Plain,
            });
        }
        if self.opset < 13 {
            // Opset < 13: softmax over the flattened trailing axes from `axis`.
            let rows: usize = xs[..axis].iter().product();
            let flat = self.reshape(&plain, vec![rows, xs[axis..].iter().product()])?;
            let id = self.tensor(&flat, Layout::Plain)?;
            let (dt, q) = self.out_type();
            let id = self.emit(softmax, vec![id], dt, q, &[])?;
            let y = Value::Tensor {
                id,
                layout: Layout::Plain,
            };
            return self.reshape(&y, xs);
        }
        unsupported(format!(
            "Softmax over axis {axis} of a rank-{rank} tensor (only the last or the channel axis)"
        ))
    }

    fn reduce_mean(&mut self, a: &Attrs, inputs: &[Option<Value>]) -> Result<Value> {
        let x = arg(inputs, 0, "data")?;
        let xs = self.shape_of(x);
        let rank = xs.len();
        let axes = match (a.ints("axes"), opt(inputs, 1)) {
            (Some(v), _) => v.to_vec(),
            (None, Some(v)) => self.constant_value(Some(v), "axes")?.to_i64("axes")?,
            (None, None) => vec![],
        };
        let keep = a.int("keepdims", 1) != 0;
        let mut axes = axes
            .iter()
            .map(|&v| normalize_axis(v, rank))
            .collect::<Result<Vec<_>>>()?;
        if axes.is_empty() {
            if a.int("noop_with_empty_axes", 0) != 0 {
                return Ok(x.clone());
            }
            axes = (0..rank).collect();
        }
        axes.sort_unstable();
        axes.dedup();
        let (id, have) = self.operand(x)?;
        let kept_in_order = {
            let kept: Vec<usize> = [0, 2, 3, 1]
                .into_iter()
                .filter(|ax| !axes.contains(ax))
                .collect();
            kept.windows(2).all(|w| w[0] < w[1])
        };
        // Without keepdims, the NHWC tensor can be reduced in place only if the kept
        // axes are stored in their logical order.
        let layout = if have == Layout::Nhwc && (keep || kept_in_order) {
            Layout::Nhwc
        } else {
            Layout::Plain
        };
        let id = self.relayout(id, have, layout)?;
        let mut stored_axes: Vec<usize> = match layout {
            Layout::Nhwc => axes.iter().map(|&ax| nhwc_axis(ax)).collect(),
            Layout::Plain => axes.clone(),
        };
        stored_axes.sort_unstable();
        let op = Op::Mean {
            axes: stored_axes,
            keep_dims: keep,
        };
        let (dt, q) = self.out_type();
        let id = self.emit(op, vec![id], dt, q, &[])?;
        let layout = if keep { layout } else { Layout::Plain };
        Ok(Value::Tensor { id, layout })
    }
}

/// ONNX Reshape's target: 0 copies the input dim (unless `allowzero`), one -1 is inferred.
fn reshape_target(input: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let bad = || Problem::Malformed(format!("cannot reshape {input:?} into {target:?}"));
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                Problem::Malformed(format!(
                    "shape {target:?}: 0 at {i} beyond the input's rank"
                ))
            })?),
            t if t >= 0 => out.push(usize::try_from(t).map_err(|_| bad())?),
            _ => return Err(bad()),
        }
    }
    let known = out
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(bad)?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(bad());
        }
        out[i] = total / known;
    } else if known != total {
        return Err(bad());
    }
    Ok(out)
}
