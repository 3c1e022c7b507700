//! Which `kiln_runtime::kernels::dsp` kernel a conv-like node runs on a target with the
//! DSP extension, and the words of scratch that kernel takes (im2col columns, the
//! prepared requantization table, staged rows, pixel chunks). The planner reserves
//! those words in the arena for the node's one step ([`PlanOptions::dsp_scratch`]) and
//! the emitter picks the same kernels from the same predicates, so the reserved range
//! and the call always agree.
//!
//! [`PlanOptions::dsp_scratch`]: super::PlanOptions::dsp_scratch

use crate::exec::kernel::{Multipliers, Owned, Prepared};
use crate::ir::{DType, Graph, Node};
use kiln_runtime::kernels::dsp::{conv_2d, depthwise_conv_2d};
use kiln_runtime::kernels::reference::conv_2d::Conv2dParams;
use kiln_runtime::kernels::reference::conv_2d::ConvQuant;
use kiln_runtime::kernels::reference::depthwise_conv_2d::DepthwiseConv2dParams;

/// Whether a conv can run in place through the DSP kernels: stride 1, a result of the
/// input's shape, no groups.
pub(crate) fn in_place_conv(p: &Conv2dParams) -> bool {
    let w = &p.window;
    w.stride == [1, 1]
        && w.output == w.input
        && p.output_depth == p.input_depth
        && p.filter_input_depth == p.input_depth
}

/// Whether an in-place conv takes the DSP in-place 1x1 kernel (chunks of pixels).
pub(crate) fn in_place_1x1(p: &Conv2dParams) -> bool {
    in_place_conv(p) && p.window.filter == [1, 1] && p.window.pad == [0, 0]
}

/// Whether a depthwise convolution takes the DSP 3x3 kernel: a 3x3 filter without
/// dilation, whose windows reach at most two columns past the input on either side
/// (every window kiln builds).
pub(crate) fn depthwise_3x3(p: &DepthwiseConv2dParams) -> bool {
    let w = &p.window;
    let last = w.origin(1, w.output[1].saturating_sub(1));
    w.filter == [3, 3] && w.dilation == [1, 1] && w.origin(1, 0) >= -2 && last < w.input[1] as isize
}

/// Whether an in-place depthwise conv takes the DSP in-place 3x3 kernel (whole groups of
/// four channels, stride 1, result as large as the input).
pub(crate) fn in_place_depthwise_3x3(p: &DepthwiseConv2dParams) -> bool {
    let w = &p.window;
    p.depth_multiplier == 1
        && depthwise_3x3(p)
        && w.stride == [1, 1]
        && w.output == w.input
        && p.input_depth.is_multiple_of(4)
}

/// Scratch words of the DSP call of `prepared` out of place, or in place over a fused
/// residual's skip operand (the same kernel scratch); 0 for kernels without scratch.
pub(crate) fn out_of_place_words(prepared: &Prepared) -> usize {
    match prepared {
        Prepared::Conv2dI8(p, q) => conv_2d::conv_2d_scratch_words(p, &q.conv()),
        Prepared::Conv2dAddI8(p, q, r) if conv_2d::conv_2d_add_supported(r) => {
            conv_2d::conv_2d_add_scratch_words(p, &q.conv())
        }
        Prepared::DepthwiseI8(p, _) if p.depth_multiplier == 1 && depthwise_3x3(p) => {
            depthwise_conv_2d::depthwise_conv_2d_3x3_scratch_words(p)
        }
        _ => 0,
    }
}

/// Scratch words of the DSP call of a conv running in place over its operand 0, or
/// `None` when no DSP kernel runs it in place (the reference kernel and its ring of
/// input pixels then do).
pub(crate) fn in_place_conv_words(prepared: &Prepared) -> Option<usize> {
    match prepared {
        Prepared::Conv2dI8(p, q) if in_place_1x1(p) => {
            Some(conv_2d::conv_2d_1x1_in_place_scratch_words(p, &q.conv()))
        }
        Prepared::Conv2dI8(p, q) if in_place_conv(p) => {
            Some(conv_2d::conv_2d_in_place_scratch_words(p, &q.conv()))
        }
        Prepared::DepthwiseI8(p, _) if in_place_depthwise_3x3(p) => {
            Some(depthwise_conv_2d::depthwise_conv_2d_3x3_scratch_words(p))
        }
        _ => None,
    }
}

/// Scratch words of the DSP call of a banded residual block (besides the plan's ring of
/// rows), or `None` when the reference block kernel runs it.
pub(crate) fn band_block_words(first: &Prepared, second: &Prepared) -> Option<usize> {
    match (first, second) {
        (Prepared::Conv2dI8(a, qa), Prepared::Conv2dAddI8(b, qb, r))
            if conv_2d::conv_2d_add_supported(r) =>
        {
            Some(conv_2d::conv_block_scratch_words(
                a,
                &qa.conv(),
                b,
                &qb.conv(),
            ))
        }
        _ => None,
    }
}

/// `prepared` with the requantization of a conv's DSP call prepared at compile time
/// (`ChannelMultipliers::Prepared`): the five words per output channel the DSP conv
/// kernels otherwise build in scratch on every call, kept in flash instead (20 bytes of
/// flash per channel instead of 5, 20 bytes of arena fewer per channel at the conv's
/// step, and no preparation at run time). Other kernels, convs whose bias is not a
/// constant `i32` tensor and shifts outside what the words hold exactly stay as they
/// are. The planner (with [`PlanOptions::dsp_scratch`]) and the emitter (for DSP
/// targets) both take it, so the scratch they reserve and the call agree.
///
/// [`PlanOptions::dsp_scratch`]: super::PlanOptions::dsp_scratch
pub(crate) fn with_flash_channels(graph: &Graph, node: &Node, prepared: Prepared) -> Prepared {
    match prepared {
        Prepared::Conv2dI8(p, q) => {
            let q = flash_quant(graph, node, &p, q);
            Prepared::Conv2dI8(p, q)
        }
        Prepared::Conv2dAddI8(p, q, r) => {
            let q = flash_quant(graph, node, &p, q);
            Prepared::Conv2dAddI8(p, q, r)
        }
        other => other,
    }
}

fn flash_quant(
    graph: &Graph,
    node: &Node,
    p: &Conv2dParams,
    q: Owned<ConvQuant<'static>>,
) -> Owned<ConvQuant<'static>> {
    let bias: Option<Vec<i32>> = match node.inputs.get(2) {
        None => None,
        Some(&t) => {
            let t = graph.tensor(t);
            match &t.data {
                Some(d) if t.info.dtype == DType::I32 => Some(
                    d.chunks_exact(4)
                        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                _ => return q,
            }
        }
    };
    let mut table = vec![[0u32; conv_2d::CHANNEL_WORDS]; p.output_depth];
    match conv_2d::prepare_flash_channels(p, &q.conv(), bias.as_deref(), &mut table) {
        Some(fast) => Owned {
            quant: q.quant,
            multipliers: Multipliers::Prepared(table, fast),
        },
        None => q,
    }
}
