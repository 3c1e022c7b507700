//! One prepared kernel call per node: the runtime's params computed once from the
//! graph's shapes and quantization, then applied to operand values on every run.

use super::TensorData;
use crate::ir::{Activation, DType, Graph, Node, Op, Padding, TensorInfo};
use kiln_runtime::activation::{ActivationRange, ActivationRangeF32, FusedActivation};
use kiln_runtime::kernels::reference as k;
use kiln_runtime::kernels::reference::average_pool_2d::Pool2dParams;
use kiln_runtime::padding::{Padding as RtPadding, Window2d};
use kiln_runtime::quant::{ChannelMultipliers, QuantizedMultiplier, TensorQuant};
use kiln_runtime::shape::Broadcast;

/// A node's kernel with everything precomputed.
pub(crate) struct Kernel(pub(crate) Prepared);

/// Per-channel multiplier tables owned by the executor; kernels borrow them per call.
pub(crate) enum Multipliers {
    PerTensor(QuantizedMultiplier),
    PerChannel(Vec<QuantizedMultiplier>),
    /// The DSP convs' channels prepared at compile time for flash
    /// ([`ChannelMultipliers::Prepared`]: bias, multiplier, shifts and output offset of
    /// one call folded into five words per channel) and whether all take the fast
    /// requantization. Only `plan::dsp::with_flash_channels` makes them, for targets
    /// with the DSP extension; the executor never sees them.
    Prepared(Vec<[u32; 5]>, bool),
}

impl Multipliers {
    fn own(m: ChannelMultipliers<'_>) -> Self {
        match m {
            ChannelMultipliers::PerTensor(m) => Multipliers::PerTensor(m),
            ChannelMultipliers::PerChannel(t) => Multipliers::PerChannel(t.to_vec()),
            split @ ChannelMultipliers::PerChannelSplit { shifts, .. } => {
                Multipliers::PerChannel((0..shifts.len()).map(|c| split.get(c)).collect())
            }
            prepared @ ChannelMultipliers::Prepared { channels, .. } => {
                Multipliers::PerChannel((0..channels.len()).map(|c| prepared.get(c)).collect())
            }
        }
    }

    pub(crate) fn borrow(&self) -> ChannelMultipliers<'_> {
        match self {
            Multipliers::PerTensor(m) => ChannelMultipliers::PerTensor(*m),
            Multipliers::PerChannel(t) => ChannelMultipliers::PerChannel(t),
            Multipliers::Prepared(t, fast) => ChannelMultipliers::Prepared {
                channels: t,
                fast: *fast,
            },
        }
    }
}

/// The runtime quant struct with its multiplier table detached, so it can be stored.
pub(crate) struct Owned<Q> {
    pub(crate) quant: Q,
    pub(crate) multipliers: Multipliers,
}

