//! Fixed-point requantization arithmetic, bit-exact with TensorFlow Lite Micro.
//!
//! Two halves:
//!
//! * **Device side** (`saturating_rounding_doubling_high_mul`, `rounding_divide_by_pot`,
//!   `multiply_by_quantized_multiplier` and its variants): pure integer functions the
//!   kernels call in their inner loops.
//! * **Host / compile time** (`quantize_multiplier`, `preprocess_softmax_scaling`,
//!   `calculate_input_radius`, ...): turn float scales into the integers the kernels
//!   need, with exactly the `f64` arithmetic, `frexp` and round-half-away-from-zero that
//!   TFLM's `Prepare` functions use. They use `libm`, so they also work in `no_std`.
//!
//! TFLM's pip package is built **without** `TFLITE_SINGLE_ROUNDING`, so
//! [`multiply_by_quantized_multiplier`] is the double-rounding form: a rounding doubling
//! high multiply followed by a rounding right shift.

use crate::error::{Error, Result};

/// A real multiplier `M` stored as `multiplier * 2^(shift - 31)`, with
/// `multiplier` in `[2^30, 2^31)` (or 0).
///
/// `shift > 0` means a left shift before the high multiply, `shift <= 0` a rounding
/// right shift after it (TFLM's "exponent" convention, not its legacy "right shift").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuantizedMultiplier {
    /// Q0.31 significand, in `[2^30, 2^31)` for a non-zero multiplier.
    pub multiplier: i32,
    /// Power-of-two exponent; positive shifts left.
    pub shift: i32,
}

impl QuantizedMultiplier {
    /// The multiplier 0 (what TFLM stores for zero or vanishingly small scales).
    pub const ZERO: Self = Self {
        multiplier: 0,
        shift: 0,
    };

    /// `QuantizeMultiplier` of TFLM: the general form for any finite real multiplier.
    pub fn from_real(real: f64) -> Result<Self> {
        quantize_multiplier(real)
    }

    /// Multiplies `x` by this multiplier with TFLM's double rounding
    /// (see [`multiply_by_quantized_multiplier`]).
    #[inline]
    pub fn apply(self, x: i32) -> i32 {
        multiply_by_quantized_multiplier(x, self.multiplier, self.shift)
    }

    /// The real number this multiplier stands for (for tests and diagnostics).
    pub fn to_real(self) -> f64 {
        f64::from(self.multiplier) * libm::ldexp(1.0, self.shift - 31)
    }
}

/// Affine quantization of one int8 tensor: `real = scale * (q - zero_point)`.
/// The unit every `prepare` constructor takes for inputs and outputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorQuant {
    /// Real value of one quantization step (positive, finite).
    pub scale: f32,
    /// The int8 value that represents real 0.
    pub zero_point: i32,
}

impl TensorQuant {
    /// Shorthand constructor.
    pub const fn new(scale: f32, zero_point: i32) -> Self {
        Self { scale, zero_point }
    }

    /// Checks the scale is positive and finite and the zero point fits int8.
    pub fn validate(self) -> Result<Self> {
        check_scale(self.scale)?;
        check_zero_point_i8(self.zero_point)?;
        Ok(self)
    }
}

// ---------------------------------------------------------------------------
// Device-side primitives
// ---------------------------------------------------------------------------

/// gemmlowp's `SaturatingRoundingDoublingHighMul` (ARM `VQRDMULH`): `a * b / 2^31`
/// rounded to nearest with ties toward +infinity (`floor(x + 1/2)`; the sign-dependent
/// nudge followed by C++'s truncating division amounts to that), with `MIN * MIN`
/// saturated to `MAX`.
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == b && a == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // |ab| <= 2^62 - 2^31 here, so the sum cannot overflow and the quotient fits i32.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp's `RoundingDivideByPOT`: arithmetic right shift by `exponent`, rounding to
/// nearest with ties away from zero.
///
/// TFLM requires `0 <= exponent <= 31`; this function computes in `i64` so it gives the
/// same answer there and stays panic-free outside (negative exponents count as 0).
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let e = exponent.clamp(0, 62) as u32;
    let x = i64::from(x);
    let mask = (1i64 << e) - 1;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i64::from(x < 0);
    ((x >> e) + i64::from(remainder > threshold)) as i32
}

