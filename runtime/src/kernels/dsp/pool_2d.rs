//! int8 AVERAGE_POOL_2D and MAX_POOL_2D for DSP cores, bit-exact with
//! [`reference::average_pool_2d`] and [`reference::max_pool_2d`]: four channels per
//! input word. Averages sum into two words of 16-bit lanes with `SXTAB16` (exact for
//! windows of up to 255 elements; larger windows sum in 32 bits); maxima take the
//! bytewise signed maximum (`SSUB8` + `SEL`). Preconditions are the reference's;
//! otherwise nothing is written.
//!
//! [`reference::average_pool_2d`]: crate::kernels::reference::average_pool_2d
//! [`reference::max_pool_2d`]: crate::kernels::reference::max_pool_2d

use super::depthwise_conv_2d::valid_taps;
use super::simd::{hi16, lo16, max8, min8, splat8, sxtab16, sxtab16_ror8, word};
use crate::activation::ActivationRange;
use crate::kernels::reference::average_pool_2d::Pool2dParams;
use crate::unchecked::{get, get4, set};
use core::ops::Range;

/// Most elements a 16-bit lane can sum exactly (`255 * 128 < 2^15`).
const MAX_16BIT_COUNT: usize = 255;

/// TFLM's average: `(sum ± count / 2) / count` with C's truncating division, rounding
/// half away from zero; 0 for an empty window.
#[inline(always)]
fn average(sum: i32, count: i32) -> i32 {
    let half = count / 2;
    let rounded = if sum > 0 { sum + half } else { sum - half };
    rounded.checked_div(count).unwrap_or(0)
}

/// Calls `f(out_index, input_rows, input_cols)` for every output pixel, in order, with
/// the flat NHWC index of its channel 0 and the input rows and columns its window covers.
#[inline(always)]
fn for_each_window(p: &Pool2dParams, mut f: impl FnMut(usize, usize, Range<usize>, Range<usize>)) {
    let w = &p.window;
    let [in_h, in_w] = w.input;
    let [f_h, f_w] = w.filter;
    let [out_h, out_w] = w.output;
    for n in 0..p.batches {
        for oy in 0..out_h {
            let y0 = w.origin(0, oy);
            let taps = valid_taps(y0, f_h, 1, in_h);
            let rows = (y0 + taps.start as isize) as usize..(y0 + taps.end as isize) as usize;
            for ox in 0..out_w {
                let x0 = w.origin(1, ox);
                let taps = valid_taps(x0, f_w, 1, in_w);
                let cols = (x0 + taps.start as isize) as usize..(x0 + taps.end as isize) as usize;
                let out = ((n * out_h + oy) * out_w + ox) * p.depth;
                f(n * in_h, out, rows.clone(), cols);
            }
        }
    }
}

/// int8 AVERAGE_POOL_2D: [`reference::average_pool_2d::average_pool_2d_i8`]'s result.
///
/// [`reference::average_pool_2d::average_pool_2d_i8`]: crate::kernels::reference::average_pool_2d::average_pool_2d_i8
#[allow(unsafe_code)]
pub fn average_pool_2d_i8(
    p: &Pool2dParams,
    activation: ActivationRange,
    input: &[i8],
    output: &mut [i8],
) {
    if !p.lens_match(input.len(), output.len()) {
        return;
    }
    let depth = p.depth;
    let in_w = p.window.input[1];
    let groups = if depth >= 4 { depth / 4 } else { 0 };
    for_each_window(p, |row0, out, rows, cols| {
        let count = rows.len() * cols.len();
        let index = |iy: usize, ix: usize| ((row0 + iy) * in_w + ix) * depth;
        let lanes = if count <= MAX_16BIT_COUNT { groups } else { 0 };
        for g in 0..lanes {
            let (mut even, mut odd) = (0u32, 0u32);
            for iy in rows.clone() {
                for ix in cols.clone() {
                    // SAFETY: the window lies inside the input and 4 * g + 4 <= depth, so
                    // the word ends within input.len() (lens_match).
                    let x = word(unsafe { get4(input, index(iy, ix) + 4 * g) });
                    even = sxtab16(even, x);
                    odd = sxtab16_ror8(odd, x);
                }
            }
            let sums = [lo16(even), lo16(odd), hi16(even), hi16(odd)];
            for (i, sum) in sums.into_iter().enumerate() {
                let v = activation.clamp_i8(average(sum, count as i32));
                // SAFETY: out + 4 * g + i < output.len(): one pixel's channels.
                unsafe { set(output, out + 4 * g + i, v) };
            }
        }
        for c in 4 * lanes..depth {
            let mut sum = 0i32;
            for iy in rows.clone() {
                for ix in cols.clone() {
                    // SAFETY: as above, for one channel c < depth.
                    sum = sum.wrapping_add(i32::from(unsafe { get(input, index(iy, ix) + c) }));
                }
            }
            // SAFETY: out + c < output.len().
            unsafe {
                set(
                    output,
                    out + c,
                    activation.clamp_i8(average(sum, count as i32)),
                )
            };
        }
    });
}

