//! The float graph → int8 graph rewrite, in TFLite's full-integer scheme.
//!
//! Every tensor keeps its [`TensorId`]: activations (graph inputs included) become
//! int8 with asymmetric per-tensor parameters, weights become symmetric int8 (per
//! channel), biases int32 with scale `input_scale × weight_scale`. Parameters that
//! TFLM's int8 kernels constrain are derived, not calibrated:
//!
//! * SOFTMAX and LOGISTIC results: scale 1/256, zero point -128; TANH: 1/128, 0.
//! * Pooling, RESHAPE, PAD, TRANSPOSE, CONCATENATION and RELU6 copy or clamp values
//!   without requantizing, so their operands and result form one group sharing one
//!   set of parameters, from the union of the members' ranges. A CONCATENATION input
//!   whose group is pinned (e.g. a softmax result) is requantized by an inserted
//!   QUANTIZE node instead; that node and its result are the only new ids.
//! * A RELU, RELU6 or CLIP whose input is read by nothing else quantizes that input
//!   with the clamp's result range (TFLite fuses the clamp into the producer before
//!   quantizing; values beyond the range are clamped away anyway), which also lets
//!   `passes::fold_activation` fold it afterwards.
//! * DIV results get a scale of at most `s1 / (64 × s2)`: TFLM's int8 division shifts
//!   wrap beyond 31 bits otherwise (quotients of divisors near 0 saturate instead).

use super::params;
use super::QuantizeError;
use crate::ir::{
    Conv2dAttrs, DType, Graph, Node, NodeId, Op, QuantParams, Tensor, TensorId, TensorInfo,
};
use crate::passes::single_private_use;
use std::borrow::Cow;
use std::collections::HashMap;

/// Smallest real multiplier `s1 / (s2 × s_out)` of an int8 DIV whose fixed-point
/// shifts stay within 31 bits for all operands (see `quantize_graph`).
pub(crate) const DIV_MIN_MULTIPLIER: f64 = 64.0;

/// How a node's operands and result are quantized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Rule {
    /// Constant weights (operand 1), symmetric per channel along `axis` (or per tensor
    /// when `per_channel` is false), an optional int32 bias (operand 2); the result has
    /// its own range.
    Weighted {
        /// The weights' output-channel axis.
        axis: usize,
        /// One scale per channel.
        per_channel: bool,
    },
    /// The result has its own calibrated range; constant operands are quantized per
    /// tensor from their values.
    Free,
    /// The int8 kernel requires these result parameters.
    Pinned(f32, i32),
    /// Operands and result share parameters.
    Tied,
    /// A clamp whose private input takes the result's range.
    Clamp,
}

fn node_error(index: usize, node: &Node, message: impl Into<String>) -> QuantizeError {
    QuantizeError::Node {
        index,
        name: node.name.clone(),
        op: node.op.name(),
        message: message.into(),
    }
}

/// The quantization rule of node `index`, or why it cannot be quantized.
pub(crate) fn rule(
    g: &Graph,
    index: usize,
    node: &Node,
    fc_per_channel: bool,
) -> Result<Rule, QuantizeError> {
    let private = |g: &Graph| {
        let x = node.inputs[0];
        !g.inputs.contains(&x)
            && g.tensor(x).data.is_none()
            && single_private_use(g, x) == Some(NodeId(index))
    };
    let weighted = |axis: usize, per_channel: bool| Rule::Weighted { axis, per_channel };
    Ok(match &node.op {
        Op::Conv2d(a) if a.residual.is_some() => {
            return Err(node_error(
                index,
                node,
                "has a fused residual ADD; quantize the graph before the optimization passes",
            ))
        }
        Op::Conv2d(_) | Op::TransposeConv2d(_) => weighted(0, true),
        Op::DepthwiseConv2d(_) => weighted(3, true),
        Op::FullyConnected { .. } => weighted(0, fc_per_channel),
        Op::Add { .. }
        | Op::Sub { .. }
        | Op::Mul { .. }
        | Op::Div { .. }
        | Op::Mean { .. }
        | Op::LeakyRelu { .. } => Rule::Free,
        Op::Softmax { .. } | Op::Logistic => Rule::Pinned(1.0 / 256.0, -128),
        Op::Tanh => Rule::Pinned(1.0 / 128.0, 0),
        Op::Relu | Op::Relu6 | Op::Clip { .. } if private(g) => Rule::Clamp,
        Op::Relu | Op::Clip { .. } => Rule::Free,
        Op::Relu6
        | Op::AveragePool2d(_)
        | Op::MaxPool2d(_)
        | Op::Reshape
        | Op::Pad { .. }
        | Op::Transpose { .. }
        | Op::Concatenation { .. } => Rule::Tied,
        Op::Quantize | Op::Dequantize => {
            return Err(node_error(
                index,
                node,
                "the graph is already (partly) quantized; only float32 graphs can be quantized",
            ))
        }
    })
}

