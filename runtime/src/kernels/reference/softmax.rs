//! SOFTMAX over the last dimension.
//!
//! int8 in / int8 out follows TFLM's integer `reference_ops::Softmax`:
//! differences to the row maximum are rescaled by `beta * in_scale` into Q5.26 (values
//! below `diff_min` contribute nothing), exponentiated with gemmlowp's
//! `exp_on_negative_values`, summed in Q12.19, inverted with `GetReciprocal`, and each
//! output is `exp * reciprocal` shifted down to 8 bits and offset by -128. TFLM requires
//! the output quantization to be exactly scale 1/256, zero point -128.
//!
//! Overflow: `diff_min` is chosen (by `CalculateInputRadius`) so that the rescaled
//! differences fit Q5.26; the Q12.19 sum holds up to 4096 exponentials of at most 1.

use crate::error::{Error, Result};
use crate::fixed_point::{exp_on_negative_values, get_reciprocal, rescale};
use crate::quant::{
    calculate_input_radius, check_scale, multiply_by_quantized_multiplier_greater_than_one,
    preprocess_softmax_scaling, rounding_divide_by_pot, saturating_rounding_doubling_high_mul,
    TensorQuant,
};

/// Integer bits of the rescaled input differences (TFLM's `kScaledDiffIntegerBits`).
pub const SCALED_DIFF_INTEGER_BITS: i32 = 5;
/// Integer bits of the sum of exponentials (TFLM's `kAccumulationIntegerBits`).
pub const ACCUMULATION_INTEGER_BITS: i32 = 12;

/// Precomputed int8 softmax constants (TFLM's `SoftmaxParams` for int8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftmaxParams {
    /// Q0.31 significand of `beta * in_scale * 2^26`.
    pub input_multiplier: i32,
    /// Left shift paired with `input_multiplier` (>= 0).
    pub input_left_shift: i32,
    /// Most negative difference to the row maximum that still contributes.
    pub diff_min: i32,
}

impl SoftmaxParams {
    /// TFLM's `CalculateSoftmaxParams` for int8 input and int8 output: checks the output
    /// is scale exactly `1/256`, zero point -128 ([`Error::QuantizationMismatch`]
    /// otherwise), then `PreprocessSoftmaxScaling` and `CalculateInputRadius`.
    pub fn prepare(beta: f32, input: TensorQuant, output: TensorQuant) -> Result<Self> {
        let input = input.validate()?;
        check_scale(output.scale)?;
        if output.zero_point != -128 || output.scale != 1.0 / 256.0 {
            return Err(Error::QuantizationMismatch);
        }
        let m = preprocess_softmax_scaling(
            f64::from(beta),
            f64::from(input.scale),
            SCALED_DIFF_INTEGER_BITS,
        )?;
        let diff_min = -calculate_input_radius(SCALED_DIFF_INTEGER_BITS, m.shift, 31);
        Ok(Self {
            input_multiplier: m.multiplier,
            input_left_shift: m.shift,
            diff_min,
        })
    }

    #[inline]
    fn exp_of_diff(&self, diff: i32) -> i32 {
        let rescaled = multiply_by_quantized_multiplier_greater_than_one(
            diff,
            self.input_multiplier,
            self.input_left_shift,
        );
        exp_on_negative_values(rescaled, SCALED_DIFF_INTEGER_BITS)
    }
}

/// Whether `depth > 0` and both lengths are the same multiple of it.
fn lens_match(depth: usize, input_len: usize, output_len: usize) -> bool {
    input_len == output_len && input_len.checked_rem(depth) == Some(0)
}

/// Calls `f(input_row, output_row)` for consecutive rows of `depth > 0` elements
/// (`split_at_checked` rather than `chunks_exact`, whose zero-size assert and division
/// can stay in size-optimized builds).
#[inline]
fn for_each_row<T, U>(
    depth: usize,
    mut input: &[T],
    mut output: &mut [U],
    mut f: impl FnMut(&[T], &mut [U]),
) {
    while let (Some((row, input_rest)), Some((out_row, output_rest))) = (
        input.split_at_checked(depth),
        core::mem::take(&mut output).split_at_mut_checked(depth),
    ) {
        f(row, out_row);
        input = input_rest;
        output = output_rest;
    }
}