/// int8 MAX_POOL_2D: [`reference::max_pool_2d::max_pool_2d_i8`]'s result.
///
/// [`reference::max_pool_2d::max_pool_2d_i8`]: crate::kernels::reference::max_pool_2d::max_pool_2d_i8
#[allow(unsafe_code)]
pub fn max_pool_2d_i8(
    p: &Pool2dParams,
    activation: ActivationRange,
    input: &[i8],
    output: &mut [i8],
) {
    if !p.lens_match(input.len(), output.len()) {
        return;
    }
    let depth = p.depth;
    let in_w = p.window.input[1];
    let groups = depth / 4;
    // The clamp as bytewise max/min, when its bounds are int8 values (always, for
    // prepared params); otherwise lane by lane like the reference.
    let bytewise = (-128..=127).contains(&activation.min) && (-128..=127).contains(&activation.max);
    let (lo, hi) = (splat8(activation.min as i8), splat8(activation.max as i8));
    for_each_window(p, |row0, out, rows, cols| {
        let index = |iy: usize, ix: usize| ((row0 + iy) * in_w + ix) * depth;
        for g in 0..groups {
            let mut m = splat8(i8::MIN);
            for iy in rows.clone() {
                for ix in cols.clone() {
                    // SAFETY: as in average_pool_2d_i8.
                    m = max8(m, word(unsafe { get4(input, index(iy, ix) + 4 * g) }));
                }
            }
            let lanes = if bytewise {
                min8(max8(m, lo), hi).to_le_bytes().map(|b| b as i8)
            } else {
                m.to_le_bytes()
                    .map(|b| activation.clamp_i8(i32::from(b as i8)))
            };
            for (i, v) in lanes.into_iter().enumerate() {
                // SAFETY: out + 4 * g + i < output.len(): one pixel's channels.
                unsafe { set(output, out + 4 * g + i, v) };
            }
        }
        for c in 4 * groups..depth {
            let mut m = i8::MIN;
            for iy in rows.clone() {
                for ix in cols.clone() {
                    // SAFETY: as above, for one channel c < depth.
                    m = m.max(unsafe { get(input, index(iy, ix) + c) });
                }
            }
            // SAFETY: out + c < output.len().
            unsafe { set(output, out + c, activation.clamp_i8(i32::from(m))) };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dsp::test_util::{activation, bytes};
    use crate::kernels::reference::{average_pool_2d, max_pool_2d};
    use crate::padding::Padding;
    use proptest::prelude::*;

    fn arb_pool() -> impl Strategy<Value = (Pool2dParams, Vec<i8>, ActivationRange)> {
        (
            (1usize..3, 1usize..12, 1usize..12, 1usize..11),
            (1usize..6, 1usize..6, 1usize..4, 1usize..4, any::<bool>()),
        )
            .prop_filter_map("window", |((n, h, w, c), (fh, fw, sy, sx, same))| {
                let padding = if same { Padding::Same } else { Padding::Valid };
                Pool2dParams::new([n, h, w, c], [fh, fw], [sy, sx], padding).ok()
            })
            .prop_flat_map(|p| (Just(p), bytes(p.input_len()), activation()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn average_matches_the_reference((p, input, act) in arb_pool()) {
            let mut want = vec![0i8; p.output_len()];
            let mut got = vec![0i8; p.output_len()];
            average_pool_2d::average_pool_2d_i8(&p, act, &input, &mut want);
            average_pool_2d_i8(&p, act, &input, &mut got);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn max_matches_the_reference((p, input, act) in arb_pool(), wild: bool) {
            // Also clamp bounds outside int8, which the bytewise clamp must not take.
            let act = if wild { ActivationRange { min: act.min - 300, max: act.max } } else { act };
            let mut want = vec![0i8; p.output_len()];
            let mut got = vec![0i8; p.output_len()];
            max_pool_2d::max_pool_2d_i8(&p, act, &input, &mut want);
            max_pool_2d_i8(&p, act, &input, &mut got);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn large_windows_sum_in_32_bits() {
        // 16x16 = 256 elements of -128: one past what 16-bit lanes hold.
        let p = Pool2dParams::new([1, 16, 16, 8], [16, 16], [1, 1], Padding::Valid).unwrap();
        let input = vec![-128i8; p.input_len()];
        let (mut want, mut got) = (vec![0i8; 8], vec![0i8; 8]);
        average_pool_2d::average_pool_2d_i8(&p, ActivationRange::FULL_I8, &input, &mut want);
        average_pool_2d_i8(&p, ActivationRange::FULL_I8, &input, &mut got);
        assert_eq!(got, want);
        assert_eq!(got, vec![-128i8; 8]);
    }
}
