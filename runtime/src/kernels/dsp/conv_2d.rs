//! int8 CONV_2D for DSP cores, bit-exact with [`reference::conv_2d`]: four output
//! pixels at a time are unpacked into 16-bit columns (im2col for filters larger than
//! 1x1, a straight copy of each pixel's channels for 1x1), then every filter row is
//! multiplied with all four ([`dot_4x1`]) and each result requantized with TFLM's
//! rounding.
//!
//! Each function takes the reference kernel's arguments plus `scratch`, which must hold
//! at least [`conv_2d_scratch_words`] words (the emitter sizes it at compile time); with
//! a shorter scratch, or when the reference's preconditions fail, nothing is written.
//! The input offset (minus the input zero point) must lie in `[-127, 128]`: the zero
//! point must be an int8 value.
//!
//! [`reference::conv_2d`]: crate::kernels::reference::conv_2d

use super::add::FastAdd;
use super::gemm::{
    columns_words, dot_4x1, pack_column, pack_groups, zero_column, zero_groups, COLUMNS,
};
use super::requant::{apply, prepare_channels, Channel, Clamp4, CHANNEL_WORDS};
use super::simd::splat16;
use crate::kernels::reference::conv_2d::{conv_lens, Conv2dParams, ConvQuant, ResidualAdd};
use crate::unchecked::{get, set};

/// Largest `|filter * (input + input_offset)|`: 128 * 256.
pub(crate) const PRODUCT: u32 = 128 * 256;

/// Words of scratch the DSP conv kernels need for `p`: four packed columns of
/// `k = filter_h * filter_w * filter_input_depth` values, `k` bytes to gather a column
/// in, and the prepared requantization of every output channel (saturating on absurd
/// shapes).
pub fn conv_2d_scratch_words(p: &Conv2dParams) -> usize {
    let k = p.window.filter[0]
        .saturating_mul(p.window.filter[1])
        .saturating_mul(p.filter_input_depth);
    let k = k.min(usize::MAX / 16);
    columns_words(k)
        .saturating_add(k.div_ceil(4))
        .saturating_add(p.output_depth.saturating_mul(CHANNEL_WORDS))
}

/// int8 CONV_2D: [`reference::conv_2d::conv_2d_i8`]'s result for any filter size.
///
/// [`reference::conv_2d::conv_2d_i8`]: crate::kernels::reference::conv_2d::conv_2d_i8
#[allow(unsafe_code)]
pub fn conv_2d_i8(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
    scratch: &mut [u32],
) {
    let len = output.len();
    // SAFETY: `conv` calls `store` only with indices below the output length it was
    // given, which is output.len().
    conv::<false>(p, q, input, filter, bias, len, scratch, |i, v| unsafe {
        set(output, i, v)
    });
}

/// int8 CONV_2D + residual ADD: [`reference::conv_2d::conv_2d_i8_add`]'s result.
///
/// [`reference::conv_2d::conv_2d_i8_add`]: crate::kernels::reference::conv_2d::conv_2d_i8_add
#[allow(unsafe_code, clippy::too_many_arguments)]
pub fn conv_2d_i8_add(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    r: &ResidualAdd,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    skip: &[i8],
    output: &mut [i8],
    scratch: &mut [u32],
) {
    if skip.len() != output.len() {
        return;
    }
    let fast = FastAdd::new(r);
    let fast = fast.as_ref();
    let len = output.len();
    // SAFETY: indices are below output.len() == skip.len() (see conv_2d_i8).
    conv::<false>(p, q, input, filter, bias, len, scratch, |i, v| unsafe {
        set(output, i, residual(fast, r, v, get(skip, i)))
    });
}

/// [`conv_2d_i8_add`] writing over the skip tensor `inout`:
/// [`reference::conv_2d::conv_2d_i8_add_in_place`]'s result.
///
/// [`reference::conv_2d::conv_2d_i8_add_in_place`]: crate::kernels::reference::conv_2d::conv_2d_i8_add_in_place
#[allow(unsafe_code, clippy::too_many_arguments)]
pub fn conv_2d_i8_add_in_place(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    r: &ResidualAdd,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    inout: &mut [i8],
    scratch: &mut [u32],
) {
    let fast = FastAdd::new(r);
    let fast = fast.as_ref();
    let len = inout.len();
    // SAFETY: indices are below inout.len() (see conv_2d_i8).
    conv::<false>(p, q, input, filter, bias, len, scratch, |i, v| unsafe {
        set(inout, i, residual(fast, r, v, get(inout, i)))
    });
}

