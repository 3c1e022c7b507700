//! TRANSPOSE_CONV (ONNX ConvTranspose): NHWC input, OHWI filter (TFLite's layout:
//! `[out_channels, kh, kw, in_channels]`), optional bias, stride, dilation, and the
//! padding that is cut from the full transposed-conv output.
//!
//! TFLM's reference kernels scatter: every input pixel adds `input * filter` into the
//! output pixels it reaches (`out = in * stride - pad + k * dilation`), the int8 one into
//! an int32 scratch buffer the size of the output. This kernel gathers instead and needs
//! no scratch memory: each output pixel sums over the filter taps `k` for which
//! `(out + pad - k * dilation)` is a non-negative multiple of the stride whose quotient is
//! an input position. The set of products per output element is the same, so:
//!
//! * int8 is bit-exact with `reference_integer_ops::TransposeConv` (int32 sums wrap and
//!   are associative; then bias, per-channel `MultiplyByQuantizedMultiplier`, output
//!   offset and the activation clamp, as TFLM);
//! * f32 adds the products in TFLM's order as well — ascending input row, input column,
//!   input channel, i.e. descending filter row and column — starting from 0.0, then the
//!   bias, then the clamp, so it matches TFLM's float kernel exactly too.
//!
//! SAME / VALID padding is computed as TFLM's TRANSPOSE_CONV Prepare does: the forward
//! convolution's padding for an input of the *output's* size
//! (`ComputePaddingHeightWidth`), which must map the output back to the input's size.

use crate::activation::ActivationRangeF32;
use crate::error::{Error, Result};
use crate::kernels::reference::conv_2d::ConvQuant;
use crate::padding::{compute_out_size, compute_padding_with_offset, Padding};
use crate::shape::checked_product;
use crate::unchecked::get;

/// Shapes, stride, dilation and padding of one TRANSPOSE_CONV call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransposeConv2dParams {
    /// Batch size `N`.
    pub batches: usize,
    /// Input channels (filter dimension 3).
    pub input_depth: usize,
    /// Output channels (filter dimension 0).
    pub output_depth: usize,
    /// Input spatial size `[h, w]`.
    pub input: [usize; 2],
    /// Output spatial size `[h, w]`.
    pub output: [usize; 2],
    /// Filter spatial size `[h, w]`.
    pub filter: [usize; 2],
    /// Stride `[h, w]`, at least 1.
    pub stride: [usize; 2],
    /// Filter dilation `[h, w]`, at least 1.
    pub dilation: [usize; 2],
    /// Rows / columns cut from the start of the full output `[top, left]`: output pixel
    /// `o` is full-output pixel `o + pad`.
    pub pad: [usize; 2],
}

impl TransposeConv2dParams {
    /// Params from an NHWC input shape, an OHWI filter shape, the NHWC output shape and
    /// TFLite's SAME / VALID padding, with TFLM's padding arithmetic. The output must be
    /// one that padding maps back onto the input (`ShapeMismatch` otherwise).
    pub fn new(
        input_shape: [usize; 4],
        filter_shape: [usize; 4],
        output_shape: [usize; 4],
        stride: [usize; 2],
        dilation: [usize; 2],
        padding: Padding,
    ) -> Result<Self> {
        let mut pad = [0; 2];
        for axis in 0..2 {
            let (out, inp, k) = (
                output_shape[axis + 1],
                input_shape[axis + 1],
                filter_shape[axis + 1],
            );
            let forward = compute_out_size(padding, out, k, stride[axis], dilation[axis])?;
            if forward != inp {
                return Err(Error::ShapeMismatch);
            }
            pad[axis] =
                compute_padding_with_offset(stride[axis], dilation[axis], out, k, forward).0;
        }
        Self::with_padding(
            input_shape,
            filter_shape,
            output_shape,
            stride,
            dilation,
            pad,
        )
    }