/// int8 SOFTMAX over rows of `depth` elements, bit-exact with TFLM. Preconditions:
/// `depth > 0`, `input.len() == output.len()`, a multiple of `depth`; otherwise nothing
/// is written.
pub fn softmax_i8(p: &SoftmaxParams, depth: usize, input: &[i8], output: &mut [i8]) {
    if !lens_match(depth, input.len(), output.len()) {
        return;
    }
    for_each_row(depth, input, output, |row, out_row| {
        let max_in_row = row.iter().copied().fold(i8::MIN, i8::max);
        let mut sum_of_exps = 0i32; // Q12.19
        for &x in row {
            let diff = i32::from(x) - i32::from(max_in_row);
            if diff >= p.diff_min {
                let e = p.exp_of_diff(diff);
                sum_of_exps = sum_of_exps.wrapping_add(rescale(e, 0, ACCUMULATION_INTEGER_BITS));
            }
        }
        let (shifted_scale, num_bits_over_unit) =
            get_reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS);
        let exponent = num_bits_over_unit + 31 - 8;
        for (&x, o) in row.iter().zip(out_row.iter_mut()) {
            let diff = i32::from(x) - i32::from(max_in_row);
            *o = if diff >= p.diff_min {
                let e = p.exp_of_diff(diff);
                let unsat = rounding_divide_by_pot(
                    saturating_rounding_doubling_high_mul(shifted_scale, e),
                    exponent,
                );
                (unsat - 128).clamp(-128, 127) as i8
            } else {
                i8::MIN
            };
        }
    });
}

/// f32 SOFTMAX as TFLM's float reference: `exp((x - max) * beta)` in f32, divided by the
/// f32 sum. Same preconditions as [`softmax_i8`].
pub fn softmax_f32(beta: f32, depth: usize, input: &[f32], output: &mut [f32]) {
    if !lens_match(depth, input.len(), output.len()) {
        return;
    }
    for_each_row(depth, input, output, |row, out_row| {
        let max = row
            .iter()
            .copied()
            .fold(f32::MIN, |m, x| if m < x { x } else { m });
        let mut sum = 0.0f32;
        for (&x, o) in row.iter().zip(out_row.iter_mut()) {
            let e = libm::expf((x - max) * beta);
            *o = e;
            sum += e;
        }
        for o in out_row.iter_mut() {
            *o /= sum;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::test_util::{assert_close_i8, dequantize_all, Lcg};

    const OUT: TensorQuant = TensorQuant::new(1.0 / 256.0, -128);

    #[test]
    fn prepare_values() {
        let p = SoftmaxParams::prepare(1.0, TensorQuant::new(1.0 / 16.0, 0), OUT).unwrap();
        assert_eq!(
            (p.input_multiplier, p.input_left_shift, p.diff_min),
            (1 << 30, 23, -248)
        );
        assert!(SoftmaxParams::prepare(
            1.0,
            TensorQuant::new(0.1, 0),
            TensorQuant::new(1.0 / 256.0, 0)
        )
        .is_err());
        assert!(SoftmaxParams::prepare(
            1.0,
            TensorQuant::new(0.1, 0),
            TensorQuant::new(0.004, -128)
        )
        .is_err());
    }

    #[test]
    fn uniform_row_and_dominant_element() {
        let p = SoftmaxParams::prepare(1.0, TensorQuant::new(0.1, 0), OUT).unwrap();
        let mut out = [0i8; 4];
        softmax_i8(&p, 4, &[7, 7, 7, 7], &mut out);
        assert_eq!(out, [-64; 4]); // 0.25 * 256 - 128
        softmax_i8(&p, 4, &[127, -128, -128, -128], &mut out);
        assert_eq!(out, [127, -128, -128, -128]);
    }

    #[test]
    fn int8_tracks_f32() {
        let mut rng = Lcg::new(5);
        let in_q = TensorQuant::new(0.08, 10);
        let input: [i8; 40] = core::array::from_fn(|_| rng.int8());
        let input_f = dequantize_all::<40>(&input, in_q);
        for beta in [1.0f32, 0.5, 2.0] {
            let p = SoftmaxParams::prepare(beta, in_q, OUT).unwrap();
            let mut out8 = [0i8; 40];
            softmax_i8(&p, 10, &input, &mut out8);
            let mut outf = [0.0f32; 40];
            softmax_f32(beta, 10, &input_f, &mut outf);
            assert_close_i8(&out8, &outf, OUT, 1);
        }
    }

    #[test]
    fn f32_rows_sum_to_one() {
        let mut out = [0.0f32; 6];
        softmax_f32(1.0, 3, &[1.0, 2.0, 3.0, -1.0, 0.0, 1000.0], &mut out);
        assert!((out[0] + out[1] + out[2] - 1.0).abs() < 1e-6);
        assert_eq!(out[5], 1.0);
    }
}
