//! RELU as a standalone op.
//!
//! int8 follows TFLM's `ReluQuantized`: unlike RELU6 it **requantizes** from the input
//! to the output scale (`M = (f64)(in_scale / out_scale)`, the division in f32), then
//! clamps to `[max(-128, zp_out), 127]`.

use crate::activation::ActivationRange;
use crate::error::Result;
use crate::quant::{quantize_multiplier, round_f32, QuantizedMultiplier, TensorQuant};

/// int8 RELU params (TFLM's `ReluOpData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReluParams {
    /// Input zero point (subtracted).
    pub input_zero_point: i32,
    /// Output zero point (added).
    pub output_zero_point: i32,
    /// `in_scale / out_scale`.
    pub multiplier: QuantizedMultiplier,
    /// `[max(-128, zp_out + round(0 / out_scale)), 127]`.
    pub activation: ActivationRange,
}

impl ReluParams {
    /// TFLM's `CalculateReluOpData<int8_t>`.
    pub fn prepare(input: TensorQuant, output: TensorQuant) -> Result<Self> {
        let (input, output) = (input.validate()?, output.validate()?);
        let multiplier = quantize_multiplier(f64::from(input.scale / output.scale))?;
        let min = (output.zero_point + round_f32(0.0 / output.scale) as i32).max(-128);
        Ok(Self {
            input_zero_point: input.zero_point,
            output_zero_point: output.zero_point,
            multiplier,
            activation: ActivationRange { min, max: 127 },
        })
    }
}

impl ReluParams {
    /// One output element.
    #[inline]
    pub fn relu_one(&self, x: i8) -> i8 {
        let v = self
            .multiplier
            .apply(i32::from(x) - self.input_zero_point)
            .wrapping_add(self.output_zero_point);
        self.activation.clamp_i8(v)
    }
}

/// int8 RELU, bit-exact with TFLM. Precondition: `input.len() == output.len()`;
/// otherwise nothing is written.
pub fn relu_i8(p: &ReluParams, input: &[i8], output: &mut [i8]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = p.relu_one(x);
    }
}

/// In-place int8 RELU: overwrites `data` with [`relu_i8`] of it.
pub fn relu_i8_in_place(p: &ReluParams, data: &mut [i8]) {
    for v in data.iter_mut() {
        *v = p.relu_one(*v);
    }
}

#[inline]
fn relu_f32_one(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// f32 RELU: `x < 0 ? 0 : x` (NaN passes through, as in TFLM). Precondition:
/// `input.len() == output.len()`; otherwise nothing is written.
pub fn relu_f32(input: &[f32], output: &mut [f32]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = relu_f32_one(x);
    }
}

/// In-place f32 RELU: overwrites `data` with [`relu_f32`] of it.
pub fn relu_f32_in_place(data: &mut [f32]) {
    for v in data.iter_mut() {
        *v = relu_f32_one(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requantizes_and_clamps() {
        let p = ReluParams::prepare(TensorQuant::new(0.1, 10), TensorQuant::new(0.2, -20)).unwrap();
        let mut out = [0i8; 4];
        relu_i8(&p, &[10, 0, 30, 127], &mut out);
        // (x - 10) / 2 - 20, clamped at -20.
        assert_eq!(out, [-20, -20, -10, 39]);
        let mut outf = [0.0f32; 2];
        relu_f32(&[-1.0, 2.0], &mut outf);
        assert_eq!(outf, [0.0, 2.0]);
    }
}