/// [`conv_2d_i8`] for 1x1 filters (a plain matrix multiply, no im2col): writes nothing
/// unless `p.window.filter == [1, 1]`.
#[allow(unsafe_code)]
pub fn conv_2d_1x1_i8(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
    scratch: &mut [u32],
) {
    let len = output.len();
    // SAFETY: as in conv_2d_i8.
    conv::<true>(p, q, input, filter, bias, len, scratch, |i, v| unsafe {
        set(output, i, v)
    });
}

/// [`conv_2d_i8_add`] for 1x1 filters; writes nothing unless `p.window.filter == [1, 1]`.
#[allow(unsafe_code, clippy::too_many_arguments)]
pub fn conv_2d_1x1_i8_add(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    r: &ResidualAdd,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    skip: &[i8],
    output: &mut [i8],
    scratch: &mut [u32],
) {
    if skip.len() != output.len() {
        return;
    }
    let fast = FastAdd::new(r);
    let fast = fast.as_ref();
    let len = output.len();
    // SAFETY: as in conv_2d_i8_add.
    conv::<true>(p, q, input, filter, bias, len, scratch, |i, v| unsafe {
        set(output, i, residual(fast, r, v, get(skip, i)))
    });
}

/// [`conv_2d_i8_add_in_place`] for 1x1 filters; writes nothing unless
/// `p.window.filter == [1, 1]`.
#[allow(unsafe_code, clippy::too_many_arguments)]
pub fn conv_2d_1x1_i8_add_in_place(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    r: &ResidualAdd,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    inout: &mut [i8],
    scratch: &mut [u32],
) {
    let fast = FastAdd::new(r);
    let fast = fast.as_ref();
    let len = inout.len();
    // SAFETY: as in conv_2d_i8_add_in_place.
    conv::<true>(p, q, input, filter, bias, len, scratch, |i, v| unsafe {
        set(inout, i, residual(fast, r, v, get(inout, i)))
    });
}

/// The bytes of `words` (any bit pattern is a valid `i8`), to gather im2col bytes in.
#[allow(unsafe_code)]
fn bytes_mut(words: &mut [u32]) -> &mut [i8] {
    // SAFETY: the 4 * len bytes of `words` are initialized, `i8` has alignment 1 and
    // accepts every bit pattern, and the result borrows `words` mutably for its lifetime.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<i8>(), words.len() * 4) }
}

/// The residual ADD of a conv result and its skip value, the fast way when it applies.
#[inline(always)]
fn residual(fast: Option<&FastAdd>, r: &ResidualAdd, conv: i8, skip: i8) -> i8 {
    match fast {
        Some(f) => f.apply(conv, skip),
        None => r.apply(conv, skip),
    }
}

