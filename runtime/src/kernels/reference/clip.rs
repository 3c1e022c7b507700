//! CLIP: `min(max(x, lo), hi)` with arbitrary bounds (ONNX Clip; the clamp left by
//! decomposing HardSigmoid / HardSwish). TFLite has no CLIP builtin; the int8 kernel is
//! built from TFLM's own pieces so that it agrees with them where they overlap:
//!
//! * the input is requantized to the output exactly as TFLM's int8 RELU does
//!   (`M = (f64)(in_scale / out_scale)`, the division in f32), then
//! * clamped to the bounds quantized like TFLM's `CalculateActivationRangeQuantized`
//!   (`zp + roundf(v / scale)` in f32), each limited to `[-128, 127]`; an infinite bound
//!   is no bound.
//!
//! So `clip(0, inf)` is TFLM's RELU bit for bit, and with equal input and output
//! quantization `clip(0, 6)`, `clip(-1, 1)` and `clip(0, inf)` are exactly the fused
//! RELU6 / RELU_N1_TO_1 / RELU clamps (which is what lets kiln fold them into the
//! producing op).
//!
//! f32 clamps with [`ActivationRangeF32::apply`], the fused-activation clamp; an infinite
//! bound becomes `f32::MIN` / `f32::MAX` as in TFLM's unbounded activation ranges. When
//! `lo > hi` every output is `hi` (ONNX's rule).

use crate::activation::{ActivationRange, ActivationRangeF32};
use crate::error::{Error, Result};
use crate::quant::{quantize_multiplier, round_f32, QuantizedMultiplier, TensorQuant};

/// int8 CLIP params: RELU-style requantization and a clamp range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipParams {
    /// Input zero point (subtracted).
    pub input_zero_point: i32,
    /// Output zero point (added).
    pub output_zero_point: i32,
    /// `in_scale / out_scale`.
    pub multiplier: QuantizedMultiplier,
    /// The quantized `[lo, hi]`, within `[-128, 127]`.
    pub range: ActivationRange,
}

/// `zp + roundf(v / scale)` clamped to int8, with `-inf` / `+inf` at the int8 ends (the
/// float-to-int conversion saturates, so huge finite bounds land there too).
fn quantize_bound(output: TensorQuant, v: f32) -> i32 {
    let q = (round_f32(v / output.scale) as i32).saturating_add(output.zero_point);
    q.clamp(i32::from(i8::MIN), i32::from(i8::MAX))
}

impl ClipParams {
    /// Params for clamping to `[min, max]` (either may be infinite, neither NaN) while
    /// requantizing from `input` to `output`.
    pub fn prepare(input: TensorQuant, output: TensorQuant, min: f32, max: f32) -> Result<Self> {
        let (input, output) = (input.validate()?, output.validate()?);
        if min.is_nan() || max.is_nan() {
            return Err(Error::InvalidWindow);
        }
        Ok(Self {
            input_zero_point: input.zero_point,
            output_zero_point: output.zero_point,
            multiplier: quantize_multiplier(f64::from(input.scale / output.scale))?,
            range: ActivationRange {
                min: quantize_bound(output, min),
                max: quantize_bound(output, max),
            },
        })
    }

    /// One output element.
    #[inline]
    pub fn clip_one(&self, x: i8) -> i8 {
        let v = self
            .multiplier
            .apply(i32::from(x).wrapping_sub(self.input_zero_point))
            .wrapping_add(self.output_zero_point);
        self.range.clamp_i8(v)
    }
}

/// The f32 clamp range of `clip(min, max)`: infinite bounds become `f32::MIN` /
/// `f32::MAX`; NaN bounds are refused.
pub fn clip_range_f32(min: f32, max: f32) -> Result<ActivationRangeF32> {
    if min.is_nan() || max.is_nan() {
        return Err(Error::InvalidWindow);
    }
    Ok(ActivationRangeF32 {
        min: min.clamp(f32::MIN, f32::MAX),
        max: max.clamp(f32::MIN, f32::MAX),
    })
}

/// int8 CLIP. Precondition: `input.len() == output.len()`; otherwise nothing is written.
pub fn clip_i8(p: &ClipParams, input: &[i8], output: &mut [i8]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = p.clip_one(x);
    }
}

/// In-place int8 CLIP: overwrites `data` with [`clip_i8`] of it.
pub fn clip_i8_in_place(p: &ClipParams, data: &mut [i8]) {
    for v in data.iter_mut() {
        *v = p.clip_one(*v);
    }
}

/// f32 CLIP with a range from [`clip_range_f32`]. Precondition: `input.len() ==
/// output.len()`; otherwise nothing is written.
pub fn clip_f32(range: ActivationRangeF32, input: &[f32], output: &mut [f32]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = range.apply(x);
    }
}

