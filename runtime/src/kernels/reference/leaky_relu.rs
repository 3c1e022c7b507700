//! LEAKY_RELU: `x` for `x >= 0`, else `alpha * x`.
//!
//! int8 follows TFLM's `QuantizeLeakyRelu` with the Prepare of
//! `micro/kernels/leaky_relu_common.cc`: two multipliers — the identity
//! `in_scale / out_scale` for non-negative offset inputs, and `in_scale * alpha /
//! out_scale` for negative ones — evaluated in f64 like the other `float` expressions of
//! TFLM's pip build (see `sub` and `div`, where that is observable on ties). A
//! negative alpha gives a negative multiplier; TFLM multiplies by its magnitude and
//! negates the product, and so does this kernel.
//!
//! f32 is `x > 0 ? x : x * alpha` (so NaN and -0.0 take the alpha branch, as in TFLM).

use crate::error::{Error, Result};
use crate::quant::{
    multiply_by_quantized_multiplier, quantize_multiplier, QuantizedMultiplier, TensorQuant,
};

/// int8 LEAKY_RELU params (TFLM's `LeakyReluOpData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakyReluParams {
    /// Input zero point (subtracted).
    pub input_zero_point: i32,
    /// Output zero point (added).
    pub output_zero_point: i32,
    /// `in_scale / out_scale`, applied to non-negative offset inputs.
    pub identity: QuantizedMultiplier,
    /// `in_scale * alpha / out_scale`, applied to negative offset inputs (negative for a
    /// negative alpha).
    pub alpha: QuantizedMultiplier,
}

impl LeakyReluParams {
    /// TFLM's `CalculateOpDataLeakyRelu` for int8. `alpha` must be finite.
    pub fn prepare(input: TensorQuant, output: TensorQuant, alpha: f32) -> Result<Self> {
        let (input, output) = (input.validate()?, output.validate()?);
        if !alpha.is_finite() {
            return Err(Error::MultiplierOutOfRange);
        }
        // f64, left to right (see the module doc).
        let alpha_real = f64::from(input.scale) * f64::from(alpha) / f64::from(output.scale);
        let identity_real = f64::from(input.scale) / f64::from(output.scale);
        Ok(Self {
            input_zero_point: input.zero_point,
            output_zero_point: output.zero_point,
            identity: quantize_multiplier(identity_real)?,
            alpha: quantize_multiplier(alpha_real)?,
        })
    }

    /// One output element.
    #[inline]
    pub fn leaky_relu_one(&self, x: i8) -> i8 {
        let v = i32::from(x).wrapping_sub(self.input_zero_point);
        let scaled = if v >= 0 {
            multiply_by_quantized_multiplier(v, self.identity.multiplier, self.identity.shift)
        } else {
            let m = self.alpha.multiplier;
            let product = multiply_by_quantized_multiplier(v, m.wrapping_abs(), self.alpha.shift);
            if m < 0 {
                product.wrapping_neg()
            } else {
                product
            }
        };
        self.output_zero_point
            .wrapping_add(scaled)
            .clamp(i32::from(i8::MIN), i32::from(i8::MAX)) as i8
    }
}

/// int8 LEAKY_RELU, bit-exact with TFLM. Precondition: `input.len() == output.len()`;
/// otherwise nothing is written.
pub fn leaky_relu_i8(p: &LeakyReluParams, input: &[i8], output: &mut [i8]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = p.leaky_relu_one(x);
    }
}

/// In-place int8 LEAKY_RELU: overwrites `data` with [`leaky_relu_i8`] of it.
pub fn leaky_relu_i8_in_place(p: &LeakyReluParams, data: &mut [i8]) {
    for v in data.iter_mut() {
        *v = p.leaky_relu_one(*v);
    }
}

#[inline]
fn leaky_relu_f32_one(alpha: f32, x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        x * alpha
    }
}

/// f32 LEAKY_RELU: `x > 0 ? x : x * alpha` (TFLM's float reference). Precondition:
/// `input.len() == output.len()`; otherwise nothing is written.
pub fn leaky_relu_f32(alpha: f32, input: &[f32], output: &mut [f32]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = leaky_relu_f32_one(alpha, x);
    }
}

/// In-place f32 LEAKY_RELU: overwrites `data` with [`leaky_relu_f32`] of it.
pub fn leaky_relu_f32_in_place(alpha: f32, data: &mut [f32]) {
    for v in data.iter_mut() {
        *v = leaky_relu_f32_one(alpha, *v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::test_util::quantize_one;
    use proptest::prelude::*;

    #[test]
    fn hand_checked() {
        let p =
            LeakyReluParams::prepare(TensorQuant::new(0.1, 10), TensorQuant::new(0.1, -20), 0.25)
                .unwrap();
        let mut out = [0i8; 4];
        leaky_relu_i8(&p, &[10, 50, -30, -128], &mut out);
        // Offsets 0, 40, -40, -138: identity, identity, -10, -34.5 -> -35 (away from 0).
        assert_eq!(out, [-20, 20, -30, -55]);
        let mut outf = [0.0f32; 3];
        leaky_relu_f32(0.25, &[-4.0, 0.0, 3.0], &mut outf);
        assert_eq!(outf, [-1.0, 0.0, 3.0]);
        let mut inout = [10i8, 50, -30, -128];
        leaky_relu_i8_in_place(&p, &mut inout);
        assert_eq!(inout, out);
    }

    #[test]
    fn negative_alpha_mirrors() {
        let q = TensorQuant::new(0.1, 0);
        let p = LeakyReluParams::prepare(q, q, -0.5).unwrap();
        assert!(p.alpha.multiplier < 0);
        let mut out = [0i8; 3];
        leaky_relu_i8(&p, &[-40, -7, 9], &mut out);
        // -7 * 0.5 = -3.5 rounds toward +inf in the high multiply (-3), then negates.
        assert_eq!(out, [20, 3, 9]);
        assert!(LeakyReluParams::prepare(q, q, f32::NAN).is_err());
    }

    #[test]
    fn wrong_lengths_write_nothing() {
        let q = TensorQuant::new(0.1, 0);
        let p = LeakyReluParams::prepare(q, q, 0.1).unwrap();
        let mut out = [99i8; 2];
        leaky_relu_i8(&p, &[1, 2, 3], &mut out);
        assert_eq!(out, [99; 2]);
        let mut outf = [99.0f32; 4];
        leaky_relu_f32(0.1, &[1.0; 3], &mut outf);
        assert_eq!(outf, [99.0; 4]);
        let mut inout = [-4.0f32, 2.0];
        leaky_relu_f32_in_place(0.5, &mut inout);
        assert_eq!(inout, [-2.0, 2.0]);
    }

    proptest! {
        #[test]
        fn close_to_float_math(
            x in any::<i8>(), alpha in -2.0f32..2.0,
            si in 0.005f32..0.5, so in 0.005f32..0.5, zi in -128i32..128, zo in -128i32..128,
        ) {
            let (qi, qo) = (TensorQuant::new(si, zi), TensorQuant::new(so, zo));
            let p = LeakyReluParams::prepare(qi, qo, alpha).unwrap();
            let real = si * (i32::from(x) - zi) as f32;
            let want = quantize_one(if real > 0.0 { real } else { real * alpha }, qo);
            let got = p.leaky_relu_one(x);
            prop_assert!((i32::from(got) - i32::from(want)).abs() <= 1, "got {} want {}", got, want);
        }
    }
}
