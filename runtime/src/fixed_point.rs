//! gemmlowp-style fixed-point math on raw `i32` values, as used by TFLM's int8 softmax,
//! logistic and tanh.
//!
//! A value in "Q`ib`" format has `ib` integer bits (excluding sign) and `31 - ib`
//! fractional bits: raw `r` stands for `r / 2^(31 - ib)`. gemmlowp encodes `ib` in the
//! type; here it is an explicit argument. Non-saturating additions wrap (the C++ relies
//! on them not overflowing; wrapping keeps Rust debug builds panic-free).

use crate::quant::{
    rounding_divide_by_pot, saturating_rounding_doubling_high_mul as mul,
    saturating_rounding_multiply_by_pot,
};

/// Raw `1.0` in Q0.31 (saturated: `1 - 2^-31`), gemmlowp's `FixedPoint<int32, 0>::One()`.
pub const ONE_Q0: i32 = i32::MAX;

/// gemmlowp `Rescale`: converts a raw value from `src_bits` to `dst_bits` integer bits,
/// saturating or rounding as needed.
#[inline]
pub fn rescale(x: i32, src_bits: i32, dst_bits: i32) -> i32 {
    saturating_rounding_multiply_by_pot(x, src_bits - dst_bits)
}

/// gemmlowp `RoundingHalfSum`: `(a + b) / 2` rounded half away from zero, in 64 bits.
#[inline]
pub fn rounding_half_sum(a: i32, b: i32) -> i32 {
    let sum = i64::from(a) + i64::from(b);
    let sign = if sum >= 0 { 1 } else { -1 };
    ((sum + sign) / 2) as i32
}

/// `1.0` in Q`ib` (for `ib > 0`): `1 << (31 - ib)`; for `ib == 0` the saturated one.
#[inline]
fn one(ib: i32) -> i32 {
    if ib == 0 {
        ONE_Q0
    } else {
        1 << (31 - ib)
    }
}

/// `exp(a)` for `a` in `[-1/4, 0)`, Q0.31 in and out: Taylor series around `-1/8`.
pub fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i32) -> i32 {
    const CONSTANT_TERM: i32 = 1_895_147_668; // exp(-1/8)
    const CONSTANT_1_OVER_3: i32 = 715_827_883;
    let x = a.wrapping_add(1 << 28); // a + 1/8
    let x2 = mul(x, x);
    let x3 = mul(x2, x);
    let x4 = mul(x2, x2);
    let x4_over_4 = rounding_divide_by_pot(x4, 2);
    let poly = rounding_divide_by_pot(
        mul(x4_over_4.wrapping_add(x3), CONSTANT_1_OVER_3).wrapping_add(x2),
        1,
    );
    CONSTANT_TERM.wrapping_add(mul(CONSTANT_TERM, x.wrapping_add(poly)))
}

/// gemmlowp `exp_on_negative_values`: `exp(a)` for `a <= 0` given in Q`integer_bits`,
/// result in Q0.31. Splits `a` into a remainder in `[-1/4, 0)` and a barrel of
/// precomputed `exp(-2^k)` factors.
pub fn exp_on_negative_values(a: i32, integer_bits: i32) -> i32 {
    let fractional_bits = 31 - integer_bits;
    let one_quarter = 1i32 << (fractional_bits - 2);
    let mask = one_quarter - 1;
    let a_mod_quarter_minus_one_quarter = (a & mask).wrapping_sub(one_quarter);
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(rescale(
        a_mod_quarter_minus_one_quarter,
        integer_bits,
        0,
    ));
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);

    // (exponent k, raw Q0.31 of exp(-2^k))
    const BARREL: [(i32, i32); 7] = [
        (-2, 1_672_461_947),
        (-1, 1_302_514_674),
        (0, 790_015_084),
        (1, 290_630_308),
        (2, 39_332_535),
        (3, 720_401),
        (4, 242),
    ];
    for &(exponent, multiplier) in BARREL.iter() {
        if integer_bits > exponent {
            let shift = fractional_bits + exponent;
            if remainder & (1i32 << shift) != 0 {
                result = mul(result, multiplier);
            }
        }
    }

    if integer_bits > 5 {
        let clamp = -(1i32 << (36 - integer_bits)); // -32.0
        if a < clamp {
            result = 0;
        }
    }
    if a == 0 {
        result = ONE_Q0;
    }
    result
}

/// Newton-Raphson reciprocal shared by the two `..._for_x_in_0_1` functions: returns
/// `x ~ 1 / half_denominator` in Q2.29.
fn newton_reciprocal_q2(half_denominator: i32) -> i32 {
    const C_48_OVER_17: i32 = 1_515_870_810;
    const C_NEG_32_OVER_17: i32 = -1_010_580_540;
    let one_q2 = one(2);
    let mut x = C_48_OVER_17.wrapping_add(mul(half_denominator, C_NEG_32_OVER_17));
    for _ in 0..3 {
        let half_denominator_times_x = mul(half_denominator, x);
        let one_minus = one_q2.wrapping_sub(half_denominator_times_x);
        x = x.wrapping_add(rescale(mul(x, one_minus), 4, 2));
    }
    x
}

/// gemmlowp `one_over_one_plus_x_for_x_in_0_1`: `1 / (1 + a)` for `a` in `[0, 1)`,
/// Q0.31 in and out.
pub fn one_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    let half_denominator = rounding_half_sum(a, ONE_Q0);
    let x = newton_reciprocal_q2(half_denominator);
    // ExactMulByPot<-1> turns Q2 into Q1 without touching the raw value.
    rescale(x, 1, 0)
}

