//! DEPTHWISE_CONV_2D: NHWC input, filter `[1, H, W, C_in * multiplier]`, depth
//! multiplier, stride, dilation, padding. Output channel `ic * multiplier + m` reads
//! input channel `ic` only.
//!
//! int8 follows TFLM's `reference_integer_ops::DepthwiseConvPerChannel` (per-tensor
//! filters use the same path with one multiplier). Quantization is [`ConvQuant`], with
//! the per-channel axis being the last filter dimension.
//!
//! Overflow: products are below `2^15` in magnitude and there are only
//! `filter_h * filter_w` of them per output, so the `i32` accumulator cannot overflow
//! for any filter smaller than 256x256.

use crate::activation::ActivationRangeF32;
use crate::error::{Error, Result};
use crate::kernels::reference::conv_2d::for_each_tap;
pub use crate::kernels::reference::conv_2d::ConvQuant;
use crate::padding::{Padding, Window2d};
use crate::shape::checked_product;
use crate::unchecked::get;

/// Shapes and window of one DEPTHWISE_CONV_2D call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthwiseConv2dParams {
    /// Batch size `N`.
    pub batches: usize,
    /// Input channels `C_in`.
    pub input_depth: usize,
    /// Output channels per input channel.
    pub depth_multiplier: usize,
    /// Spatial geometry (sizes, stride, dilation, padding).
    pub window: Window2d,
}

impl DepthwiseConv2dParams {
    /// Params from an NHWC input shape, a `[1, H, W, C_out]` filter shape, the depth
    /// multiplier and TFLite attributes. `C_out` must be `C_in * depth_multiplier`.
    pub fn new(
        input_shape: [usize; 4],
        filter_shape: [usize; 4],
        depth_multiplier: usize,
        stride: [usize; 2],
        dilation: [usize; 2],
        padding: Padding,
    ) -> Result<Self> {
        let [n, h, w, c] = input_shape;
        let window = Window2d::new(
            [h, w],
            [filter_shape[1], filter_shape[2]],
            stride,
            dilation,
            padding,
        )?;
        Self::with_window(n, c, filter_shape, depth_multiplier, window)
    }

    /// Params from an explicit window (e.g. ONNX pads).
    pub fn with_window(
        batches: usize,
        input_depth: usize,
        filter_shape: [usize; 4],
        depth_multiplier: usize,
        window: Window2d,
    ) -> Result<Self> {
        let [one, fh, fw, out_c] = filter_shape;
        if batches == 0 || input_depth == 0 || depth_multiplier == 0 || one != 1 {
            return Err(Error::ShapeMismatch);
        }
        if [fh, fw] != window.filter || out_c != input_depth * depth_multiplier {
            return Err(Error::ShapeMismatch);
        }
        Ok(Self {
            batches,
            input_depth,
            depth_multiplier,
            window,
        })
    }

    /// Output channels `C_in * depth_multiplier`.
    pub fn output_depth(&self) -> usize {
        self.input_depth * self.depth_multiplier
    }

    /// The NHWC output shape.
    pub fn output_shape(&self) -> [usize; 4] {
        [
            self.batches,
            self.window.output[0],
            self.window.output[1],
            self.output_depth(),
        ]
    }

    /// Number of input elements the kernel reads.
    pub fn input_len(&self) -> usize {
        self.batches * self.window.input[0] * self.window.input[1] * self.input_depth
    }

    /// Number of filter elements.
    pub fn filter_len(&self) -> usize {
        self.window.filter[0] * self.window.filter[1] * self.output_depth()
    }

    /// Number of output elements the kernel writes.
    pub fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }
}

/// Slice lengths one DEPTHWISE_CONV_2D call needs, derived from `p` with
/// overflow-checked arithmetic: `(output_depth, input, filter, output)`.
pub(crate) fn depthwise_lens(p: &DepthwiseConv2dParams) -> Option<(usize, usize, usize, usize)> {
    let w = &p.window;
    let out_depth = p.input_depth.checked_mul(p.depth_multiplier)?;
    let input = checked_product(&[p.batches, w.input[0], w.input[1], p.input_depth])?;
    let filter = checked_product(&[w.filter[0], w.filter[1], out_depth])?;
    let output = checked_product(&[p.batches, w.output[0], w.output[1], out_depth])?;
    Some((out_depth, input, filter, output))
}

