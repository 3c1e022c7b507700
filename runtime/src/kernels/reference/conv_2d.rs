//! CONV_2D: NHWC input, OHWI filter, optional bias, stride, dilation, SAME/VALID or
//! explicit padding, optional groups (filter input depth dividing input depth).
//!
//! int8 follows TFLM's `reference_integer_ops::ConvPerChannel`, which TFLM also uses
//! for per-tensor filters (the single scale is broadcast to every output channel).
//!
//! Overflow: each product `filter * (input - input_zp)` is at most `128 * 255 < 2^15`
//! in magnitude, so the `i32` accumulator is exact for up to `2^16` products per output
//! (`filter_h * filter_w * filter_input_depth`) plus an `i32` bias of similar size, far
//! beyond any MCU model. Beyond that the sum wraps, like the C++ in practice.

use crate::activation::{ActivationRange, ActivationRangeF32, FusedActivation};
use crate::error::{Error, Result};
use crate::kernels::reference::add::AddParams;
use crate::padding::{Padding, Window2d};
use crate::quant::{conv_channel_multiplier, ChannelMultipliers, QuantizedMultiplier, TensorQuant};
use crate::shape::checked_product;
use crate::unchecked::get;

/// Shapes and window of one CONV_2D call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Batch size `N`.
    pub batches: usize,
    /// Input channels `C_in`.
    pub input_depth: usize,
    /// Channels per filter (`C_in / groups`); equals `input_depth` without groups.
    pub filter_input_depth: usize,
    /// Output channels `C_out` (filter dimension 0).
    pub output_depth: usize,
    /// Spatial geometry (sizes, stride, dilation, padding).
    pub window: Window2d,
}

impl Conv2dParams {
    /// Params from an NHWC input shape, an OHWI filter shape and TFLite attributes.
    pub fn new(
        input_shape: [usize; 4],
        filter_shape: [usize; 4],
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
        Self::with_window(n, c, filter_shape, window)
    }

    /// Params from an explicit window (e.g. ONNX pads); `filter_shape` is OHWI.
    pub fn with_window(
        batches: usize,
        input_depth: usize,
        filter_shape: [usize; 4],
        window: Window2d,
    ) -> Result<Self> {
        let [out_c, fh, fw, filter_in] = filter_shape;
        if batches == 0 || input_depth == 0 || out_c == 0 || filter_in == 0 {
            return Err(Error::ShapeMismatch);
        }
        if [fh, fw] != window.filter || !input_depth.is_multiple_of(filter_in) {
            return Err(Error::ShapeMismatch);
        }
        let groups = input_depth / filter_in;
        if out_c % groups != 0 {
            return Err(Error::ShapeMismatch);
        }
        Ok(Self {
            batches,
            input_depth,
            filter_input_depth: filter_in,
            output_depth: out_c,
            window,
        })
    }

    /// The NHWC output shape.
    pub fn output_shape(&self) -> [usize; 4] {
        [
            self.batches,
            self.window.output[0],
            self.window.output[1],
            self.output_depth,
        ]
    }

    /// Number of input elements the kernel reads.
    pub fn input_len(&self) -> usize {
        self.batches * self.window.input[0] * self.window.input[1] * self.input_depth
    }

    /// Number of filter elements (OHWI).
    pub fn filter_len(&self) -> usize {
        self.output_depth * self.window.filter[0] * self.window.filter[1] * self.filter_input_depth
    }

    /// Number of output elements the kernel writes.
    pub fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }
}

/// Quantization of a conv-like op (conv_2d, depthwise_conv_2d): zero-point offsets,
/// per-channel or per-tensor output multipliers and the fused-activation clamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvQuant<'a> {
    /// `-input_zero_point`, added to every input value.
    pub input_offset: i32,
    /// `output_zero_point`, added after requantization.
    pub output_offset: i32,
    /// Output multiplier per output channel (or one for all).
    pub multipliers: ChannelMultipliers<'a>,
    /// Clamp range from the fused activation and int8 limits.
    pub activation: ActivationRange,
}

