//! AVERAGE_POOL_2D over NHWC. Also defines [`Pool2dParams`], shared with max_pool_2d.
//!
//! int8 follows TFLM's `reference_integer_ops::AveragePool`: the sum of the in-bounds
//! elements only, divided by their count with rounding half away from zero
//! (`(acc ± count/2) / count`, C truncating division), then the activation clamp. No
//! requantization: TFLM requires equal input and output quantization.
//!
//! Overflow: at most `filter_h * filter_w` int8 values are summed; `i32` holds any window
//! below 2^24 elements.

use crate::activation::{ActivationRange, ActivationRangeF32, FusedActivation};
use crate::error::{Error, Result};
use crate::padding::{Padding, Window2d};
use crate::quant::TensorQuant;

/// Shapes and window of a 2-D pooling call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Batch size `N`.
    pub batches: usize,
    /// Channels `C` (same in and out).
    pub depth: usize,
    /// Spatial geometry; dilation is always 1.
    pub window: Window2d,
}

impl Pool2dParams {
    /// Params from an NHWC input shape, the pooling window `[h, w]`, stride and padding,
    /// computed like TFLM's `CalculateOpDataPooling`.
    pub fn new(
        input_shape: [usize; 4],
        filter: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
    ) -> Result<Self> {
        let [n, h, w, c] = input_shape;
        let window = Window2d::new([h, w], filter, stride, [1, 1], padding)?;
        Self::with_window(n, c, window)
    }

    /// Params from an explicit window (dilation must be 1).
    pub fn with_window(batches: usize, depth: usize, window: Window2d) -> Result<Self> {
        if batches == 0 || depth == 0 {
            return Err(Error::ShapeMismatch);
        }
        if window.dilation != [1, 1] {
            return Err(Error::InvalidWindow);
        }
        Ok(Self {
            batches,
            depth,
            window,
        })
    }

    /// The NHWC output shape.
    pub fn output_shape(&self) -> [usize; 4] {
        [
            self.batches,
            self.window.output[0],
            self.window.output[1],
            self.depth,
        ]
    }

    /// Number of input elements.
    pub fn input_len(&self) -> usize {
        self.batches * self.window.input[0] * self.window.input[1] * self.depth
    }

    /// Number of output elements.
    pub fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }

    /// Visits every output element: `f(out_index, reduce)` where `reduce(g)` calls `g`
    /// with the flat input index of every in-bounds window element.
    #[inline]
    pub(crate) fn for_each_window(&self, mut f: impl FnMut(usize, &dyn Fn(&mut dyn FnMut(usize)))) {
        let w = &self.window;
        let [in_h, in_w] = w.input;
        let mut o = 0;
        for n in 0..self.batches {
            for oy in 0..w.output[0] {
                for ox in 0..w.output[1] {
                    let y0 = w.origin(0, oy);
                    let x0 = w.origin(1, ox);
                    let fy_start = (-y0).max(0) as usize;
                    let fy_end = (w.filter[0] as isize).min(in_h as isize - y0).max(0) as usize;
                    let fx_start = (-x0).max(0) as usize;
                    let fx_end = (w.filter[1] as isize).min(in_w as isize - x0).max(0) as usize;
                    for c in 0..self.depth {
                        let reduce = |g: &mut dyn FnMut(usize)| {
                            for fy in fy_start..fy_end {
                                let iy = (y0 + fy as isize) as usize;
                                for fx in fx_start..fx_end {
                                    let ix = (x0 + fx as isize) as usize;
                                    g(((n * in_h + iy) * in_w + ix) * self.depth + c);
                                }
                            }
                        };
                        f(o, &reduce);
                        o += 1;
                    }
                }
            }
        }
    }
}

/// int8 clamp range of a pooling op, with TFLM's Prepare checks: input and output scales
/// within 1e-6 and equal zero points, else [`Error::QuantizationMismatch`].
pub fn pool_activation_range_i8(
    input: TensorQuant,
    output: TensorQuant,
    activation: FusedActivation,
) -> Result<ActivationRange> {
    let input = input.validate()?;
    let output = output.validate()?;
    let diff = f64::from((input.scale - output.scale).abs());
    if diff > 1.0e-6 || input.zero_point != output.zero_point {
        return Err(Error::QuantizationMismatch);
    }
    activation.range_i8(output.scale, output.zero_point)
}

