//! TRANSPOSE: permutes the axes of a tensor of up to 6 dims, `output.shape[i] =
//! input.shape[perm[i]]` (TFLM's `reference_ops::Transpose`, which stops at 5 dims).
//!
//! Data movement only, so one generic kernel serves every element type; int8 values are
//! copied as they are (TFLM ignores the tensors' quantization too).

use crate::error::{Error, Result};
use crate::shape::{checked_product, Shape, MAX_DIMS};
use crate::unchecked::{get, set};

/// A planned transpose: the output dims and, per output axis, the input element stride
/// that axis walks. Both are left-padded to [`MAX_DIMS`] (extent 1, stride 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransposeParams {
    /// Output dims, left-padded with 1 to `MAX_DIMS`.
    pub extents: [usize; MAX_DIMS],
    /// Input element stride of each (padded) output axis.
    pub strides: [usize; MAX_DIMS],
    /// Rank of the input and output.
    pub rank: usize,
}

impl TransposeParams {
    /// Plans the transpose of an `input` shape by `perm`, a permutation of
    /// `0..input.len()` (TFLM's TRANSPOSE Prepare checks).
    pub fn new(input: &[usize], perm: &[usize]) -> Result<Self> {
        let shape = Shape::new(input)?;
        let rank = input.len();
        if perm.len() != rank {
            return Err(Error::InvalidAxis);
        }
        let mut seen = [false; MAX_DIMS];
        for &p in perm {
            match seen.get_mut(p) {
                Some(s) if p < rank && !*s => *s = true,
                _ => return Err(Error::InvalidAxis),
            }
        }
        // Row-major strides of the input.
        let dims = shape.dims();
        let mut in_stride = [1usize; MAX_DIMS];
        for i in (0..rank.saturating_sub(1)).rev() {
            in_stride[i] = in_stride[i + 1] * dims[i + 1];
        }
        let mut extents = [1; MAX_DIMS];
        let mut strides = [0; MAX_DIMS];
        let pad = MAX_DIMS - rank;
        for (i, &p) in perm.iter().enumerate() {
            extents[pad + i] = dims[p];
            strides[pad + i] = in_stride[p];
        }
        Ok(Self {
            extents,
            strides,
            rank,
        })
    }

    /// The output dims.
    pub fn output_shape(&self) -> Shape {
        Shape::from_trailing(&self.extents, self.rank)
    }

    /// Number of elements of the input and of the output.
    pub fn len(&self) -> usize {
        self.extents.iter().product()
    }

    /// True for a tensor with no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether slices of `len` elements (input and output) fit the plan: the element
    /// count matches and the largest input index the strides reach is below it, both
    /// from the plan's own numbers with overflow-checked arithmetic.
    fn accepts(&self, input_len: usize, output_len: usize) -> bool {
        let check = || -> Option<bool> {
            let total = checked_product(&self.extents)?;
            let mut last = 0usize;
            for d in 0..MAX_DIMS {
                let steps = self.extents[d].saturating_sub(1);
                last = last.checked_add(steps.checked_mul(self.strides[d])?)?;
            }
            Some(input_len == total && output_len == total && (total == 0 || last < total))
        };
        check().unwrap_or(false)
    }
}

/// Transposes `input` into `output` (any element type). Preconditions: both have
/// [`TransposeParams::len`] elements; otherwise nothing is written.
#[allow(unsafe_code)]
pub fn transpose<T: Copy>(p: &TransposeParams, input: &[T], output: &mut [T]) {
    if !p.accepts(input.len(), output.len()) {
        return;
    }
    let (e, s) = (&p.extents, &p.strides);
    let mut o = 0;
    for d0 in 0..e[0] {
        for d1 in 0..e[1] {
            for d2 in 0..e[2] {
                for d3 in 0..e[3] {
                    for d4 in 0..e[4] {
                        let base = d0 * s[0] + d1 * s[1] + d2 * s[2] + d3 * s[3] + d4 * s[4];
                        for d5 in 0..e[5] {
                            // SAFETY: `accepts` bounded the largest input index,
                            // sum((extent - 1) * stride), below input.len(), and every
                            // index here is at most that; `o` counts the output elements,
                            // product(extents) == output.len() of them.
                            unsafe { set(output, o, get(input, base + d5 * s[5])) };
                            o += 1;
                        }
                    }
                }
            }
        }
    }
}