/// Fills column `which` of `cols` with the im2col column of output pixel `(n, oy, ox)`,
/// filter group `group`: every tap's `filter_input_depth` channels plus the input
/// offset, zeros for padded taps. With whole groups of four channels per tap the words
/// are packed straight from the input; otherwise the column is first gathered as bytes
/// into `stage` (`k` bytes, padded taps holding the zero point `-offset`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill_column<const ONE_BY_ONE: bool>(
    cols: &mut [u32],
    stage: &mut [i8],
    which: usize,
    p: &Conv2dParams,
    k: usize,
    offset: i32,
    input: &[i8],
    n: usize,
    (oy, ox): (usize, usize),
    group: usize,
) {
    let w = &p.window;
    let [in_h, in_w] = w.input;
    let fin = p.filter_input_depth;
    let y0 = w.origin(0, oy);
    let x0 = w.origin(1, ox);
    // Input channels of `len / fin` pixels of this group from pixel (iy, ix) on, if
    // they exist (several pixels only when groups are absent, so channels are adjacent).
    let pixels = |iy: isize, ix: isize, len: usize| -> Option<&[i8]> {
        if iy < 0 || ix < 0 || iy as usize >= in_h || ix as usize >= in_w {
            return None;
        }
        let start = ((n * in_h + iy as usize) * in_w + ix as usize) * p.input_depth + group * fin;
        input.get(start..start + len)
    };
    if ONE_BY_ONE {
        match pixels(y0, x0, fin) {
            Some(src) => pack_column(cols, which, k, src, offset),
            None => zero_column(cols, which, k),
        }
        return;
    }
    let [f_h, f_w] = w.filter;
    let [dy, dx] = w.dilation;
    // With unit dilation and no groups, the valid taps of a filter row are contiguous.
    let contiguous = dx == 1 && fin == p.input_depth;
    // Taps `lo..hi` of filter row with input row `iy` land inside the input
    // (`max`/`min`, not `clamp`, which can panic).
    let lo = x0.wrapping_neg().max(0).min(f_w as isize) as usize;
    let hi = (in_w as isize)
        .wrapping_sub(x0)
        .min(f_w as isize)
        .max(lo as isize) as usize;
    if fin.is_multiple_of(4) {
        let offset2 = splat16(offset);
        let per_tap = fin / 4;
        for fy in 0..f_h {
            let iy = y0.wrapping_add((fy * dy) as isize);
            let row = fy * f_w * per_tap;
            if iy < 0 || iy as usize >= in_h {
                zero_groups(cols, which, row, f_w * per_tap);
                continue;
            }
            if contiguous {
                zero_groups(cols, which, row, lo * per_tap);
                if let Some(src) = pixels(iy, x0 + lo as isize, (hi - lo) * fin) {
                    pack_groups(
                        cols,
                        which,
                        row + lo * per_tap,
                        src.as_chunks::<4>().0,
                        offset2,
                    );
                }
                zero_groups(cols, which, row + hi * per_tap, (f_w - hi) * per_tap);
            } else {
                for fx in 0..f_w {
                    let at = row + fx * per_tap;
                    match pixels(iy, x0.wrapping_add((fx * dx) as isize), fin) {
                        Some(src) => pack_groups(cols, which, at, src.as_chunks::<4>().0, offset2),
                        None => zero_groups(cols, which, at, per_tap),
                    }
                }
            }
        }
        return;
    }
    // Any other channel count: gather bytes, then pack.
    let pad = offset.wrapping_neg() as i8;
    let mut at = 0;
    for fy in 0..f_h {
        let iy = y0.wrapping_add((fy * dy) as isize);
        for fx in 0..f_w {
            let ix = x0.wrapping_add((fx * dx) as isize);
            let Some(tap) = stage.get_mut(at..at + fin) else {
                break;
            };
            match pixels(iy, ix, fin) {
                Some(src) => tap.iter_mut().zip(src).for_each(|(d, s)| *d = *s),
                None => tap.fill(pad),
            }
            at += fin;
        }
    }
    pack_column(cols, which, k, stage, offset);
}

