//! RELU6 as a standalone op.
//!
//! int8 follows TFLM's `Relu6Quantized`: **no requantization** (TFLM assumes output
//! quantization equals the input's); values are clamped to `[zp, q(6)]` where
//! `q(6) = clamp(round(6 / in_scale) + zp)` (TFLM's `FloatToQuantizedType`).

use crate::error::Result;
use crate::quant::{round_f32, TensorQuant};

/// int8 RELU6 bounds in the input's quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relu6Params {
    /// Quantized 0 (the input zero point).
    pub zero: i8,
    /// Quantized 6.
    pub six: i8,
}

impl Relu6Params {
    /// TFLM's `Relu6Prepare` for int8.
    pub fn prepare(input: TensorQuant) -> Result<Self> {
        let input = input.validate()?;
        let six = (round_f32(6.0 / input.scale) as i32)
            .saturating_add(input.zero_point)
            .clamp(-128, 127);
        Ok(Self {
            zero: input.zero_point as i8,
            six: six as i8,
        })
    }
}

impl Relu6Params {
    /// One output element.
    #[inline]
    pub fn relu6_one(&self, x: i8) -> i8 {
        if x > self.six {
            self.six
        } else if x < self.zero {
            self.zero
        } else {
            x
        }
    }
}

/// int8 RELU6, bit-exact with TFLM. Precondition: `input.len() == output.len()`;
/// otherwise nothing is written.
pub fn relu6_i8(p: &Relu6Params, input: &[i8], output: &mut [i8]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = p.relu6_one(x);
    }
}

/// In-place int8 RELU6: overwrites `data` with [`relu6_i8`] of it.
pub fn relu6_i8_in_place(p: &Relu6Params, data: &mut [i8]) {
    for v in data.iter_mut() {
        *v = p.relu6_one(*v);
    }
}

/// f32 RELU6: `x > 6 ? 6 : x < 0 ? 0 : x`. Precondition: `input.len() ==
/// output.len()`; otherwise nothing is written.
pub fn relu6_f32(input: &[f32], output: &mut [f32]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        // Same as TFLM's `x > 6 ? 6 : x < 0 ? 0 : x`, NaN included.
        *o = x.clamp(0.0, 6.0);
    }
}

/// In-place f32 RELU6: overwrites `data` with [`relu6_f32`] of it.
pub fn relu6_f32_in_place(data: &mut [f32]) {
    for v in data.iter_mut() {
        *v = v.clamp(0.0, 6.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_in_input_scale() {
        let p = Relu6Params::prepare(TensorQuant::new(0.05, -100)).unwrap();
        assert_eq!(
            p,
            Relu6Params {
                zero: -100,
                six: 20
            }
        );
        let mut out = [0i8; 4];
        relu6_i8(&p, &[-128, -50, 20, 127], &mut out);
        assert_eq!(out, [-100, -50, 20, 20]);
        let p = Relu6Params::prepare(TensorQuant::new(0.01, 0)).unwrap();
        assert_eq!(p.six, 127);
        let mut outf = [0.0f32; 3];
        relu6_f32(&[-1.0, 3.0, 7.0], &mut outf);
        assert_eq!(outf, [0.0, 3.0, 6.0]);
    }
}
