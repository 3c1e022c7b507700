//! Calls every kiln-runtime kernel from an unmangled entry point whose arguments come
//! from outside, so the optimizer sees exactly what generated firmware sees: params of
//! unknown value and slices of unknown length. `_start` only takes the address of each
//! entry point; the linker (`--gc-sections`, rooted at `_start`) keeps them and
//! everything they reach, and nothing else. `check.sh` then looks for `panic` in the
//! symbol table.
#![no_std]
#![no_main]
// These functions are never called from C: `extern "C"` and `#[no_mangle]` only give
// them stable, readable symbol names.
#![allow(improper_ctypes_definitions)]

use core::hint::black_box;

use kiln_runtime::activation::{ActivationRange, ActivationRangeF32};
use kiln_runtime::kernels::dsp;
use kiln_runtime::kernels::in_place;
use kiln_runtime::kernels::reference::add::{
    add_f32, add_f32_in_place, add_i8, add_i8_in_place, AddParams,
};
use kiln_runtime::kernels::reference::average_pool_2d::{
    average_pool_2d_f32, average_pool_2d_i8, Pool2dParams,
};
use kiln_runtime::kernels::reference::clip::{
    clip_f32, clip_f32_in_place, clip_i8, clip_i8_in_place, ClipParams,
};
use kiln_runtime::kernels::reference::concatenation::{
    concatenation_f32, concatenation_i8, ConcatenationParams,
};
use kiln_runtime::kernels::reference::conv_2d::ResidualAdd;
use kiln_runtime::kernels::reference::conv_2d::{conv_2d_f32, conv_2d_i8, Conv2dParams, ConvQuant};
use kiln_runtime::kernels::reference::depthwise_conv_2d::{
    depthwise_conv_2d_f32, depthwise_conv_2d_i8, DepthwiseConv2dParams,
};
use kiln_runtime::kernels::reference::dequantize::{dequantize_i8_to_f32, DequantizeParams};
use kiln_runtime::kernels::reference::div::{
    div_f32, div_f32_in_place, div_i8, div_i8_in_place, DivParams,
};
use kiln_runtime::kernels::reference::fully_connected::{
    fully_connected_f32, fully_connected_i8, FullyConnectedParams, FullyConnectedQuant,
};
use kiln_runtime::kernels::reference::leaky_relu::{
    leaky_relu_f32, leaky_relu_f32_in_place, leaky_relu_i8, leaky_relu_i8_in_place, LeakyReluParams,
};
use kiln_runtime::kernels::reference::logistic::{
    logistic_f32, logistic_f32_in_place, logistic_i8, logistic_i8_in_place, SigmoidInputParams,
};
use kiln_runtime::kernels::reference::max_pool_2d::{max_pool_2d_f32, max_pool_2d_i8};
use kiln_runtime::kernels::reference::mean::{mean_f32, mean_i8, MeanParams, MeanQuant};
use kiln_runtime::kernels::reference::mul::{
    mul_f32, mul_f32_in_place, mul_i8, mul_i8_in_place, MulParams,
};
use kiln_runtime::kernels::reference::pad::{pad_f32, pad_i8, PadParams};
use kiln_runtime::kernels::reference::quantize::{
    quantize_f32_to_i8, requantize_i8, requantize_i8_in_place, QuantizeParams, RequantizeParams,
};
use kiln_runtime::kernels::reference::relu::{
    relu_f32, relu_f32_in_place, relu_i8, relu_i8_in_place, ReluParams,
};
use kiln_runtime::kernels::reference::relu6::{
    relu6_f32, relu6_f32_in_place, relu6_i8, relu6_i8_in_place, Relu6Params,
};
use kiln_runtime::kernels::reference::softmax::{softmax_f32, softmax_i8, SoftmaxParams};
use kiln_runtime::kernels::reference::sub::{
    sub_f32, sub_f32_in_place, sub_i8, sub_i8_in_place, SubParams,
};
use kiln_runtime::kernels::reference::tanh::{
    tanh_f32, tanh_f32_in_place, tanh_i8, tanh_i8_in_place,
};
use kiln_runtime::kernels::reference::transpose::{transpose_f32, transpose_i8, TransposeParams};
use kiln_runtime::kernels::reference::transpose_conv_2d::{
    transpose_conv_2d_f32, transpose_conv_2d_i8, TransposeConv2dParams,
};
use kiln_runtime::shape::Broadcast;

