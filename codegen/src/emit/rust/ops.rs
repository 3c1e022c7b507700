//! The kernel call of each prepared node, as Rust source. The parameters are the ones
//! the host executor computed (`exec::kernel::Prepared`), printed as constants, so the
//! generated code and the executor cannot disagree on a single integer.

use super::literal::literal;
use crate::exec::kernel::{Multipliers, Owned, Prepared};
use crate::plan::dsp::{depthwise_3x3, in_place_1x1, in_place_conv, in_place_depthwise_3x3};
use kiln_runtime::kernels::reference::conv_2d::ConvQuant;
use kiln_runtime::kernels::reference::fully_connected::FullyConnectedQuant;
use kiln_runtime::quant::QuantizedMultiplier;

/// Operand and result expressions of one node.
pub(super) struct Operands<'a> {
    /// One readable slice expression per node input.
    pub inputs: &'a [String],
    /// A writable slice expression for the node's result.
    pub output: &'a str,
}

/// The `ChannelMultipliers` literal of `m`: a per-channel table as two parallel arrays,
/// multipliers (`i32`) and shifts (`i8`), 5 bytes of flash per channel instead of 8
/// (`qm` pairs only if a shift does not fit `i8`, which TFLite's never do).
pub(super) fn multipliers(m: &Multipliers) -> String {
    match m {
        Multipliers::PerTensor(q) => format!("ChannelMultipliers::PerTensor({})", literal(q)),
        Multipliers::PerChannel(table) if table.iter().all(|q| i8::try_from(q.shift).is_ok()) => {
            let m: Vec<String> = table.iter().map(|q| q.multiplier.to_string()).collect();
            let s: Vec<String> = table.iter().map(|q| q.shift.to_string()).collect();
            format!(
                "ChannelMultipliers::PerChannelSplit {{ multipliers: &[{}], shifts: &[{}] }}",
                m.join(", "),
                s.join(", ")
            )
        }
        Multipliers::PerChannel(table) => {
            let items: Vec<String> = table.iter().map(short_multiplier).collect();
            format!("ChannelMultipliers::PerChannel(&[{}])", items.join(", "))
        }
        Multipliers::Prepared(channels, fast) => {
            let items: Vec<String> = channels
                .iter()
                .map(|ch| {
                    let w: Vec<String> = ch.iter().map(|w| format!("{w:#x}")).collect();
                    format!("[{}]", w.join(", "))
                })
                .collect();
            format!(
                "ChannelMultipliers::Prepared {{ channels: &[{}], fast: {fast} }}",
                items.join(", ")
            )
        }
    }
}

/// `QuantizedMultiplier { .. }` through a short constructor, to keep tables readable.
fn short_multiplier(q: &QuantizedMultiplier) -> String {
    format!("qm({}, {})", q.multiplier, q.shift)
}

/// Which kernel family the generated code calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernels {
    /// `kiln_runtime::kernels::reference` everywhere.
    Reference,
    /// `kiln_runtime::kernels::dsp` where it has the op and shape, the reference
    /// elsewhere (Cortex-M cores with the DSP extension).
    Dsp,
}

/// Path of the DSP kernels in generated code (their names repeat the reference's,
/// which the generated module imports with globs).
const DSP: &str = "kiln_runtime::kernels::dsp";

/// The scratch expression DSP calls take: `run` binds `scratch` (a `&mut [u32]`, the
/// node's [`crate::plan::Plan::scratch`] range in the arena) in the block of each call
/// that needs it.
const SCRATCH: &str = "scratch";

/// Words of scratch the DSP call [`kernel_call`] or [`in_place_call`] emits for
/// `prepared` takes (0 for kernels without scratch or other families).
pub(super) fn scratch_words(prepared: &Prepared, kernels: Kernels) -> usize {
    match kernels {
        Kernels::Dsp => crate::plan::dsp::out_of_place_words(prepared),
        Kernels::Reference => 0,
    }
}

