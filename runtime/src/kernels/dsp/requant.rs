//! TFLM's double-rounding requantization (`MultiplyByQuantizedMultiplier`) in a few
//! instructions, for accumulators whose magnitude is known to be small.
//!
//! The reference computes `RDBP(SRDHM(acc << left, m), right)` with 64-bit arithmetic.
//! When `|acc << left| < 2^29` and `right <= 29` (every conv-like layer of a real model:
//! accumulators stay far below 2^29 and shifts near -10), two identities give the same
//! bits with 32-bit operations:
//!
//! * `SRDHM(a, m) = floor((a * m + 2^30) / 2^31) = SMMULR(2a, m)`, because
//!   `floor((2am + 2^31) / 2^32)` is the same number and `2a` does not overflow;
//! * `RDBP(x, e) = (2x + 2^e - [x < 0]) >> (e + 1)` (round half away from zero), because
//!   with `x = q * 2^e + r` the sum adds one to `q` exactly when `r` reaches the
//!   sign-dependent half; the sum fits `i32` since `|x| <= 2^29`.
//!
//! Kernels check the bound once per call for every channel ([`Requant::fits`]) and use
//! the reference arithmetic ([`QuantizedMultiplier::apply`]) otherwise, so they are exact
//! for every input.

use super::simd::smmulr;
use crate::quant::QuantizedMultiplier;

/// Largest `|acc << left|` the fast path accepts.
const LIMIT: u32 = (1 << 29) - 1;

/// One output channel's multiplier, prepared for [`Requant::apply`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Requant {
    multiplier: i32,
    /// `left + 1`: the doubling of `SMMULR(2a, m)` is folded into the left shift.
    left1: u32,
    /// `right + 1`.
    right1: u32,
    /// `2^right`.
    half: i32,
}

impl Requant {
    /// Prepares `q`. Shifts outside `[-29, 28]` give a value [`Requant::fits`] rejects.
    #[inline(always)]
    pub(crate) fn new(q: QuantizedMultiplier) -> Self {
        let left = q.shift.clamp(0, 28) as u32;
        let right = q.shift.saturating_neg().clamp(0, 29) as u32;
        Self {
            multiplier: q.multiplier,
            left1: left + 1,
            right1: right + 1,
            half: 1 << right,
        }
    }

    /// Whether [`Requant::apply`] equals `q.apply(acc)` for every `|acc| <= bound`.
    pub(crate) fn fits(q: QuantizedMultiplier, bound: u32) -> bool {
        (-29..=28).contains(&q.shift) && bound <= LIMIT >> q.shift.max(0)
    }

    /// `q.apply(acc)` for accumulators within the bound [`Requant::fits`] accepted.
    #[inline(always)]
    pub(crate) fn apply(self, acc: i32) -> i32 {
        let x = smmulr(acc << self.left1, self.multiplier);
        let negative = (x as u32 >> 31) as i32;
        ((x << 1) + self.half - negative) >> self.right1
    }
}

/// The largest `|acc|` of a sum of `terms` products of magnitude at most `product`
/// plus `bias`, saturating (a saturated bound simply fails [`Requant::fits`]).
#[inline]
pub(crate) fn acc_bound(bias: i32, terms: usize, product: u32) -> u32 {
    let terms = u32::try_from(terms).unwrap_or(u32::MAX);
    bias.unsigned_abs()
        .saturating_add(terms.saturating_mul(product))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn qm(multiplier: i32, shift: i32) -> QuantizedMultiplier {
        QuantizedMultiplier { multiplier, shift }
    }

    #[test]
    fn edges_match_the_reference() {
        let accs = [
            0,
            1,
            -1,
            2,
            -2,
            3,
            -3,
            LIMIT as i32,
            -(LIMIT as i32),
            1 << 20,
            -(1 << 20),
        ];
        let ms = [
            0,
            1,
            -1,
            1 << 30,
            i32::MAX,
            i32::MIN,
            -(1 << 30),
            1_518_500_250,
        ];
        for shift in -29..=28 {
            for &m in &ms {
                let q = qm(m, shift);
                let r = Requant::new(q);
                let bound = LIMIT >> shift.max(0);
                assert!(Requant::fits(q, bound));
                for &a in &accs {
                    let a = a.clamp(-(bound as i32), bound as i32);
                    assert_eq!(r.apply(a), q.apply(a), "acc {a} m {m} shift {shift}");
                }
            }
        }
        assert!(!Requant::fits(qm(1 << 30, -30), 0));
        assert!(!Requant::fits(qm(1 << 30, 29), 0));
        assert!(!Requant::fits(qm(1 << 30, 2), LIMIT));
        assert_eq!(
            acc_bound(i32::MIN, 3, 1 << 15),
            (1u32 << 31) + 3 * (1 << 15)
        );
        assert_eq!(acc_bound(0, usize::MAX, 2), u32::MAX);
    }

    proptest! {
        #[test]
        fn random_accumulators_match_the_reference(
            m: i32,
            shift in -29i32..=28,
            raw: i32,
        ) {
            let q = qm(m, shift);
            let bound = LIMIT >> shift.max(0);
            let acc = raw.rem_euclid(2 * bound as i32 + 1) - bound as i32;
            prop_assert_eq!(Requant::new(q).apply(acc), q.apply(acc));
        }
    }
}