impl<'a> ConvQuant<'a> {
    /// TFLM's `PopulateConvolutionQuantizationParams`: multiplier of channel `c` is
    /// `QuantizeMultiplier((f64)in_scale * (f64)filter_scale[c] / (f64)out_scale)`.
    ///
    /// With one filter scale the result is [`ChannelMultipliers::PerTensor`] and
    /// `storage` may be empty; otherwise `storage` must have one slot per filter scale
    /// and receives the table. Filters must be symmetric (zero point 0), as TFLite int8.
    pub fn prepare(
        input: TensorQuant,
        filter_scales: &[f32],
        output: TensorQuant,
        activation: FusedActivation,
        storage: &'a mut [QuantizedMultiplier],
    ) -> Result<Self> {
        let input = input.validate()?;
        let output = output.validate()?;
        let multipliers = match filter_scales {
            [] => return Err(Error::BufferLength),
            [single] => ChannelMultipliers::PerTensor(conv_channel_multiplier(
                input.scale,
                *single,
                output.scale,
            )?),
            many => {
                crate::quant::conv_channel_multipliers(input.scale, many, output.scale, storage)?;
                ChannelMultipliers::PerChannel(storage)
            }
        };
        Ok(Self {
            input_offset: -input.zero_point,
            output_offset: output.zero_point,
            multipliers,
            activation: activation.range_i8(output.scale, output.zero_point)?,
        })
    }
}

/// Calls `f(filter_y, filter_x, in_y, in_x)` for every filter tap of output position
/// `(out_y, out_x)` that lands inside the input (TFLM skips padded taps). Guarantees
/// `filter_y < filter[0]`, `filter_x < filter[1]`, `in_y < input[0]`, `in_x < input[1]`
/// for any window, which the kernels' unchecked indexing relies on.
#[inline]
pub(crate) fn for_each_tap(
    w: &Window2d,
    out_y: usize,
    out_x: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let y0 = w.origin(0, out_y);
    let x0 = w.origin(1, out_x);
    for fy in 0..w.filter[0] {
        // Wrapping arithmetic: whatever the params, only taps inside the input pass.
        let in_y = y0.wrapping_add(w.dilation[0].wrapping_mul(fy) as isize);
        if in_y < 0 || in_y >= w.input[0] as isize {
            continue;
        }
        for fx in 0..w.filter[1] {
            let in_x = x0.wrapping_add(w.dilation[1].wrapping_mul(fx) as isize);
            if in_x < 0 || in_x >= w.input[1] as isize {
                continue;
            }
            f(fy, fx, in_y as usize, in_x as usize);
        }
    }
}

/// Slice lengths one CONV_2D call needs, derived from `p` with overflow-checked
/// arithmetic: `(groups, input, filter, output)`. `None` when the params describe no
/// valid call (zero filter depth, groups that do not divide the channels, overflow).
pub(crate) fn conv_lens(p: &Conv2dParams) -> Option<(usize, usize, usize, usize)> {
    let w = &p.window;
    let fin = p.filter_input_depth;
    let groups = p.input_depth.checked_div(fin)?;
    if groups.checked_mul(fin)? != p.input_depth || p.output_depth.checked_rem(groups)? != 0 {
        return None;
    }
    let input = checked_product(&[p.batches, w.input[0], w.input[1], p.input_depth])?;
    let filter = checked_product(&[p.output_depth, w.filter[0], w.filter[1], fin])?;
    let output = checked_product(&[p.batches, w.output[0], w.output[1], p.output_depth])?;
    Some((groups, input, filter, output))
}

