//! int8 DEPTHWISE_CONV_2D (depth multiplier 1) for DSP cores, bit-exact with
//! [`reference::depthwise_conv_2d`]: four channels at a time, each tap one word of input
//! and one of filter unpacked with `SXTAB16`/`SXTB16` and multiplied lane by lane with
//! `SMLABB`/`SMLATT` (`mac_4ch`); only the taps inside the input are visited.
//!
//! The channel group is the outer loop, so its four multipliers are prepared once per
//! call rather than once per pixel. Preconditions are the reference's plus
//! `depth_multiplier == 1` and an input offset in `[-128, 128]`; otherwise nothing is
//! written (kiln's emitter keeps the reference kernel for other multipliers).
//!
//! [`reference::depthwise_conv_2d`]: crate::kernels::reference::depthwise_conv_2d

use super::requant::{apply, channel, fits, Channels4, Clamp4};
use super::simd::{
    smla_4ch, smla_4ch_row3, smlabb, smlatt, splat16, splat8, sxtb16, sxtb16_ror8, word,
};
use crate::kernels::reference::conv_2d::ConvQuant;
use crate::kernels::reference::depthwise_conv_2d::{depthwise_lens, DepthwiseConv2dParams};
use crate::padding::Window2d;
use crate::unchecked::{get, get3, get4, set, set4};
use core::ops::Range;

/// Largest `|filter * (input + input_offset)|`: 128 * 256.
const PRODUCT: u32 = 128 * 256;