/// gemmlowp's `SaturatingRoundingMultiplyByPOT` with a run-time exponent: a saturating
/// left shift for `exponent > 0`, a rounding right shift for `exponent < 0`.
#[inline]
pub fn saturating_rounding_multiply_by_pot(x: i32, exponent: i32) -> i32 {
    if exponent > 0 {
        if exponent >= 31 {
            return if x > 0 {
                i32::MAX
            } else if x < 0 {
                i32::MIN
            } else {
                0
            };
        }
        let threshold = (1i32 << (31 - exponent)) - 1;
        if x > threshold {
            i32::MAX
        } else if x < -threshold {
            i32::MIN
        } else {
            x << exponent
        }
    } else if exponent < 0 {
        rounding_divide_by_pot(x, -exponent)
    } else {
        x
    }
}

/// TFLM's `MultiplyByQuantizedMultiplier(int32, int32, int)` in its double-rounding
/// form: `RoundingDivideByPOT(SRDHM(x << left, m), right)` where
/// `left = max(shift, 0)`, `right = max(-shift, 0)`.
///
/// Preconditions (as in TFLM): `shift <= 30` and `x << left` fits in `i32`; outside
/// that the left shift wraps like the C++ does in practice (no panic).
#[inline]
pub fn multiply_by_quantized_multiplier(x: i32, quantized_multiplier: i32, shift: i32) -> i32 {
    let left_shift = if shift > 0 { shift } else { 0 };
    let right_shift = if shift > 0 { 0 } else { -shift };
    let shifted = x.wrapping_mul(1i32.wrapping_shl(left_shift as u32));
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(shifted, quantized_multiplier),
        right_shift,
    )
}

/// TFLM's `MultiplyByQuantizedMultiplier(int64, int32, int)` (used by 16-bit kernels
/// with 64-bit accumulators): the multiplier is first rounded to 16 bits, then a single
/// rounding shift. Preconditions: `-31 <= shift < 8`, `|x| < 2^47`.
#[inline]
pub fn multiply_by_quantized_multiplier_i64(x: i64, quantized_multiplier: i32, shift: i32) -> i32 {
    let reduced: i64 = if quantized_multiplier < 0x7FFF_0000 {
        i64::from((quantized_multiplier + (1 << 15)) >> 16)
    } else {
        0x7FFF
    };
    let total_shift = (15 - shift).clamp(1, 62) as u32;
    let rounded = x
        .wrapping_mul(reduced)
        .wrapping_add(1i64 << (total_shift - 1));
    (rounded >> total_shift) as i32
}

/// TFLM's `MultiplyByQuantizedMultiplierSmallerThanOneExp` (double rounding):
/// SRDHM then rounding right shift by `-left_shift` (`left_shift <= 0`).
#[inline]
pub fn multiply_by_quantized_multiplier_smaller_than_one_exp(
    x: i32,
    quantized_multiplier: i32,
    left_shift: i32,
) -> i32 {
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x, quantized_multiplier),
        -left_shift,
    )
}

/// TFLM's `MultiplyByQuantizedMultiplierGreaterThanOne` (double rounding):
/// `SRDHM(x * 2^left_shift, m)` with `left_shift >= 0`; the left shift wraps like C++.
#[inline]
pub fn multiply_by_quantized_multiplier_greater_than_one(
    x: i32,
    quantized_multiplier: i32,
    left_shift: i32,
) -> i32 {
    let shifted = x.wrapping_mul(1i32.wrapping_shl(left_shift.max(0) as u32));
    saturating_rounding_doubling_high_mul(shifted, quantized_multiplier)
}

// ---------------------------------------------------------------------------
// Host / compile-time helpers
// ---------------------------------------------------------------------------

/// C's `round` on `f32` (`roundf`): halves go away from zero. TFLM's `TfLiteRound`.
#[inline]
pub fn round_f32(x: f32) -> f32 {
    libm::roundf(x)
}

/// C's `round` on `f64`: halves go away from zero.
#[inline]
pub fn round_f64(x: f64) -> f64 {
    libm::round(x)
}

