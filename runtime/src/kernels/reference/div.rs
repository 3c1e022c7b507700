//! DIV with NumPy broadcasting up to 6 dims.
//!
//! f32 is `clamp(a / b)` (TFLM's `BroadcastDivSlow` / `Div` for float).
//!
//! int8 follows TFLM's `DivElementwise` / `BroadcastDivSlowQuantized` with the Prepare
//! of `micro/kernels/div.cc`: `M = s1 / (s2 * s_out)`, then per
//! element, with `v1 = x - zp1` and `v2 = y - zp2` (signs moved so `v2 >= 0`):
//! `1 / v2` as a Q0.31 reciprocal and an exponent (`GetReciprocal(v2, 31)`), `v1`
//! shifted left by its headroom (`CountLeadingSignBits`) and multiplied by the
//! reciprocal, then scaled by `M` with the combined right shift
//! `-(shift_M - recip_shift - headroom)`.
//!
//! That final rounding shift can exceed 31 bits (a dividend of 0 or -1 has 31 bits of
//! headroom), and TFLM leaves a zero divisor to a debug-only check. In both cases
//! gemmlowp's `RoundingDivideByPOT` is undefined behaviour in C++; TFLM's x86 build (its
//! pip package, kiln's reference) computes the mask `2^e - 1` in 64 bits, truncates it to
//! 32 and shifts by `e mod 32`. [`rounding_divide_by_pot_tflm`] does exactly that, so
//! kiln matches TFLM on every pair of int8 inputs (checked exhaustively, zero divisors
//! included), quirks and all: for some quantizations a dividend at the zero point gives
//! a saturated output instead of the real quotient 0.
//!
//! The C++ writes `M` as a `float` expression, but TFLM's pip build evaluates it in
//! double precision (on ties, e.g. `0.1 / (0.02 * (6 / 255))`, only the f64 value
//! reproduces its outputs), so `M` is computed in f64 here.

use crate::activation::{ActivationRange, ActivationRangeF32, FusedActivation};
use crate::error::Result;
use crate::fixed_point::get_reciprocal;
use crate::quant::{
    multiply_by_quantized_multiplier_greater_than_one, quantize_multiplier,
    saturating_rounding_doubling_high_mul, QuantizedMultiplier, TensorQuant,
};
use crate::shape::Broadcast;

/// Everything the int8 DIV kernel needs, as TFLM's `CalculateOpDataDiv` computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DivParams {
    /// `-input1_zero_point`.
    pub input1_offset: i32,
    /// `-input2_zero_point`.
    pub input2_offset: i32,
    /// `output_zero_point`.
    pub output_offset: i32,
    /// `s1 / (s2 * s_out)` (in f64), quantized with `QuantizeMultiplier`.
    pub output_multiplier: QuantizedMultiplier,
    /// Fused-activation clamp.
    pub activation: ActivationRange,
}

/// gemmlowp's `CountLeadingSignBits` for `i32`: redundant sign bits below the sign bit
/// (31 for 0 and -1).
#[inline]
fn count_leading_sign_bits(x: i32) -> i32 {
    let magnitude = if x < 0 { !x } else { x };
    magnitude.leading_zeros() as i32 - 1
}

/// gemmlowp's `RoundingDivideByPOT` as TFLM's x86 build evaluates it for any exponent:
/// the mask `(1 << e) - 1` computed in 64 bits (shift count mod 64) and truncated to 32,
/// the arithmetic shift count taken mod 32. Equal to
/// [`crate::quant::rounding_divide_by_pot`] for `0 <= e <= 31`.
#[inline]
pub fn rounding_divide_by_pot_tflm(x: i32, exponent: i32) -> i32 {
    let e = exponent as u32;
    let mask = 1i64.wrapping_shl(e).wrapping_sub(1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1).wrapping_add(i32::from(x < 0));
    x.wrapping_shr(e)
        .wrapping_add(i32::from(remainder > threshold))
}

impl DivParams {
    /// TFLM's int8 Prepare for DIV.
    pub fn prepare(
        input1: TensorQuant,
        input2: TensorQuant,
        output: TensorQuant,
        activation: FusedActivation,
    ) -> Result<Self> {
        let (input1, input2, output) = (input1.validate()?, input2.validate()?, output.validate()?);
        // f64, as TFLM's build evaluates the expression (see the module doc).
        let real = f64::from(input1.scale) / (f64::from(input2.scale) * f64::from(output.scale));
        Ok(Self {
            input1_offset: -input1.zero_point,
            input2_offset: -input2.zero_point,
            output_offset: output.zero_point,
            output_multiplier: quantize_multiplier(real)?,
            activation: activation.range_i8(output.scale, output.zero_point)?,
        })
    }