/// Bytes of per-channel requantization table (multiplier and shift of each output
/// channel) the call of `prepared` puts in flash: model data, like the per-channel
/// parameters TFLM computes into its arena at init from the flatbuffer's scales.
pub(super) fn table_bytes(prepared: &Prepared) -> usize {
    let m = match prepared {
        Prepared::Conv2dI8(_, q)
        | Prepared::Conv2dAddI8(_, q, _)
        | Prepared::DepthwiseI8(_, q)
        | Prepared::TransposeConv2dI8(_, q) => &q.multipliers,
        Prepared::FullyConnectedI8(_, q) => &q.multipliers,
        _ => return 0,
    };
    match m {
        Multipliers::PerChannel(t) if t.iter().all(|q| i8::try_from(q.shift).is_ok()) => {
            t.len() * (std::mem::size_of::<i32>() + std::mem::size_of::<i8>())
        }
        Multipliers::PerChannel(t) => std::mem::size_of_val(t.as_slice()),
        Multipliers::Prepared(t, _) => std::mem::size_of_val(t.as_slice()),
        Multipliers::PerTensor(_) => 0,
    }
}

/// The DSP call of a conv the plan runs in place over its operand 0 (`y`): convs row by
/// row (1x1 ones in chunks of pixels) and 3x3 depthwise convs, with the DSP kernel's
/// scratch (the plan's [`crate::plan::dsp::in_place_conv_words`]) instead of a ring of
/// pixels. `None` keeps the in-place reference kernel.
pub(super) fn dsp_in_place_conv_call(
    prepared: &Prepared,
    inputs: &[String],
    y: &str,
    kernels: Kernels,
) -> Option<String> {
    if kernels != Kernels::Dsp {
        return None;
    }
    let filter = inputs.get(1)?;
    let bias = inputs
        .get(2)
        .map_or("None".to_string(), |b| format!("Some({b})"));
    Some(match prepared {
        Prepared::Conv2dI8(p, q) if in_place_conv(p) => format!(
            "const P: Conv2dParams = {};\nconst Q: ConvQuant<'static> = {};\n{DSP}::conv_2d::{}(&P, &Q, {filter}, {bias}, {y}, {SCRATCH});",
            literal(p),
            quant(q),
            if in_place_1x1(p) {
                "conv_2d_1x1_i8_in_place"
            } else {
                "conv_2d_i8_in_place"
            }
        ),
        Prepared::DepthwiseI8(p, q) if in_place_depthwise_3x3(p) => format!(
            "const P: DepthwiseConv2dParams = {};\nconst Q: ConvQuant<'static> = {};\n{DSP}::depthwise_conv_2d::depthwise_conv_2d_3x3_i8_in_place(&P, &Q, {filter}, {bias}, {y}, {SCRATCH});",
            literal(p),
            quant(q)
        ),
        _ => return None,
    })
}

/// The DSP call of a banded residual block (see `in_place::band_block_call` for the
/// arguments): each row of both convs through the DSP kernels, the plan's ring holding
/// the rows of the first conv's result. `None` keeps the reference block kernel.
pub(super) fn dsp_band_block_call(
    first: &Prepared,
    second: &Prepared,
    first_inputs: &[String],
    second_inputs: &[String],
    y: &str,
    ring: &str,
    kernels: Kernels,
) -> Option<String> {
    let (Kernels::Dsp, Prepared::Conv2dI8(pa, qa), Prepared::Conv2dAddI8(pb, qb, r)) =
        (kernels, first, second)
    else {
        return None;
    };
    if !kiln_runtime::kernels::dsp::conv_2d::conv_2d_add_supported(r) {
        return None;
    }
    let bias = |inputs: &[String]| {
        inputs
            .get(2)
            .map_or("None".to_string(), |b| format!("Some({b})"))
    };
    Some(format!(
        "const PA: Conv2dParams = {};\nconst QA: ConvQuant<'static> = {};\nconst PB: Conv2dParams = {};\nconst QB: ConvQuant<'static> = {};\nconst R: ResidualAdd = {};\n{DSP}::conv_2d::conv_block_i8_in_place(&PA, &QA, {}, {}, &PB, &QB, &R, {}, {}, {y}, {ring}, {SCRATCH});",
        literal(pa),
        quant(qa),
        literal(pb),
        quant(qb),
        literal(r),
        first_inputs.get(1)?,
        bias(first_inputs),
        second_inputs.get(1)?,
        bias(second_inputs),
    ))
}