/// `g` with every residual ADD that `passes::fuse_residual` fused into a convolution
/// split out again (a new tensor, appended, for the conv's own result), so that result
/// can be calibrated; the optimization passes fuse it again after quantization. Other
/// tensor ids are unchanged, and the same graph always gives the same new ids.
pub(crate) fn unfuse_residuals(g: &Graph) -> Cow<'_, Graph> {
    let fused =
        |n: &Node| matches!(&n.op, Op::Conv2d(a) if a.residual.is_some()) && n.inputs.len() == 4;
    if !g.nodes.iter().any(fused) {
        return Cow::Borrowed(g);
    }
    let mut out = g.clone();
    out.nodes.clear();
    for node in &g.nodes {
        let (attrs, r) = match &node.op {
            Op::Conv2d(
                a @ Conv2dAttrs {
                    residual: Some(r), ..
                },
            ) if node.inputs.len() == 4 => (a, r),
            _ => {
                out.nodes.push(node.clone());
                continue;
            }
        };
        let y = node.outputs[0];
        let conv_result = TensorId(out.tensors.len());
        out.tensors.push(Tensor {
            name: format!("{}_conv", g.tensor(y).name),
            info: g.info(y).clone(),
            data: None,
        });
        out.nodes.push(Node {
            name: node.name.clone(),
            op: Op::Conv2d(Conv2dAttrs {
                residual: None,
                ..*attrs
            }),
            inputs: node.inputs[..3].to_vec(),
            outputs: vec![conv_result],
        });
        let skip = node.inputs[3];
        let inputs = if r.conv_is_first {
            vec![conv_result, skip]
        } else {
            vec![skip, conv_result]
        };
        out.nodes.push(Node {
            name: format!("{}_residual_add", node.name),
            op: Op::Add {
                activation: r.activation,
            },
            inputs,
            outputs: vec![y],
        });
    }
    Cow::Owned(out)
}

/// Every reason the float graph cannot be quantized that shows without running it:
/// non-float tensors, unsupported nodes, non-constant weights. Returns the rules.
pub(crate) fn check(g: &Graph, fc_per_channel: bool) -> Result<Vec<Rule>, QuantizeError> {
    let produced = g.nodes.iter().flat_map(|n| n.outputs.iter());
    for id in g.inputs.iter().chain(produced) {
        let t = g.tensor(*id);
        if t.info.dtype != DType::F32 {
            return Err(QuantizeError::Tensor {
                index: id.0,
                name: t.name.clone(),
                message: format!(
                    "is {}; only float32 graphs can be quantized",
                    t.info.dtype.name()
                ),
            });
        }
    }
    let mut rules = Vec::with_capacity(g.nodes.len());
    for (index, node) in g.nodes.iter().enumerate() {
        let r = rule(g, index, node, fc_per_channel)?;
        for (slot, id) in node.inputs.iter().enumerate() {
            let t = g.tensor(*id);
            let weight_slot = matches!(r, Rule::Weighted { .. }) && slot >= 1;
            let what = if slot == 1 { "weights" } else { "bias" };
            if weight_slot && t.data.is_none() {
                return Err(node_error(
                    index,
                    node,
                    format!(
                        "{what} '{}' are not constant; int8 needs constant weights",
                        t.name
                    ),
                ));
            }
            if t.data.is_some() && t.info.dtype != DType::F32 {
                return Err(node_error(
                    index,
                    node,
                    format!(
                        "constant operand {slot} '{}' is {}, expected float32",
                        t.name,
                        t.info.dtype.name()
                    ),
                ));
            }
        }
        rules.push(r);
    }
    Ok(rules)
}

/// Union-find over tensor ids.
struct Groups(Vec<usize>);

