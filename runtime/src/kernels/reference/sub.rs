//! SUB with NumPy broadcasting up to 6 dims.
//!
//! int8 follows TFLM's `SubElementwise` / `BroadcastQuantSubSlow`: the structure and
//! multipliers of ADD (both inputs offset, shifted left by 20 bits and scaled below one,
//! then the difference scaled to the output), with the scaled second input
//! **subtracted** (`scaled1 - scaled2`). Negating its multiplier instead would not be
//! exact: the rounding high multiply rounds ties toward +infinity, so
//! `SRDHM(x, -m) != -SRDHM(x, m)` on ties.
//!
//! TFLM's `CalculateOpDataSub` writes the real multipliers as `float` expressions
//! (`2 * max(s1, s2)`, `s1 / twice_max`, ...), but its pip build (kiln's reference)
//! evaluates them in double precision: checked exhaustively over all int8 input pairs
//! for random quantizations, the f64 evaluation matches TFLM everywhere while the f32 one
//! misses ties. So the multipliers here are computed in f64, exactly as ADD's.
//!
//! Overflow: as for ADD, every intermediate fits `i32` (`|x - zp| <= 255`, times `2^20`,
//! times multipliers below one).

use crate::activation::{ActivationRange, ActivationRangeF32, FusedActivation};
use crate::error::Result;
use crate::kernels::reference::add::ADD_LEFT_SHIFT;
use crate::quant::{
    multiply_by_quantized_multiplier_smaller_than_one_exp as mul_small,
    quantize_multiplier_smaller_than_one_exp, QuantizedMultiplier, TensorQuant,
};
use crate::shape::Broadcast;

/// Everything the int8 SUB kernel needs, as TFLM's `CalculateOpDataSub` computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubParams {
    /// `-input1_zero_point`.
    pub input1_offset: i32,
    /// `-input2_zero_point`.
    pub input2_offset: i32,
    /// `output_zero_point`.
    pub output_offset: i32,
    /// Always [`ADD_LEFT_SHIFT`] (20) for int8.
    pub left_shift: i32,
    /// `s1 / (2 * max(s1, s2))`, shift <= 0.
    pub input1_multiplier: QuantizedMultiplier,
    /// `s2 / (2 * max(s1, s2))`, shift <= 0.
    pub input2_multiplier: QuantizedMultiplier,
    /// `2 * max(s1, s2) / (2^20 * s_out)`, shift <= 0.
    pub output_multiplier: QuantizedMultiplier,
    /// Fused-activation clamp.
    pub activation: ActivationRange,
}

impl SubParams {
    /// TFLM's int8 Prepare for SUB: per-input multipliers below one and an output
    /// multiplier via `QuantizeMultiplierSmallerThanOneExp`, from f64 ratios (an error
    /// where TFLM's CHECK fails, e.g. `out_scale < 2 * max_in_scale / 2^20`).
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
        // f64, as TFLM's build evaluates the expressions (see the module doc).
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

    /// One output element: `x - y`, requantized and clamped.
    #[inline]
    pub fn sub_one(&self, x: i8, y: i8) -> i8 {
        let shifted1 = (self.input1_offset + i32::from(x)).wrapping_mul(1 << self.left_shift);
        let shifted2 = (self.input2_offset + i32::from(y)).wrapping_mul(1 << self.left_shift);
        let (m1, m2, mo) = (
            self.input1_multiplier,
            self.input2_multiplier,
            self.output_multiplier,
        );
        let scaled1 = mul_small(shifted1, m1.multiplier, m1.shift);
        let scaled2 = mul_small(shifted2, m2.multiplier, m2.shift);
        let raw_sub = scaled1.wrapping_sub(scaled2);
        let raw_output =
            mul_small(raw_sub, mo.multiplier, mo.shift).wrapping_add(self.output_offset);
        self.activation.clamp_i8(raw_output)
    }
}

/// int8 SUB (`a - b`) with broadcasting, bit-exact with TFLM. Preconditions: `a`, `b`,
/// `out` have the element counts of the shapes `plan` was built from and its output
/// ([`Broadcast::accepts`]); otherwise nothing is written.
pub fn sub_i8(p: &SubParams, plan: &Broadcast, a: &[i8], b: &[i8], out: &mut [i8]) {
    plan.apply(a, b, out, |x, y| p.sub_one(x, y));
}

/// In-place int8 SUB: `inout` is the operand whose shape equals the output shape (the
/// minuend if `inout_is_first`, else the subtrahend) and is overwritten with the
/// difference; `other` may be broadcast. Exactly [`sub_i8`]'s result. Preconditions as
/// [`Broadcast::apply_in_place`]; otherwise nothing is written.
pub fn sub_i8_in_place(
    p: &SubParams,
    plan: &Broadcast,
    inout: &mut [i8],
    other: &[i8],
    inout_is_first: bool,
) {
    plan.apply_in_place(inout, other, inout_is_first, |x, y| p.sub_one(x, y));
}

/// f32 SUB (`a - b`) with broadcasting and the fused-activation clamp. Same
/// preconditions as [`sub_i8`].
pub fn sub_f32(
    activation: ActivationRangeF32,
    plan: &Broadcast,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
    plan.apply(a, b, out, |x, y| activation.apply(x - y));
}