/// The DSP variant of `prepared`'s call, chosen from the shapes: 1x1 convolutions as a
/// plain matrix multiply, other convolutions through im2col, depthwise convolutions
/// with depth multiplier 1 (3x3 ones without dilation unrolled), fully connected layers
/// and int8 pooling; `None` keeps the reference kernel (depth multipliers above 1,
/// float ops, everything else). `inout` names the operand a fused residual add overwrites (in
/// place) or is `None` (out of place, result in `ops.output`).
fn dsp_call(prepared: &Prepared, ops: &Operands<'_>, inout: Option<&str>) -> Option<String> {
    let x = |i: usize| ops.inputs[i].as_str();
    let y = ops.output;
    let bias = || {
        ops.inputs
            .get(2)
            .map_or("None".to_string(), |b| format!("Some({b})"))
    };
    let conv = |p: &kiln_runtime::kernels::reference::conv_2d::Conv2dParams| {
        if p.window.filter == [1, 1] {
            "conv_2d_1x1_i8"
        } else {
            "conv_2d_i8"
        }
    };
    Some(match (prepared, inout) {
        (Prepared::Conv2dI8(p, q), None) => format!(
            "const P: Conv2dParams = {};\nconst Q: ConvQuant<'static> = {};\n{DSP}::conv_2d::{}(&P, &Q, {}, {}, {}, {y}, {SCRATCH});",
            literal(p),
            quant(q),
            conv(p),
            x(0),
            x(1),
            bias()
        ),
        (Prepared::Conv2dAddI8(_, _, r), _)
            if !kiln_runtime::kernels::dsp::conv_2d::conv_2d_add_supported(r) =>
        {
            return None
        }
        (Prepared::Conv2dAddI8(p, q, r), None) => format!(
            "const P: Conv2dParams = {};\nconst Q: ConvQuant<'static> = {};\nconst R: ResidualAdd = {};\n{DSP}::conv_2d::{}_add(&P, &Q, &R, {}, {}, {}, {}, {y}, {SCRATCH});",
            literal(p),
            quant(q),
            literal(r),
            conv(p),
            x(0),
            x(1),
            bias(),
            x(3)
        ),
        (Prepared::Conv2dAddI8(p, q, r), Some(inout)) => format!(
            "const P: Conv2dParams = {};\nconst Q: ConvQuant<'static> = {};\nconst R: ResidualAdd = {};\n{DSP}::conv_2d::{}_add_in_place(&P, &Q, &R, {}, {}, {}, {inout}, {SCRATCH});",
            literal(p),
            quant(q),
            literal(r),
            conv(p),
            x(0),
            x(1),
            bias()
        ),
        (Prepared::DepthwiseI8(p, q), None) if p.depth_multiplier == 1 => {
            let (kernel, scratch) = if depthwise_3x3(p) {
                ("depthwise_conv_2d_3x3_i8", format!(", {SCRATCH}"))
            } else {
                ("depthwise_conv_2d_i8", String::new())
            };
            format!(
                "const P: DepthwiseConv2dParams = {};\nconst Q: ConvQuant<'static> = {};\n{DSP}::depthwise_conv_2d::{kernel}(&P, &Q, {}, {}, {}, {y}{scratch});",
                literal(p),
                quant(q),
                x(0),
                x(1),
                bias()
            )
        }
        (Prepared::FullyConnectedI8(p, q), None) => format!(
            "const P: FullyConnectedParams = {};\nconst Q: FullyConnectedQuant<'static> = {};\n{DSP}::fully_connected::fully_connected_i8(&P, &Q, {}, {}, {}, {y});",
            literal(p),
            quant(q),
            x(0),
            x(1),
            bias()
        ),
        (Prepared::AveragePoolI8(p, r), None) => {
            pool(&format!("{DSP}::pool_2d::average_pool_2d_i8"), p, &literal(r), x(0), y)
        }
        (Prepared::MaxPoolI8(p, r), None) => {
            pool(&format!("{DSP}::pool_2d::max_pool_2d_i8"), p, &literal(r), x(0), y)
        }
        _ => return None,
    })
}

