//! MEAN over any set of axes (`keep_dims` only changes the output shape, which is the
//! caller's business: the flat output layout is the same either way).
//!
//! int8 follows TFLM's `QuantizedMeanOrSum` (the only int8 MEAN path at this TFLM
//! commit, used whether or not input and output quantization are equal): the raw int8
//! values are summed in `i32`, `zp_in * n` is subtracted, and the base multiplier
//! `in_scale / out_scale` is pre-divided by the element count `n` in fixed point:
//! `s = min(floor(log2 n), 32, 31 + shift)`, `M' = (M << s) / n`, `shift' = shift - s`,
//! followed by one `MultiplyByQuantizedMultiplier`.
//!
//! Overflow: the `i32` sum of int8 values is exact for fewer than `2^24` reduced elements
//! per output; the offset correction is computed in `i64` and then narrowed, as in TFLM.

use crate::error::{Error, Result};
use crate::quant::{quantize_multiplier, QuantizedMultiplier, TensorQuant};
use crate::shape::{Shape, MAX_DIMS};

/// Shape and axes of one MEAN call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeanParams {
    input: Shape,
    reduced: [bool; MAX_DIMS],
    num_reduced: usize,
}

impl MeanParams {
    /// Params from the input shape and the axes to reduce (negative axes count from the
    /// end, duplicates are ignored, as TFLM's `ResolveAxis`). Empty dims are rejected.
    pub fn new(input_shape: &[usize], axes: &[i32]) -> Result<Self> {
        let input = Shape::new(input_shape)?;
        if input_shape.contains(&0) {
            return Err(Error::ShapeMismatch);
        }
        let rank = input_shape.len() as i32;
        let mut reduced = [false; MAX_DIMS];
        for &a in axes {
            let a = if a < 0 { a + rank } else { a };
            if a < 0 || a >= rank {
                return Err(Error::InvalidAxis);
            }
            reduced[a as usize] = true;
        }
        let num_reduced = input_shape
            .iter()
            .zip(&reduced)
            .filter(|(_, &r)| r)
            .map(|(&d, _)| d)
            .product();
        Ok(Self {
            input,
            reduced,
            num_reduced,
        })
    }

    /// Number of input elements averaged into each output (`num_elements_in_axis`).
    pub fn num_elements_in_axis(&self) -> usize {
        self.num_reduced
    }

    /// Number of input elements.
    pub fn input_len(&self) -> usize {
        self.input.flat_size()
    }

    /// Number of output elements.
    pub fn output_len(&self) -> usize {
        self.input.flat_size() / self.num_reduced
    }

    /// Output dims with reduced axes kept as 1 (`keep_dims = true`); drop the 1s for
    /// `keep_dims = false`.
    pub fn output_shape_keep_dims(&self) -> Shape {
        let rank = self.input.rank();
        let mut dims = [1; MAX_DIMS];
        for (i, &d) in self.input.dims().iter().enumerate() {
            if !self.reduced[i] {
                dims[MAX_DIMS - rank + i] = d;
            }
        }
        Shape::from_trailing(&dims, rank)
    }

    /// Folds every output: `step(acc, input_index)` over its reduced elements in
    /// row-major input order (TFLM's summation order), then `finish(output_index, acc)`.
    #[inline]
    fn fold<A: Copy>(
        &self,
        init: A,
        mut step: impl FnMut(A, usize) -> A,
        mut finish: impl FnMut(usize, A),
    ) {
        let dims = self.input.dims();
        let rank = dims.len();
        let mut strides = [0; MAX_DIMS];
        let mut acc_stride = 1;
        for i in (0..rank).rev() {
            strides[i] = acc_stride;
            acc_stride *= dims[i];
        }
        // Split dims into kept (outer) and reduced (inner) lists, both outermost first.
        let (mut kd, mut ks, mut nk) = ([0; MAX_DIMS], [0; MAX_DIMS], 0);
        let (mut rd, mut rs, mut nr) = ([0; MAX_DIMS], [0; MAX_DIMS], 0);
        for i in 0..rank {
            if self.reduced[i] {
                rd[nr] = dims[i];
                rs[nr] = strides[i];
                nr += 1;
            } else {
                kd[nk] = dims[i];
                ks[nk] = strides[i];
                nk += 1;
            }
        }
        let mut kidx = [0; MAX_DIMS];
        for o in 0..self.output_len() {
            let base: usize = (0..nk).map(|i| kidx[i] * ks[i]).sum();
            let mut ridx = [0; MAX_DIMS];
            let mut acc = init;
            for _ in 0..self.num_reduced {
                let off: usize = (0..nr).map(|i| ridx[i] * rs[i]).sum();
                acc = step(acc, base + off);
                odometer_next(&mut ridx[..nr], &rd[..nr]);
            }
            finish(o, acc);
            odometer_next(&mut kidx[..nk], &kd[..nk]);
        }
    }
}

/// Advances a row-major multi-index (last index fastest), wrapping to all zeros.
fn odometer_next(idx: &mut [usize], dims: &[usize]) {
    for i in (0..idx.len()).rev() {
        idx[i] += 1;
        if idx[i] < dims[i] {
            return;
        }
        idx[i] = 0;
    }
}

