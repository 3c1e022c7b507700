//! LOGISTIC (sigmoid).
//!
//! int8 follows TFLM's `reference_integer_ops::Logistic` with its Prepare: the input
//! multiplier is the raw `frexp` of `in_scale * 2^27` (the exponent becomes the shift,
//! positive for usual scales), inputs beyond the radius saturate to -128 / 127, the rest
//! go through gemmlowp's Q4.27 `logistic` and are shifted to 8 bits with zero point
//! -128. TFLM checks only the output zero point (-128); it assumes scale 1/256.

use crate::error::{Error, Result};
use crate::fixed_point;
use crate::quant::{
    calculate_input_radius, multiply_by_quantized_multiplier, round_f64, rounding_divide_by_pot,
    TensorQuant,
};

/// Integer bits of the rescaled input (TFLM's `kInputIntegerBits` for int8).
pub const INPUT_INTEGER_BITS: i32 = 4;

/// Input rescaling shared by int8 LOGISTIC and TANH (TFLM's `OpDataLogistic` / tanh `OpData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigmoidInputParams {
    /// Input zero point.
    pub input_zero_point: i32,
    /// Offset inputs at or beyond `±radius` saturate.
    pub input_range_radius: i32,
    /// Q0.31 significand of `in_scale * 2^27`.
    pub input_multiplier: i32,
    /// Exponent of `in_scale * 2^27` (TFLM's `input_left_shift`).
    pub input_left_shift: i32,
}

impl SigmoidInputParams {
    /// The Prepare arithmetic shared by TFLM's int8 LOGISTIC and TANH:
    /// `q, shift = frexp(in_scale * 2^27)`, `multiplier = round(q * 2^31)`,
    /// `radius = CalculateInputRadius(4, shift, 31)`.
    pub fn prepare(input: TensorQuant) -> Result<Self> {
        let input = input.validate()?;
        let real = f64::from(input.scale) * f64::from(1i32 << (31 - INPUT_INTEGER_BITS));
        let (q, shift) = libm::frexp(real);
        // q < 1 - 2^-24 for any f32 scale, so the rounded significand stays below 2^31.
        let multiplier = round_f64(q * (1i64 << 31) as f64) as i64;
        if multiplier > i64::from(i32::MAX) {
            return Err(Error::MultiplierOutOfRange);
        }
        Ok(Self {
            input_zero_point: input.zero_point,
            input_range_radius: calculate_input_radius(INPUT_INTEGER_BITS, shift, 31),
            input_multiplier: multiplier as i32,
            input_left_shift: shift,
        })
    }

    /// Offsets and rescales `x` to Q4.27, or tells which side it saturates to.
    #[inline]
    pub(crate) fn rescale(&self, x: i8) -> Rescaled {
        let input = i32::from(x) - self.input_zero_point;
        if input <= -self.input_range_radius {
            Rescaled::Low
        } else if input >= self.input_range_radius {
            Rescaled::High
        } else {
            Rescaled::Q4(multiply_by_quantized_multiplier(
                input,
                self.input_multiplier,
                self.input_left_shift,
            ))
        }
    }
}

/// An offset input after [`SigmoidInputParams`] rescaling.
pub(crate) enum Rescaled {
    /// At or below `-radius`: the output saturates low.
    Low,
    /// At or above `radius`: the output saturates high.
    High,
    /// Inside the radius: the value in Q4.27.
    Q4(i32),
}

/// int8 LOGISTIC params: TFLM's Prepare, plus its check that the output zero point is -128.
pub fn prepare_logistic(input: TensorQuant, output: TensorQuant) -> Result<SigmoidInputParams> {
    if output.zero_point != -128 {
        return Err(Error::QuantizationMismatch);
    }
    SigmoidInputParams::prepare(input)
}

#[inline]
fn logistic_i8_one(p: &SigmoidInputParams, x: i8) -> i8 {
    match p.rescale(x) {
        Rescaled::Low => i8::MIN,
        Rescaled::High => i8::MAX,
        Rescaled::Q4(q4) => {
            let q0 = fixed_point::logistic(q4, INPUT_INTEGER_BITS);
            let q23 = rounding_divide_by_pot(q0, 31 - 8);
            (q23 - 128).clamp(-128, 127) as i8
        }
    }
}

/// int8 LOGISTIC, bit-exact with TFLM. Precondition: `input.len() == output.len()`;
/// otherwise nothing is written.
pub fn logistic_i8(p: &SigmoidInputParams, input: &[i8], output: &mut [i8]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = logistic_i8_one(p, x);
    }
}

/// In-place int8 LOGISTIC: overwrites `data` with [`logistic_i8`] of it.
pub fn logistic_i8_in_place(p: &SigmoidInputParams, data: &mut [i8]) {
    for v in data.iter_mut() {
        *v = logistic_i8_one(p, *v);
    }
}

#[inline]
fn logistic_f32_one(x: f32) -> f32 {
    const CUTOFF_UPPER: f32 = 16.619_047;
    const CUTOFF_LOWER: f32 = -9.0;
    if x > CUTOFF_UPPER {
        1.0
    } else if x < CUTOFF_LOWER {
        libm::expf(x)
    } else {
        1.0 / (1.0 + libm::expf(-x))
    }
}

/// f32 LOGISTIC as TFLM's float reference (with its cutoffs at 16.619 and -9).
/// Precondition: `input.len() == output.len()`; otherwise nothing is written.
pub fn logistic_f32(input: &[f32], output: &mut [f32]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = logistic_f32_one(x);
    }
}

/// In-place f32 LOGISTIC: overwrites `data` with [`logistic_f32`] of it.
pub fn logistic_f32_in_place(data: &mut [f32]) {
    for v in data.iter_mut() {
        *v = logistic_f32_one(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::test_util::{assert_close_i8, dequantize_all};

    #[test]
    fn prepare_values() {
        // scale 1/8: 2^24 -> frexp 0.5 * 2^25 -> (2^30, 25), radius floor(15*2^27/2^25) = 60.
        let p = prepare_logistic(
            TensorQuant::new(0.125, 3),
            TensorQuant::new(1.0 / 256.0, -128),
        )
        .unwrap();
        assert_eq!(
            (p.input_multiplier, p.input_left_shift, p.input_range_radius),
            (1 << 30, 25, 60)
        );
        assert!(
            prepare_logistic(TensorQuant::new(0.125, 3), TensorQuant::new(1.0 / 256.0, 0)).is_err()
        );
    }

    #[test]
    fn known_outputs_and_saturation() {
        let p = prepare_logistic(
            TensorQuant::new(0.125, 0),
            TensorQuant::new(1.0 / 256.0, -128),
        )
        .unwrap();
        let mut out = [0i8; 4];
        logistic_i8(&p, &[0, 127, -128, 60], &mut out);
        assert_eq!(out[0], 0); // 0.5 -> 128 - 128
        assert_eq!(out[1], 127);
        assert_eq!(out[2], -128);
        assert_eq!(out[3], 127); // at the radius
    }

    #[test]
    fn int8_tracks_f32_all_inputs() {
        let in_q = TensorQuant::new(0.05, -7);
        let out_q = TensorQuant::new(1.0 / 256.0, -128);
        let p = prepare_logistic(in_q, out_q).unwrap();
        let input: [i8; 256] = core::array::from_fn(|i| (i as i32 - 128) as i8);
        let mut out8 = [0i8; 256];
        logistic_i8(&p, &input, &mut out8);
        let mut outf = [0.0f32; 256];
        logistic_f32(&dequantize_all::<256>(&input, in_q), &mut outf);
        assert_close_i8(&out8, &outf, out_q, 1);
    }
}