/// Shared loop nest of the int8 and f32 conv: `finish(acc, bias_of_oc, oc, previous)` →
/// output element, where `previous` is what the output slot held before (the skip value
/// of an in-place residual add).
/// Writes nothing unless the slice lengths are the ones [`conv_lens`] derives and the
/// bias (if any) has `p.output_depth` entries.
#[inline]
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
fn conv_loop<T: Copy, B: Copy, A>(
    p: &Conv2dParams,
    input: &[T],
    filter: &[T],
    bias: Option<&[B]>,
    mut zero: impl FnMut() -> A,
    mut mac: impl FnMut(&mut A, T, T),
    mut finish: impl FnMut(A, Option<B>, usize, T) -> T,
    output: &mut [T],
) {
    let Some((groups, input_len, filter_len, output_len)) = conv_lens(p) else {
        return;
    };
    if input.len() != input_len
        || filter.len() != filter_len
        || output.len() != output_len
        || bias.is_some_and(|b| b.len() != p.output_depth)
    {
        return;
    }
    let w = &p.window;
    let [in_h, in_w] = w.input;
    let [f_h, f_w] = w.filter;
    let [out_h, out_w] = w.output;
    let fin = p.filter_input_depth;
    let filters_per_group = p.output_depth / groups.max(1);
    let mut outputs = output.iter_mut();
    for n in 0..p.batches {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for group in 0..groups {
                    for k in 0..filters_per_group {
                        let oc = group * filters_per_group + k;
                        let mut acc = zero();
                        for_each_tap(w, oy, ox, |fy, fx, iy, ix| {
                            let in_base =
                                ((n * in_h + iy) * in_w + ix) * p.input_depth + group * fin;
                            let f_base = ((oc * f_h + fy) * f_w + fx) * fin;
                            for ic in 0..fin {
                                // SAFETY: n < batches, iy < in_h, ix < in_w (for_each_tap),
                                // group * fin + ic < groups * fin == input_depth, so the input
                                // index is below batches*in_h*in_w*input_depth == input.len();
                                // oc < output_depth, fy < f_h, fx < f_w, ic < fin bound the
                                // filter index by filter.len() the same way (conv_lens).
                                let (x, f) =
                                    unsafe { (get(input, in_base + ic), get(filter, f_base + ic)) };
                                mac(&mut acc, x, f);
                            }
                        });
                        // SAFETY: oc < groups * filters_per_group == output_depth == b.len().
                        let b = bias.map(|b| unsafe { get(b, oc) });
                        // The loops visit exactly output.len() positions, so this never ends early.
                        if let Some(slot) = outputs.next() {
                            *slot = finish(acc, b, oc, *slot);
                        }
                    }
                }
            }
        }
    }
}

/// int8 CONV_2D, bit-exact with TFLM's `ConvPerChannel`.
///
/// Preconditions: `input.len() == p.input_len()`, `filter.len() == p.filter_len()`,
/// `output.len() == p.output_len()`, `bias` (if any) has `p.output_depth` entries and
/// `q.multipliers` covers `p.output_depth` channels; otherwise nothing is written.
pub fn conv_2d_i8(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
) {
    conv_i8_with_epilogue(p, q, input, filter, bias, output, |value, _| value);
}

/// The int8 conv loop; `epilogue(conv_result, previous_output_value)` gives each stored
/// element.
fn conv_i8_with_epilogue(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
    mut epilogue: impl FnMut(i8, i8) -> i8,
) {
    if !q.multipliers.covers(p.output_depth) {
        return;
    }
    let input_offset = q.input_offset;
    conv_loop(
        p,
        input,
        filter,
        bias,
        || 0i32,
        |acc, x, f| {
            *acc = acc.wrapping_add(i32::from(f) * (i32::from(x) + input_offset));
        },
        |acc, b, oc, previous| {
            let acc = match b {
                Some(b) => acc.wrapping_add(b),
                None => acc,
            };
            let scaled = q
                .multipliers
                .get(oc)
                .apply(acc)
                .wrapping_add(q.output_offset);
            epilogue(q.activation.clamp_i8(scaled), previous)
        },
        output,
    );
}

/// A residual ADD fused into a convolution's epilogue: each conv result (requantized and
/// clamped exactly as [`conv_2d_i8`] stores it) is added to the skip tensor's element at
/// the same position with the ADD's own parameters, so the conv result never needs a
/// tensor of its own. Bit-exact with CONV_2D followed by ADD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidualAdd {
    /// The ADD's quantization (prepared with the conv result and the skip tensor as its
    /// operands, in the ADD's order).
    pub add: AddParams,
    /// The conv result is the ADD's first operand (else the skip tensor is).
    pub conv_is_first: bool,
}

impl ResidualAdd {
    /// The ADD of one conv result with its skip value.
    #[inline]
    pub(crate) fn apply(&self, conv: i8, skip: i8) -> i8 {
        if self.conv_is_first {
            self.add.add_one(conv, skip)
        } else {
            self.add.add_one(skip, conv)
        }
    }
}