    /// Params with explicit top / left padding (ONNX `pads` begin values); the bottom /
    /// right padding is whatever the output shape leaves (rows past the full output only
    /// receive the bias, like ONNX's `output_padding`).
    pub fn with_padding(
        input_shape: [usize; 4],
        filter_shape: [usize; 4],
        output_shape: [usize; 4],
        stride: [usize; 2],
        dilation: [usize; 2],
        pad: [usize; 2],
    ) -> Result<Self> {
        let [n, in_h, in_w, in_c] = input_shape;
        let [out_c, k_h, k_w, filter_in] = filter_shape;
        let [out_n, out_h, out_w, out_depth] = output_shape;
        if stride.contains(&0) || dilation.contains(&0) || k_h == 0 || k_w == 0 {
            return Err(Error::InvalidWindow);
        }
        if n == 0 || in_c == 0 || out_c == 0 || in_h == 0 || in_w == 0 || out_h == 0 || out_w == 0 {
            return Err(Error::ShapeMismatch);
        }
        if filter_in != in_c || out_n != n || out_depth != out_c {
            return Err(Error::ShapeMismatch);
        }
        let p = Self {
            batches: n,
            input_depth: in_c,
            output_depth: out_c,
            input: [in_h, in_w],
            output: [out_h, out_w],
            filter: [k_h, k_w],
            stride,
            dilation,
            pad,
        };
        // Every slice length and tap coordinate must be representable.
        if lens(&p).is_none() {
            return Err(Error::ShapeMismatch);
        }
        Ok(p)
    }

    /// The NHWC output shape.
    pub fn output_shape(&self) -> [usize; 4] {
        [
            self.batches,
            self.output[0],
            self.output[1],
            self.output_depth,
        ]
    }

    /// Number of input elements the kernel reads.
    pub fn input_len(&self) -> usize {
        self.batches * self.input[0] * self.input[1] * self.input_depth
    }

    /// Number of filter elements (OHWI).
    pub fn filter_len(&self) -> usize {
        self.output_depth * self.filter[0] * self.filter[1] * self.input_depth
    }

    /// Number of output elements the kernel writes.
    pub fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }
}

/// `(input, filter, output)` slice lengths, with overflow-checked arithmetic; `None`
/// when the params describe no representable call (including tap coordinates
/// `out + pad` and `(k - 1) * dilation` that would not fit `isize`).
fn lens(p: &TransposeConv2dParams) -> Option<(usize, usize, usize)> {
    for axis in 0..2 {
        let reach = p.output[axis].checked_add(p.pad[axis])?;
        let span = p.filter[axis]
            .checked_sub(1)?
            .checked_mul(p.dilation[axis])?;
        if reach > isize::MAX as usize || span > isize::MAX as usize {
            return None;
        }
    }
    let [in_h, in_w] = p.input;
    let [out_h, out_w] = p.output;
    let [k_h, k_w] = p.filter;
    Some((
        checked_product(&[p.batches, in_h, in_w, p.input_depth])?,
        checked_product(&[p.output_depth, k_h, k_w, p.input_depth])?,
        checked_product(&[p.batches, out_h, out_w, p.output_depth])?,
    ))
}

/// The input position that filter tap `k` feeds into output position `out` along
/// `axis`, if any: `(out + pad - k * dilation) / stride` when that is an exact,
/// in-range quotient. Always `< input[axis]` when `Some`.
#[inline]
fn source(p: &TransposeConv2dParams, axis: usize, out: usize, k: usize) -> Option<usize> {
    let (stride, dilation, pad, size) =
        (p.stride[axis], p.dilation[axis], p.pad[axis], p.input[axis]);
    // Wrapping arithmetic: `lens` keeps these in range; whatever the params, only exact
    // in-range positions pass the checks below.
    let t = (out.wrapping_add(pad) as isize).wrapping_sub(k.wrapping_mul(dilation) as isize);
    if t < 0 {
        return None;
    }
    let t = t as usize;
    let i = t.checked_div(stride)?;
    (i.wrapping_mul(stride) == t && i < size).then_some(i)
}