/// In-place f32 CLIP: overwrites `data` with [`clip_f32`] of it.
pub fn clip_f32_in_place(range: ActivationRangeF32, data: &mut [f32]) {
    for v in data.iter_mut() {
        *v = range.apply(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::FusedActivation;
    use crate::kernels::reference::relu::ReluParams;
    use crate::kernels::reference::test_util::quantize_one;
    use proptest::prelude::*;

    #[test]
    fn hand_checked() {
        let q = TensorQuant::new(0.1, 10);
        let p = ClipParams::prepare(q, q, -1.0, 2.5).unwrap();
        assert_eq!(p.range, ActivationRange { min: 0, max: 35 });
        let mut out = [0i8; 4];
        clip_i8(&p, &[-128, 5, 30, 127], &mut out);
        assert_eq!(out, [0, 5, 30, 35]);
        let p = ClipParams::prepare(q, q, f32::NEG_INFINITY, f32::INFINITY).unwrap();
        assert_eq!(p.range, ActivationRange::FULL_I8);
        let p = ClipParams::prepare(q, q, -1e30, 1e30).unwrap();
        assert_eq!(p.range, ActivationRange::FULL_I8);
        assert!(ClipParams::prepare(q, q, f32::NAN, 1.0).is_err());

        let r = clip_range_f32(f32::NEG_INFINITY, 6.0).unwrap();
        assert_eq!(
            r,
            ActivationRangeF32 {
                min: f32::MIN,
                max: 6.0
            }
        );
        let mut outf = [0.0f32; 3];
        clip_f32(r, &[-1e9, 3.0, 7.0], &mut outf);
        assert_eq!(outf, [-1e9, 3.0, 6.0]);
        // lo > hi: everything is hi.
        clip_f32(
            clip_range_f32(2.0, 1.0).unwrap(),
            &[0.0, 1.5, 9.0],
            &mut outf,
        );
        assert_eq!(outf, [1.0, 1.0, 1.0]);
    }

    #[test]
    fn fused_activation_ranges_are_special_cases() {
        for (s, z) in [
            (0.1f32, 10),
            (0.05, -128),
            (0.3, 127),
            (0.0078125, 0),
            (0.48, -3),
        ] {
            let q = TensorQuant::new(s, z);
            for (act, lo, hi) in [
                (FusedActivation::Relu, 0.0, f32::INFINITY),
                (FusedActivation::Relu6, 0.0, 6.0),
                (FusedActivation::ReluN1To1, -1.0, 1.0),
            ] {
                let p = ClipParams::prepare(q, q, lo, hi).unwrap();
                assert_eq!(p.range, act.range_i8(s, z).unwrap(), "{act:?} {s} {z}");
                assert_eq!(clip_range_f32(lo, hi).unwrap(), act.range_f32());
            }
        }
    }

    #[test]
    fn in_place_and_wrong_lengths() {
        let p = ClipParams::prepare(
            TensorQuant::new(0.1, 3),
            TensorQuant::new(0.2, -9),
            -3.0,
            5.0,
        )
        .unwrap();
        let x: Vec<i8> = (-128..=127).collect();
        let mut want = vec![0i8; 256];
        clip_i8(&p, &x, &mut want);
        let mut inout = x.clone();
        clip_i8_in_place(&p, &mut inout);
        assert_eq!(inout, want);
        let mut out = [99i8; 3];
        clip_i8(&p, &x, &mut out);
        assert_eq!(out, [99; 3]);
        let r = clip_range_f32(-1.0, 1.0).unwrap();
        let mut outf = [99.0f32; 2];
        clip_f32(r, &[5.0], &mut outf);
        assert_eq!(outf, [99.0; 2]);
        let mut inout = [-5.0f32, 0.5, 5.0];
        clip_f32_in_place(r, &mut inout);
        assert_eq!(inout, [-1.0, 0.5, 1.0]);
    }

    proptest! {
        #[test]
        fn relu_is_clip_from_zero(x in any::<i8>(), si in 0.001f32..1.0, so in 0.001f32..1.0,
                                  zi in -128i32..128, zo in -128i32..128) {
            let (qi, qo) = (TensorQuant::new(si, zi), TensorQuant::new(so, zo));
            let clip = ClipParams::prepare(qi, qo, 0.0, f32::INFINITY).unwrap();
            let relu = ReluParams::prepare(qi, qo).unwrap();
            prop_assert_eq!(clip.clip_one(x), relu.relu_one(x));
        }

        #[test]
        fn within_half_a_step_of_float(x in any::<i8>(), si in 0.001f32..0.5, so in 0.001f32..0.5,
                                       zi in -128i32..128, zo in -128i32..128,
                                       lo in -20.0f32..0.0, width in 0.0f32..20.0) {
            let (qi, qo) = (TensorQuant::new(si, zi), TensorQuant::new(so, zo));
            let p = ClipParams::prepare(qi, qo, lo, lo + width).unwrap();
            let real = (si * (i32::from(x) - zi) as f32).clamp(lo, lo + width);
            let got = f32::from(p.clip_one(x));
            let want = f32::from(quantize_one(real, qo));
            // Requantizing and quantizing the bounds each round once: one step at most.
            prop_assert!((got - want).abs() <= 1.0, "got {} want {}", got, want);
        }
    }
}
