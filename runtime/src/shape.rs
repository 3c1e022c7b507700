//! Fixed-capacity shapes and NumPy-style broadcasting, without allocation.

use crate::error::{Error, Result};
use crate::unchecked::{get, set};

/// The most dimensions any kernel here accepts (TFLM's broadcast paths stop at 6 too).
pub const MAX_DIMS: usize = 6;

/// A tensor shape of rank `0..=MAX_DIMS`, row-major (last dimension contiguous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Dimensions, outermost first; entries past `rank` are 1.
    pub dims: [usize; MAX_DIMS],
    /// Number of meaningful dimensions.
    pub rank: usize,
}

impl Shape {
    /// A shape from its dimensions; fails with [`Error::TooManyDims`] beyond `MAX_DIMS`
    /// and with [`Error::ShapeMismatch`] when the element count overflows `usize`.
    pub fn new(dims: &[usize]) -> Result<Self> {
        if dims.len() > MAX_DIMS {
            return Err(Error::TooManyDims);
        }
        checked_product(dims).ok_or(Error::ShapeMismatch)?;
        let mut d = [1; MAX_DIMS];
        for (slot, &dim) in d.iter_mut().zip(dims) {
            *slot = dim;
        }
        Ok(Self {
            dims: d,
            rank: dims.len(),
        })
    }

    /// The last `rank` entries of a `MAX_DIMS` array as a shape (`rank <= MAX_DIMS`).
    pub(crate) fn from_trailing(dims: &[usize; MAX_DIMS], rank: usize) -> Self {
        let rank = rank.min(MAX_DIMS);
        let mut d = [1; MAX_DIMS];
        for (slot, &dim) in d.iter_mut().zip(dims.iter().skip(MAX_DIMS - rank)) {
            *slot = dim;
        }
        Self { dims: d, rank }
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        // `rank <= MAX_DIMS` always holds; `get` just keeps a panic path out of kernels.
        self.dims.get(..self.rank).unwrap_or(&self.dims)
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
        for (slot, &dim) in out.iter_mut().rev().zip(self.dims().iter().rev()) {
            *slot = dim;
        }
        out
    }
}

/// The product of `dims`, or `None` when it overflows `usize`.
pub(crate) fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Precomputed iteration plan for an elementwise binary op on two broadcastable shapes:
/// the output shape and, per (extended) dimension, each input's element stride
/// (0 where that input is broadcast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broadcast {
    /// Shape of the result.
    pub output: Shape,
    /// Result dims, left-padded with 1 to `MAX_DIMS`.
    pub extents: [usize; MAX_DIMS],
    /// Element strides of the first operand per result dim (0 where broadcast).
    pub stride1: [usize; MAX_DIMS],
    /// Element strides of the second operand per result dim (0 where broadcast).
    pub stride2: [usize; MAX_DIMS],
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
        // Shape::new checked that neither element count overflows, so neither can `acc`.
        let strides = |s: &[usize; MAX_DIMS]| {
            let mut st = [0; MAX_DIMS];
            let mut acc = 1usize;
            for i in (0..MAX_DIMS).rev() {
                st[i] = if s[i] == 1 { 0 } else { acc };
                acc = acc.wrapping_mul(s[i]);
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

    /// Whether slices of these lengths are what the plan was built for: `a_len` and
    /// `b_len` the element counts of the two input shapes, `out_len` the output's.
    /// Every index [`Self::for_each_index`] produces is then in bounds. Checked from the
    /// plan's own numbers, with overflow-checked arithmetic, so it holds for any plan.
    pub fn accepts(&self, a_len: usize, b_len: usize, out_len: usize) -> bool {
        self.check(a_len, b_len, out_len).unwrap_or(false)
    }

    fn check(&self, a_len: usize, b_len: usize, out_len: usize) -> Option<bool> {
        let (mut total, mut len1, mut len2, mut last1, mut last2) =
            (1usize, 1usize, 1usize, 0usize, 0usize);
        for d in 0..MAX_DIMS {
            let (e, s1, s2) = (self.extents[d], self.stride1[d], self.stride2[d]);
            total = total.checked_mul(e)?;
            if s1 != 0 {
                len1 = len1.checked_mul(e)?;
            }
            if s2 != 0 {
                len2 = len2.checked_mul(e)?;
            }
            // Largest index of each input: the sum of (extent - 1) * stride.
            let steps = e.saturating_sub(1);
            last1 = last1.checked_add(steps.checked_mul(s1)?)?;
            last2 = last2.checked_add(steps.checked_mul(s2)?)?;
        }
        let lens_match = a_len == len1 && b_len == len2 && out_len == total;
        // With no output element there is nothing to read; otherwise the last indices
        // must be in bounds (they are for any plan made by `new`).
        Some(lens_match && (total == 0 || (last1 < a_len && last2 < b_len)))
    }

    /// Applies `op` elementwise with broadcasting: `out[o] = op(a[i1], b[i2])`.
    ///
    /// Preconditions: `a`, `b`, `out` have the element counts of the planned shapes
    /// ([`Self::accepts`]); otherwise nothing is written.
    #[inline]
    #[allow(unsafe_code)]
    pub fn apply<T: Copy, U>(&self, a: &[T], b: &[T], out: &mut [U], op: impl Fn(T, T) -> U) {
        if !self.accepts(a.len(), b.len(), out.len()) {
            return;
        }
        self.for_each_index(|i1, i2, o| {
            // SAFETY: `accepts` bounded every index for_each_index yields: i1 <= last1 <
            // a.len(), i2 <= last2 < b.len(), o < product of extents == out.len().
            unsafe { set(out, o, op(get(a, i1), get(b, i2))) }
        });
    }

    /// In-place [`Self::apply`]: `inout` is the operand whose shape equals the output
    /// shape, first (`inout_is_first`) or second, and receives the result; `other` may
    /// be broadcast. Gives exactly what `apply` gives with the output in a separate
    /// buffer, since each element of `inout` is read only by the output element that
    /// overwrites it.
    ///
    /// Preconditions: `inout.len()` is the output's element count and the element count
    /// of its operand's shape, `other.len()` that of the other shape; otherwise nothing
    /// is written.
    #[inline]
    #[allow(unsafe_code)]
    pub fn apply_in_place<T: Copy>(
        &self,
        inout: &mut [T],
        other: &[T],
        inout_is_first: bool,
        op: impl Fn(T, T) -> T,
    ) {
        let n = inout.len();
        if inout_is_first {
            if !self.accepts(n, other.len(), n) {
                return;
            }
            self.for_each_index(|_, i2, o| {
                // SAFETY: `accepts` bounded i2 < other.len() and o < inout.len(). The first
                // operand has the output's shape, so its index i1 is o itself.
                unsafe { set(inout, o, op(get(inout, o), get(other, i2))) }
            });
        } else {
            if !self.accepts(other.len(), n, n) {
                return;
            }
            self.for_each_index(|i1, _, o| {
                // SAFETY: as above with the operands swapped: i1 < other.len(), i2 == o < n.
                unsafe { set(inout, o, op(get(other, i1), get(inout, o))) }
            });
        }
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