/// TFLM's `QuantizeMultiplier`: `frexp` the real multiplier, round the significand to
/// Q0.31 (`round(q * 2^31)` in `f64`), renormalize when rounding reaches `2^31`, and
/// flush to `(0, 0)` when the exponent is below `-31`.
///
/// Like the double-rounding build of TFLM it does *not* clamp exponents above 30.
/// Non-finite input is an error (TFLM would abort).
pub fn quantize_multiplier(real: f64) -> Result<QuantizedMultiplier> {
    if real == 0.0 {
        return Ok(QuantizedMultiplier::ZERO);
    }
    if !real.is_finite() {
        return Err(Error::MultiplierOutOfRange);
    }
    let (q, mut shift) = libm::frexp(real);
    let mut q_fixed = round_f64(q * (1i64 << 31) as f64) as i64;
    if q_fixed > (1i64 << 31) {
        return Err(Error::MultiplierOutOfRange);
    }
    if q_fixed == (1i64 << 31) {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        shift = 0;
        q_fixed = 0;
    }
    Ok(QuantizedMultiplier {
        multiplier: q_fixed as i32,
        shift,
    })
}

/// TFLM's `QuantizeMultiplierSmallerThanOneExp`: requires `0 < real < 1` and a
/// resulting shift `<= 0`, otherwise [`Error::MultiplierOutOfRange`].
pub fn quantize_multiplier_smaller_than_one_exp(real: f64) -> Result<QuantizedMultiplier> {
    if !(real > 0.0 && real < 1.0) {
        return Err(Error::MultiplierOutOfRange);
    }
    let qm = quantize_multiplier(real)?;
    if qm.shift > 0 {
        return Err(Error::MultiplierOutOfRange);
    }
    Ok(qm)
}

/// TFLM's `QuantizeMultiplierGreaterThanOne`: requires `real > 1` and a resulting
/// shift `>= 0`, otherwise [`Error::MultiplierOutOfRange`].
pub fn quantize_multiplier_greater_than_one(real: f64) -> Result<QuantizedMultiplier> {
    if real.is_nan() || real <= 1.0 {
        return Err(Error::MultiplierOutOfRange);
    }
    let qm = quantize_multiplier(real)?;
    if qm.shift < 0 {
        return Err(Error::MultiplierOutOfRange);
    }
    Ok(qm)
}

/// TFLM's `PreprocessSoftmaxScaling` (non-emulated float path, double rounding):
/// `min(beta * input_scale * 2^(31 - input_integer_bits), 2^31 - 1)` quantized with
/// [`quantize_multiplier_greater_than_one`]. The shift is the kernel's left shift.
pub fn preprocess_softmax_scaling(
    beta: f64,
    input_scale: f64,
    input_integer_bits: i32,
) -> Result<QuantizedMultiplier> {
    let max_real_multiplier = ((1i64 << 31) - 1) as f64;
    let scaled = beta * input_scale * f64::from(1i32 << (31 - input_integer_bits));
    let real = if max_real_multiplier < scaled {
        max_real_multiplier
    } else {
        scaled
    };
    quantize_multiplier_greater_than_one(real)
}

/// TFLM's `CalculateInputRadius` (non-emulated path):
/// `floor((2^ib - 1) * 2^(total_bits - ib) / 2^input_left_shift)` in `f64`.
///
/// The largest input magnitude (after subtracting the zero point) that the fixed-point
/// path can rescale without overflow; kernels saturate beyond it.
/// A negative `input_left_shift` (TFLM: undefined shift) is taken as a true `2^shift`.
pub fn calculate_input_radius(
    input_integer_bits: i32,
    input_left_shift: i32,
    total_signed_bits: i32,
) -> i32 {
    let max_input_rescaled = 1.0
        * f64::from((1i32 << input_integer_bits) - 1)
        * libm::ldexp(1.0, total_signed_bits - input_integer_bits)
        / libm::ldexp(1.0, input_left_shift);
    libm::floor(max_input_rescaled) as i32
}

/// Checks that a quantization scale is positive and finite.
pub fn check_scale(scale: f32) -> Result<()> {
    if scale > 0.0 && scale.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidScale)
    }
}