/// Shared gather loop of the int8 and f32 kernels: `finish(acc, bias_of_oc, oc)` →
/// output element. Writes nothing unless the slices have the lengths [`lens`] derives
/// and the bias (if any) has `p.output_depth` entries.
#[inline]
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
fn gather_loop<T: Copy, B: Copy, A>(
    p: &TransposeConv2dParams,
    input: &[T],
    filter: &[T],
    bias: Option<&[B]>,
    mut zero: impl FnMut() -> A,
    mut mac: impl FnMut(&mut A, T, T),
    mut finish: impl FnMut(A, Option<B>, usize) -> T,
    output: &mut [T],
) {
    let Some((input_len, filter_len, output_len)) = lens(p) else {
        return;
    };
    if input.len() != input_len
        || filter.len() != filter_len
        || output.len() != output_len
        || bias.is_some_and(|b| b.len() != p.output_depth)
    {
        return;
    }
    let [in_h, in_w] = p.input;
    let [out_h, out_w] = p.output;
    let [k_h, k_w] = p.filter;
    let depth = p.input_depth;
    let mut outputs = output.iter_mut();
    for n in 0..p.batches {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for oc in 0..p.output_depth {
                    let mut acc = zero();
                    // Descending taps = ascending input positions: TFLM's summation order.
                    for ky in (0..k_h).rev() {
                        let Some(iy) = source(p, 0, oy, ky) else {
                            continue;
                        };
                        for kx in (0..k_w).rev() {
                            let Some(ix) = source(p, 1, ox, kx) else {
                                continue;
                            };
                            let in_base = ((n * in_h + iy) * in_w + ix) * depth;
                            let f_base = ((oc * k_h + ky) * k_w + kx) * depth;
                            for ic in 0..depth {
                                // SAFETY: n < batches, iy < in_h, ix < in_w (`source`) and
                                // ic < depth bound the input index below
                                // batches*in_h*in_w*depth == input.len(); oc < output_depth,
                                // ky < k_h, kx < k_w, ic < depth bound the filter index
                                // below filter.len() the same way (`lens`).
                                let (x, f) =
                                    unsafe { (get(input, in_base + ic), get(filter, f_base + ic)) };
                                mac(&mut acc, x, f);
                            }
                        }
                    }
                    // SAFETY: oc < output_depth == b.len(), checked on entry.
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

/// int8 TRANSPOSE_CONV, bit-exact with TFLM's `reference_integer_ops::TransposeConv`
/// (quantization from [`ConvQuant::prepare`], TFLM's
/// `PopulateConvolutionQuantizationParams`; weights symmetric, per channel on axis 0 or
/// per tensor).
///
/// Preconditions: `input.len() == p.input_len()`, `filter.len() == p.filter_len()`,
/// `output.len() == p.output_len()`, `bias` (if any) has `p.output_depth` entries and
/// `q.multipliers` covers `p.output_depth` channels; otherwise nothing is written.
pub fn transpose_conv_2d_i8(
    p: &TransposeConv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
) {
    if !q.multipliers.covers(p.output_depth) {
        return;
    }
    let input_offset = q.input_offset;
    gather_loop(
        p,
        input,
        filter,
        bias,
        || 0i32,
        |acc, x, f| {
            *acc = acc.wrapping_add((i32::from(x) + input_offset).wrapping_mul(i32::from(f)));
        },
        |acc, b, oc| {
            let acc = match b {
                Some(b) => acc.wrapping_add(b),
                None => acc,
            };
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

/// f32 TRANSPOSE_CONV: the products summed in TFLM's order, then the bias, then the
/// activation clamp. Same preconditions as [`transpose_conv_2d_i8`].
pub fn transpose_conv_2d_f32(
    p: &TransposeConv2dParams,
    activation: ActivationRangeF32,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
    gather_loop(
        p,
        input,
        filter,
        bias,
        || 0.0f32,
        |acc, x, f| *acc += x * f,
        |acc, b, _| {
            activation.apply(match b {
                Some(b) => acc + b,
                None => acc,
            })
        },
        output,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::FusedActivation;
    use crate::kernels::reference::test_util::{assert_close_i8, dequantize_all, Lcg};
    use crate::quant::{QuantizedMultiplier, TensorQuant};
    use proptest::prelude::*;

    /// TFLM's scatter formulation, written out plainly: the reference the gather
    /// kernels must reproduce. f32 accumulates in the output in the scatter's order.
    fn scatter_f32(p: &TransposeConv2dParams, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        let mut out = vec![0.0f32; p.output_len()];
        let [in_h, in_w] = p.input;
        let [out_h, out_w] = p.output;
        let [k_h, k_w] = p.filter;
        let (cin, cout) = (p.input_depth, p.output_depth);
        for n in 0..p.batches {
            for iy in 0..in_h {
                for ix in 0..in_w {
                    for ic in 0..cin {
                        for ky in 0..k_h {
                            for kx in 0..k_w {
                                for oc in 0..cout {
                                    let oy = (iy * p.stride[0] + ky * p.dilation[0]) as isize
                                        - p.pad[0] as isize;
                                    let ox = (ix * p.stride[1] + kx * p.dilation[1]) as isize
                                        - p.pad[1] as isize;
                                    if oy < 0
                                        || ox < 0
                                        || oy >= out_h as isize
                                        || ox >= out_w as isize
                                    {
                                        continue;
                                    }
                                    let (oy, ox) = (oy as usize, ox as usize);
                                    let xv = x[((n * in_h + iy) * in_w + ix) * cin + ic];
                                    let wv = w[((oc * k_h + ky) * k_w + kx) * cin + ic];
                                    out[((n * out_h + oy) * out_w + ox) * cout + oc] += xv * wv;
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(b) = b {
            for (i, v) in out.iter_mut().enumerate() {
                *v += b[i % cout];
            }
        }
        out
    }

    /// The int8 scatter: int32 sums, then TFLM's epilogue.
    fn scatter_i8(
        p: &TransposeConv2dParams,
        q: &ConvQuant<'_>,
        x: &[i8],
        w: &[i8],
        b: Option<&[i32]>,
    ) -> Vec<i8> {
        let xf: Vec<f32> = x
            .iter()
            .map(|&v| (i32::from(v) + q.input_offset) as f32)
            .collect();
        let wf: Vec<f32> = w.iter().map(|&v| f32::from(v)).collect();
        // Small enough test shapes keep every partial sum exact in f32 (< 2^24).
        let sums = scatter_f32(p, &xf, &wf, None);
        sums.iter()
            .enumerate()
            .map(|(i, &s)| {
                let oc = i % p.output_depth;
                let acc = s as i32 + b.map_or(0, |b| b[oc]);
                let v = q.multipliers.get(oc).apply(acc) + q.output_offset;
                q.activation.clamp_i8(v)
            })
            .collect()
    }

    #[test]
    fn hand_checked_stride_2() {
        // 1x2x2x1 input, 3x3 filter of ones, stride 2, VALID: out 5x5.
        let p = TransposeConv2dParams::new(
            [1, 2, 2, 1],
            [1, 3, 3, 1],
            [1, 5, 5, 1],
            [2, 2],
            [1, 1],
            Padding::Valid,
        )
        .unwrap();
        assert_eq!(p.pad, [0, 0]);
        let mut y = [0.0f32; 25];
        transpose_conv_2d_f32(
            &p,
            ActivationRangeF32::NONE,
            &[1.0, 2.0, 3.0, 4.0],
            &[1.0; 9],
            None,
            &mut y,
        );
        #[rustfmt::skip]
        let want = [
            1.0, 1.0, 3.0, 2.0, 2.0,
            1.0, 1.0, 3.0, 2.0, 2.0,
            4.0, 4.0, 10.0, 6.0, 6.0,
            3.0, 3.0, 7.0, 4.0, 4.0,
            3.0, 3.0, 7.0, 4.0, 4.0,
        ];
        assert_eq!(y, want);
        // SAME, output 4x4: forward conv of 4 by 3 with stride 2 pads 1 in total, 0 before.
        let p = TransposeConv2dParams::new(
            [1, 2, 2, 1],
            [1, 3, 3, 1],
            [1, 4, 4, 1],
            [2, 2],
            [1, 1],
            Padding::Same,
        )
        .unwrap();
        assert_eq!(p.pad, [0, 0]);
        // An output that does not map back onto the input is refused.
        assert_eq!(
            TransposeConv2dParams::new(
                [1, 2, 2, 1],
                [1, 3, 3, 1],
                [1, 6, 6, 1],
                [2, 2],
                [1, 1],
                Padding::Same
            ),
            Err(Error::ShapeMismatch)
        );
    }

    #[test]
    fn int8_hand_checked() {
        let p = TransposeConv2dParams::new(
            [1, 1, 2, 1],
            [2, 1, 2, 1],
            [1, 1, 4, 2],
            [1, 2],
            [1, 1],
            Padding::Valid,
        )
        .unwrap();
        let mut storage = [QuantizedMultiplier::ZERO; 2];
        let q = ConvQuant::prepare(
            TensorQuant::new(1.0, 1),
            &[1.0, 0.5],
            TensorQuant::new(1.0, -2),
            FusedActivation::None,
            &mut storage,
        )
        .unwrap();
        let mut y = [0i8; 8];
        // Inputs 3, 5 (offset 2, 4); filter ch0 = [1, 2], ch1 = [3, -4]; bias [10, 0].
        transpose_conv_2d_i8(&p, &q, &[3, 5], &[1, 2, 3, -4], Some(&[10, 0]), &mut y);
        // ch0: [2, 4, 4, 8] + 10 -> [12, 14, 14, 18] - 2; ch1: [6, -8, 12, -16] / 2 - 2.
        assert_eq!(y, [10, 1, 12, -6, 12, 4, 16, -10]);
    }

    #[test]
    fn wrong_lengths_and_forged_params_write_nothing() {
        let p = TransposeConv2dParams::new(
            [1, 2, 2, 1],
            [1, 3, 3, 1],
            [1, 4, 4, 1],
            [2, 2],
            [1, 1],
            Padding::Same,
        )
        .unwrap();
        let none = ActivationRangeF32::NONE;
        let mut y = [99.0f32; 16];
        transpose_conv_2d_f32(&p, none, &[1.0; 3], &[1.0; 9], None, &mut y);
        transpose_conv_2d_f32(&p, none, &[1.0; 4], &[1.0; 8], None, &mut y);
        transpose_conv_2d_f32(&p, none, &[1.0; 4], &[1.0; 9], Some(&[1.0, 2.0]), &mut y);
        let forged = TransposeConv2dParams {
            pad: [usize::MAX, 0],
            ..p
        };
        transpose_conv_2d_f32(&forged, none, &[1.0; 4], &[1.0; 9], None, &mut y);
        assert!(y.iter().all(|&v| v == 99.0));
        let mut storage = [QuantizedMultiplier::ZERO; 2];
        let q = ConvQuant::prepare(
            TensorQuant::new(1.0, 0),
            &[1.0, 1.0],
            TensorQuant::new(1.0, 0),
            FusedActivation::None,
            &mut storage,
        )
        .unwrap();
        // Two channel multipliers for a one-channel output.
        let mut y = [99i8; 16];
        transpose_conv_2d_i8(&p, &q, &[1; 4], &[1; 9], None, &mut y);
        assert!(y.iter().all(|&v| v == 99));
        assert!(TransposeConv2dParams::with_padding(
            [1, 2, 2, 1],
            [1, 3, 3, 2],
            [1, 4, 4, 1],
            [1, 1],
            [1, 1],
            [0, 0]
        )
        .is_err());
    }

    proptest! {
        #[test]
        fn gather_equals_scatter(
            n in 1usize..3, in_h in 1usize..5, in_w in 1usize..5, cin in 1usize..4, cout in 1usize..4,
            k_h in 1usize..4, k_w in 1usize..4, s_h in 1usize..4, s_w in 1usize..4,
            d_h in 1usize..3, d_w in 1usize..3, pad_h in 0usize..3, pad_w in 0usize..3,
            extra_h in 0usize..3, extra_w in 0usize..3, seed in any::<u64>(), with_bias in any::<bool>(),
        ) {
            // Explicit padding: the full output less the top/left padding, give or take.
            let full = |i: usize, s: usize, k: usize, d: usize| (i - 1) * s + (k - 1) * d + 1;
            let out_h = (full(in_h, s_h, k_h, d_h) + extra_h).saturating_sub(pad_h).max(1);
            let out_w = (full(in_w, s_w, k_w, d_w) + extra_w).saturating_sub(pad_w).max(1);
            let p = TransposeConv2dParams::with_padding(
                [n, in_h, in_w, cin], [cout, k_h, k_w, cin], [n, out_h, out_w, cout],
                [s_h, s_w], [d_h, d_w], [pad_h, pad_w],
            ).unwrap();
            let mut rng = Lcg::new(seed);
            let x: Vec<i8> = (0..p.input_len()).map(|_| rng.int8()).collect();
            let w: Vec<i8> = (0..p.filter_len()).map(|_| rng.int8()).collect();
            let b: Vec<i32> = (0..cout).map(|_| rng.range_i32(-3000, 3000)).collect();
            let bias = with_bias.then_some(b.as_slice());
            let scales: Vec<f32> = (0..cout).map(|c| 0.002 + 0.001 * c as f32).collect();
            let mut storage = vec![QuantizedMultiplier::ZERO; cout];
            let q = ConvQuant::prepare(
                TensorQuant::new(0.05, -7), &scales, TensorQuant::new(0.08, 4),
                FusedActivation::Relu6, &mut storage,
            ).unwrap();
            let mut y = vec![0i8; p.output_len()];
            transpose_conv_2d_i8(&p, &q, &x, &w, bias, &mut y);
            prop_assert_eq!(&y, &scatter_i8(&p, &q, &x, &w, bias));

            // f32: the very same sums in the very same order, so equal bit for bit.
            let xf: Vec<f32> = (0..p.input_len()).map(|_| rng.uniform(-2.0, 2.0)).collect();
            let wf: Vec<f32> = (0..p.filter_len()).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let bf: Vec<f32> = (0..cout).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let bias = with_bias.then_some(bf.as_slice());
            let mut yf = vec![0.0f32; p.output_len()];
            transpose_conv_2d_f32(&p, ActivationRangeF32::NONE, &xf, &wf, bias, &mut yf);
            let want = scatter_f32(&p, &xf, &wf, bias);
            prop_assert_eq!(
                yf.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn int8_tracks_f32_on_random_data() {
        let mut rng = Lcg::new(11);
        let p = TransposeConv2dParams::new(
            [1, 3, 4, 3],
            [2, 3, 3, 3],
            [1, 6, 8, 2],
            [2, 2],
            [1, 1],
            Padding::Same,
        )
        .unwrap();
        let (in_q, out_q) = (TensorQuant::new(0.02, -5), TensorQuant::new(0.05, 3));
        let scales = [0.01f32, 0.02];
        let x: [i8; 36] = core::array::from_fn(|_| rng.int8());
        let w: [i8; 54] = core::array::from_fn(|_| rng.int8());
        let wf: [f32; 54] = core::array::from_fn(|i| f32::from(w[i]) * scales[i / 27]);
        let mut out_f = [0.0f32; 96];
        transpose_conv_2d_f32(
            &p,
            FusedActivation::None.range_f32(),
            &dequantize_all::<36>(&x, in_q),
            &wf,
            None,
            &mut out_f,
        );
        let mut storage = [QuantizedMultiplier::ZERO; 2];
        let q =
            ConvQuant::prepare(in_q, &scales, out_q, FusedActivation::None, &mut storage).unwrap();
        let mut out = [0i8; 96];
        transpose_conv_2d_i8(&p, &q, &x, &w, None, &mut out);
        assert_close_i8(&out, &out_f, out_q, 1);
    }
}