/// int8 CONV_2D + residual ADD: `output = add(conv(input), skip)`. Preconditions as
/// [`conv_2d_i8`], and `skip.len() == output.len()`; otherwise nothing is written.
#[allow(clippy::too_many_arguments)]
pub fn conv_2d_i8_add(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    r: &ResidualAdd,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    skip: &[i8],
    output: &mut [i8],
) {
    if skip.len() != output.len() {
        return;
    }
    // The conv visits output positions in order, once each, so the skip values line up.
    let mut skips = skip.iter();
    conv_i8_with_epilogue(p, q, input, filter, bias, output, |value, _| {
        r.apply(value, skips.next().copied().unwrap_or(0))
    });
}

/// [`conv_2d_i8_add`] writing over the skip tensor: `inout` holds the skip values on
/// entry and the sums on exit. Each element is read just before it is overwritten.
pub fn conv_2d_i8_add_in_place(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    r: &ResidualAdd,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    inout: &mut [i8],
) {
    conv_i8_with_epilogue(p, q, input, filter, bias, inout, |value, skip| {
        r.apply(value, skip)
    });
}

/// f32 CONV_2D: TFLM's float reference (sum in filter-y, filter-x, channel order, then
/// bias, then the activation clamp). Same preconditions as [`conv_2d_i8`].
pub fn conv_2d_f32(
    p: &Conv2dParams,
    activation: ActivationRangeF32,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
    conv_f32_with_epilogue(p, activation, input, filter, bias, output, |value, _| value);
}

fn conv_f32_with_epilogue(
    p: &Conv2dParams,
    activation: ActivationRangeF32,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
    mut epilogue: impl FnMut(f32, f32) -> f32,
) {
    conv_loop(
        p,
        input,
        filter,
        bias,
        || 0.0f32,
        |acc, x, f| *acc += x * f,
        |acc, b, _, previous| epilogue(activation.apply(acc + b.unwrap_or(0.0)), previous),
        output,
    );
}

/// f32 CONV_2D + residual ADD with the ADD's activation `add_activation`:
/// `output = clamp(conv(input) + skip)`. Preconditions as [`conv_2d_i8_add`].
#[allow(clippy::too_many_arguments)]
pub fn conv_2d_f32_add(
    p: &Conv2dParams,
    activation: ActivationRangeF32,
    add_activation: ActivationRangeF32,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    skip: &[f32],
    output: &mut [f32],
) {
    if skip.len() != output.len() {
        return;
    }
    let mut skips = skip.iter();
    conv_f32_with_epilogue(p, activation, input, filter, bias, output, |value, _| {
        add_activation.apply(value + skips.next().copied().unwrap_or(0.0))
    });
}

