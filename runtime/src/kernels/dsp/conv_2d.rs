//! int8 CONV_2D for DSP cores, bit-exact with [`reference::conv_2d`]: four output
//! pixels at a time are unpacked into 16-bit columns (im2col for filters larger than
//! 1x1, a straight copy of each pixel's channels for 1x1), then every filter row is
//! multiplied with all four ([`dot_4x1`]) and each result requantized with TFLM's
//! rounding.
//!
//! Each function takes the reference kernel's arguments plus `scratch`, which must hold
//! at least [`conv_2d_scratch_words`] words (the emitter sizes it at compile time); with
//! a shorter scratch, or when the reference's preconditions fail, nothing is written.
//! The input offset (minus the input zero point) must lie in `[-128, 128]`, as it does
//! for every int8 zero point.
//!
//! [`reference::conv_2d`]: crate::kernels::reference::conv_2d

use super::gemm::{columns_words, dot_4x1, Column, COLUMNS};
use super::requant::{acc_bound, Requant};
use crate::kernels::reference::conv_2d::{conv_lens, Conv2dParams, ConvQuant, ResidualAdd};
use crate::unchecked::{get, set};

/// Largest `|filter * (input + input_offset)|`: 128 * 256.
pub(crate) const PRODUCT: u32 = 128 * 256;

/// Words of scratch the DSP conv kernels need for `p`: four packed columns of
/// `filter_h * filter_w * filter_input_depth` values (saturating on absurd shapes).
pub fn conv_2d_scratch_words(p: &Conv2dParams) -> usize {
    let k = p.window.filter[0]
        .saturating_mul(p.window.filter[1])
        .saturating_mul(p.filter_input_depth);
    columns_words(k.min(usize::MAX / 16))
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
    let len = output.len();
    // SAFETY: indices are below output.len() == skip.len() (see conv_2d_i8).
    conv::<false>(p, q, input, filter, bias, len, scratch, |i, v| unsafe {
        set(output, i, r.apply(v, get(skip, i)))
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
    let len = inout.len();
    // SAFETY: indices are below inout.len() (see conv_2d_i8).
    conv::<false>(p, q, input, filter, bias, len, scratch, |i, v| unsafe {
        set(inout, i, r.apply(v, get(inout, i)))
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
    let len = output.len();
    // SAFETY: as in conv_2d_i8_add.
    conv::<true>(p, q, input, filter, bias, len, scratch, |i, v| unsafe {
        set(output, i, r.apply(v, get(skip, i)))
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
    let len = inout.len();
    // SAFETY: as in conv_2d_i8_add_in_place.
    conv::<true>(p, q, input, filter, bias, len, scratch, |i, v| unsafe {
        set(inout, i, r.apply(v, get(inout, i)))
    });
}

/// Fills column `which` of `cols` with the im2col column of output pixel `(n, oy, ox)`,
/// filter group `group`: every tap's `filter_input_depth` channels, offset, zeros for
/// padded taps.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill_column<const ONE_BY_ONE: bool>(
    cols: &mut [u32],
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
    let mut c = Column::new(cols, k, offset, which);
    let y0 = w.origin(0, oy);
    let x0 = w.origin(1, ox);
    // Input channels of pixel (iy, ix) of this group, if that pixel exists.
    let pixel = |iy: isize, ix: isize, len: usize| -> Option<&[i8]> {
        if iy < 0 || ix < 0 || iy as usize >= in_h || ix as usize >= in_w {
            return None;
        }
        let start = ((n * in_h + iy as usize) * in_w + ix as usize) * p.input_depth + group * fin;
        input.get(start..start + len)
    };
    if ONE_BY_ONE {
        match pixel(y0, x0, fin) {
            Some(src) => c.push_bytes(src),
            None => c.push_zeros(fin),
        }
        return;
    }
    let [f_h, f_w] = w.filter;
    let [dy, dx] = w.dilation;
    // With unit dilation and no groups, the valid taps of a filter row are contiguous.
    let contiguous = dx == 1 && fin == p.input_depth;
    for fy in 0..f_h {
        let iy = y0.wrapping_add((fy * dy) as isize);
        if iy < 0 || iy as usize >= in_h {
            c.push_zeros(f_w * fin);
            continue;
        }
        if contiguous {
            // Taps `lo..hi` land inside the input (`max`/`min`, not `clamp`, which can panic).
            let lo = x0.wrapping_neg().max(0).min(f_w as isize) as usize;
            let hi = (in_w as isize)
                .wrapping_sub(x0)
                .min(f_w as isize)
                .max(lo as isize) as usize;
            c.push_zeros(lo * fin);
            match pixel(iy, x0 + lo as isize, (hi - lo) * fin) {
                Some(src) => c.push_bytes(src),
                None => c.push_zeros((hi - lo) * fin),
            }
            c.push_zeros((f_w - hi) * fin);
        } else {
            for fx in 0..f_w {
                match pixel(iy, x0.wrapping_add((fx * dx) as isize), fin) {
                    Some(src) => c.push_bytes(src),
                    None => c.push_zeros(fin),
                }
            }
        }
    }
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
        || !(-128..=128).contains(&q.input_offset)
        || (ONE_BY_ONE && p.window.filter != [1, 1])
    {
        return;
    }
    let (Some(k), Some(per_group)) = (filter_len.checked_div(out_c), out_c.checked_div(groups))
    else {
        return;
    };
    let Some(cols) = scratch.get_mut(..columns_words(k)) else {
        return;
    };
    let bias_of = |oc: usize| bias.and_then(|b| b.get(oc)).copied().unwrap_or(0);
    let fast = (0..out_c)
        .all(|oc| Requant::fits(q.multipliers.get(oc), acc_bound(bias_of(oc), k, PRODUCT)));
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
                // Output index of channel 0 of the first pixel; the others follow.
                let base = (n * pixels + pix) * out_c;
                for oc in group * per_group..(group + 1) * per_group {
                    let acc = dot_4x1(cols, filter.get(oc * k..oc * k + k).unwrap_or(&[]), k);
                    let m = q.multipliers.get(oc);
                    let rq = Requant::new(m);
                    let b = bias_of(oc);
                    for (which, &acc) in acc.iter().enumerate().take(count) {
                        let acc = acc.wrapping_add(b);
                        let scaled = if fast { rq.apply(acc) } else { m.apply(acc) };
                        let value = q.activation.clamp_i8(scaled.wrapping_add(q.output_offset));
                        store(base + which * out_c + oc, value);
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
