//! Kernel calls of the in-place convs and banded residual blocks the planner chose
//! ([`Reuse::InPlace`] on a conv's operand 0, [`Reuse::BandBlock`]), as Rust source. The
//! kernels live in `kiln_runtime::kernels::in_place` and are called by full path; their
//! scratch is the arena range [`Plan::scratch`] gives the node.

use super::literal::literal;
use crate::exec::kernel::{Owned, Prepared};
use crate::plan::{Plan, Reuse, Scratch};
use kiln_runtime::kernels::reference::conv_2d::ConvQuant;

/// Path of the in-place kernels in generated code.
const KERNELS: &str = "kiln_runtime::kernels::in_place";

/// Whether `prepared` runs through [`conv_call`] when the plan puts it in place over its
/// operand 0 (a conv or depthwise conv without a fused residual).
pub(super) fn is_conv(prepared: &Prepared, reuse: Reuse) -> bool {
    matches!(reuse, Reuse::InPlace { operand: 0 })
        && matches!(
            prepared,
            Prepared::Conv2dI8(..)
                | Prepared::Conv2dF32(..)
                | Prepared::DepthwiseI8(..)
                | Prepared::DepthwiseF32(..)
        )
}

/// A statement binding `name` to the scratch range `scratch` as a `&mut [ty]`.
pub(super) fn scratch_view(name: &str, ty: &str, scratch: Option<Scratch>) -> String {
    let (offset, bytes) = scratch.map_or((0, 0), |s| (s.offset, s.bytes));
    let elem = if ty == "f32" { 4 } else { 1 };
    format!(
        "let {name} = unsafe {{ view_mut::<{ty}>(base, {offset}, {}) }};",
        bytes / elem
    )
}

/// The call of an in-place conv or depthwise conv: `y` holds the input on entry and the
/// result on exit, `ring` is its scratch, `inputs[1]` the filter, `inputs.get(2)` the
/// bias. `None` for other kernels.
pub(super) fn conv_call(
    prepared: &Prepared,
    inputs: &[String],
    y: &str,
    ring: &str,
) -> Option<String> {
    let filter = inputs.get(1)?;
    let bias = inputs
        .get(2)
        .map_or("None".to_string(), |b| format!("Some({b})"));
    Some(match prepared {
        Prepared::Conv2dI8(p, q) => format!(
            "const P: Conv2dParams = {};\nconst Q: ConvQuant<'static> = {};\n{KERNELS}::conv_2d::conv_2d_i8_in_place(&P, &Q, {filter}, {bias}, {y}, {ring});",
            literal(p),
            conv_quant(q)
        ),
        Prepared::Conv2dF32(p, act) => format!(
            "const P: Conv2dParams = {};\n{KERNELS}::conv_2d::conv_2d_f32_in_place(&P, {}, {filter}, {bias}, {y}, {ring});",
            literal(p),
            literal(act)
        ),
        Prepared::DepthwiseI8(p, q) => format!(
            "const P: DepthwiseConv2dParams = {};\nconst Q: ConvQuant<'static> = {};\n{KERNELS}::depthwise_conv_2d::depthwise_conv_2d_i8_in_place(&P, &Q, {filter}, {bias}, {y}, {ring});",
            literal(p),
            conv_quant(q)
        ),
        Prepared::DepthwiseF32(p, act) => format!(
            "const P: DepthwiseConv2dParams = {};\n{KERNELS}::depthwise_conv_2d::depthwise_conv_2d_f32_in_place(&P, {}, {filter}, {bias}, {y}, {ring});",
            literal(p),
            literal(act)
        ),
        _ => return None,
    })
}

/// The call of a banded residual block: `first` is the block's first conv, `second` its
/// second (with the fused ADD); `first_inputs` and `second_inputs` name their filter
/// (index 1) and bias (index 2, optional); `y` holds the block input on entry and its
/// result on exit. `None` unless both kernels are the int8 forms the banded kernel runs.
pub(super) fn band_block_call(
    first: &Prepared,
    second: &Prepared,
    first_inputs: &[String],
    second_inputs: &[String],
    y: &str,
    ring: &str,
) -> Option<String> {
    let (Prepared::Conv2dI8(pa, qa), Prepared::Conv2dAddI8(pb, qb, r)) = (first, second) else {
        return None;
    };
    let bias = |inputs: &[String]| {
        inputs
            .get(2)
            .map_or("None".to_string(), |b| format!("Some({b})"))
    };
    Some(format!(
        "const PA: Conv2dParams = {};\nconst QA: ConvQuant<'static> = {};\nconst PB: Conv2dParams = {};\nconst QB: ConvQuant<'static> = {};\nconst R: ResidualAdd = {};\n{KERNELS}::block::conv_block_i8_in_place(&PA, &QA, {}, {}, &PB, &QB, &R, {}, {}, {y}, {ring});",
        literal(pa),
        conv_quant(qa),
        literal(pb),
        conv_quant(qb),
        literal(r),
        first_inputs.get(1)?,
        bias(first_inputs),
        second_inputs.get(1)?,
        bias(second_inputs),
    ))
}

/// The `ConvQuant` literal with its multiplier table written out.
fn conv_quant(q: &Owned<ConvQuant<'static>>) -> String {
    let multipliers = super::ops::multipliers(&q.multipliers);
    format!(
        "ConvQuant {{ input_offset: {}, output_offset: {}, multipliers: {multipliers}, activation: {} }}",
        q.quant.input_offset,
        q.quant.output_offset,
        literal(&q.quant.activation)
    )
}

/// The plan's scratch of node `v`, for the generated comment and view.
pub(super) fn scratch_of(plan: &Plan, v: usize) -> Option<Scratch> {
    plan.scratch.get(v).copied().flatten()
}