/// Checks that a zero point is a valid int8 value.
pub fn check_zero_point_i8(zero_point: i32) -> Result<()> {
    if (i32::from(i8::MIN)..=i32::from(i8::MAX)).contains(&zero_point) {
        Ok(())
    } else {
        Err(Error::InvalidZeroPoint)
    }
}

/// Output multiplier of one conv / depthwise / per-channel FC channel, computed as TFLM's
/// `PopulateConvolutionQuantizationParams` does: `(f64)in * (f64)filter / (f64)out`.
pub fn conv_channel_multiplier(
    input_scale: f32,
    filter_scale: f32,
    output_scale: f32,
) -> Result<QuantizedMultiplier> {
    check_scale(input_scale)?;
    check_scale(output_scale)?;
    if !(filter_scale >= 0.0 && filter_scale.is_finite()) {
        return Err(Error::InvalidScale);
    }
    quantize_multiplier(f64::from(input_scale) * f64::from(filter_scale) / f64::from(output_scale))
}

/// Fills `out[c]` with [`conv_channel_multiplier`] for every filter scale. `out` must
/// have exactly `filter_scales.len()` entries.
pub fn conv_channel_multipliers(
    input_scale: f32,
    filter_scales: &[f32],
    output_scale: f32,
    out: &mut [QuantizedMultiplier],
) -> Result<()> {
    if out.len() != filter_scales.len() || out.is_empty() {
        return Err(Error::BufferLength);
    }
    for (slot, &fs) in out.iter_mut().zip(filter_scales) {
        *slot = conv_channel_multiplier(input_scale, fs, output_scale)?;
    }
    Ok(())
}

/// Per-output-channel or per-tensor requantization multipliers, as the conv-like
/// kernels consume them. `Copy`; the per-channel table lives wherever the caller keeps it
/// (flash in generated code, a `Vec` in the host executor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelMultipliers<'a> {
    /// One multiplier for every output channel.
    PerTensor(QuantizedMultiplier),
    /// One multiplier per output channel, indexed by output channel.
    PerChannel(&'a [QuantizedMultiplier]),
    /// One multiplier per output channel as two parallel tables, the shifts as `i8`
    /// (5 bytes per channel instead of 8): what generated code keeps in flash.
    PerChannelSplit {
        /// The fixed-point multiplier of each channel.
        multipliers: &'a [i32],
        /// The shift of each channel (TFLite's shifts lie in `-31..=31`).
        shifts: &'a [i8],
    },
    /// One channel per output channel prepared at compile time for the DSP convs
    /// (`kernels::dsp::conv_2d::prepare_flash_channels`): `[bias, multiplier,
    /// 2^(left + 1), right + 1, rounding]`, the bias and the output offset of the one
    /// call it was made for folded in, so the kernels read it from flash instead of
    /// building it in scratch. `fast` says whether every channel takes the 32-bit
    /// requantization. Shifts lie in `-20..=28`, so [`Self::get`] recovers the
    /// multipliers exactly (for the reference path).
    Prepared {
        /// The prepared channels.
        channels: &'a [[u32; 5]],
        /// Whether every channel takes the fast requantization.
        fast: bool,
    },
}