/// The runtime call of one node with its precomputed parameters; the executor runs it,
/// the Rust emitter prints it.
pub(crate) enum Prepared {
    Conv2dI8(
        k::conv_2d::Conv2dParams,
        Owned<k::conv_2d::ConvQuant<'static>>,
    ),
    Conv2dF32(k::conv_2d::Conv2dParams, ActivationRangeF32),
    /// Conv with a fused residual add (skip is operand 3).
    Conv2dAddI8(
        k::conv_2d::Conv2dParams,
        Owned<k::conv_2d::ConvQuant<'static>>,
        k::conv_2d::ResidualAdd,
    ),
    Conv2dAddF32(
        k::conv_2d::Conv2dParams,
        ActivationRangeF32,
        ActivationRangeF32,
    ),
    DepthwiseI8(
        k::depthwise_conv_2d::DepthwiseConv2dParams,
        Owned<k::conv_2d::ConvQuant<'static>>,
    ),
    DepthwiseF32(
        k::depthwise_conv_2d::DepthwiseConv2dParams,
        ActivationRangeF32,
    ),
    FullyConnectedI8(
        k::fully_connected::FullyConnectedParams,
        Owned<k::fully_connected::FullyConnectedQuant<'static>>,
    ),
    FullyConnectedF32(k::fully_connected::FullyConnectedParams, ActivationRangeF32),
    AveragePoolI8(Pool2dParams, ActivationRange),
    AveragePoolF32(Pool2dParams, ActivationRangeF32),
    MaxPoolI8(Pool2dParams, ActivationRange),
    MaxPoolF32(Pool2dParams, ActivationRangeF32),
    AddI8(k::add::AddParams, Broadcast),
    AddF32(ActivationRangeF32, Broadcast),
    MulI8(k::mul::MulParams, Broadcast),
    MulF32(ActivationRangeF32, Broadcast),
    /// Reshape, and any op that only copies elements.
    Copy,
    SoftmaxI8(k::softmax::SoftmaxParams, usize),
    SoftmaxF32(f32, usize),
    MeanI8(k::mean::MeanParams, k::mean::MeanQuant),
    MeanF32(k::mean::MeanParams),
    PadI8(k::pad::PadParams, i8),
    PadF32(k::pad::PadParams),
    ConcatenationI8(k::concatenation::ConcatenationParams, ActivationRange),
    ConcatenationF32(k::concatenation::ConcatenationParams, ActivationRangeF32),
    Quantize(k::quantize::QuantizeParams),
    Requantize(k::quantize::RequantizeParams),
    Dequantize(k::dequantize::DequantizeParams),
    LogisticI8(k::logistic::SigmoidInputParams),
    LogisticF32,
    TanhI8(k::logistic::SigmoidInputParams),
    TanhF32,
    ReluI8(k::relu::ReluParams),
    ReluF32,
    Relu6I8(k::relu6::Relu6Params),
    Relu6F32,
    SubI8(k::sub::SubParams, Broadcast),
    SubF32(ActivationRangeF32, Broadcast),
    DivI8(k::div::DivParams, Broadcast),
    DivF32(ActivationRangeF32, Broadcast),
    LeakyReluI8(k::leaky_relu::LeakyReluParams),
    /// The slope for negative inputs.
    LeakyReluF32(f32),
    ClipI8(k::clip::ClipParams),
    ClipF32(ActivationRangeF32),
    /// Any element type: the values are only moved.
    Transpose(k::transpose::TransposeParams),
    TransposeConv2dI8(
        k::transpose_conv_2d::TransposeConv2dParams,
        Owned<k::conv_2d::ConvQuant<'static>>,
    ),
    TransposeConv2dF32(
        k::transpose_conv_2d::TransposeConv2dParams,
        ActivationRangeF32,
    ),
}

type Result<T> = std::result::Result<T, String>;

fn rt<T>(r: kiln_runtime::error::Result<T>) -> Result<T> {
    r.map_err(|e| e.to_string())
}

/// Says which rule of TFLM's int8 kernels the node's quantization breaks, where the
/// runtime's error alone would be vague.
fn explain(op: &Op, message: String) -> String {
    let rule = match op {
        Op::Softmax { .. } => "int8 softmax needs output scale 1/256 and zero point -128",
        Op::Logistic => "int8 logistic needs output scale 1/256 and zero point -128",
        Op::Concatenation { .. } => {
            "int8 concatenation needs every input quantized exactly like the output"
        }
        Op::AveragePool2d(_) | Op::MaxPool2d(_) => {
            "int8 pooling needs equal input and output quantization"
        }
        _ => return message,
    };
    if message == kiln_runtime::Error::QuantizationMismatch.to_string() {
        format!("{message}: {rule}")
    } else {
        message
    }
}

fn activation(a: Activation) -> FusedActivation {
    match a {
        Activation::None => FusedActivation::None,
        Activation::Relu => FusedActivation::Relu,
        Activation::ReluN1To1 => FusedActivation::ReluN1To1,
        Activation::Relu6 => FusedActivation::Relu6,
    }
}