    /// One output element: `x / y`, requantized and clamped.
    #[inline]
    pub fn div_one(&self, x: i8, y: i8) -> i8 {
        let mut v1 = self.input1_offset.wrapping_add(i32::from(x));
        let mut v2 = self.input2_offset.wrapping_add(i32::from(y));
        if v2 < 0 {
            v1 = v1.wrapping_neg();
            v2 = v2.wrapping_neg();
        }
        let (reciprocal, recip_shift) = get_reciprocal(v2, 31);
        let headroom = count_leading_sign_bits(v1);
        let unscaled = multiply_by_quantized_multiplier_greater_than_one(v1, reciprocal, headroom);
        let total_shift = self
            .output_multiplier
            .shift
            .wrapping_sub(recip_shift)
            .wrapping_sub(headroom);
        let scaled = rounding_divide_by_pot_tflm(
            saturating_rounding_doubling_high_mul(unscaled, self.output_multiplier.multiplier),
            total_shift.wrapping_neg(),
        );
        self.activation
            .clamp_i8(scaled.wrapping_add(self.output_offset))
    }
}

/// int8 DIV (`a / b`) with broadcasting, bit-exact with TFLM. Preconditions: `a`, `b`,
/// `out` have the element counts of the shapes `plan` was built from and its output
/// ([`Broadcast::accepts`]); otherwise nothing is written.
pub fn div_i8(p: &DivParams, plan: &Broadcast, a: &[i8], b: &[i8], out: &mut [i8]) {
    plan.apply(a, b, out, |x, y| p.div_one(x, y));
}

/// In-place int8 DIV: `inout` is the operand whose shape equals the output shape (the
/// dividend if `inout_is_first`, else the divisor) and is overwritten with the quotient;
/// `other` may be broadcast. Exactly [`div_i8`]'s result. Preconditions as
/// [`Broadcast::apply_in_place`]; otherwise nothing is written.
pub fn div_i8_in_place(
    p: &DivParams,
    plan: &Broadcast,
    inout: &mut [i8],
    other: &[i8],
    inout_is_first: bool,
) {
    plan.apply_in_place(inout, other, inout_is_first, |x, y| p.div_one(x, y));
}

/// f32 DIV (`a / b`, IEEE: `x / 0` is infinite or NaN) with broadcasting and the
/// fused-activation clamp. Same preconditions as [`div_i8`].
pub fn div_f32(
    activation: ActivationRangeF32,
    plan: &Broadcast,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
    plan.apply(a, b, out, |x, y| activation.apply(x / y));
}

