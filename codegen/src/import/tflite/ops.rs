//! TFLite builtin operators to [`Op`]s: options to attributes, constant operands
//! (reshape targets, axes, paddings) folded into attributes.

use super::fb;
use crate::ir::{
    Activation, Conv2dAttrs, DType, DepthwiseConv2dAttrs, Graph, Node, Op, Padding, Pool2dAttrs,
    TensorId, TransposeConv2dAttrs,
};

/// Why an operator could not be converted.
pub(super) enum Problem {
    /// kiln has no kernel for this operator or this use of it.
    Unsupported(String),
    /// The operator is inconsistent (missing options, bad operand counts).
    Malformed(String),
}

type Result<T> = std::result::Result<T, Problem>;

fn planus<T>(r: planus::Result<T>) -> Result<T> {
    r.map_err(|e| Problem::Malformed(e.to_string()))
}

fn unsupported<T>(why: impl Into<String>) -> Result<T> {
    Err(Problem::Unsupported(why.into()))
}

fn malformed<T>(why: impl Into<String>) -> Result<T> {
    Err(Problem::Malformed(why.into()))
}

/// Converts one builtin operator into a node of `graph` (whose tensors are complete).
pub(super) fn convert(
    code: fb::BuiltinOperator,
    op: &fb::OperatorRef<'_>,
    graph: &Graph,
    inputs: Vec<Option<TensorId>>,
    outputs: Vec<TensorId>,
    index: usize,
) -> Result<Node> {
    use fb::BuiltinOperator as B;
    let options = planus(op.builtin_options())?;
    // Operands: required ones must be present; only trailing optional ones may be absent.
    let required = |n: usize| -> Result<Vec<TensorId>> {
        if inputs.len() < n || inputs[..n].iter().any(Option::is_none) {
            return malformed(format!(
                "needs {n} operands, got {}",
                inputs.iter().flatten().count()
            ));
        }
        Ok(inputs.iter().take(n).flatten().copied().collect())
    };
    let with_optional_bias = || -> Result<Vec<TensorId>> {
        let mut v = required(2)?;
        if let Some(Some(bias)) = inputs.get(2) {
            v.push(*bias);
        }
        Ok(v)
    };
    let constant = |id: TensorId, what: &str| -> Result<Vec<i64>> { const_ints(graph, id, what) };
    let (kind, node_inputs) = match code {
        B::Conv2d => {
            let Some(fb::BuiltinOptionsRef::Conv2DOptions(o)) = options else {
                return malformed("missing Conv2DOptions");
            };
            let attrs = Conv2dAttrs {
                stride: hw(o.stride_h(), o.stride_w(), "stride")?,
                dilation: hw(o.dilation_h_factor(), o.dilation_w_factor(), "dilation")?,
                padding: padding(planus(o.padding())?),
                activation: activation(planus(o.fused_activation_function())?)?,
                residual: None,
            };
            (Op::Conv2d(attrs), with_optional_bias()?)
        }
        B::DepthwiseConv2d => {
            let Some(fb::BuiltinOptionsRef::DepthwiseConv2DOptions(o)) = options else {
                return malformed("missing DepthwiseConv2DOptions");
            };
            let ins = with_optional_bias()?;
            // The multiplier is implied by the shapes; the option is unreliable in old models.
            let in_c = graph.info(ins[0]).shape.last().copied().unwrap_or(0);
            let out_c = graph.info(ins[1]).shape.last().copied().unwrap_or(0);
            if in_c == 0 || out_c % in_c != 0 {
                return malformed(format!(
                    "filter channels {out_c} are not a multiple of input channels {in_c}"
                ));
            }
            let attrs = DepthwiseConv2dAttrs {
                stride: hw(o.stride_h(), o.stride_w(), "stride")?,
                dilation: hw(o.dilation_h_factor(), o.dilation_w_factor(), "dilation")?,
                padding: padding(planus(o.padding())?),
                depth_multiplier: out_c / in_c,
                activation: activation(planus(o.fused_activation_function())?)?,
            };
            (Op::DepthwiseConv2d(attrs), ins)
        }
        B::FullyConnected => {
            let Some(fb::BuiltinOptionsRef::FullyConnectedOptions(o)) = options else {
                return malformed("missing FullyConnectedOptions");
            };
            if planus(o.weights_format())? != fb::FullyConnectedOptionsWeightsFormat::Default {
                return unsupported("shuffled weights format");
            }
            let op = Op::FullyConnected {
                activation: activation(planus(o.fused_activation_function())?)?,
                keep_num_dims: planus(o.keep_num_dims())?,
            };
            (op, with_optional_bias()?)
        }
        B::AveragePool2d | B::MaxPool2d => {
            let Some(fb::BuiltinOptionsRef::Pool2DOptions(o)) = options else {
                return malformed("missing Pool2DOptions");
            };
            let attrs = Pool2dAttrs {
                filter: hw(o.filter_height(), o.filter_width(), "filter size")?,
                stride: hw(o.stride_h(), o.stride_w(), "stride")?,
                padding: padding(planus(o.padding())?),
                activation: activation(planus(o.fused_activation_function())?)?,
            };
            let op = if code == B::AveragePool2d {
                Op::AveragePool2d(attrs)
            } else {
                Op::MaxPool2d(attrs)
            };
            (op, required(1)?)
        }
        B::Add | B::Mul => {
            let act = match options {
                Some(fb::BuiltinOptionsRef::AddOptions(o)) => {
                    planus(o.fused_activation_function())?
                }
                Some(fb::BuiltinOptionsRef::MulOptions(o)) => {
                    planus(o.fused_activation_function())?
                }
                _ => fb::ActivationFunctionType::None,
            };
            let activation = activation(act)?;
            let op = if code == B::Add {
                Op::Add { activation }
            } else {
                Op::Mul { activation }
            };
            (op, required(2)?)
        }
        B::Sub | B::Div => {
            let act = match options {
                Some(fb::BuiltinOptionsRef::SubOptions(o)) => {
                    planus(o.fused_activation_function())?
                }
                Some(fb::BuiltinOptionsRef::DivOptions(o)) => {
                    planus(o.fused_activation_function())?
                }
                _ => fb::ActivationFunctionType::None,
            };
            let activation = activation(act)?;
            let op = if code == B::Sub {
                Op::Sub { activation }
            } else {
                Op::Div { activation }
            };
            (op, required(2)?)
        }
        B::LeakyRelu => {
            let alpha = match options {
                Some(fb::BuiltinOptionsRef::LeakyReluOptions(o)) => planus(o.alpha())?,
                _ => 0.0,
            };
            if !alpha.is_finite() {
                return malformed(format!("leaky_relu alpha {alpha}"));
            }
            (Op::LeakyRelu { alpha }, required(1)?)
        }
        B::Transpose => {
            let ins = required(2)?;
            let rank = graph.info(ins[0]).shape.len();
            let perm = constant(ins[1], "perm")?
                .into_iter()
                .map(|a| normalize_axis(a, rank))
                .collect::<Result<Vec<_>>>()?;
            (Op::Transpose { perm }, vec![ins[0]])
        }
        B::TransposeConv => {
            let Some(fb::BuiltinOptionsRef::TransposeConvOptions(o)) = options else {
                return malformed("missing TransposeConvOptions");
            };
            // Operands: output shape, weights (OHWI), input, optional bias.
            let ins = required(3)?;
            let shape = constant(ins[0], "output_shape")?;
            let declared = outputs.first().map(|t| &graph.info(*t).shape);
            let matches = declared.is_some_and(|d| {
                d.len() == shape.len() && d.iter().zip(&shape).all(|(&a, &b)| a as i64 == b)
            });
            if !matches {
                return malformed(format!(
                    "output_shape operand {shape:?} differs from the result tensor's shape {:?}",
                    declared.cloned().unwrap_or_default()
                ));
            }
            let attrs = TransposeConv2dAttrs {
                stride: hw(o.stride_h(), o.stride_w(), "stride")?,
                dilation: [1, 1],
                padding: padding(planus(o.padding())?),
                activation: activation(planus(o.fused_activation_function())?)?,
            };
            let mut node_inputs = vec![ins[2], ins[1]];
            if let Some(Some(bias)) = inputs.get(3) {
                node_inputs.push(*bias);
            }
            (Op::TransposeConv2d(attrs), node_inputs)
        }
        B::Reshape => (Op::Reshape, required(1)?),
        B::Softmax => {
            let beta = match options {
                Some(fb::BuiltinOptionsRef::SoftmaxOptions(o)) => planus(o.beta())?,
                _ => 1.0,
            };
            if !beta.is_finite() {
                return malformed(format!("softmax beta {beta}"));
            }
            (Op::Softmax { beta }, required(1)?)
        }
        B::Mean => {
            let ins = required(2)?;
            let keep_dims = match options {
                Some(fb::BuiltinOptionsRef::ReducerOptions(o)) => planus(o.keep_dims())?,
                _ => false,
            };
            let rank = graph.info(ins[0]).shape.len();
            let mut axes = constant(ins[1], "axes")?
                .into_iter()
                .map(|a| normalize_axis(a, rank))
                .collect::<Result<Vec<_>>>()?;
            axes.sort_unstable();
            axes.dedup();
            (Op::Mean { axes, keep_dims }, vec![ins[0]])
        }
        B::Pad => {
            let ins = required(2)?;
            let rank = graph.info(ins[0]).shape.len();
            let values = constant(ins[1], "paddings")?;
            if values.len() != rank * 2 {
                return malformed(format!(
                    "{} padding values for a rank-{rank} input",
                    values.len()
                ));
            }
            let paddings = values
                .chunks(2)
                .map(|p| {
                    Ok([
                        non_negative(p[0], "padding")?,
                        non_negative(p[1], "padding")?,
                    ])
                })
                .collect::<Result<Vec<_>>>()?;
            (Op::Pad { paddings }, vec![ins[0]])
        }
        B::Concatenation => {
            let Some(fb::BuiltinOptionsRef::ConcatenationOptions(o)) = options else {
                return malformed("missing ConcatenationOptions");
            };
            if inputs.is_empty() || inputs.iter().any(Option::is_none) {
                return malformed("concatenation with an absent operand");
            }
            let ins: Vec<TensorId> = inputs.iter().flatten().copied().collect();
            let rank = graph.info(ins[0]).shape.len();
            let op = Op::Concatenation {
                axis: normalize_axis(i64::from(planus(o.axis())?), rank)?,
                activation: activation(planus(o.fused_activation_function())?)?,
            };
            (op, ins)
        }
        B::Quantize => (Op::Quantize, required(1)?),
        B::Dequantize => (Op::Dequantize, required(1)?),
        B::Logistic => (Op::Logistic, required(1)?),
        B::Tanh => (Op::Tanh, required(1)?),
        B::Relu => (Op::Relu, required(1)?),
        B::Relu6 => (Op::Relu6, required(1)?),
        _ => return unsupported("no kernel for this operator"),
    };
    if outputs.len() != 1 {
        return malformed(format!("expected 1 result, got {}", outputs.len()));
    }
    let name = node_name(graph, outputs[0], index);
    Ok(Node {
        name,
        op: kind,
        inputs: node_inputs,
        outputs,
    })
}