/// One tap of four channels: `acc[c] += (x[c] + offset) * f[c]`, with `offset` in both
/// halves of `offset2`.
#[inline(always)]
fn mac_4ch(x: [i8; 4], f: [i8; 4], offset2: u32, acc: [i32; 4]) -> [i32; 4] {
    let f = word(f);
    smla_4ch::<true>(word(x), offset2, [sxtb16(f), sxtb16_ror8(f)], acc)
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

/// Checks the arguments both kernels share (the reference's preconditions, depth
/// multiplier 1, an int8 input zero point); the channel count when they hold.
fn check(
    p: &DepthwiseConv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &[i8],
) -> Option<usize> {
    let (depth, input_len, filter_len, output_len) = depthwise_lens(p)?;
    let ok = p.depth_multiplier == 1
        && input.len() == input_len
        && filter.len() == filter_len
        && output.len() == output_len
        && bias.is_none_or(|b| b.len() == depth)
        && q.multipliers.covers(depth)
        && (-127..=128).contains(&q.input_offset);
    ok.then_some(depth)
}

/// Four channels `c..c + 4` prepared for requantization: their [`Channel`]s, whether
/// all of them take the fast path, and their biases (where sums start).
struct Group {
    channels: Channels4,
    fast: bool,
    bias: [i32; 4],
}

impl Group {
    #[inline(always)]
    fn new(q: &ConvQuant<'_>, bias: Option<&[i32]>, c: usize, taps: usize) -> Self {
        let one = |c: usize| {
            let b = bias.and_then(|b| b.get(c)).copied().unwrap_or(0);
            let m = q.multipliers.get(c);
            (
                channel(b, m, q.output_offset),
                fits(b, m, q.output_offset, taps, PRODUCT),
            )
        };
        let prepared = [one(c), one(c + 1), one(c + 2), one(c + 3)];
        let channels = prepared.map(|(ch, _)| ch);
        Self {
            channels: Channels4::new(&channels),
            fast: prepared.iter().all(|(_, fits)| *fits),
            bias: channels.map(|ch| ch[0] as i32),
        }
    }

    /// The four outputs of sums `acc` (bias included), requantized, offset and clamped.
    #[inline(always)]
    fn finish(&self, q: &ConvQuant<'_>, clamp: &Clamp4, c: usize, acc: [i32; 4]) -> [i8; 4] {
        let [a0, a1, a2, a3] = acc;
        let values = if self.fast {
            self.channels.apply(acc)
        } else {
            let slow =
                |a: i32, c: usize| q.multipliers.get(c).apply(a).wrapping_add(q.output_offset);
            [
                slow(a0, c),
                slow(a1, c + 1),
                slow(a2, c + 2),
                slow(a3, c + 3),
            ]
        };
        clamp.apply(values)
    }
}

/// The channels `from..depth` (fewer than four), one at a time: the reference's loop
/// with the fast requantization.
#[allow(unsafe_code, clippy::too_many_arguments)]
fn remaining_channels(
    p: &DepthwiseConv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
    depth: usize,
    from: usize,
) {
    let w = &p.window;
    let [in_h, in_w] = w.input;
    let [f_h, f_w] = w.filter;
    let [out_h, out_w] = w.output;
    for n in 0..p.batches {
        for c in from..depth {
            let b = bias.and_then(|b| b.get(c)).copied().unwrap_or(0);
            let m = q.multipliers.get(c);
            let ch = channel(b, m, q.output_offset);
            let fast = fits(b, m, q.output_offset, f_h * f_w, PRODUCT);
            for oy in 0..out_h {
                let y0 = w.origin(0, oy);
                let rows = valid_taps(y0, f_h, w.dilation[0], in_h);
                for ox in 0..out_w {
                    let x0 = w.origin(1, ox);
                    let mut acc = b;
                    for fy in rows.clone() {
                        let iy = (y0 + (fy * w.dilation[0]) as isize) as usize;
                        for fx in valid_taps(x0, f_w, w.dilation[1], in_w) {
                            let ix = (x0 + (fx * w.dilation[1]) as isize) as usize;
                            // SAFETY: iy < in_h and ix < in_w (valid_taps) and c < depth
                            // bound the input index by input.len(); fy < f_h, fx < f_w
                            // the filter index by filter.len() (depthwise_lens).
                            let (x, f) = unsafe {
                                (
                                    get(input, ((n * in_h + iy) * in_w + ix) * depth + c),
                                    get(filter, (fy * f_w + fx) * depth + c),
                                )
                            };
                            acc = acc.wrapping_add(i32::from(f) * (i32::from(x) + q.input_offset));
                        }
                    }
                    let scaled = if fast {
                        apply(&ch, acc)
                    } else {
                        m.apply(acc).wrapping_add(q.output_offset)
                    };
                    let out = ((n * out_h + oy) * out_w + ox) * depth + c;
                    // SAFETY: out < batches*out_h*out_w*depth == output.len().
                    unsafe { set(output, out, q.activation.clamp_i8(scaled)) };
                }
            }
        }
    }
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
    let Some(depth) = check(p, q, input, filter, bias, output) else {
        return;
    };
    let w: &Window2d = &p.window;
    let [in_h, in_w] = w.input;
    let [f_h, f_w] = w.filter;
    let [out_h, out_w] = w.output;
    let clamp = Clamp4::new(q.activation);
    let offset2 = splat16(q.input_offset);
    let groups = depth / 4;
    for n in 0..p.batches {
        for g in 0..groups {
            let c = 4 * g;
            let group = Group::new(q, bias, c, f_h * f_w);
            for oy in 0..out_h {
                let y0 = w.origin(0, oy);
                let rows = valid_taps(y0, f_h, w.dilation[0], in_h);
                for ox in 0..out_w {
                    let x0 = w.origin(1, ox);
                    let cols = valid_taps(x0, f_w, w.dilation[1], in_w);
                    let mut acc = group.bias;
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
                    // SAFETY: out + 4 <= batches*out_h*out_w*depth == output.len().
                    unsafe { set4(output, out, group.finish(q, &clamp, c, acc)) };
                }
            }
        }
    }
    remaining_channels(p, q, input, filter, bias, output, depth, 4 * groups);
}

/// Words of scratch [`depthwise_conv_2d_3x3_i8`] needs for `p`: three input rows of one
/// channel group, widened by two padding columns on each side.
pub fn depthwise_conv_2d_3x3_scratch_words(p: &DepthwiseConv2dParams) -> usize {
    p.window.input[1].saturating_add(4).saturating_mul(3)
}

/// [`depthwise_conv_2d_i8`] specialized for 3x3 filters without dilation. For each group
/// of four channels, the input rows each output row reads are copied into `scratch`
/// (three row buffers, rolled from one output row to the next so each input row is
/// copied once for stride 1) with the padding written out as the input zero point, so
/// every output pixel takes the same nine unrolled taps; the input offset, whose share
/// of each sum is then `offset * sum(filter)` whatever the pixel, is added to the bias
/// up front and the taps unpack with plain `SXTB16`.
///
/// Preconditions, beyond [`depthwise_conv_2d_i8`]'s: `p.window.filter == [3, 3]`,
/// `p.window.dilation == [1, 1]`, every output's window starting at most two columns
/// left of the input and ending at most two right of it (any window `Window2d` builds),
/// and `scratch` holding [`depthwise_conv_2d_3x3_scratch_words`] words. Otherwise
/// nothing is written.
pub fn depthwise_conv_2d_3x3_i8(
    p: &DepthwiseConv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
    scratch: &mut [u32],
) {
    depthwise_3x3(p, q, Some(input), filter, bias, output, scratch);
}

/// [`depthwise_conv_2d_3x3_i8`] writing its result over its input `inout`, in the role
/// of [`in_place::depthwise_conv_2d::depthwise_conv_2d_i8_in_place`] (with this
/// kernel's scratch instead of a ring): an input row is overwritten only after the
/// rolling row buffers hold it. Writes nothing unless, beyond the preconditions of
/// [`depthwise_conv_2d_3x3_i8`], the stride is 1, the result has the input's size and
/// the channel count is a multiple of 4.
///
/// [`in_place::depthwise_conv_2d::depthwise_conv_2d_i8_in_place`]: crate::kernels::in_place::depthwise_conv_2d::depthwise_conv_2d_i8_in_place
pub fn depthwise_conv_2d_3x3_i8_in_place(
    p: &DepthwiseConv2dParams,
    q: &ConvQuant<'_>,
    filter: &[i8],
    bias: Option<&[i32]>,
    inout: &mut [i8],
    scratch: &mut [u32],
) {
    let w = &p.window;
    if w.stride != [1, 1] || w.output != w.input || !p.input_depth.is_multiple_of(4) {
        return;
    }
    depthwise_3x3(p, q, None, filter, bias, inout, scratch);
}

/// The 3x3 kernel, reading `input` or, when it is `None`, `output` itself (then the
/// caller guarantees stride 1, a same-size result and whole channel groups, so every
/// input row is copied into the row buffers before its channels are overwritten).
#[allow(unsafe_code)]
fn depthwise_3x3(
    p: &DepthwiseConv2dParams,
    q: &ConvQuant<'_>,
    input: Option<&[i8]>,
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
    scratch: &mut [u32],
) {
    let Some(depth) = check(p, q, input.unwrap_or(output), filter, bias, output) else {
        return;
    };
    let w: &Window2d = &p.window;
    let [in_h, in_w] = w.input;
    let [out_h, out_w] = w.output;
    // Row buffer `r` holds input columns -2..in_w + 2 of input row y0 + r.
    let width = in_w + 4;
    let first = w.origin(1, 0);
    let last = w.origin(1, out_w.saturating_sub(1));
    if w.filter != [3, 3]
        || w.dilation != [1, 1]
        || first < -2
        || last >= in_w as isize
        || scratch.len() < 3 * width
    {
        return;
    }
    let Some((row0, rest)) = scratch.split_at_mut_checked(width) else {
        return;
    };
    let Some((row1, row2)) = rest.split_at_mut_checked(width) else {
        return;
    };
    let mut rows = [row0, row1, row2.get_mut(..width).unwrap_or(&mut [])];
    let clamp = Clamp4::new(q.activation);
    let offset2 = splat16(q.input_offset);
    // Padded taps read the zero point, which plus the offset is 0.
    let pad = splat8(q.input_offset.wrapping_neg() as i8);
    let groups = depth / 4;
    for n in 0..p.batches {
        for g in 0..groups {
            let c = 4 * g;
            let group = Group::new(q, bias, c, 9);
            // The nine filter words, unpacked once for the group.
            let taps: [[u32; 2]; 9] = core::array::from_fn(|t| {
                // SAFETY: t < 9 == f_h * f_w and c + 4 <= depth bound the index + 4 by
                // f_h*f_w*depth == filter.len() (depthwise_lens).
                let f = word(unsafe { get4(filter, t * depth + c) });
                [sxtb16(f), sxtb16_ror8(f)]
            });
            // Every sum starts at the bias plus the offset's share `offset * sum(f)`.
            let mut start = group.bias;
            for [fe, fo] in taps {
                start = [
                    smlabb(offset2, fe, start[0]),
                    smlabb(offset2, fo, start[1]),
                    smlatt(offset2, fe, start[2]),
                    smlatt(offset2, fo, start[3]),
                ];
            }
            let taps3 = taps.as_chunks::<3>().0;
            // The input row the first buffer holds, once rows are staged.
            let mut staged: Option<isize> = None;
            for oy in 0..out_h {
                let y0 = w.origin(0, oy);
                // Buffers still holding rows this output row reads move up; the rest
                // are copied from the input.
                let kept = match staged {
                    Some(s) if y0 > s && y0 - s < 3 => 3 - (y0 - s) as usize,
                    _ => 0,
                };
                // rotate_left(3 - kept), by swaps (no length assertion to prove).
                match kept {
                    1 => {
                        rows.swap(0, 2);
                        rows.swap(1, 2);
                    }
                    2 => {
                        rows.swap(0, 1);
                        rows.swap(1, 2);
                    }
                    _ => {}
                }
                staged = Some(y0);
                let src: &[i8] = input.unwrap_or(output);
                for (r, row) in rows.iter_mut().enumerate().skip(kept) {
                    let iy = y0.wrapping_add(r as isize);
                    row.fill(pad);
                    if iy < 0 || iy as usize >= in_h {
                        continue;
                    }
                    let base = (n * in_h + iy as usize) * in_w * depth + c;
                    for (ix, slot) in row.iter_mut().skip(2).take(in_w).enumerate() {
                        // SAFETY: iy < in_h, ix < in_w and c + 4 <= depth bound the index
                        // + 4 by batches*in_h*in_w*depth == src.len() (check).
                        *slot = word(unsafe { get4(src, base + ix * depth) });
                    }
                }
                let [r0, r1, r2] = &rows;
                let (r0, r1, r2): (&[u32], &[u32], &[u32]) = (r0, r1, r2);
                for ox in 0..out_w {
                    // 0 <= x0 + 2 and x0 + 2 + 2 < in_w + 4 == width (checked above).
                    let at = (w.origin(1, ox) + 2) as usize;
                    let mut acc = start;
                    for (row, taps) in [r0, r1, r2].into_iter().zip(taps3) {
                        // SAFETY: at + 3 <= width == row.len() (see above).
                        let x = unsafe { get3(row, at) };
                        acc = smla_4ch_row3(x, taps, acc);
                    }
                    let out = ((n * out_h + oy) * out_w + ox) * depth + c;
                    // SAFETY: out + 4 <= batches*out_h*out_w*depth == output.len().
                    unsafe { set4(output, out, group.finish(q, &clamp, c, acc)) };
                }
            }
        }
    }
    if let Some(input) = input {
        remaining_channels(p, q, input, filter, bias, output, depth, 4 * groups);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dsp::test_util::{arb_multipliers, Case};
    use crate::kernels::reference::depthwise_conv_2d as reference;
    use crate::padding::Padding;
    use crate::quant::{ChannelMultipliers, QuantizedMultiplier};
    use proptest::prelude::*;

    /// A random depthwise conv (depth multiplier 1), 3x3 without dilation if `k3`.
    fn arb_case(
        k3: bool,
    ) -> impl Strategy<
        Value = (
            DepthwiseConv2dParams,
            Case,
            (Vec<QuantizedMultiplier>, bool),
        ),
    > {
        (
            (1usize..3, 1usize..10, 1usize..10, 1usize..14),
            (1usize..5, 1usize..5, 1usize..3, 1usize..3),
            (1usize..3, 1usize..3, any::<bool>()),
        )
            .prop_filter_map(
                "window",
                move |((n, h, w, c), (fh, fw, sy, sx), (dy, dx, same))| {
                    let padding = if same { Padding::Same } else { Padding::Valid };
                    let (f, d) = if k3 {
                        ([3, 3], [1, 1])
                    } else {
                        ([fh, fw], [dy, dx])
                    };
                    DepthwiseConv2dParams::new(
                        [n, h, w, c],
                        [1, f[0], f[1], c],
                        1,
                        [sy, sx],
                        d,
                        padding,
                    )
                    .ok()
                },
            )
            .prop_flat_map(|p| {
                let c = p.output_depth();
                (
                    Just(p),
                    Case::arb(p.input_len(), p.filter_len(), c, 0),
                    arb_multipliers(c),
                )
            })
    }

    fn check(
        (p, case, (multipliers, per_channel)): &(
            DepthwiseConv2dParams,
            Case,
            (Vec<QuantizedMultiplier>, bool),
        ),
        k3: bool,
    ) -> Result<(), TestCaseError> {
        let q = ConvQuant {
            input_offset: case.input_offset,
            output_offset: case.output_offset,
            multipliers: if *per_channel {
                ChannelMultipliers::PerChannel(multipliers)
            } else {
                ChannelMultipliers::PerTensor(multipliers[0])
            },
            activation: case.activation,
        };
        let bias = case.bias.as_deref();
        let mut want = vec![0i8; p.output_len()];
        let mut got = vec![0i8; p.output_len()];
        reference::depthwise_conv_2d_i8(p, &q, &case.input, &case.filter, bias, &mut want);
        if k3 {
            let mut scratch = vec![0u32; depthwise_conv_2d_3x3_scratch_words(p)];
            let w = &p.window;
            if w.stride == [1, 1] && w.output == w.input && p.input_depth.is_multiple_of(4) {
                let mut inout = case.input.clone();
                depthwise_conv_2d_3x3_i8_in_place(
                    p,
                    &q,
                    &case.filter,
                    bias,
                    &mut inout,
                    &mut scratch,
                );
                prop_assert_eq!(&inout, &want, "in place");
            }
            depthwise_conv_2d_3x3_i8(
                p,
                &q,
                &case.input,
                &case.filter,
                bias,
                &mut got,
                &mut scratch,
            );
        } else {
            depthwise_conv_2d_i8(p, &q, &case.input, &case.filter, bias, &mut got);
        }
        prop_assert_eq!(got, want);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn matches_the_reference(case in arb_case(false)) {
            check(&case, false)?;
        }

        #[test]
        fn three_by_three_in_place_matches_the_reference(
            (p, case, m) in (1usize..3, 1usize..9, 1usize..9, 1usize..4)
                .prop_map(|(n, h, w, g)| {
                    DepthwiseConv2dParams::new([n, h, w, 4 * g], [1, 3, 3, 4 * g], 1, [1, 1], [1, 1], Padding::Same)
                        .unwrap()
                })
                .prop_flat_map(|p| {
                    let c = p.output_depth();
                    (Just(p), Case::arb(p.input_len(), p.filter_len(), c, 0), arb_multipliers(c))
                })
        ) {
            check(&(p, case, m), true)?;
        }

        #[test]
        fn three_by_three_matches_the_reference(case in arb_case(true)) {
            check(&case, true)?;
            check(&case, false)?;
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