/// Shared loop nest: `finish(acc, bias, output_channel)` produces each output element.
/// Writes nothing unless the slice lengths are the ones [`depthwise_lens`] derives and
/// the bias (if any) has one entry per output channel.
#[inline]
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
fn depthwise_loop<T: Copy, B: Copy, A>(
    p: &DepthwiseConv2dParams,
    input: &[T],
    filter: &[T],
    bias: Option<&[B]>,
    mut zero: impl FnMut() -> A,
    mut mac: impl FnMut(&mut A, T, T),
    mut finish: impl FnMut(A, Option<B>, usize) -> T,
    output: &mut [T],
) {
    let Some((out_depth, input_len, filter_len, output_len)) = depthwise_lens(p) else {
        return;
    };
    if input.len() != input_len
        || filter.len() != filter_len
        || output.len() != output_len
        || bias.is_some_and(|b| b.len() != out_depth)
    {
        return;
    }
    let w = &p.window;
    let [in_h, in_w] = w.input;
    let f_w = w.filter[1];
    let [out_h, out_w] = w.output;
    let mut outputs = output.iter_mut();
    for n in 0..p.batches {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for ic in 0..p.input_depth {
                    for m in 0..p.depth_multiplier {
                        let oc = ic * p.depth_multiplier + m;
                        let mut acc = zero();
                        for_each_tap(w, oy, ox, |fy, fx, iy, ix| {
                            // SAFETY: n < batches, iy < in_h, ix < in_w (for_each_tap) and
                            // ic < input_depth bound the input index by input.len(); fy < f_h,
                            // fx < f_w and oc < out_depth bound the filter index by
                            // filter.len() (depthwise_lens).
                            let (x, f) = unsafe {
                                (
                                    get(input, ((n * in_h + iy) * in_w + ix) * p.input_depth + ic),
                                    get(filter, (fy * f_w + fx) * out_depth + oc),
                                )
                            };
                            mac(&mut acc, x, f);
                        });
                        // SAFETY: oc < input_depth * depth_multiplier == out_depth == b.len().
                        let b = bias.map(|b| unsafe { get(b, oc) });
                        // The loops visit exactly output.len() positions, so this never ends early.
                        if let Some(slot) = outputs.next() {
                            *slot = finish(acc, b, oc);
                        }
                    }
                }
            }
        }
    }
}

/// int8 DEPTHWISE_CONV_2D, bit-exact with TFLM's `DepthwiseConvPerChannel`.
///
/// Preconditions: slice lengths equal `p.input_len()`, `p.filter_len()`,
/// `p.output_len()`; `bias` (if any) and `q.multipliers` cover `p.output_depth()`;
/// otherwise nothing is written.
pub fn depthwise_conv_2d_i8(
    p: &DepthwiseConv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
) {
    if !q
        .multipliers
        .covers(p.input_depth.wrapping_mul(p.depth_multiplier))
    {
        return;
    }
    let input_offset = q.input_offset;
    depthwise_loop(
        p,
        input,
        filter,
        bias,
        || 0i32,
        |acc, x, f| *acc = acc.wrapping_add(i32::from(f) * (i32::from(x) + input_offset)),
        |acc, b, oc| {
            let acc = b.map_or(acc, |b| acc.wrapping_add(b));
            let scaled = q
                .multipliers
                .get(oc)
                .apply(acc)
                .wrapping_add(q.output_offset);
            q.activation.clamp_i8(scaled)
        },
        output,
    );
}