/// The runtime's window for an NHWC input, a filter size, stride, dilation and padding.
fn window(
    input: [usize; 4],
    filter: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
) -> Result<Window2d> {
    let hw = [input[1], input[2]];
    let rt_padding = match padding {
        Padding::Same => RtPadding::Same,
        Padding::Valid => RtPadding::Valid,
        Padding::Explicit { top, left, .. } => {
            let out = |axis: usize| {
                crate::ir::shape::window_output_size(
                    hw[axis],
                    filter[axis],
                    stride[axis],
                    dilation[axis],
                    padding,
                    axis,
                )
                .ok_or_else(|| "the window does not fit the padded input".to_string())
            };
            return rt(Window2d::explicit(
                hw,
                filter,
                stride,
                dilation,
                [top, left],
                [out(0)?, out(1)?],
            ));
        }
    };
    rt(Window2d::new(hw, filter, stride, dilation, rt_padding))
}

fn quant(info: &TensorInfo) -> Result<TensorQuant> {
    info.scale_zero_point()
        .map(|(s, z)| TensorQuant::new(s, z))
        .ok_or_else(|| "operand needs per-tensor quantization".to_string())
}

fn scales(info: &TensorInfo) -> Result<&[f32]> {
    info.quant
        .as_ref()
        .map(|q| q.scale.as_slice())
        .ok_or_else(|| "weights need quantization".to_string())
}

fn shape4(info: &TensorInfo) -> Result<[usize; 4]> {
    info.shape
        .as_slice()
        .try_into()
        .map_err(|_| format!("expected rank 4, got {:?}", info.shape))
}

impl Owned<k::conv_2d::ConvQuant<'static>> {
    /// The quant struct with its table borrowed back in.
    pub(crate) fn conv(&self) -> k::conv_2d::ConvQuant<'_> {
        k::conv_2d::ConvQuant {
            multipliers: self.multipliers.borrow(),
            ..self.quant
        }
    }
}

impl Owned<k::fully_connected::FullyConnectedQuant<'static>> {
    /// The quant struct with its table borrowed back in.
    fn fully_connected(&self) -> k::fully_connected::FullyConnectedQuant<'_> {
        k::fully_connected::FullyConnectedQuant {
            multipliers: self.multipliers.borrow(),
            ..self.quant
        }
    }
}

