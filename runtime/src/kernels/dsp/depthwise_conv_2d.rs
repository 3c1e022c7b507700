//! int8 DEPTHWISE_CONV_2D (depth multiplier 1) for DSP cores, bit-exact with
//! [`reference::depthwise_conv_2d`]: four channels at a time, each tap one word of input
//! and one of filter unpacked with `SXTAB16`/`SXTB16` and multiplied lane by lane with
//! `SMLABB`/`SMLATT` ([`mac_4ch`]); only the taps inside the input are visited.
//!
//! The channel group is the outer loop, so its four multipliers are prepared once per
//! call rather than once per pixel. Preconditions are the reference's plus
//! `depth_multiplier == 1` and an input offset in `[-128, 128]`; otherwise nothing is
//! written (kiln's emitter keeps the reference kernel for other multipliers).
//!
//! [`reference::depthwise_conv_2d`]: crate::kernels::reference::depthwise_conv_2d

use super::requant::{apply, channel, fits, Channel};
use super::simd::{smlabb, smlatt, splat16, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8, word};
use crate::kernels::reference::conv_2d::ConvQuant;
use crate::kernels::reference::depthwise_conv_2d::{depthwise_lens, DepthwiseConv2dParams};
use crate::padding::Window2d;
use crate::unchecked::{get, get4, set};
use core::ops::Range;

/// Largest `|filter * (input + input_offset)|`: 128 * 256.
const PRODUCT: u32 = 128 * 256;

/// One tap of four channels: `acc[c] += (x[c] + offset) * f[c]`, with `offset` in both
/// halves of `offset2`.
#[inline(always)]
fn mac_4ch(x: [i8; 4], f: [i8; 4], offset2: u32, acc: [i32; 4]) -> [i32; 4] {
    let (x, f) = (word(x), word(f));
    // Lanes [0, 2] and [1, 3].
    let (xe, xo) = (sxtab16(offset2, x), sxtab16_ror8(offset2, x));
    let (fe, fo) = (sxtb16(f), sxtb16_ror8(f));
    [
        smlabb(xe, fe, acc[0]),
        smlabb(xo, fo, acc[1]),
        smlatt(xe, fe, acc[2]),
        smlatt(xo, fo, acc[3]),
    ]
}

/// The filter taps `0..filter` of one axis whose input index `origin + tap * dilation`
/// lies in `0..size`: a range, since the index grows with the tap.
#[inline]
pub(super) fn valid_taps(
    origin: isize,
    filter: usize,
    dilation: usize,
    size: usize,
) -> Range<usize> {
    let d = dilation.max(1) as isize;
    // The first tap whose index reaches `bound` (saturating: absurd windows give empty
    // ranges, never overflow).
    let first = |bound: isize| -> usize {
        let need = bound.saturating_sub(origin);
        if need <= 0 {
            0
        } else {
            need.saturating_add(d - 1).checked_div(d).unwrap_or(0) as usize
        }
    };
    let lo = first(0).min(filter);
    let hi = first(isize::try_from(size).unwrap_or(isize::MAX))
        .min(filter)
        .max(lo);
    lo..hi
}

