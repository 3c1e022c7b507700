//! TFLM's double-rounding requantization (`MultiplyByQuantizedMultiplier`) in a few
//! instructions, for accumulators whose magnitude is known to be small.
//!
//! The reference computes `RDBP(SRDHM(acc << left, m), right) + offset` with 64-bit
//! arithmetic. When `|acc << left| < 2^29`, `right <= 20` and `|offset| <= 128` (every
//! conv-like layer of a real model: accumulators stay far below 2^29, shifts near -10),
//! three identities give the same bits with 32-bit operations:
//!
//! * `SRDHM(a, m) = floor((a * m + 2^30) / 2^31) = SMMULR(2a, m)`, because
//!   `floor((2am + 2^31) / 2^32)` is the same number and `2a` does not overflow;
//! * `RDBP(x, e) = (2x + 2^e - [x < 0]) >> (e + 1)` (round half away from zero), because
//!   with `x = q * 2^e + r` the sum adds one to `q` exactly when `r` reaches the
//!   sign-dependent half; the sum fits `i32` since `|x| <= 2^29`;
//! * `(t >> s) + offset = (t + offset * 2^s) >> s`, which folds the output zero point
//!   into the rounding constant.
//!
//! Kernels check these bounds once per call for every channel ([`fits`]) and
//! use the reference arithmetic ([`QuantizedMultiplier::apply`]) otherwise, so they are
//! exact for every input.

use super::simd::{max8, min8, pack_sat8, requant4, smmulr, splat8};
use crate::activation::ActivationRange;
use crate::quant::{ChannelMultipliers, QuantizedMultiplier};

/// Largest `|acc << left|` the fast path accepts.
const LIMIT: u32 = (1 << 29) - 1;

/// Largest right shift the fast path accepts (so `offset * 2^(right + 1)` stays small).
const MAX_RIGHT: i32 = 20;

/// Largest left shift the fast path accepts.
const MAX_LEFT: i32 = 28;

/// One output channel's bias, multiplier and output offset, prepared for [`apply`]:
/// the words `[bias, multiplier, 2^(left + 1), right + 1, rounding]`, where the left
/// shift is a multiply (no shift-amount masking) with the doubling of `SMMULR(2a, m)`
/// folded in, and `rounding = 2^right + offset * 2^(right + 1)`. Kernels keep one per
/// output channel in scratch and start their sums at `channel[0]`, the bias.
pub(crate) type Channel = [u32; CHANNEL_WORDS];

/// Words of one prepared channel (`Channel`).
pub const CHANNEL_WORDS: usize = 5;

/// Prepares a channel. Parameters [`fits`] rejects give a harmless but wrong value;
/// kernels take the reference path then.
#[inline]
pub(crate) fn channel(bias: i32, q: QuantizedMultiplier, offset: i32) -> Channel {
    let left = q.shift.clamp(0, MAX_LEFT) as u32;
    let right = q.shift.saturating_neg().clamp(0, MAX_RIGHT) as u32;
    let offset = offset.clamp(-128, 128);
    [
        bias as u32,
        q.multiplier as u32,
        1u32 << (left + 1),
        right + 1,
        ((1i32 << right) + (offset << (right + 1))) as u32,
    ]
}

/// Whether [`apply`] equals the reference requantization plus `offset` for every sum of
/// `terms` products of magnitude at most `product`, plus `bias`.
pub(crate) fn fits(
    bias: i32,
    q: QuantizedMultiplier,
    offset: i32,
    terms: usize,
    product: u32,
) -> bool {
    let terms = u32::try_from(terms).unwrap_or(u32::MAX);
    let bound = bias
        .unsigned_abs()
        .saturating_add(terms.saturating_mul(product));
    (-MAX_RIGHT..=MAX_LEFT).contains(&q.shift)
        && (-128..=128).contains(&offset)
        && bound <= LIMIT >> q.shift.max(0)
}

/// Requantizes `acc` (bias included) and adds the output offset:
/// `multiply_by_quantized_multiplier(acc) + offset` for a channel that [`fits`].
#[inline(always)]
pub(crate) fn apply(ch: &Channel, acc: i32) -> i32 {
    let [_, multiplier, scale, right1, rounding] = *ch;
    let x = smmulr(acc.wrapping_mul(scale as i32), multiplier as i32);
    let negative = (x as u32 >> 31) as i32;
    ((x << 1).wrapping_add(rounding as i32) - negative) >> (right1 & 31)
}

/// Four channels' [`Channel`]s without their biases, `[multiplier, scale, right + 1,
/// rounding]` each: what [`requant4`] applies to a pixel's four channels at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Channels4([[u32; 4]; 4]);

impl Channels4 {
    /// The four channels `chs`.
    pub(crate) fn new(chs: &[Channel; 4]) -> Self {
        Self(chs.map(|[_, m, scale, right1, rounding]| [m, scale, right1, rounding]))
    }

    /// [`apply`] of each channel to its sum.
    #[inline(always)]
    pub(crate) fn apply(&self, acc: [i32; 4]) -> [i32; 4] {
        requant4(acc, &self.0)
    }
}

/// Fills `table` (one [`Channel`] per output channel) and says whether every channel
/// [`fits`] sums of `terms` products of magnitude at most `product`.
#[inline]
pub(crate) fn prepare_channels(
    table: &mut [Channel],
    bias: Option<&[i32]>,
    multipliers: &ChannelMultipliers<'_>,
    offset: i32,
    terms: usize,
    product: u32,
) -> bool {
    let mut fast = true;
    for (c, slot) in table.iter_mut().enumerate() {
        let (ch, fits) = prepare_channel(bias, multipliers, c, offset, (terms, product));
        fast &= fits;
        *slot = ch;
    }
    fast
}