/// A `ConvQuant` whose table lives in `Owned::multipliers`.
fn own_conv(q: k::conv_2d::ConvQuant<'_>) -> Owned<k::conv_2d::ConvQuant<'static>> {
    let multipliers = Multipliers::own(q.multipliers);
    let quant = k::conv_2d::ConvQuant {
        multipliers: ChannelMultipliers::PerTensor(QuantizedMultiplier::ZERO),
        input_offset: q.input_offset,
        output_offset: q.output_offset,
        activation: q.activation,
    };
    Owned { quant, multipliers }
}

impl Kernel {
    /// Derives the kernel parameters of `node`; errors name what the runtime refused.
    pub(crate) fn prepare(g: &Graph, node: &Node) -> Result<Kernel> {
        Self::prepare_unexplained(g, node).map_err(|m| explain(&node.op, m))
    }

    fn prepare_unexplained(g: &Graph, node: &Node) -> Result<Kernel> {
        let info = |i: usize| g.info(node.inputs[i]);
        let out = g.info(node.outputs[0]);
        let float = info(0).dtype == DType::F32;
        let prepared = match &node.op {
            Op::Conv2d(a) => {
                let (x, f) = (shape4(info(0))?, shape4(info(1))?);
                let w = window(x, [f[1], f[2]], a.stride, a.dilation, a.padding)?;
                let p = rt(k::conv_2d::Conv2dParams::with_window(x[0], x[3], f, w))?;
                match (&a.residual, float) {
                    (None, true) => Prepared::Conv2dF32(p, activation(a.activation).range_f32()),
                    (Some(r), true) => Prepared::Conv2dAddF32(
                        p,
                        activation(a.activation).range_f32(),
                        activation(r.activation).range_f32(),
                    ),
                    (residual, false) => {
                        // With a residual, the conv requantizes to its former result
                        // tensor's parameters, then the ADD to the node's output.
                        let conv_out = match residual {
                            Some(r) => {
                                let (s, z) = r
                                    .conv_quant
                                    .ok_or("int8 residual without the conv's quantization")?;
                                TensorQuant::new(s, z)
                            }
                            None => quant(out)?,
                        };
                        let s = scales(info(1))?;
                        let mut table = vec![QuantizedMultiplier::ZERO; s.len()];
                        let q = rt(k::conv_2d::ConvQuant::prepare(
                            quant(info(0))?,
                            s,
                            conv_out,
                            activation(a.activation),
                            &mut table,
                        ))?;
                        match residual {
                            None => Prepared::Conv2dI8(p, own_conv(q)),
                            Some(r) => {
                                let skip = quant(info(3))?;
                                let (first, second) = if r.conv_is_first {
                                    (conv_out, skip)
                                } else {
                                    (skip, conv_out)
                                };
                                let add = rt(k::add::AddParams::prepare(
                                    first,
                                    second,
                                    quant(out)?,
                                    activation(r.activation),
                                ))?;
                                let fused = k::conv_2d::ResidualAdd {
                                    add,
                                    conv_is_first: r.conv_is_first,
                                };
                                Prepared::Conv2dAddI8(p, own_conv(q), fused)
                            }
                        }
                    }
                }
            }
            Op::DepthwiseConv2d(a) => {
                let (x, f) = (shape4(info(0))?, shape4(info(1))?);
                let w = window(x, [f[1], f[2]], a.stride, a.dilation, a.padding)?;
                let p = rt(k::depthwise_conv_2d::DepthwiseConv2dParams::with_window(
                    x[0],
                    x[3],
                    f,
                    a.depth_multiplier,
                    w,
                ))?;
                if float {
                    Prepared::DepthwiseF32(p, activation(a.activation).range_f32())
                } else {
                    let s = scales(info(1))?;
                    let mut table = vec![QuantizedMultiplier::ZERO; s.len()];
                    let q = rt(k::conv_2d::ConvQuant::prepare(
                        quant(info(0))?,
                        s,
                        quant(out)?,
                        activation(a.activation),
                        &mut table,
                    ))?;
                    Prepared::DepthwiseI8(p, own_conv(q))
                }
            }
            Op::FullyConnected {
                activation: act, ..
            } => {
                let w = info(1);
                let p = rt(k::fully_connected::FullyConnectedParams::from_input_len(
                    info(0).num_elements(),
                    [w.shape[0], w.shape[1]],
                ))?;
                if float {
                    Prepared::FullyConnectedF32(p, activation(*act).range_f32())
                } else {
                    let mut table = vec![QuantizedMultiplier::ZERO; scales(w)?.len()];
                    let q = match w.scale_zero_point() {
                        Some((s, z)) => {
                            k::fully_connected::FullyConnectedQuant::prepare_per_tensor(
                                quant(info(0))?,
                                TensorQuant::new(s, z),
                                quant(out)?,
                                activation(*act),
                            )
                        }
                        None => k::fully_connected::FullyConnectedQuant::prepare_per_channel(
                            quant(info(0))?,
                            scales(w)?,
                            quant(out)?,
                            activation(*act),
                            &mut table,
                        ),
                    };
                    let q = rt(q)?;
                    let multipliers = Multipliers::own(q.multipliers);
                    let quant = k::fully_connected::FullyConnectedQuant {
                        multipliers: ChannelMultipliers::PerTensor(QuantizedMultiplier::ZERO),
                        ..q
                    };
                    Prepared::FullyConnectedI8(p, Owned { quant, multipliers })
                }
            }
            Op::AveragePool2d(a) | Op::MaxPool2d(a) => {
                let x = shape4(info(0))?;
                let w = window(x, a.filter, a.stride, [1, 1], a.padding)?;
                let p = rt(Pool2dParams::with_window(x[0], x[3], w))?;
                let avg = matches!(node.op, Op::AveragePool2d(_));
                let act = activation(a.activation);
                match (float, avg) {
                    (true, true) => Prepared::AveragePoolF32(p, act.range_f32()),
                    (true, false) => Prepared::MaxPoolF32(p, act.range_f32()),
                    (false, avg) => {
                        let range = rt(k::average_pool_2d::pool_activation_range_i8(
                            quant(info(0))?,
                            quant(out)?,
                            act,
                        ))?;
                        if avg {
                            Prepared::AveragePoolI8(p, range)
                        } else {
                            Prepared::MaxPoolI8(p, range)
                        }
                    }
                }
            }
            Op::Add { activation: act } | Op::Mul { activation: act } => {
                let plan = rt(Broadcast::new(&info(0).shape, &info(1).shape))?;
                let act = activation(*act);
                let add = matches!(node.op, Op::Add { .. });
                match (float, add) {
                    (true, true) => Prepared::AddF32(act.range_f32(), plan),
                    (true, false) => Prepared::MulF32(act.range_f32(), plan),
                    (false, true) => Prepared::AddI8(
                        rt(k::add::AddParams::prepare(
                            quant(info(0))?,
                            quant(info(1))?,
                            quant(out)?,
                            act,
                        ))?,
                        plan,
                    ),
                    (false, false) => Prepared::MulI8(
                        rt(k::mul::MulParams::prepare(
                            quant(info(0))?,
                            quant(info(1))?,
                            quant(out)?,
                            act,
                        ))?,
                        plan,
                    ),
                }
            }
            Op::Reshape => Prepared::Copy,
            Op::Softmax { beta } => {
                let depth = *info(0).shape.last().ok_or("softmax of a scalar")?;
                if float {
                    Prepared::SoftmaxF32(*beta, depth)
                } else {
                    Prepared::SoftmaxI8(
                        rt(k::softmax::SoftmaxParams::prepare(
                            *beta,
                            quant(info(0))?,
                            quant(out)?,
                        ))?,
                        depth,
                    )
                }
            }
            Op::Mean { axes, .. } => {
                let axes: Vec<i32> = axes.iter().map(|&a| a as i32).collect();
                let p = rt(k::mean::MeanParams::new(&info(0).shape, &axes))?;
                if float {
                    Prepared::MeanF32(p)
                } else {
                    let q = rt(k::mean::MeanQuant::prepare(
                        quant(info(0))?,
                        quant(out)?,
                        &p,
                    ))?;
                    Prepared::MeanI8(p, q)
                }
            }
            Op::Pad { paddings } => {
                let pairs: Vec<(usize, usize)> = paddings.iter().map(|p| (p[0], p[1])).collect();
                let p = rt(k::pad::PadParams::new(&info(0).shape, &pairs))?;
                if float {
                    Prepared::PadF32(p)
                } else {
                    // TFLite pads quantized tensors with the output's zero point (real 0).
                    Prepared::PadI8(p, quant(out)?.zero_point as i8)
                }
            }
            Op::Concatenation {
                axis,
                activation: act,
            } => {
                let p = rt(k::concatenation::ConcatenationParams::new(
                    &out.shape,
                    *axis as i32,
                ))?;
                let act = activation(*act);
                if float {
                    Prepared::ConcatenationF32(p, act.range_f32())
                } else {
                    let ins = node
                        .inputs
                        .iter()
                        .map(|id| quant(g.info(*id)))
                        .collect::<Result<Vec<_>>>()?;
                    rt(k::concatenation::check_quant_i8(&ins, quant(out)?))?;
                    let o = quant(out)?;
                    Prepared::ConcatenationI8(p, rt(act.range_i8(o.scale, o.zero_point))?)
                }
            }
            Op::Quantize => {
                if float {
                    Prepared::Quantize(rt(k::quantize::QuantizeParams::prepare(quant(out)?))?)
                } else {
                    Prepared::Requantize(rt(k::quantize::RequantizeParams::prepare(
                        quant(info(0))?,
                        quant(out)?,
                    ))?)
                }
            }
            Op::Dequantize => Prepared::Dequantize(rt(k::dequantize::DequantizeParams::prepare(
                quant(info(0))?,
            ))?),
            Op::Logistic if float => Prepared::LogisticF32,
            Op::Logistic => Prepared::LogisticI8(rt(k::logistic::prepare_logistic(
                quant(info(0))?,
                quant(out)?,
            ))?),
            Op::Tanh if float => Prepared::TanhF32,
            Op::Tanh => Prepared::TanhI8(rt(k::tanh::prepare_tanh(quant(info(0))?))?),
            Op::Relu if float => Prepared::ReluF32,
            Op::Relu => Prepared::ReluI8(rt(k::relu::ReluParams::prepare(
                quant(info(0))?,
                quant(out)?,
            ))?),
            Op::Relu6 if float => Prepared::Relu6F32,
            Op::Relu6 => Prepared::Relu6I8(rt(k::relu6::Relu6Params::prepare(quant(info(0))?))?),
            Op::Sub { activation: act } | Op::Div { activation: act } => {
                let plan = rt(Broadcast::new(&info(0).shape, &info(1).shape))?;
                let act = activation(*act);
                let sub = matches!(node.op, Op::Sub { .. });
                match (float, sub) {
                    (true, true) => Prepared::SubF32(act.range_f32(), plan),
                    (true, false) => Prepared::DivF32(act.range_f32(), plan),
                    (false, true) => Prepared::SubI8(
                        rt(k::sub::SubParams::prepare(
                            quant(info(0))?,
                            quant(info(1))?,
                            quant(out)?,
                            act,
                        ))?,
                        plan,
                    ),
                    (false, false) => Prepared::DivI8(
                        rt(k::div::DivParams::prepare(
                            quant(info(0))?,
                            quant(info(1))?,
                            quant(out)?,
                            act,
                        ))?,
                        plan,
                    ),
                }
            }
            Op::LeakyRelu { alpha } if float => Prepared::LeakyReluF32(*alpha),
            Op::LeakyRelu { alpha } => Prepared::LeakyReluI8(rt(
                k::leaky_relu::LeakyReluParams::prepare(quant(info(0))?, quant(out)?, *alpha),
            )?),
            Op::Clip { min, max } if float => {
                Prepared::ClipF32(rt(k::clip::clip_range_f32(*min, *max))?)
            }
            Op::Clip { min, max } => Prepared::ClipI8(rt(k::clip::ClipParams::prepare(
                quant(info(0))?,
                quant(out)?,
                *min,
                *max,
            ))?),
            Op::Transpose { perm } => Prepared::Transpose(rt(k::transpose::TransposeParams::new(
                &info(0).shape,
                perm,
            ))?),
            Op::TransposeConv2d(a) => {
                let (x, f, y) = (shape4(info(0))?, shape4(info(1))?, shape4(out)?);
                let p = match a.padding {
                    Padding::Same | Padding::Valid => {
                        let padding = if a.padding == Padding::Same {
                            RtPadding::Same
                        } else {
                            RtPadding::Valid
                        };
                        k::transpose_conv_2d::TransposeConv2dParams::new(
                            x, f, y, a.stride, a.dilation, padding,
                        )
                    }
                    Padding::Explicit { top, left, .. } => {
                        k::transpose_conv_2d::TransposeConv2dParams::with_padding(
                            x,
                            f,
                            y,
                            a.stride,
                            a.dilation,
                            [top, left],
                        )
                    }
                };
                let p = rt(p)?;
                if float {
                    Prepared::TransposeConv2dF32(p, activation(a.activation).range_f32())
                } else {
                    let s = scales(info(1))?;
                    let mut table = vec![QuantizedMultiplier::ZERO; s.len()];
                    let q = rt(k::conv_2d::ConvQuant::prepare(
                        quant(info(0))?,
                        s,
                        quant(out)?,
                        activation(a.activation),
                        &mut table,
                    ))?;
                    Prepared::TransposeConv2dI8(p, own_conv(q))
                }
            }
        };
        Ok(Kernel(prepared))
    }

    /// Runs the kernel. `inputs` and `output` have the dtypes and lengths validation
    /// guarantees for this node.
    pub(crate) fn run(&self, inputs: &[&TensorData], output: &mut TensorData) {
        use TensorData::{F32, I32, I8};
        let bias_i32 = || match inputs.get(2) {
            Some(I32(b)) => Some(b.as_slice()),
            _ => None,
        };
        let bias_f32 = || match inputs.get(2) {
            Some(F32(b)) => Some(b.as_slice()),
            _ => None,
        };
        match (&self.0, inputs, output) {
            (Prepared::Conv2dI8(p, q), [I8(x), I8(w), ..], I8(y)) => {
                let quant = q.conv();
                k::conv_2d::conv_2d_i8(p, &quant, x, w, bias_i32(), y)
            }
            (Prepared::Conv2dAddI8(p, q, r), [I8(x), I8(w), I32(b), I8(skip)], I8(y)) => {
                let quant = q.conv();
                k::conv_2d::conv_2d_i8_add(p, &quant, r, x, w, Some(b), skip, y)
            }
            (
                Prepared::Conv2dAddF32(p, act, add_act),
                [F32(x), F32(w), F32(b), F32(skip)],
                F32(y),
            ) => k::conv_2d::conv_2d_f32_add(p, *act, *add_act, x, w, Some(b), skip, y),
            (Prepared::Conv2dF32(p, act), [F32(x), F32(w), ..], F32(y)) => {
                k::conv_2d::conv_2d_f32(p, *act, x, w, bias_f32(), y)
            }
            (Prepared::DepthwiseI8(p, q), [I8(x), I8(w), ..], I8(y)) => {
                let quant = q.conv();
                k::depthwise_conv_2d::depthwise_conv_2d_i8(p, &quant, x, w, bias_i32(), y)
            }
            (Prepared::DepthwiseF32(p, act), [F32(x), F32(w), ..], F32(y)) => {
                k::depthwise_conv_2d::depthwise_conv_2d_f32(p, *act, x, w, bias_f32(), y)
            }
            (Prepared::FullyConnectedI8(p, q), [I8(x), I8(w), ..], I8(y)) => {
                let quant = q.fully_connected();
                k::fully_connected::fully_connected_i8(p, &quant, x, w, bias_i32(), y)
            }
            (Prepared::FullyConnectedF32(p, act), [F32(x), F32(w), ..], F32(y)) => {
                k::fully_connected::fully_connected_f32(p, *act, x, w, bias_f32(), y)
            }
            (Prepared::AveragePoolI8(p, r), [I8(x)], I8(y)) => {
                k::average_pool_2d::average_pool_2d_i8(p, *r, x, y)
            }
            (Prepared::AveragePoolF32(p, r), [F32(x)], F32(y)) => {
                k::average_pool_2d::average_pool_2d_f32(p, *r, x, y)
            }
            (Prepared::MaxPoolI8(p, r), [I8(x)], I8(y)) => {
                k::max_pool_2d::max_pool_2d_i8(p, *r, x, y)
            }
            (Prepared::MaxPoolF32(p, r), [F32(x)], F32(y)) => {
                k::max_pool_2d::max_pool_2d_f32(p, *r, x, y)
            }
            (Prepared::AddI8(p, plan), [I8(a), I8(b)], I8(y)) => k::add::add_i8(p, plan, a, b, y),
            (Prepared::AddF32(r, plan), [F32(a), F32(b)], F32(y)) => {
                k::add::add_f32(*r, plan, a, b, y)
            }
            (Prepared::MulI8(p, plan), [I8(a), I8(b)], I8(y)) => k::mul::mul_i8(p, plan, a, b, y),
            (Prepared::MulF32(r, plan), [F32(a), F32(b)], F32(y)) => {
                k::mul::mul_f32(*r, plan, a, b, y)
            }
            (Prepared::Copy, [x], y) => *y = (*x).clone(),
            (Prepared::SoftmaxI8(p, depth), [I8(x)], I8(y)) => {
                k::softmax::softmax_i8(p, *depth, x, y)
            }
            (Prepared::SoftmaxF32(beta, depth), [F32(x)], F32(y)) => {
                k::softmax::softmax_f32(*beta, *depth, x, y)
            }
            (Prepared::MeanI8(p, q), [I8(x)], I8(y)) => k::mean::mean_i8(p, q, x, y),
            (Prepared::MeanF32(p), [F32(x)], F32(y)) => k::mean::mean_f32(p, x, y),
            (Prepared::PadI8(p, v), [I8(x)], I8(y)) => k::pad::pad_i8(p, x, *v, y),
            (Prepared::PadF32(p), [F32(x)], F32(y)) => k::pad::pad_f32(p, x, 0.0, y),
            (Prepared::ConcatenationI8(p, r), xs, I8(y)) => {
                let parts: Vec<&[i8]> = xs.iter().filter_map(|x| x.as_i8()).collect();
                k::concatenation::concatenation_i8(p, &parts, y);
                // TFLite concatenation allows a fused activation; apply its clamp.
                y.iter_mut().for_each(|v| *v = r.clamp_i8(i32::from(*v)));
            }
            (Prepared::ConcatenationF32(p, r), xs, F32(y)) => {
                let parts: Vec<&[f32]> = xs.iter().filter_map(|x| x.as_f32()).collect();
                k::concatenation::concatenation_f32(p, &parts, y);
                y.iter_mut().for_each(|v| *v = r.apply(*v));
            }
            (Prepared::Quantize(p), [F32(x)], I8(y)) => k::quantize::quantize_f32_to_i8(p, x, y),
            (Prepared::Requantize(p), [I8(x)], I8(y)) => k::quantize::requantize_i8(p, x, y),
            (Prepared::Dequantize(p), [I8(x)], F32(y)) => {
                k::dequantize::dequantize_i8_to_f32(p, x, y)
            }
            (Prepared::LogisticI8(p), [I8(x)], I8(y)) => k::logistic::logistic_i8(p, x, y),
            (Prepared::LogisticF32, [F32(x)], F32(y)) => k::logistic::logistic_f32(x, y),
            (Prepared::TanhI8(p), [I8(x)], I8(y)) => k::tanh::tanh_i8(p, x, y),
            (Prepared::TanhF32, [F32(x)], F32(y)) => k::tanh::tanh_f32(x, y),
            (Prepared::ReluI8(p), [I8(x)], I8(y)) => k::relu::relu_i8(p, x, y),
            (Prepared::ReluF32, [F32(x)], F32(y)) => k::relu::relu_f32(x, y),
            (Prepared::Relu6I8(p), [I8(x)], I8(y)) => k::relu6::relu6_i8(p, x, y),
            (Prepared::Relu6F32, [F32(x)], F32(y)) => k::relu6::relu6_f32(x, y),
            (Prepared::SubI8(p, plan), [I8(a), I8(b)], I8(y)) => k::sub::sub_i8(p, plan, a, b, y),
            (Prepared::SubF32(r, plan), [F32(a), F32(b)], F32(y)) => {
                k::sub::sub_f32(*r, plan, a, b, y)
            }
            (Prepared::DivI8(p, plan), [I8(a), I8(b)], I8(y)) => k::div::div_i8(p, plan, a, b, y),
            (Prepared::DivF32(r, plan), [F32(a), F32(b)], F32(y)) => {
                k::div::div_f32(*r, plan, a, b, y)
            }
            (Prepared::LeakyReluI8(p), [I8(x)], I8(y)) => k::leaky_relu::leaky_relu_i8(p, x, y),
            (Prepared::LeakyReluF32(alpha), [F32(x)], F32(y)) => {
                k::leaky_relu::leaky_relu_f32(*alpha, x, y)
            }
            (Prepared::ClipI8(p), [I8(x)], I8(y)) => k::clip::clip_i8(p, x, y),
            (Prepared::ClipF32(r), [F32(x)], F32(y)) => k::clip::clip_f32(*r, x, y),
            (Prepared::Transpose(p), [I8(x)], I8(y)) => k::transpose::transpose(p, x, y),
            (Prepared::Transpose(p), [F32(x)], F32(y)) => k::transpose::transpose(p, x, y),
            (Prepared::TransposeConv2dI8(p, q), [I8(x), I8(w), ..], I8(y)) => {
                let quant = q.conv();
                k::transpose_conv_2d::transpose_conv_2d_i8(p, &quant, x, w, bias_i32(), y)
            }
            (Prepared::TransposeConv2dF32(p, act), [F32(x), F32(w), ..], F32(y)) => {
                k::transpose_conv_2d::transpose_conv_2d_f32(p, *act, x, w, bias_f32(), y)
            }
            _ => unreachable!("validated graph: operand types match the prepared kernel"),
        }
    }
}
