//! TFLM's int8 ADD of two values ([`AddParams::add_one`]) in 32-bit arithmetic, for the
//! residual ADD the DSP convolutions fuse into their epilogue.
//!
//! The reference scales each operand `(x + offset) << 20` by a multiplier below one,
//! sums, and scales the sum, each step a 64-bit `MultiplyByQuantizedMultiplier`. With
//! int8 offsets and TFLM's left shift of 20, every intermediate stays below `2^30`, so
//! each step is the [`requant`](super::requant) identity `SMMULR` + rounding shift
//! (the left shift folded into its multiply): about 20
//! instructions instead of 70. [`FastAdd::new`] checks those bounds once per call and
//! declines otherwise, and the kernels then call the reference.

use super::simd::smmulr;
use crate::activation::ActivationRange;
use crate::kernels::reference::add::AddParams;
use crate::kernels::reference::conv_2d::ResidualAdd;
use crate::quant::QuantizedMultiplier;

/// One rescaling step: `RDBP(SRDHM(a * 2^left, m), right)` as
/// `((2x + 2^right - [x < 0]) >> (right + 1))` with `x = SMMULR(a * 2^(left + 1), m)`.
#[derive(Debug, Clone, Copy)]
struct Step {
    multiplier: i32,
    /// `2^(left + 1)`.
    scale: i32,
    /// `right + 1`.
    right1: u32,
    /// `2^right`.
    rounding: i32,
}

impl Step {
    /// The step for `m` applied after a left shift of `left`, with TFLM's
    /// smaller-than-one convention (a positive shift means no right shift). `None`
    /// outside the bounds this module relies on.
    fn new(m: QuantizedMultiplier, left: i32) -> Option<Self> {
        let right = u32::try_from(m.shift.saturating_neg().max(0)).ok()?;
        if !(0..=20).contains(&left) || right > 29 {
            return None;
        }
        Some(Self {
            multiplier: m.multiplier,
            scale: 1 << (left + 1),
            right1: right + 1,
            rounding: 1 << right,
        })
    }

    #[inline(always)]
    fn apply(self, a: i32) -> i32 {
        let x = smmulr(a.wrapping_mul(self.scale), self.multiplier);
        let negative = (x as u32 >> 31) as i32;
        ((x << 1).wrapping_add(self.rounding) - negative) >> (self.right1 & 31)
    }
}

/// A residual ADD prepared for [`FastAdd::apply`]: the conv result's and the skip
/// value's steps, whichever operand of the ADD each is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastAdd {
    conv_offset: i32,
    conv: Step,
    skip_offset: i32,
    skip: Step,
    output: Step,
    output_offset: i32,
    activation: ActivationRange,
}

impl FastAdd {
    /// The fast form of `r`, or `None` when its parameters leave the bounds that make it
    /// exact (never for params from [`AddParams::prepare`]).
    pub(crate) fn new(r: &ResidualAdd) -> Option<Self> {
        let p: &AddParams = &r.add;
        let int8 = -128..=128;
        if !int8.contains(&p.input1_offset)
            || !int8.contains(&p.input2_offset)
            || !int8.contains(&p.output_offset)
        {
            return None;
        }
        // |(x + offset) << left| <= 2^28, so each scaled operand is at most 2^28 + 1 and
        // their sum below 2^30 (`Step`'s requirement for the doubled SMMULR operand).
        let first = Step::new(p.input1_multiplier, p.left_shift)?;
        let second = Step::new(p.input2_multiplier, p.left_shift)?;
        let output = Step::new(p.output_multiplier, 0)?;
        let (conv, skip) = if r.conv_is_first {
            ((p.input1_offset, first), (p.input2_offset, second))
        } else {
            ((p.input2_offset, second), (p.input1_offset, first))
        };
        Some(Self {
            conv_offset: conv.0,
            conv: conv.1,
            skip_offset: skip.0,
            skip: skip.1,
            output,
            output_offset: p.output_offset,
            activation: p.activation,
        })
    }

    /// `r.apply(conv, skip)` for the `r` this was prepared from (the tests' entry to the
    /// three steps below).
    #[cfg(test)]
    pub(crate) fn apply(&self, conv: i8, skip: i8) -> i8 {
        self.finish(self.conv_term(conv) + self.skip_term(skip))
    }

    /// The conv result's scaled operand of the sum (a function of 256 values: kernels
    /// tabulate it).
    #[inline(always)]
    pub(crate) fn conv_term(&self, conv: i8) -> i32 {
        self.conv.apply(i32::from(conv) + self.conv_offset)
    }

    /// The skip value's scaled operand of the sum.
    #[inline(always)]
    pub(crate) fn skip_term(&self, skip: i8) -> i32 {
        self.skip.apply(i32::from(skip) + self.skip_offset)
    }

    /// The output of the sum of both terms: rescaled, offset and clamped.
    #[inline(always)]
    pub(crate) fn finish(&self, sum: i32) -> i8 {
        self.activation
            .clamp_i8(self.output.apply(sum) + self.output_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::FusedActivation;
    use crate::quant::TensorQuant;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn prepared_adds_match_the_reference(
            s1 in 0.001f32..1.0,
            s2 in 0.001f32..1.0,
            so in 0.001f32..1.0,
            zps in (-128i32..=127, -128i32..=127, -128i32..=127),
            relu: bool,
            conv_is_first: bool,
        ) {
            let activation = if relu { FusedActivation::Relu } else { FusedActivation::None };
            let Ok(add) = AddParams::prepare(
                TensorQuant::new(s1, zps.0),
                TensorQuant::new(s2, zps.1),
                TensorQuant::new(so, zps.2),
                activation,
            ) else {
                return Ok(());
            };
            let r = ResidualAdd { add, conv_is_first };
            let fast = FastAdd::new(&r);
            prop_assert!(fast.is_some(), "{:?}", r);
            let fast = fast.unwrap();
            for x in i8::MIN..=i8::MAX {
                for y in [i8::MIN, -77, -1, 0, 1, 63, i8::MAX, x] {
                    prop_assert_eq!(fast.apply(x, y), r.apply(x, y), "{} {}", x, y);
                }
            }
        }

        #[test]
        fn any_accepted_params_match_the_reference(
            m: (i32, i32, i32),
            shifts in (-31i32..=2, -31i32..=2, -31i32..=2),
            offsets in (-128i32..=128, -128i32..=128, -128i32..=128),
            left_shift in 0i32..=21,
            conv_is_first: bool,
            x: i8,
            y: i8,
        ) {
            let q = |multiplier, shift| QuantizedMultiplier { multiplier, shift };
            let add = AddParams {
                input1_offset: offsets.0,
                input2_offset: offsets.1,
                output_offset: offsets.2,
                left_shift,
                input1_multiplier: q(m.0, shifts.0),
                input2_multiplier: q(m.1, shifts.1),
                output_multiplier: q(m.2, shifts.2),
                activation: ActivationRange::FULL_I8,
            };
            let r = ResidualAdd { add, conv_is_first };
            if let Some(fast) = FastAdd::new(&r) {
                prop_assert_eq!(fast.apply(x, y), r.apply(x, y));
            }
        }
    }
}
