//! PAD / PADV2: constant padding of up to 6 dims. A pure copy, identical for every
//! element type; int8 pads with the output zero point unless a constant is given
//! (TFLM requires that constant to share the output's quantization).

use crate::error::{Error, Result};
use crate::shape::{checked_product, Shape, MAX_DIMS};
use crate::unchecked::get;

/// Input shape and per-dimension padding of one PAD call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PadParams {
    /// Input dims, left-padded with 1 to `MAX_DIMS`.
    pub input: [usize; MAX_DIMS],
    /// Padding before each dim.
    pub before: [usize; MAX_DIMS],
    /// Padding after each dim.
    pub after: [usize; MAX_DIMS],
    /// Number of meaningful dims.
    pub rank: usize,
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
        for ((b, a), &(pb, pa)) in before
            .iter_mut()
            .zip(after.iter_mut())
            .skip(off)
            .zip(paddings)
        {
            *b = pb;
            *a = pa;
        }
        let p = Self {
            input: shape.extended(),
            before,
            after,
            rank: shape.rank(),
        };
        // The padded shape must be countable too.
        p.output_dims().ok_or(Error::ShapeMismatch)?;
        Ok(p)
    }

    /// The padded dims, extended to `MAX_DIMS`, and their element count; `None` on
    /// overflow.
    fn output_dims(&self) -> Option<([usize; MAX_DIMS], usize)> {
        let mut dims = [0; MAX_DIMS];
        for (i, d) in dims.iter_mut().enumerate() {
            *d = self.before[i]
                .checked_add(self.input[i])?
                .checked_add(self.after[i])?;
        }
        Some((dims, checked_product(&dims)?))
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
/// `output.len() == p.output_len()`; otherwise nothing is written.
#[allow(unsafe_code)]
pub fn pad<T: Copy>(p: &PadParams, input: &[T], pad_value: T, output: &mut [T]) {
    let Some((out_dims, out_len)) = p.output_dims() else {
        return;
    };
    if checked_product(&p.input) != Some(input.len()) || out_len != output.len() {
        return;
    }
    let mut in_strides = [0; MAX_DIMS];
    let mut s = 1;
    for i in (0..MAX_DIMS).rev() {
        in_strides[i] = s;
        s *= p.input[i];
    }
    let mut idx = [0usize; MAX_DIMS];
    for slot in output.iter_mut() {
        // The input element under output position `idx`, unless it lies in the padding.
        let mut in_off = Some(0);
        for i in 0..MAX_DIMS {
            let c = idx[i].wrapping_sub(p.before[i]);
            in_off = in_off
                .filter(|_| c < p.input[i])
                .map(|o| o + c * in_strides[i]);
        }
        *slot = match in_off {
            // SAFETY: every coordinate c is below its input dim, so the offset is below
            // the input's element count, input.len().
            Some(o) => unsafe { get(input, o) },
            None => pad_value,
        };
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