/// int8 AVERAGE_POOL_2D, bit-exact with TFLM. Preconditions: `input.len() ==
/// p.input_len()`, `output.len() == p.output_len()`. A window with no in-bounds element
/// (impossible for params from [`Pool2dParams::new`]) yields the clamp of 0.
pub fn average_pool_2d_i8(
    p: &Pool2dParams,
    activation: ActivationRange,
    input: &[i8],
    output: &mut [i8],
) {
    p.for_each_window(|o, reduce| {
        let mut acc = 0i32;
        let mut count = 0i32;
        reduce(&mut |i| {
            acc += i32::from(input[i]);
            count += 1;
        });
        let avg = if count == 0 {
            0
        } else if acc > 0 {
            (acc + count / 2) / count
        } else {
            (acc - count / 2) / count
        };
        output[o] = activation.clamp_i8(avg);
    });
}

/// f32 AVERAGE_POOL_2D as TFLM's float reference: in-bounds sum / in-bounds count, then
/// the clamp. Same preconditions as [`average_pool_2d_i8`].
pub fn average_pool_2d_f32(
    p: &Pool2dParams,
    activation: ActivationRangeF32,
    input: &[f32],
    output: &mut [f32],
) {
    p.for_each_window(|o, reduce| {
        let mut total = 0.0f32;
        let mut count = 0u32;
        reduce(&mut |i| {
            total += input[i];
            count += 1;
        });
        let avg = if count == 0 {
            0.0
        } else {
            total / count as f32
        };
        output[o] = activation.apply(avg);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_half_away_from_zero() {
        // 1x1x2x1 input, 1x2 window: averages of pairs.
        let p = Pool2dParams::new([1, 1, 2, 1], [1, 2], [1, 1], Padding::Valid).unwrap();
        let mut out = [0i8; 1];
        average_pool_2d_i8(&p, ActivationRange::FULL_I8, &[1, 2], &mut out);
        assert_eq!(out, [2]); // 1.5 -> 2
        average_pool_2d_i8(&p, ActivationRange::FULL_I8, &[-1, -2], &mut out);
        assert_eq!(out, [-2]); // -1.5 -> -2
        average_pool_2d_i8(&p, ActivationRange::FULL_I8, &[-1, 1], &mut out);
        assert_eq!(out, [0]);
    }

    #[test]
    fn same_padding_counts_only_in_bounds() {
        // 1x2x2x1, 3x3 window, SAME stride 1: every window covers all 4 inputs.
        let p = Pool2dParams::new([1, 2, 2, 1], [3, 3], [1, 1], Padding::Same).unwrap();
        let mut out = [0i8; 4];
        average_pool_2d_i8(&p, ActivationRange::FULL_I8, &[10, 20, 30, 41], &mut out);
        assert_eq!(out, [25, 25, 25, 25]); // 101 / 4 = 25.25
        let mut outf = [0.0f32; 4];
        average_pool_2d_f32(
            &p,
            ActivationRangeF32::NONE,
            &[10.0, 20.0, 30.0, 41.0],
            &mut outf,
        );
        assert_eq!(outf, [25.25; 4]);
        // 2x2 window stride 2 SAME on a 3x3 input: corner window has 1 element.
        let p = Pool2dParams::new([1, 3, 3, 1], [2, 2], [2, 2], Padding::Same).unwrap();
        let input: [i8; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut out = [0i8; 4];
        average_pool_2d_i8(&p, ActivationRange::FULL_I8, &input, &mut out);
        assert_eq!(out, [3, 5, 8, 9]); // (1+2+4+5)/4=3, (3+6)/2=4.5->5, (7+8)/2->8, 9
    }

    #[test]
    fn quant_checks() {
        let a = TensorQuant::new(0.1, 3);
        assert!(pool_activation_range_i8(a, a, FusedActivation::Relu).is_ok());
        assert!(
            pool_activation_range_i8(a, TensorQuant::new(0.2, 3), FusedActivation::None).is_err()
        );
        assert!(
            pool_activation_range_i8(a, TensorQuant::new(0.1, 4), FusedActivation::None).is_err()
        );
    }
}
