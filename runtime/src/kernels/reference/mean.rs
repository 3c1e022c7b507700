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
use crate::unchecked::get;

/// Shape and axes of one MEAN call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeanParams {
    /// Input shape.
    pub input: Shape,
    /// Which axes are averaged.
    pub reduced: [bool; MAX_DIMS],
    /// Number of input elements averaged into each output.
    pub num_reduced: usize,
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
        // `num_reduced` is never 0 (`new` rejects empty dims).
        self.input
            .flat_size()
            .checked_div(self.num_reduced)
            .unwrap_or(0)
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

    /// The reduction as a loop plan over the extended (`MAX_DIMS`) input shape, or `None`
    /// when an element count overflows: per dimension its extent in the output loop
    /// (1 where reduced) and in the reduction loop (1 where kept), row-major strides,
    /// and the element counts `(input, output, reduced per output)`.
    fn plan(&self) -> Option<ReducePlan> {
        let dims = self.input.extended();
        let rank = self.input.rank().min(MAX_DIMS);
        // `reduced` is indexed by the caller's axes; align it with the extended dims.
        let mut reduced = [false; MAX_DIMS];
        for (r, &flag) in reduced.iter_mut().skip(MAX_DIMS - rank).zip(&self.reduced) {
            *r = flag;
        }
        let mut plan = ReducePlan {
            kept: [1; MAX_DIMS],
            folded: [1; MAX_DIMS],
            strides: [0; MAX_DIMS],
            input_len: 1,
            output_len: 1,
            folded_len: 1,
        };
        for i in (0..MAX_DIMS).rev() {
            plan.strides[i] = plan.input_len;
            plan.input_len = plan.input_len.checked_mul(dims[i])?;
            if reduced[i] {
                plan.folded[i] = dims[i];
                plan.folded_len = plan.folded_len.checked_mul(dims[i])?;
            } else {
                plan.kept[i] = dims[i];
                plan.output_len = plan.output_len.checked_mul(dims[i])?;
            }
        }
        Some(plan)
    }

    /// Folds every output: `step(acc, input_index)` over its reduced elements in
    /// row-major input order (TFLM's summation order), then `finish(acc)` gives the
    /// output element. Writes nothing unless `input_len` and `output.len()` are the
    /// element counts of the input and output shapes.
    #[inline]
    fn fold<A: Copy, T>(
        &self,
        input_len: usize,
        output: &mut [T],
        init: A,
        mut step: impl FnMut(A, usize) -> A,
        mut finish: impl FnMut(A) -> T,
    ) {
        let Some(plan) = self.plan() else {
            return;
        };
        if plan.input_len != input_len || plan.output_len != output.len() {
            return;
        }
        let offset = |idx: &[usize; MAX_DIMS]| -> usize {
            idx.iter().zip(&plan.strides).map(|(&i, &s)| i * s).sum()
        };
        let mut kept_idx = [0; MAX_DIMS];
        for slot in output.iter_mut() {
            let base = offset(&kept_idx);
            let mut folded_idx = [0; MAX_DIMS];
            let mut acc = init;
            for _ in 0..plan.folded_len {
                acc = step(acc, base + offset(&folded_idx));
                odometer_next(&mut folded_idx, &plan.folded);
            }
            *slot = finish(acc);
            odometer_next(&mut kept_idx, &plan.kept);
        }
    }
}

/// A MEAN call as loops over the extended input shape ([`MeanParams::plan`]). Every
/// dimension is either kept (its index comes from the output loop) or folded (from the
/// reduction loop), so an input index `sum(idx * stride)` over both multi-indices stays
/// below `input_len`.
struct ReducePlan {
    kept: [usize; MAX_DIMS],
    folded: [usize; MAX_DIMS],
    strides: [usize; MAX_DIMS],
    input_len: usize,
    output_len: usize,
    folded_len: usize,
}

/// Advances a row-major multi-index (last index fastest), wrapping to all zeros.
fn odometer_next(idx: &mut [usize; MAX_DIMS], dims: &[usize; MAX_DIMS]) {
    for (i, &d) in idx.iter_mut().zip(dims).rev() {
        *i += 1;
        if *i < d {
            return;
        }
        *i = 0;
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
        let multiplier = (i64::from(base.multiplier) << shift)
            .checked_div(n)
            .ok_or(Error::ShapeMismatch)? as i32;
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
/// `output.len() == p.output_len()`, `q` prepared from `p`; otherwise (lengths) nothing
/// is written.
#[allow(unsafe_code)]
pub fn mean_i8(p: &MeanParams, q: &MeanQuant, input: &[i8], output: &mut [i8]) {
    p.fold(
        input.len(),
        output,
        0i32,
        // SAFETY: `fold` only yields indices below input.len() (see ReducePlan).
        |acc, i| acc.wrapping_add(i32::from(unsafe { get(input, i) })),
        |sum| {
            let shifted = (i64::from(sum) - i64::from(q.input_zero_point) * q.num_elements) as i32;
            let r = q
                .multiplier
                .apply(shifted)
                .wrapping_add(q.output_zero_point);
            r.clamp(-128, 127) as i8
        },
    );
}

/// f32 MEAN as TFLM's float reference: f32 sum in row-major input order divided by the
/// element count. Same preconditions as [`mean_i8`].
#[allow(unsafe_code)]
pub fn mean_f32(p: &MeanParams, input: &[f32], output: &mut [f32]) {
    let n = p.num_elements_in_axis() as f32;
    p.fold(
        input.len(),
        output,
        0.0f32,
        // SAFETY: `fold` only yields indices below input.len() (see ReducePlan).
        |acc, i| acc + unsafe { get(input, i) },
        |sum| sum / n,
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