/// [`conv_2d_f32_add`] writing over the skip tensor (`inout`).
pub fn conv_2d_f32_add_in_place(
    p: &Conv2dParams,
    activation: ActivationRangeF32,
    add_activation: ActivationRangeF32,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    inout: &mut [f32],
) {
    conv_f32_with_epilogue(p, activation, input, filter, bias, inout, |value, skip| {
        add_activation.apply(value + skip)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::test_util::{
        assert_close_i8, dequantize_all, quantize_all, Lcg,
    };

    #[test]
    fn hand_checked_1x1_and_3x3() {
        // 1x3x3x1 input, one 3x3 filter of ones, VALID -> sum of all inputs.
        let p =
            Conv2dParams::new([1, 3, 3, 1], [1, 3, 3, 1], [1, 1], [1, 1], Padding::Valid).unwrap();
        assert_eq!(p.output_shape(), [1, 1, 1, 1]);
        let input: [i8; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        let filter = [1i8; 9];
        // input zp 1 -> values 0..8 sum 36; bias 4 -> 40; scale 1*1/2 -> 20; zp 3 -> 23.
        let q = ConvQuant::prepare(
            TensorQuant::new(1.0, 1),
            &[1.0],
            TensorQuant::new(2.0, 3),
            FusedActivation::None,
            &mut [],
        )
        .unwrap();
        let mut out = [0i8; 1];
        conv_2d_i8(&p, &q, &input, &filter, Some(&[4]), &mut out);
        assert_eq!(out, [23]);
    }

    #[test]
    fn same_padding_skips_padded_taps_and_per_channel() {
        // 1x2x2x1 input, 2 output channels of 3x3 filters, SAME, stride 1.
        let p =
            Conv2dParams::new([1, 2, 2, 1], [2, 3, 3, 1], [1, 1], [1, 1], Padding::Same).unwrap();
        assert_eq!(p.output_shape(), [1, 2, 2, 2]);
        let input = [1i8, 2, 3, 4];
        let mut filter = [0i8; 18];
        filter[4] = 1; // channel 0: centre tap -> identity
        for v in &mut filter[9..] {
            *v = 1; // channel 1: box filter -> sum of in-bounds neighbours
        }
        let mut storage = [QuantizedMultiplier::ZERO; 2];
        let q = ConvQuant::prepare(
            TensorQuant::new(1.0, 0),
            &[1.0, 0.5],
            TensorQuant::new(1.0, 0),
            FusedActivation::None,
            &mut storage,
        )
        .unwrap();
        let mut out = [0i8; 8];
        conv_2d_i8(&p, &q, &input, &filter, None, &mut out);
        // Box sums are 10 everywhere (all 4 inputs in range), halved -> 5.
        assert_eq!(out, [1, 5, 2, 5, 3, 5, 4, 5]);
    }

    #[test]
    fn dilation_and_stride() {
        // 1x5x5x1, 2x2 filter dilated by 2, stride 2, VALID -> out 2x2.
        let p =
            Conv2dParams::new([1, 5, 5, 1], [1, 2, 2, 1], [2, 2], [2, 2], Padding::Valid).unwrap();
        assert_eq!(p.output_shape(), [1, 2, 2, 1]);
        let input: [f32; 25] = core::array::from_fn(|i| i as f32);
        let filter = [1.0f32, 0.0, 0.0, 1.0]; // top-left + bottom-right taps
        let mut out = [0.0f32; 4];
        conv_2d_f32(
            &p,
            ActivationRangeF32::NONE,
            &input,
            &filter,
            None,
            &mut out,
        );
        // out(0,0) = in(0,0) + in(2,2) = 0 + 12
        assert_eq!(out, [12.0, 16.0, 32.0, 36.0]);
    }

    #[test]
    fn grouped_conv_f32() {
        // 2 groups: input channels [a, b], each output channel sees one input channel.
        let p =
            Conv2dParams::new([1, 1, 1, 2], [2, 1, 1, 1], [1, 1], [1, 1], Padding::Valid).unwrap();
        let mut out = [0.0f32; 2];
        conv_2d_f32(
            &p,
            ActivationRangeF32::NONE,
            &[3.0, 5.0],
            &[2.0, 10.0],
            Some(&[1.0, 1.0]),
            &mut out,
        );
        assert_eq!(out, [7.0, 51.0]);
    }

    #[test]
    fn int8_tracks_f32_on_random_data() {
        let mut rng = Lcg::new(7);
        let p =
            Conv2dParams::new([2, 6, 5, 3], [4, 3, 3, 3], [2, 1], [1, 1], Padding::Same).unwrap();
        let (in_q, out_q) = (TensorQuant::new(0.02, -5), TensorQuant::new(0.05, 3));
        let filter_scales = [0.01f32, 0.02, 0.015, 0.03];
        let input_f: [f32; 180] = core::array::from_fn(|_| rng.uniform(-2.0, 2.0));
        let input_q = quantize_all::<180>(&input_f, in_q);
        let filter_q: [i8; 108] = core::array::from_fn(|_| rng.int8());
        let bias_q: [i32; 4] = core::array::from_fn(|_| rng.range_i32(-500, 500));
        // Float reference on the dequantized int8 data.
        let filter_f: [f32; 108] =
            core::array::from_fn(|i| f32::from(filter_q[i]) * filter_scales[i / 27]);
        let bias_f: [f32; 4] =
            core::array::from_fn(|c| bias_q[c] as f32 * in_q.scale * filter_scales[c]);
        let input_dq = dequantize_all::<180>(&input_q, in_q);
        let mut out_f = [0.0f32; 120];
        conv_2d_f32(
            &p,
            FusedActivation::Relu.range_f32(),
            &input_dq,
            &filter_f,
            Some(&bias_f),
            &mut out_f,
        );

        let mut storage = [QuantizedMultiplier::ZERO; 4];
        let q = ConvQuant::prepare(
            in_q,
            &filter_scales,
            out_q,
            FusedActivation::Relu,
            &mut storage,
        )
        .unwrap();
        let mut out_q8 = [0i8; 120];
        conv_2d_i8(&p, &q, &input_q, &filter_q, Some(&bias_q), &mut out_q8);
        assert_close_i8(&out_q8, &out_f, out_q, 1);
    }
}
