//! `Graph::validate`: the rules every stage after import may rely on, so that no later
//! stage needs to re-check shapes, types or indices (and none can panic on them).

use super::{infer_output_shape, Conv2dAttrs, DType, Graph, Node, Op, TensorId, TensorInfo};

/// Largest single tensor kiln accepts, in bytes. Models for microcontrollers are far
/// smaller; the limit keeps a hostile file from requesting unbounded memory.
pub const MAX_TENSOR_BYTES: usize = 256 << 20;

/// Largest sum of all tensor sizes of one graph, in bytes.
pub const MAX_GRAPH_BYTES: usize = 1 << 30;

/// Why a graph is not valid, with the tensor or node it concerns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidateError {
    /// A tensor is inconsistent on its own.
    #[error("tensor {index} '{name}': {message}")]
    Tensor {
        /// Tensor index.
        index: usize,
        /// Tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A node's operands, results or attributes are inconsistent.
    #[error("node {index} '{name}' ({op}): {message}")]
    Node {
        /// Node index in topological order.
        index: usize,
        /// Node name.
        name: String,
        /// Operator name.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A graph-level rule is broken (inputs, outputs, ordering).
    #[error("graph: {0}")]
    Graph(String),
}

pub(super) fn validate(g: &Graph) -> Result<(), ValidateError> {
    let mut total = 0usize;
    for (index, t) in g.tensors.iter().enumerate() {
        let fail = |message: String| ValidateError::Tensor {
            index,
            name: t.name.clone(),
            message,
        };
        let bytes = checked_byte_size(&t.info).map_err(fail)?;
        total = total.saturating_add(bytes);
        check_quant(&t.info).map_err(fail)?;
        if let Some(data) = &t.data {
            if data.len() != bytes {
                return Err(fail(format!(
                    "constant holds {} bytes, shape {:?} of {} needs {bytes}",
                    data.len(),
                    t.info.shape,
                    t.info.dtype.name()
                )));
            }
        }
    }
    if total > MAX_GRAPH_BYTES {
        return Err(ValidateError::Graph(format!(
            "tensors need {total} bytes in all, over the limit of {MAX_GRAPH_BYTES}"
        )));
    }

    let in_range = |id: &TensorId| id.0 < g.tensors.len();
    if !g.inputs.iter().chain(&g.outputs).all(in_range) {
        return Err(ValidateError::Graph(
            "input or output tensor index out of range".into(),
        ));
    }
    // Which tensors hold a value at each point of the node order.
    let mut defined: Vec<bool> = g.tensors.iter().map(|t| t.data.is_some()).collect();
    for id in &g.inputs {
        if g.tensor(*id).data.is_some() {
            return Err(ValidateError::Graph(format!(
                "graph input {} is a constant",
                id.0
            )));
        }
        defined[id.0] = true;
    }
    for (index, node) in g.nodes.iter().enumerate() {
        let fail = |message: String| ValidateError::Node {
            index,
            name: node.name.clone(),
            op: node.op.name(),
            message,
        };
        if !node.inputs.iter().chain(&node.outputs).all(in_range) {
            return Err(fail("operand index out of range".into()));
        }
        if let Some(id) = node.inputs.iter().find(|id| !defined[id.0]) {
            return Err(fail(format!(
                "operand tensor {} '{}' is used before any node produces it",
                id.0,
                g.tensor(*id).name
            )));
        }
        for id in &node.outputs {
            if defined[id.0] {
                return Err(fail(format!(
                    "result tensor {} '{}' is already defined (input, constant or earlier result)",
                    id.0,
                    g.tensor(*id).name
                )));
            }
            defined[id.0] = true;
        }
        check_node(g, node).map_err(fail)?;
    }
    if let Some(id) = g.outputs.iter().find(|id| !defined[id.0]) {
        return Err(ValidateError::Graph(format!(
            "graph output {} '{}' is never produced",
            id.0,
            g.tensor(*id).name
        )));
    }
    Ok(())
}

fn checked_byte_size(info: &TensorInfo) -> Result<usize, String> {
    let bytes = info
        .shape
        .iter()
        .try_fold(info.dtype.size(), |acc, &d| acc.checked_mul(d))
        .filter(|&b| b <= MAX_TENSOR_BYTES);
    bytes.ok_or_else(|| {
        format!(
            "shape {:?} of {} exceeds the {MAX_TENSOR_BYTES}-byte tensor limit",
            info.shape,
            info.dtype.name()
        )
    })
}

fn check_quant(info: &TensorInfo) -> Result<(), String> {
    let Some(q) = &info.quant else { return Ok(()) };
    if q.scale.is_empty() || q.scale.len() != q.zero_point.len() {
        return Err(format!(
            "quantization has {} scales and {} zero points",
            q.scale.len(),
            q.zero_point.len()
        ));
    }
    if let Some(s) = q.scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(format!(
            "quantization scale {s} is not a positive finite number"
        ));
    }
    if !q.is_per_tensor() && info.shape.get(q.axis) != Some(&q.scale.len()) {
        return Err(format!(
            "{} per-channel scales on axis {} of shape {:?}",
            q.scale.len(),
            q.axis,
            info.shape
        ));
    }
    if info.dtype == DType::I8 && q.zero_point.iter().any(|z| !(-128..=127).contains(z)) {
        return Err("int8 zero point outside [-128, 127]".into());
    }
    Ok(())
}

