//! Comparing executor results with reference outputs: exact for integers, within a
//! small tolerance for floats (float kernels may sum in another order than the reference).

use super::TensorData;

/// Absolute part of the float tolerance.
pub const F32_ABS_TOLERANCE: f64 = 1e-5;
/// Relative part of the float tolerance (times the reference value's magnitude).
pub const F32_REL_TOLERANCE: f64 = 1e-4;

/// How `got` differs from `want`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Number of differing elements (all of them when types or lengths differ).
    pub count: usize,
    /// Number of elements compared.
    pub of: usize,
    /// The first differing elements: (index, got, want), at most five.
    pub first: Vec<(usize, f64, f64)>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} elements differ", self.count, self.of)?;
        for (i, (at, got, want)) in self.first.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            write!(f, "{sep}[{at}] got {got} want {want}")?;
        }
        Ok(())
    }
}

/// `None` when `got` equals `want` (integers) or is within the tolerance (f32).
pub fn compare(got: &TensorData, want: &TensorData) -> Option<Mismatch> {
    if got.dtype() != want.dtype() || got.len() != want.len() {
        return Some(Mismatch {
            count: want.len().max(got.len()),
            of: want.len(),
            first: Vec::new(),
        });
    }
    let (g, w) = (got.to_f64(), want.to_f64());
    let float = matches!(want, TensorData::F32(_));
    let differs = |i: &usize| {
        let (a, b) = (g[*i], w[*i]);
        if float {
            let within = (a - b).abs() <= F32_ABS_TOLERANCE + F32_REL_TOLERANCE * b.abs();
            // NaN compares false, so it never counts as within tolerance.
            !within
        } else {
            a != b
        }
    };
    let bad: Vec<usize> = (0..g.len()).filter(differs).collect();
    if bad.is_empty() {
        return None;
    }
    let first = bad.iter().take(5).map(|&i| (i, g[i], w[i])).collect();
    Some(Mismatch {
        count: bad.len(),
        of: g.len(),
        first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_must_match_exactly() {
        let a = TensorData::I8(vec![1, 2, 3]);
        assert_eq!(compare(&a, &a), None);
        let m = compare(&a, &TensorData::I8(vec![1, 2, 4])).unwrap();
        assert_eq!(
            (m.count, m.of, m.first.clone()),
            (1, 3, vec![(2, 3.0, 4.0)])
        );
        assert_eq!(m.to_string(), "1 of 3 elements differ: [2] got 3 want 4");
    }

    #[test]
    fn floats_within_tolerance_match_and_nan_never_does() {
        let want = TensorData::F32(vec![1.0, 100.0]);
        assert_eq!(
            compare(&TensorData::F32(vec![1.000_005, 100.005]), &want),
            None
        );
        assert!(compare(&TensorData::F32(vec![1.001, 100.0]), &want).is_some());
        assert!(compare(&TensorData::F32(vec![f32::NAN, 100.0]), &want).is_some());
    }

    #[test]
    fn type_or_length_differences_are_mismatches() {
        assert!(compare(&TensorData::I8(vec![1]), &TensorData::I32(vec![1])).is_some());
        assert!(compare(&TensorData::I8(vec![1]), &TensorData::I8(vec![1, 2])).is_some());
    }
}
