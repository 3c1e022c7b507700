//! PAD / PADV2: constant padding of up to 6 dims. A pure copy, identical for every
//! element type; int8 pads with the output zero point unless a constant is given
//! (TFLM requires that constant to share the output's quantization).

use crate::error::{Error, Result};
use crate::shape::{Shape, MAX_DIMS};

/// Input shape and per-dimension padding of one PAD call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PadParams {
    input: [usize; MAX_DIMS],
    before: [usize; MAX_DIMS],
    after: [usize; MAX_DIMS],
    rank: usize,
}

impl PadParams {
    /// Params from the input shape and `(before, after)` padding per dimension (TFLite's
    /// `paddings` tensor, which must have one row per input dimension).
    pub fn new(input_shape: &[usize], paddings: &[(usize, usize)]) -> Result<Self> {
        let shape = Shape::new(input_shape)?;
        if paddings.len() != input_shape.len() {
            return Err(Error::ShapeMismatch);
        }
        let off = MAX_DIMS - shape.rank();
        let mut before = [0; MAX_DIMS];
        let mut after = [0; MAX_DIMS];
        for (i, &(b, a)) in paddings.iter().enumerate() {
            before[off + i] = b;
            after[off + i] = a;
        }
        Ok(Self {
            input: shape.extended(),
            before,
            after,
            rank: shape.rank(),
        })
    }

    /// The padded output shape.
    pub fn output_shape(&self) -> Shape {
        let mut dims = [0; MAX_DIMS];
        for (i, d) in dims.iter_mut().enumerate() {
            *d = self.before[i] + self.input[i] + self.after[i];
        }
        Shape::from_trailing(&dims, self.rank)
    }

    /// Number of input elements.
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    /// Number of output elements.
    pub fn output_len(&self) -> usize {
        self.output_shape().flat_size()
    }
}

/// PAD for any element type. Preconditions: `input.len() == p.input_len()`,
/// `output.len() == p.output_len()`.
pub fn pad<T: Copy>(p: &PadParams, input: &[T], pad_value: T, output: &mut [T]) {
    let mut out_dims = [0; MAX_DIMS];
    let mut in_strides = [0; MAX_DIMS];
    let mut s = 1;
    for i in (0..MAX_DIMS).rev() {
        out_dims[i] = p.before[i] + p.input[i] + p.after[i];
        in_strides[i] = s;
        s *= p.input[i];
    }
    let inside = |i: usize, c: usize| c >= p.before[i] && c < p.before[i] + p.input[i];
    let mut o = 0;
    let mut idx = [0usize; MAX_DIMS];
    let total: usize = out_dims.iter().product();
    while o < total {
        let mut in_off = 0;
        let mut is_in = true;
        for i in 0..MAX_DIMS {
            if inside(i, idx[i]) {
                in_off += (idx[i] - p.before[i]) * in_strides[i];
            } else {
                is_in = false;
                break;
            }
        }
        output[o] = if is_in { input[in_off] } else { pad_value };
        o += 1;
        for i in (0..MAX_DIMS).rev() {
            idx[i] += 1;
            if idx[i] < out_dims[i] {
                break;
            }
            idx[i] = 0;
        }
    }
}

/// int8 PAD, padding with `pad_value` (the output zero point for PAD, the quantized
/// constant for PADV2).
pub fn pad_i8(p: &PadParams, input: &[i8], pad_value: i8, output: &mut [i8]) {
    pad(p, input, pad_value, output);
}

/// f32 PAD (`pad_value` 0.0 for PAD).
pub fn pad_f32(p: &PadParams, input: &[f32], pad_value: f32, output: &mut [f32]) {
    pad(p, input, pad_value, output);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_2d() {
        let p = PadParams::new(&[2, 2], &[(1, 0), (0, 2)]).unwrap();
        assert_eq!(p.output_shape().dims(), &[3, 4]);
        let mut out = [0i8; 12];
        pad_i8(&p, &[1, 2, 3, 4], -7, &mut out);
        assert_eq!(out, [-7, -7, -7, -7, 1, 2, -7, -7, 3, 4, -7, -7]);
    }

    #[test]
    fn pads_nhwc_spatially() {
        let p = PadParams::new(&[1, 1, 2, 1], &[(0, 0), (1, 1), (0, 1), (0, 0)]).unwrap();
        let mut out = [9.0f32; 9];
        pad_f32(&p, &[1.0, 2.0], 0.0, &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(PadParams::new(&[2, 2], &[(1, 1)]).is_err());
    }
}