/// f32 DEPTHWISE_CONV_2D as TFLM's float reference. Same preconditions as the int8 one.
pub fn depthwise_conv_2d_f32(
    p: &DepthwiseConv2dParams,
    activation: ActivationRangeF32,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
    depthwise_loop(
        p,
        input,
        filter,
        bias,
        || 0.0f32,
        |acc, x, f| *acc += x * f,
        |acc, b, _| activation.apply(acc + b.unwrap_or(0.0)),
        output,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::FusedActivation;
    use crate::kernels::reference::test_util::{
        assert_close_i8, dequantize_all, quantize_all, Lcg,
    };
    use crate::quant::{QuantizedMultiplier, TensorQuant};

    #[test]
    fn multiplier_two_hand_checked() {
        // 1x2x2x1 input, 2x2 filter, multiplier 2, VALID -> 1x1x1x2.
        let p = DepthwiseConv2dParams::new(
            [1, 2, 2, 1],
            [1, 2, 2, 2],
            2,
            [1, 1],
            [1, 1],
            Padding::Valid,
        )
        .unwrap();
        let input = [1.0f32, 2.0, 3.0, 4.0];
        // filter[(fy*2+fx)*2 + oc]
        let filter = [1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0];
        let mut out = [0.0; 2];
        depthwise_conv_2d_f32(
            &p,
            ActivationRangeF32::NONE,
            &input,
            &filter,
            Some(&[0.5, 0.0]),
            &mut out,
        );
        assert_eq!(out, [10.5, 4.0]);
        // Same in int8 with unit scales and zero points.
        let q = ConvQuant::prepare(
            TensorQuant::new(1.0, 0),
            &[1.0],
            TensorQuant::new(1.0, 0),
            FusedActivation::None,
            &mut [],
        )
        .unwrap();
        let mut out8 = [0i8; 2];
        depthwise_conv_2d_i8(
            &p,
            &q,
            &[1, 2, 3, 4],
            &[1, 0, 1, 0, 1, 0, 1, 1],
            Some(&[1, 0]),
            &mut out8,
        );
        assert_eq!(out8, [11, 4]);
    }

    #[test]
    fn rejects_bad_filter() {
        assert!(DepthwiseConv2dParams::new(
            [1, 4, 4, 3],
            [1, 3, 3, 5],
            2,
            [1, 1],
            [1, 1],
            Padding::Same
        )
        .is_err());
    }

    #[test]
    fn int8_tracks_f32_on_random_data() {
        let mut rng = Lcg::new(11);
        let p = DepthwiseConv2dParams::new(
            [1, 7, 6, 3],
            [1, 3, 3, 6],
            2,
            [2, 2],
            [2, 1],
            Padding::Same,
        )
        .unwrap();
        assert_eq!(p.output_len(), 72);
        let (in_q, out_q) = (TensorQuant::new(0.03, 4), TensorQuant::new(0.04, -7));
        let scales = [0.01f32, 0.02, 0.03, 0.015, 0.025, 0.012];
        let input_f: [f32; 126] = core::array::from_fn(|_| rng.uniform(-3.0, 3.0));
        let input_q = quantize_all::<126>(&input_f, in_q);
        let filter_q: [i8; 54] = core::array::from_fn(|_| rng.int8());
        let bias_q: [i32; 6] = core::array::from_fn(|_| rng.range_i32(-300, 300));
        let filter_f: [f32; 54] = core::array::from_fn(|i| f32::from(filter_q[i]) * scales[i % 6]);
        let bias_f: [f32; 6] = core::array::from_fn(|c| bias_q[c] as f32 * in_q.scale * scales[c]);
        let mut out_f = [0.0f32; 72];
        let input_dq = dequantize_all::<126>(&input_q, in_q);
        depthwise_conv_2d_f32(
            &p,
            ActivationRangeF32::NONE,
            &input_dq,
            &filter_f,
            Some(&bias_f),
            &mut out_f,
        );
        let mut storage = [QuantizedMultiplier::ZERO; 6];
        let q =
            ConvQuant::prepare(in_q, &scales, out_q, FusedActivation::None, &mut storage).unwrap();
        let mut out8 = [0i8; 72];
        depthwise_conv_2d_i8(&p, &q, &input_q, &filter_q, Some(&bias_q), &mut out8);
        assert_close_i8(&out8, &out_f, out_q, 1);
    }
}