/// Source of a block that runs `prepared` on `ops` with the `kernels` family.
pub(super) fn kernel_call(prepared: &Prepared, ops: &Operands<'_>, kernels: Kernels) -> String {
    if kernels == Kernels::Dsp {
        if let Some(call) = dsp_call(prepared, ops, None) {
            return call;
        }
    }
    let x = |i: usize| ops.inputs[i].as_str();
    let bias = || {
        ops.inputs
            .get(2)
            .map_or("None".to_string(), |b| format!("Some({b})"))
    };
    let y = ops.output;
    match prepared {
        Prepared::Conv2dI8(p, q) => format!(
            "const P: Conv2dParams = {};\nconst Q: ConvQuant<'static> = {};\nconv_2d_i8(&P, &Q, {}, {}, {}, {y});",
            literal(p),
            quant(q),
            x(0),
            x(1),
            bias()
        ),
        Prepared::Conv2dAddI8(p, q, r) => format!(
            "const P: Conv2dParams = {};\nconst Q: ConvQuant<'static> = {};\nconst R: ResidualAdd = {};\nconv_2d_i8_add(&P, &Q, &R, {}, {}, {}, {}, {y});",
            literal(p),
            quant(q),
            literal(r),
            x(0),
            x(1),
            bias(),
            x(3)
        ),
        Prepared::Conv2dAddF32(p, act, add_act) => format!(
            "const P: Conv2dParams = {};\nconv_2d_f32_add(&P, {}, {}, {}, {}, {}, {}, {y});",
            literal(p),
            literal(act),
            literal(add_act),
            x(0),
            x(1),
            bias(),
            x(3)
        ),
        Prepared::Conv2dF32(p, act) => format!(
            "const P: Conv2dParams = {};\nconv_2d_f32(&P, {}, {}, {}, {}, {y});",
            literal(p),
            literal(act),
            x(0),
            x(1),
            bias()
        ),
        Prepared::DepthwiseI8(p, q) => format!(
            "const P: DepthwiseConv2dParams = {};\nconst Q: ConvQuant<'static> = {};\ndepthwise_conv_2d_i8(&P, &Q, {}, {}, {}, {y});",
            literal(p),
            quant(q),
            x(0),
            x(1),
            bias()
        ),
        Prepared::DepthwiseF32(p, act) => format!(
            "const P: DepthwiseConv2dParams = {};\ndepthwise_conv_2d_f32(&P, {}, {}, {}, {}, {y});",
            literal(p),
            literal(act),
            x(0),
            x(1),
            bias()
        ),
        Prepared::FullyConnectedI8(p, q) => format!(
            "const P: FullyConnectedParams = {};\nconst Q: FullyConnectedQuant<'static> = {};\nfully_connected_i8(&P, &Q, {}, {}, {}, {y});",
            literal(p),
            quant(q),
            x(0),
            x(1),
            bias()
        ),
        Prepared::FullyConnectedF32(p, act) => format!(
            "const P: FullyConnectedParams = {};\nfully_connected_f32(&P, {}, {}, {}, {}, {y});",
            literal(p),
            literal(act),
            x(0),
            x(1),
            bias()
        ),
        Prepared::AveragePoolI8(p, r) => pool("average_pool_2d_i8", p, &literal(r), x(0), y),
        Prepared::AveragePoolF32(p, r) => pool("average_pool_2d_f32", p, &literal(r), x(0), y),
        Prepared::MaxPoolI8(p, r) => pool("max_pool_2d_i8", p, &literal(r), x(0), y),
        Prepared::MaxPoolF32(p, r) => pool("max_pool_2d_f32", p, &literal(r), x(0), y),
        Prepared::AddI8(p, plan) => binary("add_i8", &format!("&{}", literal(p)), plan, x(0), x(1), y),
        Prepared::AddF32(r, plan) => binary("add_f32", &literal(r), plan, x(0), x(1), y),
        Prepared::MulI8(p, plan) => binary("mul_i8", &format!("&{}", literal(p)), plan, x(0), x(1), y),
        Prepared::MulF32(r, plan) => binary("mul_f32", &literal(r), plan, x(0), x(1), y),
        Prepared::Copy => format!("for (d, s) in {y}.iter_mut().zip({}.iter()) {{\n    *d = *s;\n}}", x(0)),
        Prepared::SoftmaxI8(p, depth) => format!("softmax_i8(&{}, {depth}, {}, {y});", literal(p), x(0)),
        Prepared::SoftmaxF32(beta, depth) => format!("softmax_f32({}, {depth}, {}, {y});", literal(beta), x(0)),
        Prepared::MeanI8(p, q) => format!(
            "const P: MeanParams = {};\nmean_i8(&P, &{}, {}, {y});",
            literal(p),
            literal(q),
            x(0)
        ),
        Prepared::MeanF32(p) => format!("const P: MeanParams = {};\nmean_f32(&P, {}, {y});", literal(p), x(0)),
        Prepared::PadI8(p, v) => format!("const P: PadParams = {};\npad_i8(&P, {}, {v}, {y});", literal(p), x(0)),
        Prepared::PadF32(p) => format!("const P: PadParams = {};\npad_f32(&P, {}, 0.0, {y});", literal(p), x(0)),
        Prepared::ConcatenationI8(p, r) => format!(
            "const P: ConcatenationParams = {};\nconcatenation_i8(&P, &[{}], {y});\nfor v in {y}.iter_mut() {{\n    *v = {}.clamp_i8(i32::from(*v));\n}}",
            literal(p),
            ops.inputs.join(", "),
            literal(r)
        ),
        Prepared::ConcatenationF32(p, r) => format!(
            "const P: ConcatenationParams = {};\nconcatenation_f32(&P, &[{}], {y});\nfor v in {y}.iter_mut() {{\n    *v = {}.apply(*v);\n}}",
            literal(p),
            ops.inputs.join(", "),
            literal(r)
        ),
        Prepared::Quantize(p) => format!("quantize_f32_to_i8(&{}, {}, {y});", literal(p), x(0)),
        Prepared::Requantize(p) => format!("requantize_i8(&{}, {}, {y});", literal(p), x(0)),
        Prepared::Dequantize(p) => format!("dequantize_i8_to_f32(&{}, {}, {y});", literal(p), x(0)),
        Prepared::LogisticI8(p) => format!("logistic_i8(&{}, {}, {y});", literal(p), x(0)),
        Prepared::LogisticF32 => format!("logistic_f32({}, {y});", x(0)),
        Prepared::TanhI8(p) => format!("tanh_i8(&{}, {}, {y});", literal(p), x(0)),
        Prepared::TanhF32 => format!("tanh_f32({}, {y});", x(0)),
        Prepared::ReluI8(p) => format!("relu_i8(&{}, {}, {y});", literal(p), x(0)),
        Prepared::ReluF32 => format!("relu_f32({}, {y});", x(0)),
        Prepared::Relu6I8(p) => format!("relu6_i8(&{}, {}, {y});", literal(p), x(0)),
        Prepared::Relu6F32 => format!("relu6_f32({}, {y});", x(0)),
        Prepared::SubI8(p, plan) => binary("sub_i8", &format!("&{}", literal(p)), plan, x(0), x(1), y),
        Prepared::SubF32(r, plan) => binary("sub_f32", &literal(r), plan, x(0), x(1), y),
        Prepared::DivI8(p, plan) => binary("div_i8", &format!("&{}", literal(p)), plan, x(0), x(1), y),
        Prepared::DivF32(r, plan) => binary("div_f32", &literal(r), plan, x(0), x(1), y),
        Prepared::LeakyReluI8(p) => format!("leaky_relu_i8(&{}, {}, {y});", literal(p), x(0)),
        Prepared::LeakyReluF32(alpha) => format!("leaky_relu_f32({}, {}, {y});", literal(alpha), x(0)),
        Prepared::ClipI8(p) => format!("clip_i8(&{}, {}, {y});", literal(p), x(0)),
        Prepared::ClipF32(r) => format!("clip_f32({}, {}, {y});", literal(r), x(0)),
        Prepared::Transpose(p) => format!("const P: TransposeParams = {};\ntranspose(&P, {}, {y});", literal(p), x(0)),
        Prepared::TransposeConv2dI8(p, q) => format!(
            "const P: TransposeConv2dParams = {};\nconst Q: ConvQuant<'static> = {};\ntranspose_conv_2d_i8(&P, &Q, {}, {}, {}, {y});",
            literal(p),
            quant(q),
            x(0),
            x(1),
            bias()
        ),
        Prepared::TransposeConv2dF32(p, act) => format!(
            "const P: TransposeConv2dParams = {};\ntranspose_conv_2d_f32(&P, {}, {}, {}, {}, {y});",
            literal(p),
            literal(act),
            x(0),
            x(1),
            bias()
        ),
    }
}

