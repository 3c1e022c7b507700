//! ADD with NumPy broadcasting up to 6 dims.
//!
//! int8 follows TFLM's `AddFunc`: both inputs are offset, shifted left by 20 bits, scaled
//! by their own multiplier `in_scale / (2 * max_in_scale)` (< 1), summed, then scaled by
//! `2 * max_in_scale / (2^20 * out_scale)`, all with
//! `MultiplyByQuantizedMultiplierSmallerThanOneExp`. Broadcasting only changes which
//! elements meet, never the per-element arithmetic, so any correct broadcast loop is
//! bit-exact with TFLM's.
//!
//! Overflow: `(x - zp)` is within `[-255, 255]`, times `2^20` stays below `2^28`; each
//! scaled input is at most that in magnitude (multiplier < 1), so the sum fits `i32`.

use crate::activation::{ActivationRange, ActivationRangeF32, FusedActivation};
use crate::error::Result;
use crate::quant::{
    multiply_by_quantized_multiplier_smaller_than_one_exp as mul_small,
    quantize_multiplier_smaller_than_one_exp, QuantizedMultiplier, TensorQuant,
};
use crate::shape::Broadcast;

/// Left shift applied to both int8 inputs before scaling (TFLM: 20 for int8).
pub const ADD_LEFT_SHIFT: i32 = 20;

/// Everything the int8 ADD kernel needs, as TFLM's `CalculateOpDataAdd` computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddParams {
    /// `-input1_zero_point`.
    pub input1_offset: i32,
    /// `-input2_zero_point`.
    pub input2_offset: i32,
    /// `output_zero_point`.
    pub output_offset: i32,
    /// Always [`ADD_LEFT_SHIFT`] for int8.
    pub left_shift: i32,
    /// `in1_scale / (2 * max(in1_scale, in2_scale))`, shift <= 0.
    pub input1_multiplier: QuantizedMultiplier,
    /// `in2_scale / (2 * max(in1_scale, in2_scale))`, shift <= 0.
    pub input2_multiplier: QuantizedMultiplier,
    /// `2 * max_in_scale / (2^20 * out_scale)`, shift <= 0.
    pub output_multiplier: QuantizedMultiplier,
    /// Fused-activation clamp.
    pub activation: ActivationRange,
}

impl AddParams {
    /// TFLM's int8 Prepare: per-input multipliers below one and an output multiplier,
    /// each via `QuantizeMultiplierSmallerThanOneExp` (an error where TFLM's CHECK fails,
    /// e.g. when `out_scale` is below `2 * max_in_scale / 2^20`).
    pub fn prepare(
        input1: TensorQuant,
        input2: TensorQuant,
        output: TensorQuant,
        activation: FusedActivation,
    ) -> Result<Self> {
        let (input1, input2, output) = (input1.validate()?, input2.validate()?, output.validate()?);
        let max_scale = if input1.scale < input2.scale {
            input2.scale
        } else {
            input1.scale
        };
        let twice_max_input_scale = 2.0 * f64::from(max_scale);
        let real1 = f64::from(input1.scale) / twice_max_input_scale;
        let real2 = f64::from(input2.scale) / twice_max_input_scale;
        let real_out =
            twice_max_input_scale / (f64::from(1i32 << ADD_LEFT_SHIFT) * f64::from(output.scale));
        Ok(Self {
            input1_offset: -input1.zero_point,
            input2_offset: -input2.zero_point,
            output_offset: output.zero_point,
            left_shift: ADD_LEFT_SHIFT,
            input1_multiplier: quantize_multiplier_smaller_than_one_exp(real1)?,
            input2_multiplier: quantize_multiplier_smaller_than_one_exp(real2)?,
            output_multiplier: quantize_multiplier_smaller_than_one_exp(real_out)?,
            activation: activation.range_i8(output.scale, output.zero_point)?,
        })
    }

    /// One output element: TFLM's `AddFunc`.
    #[inline]
    pub fn add_one(&self, x: i8, y: i8) -> i8 {
        let shifted1 = (self.input1_offset + i32::from(x)) * (1 << self.left_shift);
        let shifted2 = (self.input2_offset + i32::from(y)) * (1 << self.left_shift);
        let m1 = self.input1_multiplier;
        let m2 = self.input2_multiplier;
        let mo = self.output_multiplier;
        let scaled1 = mul_small(shifted1, m1.multiplier, m1.shift);
        let scaled2 = mul_small(shifted2, m2.multiplier, m2.shift);
        let raw_sum = scaled1.wrapping_add(scaled2);
        let raw_output =
            mul_small(raw_sum, mo.multiplier, mo.shift).wrapping_add(self.output_offset);
        self.activation.clamp_i8(raw_output)
    }
}

