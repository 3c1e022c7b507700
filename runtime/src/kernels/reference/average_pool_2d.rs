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
use crate::shape::checked_product;
use crate::unchecked::get;
use core::ops::Range;

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

    /// Whether `input` and `output` have the lengths these params describe
    /// (overflow-checked).
    pub(crate) fn lens_match(&self, input_len: usize, output_len: usize) -> bool {
        let w = &self.window;
        let input = checked_product(&[self.batches, w.input[0], w.input[1], self.depth]);
        let output = checked_product(&[self.batches, w.output[0], w.output[1], self.depth]);
        input == Some(input_len) && output == Some(output_len)
    }

    /// Visits every output element in order: `f(window)` with the in-bounds part of its
    /// pooling window. Padded positions are skipped, as in TFLM.
    #[inline]
    pub(crate) fn for_each_window(&self, mut f: impl FnMut(&PoolWindow)) {
        let w = &self.window;
        let [in_h, in_w] = w.input;
        for n in 0..self.batches {
            for oy in 0..w.output[0] {
                let rows = in_bounds(w.origin(0, oy), w.filter[0], in_h);
                for ox in 0..w.output[1] {
                    let cols = in_bounds(w.origin(1, ox), w.filter[1], in_w);
                    for c in 0..self.depth {
                        f(&PoolWindow {
                            rows: rows.clone(),
                            cols: cols.clone(),
                            base: n * in_h * in_w * self.depth + c,
                            row_stride: in_w * self.depth,
                            col_stride: self.depth,
                        });
                    }
                }
            }
        }
    }
}

/// The input rows (or columns) `origin .. origin + filter` clipped to `0..size`. Always a
/// sub-range of `0..size`, whatever the (possibly wrapped) origin.
#[inline]
fn in_bounds(origin: isize, filter: usize, size: usize) -> Range<usize> {
    let filter = isize::try_from(filter).unwrap_or(isize::MAX);
    let start = usize::try_from(origin).unwrap_or(0).min(size);
    let end = usize::try_from(origin.saturating_add(filter))
        .unwrap_or(0)
        .min(size);
    start..end.max(start)
}

/// The in-bounds elements of one pooling window over one channel.
pub(crate) struct PoolWindow {
    rows: Range<usize>,
    cols: Range<usize>,
    base: usize,
    row_stride: usize,
    col_stride: usize,
}

impl PoolWindow {
    /// Calls `g` with the flat NHWC input index of every element, row by row.
    #[inline]
    pub(crate) fn for_each_index(&self, mut g: impl FnMut(usize)) {
        for iy in self.rows.clone() {
            for ix in self.cols.clone() {
                g(self.base + iy * self.row_stride + ix * self.col_stride);
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
/// p.input_len()`, `output.len() == p.output_len()`; otherwise nothing is written. A
/// window with no in-bounds element (impossible for params from [`Pool2dParams::new`])
/// yields the clamp of 0.
#[allow(unsafe_code)]
pub fn average_pool_2d_i8(
    p: &Pool2dParams,
    activation: ActivationRange,
    input: &[i8],
    output: &mut [i8],
) {
    if !p.lens_match(input.len(), output.len()) {
        return;
    }
    let mut outputs = output.iter_mut();
    p.for_each_window(|window| {
        let mut acc = 0i32;
        let mut count = 0i32;
        window.for_each_index(|i| {
            // SAFETY: the window lies inside the input (rows < in_h, cols < in_w, batch
            // and channel in range), so i < input.len() (lens_match).
            acc = acc.wrapping_add(i32::from(unsafe { get(input, i) }));
            count += 1;
        });
        // C's truncating division, rounding half away from zero; `checked_div` only
        // spells out that a window with no element (count 0) averages to 0.
        let half = count / 2;
        let avg = if acc > 0 {
            (acc + half).checked_div(count)
        } else {
            (acc - half).checked_div(count)
        };
        // for_each_window visits exactly output.len() windows.
        if let Some(slot) = outputs.next() {
            *slot = activation.clamp_i8(avg.unwrap_or(0));
        }
    });
}

/// f32 AVERAGE_POOL_2D as TFLM's float reference: in-bounds sum / in-bounds count, then
/// the clamp. Same preconditions as [`average_pool_2d_i8`].
#[allow(unsafe_code)]
pub fn average_pool_2d_f32(
    p: &Pool2dParams,
    activation: ActivationRangeF32,
    input: &[f32],
    output: &mut [f32],
) {
    if !p.lens_match(input.len(), output.len()) {
        return;
    }
    let mut outputs = output.iter_mut();
    p.for_each_window(|window| {
        let mut total = 0.0f32;
        let mut count = 0u32;
        window.for_each_index(|i| {
            // SAFETY: as in average_pool_2d_i8.
            total += unsafe { get(input, i) };
            count += 1;
        });
        let avg = if count == 0 {
            0.0
        } else {
            total / count as f32
        };
        if let Some(slot) = outputs.next() {
            *slot = activation.apply(avg);
        }
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