/// In-place f32 SUB, the twin of [`sub_i8_in_place`]: exactly [`sub_f32`]'s result.
pub fn sub_f32_in_place(
    activation: ActivationRangeF32,
    plan: &Broadcast,
    inout: &mut [f32],
    other: &[f32],
    inout_is_first: bool,
) {
    plan.apply_in_place(inout, other, inout_is_first, |x, y| activation.apply(x - y));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::add::AddParams;
    use proptest::prelude::*;

    #[test]
    fn hand_checked() {
        let p = SubParams::prepare(
            TensorQuant::new(0.5, 0),
            TensorQuant::new(0.25, 0),
            TensorQuant::new(1.0, 0),
            FusedActivation::None,
        )
        .unwrap();
        // 10 * 0.5 - 8 * 0.25 = 3.
        assert_eq!(p.sub_one(10, 8), 3);
        assert_eq!(p.sub_one(-10, -8), -3);
        assert_eq!(p.sub_one(100, -100), 75);
        let q = TensorQuant::new(1.0, 0);
        let p = SubParams::prepare(q, q, q, FusedActivation::None).unwrap();
        assert_eq!(p.sub_one(100, -100), 127);
        assert_eq!(p.sub_one(-100, 100), -128);
    }

    #[test]
    fn broadcast_both_orders_and_relu() {
        let q = TensorQuant::new(1.0, 0);
        let p = SubParams::prepare(q, q, q, FusedActivation::Relu).unwrap();
        let plan = Broadcast::new(&[2, 2], &[2]).unwrap();
        let mut out = [0i8; 4];
        sub_i8(&p, &plan, &[1, 2, -10, 40], &[10, -20], &mut out);
        assert_eq!(out, [0, 22, 0, 60]);
        let plan = Broadcast::new(&[2], &[2, 2]).unwrap();
        sub_i8(&p, &plan, &[10, -20], &[1, 2, -10, 40], &mut out);
        assert_eq!(out, [9, 0, 20, 0]);
        let mut outf = [0.0f32; 4];
        sub_f32(
            FusedActivation::Relu.range_f32(),
            &plan,
            &[10.0, -20.0],
            &[1.0, 2.0, -10.0, 40.0],
            &mut outf,
        );
        assert_eq!(outf, [9.0, 0.0, 20.0, 0.0]);
    }

    #[test]
    fn in_place_matches_out_of_place() {
        let p = SubParams::prepare(
            TensorQuant::new(0.03, 5),
            TensorQuant::new(0.08, -20),
            TensorQuant::new(0.1, 3),
            FusedActivation::Relu6,
        )
        .unwrap();
        let big: Vec<i8> = (0..24).map(|i| (i * 11 - 128) as i8).collect();
        let small = [7i8, -90, 55];
        for first in [true, false] {
            let (s1, s2): (&[usize], &[usize]) = if first {
                (&[2, 4, 3], &[3])
            } else {
                (&[3], &[2, 4, 3])
            };
            let plan = Broadcast::new(s1, s2).unwrap();
            let mut want = vec![0i8; 24];
            let (a, b): (&[i8], &[i8]) = if first {
                (&big, &small)
            } else {
                (&small, &big)
            };
            sub_i8(&p, &plan, a, b, &mut want);
            let mut inout = big.clone();
            sub_i8_in_place(&p, &plan, &mut inout, &small, first);
            assert_eq!(inout, want);
        }
    }

    /// SUB has ADD's multipliers; where the scaled subtrahend is exact (no rounding in
    /// the high multiply), SUB of `y` is ADD of `-y`.
    #[test]
    fn agrees_with_add_of_the_mirrored_operand() {
        let q = TensorQuant::new(0.5, 0);
        let s = SubParams::prepare(q, q, TensorQuant::new(0.5, 0), FusedActivation::None);
        let a = AddParams::prepare(q, q, TensorQuant::new(0.5, 0), FusedActivation::None);
        let (s, a) = (s.unwrap(), a.unwrap());
        for x in -127i8..=127 {
            for y in [-127i8, -3, 0, 1, 77, 127] {
                assert_eq!(s.sub_one(x, y), a.add_one(x, -y), "{x} - {y}");
            }
        }
    }

    #[test]
    fn wrong_lengths_write_nothing() {
        let q = TensorQuant::new(0.1, 0);
        let p = SubParams::prepare(q, q, q, FusedActivation::None).unwrap();
        let plan = Broadcast::new(&[2, 3], &[3]).unwrap();
        let mut out = [99i8; 5];
        sub_i8(&p, &plan, &[1; 6], &[1; 3], &mut out);
        sub_i8_in_place(&p, &plan, &mut out, &[1; 3], true);
        assert_eq!(out, [99; 5]);
        let mut outf = [99.0f32; 6];
        sub_f32(
            ActivationRangeF32::NONE,
            &plan,
            &[1.0; 6],
            &[1.0; 2],
            &mut outf,
        );
        assert_eq!(outf, [99.0; 6]);
    }

    proptest! {
        #[test]
        fn close_to_float_math(
            x in any::<i8>(), y in any::<i8>(),
            s1 in 0.001f32..1.0, s2 in 0.001f32..1.0, so in 0.002f32..2.0,
            z1 in -128i32..128, z2 in -128i32..128, zo in -128i32..128,
        ) {
            let (q1, q2, qo) = (TensorQuant::new(s1, z1), TensorQuant::new(s2, z2), TensorQuant::new(so, zo));
            let p = SubParams::prepare(q1, q2, qo, FusedActivation::None).unwrap();
            let real = f64::from(s1) * f64::from(i32::from(x) - z1) - f64::from(s2) * f64::from(i32::from(y) - z2);
            let expect = ((real / f64::from(so)).round() as i32 + zo).clamp(-128, 127);
            let got = i32::from(p.sub_one(x, y));
            prop_assert!((got - expect).abs() <= 1, "got {} expect {}", got, expect);
        }
    }
}