/// Defines one `#[no_mangle] extern "C"` entry point per kernel: `name(args) => call;`.
macro_rules! entry_points {
    ($( $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) => $call:expr; )*) => {
        $(
            #[no_mangle]
            pub extern "C" fn $name($($arg: $ty),*) {
                $call
            }
        )*

        /// The root of the link: keeps every entry point (and only what they reach).
        #[no_mangle]
        pub extern "C" fn _start() -> ! {
            $( black_box($name as extern "C" fn($($ty),*)); )*
            loop {}
        }
    };
}

entry_points! {
    kiln_conv_2d_i8(p: &Conv2dParams, q: &ConvQuant<'_>, x: &[i8], w: &[i8], b: Option<&[i32]>, y: &mut [i8])
        => conv_2d_i8(p, q, x, w, b, y);
    kiln_conv_2d_f32(p: &Conv2dParams, a: ActivationRangeF32, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32])
        => conv_2d_f32(p, a, x, w, b, y);
    kiln_depthwise_conv_2d_i8(p: &DepthwiseConv2dParams, q: &ConvQuant<'_>, x: &[i8], w: &[i8], b: Option<&[i32]>, y: &mut [i8])
        => depthwise_conv_2d_i8(p, q, x, w, b, y);
    kiln_depthwise_conv_2d_f32(p: &DepthwiseConv2dParams, a: ActivationRangeF32, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32])
        => depthwise_conv_2d_f32(p, a, x, w, b, y);
    kiln_fully_connected_i8(p: &FullyConnectedParams, q: &FullyConnectedQuant<'_>, x: &[i8], w: &[i8], b: Option<&[i32]>, y: &mut [i8])
        => fully_connected_i8(p, q, x, w, b, y);
    kiln_fully_connected_f32(p: &FullyConnectedParams, a: ActivationRangeF32, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32])
        => fully_connected_f32(p, a, x, w, b, y);
    kiln_average_pool_2d_i8(p: &Pool2dParams, a: ActivationRange, x: &[i8], y: &mut [i8])
        => average_pool_2d_i8(p, a, x, y);
    kiln_average_pool_2d_f32(p: &Pool2dParams, a: ActivationRangeF32, x: &[f32], y: &mut [f32])
        => average_pool_2d_f32(p, a, x, y);
    kiln_max_pool_2d_i8(p: &Pool2dParams, a: ActivationRange, x: &[i8], y: &mut [i8])
        => max_pool_2d_i8(p, a, x, y);
    kiln_max_pool_2d_f32(p: &Pool2dParams, a: ActivationRangeF32, x: &[f32], y: &mut [f32])
        => max_pool_2d_f32(p, a, x, y);
    kiln_add_i8(p: &AddParams, plan: &Broadcast, a: &[i8], b: &[i8], y: &mut [i8])
        => add_i8(p, plan, a, b, y);
    kiln_add_f32(act: ActivationRangeF32, plan: &Broadcast, a: &[f32], b: &[f32], y: &mut [f32])
        => add_f32(act, plan, a, b, y);
    kiln_mul_i8(p: &MulParams, plan: &Broadcast, a: &[i8], b: &[i8], y: &mut [i8])
        => mul_i8(p, plan, a, b, y);
    kiln_mul_f32(act: ActivationRangeF32, plan: &Broadcast, a: &[f32], b: &[f32], y: &mut [f32])
        => mul_f32(act, plan, a, b, y);
    kiln_softmax_i8(p: &SoftmaxParams, depth: usize, x: &[i8], y: &mut [i8])
        => softmax_i8(p, depth, x, y);
    kiln_softmax_f32(beta: f32, depth: usize, x: &[f32], y: &mut [f32])
        => softmax_f32(beta, depth, x, y);
    kiln_mean_i8(p: &MeanParams, q: &MeanQuant, x: &[i8], y: &mut [i8])
        => mean_i8(p, q, x, y);
    kiln_mean_f32(p: &MeanParams, x: &[f32], y: &mut [f32])
        => mean_f32(p, x, y);
    kiln_pad_i8(p: &PadParams, x: &[i8], v: i8, y: &mut [i8])
        => pad_i8(p, x, v, y);
    kiln_pad_f32(p: &PadParams, x: &[f32], v: f32, y: &mut [f32])
        => pad_f32(p, x, v, y);
    kiln_concatenation_i8(p: &ConcatenationParams, xs: &[&[i8]], y: &mut [i8])
        => concatenation_i8(p, xs, y);
    kiln_concatenation_f32(p: &ConcatenationParams, xs: &[&[f32]], y: &mut [f32])
        => concatenation_f32(p, xs, y);
    kiln_quantize_f32_to_i8(p: &QuantizeParams, x: &[f32], y: &mut [i8])
        => quantize_f32_to_i8(p, x, y);
    kiln_requantize_i8(p: &RequantizeParams, x: &[i8], y: &mut [i8])
        => requantize_i8(p, x, y);
    kiln_dequantize_i8_to_f32(p: &DequantizeParams, x: &[i8], y: &mut [f32])
        => dequantize_i8_to_f32(p, x, y);
    kiln_logistic_i8(p: &SigmoidInputParams, x: &[i8], y: &mut [i8])
        => logistic_i8(p, x, y);
    kiln_logistic_f32(x: &[f32], y: &mut [f32])
        => logistic_f32(x, y);
    kiln_tanh_i8(p: &SigmoidInputParams, x: &[i8], y: &mut [i8])
        => tanh_i8(p, x, y);
    kiln_tanh_f32(x: &[f32], y: &mut [f32])
        => tanh_f32(x, y);
    kiln_relu_i8(p: &ReluParams, x: &[i8], y: &mut [i8])
        => relu_i8(p, x, y);
    kiln_relu_f32(x: &[f32], y: &mut [f32])
        => relu_f32(x, y);
    kiln_relu6_i8(p: &Relu6Params, x: &[i8], y: &mut [i8])
        => relu6_i8(p, x, y);
    kiln_relu6_f32(x: &[f32], y: &mut [f32])
        => relu6_f32(x, y);
    kiln_sub_i8(p: &SubParams, plan: &Broadcast, a: &[i8], b: &[i8], y: &mut [i8])
        => sub_i8(p, plan, a, b, y);
    kiln_sub_f32(act: ActivationRangeF32, plan: &Broadcast, a: &[f32], b: &[f32], y: &mut [f32])
        => sub_f32(act, plan, a, b, y);
    kiln_div_i8(p: &DivParams, plan: &Broadcast, a: &[i8], b: &[i8], y: &mut [i8])
        => div_i8(p, plan, a, b, y);
    kiln_div_f32(act: ActivationRangeF32, plan: &Broadcast, a: &[f32], b: &[f32], y: &mut [f32])
        => div_f32(act, plan, a, b, y);
    kiln_leaky_relu_i8(p: &LeakyReluParams, x: &[i8], y: &mut [i8])
        => leaky_relu_i8(p, x, y);
    kiln_leaky_relu_f32(alpha: f32, x: &[f32], y: &mut [f32])
        => leaky_relu_f32(alpha, x, y);
    kiln_clip_i8(p: &ClipParams, x: &[i8], y: &mut [i8])
        => clip_i8(p, x, y);
    kiln_clip_f32(r: ActivationRangeF32, x: &[f32], y: &mut [f32])
        => clip_f32(r, x, y);
    kiln_transpose_i8(p: &TransposeParams, x: &[i8], y: &mut [i8])
        => transpose_i8(p, x, y);
    kiln_transpose_f32(p: &TransposeParams, x: &[f32], y: &mut [f32])
        => transpose_f32(p, x, y);
    kiln_transpose_conv_2d_i8(p: &TransposeConv2dParams, q: &ConvQuant<'_>, x: &[i8], w: &[i8], b: Option<&[i32]>, y: &mut [i8])
        => transpose_conv_2d_i8(p, q, x, w, b, y);
    kiln_transpose_conv_2d_f32(p: &TransposeConv2dParams, a: ActivationRangeF32, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32])
        => transpose_conv_2d_f32(p, a, x, w, b, y);

    // In-place variants (the memory planner's input-overwriting kernels).
    kiln_add_i8_in_place(p: &AddParams, plan: &Broadcast, xy: &mut [i8], other: &[i8], first: bool)
        => add_i8_in_place(p, plan, xy, other, first);
    kiln_add_f32_in_place(act: ActivationRangeF32, plan: &Broadcast, xy: &mut [f32], other: &[f32], first: bool)
        => add_f32_in_place(act, plan, xy, other, first);
    kiln_mul_i8_in_place(p: &MulParams, plan: &Broadcast, xy: &mut [i8], other: &[i8], first: bool)
        => mul_i8_in_place(p, plan, xy, other, first);
    kiln_mul_f32_in_place(act: ActivationRangeF32, plan: &Broadcast, xy: &mut [f32], other: &[f32], first: bool)
        => mul_f32_in_place(act, plan, xy, other, first);
    kiln_requantize_i8_in_place(p: &RequantizeParams, xy: &mut [i8])
        => requantize_i8_in_place(p, xy);
    kiln_logistic_i8_in_place(p: &SigmoidInputParams, xy: &mut [i8])
        => logistic_i8_in_place(p, xy);
    kiln_logistic_f32_in_place(xy: &mut [f32])
        => logistic_f32_in_place(xy);
    kiln_tanh_i8_in_place(p: &SigmoidInputParams, xy: &mut [i8])
        => tanh_i8_in_place(p, xy);
    kiln_tanh_f32_in_place(xy: &mut [f32])
        => tanh_f32_in_place(xy);
    kiln_relu_i8_in_place(p: &ReluParams, xy: &mut [i8])
        => relu_i8_in_place(p, xy);
    kiln_relu_f32_in_place(xy: &mut [f32])
        => relu_f32_in_place(xy);
    kiln_relu6_i8_in_place(p: &Relu6Params, xy: &mut [i8])
        => relu6_i8_in_place(p, xy);
    kiln_relu6_f32_in_place(xy: &mut [f32])
        => relu6_f32_in_place(xy);
    kiln_sub_i8_in_place(p: &SubParams, plan: &Broadcast, xy: &mut [i8], other: &[i8], first: bool)
        => sub_i8_in_place(p, plan, xy, other, first);
    kiln_sub_f32_in_place(act: ActivationRangeF32, plan: &Broadcast, xy: &mut [f32], other: &[f32], first: bool)
        => sub_f32_in_place(act, plan, xy, other, first);
    kiln_div_i8_in_place(p: &DivParams, plan: &Broadcast, xy: &mut [i8], other: &[i8], first: bool)
        => div_i8_in_place(p, plan, xy, other, first);
    kiln_div_f32_in_place(act: ActivationRangeF32, plan: &Broadcast, xy: &mut [f32], other: &[f32], first: bool)
        => div_f32_in_place(act, plan, xy, other, first);
    kiln_leaky_relu_i8_in_place(p: &LeakyReluParams, xy: &mut [i8])
        => leaky_relu_i8_in_place(p, xy);
    kiln_leaky_relu_f32_in_place(alpha: f32, xy: &mut [f32])
        => leaky_relu_f32_in_place(alpha, xy);
    kiln_clip_i8_in_place(p: &ClipParams, xy: &mut [i8])
        => clip_i8_in_place(p, xy);
    kiln_clip_f32_in_place(r: ActivationRangeF32, xy: &mut [f32])
        => clip_f32_in_place(r, xy);

    // Cortex-M DSP kernels (`kernels::dsp`): SMLAD/SXTB16 asm on thumbv7em, portable
    // Rust on thumbv6m.
    kiln_dsp_conv_2d_i8(p: &Conv2dParams, q: &ConvQuant<'_>, x: &[i8], w: &[i8], b: Option<&[i32]>, y: &mut [i8], s: &mut [u32])
        => dsp::conv_2d::conv_2d_i8(p, q, x, w, b, y, s);
    kiln_dsp_conv_2d_i8_add(p: &Conv2dParams, q: &ConvQuant<'_>, r: &ResidualAdd, x: &[i8], w: &[i8], b: Option<&[i32]>, skip: &[i8], y: &mut [i8], s: &mut [u32])
        => dsp::conv_2d::conv_2d_i8_add(p, q, r, x, w, b, skip, y, s);
    kiln_dsp_conv_2d_i8_add_in_place(p: &Conv2dParams, q: &ConvQuant<'_>, r: &ResidualAdd, x: &[i8], w: &[i8], b: Option<&[i32]>, xy: &mut [i8], s: &mut [u32])
        => dsp::conv_2d::conv_2d_i8_add_in_place(p, q, r, x, w, b, xy, s);
    kiln_dsp_conv_2d_1x1_i8(p: &Conv2dParams, q: &ConvQuant<'_>, x: &[i8], w: &[i8], b: Option<&[i32]>, y: &mut [i8], s: &mut [u32])
        => dsp::conv_2d::conv_2d_1x1_i8(p, q, x, w, b, y, s);
    kiln_dsp_conv_2d_1x1_i8_add(p: &Conv2dParams, q: &ConvQuant<'_>, r: &ResidualAdd, x: &[i8], w: &[i8], b: Option<&[i32]>, skip: &[i8], y: &mut [i8], s: &mut [u32])
        => dsp::conv_2d::conv_2d_1x1_i8_add(p, q, r, x, w, b, skip, y, s);
    kiln_dsp_conv_2d_1x1_i8_add_in_place(p: &Conv2dParams, q: &ConvQuant<'_>, r: &ResidualAdd, x: &[i8], w: &[i8], b: Option<&[i32]>, xy: &mut [i8], s: &mut [u32])
        => dsp::conv_2d::conv_2d_1x1_i8_add_in_place(p, q, r, x, w, b, xy, s);
    kiln_dsp_depthwise_conv_2d_i8(p: &DepthwiseConv2dParams, q: &ConvQuant<'_>, x: &[i8], w: &[i8], b: Option<&[i32]>, y: &mut [i8])
        => dsp::depthwise_conv_2d::depthwise_conv_2d_i8(p, q, x, w, b, y);
    kiln_dsp_depthwise_conv_2d_3x3_i8(p: &DepthwiseConv2dParams, q: &ConvQuant<'_>, x: &[i8], w: &[i8], b: Option<&[i32]>, y: &mut [i8], s: &mut [u32])
        => dsp::depthwise_conv_2d::depthwise_conv_2d_3x3_i8(p, q, x, w, b, y, s);
    kiln_dsp_depthwise_conv_2d_3x3_i8_in_place(p: &DepthwiseConv2dParams, q: &ConvQuant<'_>, w: &[i8], b: Option<&[i32]>, xy: &mut [i8], s: &mut [u32])
        => dsp::depthwise_conv_2d::depthwise_conv_2d_3x3_i8_in_place(p, q, w, b, xy, s);
    kiln_dsp_conv_2d_i8_in_place(p: &Conv2dParams, q: &ConvQuant<'_>, w: &[i8], b: Option<&[i32]>, xy: &mut [i8], s: &mut [u32])
        => dsp::conv_2d::conv_2d_i8_in_place(p, q, w, b, xy, s);
    kiln_dsp_conv_2d_1x1_i8_in_place(p: &Conv2dParams, q: &ConvQuant<'_>, w: &[i8], b: Option<&[i32]>, xy: &mut [i8], s: &mut [u32])
        => dsp::conv_2d::conv_2d_1x1_i8_in_place(p, q, w, b, xy, s);
    kiln_dsp_conv_block_i8_in_place(a: &Conv2dParams, qa: &ConvQuant<'_>, wa: &[i8], ba: Option<&[i32]>, b: &Conv2dParams, qb: &ConvQuant<'_>, r: &ResidualAdd, wb: &[i8], bb: Option<&[i32]>, xy: &mut [i8], ring: &mut [i8], s: &mut [u32])
        => dsp::conv_2d::conv_block_i8_in_place(a, qa, wa, ba, b, qb, r, wb, bb, xy, ring, s);
    kiln_dsp_fully_connected_i8(p: &FullyConnectedParams, q: &FullyConnectedQuant<'_>, x: &[i8], w: &[i8], b: Option<&[i32]>, y: &mut [i8])
        => dsp::fully_connected::fully_connected_i8(p, q, x, w, b, y);
    kiln_dsp_average_pool_2d_i8(p: &Pool2dParams, a: ActivationRange, x: &[i8], y: &mut [i8])
        => dsp::pool_2d::average_pool_2d_i8(p, a, x, y);
    kiln_dsp_max_pool_2d_i8(p: &Pool2dParams, a: ActivationRange, x: &[i8], y: &mut [i8])
        => dsp::pool_2d::max_pool_2d_i8(p, a, x, y);

    // In-place convs and banded residual blocks (`kernels::in_place`).
    kiln_conv_2d_i8_in_place(p: &Conv2dParams, q: &ConvQuant<'_>, w: &[i8], b: Option<&[i32]>, xy: &mut [i8], s: &mut [i8])
        => in_place::conv_2d::conv_2d_i8_in_place(p, q, w, b, xy, s);
    kiln_conv_2d_f32_in_place(p: &Conv2dParams, r: ActivationRangeF32, w: &[f32], b: Option<&[f32]>, xy: &mut [f32], s: &mut [f32])
        => in_place::conv_2d::conv_2d_f32_in_place(p, r, w, b, xy, s);
    kiln_depthwise_conv_2d_i8_in_place(p: &DepthwiseConv2dParams, q: &ConvQuant<'_>, w: &[i8], b: Option<&[i32]>, xy: &mut [i8], s: &mut [i8])
        => in_place::depthwise_conv_2d::depthwise_conv_2d_i8_in_place(p, q, w, b, xy, s);
    kiln_depthwise_conv_2d_f32_in_place(p: &DepthwiseConv2dParams, r: ActivationRangeF32, w: &[f32], b: Option<&[f32]>, xy: &mut [f32], s: &mut [f32])
        => in_place::depthwise_conv_2d::depthwise_conv_2d_f32_in_place(p, r, w, b, xy, s);
    kiln_conv_block_i8_in_place(pa: &Conv2dParams, qa: &ConvQuant<'_>, wa: &[i8], ba: Option<&[i32]>, pb: &Conv2dParams, qb: &ConvQuant<'_>, r: &ResidualAdd, wb: &[i8], bb: Option<&[i32]>, xy: &mut [i8], ring: &mut [i8])
        => in_place::block::conv_block_i8_in_place(pa, qa, wa, ba, pb, qb, r, wb, bb, xy, ring);
}

/// Reached only if a kernel can panic, which `check.sh` rules out: with no caller left
/// after `--gc-sections`, this handler is not in the ELF either.
#[panic_handler]
fn on_panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