/// The loop nest shared by every DSP conv: `store(index, value)` receives each output
/// element, once, in NHWC order, with `index < out_len`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn conv<const ONE_BY_ONE: bool>(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    out_len: usize,
    scratch: &mut [u32],
    mut store: impl FnMut(usize, i8),
) {
    let Some((groups, input_len, filter_len, output_len)) = conv_lens(p) else {
        return;
    };
    let out_c = p.output_depth;
    if input.len() != input_len
        || filter.len() != filter_len
        || out_len != output_len
        || bias.is_some_and(|b| b.len() != out_c)
        || !q.multipliers.covers(out_c)
        || !(-127..=128).contains(&q.input_offset)
        || (ONE_BY_ONE && p.window.filter != [1, 1])
    {
        return;
    }
    let (Some(k), Some(per_group)) = (filter_len.checked_div(out_c), out_c.checked_div(groups))
    else {
        return;
    };
    let Some((cols, rest)) = scratch.split_at_mut_checked(columns_words(k)) else {
        return;
    };
    let Some((stage, table)) = rest.split_at_mut_checked(k.div_ceil(4)) else {
        return;
    };
    let stage = bytes_mut(stage);
    let stage = stage.get_mut(..k).unwrap_or(&mut []);
    let Some(table) = table.as_chunks_mut::<CHANNEL_WORDS>().0.get_mut(..out_c) else {
        return;
    };
    let offset = q.output_offset;
    let fast = prepare_channels(table, bias, &q.multipliers, offset, k, PRODUCT);
    let table: &[Channel] = table;
    let act = q.activation;
    let clamp = Clamp4::new(act);
    let [out_h, out_w] = p.window.output;
    let pixels = out_h * out_w;
    for n in 0..p.batches {
        for group in 0..groups {
            let (mut oy, mut ox) = (0, 0);
            let mut pix = 0;
            while pix < pixels {
                // Columns `count..` keep stale values; their sums are computed and dropped.
                let count = (pixels - pix).min(COLUMNS);
                for which in 0..count {
                    fill_column::<ONE_BY_ONE>(
                        cols,
                        stage,
                        which,
                        p,
                        k,
                        q.input_offset,
                        input,
                        n,
                        (oy, ox),
                        group,
                    );
                    ox += 1;
                    if ox == out_w {
                        (oy, ox) = (oy + 1, 0);
                    }
                }
                // Output index of the first pixel's channel 0; the others follow.
                let base = (n * pixels + pix) * out_c;
                for oc in group * per_group..(group + 1) * per_group {
                    let Some(ch) = table.get(oc) else {
                        break;
                    };
                    let f = filter.get(oc * k..oc * k + k).unwrap_or(&[]);
                    let acc = dot_4x1(cols, f, k, ch[0] as i32);
                    let out = base + oc;
                    if fast && count == COLUMNS {
                        let [v0, v1, v2, v3] = clamp.apply(acc.map(|a| apply(ch, a)));
                        store(out, v0);
                        store(out + out_c, v1);
                        store(out + 2 * out_c, v2);
                        store(out + 3 * out_c, v3);
                    } else {
                        let m = q.multipliers.get(oc);
                        for (which, &acc) in acc.iter().enumerate().take(count) {
                            let scaled = if fast {
                                apply(ch, acc)
                            } else {
                                m.apply(acc).wrapping_add(offset)
                            };
                            store(out + which * out_c, act.clamp_i8(scaled));
                        }
                    }
                }
                pix += count;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::{ActivationRange, FusedActivation};
    use crate::kernels::dsp::test_util::{arb_multipliers, bytes, Case};
    use crate::kernels::reference::add::AddParams;
    use crate::kernels::reference::conv_2d as reference;
    use crate::padding::{Padding, Window2d};
    use crate::quant::{ChannelMultipliers, TensorQuant};
    use proptest::prelude::*;

    /// A random conv: shapes, window, groups, quantization and data.
    #[derive(Debug, Clone)]
    struct ConvCase {
        p: Conv2dParams,
        input_offset: i32,
        output_offset: i32,
        activation: ActivationRange,
        multipliers: Vec<crate::quant::QuantizedMultiplier>,
        per_channel: bool,
        input: Vec<i8>,
        filter: Vec<i8>,
        bias: Option<Vec<i32>>,
        skip: Vec<i8>,
        conv_is_first: bool,
    }

    fn arb_case(one_by_one: bool) -> impl Strategy<Value = ConvCase> {
        (
            (1usize..3, 1usize..9, 1usize..9),
            (1usize..4, 1usize..7, 1usize..9),
            (1usize..4, 1usize..4, 1usize..3, 1usize..3),
            (0usize..3, 0usize..3, any::<bool>()),
        )
            .prop_flat_map(
                move |((n, h, w), (groups, fin, per_group), (fh, fw, sy, sx), (dy, dx, same))| {
                    let (fh, fw) = if one_by_one { (1, 1) } else { (fh, fw) };
                    let padding = if same { Padding::Same } else { Padding::Valid };
                    let window =
                        Window2d::new([h, w], [fh, fw], [sy, sx], [dy + 1, dx + 1], padding);
                    let out_c = groups * per_group;
                    let p = window.ok().and_then(|win| {
                        Conv2dParams::with_window(n, groups * fin, [out_c, fh, fw, fin], win).ok()
                    });
                    let p = p.unwrap_or_else(|| {
                        Conv2dParams::new(
                            [1, 2, 2, 1],
                            [1, 1, 1, 1],
                            [1, 1],
                            [1, 1],
                            Padding::Valid,
                        )
                        .unwrap()
                    });
                    let (oc, k) = (p.output_depth, p.filter_len() / p.output_depth);
                    (
                        Just(p),
                        Case::arb(p.input_len(), p.filter_len(), oc, k),
                        arb_multipliers(oc),
                        bytes(p.output_len()),
                        any::<bool>(),
                    )
                },
            )
            .prop_map(
                |(p, case, (multipliers, per_channel), skip, conv_is_first)| ConvCase {
                    p,
                    input_offset: case.input_offset,
                    output_offset: case.output_offset,
                    activation: case.activation,
                    multipliers,
                    per_channel,
                    input: case.input,
                    filter: case.filter,
                    bias: case.bias,
                    skip,
                    conv_is_first,
                },
            )
    }

    impl ConvCase {
        fn quant(&self) -> ConvQuant<'_> {
            ConvQuant {
                input_offset: self.input_offset,
                output_offset: self.output_offset,
                multipliers: if self.per_channel {
                    ChannelMultipliers::PerChannel(&self.multipliers)
                } else {
                    ChannelMultipliers::PerTensor(self.multipliers[0])
                },
                activation: self.activation,
            }
        }

        fn residual(&self) -> ResidualAdd {
            ResidualAdd {
                add: AddParams::prepare(
                    TensorQuant::new(0.05, -3),
                    TensorQuant::new(0.07, 11),
                    TensorQuant::new(0.09, 2),
                    FusedActivation::Relu,
                )
                .unwrap(),
                conv_is_first: self.conv_is_first,
            }
        }

        fn check(&self, one_by_one: bool) -> Result<(), TestCaseError> {
            let (p, q, r) = (&self.p, self.quant(), self.residual());
            let bias = self.bias.as_deref();
            let (input, filter) = (&self.input[..], &self.filter[..]);
            let mut scratch = vec![0u32; conv_2d_scratch_words(p)];
            let n = p.output_len();
            let (mut want, mut got) = (vec![0i8; n], vec![0i8; n]);
            reference::conv_2d_i8(p, &q, input, filter, bias, &mut want);
            if one_by_one {
                conv_2d_1x1_i8(p, &q, input, filter, bias, &mut got, &mut scratch);
            } else {
                conv_2d_i8(p, &q, input, filter, bias, &mut got, &mut scratch);
            }
            prop_assert_eq!(&got, &want, "conv");

            reference::conv_2d_i8_add(p, &q, &r, input, filter, bias, &self.skip, &mut want);
            got.fill(0);
            if one_by_one {
                conv_2d_1x1_i8_add(
                    p,
                    &q,
                    &r,
                    input,
                    filter,
                    bias,
                    &self.skip,
                    &mut got,
                    &mut scratch,
                );
            } else {
                conv_2d_i8_add(
                    p,
                    &q,
                    &r,
                    input,
                    filter,
                    bias,
                    &self.skip,
                    &mut got,
                    &mut scratch,
                );
            }
            prop_assert_eq!(&got, &want, "conv + add");

            got.copy_from_slice(&self.skip);
            if one_by_one {
                conv_2d_1x1_i8_add_in_place(p, &q, &r, input, filter, bias, &mut got, &mut scratch);
            } else {
                conv_2d_i8_add_in_place(p, &q, &r, input, filter, bias, &mut got, &mut scratch);
            }
            prop_assert_eq!(&got, &want, "conv + add in place");
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn general_conv_matches_the_reference(case in arb_case(false)) {
            case.check(false)?;
        }

        #[test]
        fn one_by_one_conv_matches_the_reference(case in arb_case(true)) {
            case.check(true)?;
        }
    }

    #[test]
    fn bad_arguments_write_nothing() {
        let p =
            Conv2dParams::new([1, 4, 4, 3], [2, 3, 3, 3], [1, 1], [1, 1], Padding::Same).unwrap();
        let q = ConvQuant {
            input_offset: 3,
            output_offset: 0,
            multipliers: ChannelMultipliers::PerTensor(crate::quant::QuantizedMultiplier {
                multiplier: 1 << 30,
                shift: -3,
            }),
            activation: ActivationRange::FULL_I8,
        };
        let (input, filter) = ([1i8; 48], [1i8; 54]);
        let words = conv_2d_scratch_words(&p);
        let mut out = [7i8; 32];
        conv_2d_i8(
            &p,
            &q,
            &input,
            &filter,
            None,
            &mut out,
            &mut vec![0; words - 1],
        );
        conv_2d_i8(
            &p,
            &q,
            &input[1..],
            &filter,
            None,
            &mut out,
            &mut vec![0; words],
        );
        conv_2d_1x1_i8(&p, &q, &input, &filter, None, &mut out, &mut vec![0; words]);
        let far = ConvQuant {
            input_offset: 129,
            ..q
        };
        conv_2d_i8(
            &p,
            &far,
            &input,
            &filter,
            None,
            &mut out,
            &mut vec![0; words],
        );
        assert_eq!(out, [7; 32]);
        conv_2d_i8(&p, &q, &input, &filter, None, &mut out, &mut vec![0; words]);
        assert_ne!(out, [7; 32]);
    }
}