/// int8 DEPTHWISE_CONV_2D with depth multiplier 1:
/// [`reference::depthwise_conv_2d::depthwise_conv_2d_i8`]'s result.
///
/// [`reference::depthwise_conv_2d::depthwise_conv_2d_i8`]: crate::kernels::reference::depthwise_conv_2d::depthwise_conv_2d_i8
#[allow(unsafe_code)]
pub fn depthwise_conv_2d_i8(
    p: &DepthwiseConv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
) {
    let Some((depth, input_len, filter_len, output_len)) = depthwise_lens(p) else {
        return;
    };
    if p.depth_multiplier != 1
        || input.len() != input_len
        || filter.len() != filter_len
        || output.len() != output_len
        || bias.is_some_and(|b| b.len() != depth)
        || !q.multipliers.covers(depth)
        || !(-128..=128).contains(&q.input_offset)
    {
        return;
    }
    let w: &Window2d = &p.window;
    let [in_h, in_w] = w.input;
    let [f_h, f_w] = w.filter;
    let [out_h, out_w] = w.output;
    let taps = f_h * f_w;
    let offset = q.output_offset;
    let act = q.activation;
    let bias_of = |c: usize| bias.and_then(|b| b.get(c)).copied().unwrap_or(0);
    let prepare = |c: usize| -> (Channel, bool) {
        let (b, m) = (bias_of(c), q.multipliers.get(c));
        (channel(b, m, offset), fits(b, m, offset, taps, PRODUCT))
    };
    // Requantizes channel `c`'s sum (bias included) and clamps it.
    let finish = |acc: i32, c: usize, ch: &Channel, fast: bool| -> i8 {
        let scaled = if fast {
            apply(ch, acc)
        } else {
            q.multipliers.get(c).apply(acc).wrapping_add(offset)
        };
        act.clamp_i8(scaled)
    };
    let offset2 = splat16(q.input_offset);
    let groups = depth / 4;
    for n in 0..p.batches {
        for g in 0..groups {
            let c = 4 * g;
            let prepared = [prepare(c), prepare(c + 1), prepare(c + 2), prepare(c + 3)];
            let fast = prepared.iter().all(|(_, fits)| *fits);
            let chs = prepared.map(|(ch, _)| ch);
            let init = chs.map(|ch| ch[0] as i32);
            for oy in 0..out_h {
                let y0 = w.origin(0, oy);
                let rows = valid_taps(y0, f_h, w.dilation[0], in_h);
                for ox in 0..out_w {
                    let x0 = w.origin(1, ox);
                    let cols = valid_taps(x0, f_w, w.dilation[1], in_w);
                    let mut acc = init;
                    for fy in rows.clone() {
                        let iy = (y0 + (fy * w.dilation[0]) as isize) as usize;
                        let row = (n * in_h + iy) * in_w;
                        for fx in cols.clone() {
                            let ix = (x0 + (fx * w.dilation[1]) as isize) as usize;
                            // SAFETY: iy < in_h and ix < in_w (valid_taps), c + 4 <= depth,
                            // so the input index + 4 is at most batches*in_h*in_w*depth ==
                            // input.len(); fy < f_h and fx < f_w bound the filter index + 4
                            // by f_h*f_w*depth == filter.len() (depthwise_lens).
                            let (x, f) = unsafe {
                                (
                                    get4(input, (row + ix) * depth + c),
                                    get4(filter, (fy * f_w + fx) * depth + c),
                                )
                            };
                            acc = mac_4ch(x, f, offset2, acc);
                        }
                    }
                    let out = ((n * out_h + oy) * out_w + ox) * depth + c;
                    let [a0, a1, a2, a3] = acc;
                    let [ch0, ch1, ch2, ch3] = &chs;
                    // SAFETY: out + 3 < batches*out_h*out_w*depth == output.len().
                    unsafe {
                        set(output, out, finish(a0, c, ch0, fast));
                        set(output, out + 1, finish(a1, c + 1, ch1, fast));
                        set(output, out + 2, finish(a2, c + 2, ch2, fast));
                        set(output, out + 3, finish(a3, c + 3, ch3, fast));
                    }
                }
            }
        }
        // The channels past the last group of four, one at a time.
        for c in 4 * groups..depth {
            let (ch, fast) = prepare(c);
            for oy in 0..out_h {
                let y0 = w.origin(0, oy);
                let rows = valid_taps(y0, f_h, w.dilation[0], in_h);
                for ox in 0..out_w {
                    let x0 = w.origin(1, ox);
                    let mut acc = ch[0] as i32;
                    for fy in rows.clone() {
                        let iy = (y0 + (fy * w.dilation[0]) as isize) as usize;
                        for fx in valid_taps(x0, f_w, w.dilation[1], in_w) {
                            let ix = (x0 + (fx * w.dilation[1]) as isize) as usize;
                            // SAFETY: as above, for one channel c < depth.
                            let (x, f) = unsafe {
                                (
                                    get(input, ((n * in_h + iy) * in_w + ix) * depth + c),
                                    get(filter, (fy * f_w + fx) * depth + c),
                                )
                            };
                            let x = i32::from(x) + q.input_offset;
                            acc = acc.wrapping_add(i32::from(f) * x);
                        }
                    }
                    let out = ((n * out_h + oy) * out_w + ox) * depth + c;
                    // SAFETY: out < output.len(), as above.
                    unsafe { set(output, out, finish(acc, c, &ch, fast)) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dsp::test_util::{arb_multipliers, Case};
    use crate::kernels::reference::depthwise_conv_2d as reference;
    use crate::padding::Padding;
    use crate::quant::ChannelMultipliers;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn matches_the_reference(
            (p, case, (multipliers, per_channel)) in (
                (1usize..3, 1usize..10, 1usize..10, 1usize..14),
                (1usize..5, 1usize..5, 1usize..3, 1usize..3),
                (1usize..3, 1usize..3, any::<bool>()),
            )
                .prop_filter_map("window", |((n, h, w, c), (fh, fw, sy, sx), (dy, dx, same))| {
                    let padding = if same { Padding::Same } else { Padding::Valid };
                    DepthwiseConv2dParams::new([n, h, w, c], [1, fh, fw, c], 1, [sy, sx], [dy, dx], padding).ok()
                })
                .prop_flat_map(|p| {
                    let c = p.output_depth();
                    (Just(p), Case::arb(p.input_len(), p.filter_len(), c, 0), arb_multipliers(c))
                })
        ) {
            let q = ConvQuant {
                input_offset: case.input_offset,
                output_offset: case.output_offset,
                multipliers: if per_channel {
                    ChannelMultipliers::PerChannel(&multipliers)
                } else {
                    ChannelMultipliers::PerTensor(multipliers[0])
                },
                activation: case.activation,
            };
            let bias = case.bias.as_deref();
            let mut want = vec![0i8; p.output_len()];
            let mut got = vec![0i8; p.output_len()];
            reference::depthwise_conv_2d_i8(&p, &q, &case.input, &case.filter, bias, &mut want);
            depthwise_conv_2d_i8(&p, &q, &case.input, &case.filter, bias, &mut got);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn valid_taps_are_those_inside() {
        for origin in -7isize..7 {
            for filter in 0..6 {
                for dilation in 1..4 {
                    for size in 0..6 {
                        let want: Vec<usize> = (0..filter)
                            .filter(|&t| {
                                (0..size as isize).contains(&(origin + (t * dilation) as isize))
                            })
                            .collect();
                        let got: Vec<usize> = valid_taps(origin, filter, dilation, size).collect();
                        assert_eq!(
                            got, want,
                            "origin {origin} filter {filter} dilation {dilation} size {size}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn other_multipliers_write_nothing() {
        let p = DepthwiseConv2dParams::new(
            [1, 3, 3, 2],
            [1, 3, 3, 4],
            2,
            [1, 1],
            [1, 1],
            Padding::Same,
        )
        .unwrap();
        let q = ConvQuant {
            input_offset: 0,
            output_offset: 0,
            multipliers: ChannelMultipliers::PerTensor(crate::quant::QuantizedMultiplier {
                multiplier: 1 << 30,
                shift: 0,
            }),
            activation: crate::activation::ActivationRange::FULL_I8,
        };
        let mut out = [5i8; 36];
        depthwise_conv_2d_i8(&p, &q, &[1; 18], &[1; 36], None, &mut out);
        assert_eq!(out, [5; 36]);
    }
}
