//! MUL with NumPy broadcasting up to 6 dims.
//!
//! int8 follows TFLM's `MulElementwise` / `BroadcastMul6DSlow`:
//! `out = zp_out + MultiplyByQuantizedMultiplier((x - zp1) * (y - zp2), M)` with
//! `M = (f64)s1 * (f64)s2 / (f64)s_out`, then the activation clamp.
//!
//! Overflow: the product of two offset int8 values is at most `255 * 255 < 2^16`.

use crate::activation::{ActivationRange, ActivationRangeF32, FusedActivation};
use crate::error::Result;
use crate::quant::{quantize_multiplier, QuantizedMultiplier, TensorQuant};
use crate::shape::Broadcast;

/// Everything the int8 MUL kernel needs, as TFLM's `CalculateOpDataMul` computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulParams {
    /// `-input1_zero_point`.
    pub input1_offset: i32,
    /// `-input2_zero_point`.
    pub input2_offset: i32,
    /// `output_zero_point`.
    pub output_offset: i32,
    /// `s1 * s2 / s_out` in fixed point.
    pub output_multiplier: QuantizedMultiplier,
    /// Fused-activation clamp.
    pub activation: ActivationRange,
}

impl MulParams {
    /// TFLM's int8 Prepare for MUL.
    pub fn prepare(
        input1: TensorQuant,
        input2: TensorQuant,
        output: TensorQuant,
        activation: FusedActivation,
    ) -> Result<Self> {
        let (input1, input2, output) = (input1.validate()?, input2.validate()?, output.validate()?);
        let real = f64::from(input1.scale) * f64::from(input2.scale) / f64::from(output.scale);
        Ok(Self {
            input1_offset: -input1.zero_point,
            input2_offset: -input2.zero_point,
            output_offset: output.zero_point,
            output_multiplier: quantize_multiplier(real)?,
            activation: activation.range_i8(output.scale, output.zero_point)?,
        })
    }

    /// One output element.
    #[inline]
    pub fn mul_one(&self, x: i8, y: i8) -> i8 {
        let a = self.input1_offset + i32::from(x);
        let b = self.input2_offset + i32::from(y);
        let r = self
            .output_multiplier
            .apply(a * b)
            .wrapping_add(self.output_offset);
        self.activation.clamp_i8(r)
    }
}

/// int8 MUL with broadcasting, bit-exact with TFLM. Preconditions: `a`, `b`, `out` have
/// the element counts of the shapes `plan` was built from and its output
/// ([`Broadcast::accepts`]); otherwise nothing is written.
pub fn mul_i8(p: &MulParams, plan: &Broadcast, a: &[i8], b: &[i8], out: &mut [i8]) {
    plan.apply(a, b, out, |x, y| p.mul_one(x, y));
}

/// In-place int8 MUL: `inout` is the operand whose shape equals the output shape (the
/// first operand if `inout_is_first`, else the second) and is overwritten with the
/// product; `other` may be broadcast. Exactly [`mul_i8`]'s result. Preconditions as
/// [`Broadcast::apply_in_place`]; otherwise nothing is written.
pub fn mul_i8_in_place(
    p: &MulParams,
    plan: &Broadcast,
    inout: &mut [i8],
    other: &[i8],
    inout_is_first: bool,
) {
    plan.apply_in_place(inout, other, inout_is_first, |x, y| p.mul_one(x, y));
}

/// f32 MUL with broadcasting and the fused-activation clamp. Same preconditions as
/// [`mul_i8`].
pub fn mul_f32(
    activation: ActivationRangeF32,
    plan: &Broadcast,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
    plan.apply(a, b, out, |x, y| activation.apply(x * y));
}

/// In-place f32 MUL, the twin of [`mul_i8_in_place`]: exactly [`mul_f32`]'s result.
pub fn mul_f32_in_place(
    activation: ActivationRangeF32,
    plan: &Broadcast,
    inout: &mut [f32],
    other: &[f32],
    inout_is_first: bool,
) {
    plan.apply_in_place(inout, other, inout_is_first, |x, y| activation.apply(x * y));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_checked() {
        let p = MulParams::prepare(
            TensorQuant::new(0.5, 1),
            TensorQuant::new(0.5, -1),
            TensorQuant::new(0.25, 2),
            FusedActivation::None,
        )
        .unwrap();
        // (5-1)*0.5 * (3+1)*0.5 = 4 -> 4/0.25 + 2 = 18
        assert_eq!(p.mul_one(5, 3), 18);
        let plan = Broadcast::new(&[3], &[1]).unwrap();
        let mut out = [0i8; 3];
        mul_i8(&p, &plan, &[1, 5, 120], &[3], &mut out);
        assert_eq!(out, [2, 18, 127]);
        let mut outf = [0.0f32; 3];
        mul_f32(
            ActivationRangeF32::NONE,
            &plan,
            &[1.0, 2.0, 3.0],
            &[-2.0],
            &mut outf,
        );
        assert_eq!(outf, [-2.0, -4.0, -6.0]);
    }

    proptest! {
        #[test]
        fn close_to_float_math(
            x in any::<i8>(), y in any::<i8>(),
            s1 in 0.001f32..1.0, s2 in 0.001f32..1.0, so in 0.0005f32..2.0,
            z1 in -128i32..128, z2 in -128i32..128, zo in -128i32..128,
        ) {
            let (q1, q2, qo) = (TensorQuant::new(s1, z1), TensorQuant::new(s2, z2), TensorQuant::new(so, zo));
            let p = MulParams::prepare(q1, q2, qo, FusedActivation::None).unwrap();
            let real = f64::from(s1) * f64::from(i32::from(x) - z1) * f64::from(s2) * f64::from(i32::from(y) - z2);
            let expect = ((real / f64::from(so)).round() as i32 + zo).clamp(-128, 127);
            let got = i32::from(p.mul_one(x, y));
            prop_assert!((got - expect).abs() <= 1, "got {} expect {}", got, expect);
        }
    }
}