/// A readable, file-name-safe node name: the result tensor's name (TFLite operators
/// carry none), or `node_<index>`.
fn node_name(graph: &Graph, output: TensorId, index: usize) -> String {
    let raw = &graph.tensor(output).name;
    if raw.is_empty() {
        format!("node_{index}")
    } else {
        raw.clone()
    }
}

fn const_ints(graph: &Graph, id: TensorId, what: &str) -> Result<Vec<i64>> {
    let t = graph.tensor(id);
    let Some(data) = &t.data else {
        return unsupported(format!(
            "{what} operand '{}' is computed at run time, kiln needs a constant",
            t.name
        ));
    };
    Ok(match t.info.dtype {
        DType::I32 => data
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DType::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        other => {
            return malformed(format!(
                "{what} operand '{}' is {}, expected int32",
                t.name,
                other.name()
            ))
        }
    })
}

fn normalize_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if (-r..r).contains(&axis) {
        Ok(axis.rem_euclid(r.max(1)) as usize)
    } else {
        malformed(format!("axis {axis} out of range for rank {rank}"))
    }
}

/// A (height, width) pair of positive option values, e.g. strides.
fn hw(h: planus::Result<i32>, w: planus::Result<i32>, what: &str) -> Result<[usize; 2]> {
    Ok([positive(planus(h)?, what)?, positive(planus(w)?, what)?])
}

fn positive(v: i32, what: &str) -> Result<usize> {
    match usize::try_from(v) {
        Ok(v) if v > 0 => Ok(v),
        _ => malformed(format!("{what} {v} must be positive")),
    }
}

fn non_negative(v: i64, what: &str) -> Result<usize> {
    usize::try_from(v).or_else(|_| malformed(format!("{what} {v} is negative")))
}

fn padding(p: fb::Padding) -> Padding {
    match p {
        fb::Padding::Same => Padding::Same,
        fb::Padding::Valid => Padding::Valid,
    }
}

fn activation(a: fb::ActivationFunctionType) -> Result<Activation> {
    match a {
        fb::ActivationFunctionType::None => Ok(Activation::None),
        fb::ActivationFunctionType::Relu => Ok(Activation::Relu),
        fb::ActivationFunctionType::ReluN1To1 => Ok(Activation::ReluN1To1),
        fb::ActivationFunctionType::Relu6 => Ok(Activation::Relu6),
        other => unsupported(format!("fused activation {other:?}")),
    }
}