/// gemmlowp `one_minus_x_over_one_plus_x_for_x_in_0_1`: `(1 - a) / (1 + a)` for `a` in
/// `[0, 1)`, Q0.31 in and out.
pub fn one_minus_x_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    let half_denominator = rounding_half_sum(a, ONE_Q0);
    let x = newton_reciprocal_q2(half_denominator);
    rescale(x.wrapping_sub(one(2)), 2, 0)
}

/// gemmlowp `logistic`: `1 / (1 + exp(-a))` for `a` in Q`integer_bits`, result Q0.31.
pub fn logistic(a: i32, integer_bits: i32) -> i32 {
    if a == 0 {
        return 1 << 30;
    }
    let abs_input = if a > 0 { a } else { a.wrapping_neg() };
    let result_if_positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(
        abs_input.wrapping_neg(),
        integer_bits,
    ));
    if a > 0 {
        result_if_positive
    } else {
        ONE_Q0.wrapping_sub(result_if_positive)
    }
}

/// gemmlowp `tanh`: `tanh(a)` for `a` in Q`integer_bits`, result Q0.31.
pub fn tanh(a: i32, integer_bits: i32) -> i32 {
    if a == 0 {
        return 0;
    }
    let negative = a < 0;
    let n = if negative { a } else { a.wrapping_neg() };
    // ExactMulByPot<1>: 2n, same raw value with one more integer bit.
    let t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1));
    if negative {
        t.wrapping_neg()
    } else {
        t
    }
}

/// TFLM's `GetReciprocal`: for `x > 0` in Q`x_integer_digits`, returns
/// `(reciprocal_q0, num_bits_over_unit)` where
/// `1/x = reciprocal_q0 / 2^31 * 2^-num_bits_over_unit` (approximately).
pub fn get_reciprocal(x: i32, x_integer_digits: i32) -> (i32, i32) {
    let headroom_plus_one = (x as u32).leading_zeros();
    let num_bits_over_unit = x_integer_digits - headroom_plus_one as i32;
    let shifted = (x as u32).checked_shl(headroom_plus_one).unwrap_or(0);
    let shifted_sum_minus_one = shifted.wrapping_sub(1u32 << 31) as i32;
    (
        one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one),
        num_bits_over_unit,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn to_f(raw: i32, ib: i32) -> f64 {
        f64::from(raw) / libm::ldexp(1.0, 31 - ib)
    }
    fn from_f(x: f64, ib: i32) -> i32 {
        libm::round(x * libm::ldexp(1.0, 31 - ib)) as i32
    }

    #[test]
    fn exp_known_points() {
        assert_eq!(exp_on_negative_values(0, 5), ONE_Q0);
        let e1 = to_f(exp_on_negative_values(from_f(-1.0, 5), 5), 0);
        assert!((e1 - libm::exp(-1.0)).abs() < 2e-7, "{e1}");
        let e = to_f(exp_on_negative_values(from_f(-10.5, 5), 5), 0);
        assert!((e - libm::exp(-10.5)).abs() < 2e-7, "{e}");
    }

    #[test]
    fn exp_clamps_below_minus_32_when_wide() {
        // With 6 integer bits, inputs below -32 give exactly 0.
        assert_eq!(exp_on_negative_values(from_f(-40.0, 6), 6), 0);
    }

    #[test]
    fn reciprocal_and_logistic_tanh_points() {
        let r = to_f(one_over_one_plus_x_for_x_in_0_1(from_f(0.5, 0)), 0);
        assert!((r - 1.0 / 1.5).abs() < 1e-8);
        let r = to_f(one_minus_x_over_one_plus_x_for_x_in_0_1(from_f(0.5, 0)), 0);
        assert!((r - 0.5 / 1.5).abs() < 1e-8);
        assert_eq!(logistic(0, 4), 1 << 30);
        assert_eq!(tanh(0, 4), 0);
        let l = to_f(logistic(from_f(2.0, 4), 4), 0);
        assert!((l - 1.0 / (1.0 + libm::exp(-2.0))).abs() < 1e-7);
        let t = to_f(tanh(from_f(-0.75, 4), 4), 0);
        assert!((t - libm::tanh(-0.75)).abs() < 1e-7);
    }

    #[test]
    fn get_reciprocal_of_accumulated_sum() {
        // x = 3.0 in Q12.19.
        let (recip, bits) = get_reciprocal(from_f(3.0, 12), 12);
        // 1/3 = recip/2^31 * 2^-bits
        let v = to_f(recip, 0) * libm::ldexp(1.0, -bits);
        // 3.0 = 1.5 * 2^1: the Q0 value is 1/1.5 and one bit is over unit.
        assert_eq!(bits, 1);
        assert!((v - 1.0 / 3.0).abs() < 1e-6, "{v}");
    }

    proptest! {
        #[test]
        fn exp_close_to_libm(x in -31.9f64..0.0) {
            let got = to_f(exp_on_negative_values(from_f(x, 5), 5), 0);
            // gemmlowp's polynomial plus Q5.26 input rounding: errors reach ~3e-7 near 0.
            prop_assert!((got - libm::exp(x)).abs() < 1e-6, "x = {x}: {got} vs {}", libm::exp(x));
        }

        #[test]
        fn logistic_close_to_libm(x in -15.9f64..15.9) {
            let got = to_f(logistic(from_f(x, 4), 4), 0);
            prop_assert!((got - 1.0 / (1.0 + libm::exp(-x))).abs() < 5e-7);
        }

        #[test]
        fn tanh_close_to_libm(x in -15.9f64..15.9) {
            let got = to_f(tanh(from_f(x, 4), 4), 0);
            prop_assert!((got - libm::tanh(x)).abs() < 5e-7);
        }
    }
}