/// int8 MEAN quantization: the count-adjusted multiplier of TFLM's `QuantizedMeanOrSum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeanQuant {
    /// Input zero point.
    pub input_zero_point: i32,
    /// Output zero point.
    pub output_zero_point: i32,
    /// Number of elements averaged per output.
    pub num_elements: i64,
    /// `in_scale / out_scale / n` as TFLM forms it (pre-divided significand, adjusted shift).
    pub multiplier: QuantizedMultiplier,
}

impl MeanQuant {
    /// TFLM's Prepare (`QuantizeMultiplier((f64)in / (f64)out)`) plus the per-count
    /// adjustment its Eval performs, done once here.
    pub fn prepare(input: TensorQuant, output: TensorQuant, p: &MeanParams) -> Result<Self> {
        let (input, output) = (input.validate()?, output.validate()?);
        let base = quantize_multiplier(f64::from(input.scale) / f64::from(output.scale))?;
        let n = p.num_elements_in_axis() as i64;
        let mut shift = 63 - (n as u64).leading_zeros() as i32;
        shift = shift.min(32).min(31 + base.shift).max(0);
        let multiplier = ((i64::from(base.multiplier) << shift) / n) as i32;
        Ok(Self {
            input_zero_point: input.zero_point,
            output_zero_point: output.zero_point,
            num_elements: n,
            multiplier: QuantizedMultiplier {
                multiplier,
                shift: base.shift - shift,
            },
        })
    }
}

/// int8 MEAN, bit-exact with TFLM. Preconditions: `input.len() == p.input_len()`,
/// `output.len() == p.output_len()`, `q` prepared from `p`.
pub fn mean_i8(p: &MeanParams, q: &MeanQuant, input: &[i8], output: &mut [i8]) {
    p.fold(
        0i32,
        |acc, i| acc.wrapping_add(i32::from(input[i])),
        |o, sum| {
            let shifted = (i64::from(sum) - i64::from(q.input_zero_point) * q.num_elements) as i32;
            let r = q
                .multiplier
                .apply(shifted)
                .wrapping_add(q.output_zero_point);
            output[o] = r.clamp(-128, 127) as i8;
        },
    );
}

/// f32 MEAN as TFLM's float reference: f32 sum in row-major input order divided by the
/// element count. Same preconditions as [`mean_i8`].
pub fn mean_f32(p: &MeanParams, input: &[f32], output: &mut [f32]) {
    let n = p.num_elements_in_axis() as f32;
    p.fold(
        0.0f32,
        |acc, i| acc + input[i],
        |o, sum| output[o] = sum / n,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::test_util::{assert_close_i8, dequantize_all, Lcg};

    #[test]
    fn axes_and_shapes() {
        let p = MeanParams::new(&[2, 3, 4], &[-1, 0, 2]).unwrap();
        assert_eq!(p.num_elements_in_axis(), 8);
        assert_eq!(p.output_len(), 3);
        assert_eq!(p.output_shape_keep_dims().dims(), &[1, 3, 1]);
        assert!(MeanParams::new(&[2, 3], &[2]).is_err());
    }

    #[test]
    fn f32_spatial_mean() {
        // 1x2x2x2 NHWC, mean over H, W.
        let p = MeanParams::new(&[1, 2, 2, 2], &[1, 2]).unwrap();
        let input = [1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0];
        let mut out = [0.0f32; 2];
        mean_f32(&p, &input, &mut out);
        assert_eq!(out, [2.5, 25.0]);
    }

    #[test]
    fn int8_hand_checked() {
        let p = MeanParams::new(&[1, 3], &[1]).unwrap();
        let q = MeanQuant::prepare(TensorQuant::new(1.0, 0), TensorQuant::new(1.0, 0), &p).unwrap();
        // 1 / 3 with shift min(1, 32, 31+1) = 1: (2^30 << 1) / 3 = 715827882, shift 0.
        assert_eq!(
            q.multiplier,
            QuantizedMultiplier {
                multiplier: 715_827_882,
                shift: 0
            }
        );
        let mut out = [0i8; 1];
        mean_i8(&p, &q, &[3, 4, 5], &mut out);
        assert_eq!(out, [4]);
        mean_i8(&p, &q, &[-3, -4, -6], &mut out);
        assert_eq!(out, [-4]); // -13/3 = -4.33
    }

    #[test]
    fn int8_tracks_f32_with_requantization() {
        let mut rng = Lcg::new(9);
        let (in_q, out_q) = (TensorQuant::new(0.04, 5), TensorQuant::new(0.02, -3));
        let p = MeanParams::new(&[2, 5, 3, 4], &[1, 2]).unwrap();
        let input: [i8; 120] = core::array::from_fn(|_| rng.int8());
        let q = MeanQuant::prepare(in_q, out_q, &p).unwrap();
        let mut out8 = [0i8; 8];
        mean_i8(&p, &q, &input, &mut out8);
        let mut outf = [0.0f32; 8];
        mean_f32(&p, &dequantize_all::<120>(&input, in_q), &mut outf);
        assert_close_i8(&out8, &outf, out_q, 1);
    }
}