impl ChannelMultipliers<'_> {
    /// The multiplier of output channel `c`. Precondition: `c` is below the channel
    /// count the table was built for; beyond it the result is
    /// [`QuantizedMultiplier::ZERO`] (kernels check [`Self::covers`] first). Out of
    /// line: kernels read it once per channel, not per MAC, and one copy of the three
    /// table layouts takes less flash than one at every call site.
    #[inline(never)]
    pub fn get(&self, c: usize) -> QuantizedMultiplier {
        match self {
            ChannelMultipliers::PerTensor(m) => *m,
            ChannelMultipliers::PerChannel(ms) => {
                ms.get(c).copied().unwrap_or(QuantizedMultiplier::ZERO)
            }
            ChannelMultipliers::PerChannelSplit {
                multipliers,
                shifts,
            } => match (multipliers.get(c), shifts.get(c)) {
                (Some(&multiplier), Some(&shift)) => QuantizedMultiplier {
                    multiplier,
                    shift: shift.into(),
                },
                _ => QuantizedMultiplier::ZERO,
            },
            ChannelMultipliers::Prepared { channels, .. } => match channels.get(c) {
                Some(&[_, multiplier, scale, right1, _]) => QuantizedMultiplier {
                    multiplier: multiplier as i32,
                    shift: scale.trailing_zeros() as i32 - right1 as i32,
                },
                None => QuantizedMultiplier::ZERO,
            },
        }
    }

    /// Whether the table is usable for `channels` output channels.
    pub fn covers(&self, channels: usize) -> bool {
        match self {
            ChannelMultipliers::PerTensor(_) => true,
            ChannelMultipliers::PerChannel(ms) => ms.len() == channels,
            ChannelMultipliers::PerChannelSplit {
                multipliers,
                shifts,
            } => multipliers.len() == channels && shifts.len() == channels,
            ChannelMultipliers::Prepared { channels: c, .. } => c.len() == channels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn qm(m: i32, s: i32) -> QuantizedMultiplier {
        QuantizedMultiplier {
            multiplier: m,
            shift: s,
        }
    }

    #[test]
    fn split_tables_give_the_per_channel_multipliers() {
        let table = [qm(1 << 30, -7), qm(1_500_000_000, 3), qm(-5, -31)];
        let split = ChannelMultipliers::PerChannelSplit {
            multipliers: &[1 << 30, 1_500_000_000, -5],
            shifts: &[-7, 3, -31],
        };
        let whole = ChannelMultipliers::PerChannel(&table);
        for c in 0..4 {
            assert_eq!(split.get(c), whole.get(c), "channel {c}");
        }
        assert!(split.covers(3) && !split.covers(2));
        // Tables of different lengths cover nothing.
        let uneven = ChannelMultipliers::PerChannelSplit {
            multipliers: &[1, 2],
            shifts: &[0],
        };
        assert!(!uneven.covers(2) && !uneven.covers(1));
        assert_eq!(uneven.get(1), QuantizedMultiplier::ZERO);
    }

    #[test]
    fn quantize_multiplier_known_values() {
        assert_eq!(quantize_multiplier(0.5).unwrap(), qm(1 << 30, 0));
        assert_eq!(quantize_multiplier(1.0).unwrap(), qm(1 << 30, 1));
        assert_eq!(quantize_multiplier(0.25).unwrap(), qm(1 << 30, -1));
        assert_eq!(quantize_multiplier(2.0).unwrap(), qm(1 << 30, 2));
        assert_eq!(quantize_multiplier(0.0).unwrap(), qm(0, 0));
        // 0.75 = 0.75 * 2^0 -> round(0.75 * 2^31)
        assert_eq!(quantize_multiplier(0.75).unwrap(), qm(1610612736, 0));
        // Negative multipliers are representable, as in TFLM.
        assert_eq!(quantize_multiplier(-0.5).unwrap(), qm(-(1 << 30), 0));
    }

    #[test]
    fn quantize_multiplier_rounds_up_to_next_power_of_two() {
        // Just below 1.0: the significand rounds to 2^31 and gets renormalized.
        let just_below_one = 1.0 - 1e-12;
        assert_eq!(quantize_multiplier(just_below_one).unwrap(), qm(1 << 30, 1));
        // A value whose Q0.31 significand needs real rounding.
        let r = quantize_multiplier(0.1).unwrap();
        assert_eq!(r, qm(1717986918, -3));
    }

    #[test]
    fn quantize_multiplier_tiny_flushes_to_zero() {
        // 2^-33 has frexp exponent -32 < -31.
        assert_eq!(
            quantize_multiplier(libm::ldexp(1.0, -33)).unwrap(),
            qm(0, 0)
        );
        // 2^-32 has exponent -31: kept.
        assert_eq!(
            quantize_multiplier(libm::ldexp(1.0, -32)).unwrap(),
            qm(1 << 30, -31)
        );
        assert!(quantize_multiplier(f64::NAN).is_err());
        assert!(quantize_multiplier(f64::INFINITY).is_err());
    }

    #[test]
    fn smaller_and_greater_than_one_checks() {
        assert!(quantize_multiplier_smaller_than_one_exp(1.0).is_err());
        assert!(quantize_multiplier_smaller_than_one_exp(0.0).is_err());
        // Rounds up to exactly 1.0 -> shift 1 -> rejected like TFLM's CHECK.
        assert!(quantize_multiplier_smaller_than_one_exp(1.0 - 1e-12).is_err());
        assert_eq!(
            quantize_multiplier_smaller_than_one_exp(0.5).unwrap(),
            qm(1 << 30, 0)
        );
        assert!(quantize_multiplier_greater_than_one(1.0).is_err());
        assert_eq!(
            quantize_multiplier_greater_than_one(3.0).unwrap(),
            qm(1610612736, 2)
        );
    }

    #[test]
    fn srdhm_known_values() {
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(1 << 30, 1 << 30),
            1 << 29
        );
        // 0.5 * 3 -> 1.5 rounds to 2.
        assert_eq!(saturating_rounding_doubling_high_mul(3, 1 << 30), 2);
        // Negative ties go up (toward zero): -1.5 -> -1.
        assert_eq!(saturating_rounding_doubling_high_mul(-3, 1 << 30), -1);
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MAX, i32::MAX),
            i32::MAX - 1
        );
    }

    #[test]
    fn rounding_divide_known_values() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3); // 2.5 -> 3
        assert_eq!(rounding_divide_by_pot(-5, 1), -3); // -2.5 -> -3
        assert_eq!(rounding_divide_by_pot(-6, 2), -2); // -1.5 -> -2
        assert_eq!(rounding_divide_by_pot(6, 2), 2); // 1.5 -> 2
        assert_eq!(rounding_divide_by_pot(-5, 2), -1); // -1.25 -> -1
        assert_eq!(rounding_divide_by_pot(7, 0), 7);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
    }

    #[test]
    fn multiply_by_quantized_multiplier_known_values() {
        // x * 0.5
        assert_eq!(multiply_by_quantized_multiplier(100, 1 << 30, 0), 50);
        assert_eq!(multiply_by_quantized_multiplier(101, 1 << 30, 0), 51);
        assert_eq!(multiply_by_quantized_multiplier(-101, 1 << 30, 0), -50);
        // x * 2 (0.5 * 2^2)
        assert_eq!(multiply_by_quantized_multiplier(100, 1 << 30, 2), 200);
        // x * 0.125
        assert_eq!(multiply_by_quantized_multiplier(100, 1 << 30, -2), 13);
        // Double rounding differs from single rounding here: 0.75 * 2^-1 on x = 3.
        // SRDHM(3, 0.75) = round(2.25) = 2; then 2 / 2 = 1 (single rounding: 1.125 -> 1).
        assert_eq!(multiply_by_quantized_multiplier(3, 1610612736, -1), 1);
        // A case where double rounding gives a different answer from exact rounding:
        // x = 5, M = 0.75 * 2^-2 = 0.1875 -> exact 0.9375 -> 1;
        // SRDHM(5, 0.75) = round(3.75) = 4, 4 / 4 = 1. x = 10: exact 1.875 -> 2;
        // SRDHM = round(7.5) = 8, 8/4 = 2.
        assert_eq!(multiply_by_quantized_multiplier(10, 1610612736, -2), 2);
        // x = 6, M = 0.5 * 2^-2 = 0.125 via (1<<30, -2): SRDHM(6)=3, 3/4 = 0.75 -> 1.
        assert_eq!(multiply_by_quantized_multiplier(6, 1 << 30, -2), 1);
    }

    #[test]
    fn double_rounding_differs_from_single_rounding() {
        // 2^30 + 1 significand (just above 0.5), shift -1: M ~ 0.25.
        // x = 2: exact 0.5000000005 -> 1. SRDHM(2, m) = round(1.0000000009) = 1,
        // then 1 / 2 = 0.5 -> rounds away from zero -> 1. Same.
        // x = -6 with m = 0.5 and shift -2: SRDHM = -3, -3/4 = -0.75 -> -1.
        assert_eq!(multiply_by_quantized_multiplier(-6, 1 << 30, -2), -1);
        // m = 0.5 + 2^-31, x = 1 << 20 + 1, shift -20 ... double vs single:
        // find a case by brute force and check the known TFLM double-rounding answer.
        let m = 1_431_655_765; // ~ 2/3 in Q0.31
                               // x = 7, shift -3: exact 7 * 2/3 / 8 = 0.58333 -> 1 (single rounding).
                               // SRDHM(7, m) = round(4.6667) = 5; 5 / 8 = 0.625 -> 1. Same.
        assert_eq!(multiply_by_quantized_multiplier(7, m, -3), 1);
        // x = 3, shift -2: exact 0.5 - tiny -> single rounding gives 0;
        // SRDHM(3, m) = round(1.99999999) = 2; 2 / 4 = 0.5 -> 1. Double rounding gives 1.
        assert_eq!(multiply_by_quantized_multiplier(3, m, -2), 1);
    }

    #[test]
    fn i64_variant_known_values() {
        // m = 0.5 -> reduced 2^14; shift 0 -> x * 2^14 / 2^15 rounded.
        assert_eq!(multiply_by_quantized_multiplier_i64(100, 1 << 30, 0), 50);
        assert_eq!(multiply_by_quantized_multiplier_i64(-101, 1 << 30, 0), -50);
        assert_eq!(
            multiply_by_quantized_multiplier_i64(1 << 40, 1 << 30, -10),
            1 << 29
        );
    }

    #[test]
    fn softmax_scaling_and_radius() {
        // beta = 1, scale = 1/16, 5 integer bits: 2^26 / 16 = 2^22 -> (2^30, 23).
        let qm_ = preprocess_softmax_scaling(1.0, 1.0 / 16.0, 5).unwrap();
        assert_eq!(qm_, qm(1 << 30, 23));
        // Radius: (2^5 - 1) * 2^26 / 2^23 = 31 * 8 = 248.
        assert_eq!(calculate_input_radius(5, 23, 31), 248);
        // Logistic-style: ib 4, shift 24: 15 * 2^27 / 2^24 = 120.
        assert_eq!(calculate_input_radius(4, 24, 31), 120);
        // Multiplier capped at 2^31 - 1.
        let capped = preprocess_softmax_scaling(1e9, 1.0, 5).unwrap();
        assert_eq!(capped, qm(i32::MAX, 31));
    }

    proptest! {
        #[test]
        fn srdhm_matches_wide_formula(
            a in any::<i32>(),
            b in prop_oneof![any::<i32>(), (-4i32..4).prop_map(|k| k << 29)],
        ) {
            let got = saturating_rounding_doubling_high_mul(a, b);
            // floor(a*b/2^31 + 1/2), saturated. The second strategy hits exact ties.
            let p = i128::from(a) * i128::from(b);
            let expected = (p + (1i128 << 30)).div_euclid(1i128 << 31);
            let expected = expected.clamp(i128::from(i32::MIN), i128::from(i32::MAX));
            prop_assert_eq!(i128::from(got), expected);
        }

        #[test]
        fn rounding_divide_matches_reference(x in any::<i32>(), e in 0i32..=31) {
            let got = rounding_divide_by_pot(x, e);
            let d = 1i128 << e;
            let x = i128::from(x);
            let q = x / d;
            let r = x % d;
            let expected = if 2 * r.abs() >= d { q + x.signum() } else { q };
            prop_assert_eq!(i128::from(got), expected);
        }

        #[test]
        fn multiplier_roundtrips(real in 1e-9f64..1e3) {
            let q = quantize_multiplier(real).unwrap();
            prop_assert!(q.multiplier >= 1 << 30);
            let back = q.to_real();
            prop_assert!(((back - real) / real).abs() < 1e-9);
        }

        #[test]
        fn apply_close_to_real_product(x in -100_000i32..100_000, real in 1e-4f64..4.0) {
            let q = quantize_multiplier(real).unwrap();
            let got = f64::from(q.apply(x));
            let exact = f64::from(x) * real;
            // Double rounding: at most one unit of error.
            prop_assert!((got - exact).abs() <= 1.0 + 1e-6 * exact.abs());
        }

        #[test]
        fn saturating_pot_matches_reference(x in any::<i32>(), e in -31i32..=31) {
            let got = i64::from(saturating_rounding_multiply_by_pot(x, e));
            if e >= 0 {
                let wide = (i64::from(x) << e).clamp(i64::from(i32::MIN), i64::from(i32::MAX));
                prop_assert_eq!(got, wide);
            } else {
                prop_assert_eq!(got, i64::from(rounding_divide_by_pot(x, -e)));
            }
        }
    }
}