/// The quant struct of a conv-like kernel with its multiplier table written out.
fn quant<Q: QuantFields>(q: &Owned<Q>) -> String {
    q.quant.literal_with(&multipliers(&q.multipliers))
}

/// Quant structs whose multiplier table the executor keeps apart.
trait QuantFields {
    /// The struct literal with `multipliers` as given.
    fn literal_with(&self, multipliers: &str) -> String;
}

impl QuantFields for ConvQuant<'_> {
    fn literal_with(&self, multipliers: &str) -> String {
        format!(
            "ConvQuant {{ input_offset: {}, output_offset: {}, multipliers: {multipliers}, activation: {} }}",
            self.input_offset,
            self.output_offset,
            literal(&self.activation)
        )
    }
}

impl QuantFields for FullyConnectedQuant<'_> {
    fn literal_with(&self, multipliers: &str) -> String {
        format!(
            "FullyConnectedQuant {{ input_offset: {}, weights_offset: {}, output_offset: {}, multipliers: {multipliers}, activation: {} }}",
            self.input_offset,
            self.weights_offset,
            self.output_offset,
            literal(&self.activation)
        )
    }
}

fn pool(f: &str, p: &impl std::fmt::Debug, range: &str, x: &str, y: &str) -> String {
    format!(
        "const P: Pool2dParams = {};\n{f}(&P, {range}, {x}, {y});",
        literal(p)
    )
}