/// In-place f32 DIV, the twin of [`div_i8_in_place`]: exactly [`div_f32`]'s result.
pub fn div_f32_in_place(
    activation: ActivationRangeF32,
    plan: &Broadcast,
    inout: &mut [f32],
    other: &[f32],
    inout_is_first: bool,
) {
    plan.apply_in_place(inout, other, inout_is_first, |x, y| activation.apply(x / y));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::rounding_divide_by_pot;
    use proptest::prelude::*;

    #[test]
    fn sign_bits() {
        assert_eq!(count_leading_sign_bits(0), 31);
        assert_eq!(count_leading_sign_bits(-1), 31);
        assert_eq!(count_leading_sign_bits(1), 30);
        assert_eq!(count_leading_sign_bits(-2), 30);
        assert_eq!(count_leading_sign_bits(255), 23);
        assert_eq!(count_leading_sign_bits(-255), 23);
        assert_eq!(count_leading_sign_bits(i32::MIN), 0);
        assert_eq!(count_leading_sign_bits(i32::MAX), 0);
    }

    #[test]
    fn tflm_shift_quirks() {
        // Exponent 32: mask all ones, shift by 0.
        assert_eq!(rounding_divide_by_pot_tflm(0, 32), 1);
        assert_eq!(rounding_divide_by_pot_tflm(-5, 32), -5);
        // Exponent 33: shift by 1, and the all-ones mask always rounds up.
        assert_eq!(rounding_divide_by_pot_tflm(40, 33), 21);
    }

    #[test]
    fn hand_checked() {
        let q = TensorQuant::new(0.1, 0);
        let p = DivParams::prepare(q, q, TensorQuant::new(0.05, 0), FusedActivation::None).unwrap();
        // 3.0 / 1.5 = 2 -> 40; -3.0 / 1.5 = -2 -> -40; 1.0 / -4.0 = -0.25 -> -5.
        assert_eq!(p.div_one(30, 15), 40);
        assert_eq!(p.div_one(-30, 15), -40);
        assert_eq!(p.div_one(10, -40), -5);
        assert_eq!(p.div_one(127, 1), 127);
        let plan = Broadcast::new(&[3], &[1]).unwrap();
        let mut out = [0i8; 3];
        div_i8(&p, &plan, &[30, -30, 15], &[15], &mut out);
        assert_eq!(out, [40, -40, 20]);
        let mut outf = [0.0f32; 3];
        div_f32(
            ActivationRangeF32::NONE,
            &plan,
            &[3.0, -3.0, 1.5],
            &[1.5],
            &mut outf,
        );
        assert_eq!(outf, [2.0, -2.0, 1.0]);
    }

    #[test]
    fn in_place_and_wrong_lengths() {
        let p = DivParams::prepare(
            TensorQuant::new(0.1, 3),
            TensorQuant::new(0.05, -7),
            TensorQuant::new(0.02, 1),
            FusedActivation::Relu,
        )
        .unwrap();
        let plan = Broadcast::new(&[4, 64], &[64]).unwrap();
        let a: Vec<i8> = (0..256).map(|i| (i as u8) as i8).collect();
        let b: Vec<i8> = (0..64).map(|i| (i * 4) as i8).collect();
        let mut want = vec![0i8; 256];
        div_i8(&p, &plan, &a, &b, &mut want);
        let mut inout = a.clone();
        div_i8_in_place(&p, &plan, &mut inout, &b, true);
        assert_eq!(inout, want);
        let mut out = [99i8; 255];
        div_i8(&p, &plan, &a, &b, &mut out);
        assert!(out.iter().all(|&v| v == 99));
        let (af, bf) = ([1.0f32, -2.0, 3.0, 4.0], [2.0f32, 0.5]);
        let plan = Broadcast::new(&[2, 2], &[2]).unwrap();
        let mut want = [0.0f32; 4];
        div_f32(ActivationRangeF32::NONE, &plan, &af, &bf, &mut want);
        assert_eq!(want, [0.5, -4.0, 1.5, 8.0]);
        let mut inout = af;
        div_f32_in_place(ActivationRangeF32::NONE, &plan, &mut inout, &bf, true);
        assert_eq!(inout, want);
    }

    proptest! {
        #[test]
        fn quirky_shift_is_the_plain_one_in_range(x in any::<i32>(), e in 0i32..=31) {
            prop_assert_eq!(rounding_divide_by_pot_tflm(x, e), rounding_divide_by_pot(x, e));
        }

        /// Away from the saturating corner cases (a dividend of 0 or -1 with a small
        /// multiplier), the quotient is within one step of the float result.
        #[test]
        fn close_to_float_math(
            x in any::<i8>(), y in any::<i8>(),
            s1 in 0.01f32..1.0, s2 in 0.01f32..1.0,
            z1 in -128i32..128, z2 in -128i32..128, zo in -128i32..128,
        ) {
            let (v1, v2) = (i32::from(x) - z1, i32::from(y) - z2);
            prop_assume!(v2 != 0 && v1.abs() >= 2);
            let real = f64::from(s1) * f64::from(v1) / (f64::from(s2) * f64::from(v2));
            // An output scale that keeps the multiplier large (shift >= 8).
            let so = (s1 / s2) / 300.0;
            let p = DivParams::prepare(
                TensorQuant::new(s1, z1), TensorQuant::new(s2, z2), TensorQuant::new(so, zo),
                FusedActivation::None,
            ).unwrap();
            let expect = ((real / f64::from(so)).round() as i64 + i64::from(zo)).clamp(-128, 127);
            let got = i64::from(p.div_one(x, y));
            prop_assert!((got - expect).abs() <= 1, "got {} expect {}", got, expect);
        }
    }
}