/// Arity, dtypes, quantization and shapes of one node. Errors are plain messages; the
/// caller adds the node's identity.
pub(crate) fn check_node(g: &Graph, node: &Node) -> Result<(), String> {
    check_node_types(g, node)?;
    let infos: Vec<&TensorInfo> = node.inputs.iter().map(|id| g.info(*id)).collect();
    let out = g.info(node.outputs[0]);
    let want = infer_output_shape(&node.op, &infos, &out.shape)?;
    if want != out.shape {
        return Err(format!(
            "result shape {:?} differs from the inferred {want:?}",
            out.shape
        ));
    }
    Ok(())
}

/// The dtype and quantization rules of each operator: what kiln has kernels for.
/// A failure here means "unsupported", not "malformed".
pub(crate) fn check_node_types(g: &Graph, node: &Node) -> Result<(), String> {
    let (min_in, max_in) = match &node.op {
        Op::Conv2d(a) if a.residual.is_some() => (4, 4),
        Op::Conv2d(_)
        | Op::DepthwiseConv2d(_)
        | Op::FullyConnected { .. }
        | Op::TransposeConv2d(_) => (2, 3),
        Op::Add { .. } | Op::Mul { .. } | Op::Sub { .. } | Op::Div { .. } => (2, 2),
        Op::Concatenation { .. } => (1, usize::MAX),
        _ => (1, 1),
    };
    if node.inputs.len() < min_in || node.inputs.len() > max_in || node.outputs.len() != 1 {
        return Err(format!(
            "takes {min_in}..={} operands and 1 result, got {} and {}",
            max_in.min(64),
            node.inputs.len(),
            node.outputs.len()
        ));
    }
    let info = |i: usize| g.info(node.inputs[i]);
    let input = info(0);
    let out = g.info(node.outputs[0]);
    let per_tensor_i8 = |t: &TensorInfo, what: &str| -> Result<(), String> {
        match (t.dtype, &t.quant) {
            (DType::I8, Some(q)) if q.is_per_tensor() => Ok(()),
            (DType::I8, _) => Err(format!("int8 {what} needs per-tensor quantization")),
            (d, _) => Err(format!("{what} is {}, expected int8", d.name())),
        }
    };
    let all_f32 = |ids: &[TensorId]| ids.iter().all(|id| g.info(*id).dtype == DType::F32);
    let float = input.dtype == DType::F32;
    let everything = || {
        node.inputs
            .iter()
            .chain(&node.outputs)
            .copied()
            .collect::<Vec<_>>()
    };
    match &node.op {
        Op::Conv2d(_)
        | Op::DepthwiseConv2d(_)
        | Op::FullyConnected { .. }
        | Op::TransposeConv2d(_) => {
            if let Op::Conv2d(Conv2dAttrs {
                residual: Some(r), ..
            }) = &node.op
            {
                let skip = info(3);
                if skip.shape != out.shape {
                    return Err(format!(
                        "residual skip {:?} differs from the result {:?}",
                        skip.shape, out.shape
                    ));
                }
                if !float {
                    per_tensor_i8(skip, "residual skip")?;
                    if r.conv_quant.is_none() {
                        return Err("int8 residual needs the conv result's quantization".into());
                    }
                }
            }
            if float {
                return if all_f32(&everything()) {
                    Ok(())
                } else {
                    Err(
                        "float operator with non-float operands (hybrid models are not supported)"
                            .into(),
                    )
                };
            }
            per_tensor_i8(input, "input")?;
            per_tensor_i8(out, "output")?;
            let w = info(1);
            let channel_axis = if matches!(node.op, Op::DepthwiseConv2d(_)) {
                3
            } else {
                0
            };
            match &w.quant {
                Some(q) if w.dtype == DType::I8 => {
                    // Only per-tensor fully-connected weights may carry a zero point.
                    let fc_per_tensor =
                        matches!(node.op, Op::FullyConnected { .. }) && q.is_per_tensor();
                    if !fc_per_tensor && q.zero_point.iter().any(|&z| z != 0) {
                        return Err("weights must be symmetric (zero point 0)".into());
                    }
                    if !q.is_per_tensor() && q.axis != channel_axis {
                        return Err(format!(
                            "per-channel weights quantized on axis {}, expected {channel_axis}",
                            q.axis
                        ));
                    }
                }
                _ => {
                    return Err(format!(
                        "weights are {}, expected quantized int8",
                        w.dtype.name()
                    ))
                }
            }
            if let Some(&b) = node.inputs.get(2) {
                let b = g.info(b);
                let channels = w.shape.get(channel_axis).copied().unwrap_or(0);
                if b.dtype != DType::I32 {
                    return Err(format!("bias is {}, expected int32", b.dtype.name()));
                }
                if b.num_elements() != channels {
                    return Err(format!(
                        "bias has {} values for {channels} channels",
                        b.num_elements()
                    ));
                }
            }
            Ok(())
        }
        Op::Quantize => match (input.dtype, out.dtype) {
            (DType::F32, DType::I8) => per_tensor_i8(out, "output"),
            (DType::I8, DType::I8) => {
                per_tensor_i8(input, "input")?;
                per_tensor_i8(out, "output")
            }
            (a, b) => Err(format!("quantize from {} to {}", a.name(), b.name())),
        },
        Op::Dequantize => match (input.dtype, out.dtype) {
            (DType::I8, DType::F32) => per_tensor_i8(input, "input"),
            (a, b) => Err(format!("dequantize from {} to {}", a.name(), b.name())),
        },
        Op::Reshape => {
            if input.dtype == out.dtype {
                Ok(())
            } else {
                Err("reshape changes the dtype".into())
            }
        }
        // TFLM's TRANSPOSE copies raw values, which only means the same numbers when
        // both sides share their quantization.
        Op::Transpose { .. } if !float => {
            per_tensor_i8(input, "input")?;
            per_tensor_i8(out, "output")?;
            if input.scale_zero_point() == out.scale_zero_point() {
                Ok(())
            } else {
                Err("int8 transpose needs equal input and output quantization".into())
            }
        }
        _ => {
            // Element-wise, pooling, reductions and data movement: all f32 or all int8
            // (sub, div, leaky_relu and clip requantize to the output's parameters).
            if float {
                return if all_f32(&everything()) {
                    Ok(())
                } else {
                    Err("mixes float and non-float operands".into())
                };
            }
            for (i, id) in node.inputs.iter().enumerate() {
                per_tensor_i8(g.info(*id), &format!("operand {i}"))?;
            }
            per_tensor_i8(out, "output")
        }
    }
}
