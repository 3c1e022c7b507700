//! QUANTIZE: f32 -> int8 (TFLM's `AffineQuantize`) and int8 -> int8 requantization
//! (TFLM's `Requantize`).
//!
//! `AffineQuantize` divides in **f32** (`x / (float)scale`), rounds with `roundf` (half
//! away from zero) and clamps. Divergence: for `|x / scale| >= 2^31` or NaN, C++'s
//! float-to-int conversion is undefined (x86 gives `INT_MIN`, hence -128); here the
//! conversion saturates (NaN -> 0, giving the zero point).

use crate::error::Result;
use crate::quant::{quantize_multiplier, round_f32, QuantizedMultiplier, TensorQuant};

/// f32 -> int8 quantization params: the output tensor's scale and zero point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantizeParams {
    /// Output scale.
    pub scale: f32,
    /// Output zero point.
    pub zero_point: i32,
}

impl QuantizeParams {
    /// Params for quantizing into `output`.
    pub fn prepare(output: TensorQuant) -> Result<Self> {
        let output = output.validate()?;
        Ok(Self {
            scale: output.scale,
            zero_point: output.zero_point,
        })
    }

    /// Quantizes one value.
    #[inline]
    pub fn quantize_one(&self, x: f32) -> i8 {
        let unclamped = (round_f32(x / self.scale) as i32).saturating_add(self.zero_point);
        unclamped.clamp(-128, 127) as i8
    }
}

/// f32 -> int8, bit-exact with TFLM's `AffineQuantize`. Precondition: `input.len() ==
/// output.len()`; otherwise nothing is written.
pub fn quantize_f32_to_i8(p: &QuantizeParams, input: &[f32], output: &mut [i8]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = p.quantize_one(x);
    }
}

/// int8 -> int8 requantization params (TFLM's QUANTIZE with int8 input and output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequantizeParams {
    /// Input zero point.
    pub input_zero_point: i32,
    /// Output zero point.
    pub output_zero_point: i32,
    /// `(f64)in_scale / (f64)out_scale`.
    pub multiplier: QuantizedMultiplier,
}

impl RequantizeParams {
    /// TFLM's Prepare for int8 -> int8 QUANTIZE.
    pub fn prepare(input: TensorQuant, output: TensorQuant) -> Result<Self> {
        let (input, output) = (input.validate()?, output.validate()?);
        Ok(Self {
            input_zero_point: input.zero_point,
            output_zero_point: output.zero_point,
            multiplier: quantize_multiplier(f64::from(input.scale) / f64::from(output.scale))?,
        })
    }
}

impl RequantizeParams {
    /// One output element.
    #[inline]
    pub fn requantize_one(&self, x: i8) -> i8 {
        let v = self
            .multiplier
            .apply(i32::from(x) - self.input_zero_point)
            .wrapping_add(self.output_zero_point);
        v.clamp(-128, 127) as i8
    }
}

/// int8 -> int8 requantization, bit-exact with TFLM's `Requantize`. Precondition:
/// `input.len() == output.len()`; otherwise nothing is written.
pub fn requantize_i8(p: &RequantizeParams, input: &[i8], output: &mut [i8]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = p.requantize_one(x);
    }
}

/// In-place int8 -> int8 requantization: overwrites `data` with [`requantize_i8`] of it.
pub fn requantize_i8_in_place(p: &RequantizeParams, data: &mut [i8]) {
    for v in data.iter_mut() {
        *v = p.requantize_one(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn affine_quantize_rounding() {
        let p = QuantizeParams::prepare(TensorQuant::new(0.5, -3)).unwrap();
        let mut out = [0i8; 6];
        quantize_f32_to_i8(&p, &[0.25, -0.25, 0.75, 100.0, -100.0, f32::NAN], &mut out);
        // 0.5 -> 1, -0.5 -> -1, 1.5 -> 2 (away from zero), then + zp and clamp.
        assert_eq!(out, [-2, -4, -1, 127, -128, -3]);
    }

    #[test]
    fn requantize_known() {
        let p =
            RequantizeParams::prepare(TensorQuant::new(0.2, 1), TensorQuant::new(0.1, -1)).unwrap();
        let mut out = [0i8; 3];
        requantize_i8(&p, &[1, 11, 100], &mut out);
        assert_eq!(out, [-1, 19, 127]);
    }

    proptest! {
        #[test]
        fn requantize_close_to_float(x in any::<i8>(), s1 in 0.001f32..1.0, s2 in 0.001f32..1.0,
                                     z1 in -128i32..128, z2 in -128i32..128) {
            let p = RequantizeParams::prepare(TensorQuant::new(s1, z1), TensorQuant::new(s2, z2)).unwrap();
            let mut out = [0i8; 1];
            requantize_i8(&p, &[x], &mut out);
            let real = f64::from(s1) * f64::from(i32::from(x) - z1);
            let expect = ((real / f64::from(s2)).round() as i32 + z2).clamp(-128, 127);
            prop_assert!((i32::from(out[0]) - expect).abs() <= 1);
        }
    }
}