/// Channel `c`'s [`Channel`] and whether it [`fits`]. Out of line, so the compiler does not
/// copy the loop above once per kind of bias and multiplier table (flash is scarce).
#[inline(never)]
fn prepare_channel(
    bias: Option<&[i32]>,
    multipliers: &ChannelMultipliers<'_>,
    c: usize,
    offset: i32,
    (terms, product): (usize, u32),
) -> (Channel, bool) {
    let b = bias.and_then(|b| b.get(c)).copied().unwrap_or(0);
    let m = multipliers.get(c);
    (channel(b, m, offset), fits(b, m, offset, terms, product))
}

/// A fused-activation clamp applied to four values at once: each saturated to int8
/// (`SSAT`), packed, then the bytewise signed maximum and minimum with the bounds. The
/// same result as [`ActivationRange::clamp_i8`] on each value whenever the bounds are
/// int8 values (always, for prepared params); otherwise it clamps one by one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clamp4 {
    lo: u32,
    hi: u32,
    bytewise: bool,
    range: ActivationRange,
}

impl Clamp4 {
    /// The clamp to `range`.
    pub(crate) fn new(range: ActivationRange) -> Self {
        let int8 = -128..=127;
        Self {
            lo: splat8(range.min as i8),
            hi: splat8(range.max as i8),
            bytewise: int8.contains(&range.min) && int8.contains(&range.max),
            range,
        }
    }

    /// The bytewise bounds `(lo, hi)` (each bound in all four bytes) when the clamp is
    /// bytewise, for [`requant_store4`](super::simd::requant_store4).
    pub(crate) fn bytewise(&self) -> Option<(u32, u32)> {
        self.bytewise.then_some((self.lo, self.hi))
    }

    /// `values.map(|v| range.clamp_i8(v))`.
    #[inline(always)]
    pub(crate) fn apply(&self, values: [i32; 4]) -> [i8; 4] {
        if self.bytewise {
            min8(max8(pack_sat8(values), self.lo), self.hi)
                .to_le_bytes()
                .map(|b| b as i8)
        } else {
            values.map(|v| self.range.clamp_i8(v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn qm(multiplier: i32, shift: i32) -> QuantizedMultiplier {
        QuantizedMultiplier { multiplier, shift }
    }

    fn reference(q: QuantizedMultiplier, acc: i32, offset: i32) -> i32 {
        q.apply(acc).wrapping_add(offset)
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
        for shift in -MAX_RIGHT..=MAX_LEFT {
            for &m in &ms {
                for offset in [-128, -1, 0, 5, 127, 128] {
                    let q = qm(m, shift);
                    let bound = LIMIT >> shift.max(0);
                    assert!(fits(0, q, offset, 1, bound));
                    let ch = channel(0, q, offset);
                    for &a in &accs {
                        let a = a.clamp(-(bound as i32), bound as i32);
                        assert_eq!(
                            apply(&ch, a),
                            reference(q, a, offset),
                            "acc {a} m {m} shift {shift} offset {offset}"
                        );
                    }
                }
            }
        }
        assert!(!fits(0, qm(1 << 30, -21), 0, 0, 0));
        assert!(!fits(0, qm(1 << 30, 29), 0, 0, 0));
        assert!(!fits(0, qm(1 << 30, 2), 0, 1, LIMIT));
        assert!(!fits(0, qm(1 << 30, 0), 129, 0, 0));
        assert!(!fits(i32::MIN, qm(1 << 30, 0), 0, 0, 0));
        assert!(!fits(0, qm(1 << 30, 0), 0, usize::MAX, 2));
    }

    proptest! {
        #[test]
        fn four_channels_at_once(m: [i32; 4], shifts in proptest::array::uniform4(-20i32..=2), raw: [i32; 4], offset in -128i32..=128) {
            let chs: [Channel; 4] = core::array::from_fn(|i| channel(0, qm(m[i], shifts[i]), offset));
            let acc: [i32; 4] = core::array::from_fn(|i| raw[i] >> 8);
            let want: [i32; 4] = core::array::from_fn(|i| apply(&chs[i], acc[i]));
            prop_assert_eq!(Channels4::new(&chs).apply(acc), want);
        }

        #[test]
        fn clamp4_is_clamp_i8(values: [i32; 4], a in -300i32..300, b in -300i32..300, small: [i8; 4]) {
            for range in [
                ActivationRange { min: a, max: b },
                ActivationRange { min: a.clamp(-128, 127), max: b.clamp(-128, 127) },
            ] {
                let clamp = Clamp4::new(range);
                for v in [values, small.map(i32::from)] {
                    prop_assert_eq!(clamp.apply(v), v.map(|x| range.clamp_i8(x)));
                }
            }
        }

        #[test]
        fn random_accumulators_match_the_reference(
            m: i32,
            shift in -MAX_RIGHT..=MAX_LEFT,
            offset in -128i32..=128,
            raw: i32,
        ) {
            let q = qm(m, shift);
            let bound = LIMIT >> shift.max(0);
            let acc = raw.rem_euclid(2 * bound as i32 + 1) - bound as i32;
            prop_assert_eq!(apply(&channel(0, q, offset), acc), reference(q, acc, offset));
        }
    }
}