impl Groups {
    fn find(&mut self, mut t: usize) -> usize {
        while self.0[t] != t {
            self.0[t] = self.0[self.0[t]];
            t = self.0[t];
        }
        t
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[b] = a;
        }
    }
}

fn f32_data(t: &Tensor) -> Vec<f32> {
    t.data
        .as_deref()
        .unwrap_or_default()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn data_range(values: &[f32]) -> Option<(f32, f32)> {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    finite.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The int8 twin of `float`. `ranges[t]` is the calibrated clipping range of each
/// activation tensor (graph inputs and node results); constants are ranged by value.
pub(crate) fn quantize_graph(
    float: &Graph,
    ranges: &[Option<(f32, f32)>],
    fc_per_channel: bool,
) -> Result<Graph, QuantizeError> {
    let g = float;
    let n = g.tensors.len();
    let rules = check(g, fc_per_channel)?;

    // Groups of tensors sharing parameters, and the parameters some groups must have.
    let mut groups = Groups((0..n).collect());
    let mut excluded = vec![false; n];
    let mut pinned: Vec<Option<(f32, i32)>> = vec![None; n];
    for (node, rule) in g.nodes.iter().zip(&rules) {
        let (x, y) = (node.inputs[0].0, node.outputs[0].0);
        match rule {
            Rule::Tied if !matches!(node.op, Op::Concatenation { .. }) => groups.union(y, x),
            Rule::Clamp => {
                groups.union(y, x);
                excluded[x] = true;
            }
            Rule::Pinned(s, z) => pinned[y] = Some((*s, *z)),
            _ => {}
        }
    }
    let group_pins = |groups: &mut Groups| -> Result<HashMap<usize, (f32, i32)>, QuantizeError> {
        let mut pins = HashMap::new();
        for (t, p) in pinned.iter().enumerate() {
            if let Some(p) = p {
                let root = groups.find(t);
                if pins.insert(root, *p).is_some_and(|q| q != *p) {
                    return Err(QuantizeError::Tensor {
                        index: t,
                        name: g.tensors[t].name.clone(),
                        message: "needs two different fixed quantizations".into(),
                    });
                }
            }
        }
        Ok(pins)
    };
    let pins = group_pins(&mut groups)?;
    // CONCATENATION joins its inputs' groups unless an input's group is pinned; that
    // input is requantized to the concatenation's parameters.
    let mut requantize: Vec<(usize, usize)> = Vec::new();
    for (i, (node, rule)) in g.nodes.iter().zip(&rules).enumerate() {
        if *rule != Rule::Tied || !matches!(node.op, Op::Concatenation { .. }) {
            continue;
        }
        let y = node.outputs[0].0;
        for (slot, x) in node.inputs.iter().enumerate() {
            let root = groups.find(x.0);
            if pins.contains_key(&root) {
                requantize.push((i, slot));
            } else {
                groups.union(y, x.0);
            }
        }
    }
    let pins = group_pins(&mut groups)?;

    // Each group's range: the union of its members' ranges.
    let mut group_range: HashMap<usize, (f32, f32)> = HashMap::new();
    for (t, tensor) in g.tensors.iter().enumerate() {
        if excluded[t] {
            continue;
        }
        let r = match &tensor.data {
            Some(_) if tensor.info.dtype == DType::F32 => data_range(&f32_data(tensor)),
            Some(_) => None,
            None => ranges.get(t).copied().flatten(),
        };
        if let Some((lo, hi)) = r {
            let root = groups.find(t);
            let e = group_range.entry(root).or_insert((lo, hi));
            *e = (e.0.min(lo), e.1.max(hi));
        }
    }
    // int8 DIV: TFLM's kernel shifts `(x - zp1) << headroom × 1/(y - zp2)` right by
    // `recip_shift + headroom - shift(M)`, M = s1 / (s2 × s_out); beyond 31 bits the
    // shift wraps (see runtime div.rs) and the quotient is garbage. M >= 64 keeps it
    // within 31 bits for every int8 operand, so the output scale is capped at
    // s1 / (64 × s2); larger quotients (divisors near 0) saturate instead.
    for node in &g.nodes {
        if !matches!(node.op, Op::Div { .. }) {
            continue;
        }
        let root = groups.find(node.outputs[0].0);
        let operand_roots = [groups.find(node.inputs[0].0), groups.find(node.inputs[1].0)];
        if pins.contains_key(&root) || operand_roots.contains(&root) {
            continue;
        }
        let scale_of = |r: usize| {
            pins.get(&r).map(|p| p.0).or_else(|| {
                group_range
                    .get(&r)
                    .map(|&(lo, hi)| params::asymmetric(lo, hi).0)
            })
        };
        let (Some(s1), Some(s2), Some(s_out)) = (
            scale_of(operand_roots[0]),
            scale_of(operand_roots[1]),
            scale_of(root),
        ) else {
            continue;
        };
        let cap = f64::from(s1) / (DIV_MIN_MULTIPLIER * f64::from(s2));
        if f64::from(s_out) > cap {
            let shrink = (cap / f64::from(s_out) * 0.999) as f32;
            if let Some(r) = group_range.get_mut(&root) {
                *r = (r.0.min(0.0) * shrink, r.1.max(0.0) * shrink);
            }
        }
    }
    let mut params: Vec<Option<(f32, i32)>> = Vec::with_capacity(n);
    for t in 0..n {
        let root = groups.find(t);
        params.push(pins.get(&root).copied().or_else(|| {
            group_range
                .get(&root)
                .map(|&(lo, hi)| params::asymmetric(lo, hi))
        }));
    }
    let activation_params = |id: TensorId| {
        params[id.0].ok_or_else(|| QuantizeError::Tensor {
            index: id.0,
            name: g.tensor(id).name.clone(),
            message: "has no calibration statistics".into(),
        })
    };

    let mut out = g.clone();
    let produced = g.nodes.iter().flat_map(|n| n.outputs.iter());
    for id in g.inputs.iter().chain(produced) {
        let (s, z) = activation_params(*id)?;
        let info = &mut out.tensors[id.0].info;
        info.dtype = DType::I8;
        info.quant = Some(QuantParams::per_tensor(s, z));
    }

    let mut assigned = vec![false; n];
    let mut nodes = Vec::with_capacity(g.nodes.len() + requantize.len());
    for (i, (node, rule)) in g.nodes.iter().zip(&rules).enumerate() {
        let mut node = node.clone();
        if let Rule::Weighted { axis, per_channel } = rule {
            let (s_in, _) = activation_params(node.inputs[0])?;
            let (w, b) = weighted_constants(g, i, &node, s_in, *axis, *per_channel)?;
            set_constant(&mut out, &mut assigned, &mut node, 1, w);
            if let Some(b) = b {
                set_constant(&mut out, &mut assigned, &mut node, 2, b);
            }
        } else {
            for slot in 0..node.inputs.len() {
                let id = node.inputs[slot];
                let t = g.tensor(id);
                if t.data.is_none() {
                    continue;
                }
                let (s, z) = activation_params(id)?;
                let data: Vec<u8> = f32_data(t)
                    .iter()
                    .map(|&v| params::quantize_i8(v, s, z) as u8)
                    .collect();
                let value = Tensor {
                    name: t.name.clone(),
                    info: TensorInfo {
                        shape: t.info.shape.clone(),
                        dtype: DType::I8,
                        quant: Some(QuantParams::per_tensor(s, z)),
                    },
                    data: Some(data),
                };
                set_constant(&mut out, &mut assigned, &mut node, slot, value);
            }
        }
        for &(_, slot) in requantize.iter().filter(|(at, _)| *at == i) {
            let (s, z) = activation_params(node.outputs[0])?;
            let src = node.inputs[slot];
            let id = TensorId(out.tensors.len());
            out.tensors.push(Tensor {
                name: format!("{}_requantized", g.tensor(src).name),
                info: TensorInfo {
                    shape: g.info(src).shape.clone(),
                    dtype: DType::I8,
                    quant: Some(QuantParams::per_tensor(s, z)),
                },
                data: None,
            });
            nodes.push(Node {
                name: format!("{}_requantize_{slot}", node.name),
                op: Op::Quantize,
                inputs: vec![src],
                outputs: vec![id],
            });
            node.inputs[slot] = id;
        }
        nodes.push(node);
    }
    out.nodes = nodes;
    Ok(out)
}

/// Gives operand `slot` of `node` the constant `value`: in place the first time the
/// float tensor is converted, shared when another use converted it identically, else
/// as a new tensor (a constant read in two roles, e.g. one bias behind two inputs of
/// different scales).
fn set_constant(
    out: &mut Graph,
    assigned: &mut [bool],
    node: &mut Node,
    slot: usize,
    value: Tensor,
) {
    let id = node.inputs[slot];
    if !assigned[id.0] {
        out.tensors[id.0] = value;
        assigned[id.0] = true;
    } else if out.tensors[id.0] != value {
        node.inputs[slot] = TensorId(out.tensors.len());
        out.tensors.push(Tensor {
            name: format!("{}_{}", value.name, node.name),
            ..value
        });
    }
}

/// The int8 weights and int32 bias of a conv-like node whose input scale is `s_in`.
fn weighted_constants(
    g: &Graph,
    index: usize,
    node: &Node,
    s_in: f32,
    axis: usize,
    per_channel: bool,
) -> Result<(Tensor, Option<Tensor>), QuantizeError> {
    let wt = g.tensor(node.inputs[1]);
    let shape = &wt.info.shape;
    let w = f32_data(wt);
    let channels = if per_channel {
        *shape.get(axis).ok_or_else(|| {
            node_error(
                index,
                node,
                format!("weights of shape {shape:?} have no axis {axis}"),
            )
        })?
    } else {
        1
    };
    let inner: usize = if per_channel {
        shape[axis + 1..].iter().product()
    } else {
        w.len().max(1)
    };
    let channel_of = |i: usize| (i / inner.max(1)) % channels.max(1);
    let mut max_abs = vec![0f32; channels];
    for (i, &v) in w.iter().enumerate() {
        if !v.is_finite() {
            return Err(node_error(
                index,
                node,
                format!("weights '{}' hold NaN or infinity", wt.name),
            ));
        }
        let c = channel_of(i);
        max_abs[c] = max_abs[c].max(v.abs());
    }
    let mut scales: Vec<f32> = max_abs
        .iter()
        .map(|&m| params::symmetric_scale(m))
        .collect();

    let bias = node.inputs.get(2).map(|&id| g.tensor(id));
    let b = bias.map(f32_data);
    if let Some(b) = &b {
        let want = if per_channel { channels } else { b.len() };
        if b.len() != want || (!per_channel && b.is_empty()) {
            return Err(node_error(
                index,
                node,
                format!("bias has {} values for {channels} channels", b.len()),
            ));
        }
        // Widen a channel's weight scale where its bias would overflow int32.
        for (c, &v) in b.iter().enumerate() {
            let c = if per_channel { c } else { 0 };
            if !v.is_finite() {
                return Err(node_error(index, node, "bias holds NaN or infinity"));
            }
            if !params::bias_fits(v, s_in * scales[c]) {
                let widened = f64::from(v.abs()) / (f64::from(s_in) * f64::from(i32::MAX) * 0.999);
                scales[c] = scales[c].max(widened as f32);
            }
        }
    }
    let data: Vec<u8> = w
        .iter()
        .enumerate()
        .map(|(i, &v)| params::quantize_weight(v, scales[channel_of(i)]) as u8)
        .collect();
    let quant = |scale: Vec<f32>, axis: usize| QuantParams {
        zero_point: vec![0; scale.len()],
        scale,
        axis: if per_channel { axis } else { 0 },
    };
    let weights = Tensor {
        name: wt.name.clone(),
        info: TensorInfo {
            shape: shape.clone(),
            dtype: DType::I8,
            quant: Some(quant(scales.clone(), axis)),
        },
        data: Some(data),
    };
    let bias = match (bias, b) {
        (Some(bt), Some(b)) => {
            let bias_scales: Vec<f32> = scales.iter().map(|&s| s_in * s).collect();
            let data: Vec<u8> = b
                .iter()
                .enumerate()
                .flat_map(|(c, &v)| {
                    let s = bias_scales[if per_channel { c } else { 0 }];
                    params::quantize_bias(v, s).to_le_bytes()
                })
                .collect();
            Some(Tensor {
                name: bt.name.clone(),
                info: TensorInfo {
                    shape: bt.info.shape.clone(),
                    dtype: DType::I32,
                    quant: Some(quant(bias_scales, bt.info.shape.len().saturating_sub(1))),
                },
                data: Some(data),
            })
        }
        _ => None,
    };
    Ok((weights, bias))
}