fn binary(f: &str, first: &str, plan: &impl std::fmt::Debug, a: &str, b: &str, y: &str) -> String {
    format!(
        "const B: Broadcast = {};\n{f}({first}, &B, {a}, {b}, {y});",
        literal(plan)
    )
}

/// Source of a block that runs `prepared` in place: `y` holds operand `operand` on
/// entry and the result on exit; `inputs` names every operand (the entry for `operand`
/// is not bound). `None` when the kernel has no in-place form (the planner never asks
/// for one then).
pub(super) fn in_place_call(
    prepared: &Prepared,
    operand: usize,
    inputs: &[String],
    y: &str,
    kernels: Kernels,
) -> Option<String> {
    if kernels == Kernels::Dsp && matches!(prepared, Prepared::Conv2dAddI8(..)) && operand == 3 {
        let ops = Operands { inputs, output: y };
        if let Some(call) = dsp_call(prepared, &ops, Some(y)) {
            return Some(call);
        }
    }
    let first = operand == 0;
    let other = || {
        inputs
            .get(1 - operand.min(1))
            .map(String::as_str)
            .unwrap_or("")
    };
    Some(match prepared {
        Prepared::ReluI8(p) => format!("relu_i8_in_place(&{}, {y});", literal(p)),
        Prepared::ReluF32 => format!("relu_f32_in_place({y});"),
        Prepared::Relu6I8(p) => format!("relu6_i8_in_place(&{}, {y});", literal(p)),
        Prepared::Relu6F32 => format!("relu6_f32_in_place({y});"),
        Prepared::LogisticI8(p) => format!("logistic_i8_in_place(&{}, {y});", literal(p)),
        Prepared::LogisticF32 => format!("logistic_f32_in_place({y});"),
        Prepared::TanhI8(p) => format!("tanh_i8_in_place(&{}, {y});", literal(p)),
        Prepared::TanhF32 => format!("tanh_f32_in_place({y});"),
        Prepared::Requantize(p) => format!("requantize_i8_in_place(&{}, {y});", literal(p)),
        Prepared::AddI8(p, plan) => {
            in_place_binary("add_i8_in_place", &format!("&{}", literal(p)), plan, y, other(), first)
        }
        Prepared::AddF32(r, plan) => in_place_binary("add_f32_in_place", &literal(r), plan, y, other(), first),
        Prepared::MulI8(p, plan) => {
            in_place_binary("mul_i8_in_place", &format!("&{}", literal(p)), plan, y, other(), first)
        }
        Prepared::MulF32(r, plan) => in_place_binary("mul_f32_in_place", &literal(r), plan, y, other(), first),
        Prepared::SubI8(p, plan) => {
            in_place_binary("sub_i8_in_place", &format!("&{}", literal(p)), plan, y, other(), first)
        }
        Prepared::SubF32(r, plan) => in_place_binary("sub_f32_in_place", &literal(r), plan, y, other(), first),
        Prepared::DivI8(p, plan) => {
            in_place_binary("div_i8_in_place", &format!("&{}", literal(p)), plan, y, other(), first)
        }
        Prepared::DivF32(r, plan) => in_place_binary("div_f32_in_place", &literal(r), plan, y, other(), first),
        Prepared::LeakyReluI8(p) => format!("leaky_relu_i8_in_place(&{}, {y});", literal(p)),
        Prepared::LeakyReluF32(alpha) => format!("leaky_relu_f32_in_place({}, {y});", literal(alpha)),
        Prepared::ClipI8(p) => format!("clip_i8_in_place(&{}, {y});", literal(p)),
        Prepared::ClipF32(r) => format!("clip_f32_in_place({}, {y});", literal(r)),
        Prepared::Conv2dAddI8(p, q, r) if operand == 3 => format!(
            "const P: Conv2dParams = {};\nconst Q: ConvQuant<'static> = {};\nconst R: ResidualAdd = {};\nconv_2d_i8_add_in_place(&P, &Q, &R, {}, {}, Some({}), {y});",
            literal(p),
            quant(q),
            literal(r),
            inputs[0],
            inputs[1],
            inputs[2]
        ),
        Prepared::Conv2dAddF32(p, act, add_act) if operand == 3 => format!(
            "const P: Conv2dParams = {};\nconv_2d_f32_add_in_place(&P, {}, {}, {}, {}, Some({}), {y});",
            literal(p),
            literal(act),
            literal(add_act),
            inputs[0],
            inputs[1],
            inputs[2]
        ),
        _ => return None,
    })
}

fn in_place_binary(
    f: &str,
    first_arg: &str,
    plan: &impl std::fmt::Debug,
    y: &str,
    other: &str,
    inout_is_first: bool,
) -> String {
    format!(
        "const B: Broadcast = {};\n{f}({first_arg}, &B, {y}, {other}, {inout_is_first});",
        literal(plan)
    )
}