/// int8 ADD with broadcasting, bit-exact with TFLM. Preconditions: `a`, `b`, `out` have
/// the element counts of the shapes `plan` was built from and its output
/// ([`Broadcast::accepts`]); otherwise nothing is written.
pub fn add_i8(p: &AddParams, plan: &Broadcast, a: &[i8], b: &[i8], out: &mut [i8]) {
    plan.apply(a, b, out, |x, y| p.add_one(x, y));
}

/// In-place int8 ADD: `inout` is the operand whose shape equals the output shape (the
/// first operand if `inout_is_first`, else the second) and is overwritten with the sum;
/// `other` may be broadcast. Exactly [`add_i8`]'s result. Preconditions as
/// [`Broadcast::apply_in_place`]; otherwise nothing is written.
pub fn add_i8_in_place(
    p: &AddParams,
    plan: &Broadcast,
    inout: &mut [i8],
    other: &[i8],
    inout_is_first: bool,
) {
    plan.apply_in_place(inout, other, inout_is_first, |x, y| p.add_one(x, y));
}

/// f32 ADD with broadcasting and the fused-activation clamp. Same preconditions as
/// [`add_i8`].
pub fn add_f32(
    activation: ActivationRangeF32,
    plan: &Broadcast,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
    plan.apply(a, b, out, |x, y| activation.apply(x + y));
}

/// In-place f32 ADD, the twin of [`add_i8_in_place`]: exactly [`add_f32`]'s result.
pub fn add_f32_in_place(
    activation: ActivationRangeF32,
    plan: &Broadcast,
    inout: &mut [f32],
    other: &[f32],
    inout_is_first: bool,
) {
    plan.apply_in_place(inout, other, inout_is_first, |x, y| activation.apply(x + y));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prepare_matches_hand_computation() {
        let p = AddParams::prepare(
            TensorQuant::new(0.5, 0),
            TensorQuant::new(0.25, 0),
            TensorQuant::new(1.0, 0),
            FusedActivation::None,
        )
        .unwrap();
        // 0.5 / 1.0 = 0.5 -> (2^30, 0); 0.25 -> (2^30, -1); 1.0 / 2^20 -> (2^30, -19).
        assert_eq!(
            p.input1_multiplier,
            QuantizedMultiplier {
                multiplier: 1 << 30,
                shift: 0
            }
        );
        assert_eq!(
            p.input2_multiplier,
            QuantizedMultiplier {
                multiplier: 1 << 30,
                shift: -1
            }
        );
        assert_eq!(
            p.output_multiplier,
            QuantizedMultiplier {
                multiplier: 1 << 30,
                shift: -19
            }
        );
        // 10 * 0.5 + 8 * 0.25 = 7.
        assert_eq!(p.add_one(10, 8), 7);
        assert_eq!(p.add_one(-10, -8), -7);
    }

    #[test]
    fn broadcast_and_relu() {
        let q = TensorQuant::new(1.0, 0);
        let p = AddParams::prepare(q, q, q, FusedActivation::Relu).unwrap();
        let plan = Broadcast::new(&[2, 2], &[2]).unwrap();
        let mut out = [0i8; 4];
        add_i8(&p, &plan, &[1, 2, -10, 4], &[10, -20], &mut out);
        assert_eq!(out, [11, 0, 0, 0]);
        let mut outf = [0.0f32; 4];
        add_f32(
            FusedActivation::Relu.range_f32(),
            &plan,
            &[1.0, 2.0, -10.0, 4.0],
            &[10.0, -20.0],
            &mut outf,
        );
        assert_eq!(outf, [11.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn saturates() {
        let q = TensorQuant::new(1.0, 0);
        let p = AddParams::prepare(q, q, q, FusedActivation::None).unwrap();
        assert_eq!(p.add_one(100, 100), 127);
        assert_eq!(p.add_one(-100, -100), -128);
    }

    proptest! {
        #[test]
        fn close_to_float_math(
            x in any::<i8>(), y in any::<i8>(),
            s1 in 0.001f32..1.0, s2 in 0.001f32..1.0, so in 0.002f32..2.0,
            z1 in -128i32..128, z2 in -128i32..128, zo in -128i32..128,
        ) {
            let (q1, q2, qo) = (TensorQuant::new(s1, z1), TensorQuant::new(s2, z2), TensorQuant::new(so, zo));
            let p = AddParams::prepare(q1, q2, qo, FusedActivation::None).unwrap();
            let real = s1 * (i32::from(x) - z1) as f32 + s2 * (i32::from(y) - z2) as f32;
            let expect = ((real / so).round() as i32 + zo).clamp(-128, 127);
            let got = i32::from(p.add_one(x, y));
            prop_assert!((got - expect).abs() <= 1, "got {} expect {}", got, expect);
        }
    }
}