/// int8 TRANSPOSE: [`transpose`] for `i8` (a plain copy of the values).
pub fn transpose_i8(p: &TransposeParams, input: &[i8], output: &mut [i8]) {
    transpose(p, input, output);
}

/// f32 TRANSPOSE: [`transpose`] for `f32`.
pub fn transpose_f32(p: &TransposeParams, input: &[f32], output: &mut [f32]) {
    transpose(p, input, output);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matrix_and_nhwc_to_nchw() {
        let p = TransposeParams::new(&[2, 3], &[1, 0]).unwrap();
        assert_eq!(p.output_shape().dims(), &[3, 2]);
        let mut out = [0i8; 6];
        transpose_i8(&p, &[1, 2, 3, 4, 5, 6], &mut out);
        assert_eq!(out, [1, 4, 2, 5, 3, 6]);

        let p = TransposeParams::new(&[1, 2, 2, 3], &[0, 3, 1, 2]).unwrap();
        assert_eq!(p.output_shape().dims(), &[1, 3, 2, 2]);
        let x: [f32; 12] = core::array::from_fn(|i| i as f32);
        let mut y = [0.0f32; 12];
        transpose_f32(&p, &x, &mut y);
        assert_eq!(
            y,
            [0.0, 3.0, 6.0, 9.0, 1.0, 4.0, 7.0, 10.0, 2.0, 5.0, 8.0, 11.0]
        );
    }

    #[test]
    fn rejects_bad_perms() {
        assert_eq!(
            TransposeParams::new(&[2, 3], &[0, 0]),
            Err(Error::InvalidAxis)
        );
        assert_eq!(
            TransposeParams::new(&[2, 3], &[0, 2]),
            Err(Error::InvalidAxis)
        );
        assert_eq!(TransposeParams::new(&[2, 3], &[0]), Err(Error::InvalidAxis));
        assert_eq!(
            TransposeParams::new(&[1; 7], &[0; 7]),
            Err(Error::TooManyDims)
        );
        let p = TransposeParams::new(&[], &[]).unwrap();
        let mut y = [0i8];
        transpose_i8(&p, &[5], &mut y);
        assert_eq!(y, [5]);
    }

    #[test]
    fn wrong_lengths_and_forged_params_write_nothing() {
        let p = TransposeParams::new(&[2, 3], &[1, 0]).unwrap();
        let mut out = [99i8; 5];
        transpose_i8(&p, &[1; 6], &mut out);
        assert_eq!(out, [99; 5]);
        let mut out = [99i8; 6];
        transpose_i8(&p, &[1; 5], &mut out);
        assert_eq!(out, [99; 6]);
        // A stride reaching past the input is caught on entry.
        let forged = TransposeParams {
            strides: [0, 0, 0, 0, 7, 1],
            ..p
        };
        transpose_i8(&forged, &[1; 6], &mut out);
        assert_eq!(out, [99; 6]);
    }

    proptest! {
        /// Every output element is the input element at the permuted coordinates.
        #[test]
        fn matches_coordinate_definition(
            dims in prop::collection::vec(1usize..4, 1..=6),
            seed in any::<u64>(),
        ) {
            let rank = dims.len();
            // A permutation from the seed (Fisher-Yates).
            let mut perm: Vec<usize> = (0..rank).collect();
            let mut s = seed;
            for i in (1..rank).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                perm.swap(i, (s >> 33) as usize % (i + 1));
            }
            let p = TransposeParams::new(&dims, &perm).unwrap();
            let n: usize = dims.iter().product();
            let x: Vec<i32> = (0..n as i32).collect();
            let mut y = vec![-1; n];
            transpose(&p, &x, &mut y);
            let out_dims: Vec<usize> = perm.iter().map(|&a| dims[a]).collect();
            let shape = p.output_shape();
            prop_assert_eq!(shape.dims(), out_dims.as_slice());
            for (o, &v) in y.iter().enumerate() {
                // Output coordinates of o, then the input coordinates they name.
                let mut rest = o;
                let mut oc = vec![0; rank];
                for i in (0..rank).rev() {
                    oc[i] = rest % out_dims[i];
                    rest /= out_dims[i];
                }
                let mut ic = vec![0; rank];
                for i in 0..rank {
                    ic[perm[i]] = oc[i];
                }
                let flat = ic.iter().zip(&dims).fold(0, |acc, (&c, &d)| acc * d + c);
                prop_assert_eq!(v, flat as i32);
            }
        }
    }
}
