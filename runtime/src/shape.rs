//! Fixed-capacity shapes and NumPy-style broadcasting, without allocation.

use crate::error::{Error, Result};

/// The most dimensions any kernel here accepts (TFLM's broadcast paths stop at 6 too).
pub const MAX_DIMS: usize = 6;

/// A tensor shape of rank `0..=MAX_DIMS`, row-major (last dimension contiguous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    dims: [usize; MAX_DIMS],
    rank: usize,
}

impl Shape {
    /// A shape from its dimensions; fails with [`Error::TooManyDims`] beyond `MAX_DIMS`.
    pub fn new(dims: &[usize]) -> Result<Self> {
        if dims.len() > MAX_DIMS {
            return Err(Error::TooManyDims);
        }
        let mut d = [1; MAX_DIMS];
        d[..dims.len()].copy_from_slice(dims);
        Ok(Self {
            dims: d,
            rank: dims.len(),
        })
    }

    /// The last `rank` entries of a `MAX_DIMS` array as a shape (`rank <= MAX_DIMS`).
    pub(crate) fn from_trailing(dims: &[usize; MAX_DIMS], rank: usize) -> Self {
        let rank = rank.min(MAX_DIMS);
        let mut d = [1; MAX_DIMS];
        d[..rank].copy_from_slice(&dims[MAX_DIMS - rank..]);
        Self { dims: d, rank }
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of elements (1 for a scalar).
    pub fn flat_size(&self) -> usize {
        self.dims().iter().product()
    }

    /// The dimensions left-padded with 1s to exactly `MAX_DIMS` entries.
    pub fn extended(&self) -> [usize; MAX_DIMS] {
        let mut out = [1; MAX_DIMS];
        out[MAX_DIMS - self.rank..].copy_from_slice(self.dims());
        out
    }
}

/// Precomputed iteration plan for an elementwise binary op on two broadcastable shapes:
/// the output shape and, per (extended) dimension, each input's element stride
/// (0 where that input is broadcast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broadcast {
    output: Shape,
    extents: [usize; MAX_DIMS],
    stride1: [usize; MAX_DIMS],
    stride2: [usize; MAX_DIMS],
}

impl Broadcast {
    /// Plans `op(a, b)` for `a` of `shape1` and `b` of `shape2` under NumPy rules: shapes
    /// are right-aligned and each pair of dimensions must be equal or contain a 1.
    pub fn new(shape1: &[usize], shape2: &[usize]) -> Result<Self> {
        let s1 = Shape::new(shape1)?.extended();
        let s2 = Shape::new(shape2)?.extended();
        let rank = shape1.len().max(shape2.len());
        let mut extents = [1; MAX_DIMS];
        for i in 0..MAX_DIMS {
            extents[i] = match (s1[i], s2[i]) {
                (a, b) if a == b => a,
                (1, b) => b,
                (a, 1) => a,
                _ => return Err(Error::ShapeMismatch),
            };
        }
        let strides = |s: &[usize; MAX_DIMS]| {
            let mut st = [0; MAX_DIMS];
            let mut acc = 1;
            for i in (0..MAX_DIMS).rev() {
                st[i] = if s[i] == 1 { 0 } else { acc };
                acc *= s[i];
            }
            st
        };
        let output = Shape::new(&extents[MAX_DIMS - rank..])?;
        Ok(Self {
            output,
            extents,
            stride1: strides(&s1),
            stride2: strides(&s2),
        })
    }

    /// The broadcast output shape (rank = the larger input rank).
    pub fn output_shape(&self) -> Shape {
        self.output
    }

    /// Number of output elements.
    pub fn output_len(&self) -> usize {
        self.output.flat_size()
    }

    /// Calls `f(i1, i2, o)` with the flat input and output indices of every output
    /// element, in row-major output order.
    #[inline]
    pub fn for_each_index(&self, mut f: impl FnMut(usize, usize, usize)) {
        let e = &self.extents;
        let (s1, s2) = (&self.stride1, &self.stride2);
        let mut o = 0;
        for d0 in 0..e[0] {
            for d1 in 0..e[1] {
                for d2 in 0..e[2] {
                    for d3 in 0..e[3] {
                        for d4 in 0..e[4] {
                            let b1 = d0 * s1[0] + d1 * s1[1] + d2 * s1[2] + d3 * s1[3] + d4 * s1[4];
                            let b2 = d0 * s2[0] + d1 * s2[1] + d2 * s2[2] + d3 * s2[3] + d4 * s2[4];
                            for d5 in 0..e[5] {
                                f(b1 + d5 * s1[5], b2 + d5 * s2[5], o);
                                o += 1;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Applies `op` elementwise with broadcasting: `out[o] = op(a[i1], b[i2])`.
    /// Preconditions: `a`, `b`, `out` have the element counts of the planned shapes.
    #[inline]
    pub fn apply<T: Copy, U>(&self, a: &[T], b: &[T], out: &mut [U], op: impl Fn(T, T) -> U) {
        self.for_each_index(|i1, i2, o| out[o] = op(a[i1], b[i2]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_basics() {
        let s = Shape::new(&[2, 3, 4]).unwrap();
        assert_eq!(s.flat_size(), 24);
        assert_eq!(s.extended(), [1, 1, 1, 2, 3, 4]);
        assert_eq!(Shape::new(&[]).unwrap().flat_size(), 1);
        assert_eq!(Shape::new(&[1; 7]), Err(Error::TooManyDims));
    }

    #[test]
    fn broadcast_row_and_column() {
        let b = Broadcast::new(&[2, 1], &[3]).unwrap();
        assert_eq!(b.output_shape().dims(), &[2, 3]);
        let a = [10, 20];
        let c = [1, 2, 3];
        let mut out = [0; 6];
        b.apply(&a, &c, &mut out, |x, y| x + y);
        assert_eq!(out, [11, 12, 13, 21, 22, 23]);
        assert_eq!(Broadcast::new(&[2, 3], &[4]), Err(Error::ShapeMismatch));
    }

    #[test]
    fn broadcast_six_dims_scalar() {
        let b = Broadcast::new(&[2, 1, 2, 1, 1, 2], &[]).unwrap();
        assert_eq!(b.output_len(), 8);
        let a: [i32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
        let mut out = [0; 8];
        b.apply(&a, &[100], &mut out, |x, y| x + y);
        assert_eq!(out, [100, 101, 102, 103, 104, 105, 106, 107]);
    }
}
