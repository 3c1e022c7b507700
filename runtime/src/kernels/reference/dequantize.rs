//! DEQUANTIZE: int8 -> f32 as TFLM's `Dequantize`: `(f32)((f64)scale * (q - zp))`, the
//! product taken in `f64` and rounded to `f32` once.

use crate::error::Result;
use crate::quant::TensorQuant;

/// int8 -> f32 params: the input tensor's scale and zero point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DequantizeParams {
    /// Input scale.
    pub scale: f32,
    /// Input zero point.
    pub zero_point: i32,
}

impl DequantizeParams {
    /// Params for dequantizing from `input`.
    pub fn prepare(input: TensorQuant) -> Result<Self> {
        let input = input.validate()?;
        Ok(Self {
            scale: input.scale,
            zero_point: input.zero_point,
        })
    }
}

/// int8 -> f32, bit-exact with TFLM. Precondition: `input.len() == output.len()`;
/// otherwise nothing is written.
pub fn dequantize_i8_to_f32(p: &DequantizeParams, input: &[i8], output: &mut [f32]) {
    if input.len() != output.len() {
        return;
    }
    let scale = f64::from(p.scale);
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = (scale * f64::from(i32::from(x) - p.zero_point)) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dequantizes_in_f64() {
        let p = DequantizeParams::prepare(TensorQuant::new(0.1, -2)).unwrap();
        let mut out = [0.0f32; 3];
        dequantize_i8_to_f32(&p, &[-2, 8, -128], &mut out);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[1], (f64::from(0.1f32) * 10.0) as f32);
        assert_eq!(out[2], (f64::from(0.1f32) * -126.0) as f32);
    }
}
