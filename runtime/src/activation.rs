//! Fused activations and the clamp ranges they become.
//!
//! A TFLite op with a fused activation does not run a separate ReLU: the activation
//! narrows the output clamp. For int8 the range comes from quantizing 0, 6, -1 and 1
//! with the *output* scale and zero point exactly as TFLM's
//! `CalculateActivationRangeQuantized` does (`f32` division, `roundf`).

use crate::error::{Error, Result};
use crate::quant::{check_scale, check_zero_point_i8, round_f32};

/// The fused activation attached to conv, depthwise, fully connected, pooling, add, mul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FusedActivation {
    /// No clamp beyond the output type's range.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `clamp(x, -1, 1)` (TFLite's `RELU_N1_TO_1`).
    ReluN1To1,
    /// `clamp(x, 0, 6)`.
    Relu6,
}

/// Inclusive int8 clamp bounds, kept as `i32` because kernels clamp the 32-bit result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationRange {
    /// Smallest output value (>= -128).
    pub min: i32,
    /// Largest output value (<= 127).
    pub max: i32,
}

impl ActivationRange {
    /// The whole int8 range: no activation.
    pub const FULL_I8: Self = Self {
        min: i8::MIN as i32,
        max: i8::MAX as i32,
    };

    /// Clamps a 32-bit result into the range and narrows it to `i8`.
    #[inline]
    pub fn clamp_i8(self, x: i32) -> i8 {
        x.max(self.min).min(self.max) as i8
    }
}

/// Inclusive `f32` clamp bounds for float kernels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationRangeF32 {
    /// Lower bound (`f32::MIN` when unbounded, as TFLM's `lowest()`).
    pub min: f32,
    /// Upper bound (`f32::MAX` when unbounded).
    pub max: f32,
}

impl ActivationRangeF32 {
    /// No clamping.
    pub const NONE: Self = Self {
        min: f32::MIN,
        max: f32::MAX,
    };

    /// Clamps `x` like TFLM's `ActivationFunctionWithMinMax`: `min(max(x, lo), hi)`.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        let lo = if x < self.min { self.min } else { x };
        if self.max < lo {
            self.max
        } else {
            lo
        }
    }
}

/// TFLM's private `Quantize` helper: `zero_point + (int)roundf(f / scale)`, erroring when
/// the rounded value does not fit `i32`.
fn quantize_bound(scale: f32, zero_point: i32, f: f32) -> Result<i32> {
    let tmp = round_f32(f / scale);
    if !(tmp >= i32::MIN as f32 && tmp <= i32::MAX as f32) {
        return Err(Error::InvalidScale);
    }
    Ok(zero_point.saturating_add(tmp as i32))
}

impl FusedActivation {
    /// The int8 clamp range for an output with this scale and zero point: TFLM's
    /// `CalculateActivationRangeQuantized` for `kTfLiteInt8`.
    pub fn range_i8(self, output_scale: f32, output_zero_point: i32) -> Result<ActivationRange> {
        check_scale(output_scale)?;
        check_zero_point_i8(output_zero_point)?;
        let (qmin, qmax) = (i32::from(i8::MIN), i32::from(i8::MAX));
        let q = |f: f32| quantize_bound(output_scale, output_zero_point, f);
        let (min, max) = match self {
            FusedActivation::None => (qmin, qmax),
            FusedActivation::Relu => (qmin.max(q(0.0)?), qmax),
            FusedActivation::Relu6 => (qmin.max(q(0.0)?), qmax.min(q(6.0)?)),
            FusedActivation::ReluN1To1 => (qmin.max(q(-1.0)?), qmax.min(q(1.0)?)),
        };
        Ok(ActivationRange { min, max })
    }

    /// The float clamp range: TFLM's `CalculateActivationRange` for `float`.
    pub fn range_f32(self) -> ActivationRangeF32 {
        match self {
            FusedActivation::None => ActivationRangeF32::NONE,
            FusedActivation::Relu => ActivationRangeF32 {
                min: 0.0,
                max: f32::MAX,
            },
            FusedActivation::ReluN1To1 => ActivationRangeF32 {
                min: -1.0,
                max: 1.0,
            },
            FusedActivation::Relu6 => ActivationRangeF32 { min: 0.0, max: 6.0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_ranges() {
        let r = FusedActivation::None.range_i8(0.1, 3).unwrap();
        assert_eq!(r, ActivationRange::FULL_I8);
        let r = FusedActivation::Relu.range_i8(0.1, -5).unwrap();
        assert_eq!((r.min, r.max), (-5, 127));
        // 6 / 0.05 = 120 (+ zp -10 = 110)
        let r = FusedActivation::Relu6.range_i8(0.05, -10).unwrap();
        assert_eq!((r.min, r.max), (-10, 110));
        // Upper bound beyond int8 is clipped to 127.
        let r = FusedActivation::Relu6.range_i8(0.01, 0).unwrap();
        assert_eq!((r.min, r.max), (0, 127));
        // -1 / 0.3 = -3.33 -> -3; 1 / 0.3 -> 3.
        let r = FusedActivation::ReluN1To1.range_i8(0.3, 1).unwrap();
        assert_eq!((r.min, r.max), (-2, 4));
        assert!(FusedActivation::Relu.range_i8(0.0, 0).is_err());
    }

    #[test]
    fn rounding_is_half_away_from_zero_in_f32() {
        // 6 / 0.48 = 12.5 in f32 -> 13.
        let r = FusedActivation::Relu6.range_i8(0.48, 0).unwrap();
        assert_eq!(r.max, round_f32(6.0f32 / 0.48f32) as i32);
    }

    #[test]
    fn f32_ranges_and_clamp() {
        let r = FusedActivation::Relu6.range_f32();
        assert_eq!(r.apply(7.0), 6.0);
        assert_eq!(r.apply(-1.0), 0.0);
        assert_eq!(FusedActivation::None.range_f32().apply(-1e30), -1e30);
        assert_eq!(ActivationRange { min: -3, max: 5 }.clamp_i8(100), 5);
    }
}
