//! int8 CONV_2D for DSP cores, bit-exact with [`reference::conv_2d`]: four output
//! pixels at a time are unpacked into 16-bit columns (im2col for filters larger than
//! 1x1, a straight copy of each pixel's channels for 1x1), then every filter row is
//! multiplied with all four ([`conv_block4`]) and each result requantized with TFLM's
//! rounding.
//!
//! Each function takes the reference kernel's arguments plus `scratch`, which must hold
//! at least [`conv_2d_scratch_words`] words (the emitter sizes it at compile time); with
//! a shorter scratch, or when the reference's preconditions fail, nothing is written;
//! the residual variants also need ADD parameters [`conv_2d_add_supported`] accepts.
//! The input offset (minus the input zero point) must lie in `[-127, 128]`: the zero
//! point must be an int8 value.
//!
//! [`reference::conv_2d`]: crate::kernels::reference::conv_2d

use super::add::FastAdd;
use super::gemm::{columns_words, pack_column, pack_groups, pack_groups4, zero_groups, COLUMNS};
pub use super::requant::CHANNEL_WORDS;
use super::requant::{prepare_channels, Channel, Clamp4};
use super::simd::{conv_block4, smlad_4x1, splat16};
use crate::kernels::reference::conv_2d::{conv_lens, Conv2dParams, ConvQuant, ResidualAdd};
use crate::quant::ChannelMultipliers;

/// Largest `|filter * (input + input_offset)|`: 128 * 256.
pub(crate) const PRODUCT: u32 = 128 * 256;

/// Words of scratch the DSP conv kernels need for `p` and `q`: four packed columns of
/// `kp` values (`k = filter_h * filter_w * filter_input_depth` rounded up to a multiple
/// of 8), `kp` bytes to gather a column in when the input channels do not come in
/// whole groups of four, the prepared requantization of every output channel (none
/// when `q` brings it from flash: [`ChannelMultipliers::Prepared`]) and, when
/// `kp > k`, a copy of the filter with each row zero-padded to `kp` (saturating on
/// absurd shapes).
pub fn conv_2d_scratch_words(p: &Conv2dParams, q: &ConvQuant<'_>) -> usize {
    let k = p.window.filter[0]
        .saturating_mul(p.window.filter[1])
        .saturating_mul(p.filter_input_depth);
    let kp = padded(k.min(usize::MAX / 16));
    let copy = if kp == k {
        0
    } else {
        p.output_depth.saturating_mul(kp / 4)
    };
    columns_words(kp)
        .saturating_add(stage_words(p, kp))
        .saturating_add(table_words(p, q))
        .saturating_add(copy)
}

/// The channels `q` brings prepared from flash for `p`'s output channels, if it does.
fn flash_channels<'a>(p: &Conv2dParams, q: &ConvQuant<'a>) -> Option<(&'a [Channel], bool)> {
    match q.multipliers {
        ChannelMultipliers::Prepared { channels, fast } if channels.len() == p.output_depth => {
            Some((channels, fast))
        }
        _ => None,
    }
}

/// Words of the requantization table in scratch: one [`Channel`] per output channel,
/// none when `q` brings them from flash.
fn table_words(p: &Conv2dParams, q: &ConvQuant<'_>) -> usize {
    match flash_channels(p, q) {
        Some(_) => 0,
        None => p.output_depth.saturating_mul(CHANNEL_WORDS),
    }
}

/// Fills `table` (one entry per output channel of `p`) with the channels the DSP conv
/// kernels would prepare in scratch for `q` and `bias`, for
/// [`ChannelMultipliers::Prepared`] (the compiler keeps them in flash), and returns
/// that variant's `fast` flag; `None` (nothing usable) when the lengths disagree or a
/// shift lies outside `-20..=28`, where the channel words would not give the
/// multiplier back exactly.
pub fn prepare_flash_channels(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    bias: Option<&[i32]>,
    table: &mut [[u32; CHANNEL_WORDS]],
) -> Option<bool> {
    let out_c = p.output_depth;
    let k = p.window.filter[0]
        .checked_mul(p.window.filter[1])?
        .checked_mul(p.filter_input_depth)?;
    let exact = (0..out_c).all(|c| (-20..=28).contains(&q.multipliers.get(c).shift));
    if table.len() != out_c
        || !q.multipliers.covers(out_c)
        || bias.is_some_and(|b| b.len() != out_c)
        || !exact
        || k == 0
    {
        return None;
    }
    Some(prepare_channels(
        table,
        bias,
        &q.multipliers,
        q.output_offset,
        k,
        PRODUCT,
    ))
}

/// Words of the byte buffer a column is gathered in before packing: `kp` bytes, needed
/// only when the input channels do not come in whole groups of four (those are packed
/// straight from the input).
fn stage_words(p: &Conv2dParams, kp: usize) -> usize {
    if p.filter_input_depth.is_multiple_of(4) {
        0
    } else {
        kp / 4
    }
}

/// `k` rounded up to a multiple of 8: the filter length the dot products run over, so
/// that every block takes [`conv_block4`]'s two-group loop (the padding's filter values
/// are zero, its column values anything).
const fn padded(k: usize) -> usize {
    k.div_ceil(8) * 8
}

/// int8 CONV_2D: [`reference::conv_2d::conv_2d_i8`]'s result for any filter size.
///
/// [`reference::conv_2d::conv_2d_i8`]: crate::kernels::reference::conv_2d::conv_2d_i8
pub fn conv_2d_i8(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
    scratch: &mut [u32],
) {
    conv_2d_i8_with(p, q, Io::Apart(input, output), filter, bias, scratch, None);
}

/// [`conv_2d_i8`] with the `prepared` state of [`conv`] passed through: the one copy of
/// the loop nest, which every DSP conv kernel calls.
#[allow(clippy::too_many_arguments)]
fn conv_2d_i8_with(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    io: Io<'_>,
    filter: &[i8],
    bias: Option<&[i32]>,
    scratch: &mut [u32],
    prepared: Option<bool>,
) -> Option<bool> {
    conv(p, q, io, filter, bias, scratch, prepared)
}

/// Where [`conv`] reads its input and puts its result.
enum Io<'x> {
    /// From the input into the output.
    Apart(&'x [i8], &'x mut [i8]),
    /// Over the one tensor (stride 1, result shape equal to the input shape, one
    /// group), each block's results waiting in the second slice ([`held_pixels`]
    /// pixels) until no later block reads the input pixels they replace; the `usize`
    /// is [`behind`].
    InPlace(&'x mut [i8], &'x mut [i8], usize),
}

/// int8 CONV_2D + residual ADD: [`reference::conv_2d::conv_2d_i8_add`]'s result.
///
/// [`reference::conv_2d::conv_2d_i8_add`]: crate::kernels::reference::conv_2d::conv_2d_i8_add
#[allow(clippy::too_many_arguments)]
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
    conv_add(
        p,
        q,
        r,
        input,
        filter,
        bias,
        Some(skip),
        output,
        scratch,
        None,
    );
}

/// [`conv_2d_i8_add`] writing over the skip tensor `inout`:
/// [`reference::conv_2d::conv_2d_i8_add_in_place`]'s result.
///
/// [`reference::conv_2d::conv_2d_i8_add_in_place`]: crate::kernels::reference::conv_2d::conv_2d_i8_add_in_place
#[allow(clippy::too_many_arguments)]
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
    conv_add(p, q, r, input, filter, bias, None, inout, scratch, None);
}

/// [`conv_2d_i8`] for 1x1 filters (a plain matrix multiply, no im2col): writes nothing
/// unless `p.window.filter == [1, 1]`.
pub fn conv_2d_1x1_i8(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
    scratch: &mut [u32],
) {
    if p.window.filter == [1, 1] {
        conv_2d_i8(p, q, input, filter, bias, output, scratch);
    }
}

/// [`conv_2d_i8_add`] for 1x1 filters; writes nothing unless `p.window.filter == [1, 1]`.
#[allow(clippy::too_many_arguments)]
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
    if p.window.filter == [1, 1] {
        conv_add(
            p,
            q,
            r,
            input,
            filter,
            bias,
            Some(skip),
            output,
            scratch,
            None,
        );
    }
}

/// [`conv_2d_i8_add_in_place`] for 1x1 filters; writes nothing unless
/// `p.window.filter == [1, 1]`.
#[allow(clippy::too_many_arguments)]
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
    if p.window.filter == [1, 1] {
        conv_add(p, q, r, input, filter, bias, None, inout, scratch, None);
    }
}

/// Words of scratch the DSP conv + residual ADD kernels need for `p`: the conv's own
/// ([`conv_2d_scratch_words`]), one output row, and the two 256-entry tables of the
/// ADD's scaled operands.
pub fn conv_2d_add_scratch_words(p: &Conv2dParams, q: &ConvQuant<'_>) -> usize {
    let row = p.window.output[1].saturating_mul(p.output_depth);
    conv_2d_scratch_words(p, q)
        .saturating_add(row.div_ceil(4))
        .saturating_add(2 * 256)
}

/// Whether the DSP conv + residual ADD kernels run `r`: its parameters lie in the
/// bounds of the 32-bit ADD (always for params from `AddParams::prepare`); for others
/// they write nothing and the compiler calls the reference kernels instead, so the
/// firmware carries no 64-bit ADD.
pub fn conv_2d_add_supported(r: &ResidualAdd) -> bool {
    FastAdd::new(r).is_some()
}

/// Conv + residual ADD, one output row at a time: the row computed by the plain conv
/// (a one-row window over the input rows it reads) into scratch, then added to its skip
/// values (`skip`, or `output`'s own values when `None`) over `output`. Row by row, so
/// the loop nest exists once in flash for plain and residual convs alike. Writes nothing
/// unless [`conv_2d_add_supported`]`(r)`.
#[allow(clippy::too_many_arguments)]
fn conv_add(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    r: &ResidualAdd,
    input: &[i8],
    filter: &[i8],
    bias: Option<&[i32]>,
    skip: Option<&[i8]>,
    output: &mut [i8],
    scratch: &mut [u32],
    mut prepared: Option<bool>,
) -> Option<bool> {
    let Some((_, input_len, _, output_len)) = conv_lens(p) else {
        return prepared;
    };
    if input.len() != input_len
        || output.len() != output_len
        || skip.is_some_and(|s| s.len() != output_len)
    {
        return prepared;
    }
    let Some((conv_scratch, row)) = scratch.split_at_mut_checked(conv_2d_scratch_words(p, q))
    else {
        return prepared;
    };
    let [in_h, in_w] = p.window.input;
    let [out_h, out_w] = p.window.output;
    let (in_row, out_row) = (in_w * p.input_depth, out_w * p.output_depth);
    let Some((row, luts)) = row.split_at_mut_checked(out_row.div_ceil(4)) else {
        return prepared;
    };
    let Some(row) = bytes_mut(row).get_mut(..out_row) else {
        return prepared;
    };
    let [conv_lut, skip_lut, ..] = luts.as_chunks_mut::<256>().0 else {
        return prepared;
    };
    let Some(f) = FastAdd::new(r) else {
        return prepared;
    };
    // The ADD's scaled operands of every int8 value, once per kernel (a previous row's
    // call left them when `prepared` is set).
    if prepared.is_none() {
        for (i, (c, k)) in conv_lut.iter_mut().zip(skip_lut.iter_mut()).enumerate() {
            let v = i as u8 as i8;
            *c = f.conv_term(v) as u32;
            *k = f.skip_term(v) as u32;
        }
    }
    let (conv_lut, skip_lut): (&[u32; 256], &[u32; 256]) = (conv_lut, skip_lut);
    let add = |conv: i8, skip: i8| -> i8 {
        let sum = conv_lut[conv as u8 as usize].wrapping_add(skip_lut[skip as u8 as usize]);
        f.finish(sum as i32)
    };
    for n in 0..p.batches {
        for oy in 0..out_h {
            // The input rows output row oy reads (none: an empty input, all padding).
            let (pr, rows) = match rows_read(p, oy) {
                Some((origin, first, last)) => (
                    row_conv(p, origin, first, last),
                    input.get((n * in_h + first) * in_row..(n * in_h + last + 1) * in_row),
                ),
                None => (
                    Conv2dParams {
                        batches: 1,
                        window: crate::padding::Window2d {
                            input: [0, in_w],
                            output: [1, out_w],
                            ..p.window
                        },
                        ..*p
                    },
                    Some(&[][..]),
                ),
            };
            let Some(rows) = rows else {
                continue;
            };
            let ran = conv_2d_i8_with(
                &pr,
                q,
                Io::Apart(rows, row),
                filter,
                bias,
                conv_scratch,
                prepared,
            );
            prepared = ran.or(prepared);
            let at = (n * out_h + oy) * out_row;
            let Some(out) = output.get_mut(at..at + out_row) else {
                continue;
            };
            // The skip values: the separate skip tensor's row, or the output row itself.
            if let Some(s) = skip {
                let Some(s) = s.get(at..at + out_row) else {
                    continue;
                };
                for ((o, &v), &k) in out.iter_mut().zip(row.iter()).zip(s) {
                    *o = add(v, k);
                }
            } else {
                for (o, &v) in out.iter_mut().zip(row.iter()) {
                    *o = add(v, *o);
                }
            }
        }
    }
    prepared
}

/// Pixels the in-place 1x1 conv copies to scratch at a time.
const CHUNK_PIXELS: usize = 16;

/// Words of scratch [`conv_2d_1x1_i8_in_place`] needs for `p`: the conv's own
/// ([`conv_2d_scratch_words`]) and a copy of `CHUNK_PIXELS` (16) input pixels.
pub fn conv_2d_1x1_in_place_scratch_words(p: &Conv2dParams, q: &ConvQuant<'_>) -> usize {
    conv_2d_scratch_words(p, q)
        .saturating_add(CHUNK_PIXELS.saturating_mul(p.input_depth).div_ceil(4))
}

/// Copies `src` into the start of `dst` (as far as `dst` reaches), four bytes at a time.
#[inline]
fn copy_into(dst: &mut [i8], src: &[i8]) {
    let (s4, s_tail) = src.as_chunks::<4>();
    let (d4, _) = dst.as_chunks_mut::<4>();
    d4.iter_mut().zip(s4).for_each(|(d, s)| *d = *s);
    if let Some(rest) = dst.get_mut(4 * s4.len()..) {
        rest.iter_mut().zip(s_tail).for_each(|(d, s)| *d = *s);
    }
}

/// A 1x1 conv writing its result over its input `inout` (stride 1, as many output as
/// input channels), in the role of
/// [`in_place::conv_2d::conv_2d_i8_in_place`](crate::kernels::in_place::conv_2d::conv_2d_i8_in_place)
/// with its own scratch ([`conv_2d_1x1_in_place_scratch_words`]) instead of a ring:
/// `CHUNK_PIXELS` (16) pixels at a time are copied to scratch and convolved from there
/// with [`conv_2d_1x1_i8`] back into their own bytes. Writes nothing unless `p` is such
/// a conv and the lengths match.
pub fn conv_2d_1x1_i8_in_place(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    filter: &[i8],
    bias: Option<&[i32]>,
    inout: &mut [i8],
    scratch: &mut [u32],
) {
    let w = &p.window;
    let c = p.input_depth;
    let Some((_, len, _, _)) = conv_lens(p) else {
        return;
    };
    if w.filter != [1, 1]
        || w.stride != [1, 1]
        || w.pad != [0, 0]
        || w.output != w.input
        || p.output_depth != c
        || inout.len() != len
    {
        return;
    }
    let Some((conv_scratch, copy)) = scratch.split_at_mut_checked(conv_2d_scratch_words(p, q))
    else {
        return;
    };
    let Some(copy) = bytes_mut(copy).get_mut(..CHUNK_PIXELS * c) else {
        return;
    };
    let pixels = len.checked_div(c).unwrap_or(0);
    let mut start = 0;
    let mut prepared = None;
    while start < pixels {
        let count = (pixels - start).min(CHUNK_PIXELS);
        let chunk = Conv2dParams {
            batches: 1,
            window: crate::padding::Window2d {
                input: [1, count],
                output: [1, count],
                ..*w
            },
            ..*p
        };
        let range = start * c..(start + count) * c;
        let (Some(src), Some(dst)) = (inout.get(range.clone()), copy.get_mut(..count * c)) else {
            return;
        };
        copy_into(dst, src);
        if let Some(out) = inout.get_mut(range) {
            let ran = conv_2d_i8_with(
                &chunk,
                q,
                Io::Apart(dst, out),
                filter,
                bias,
                conv_scratch,
                prepared,
            );
            prepared = ran.or(prepared);
        }
        start += count;
    }
}

/// Words of scratch [`conv_2d_i8_in_place`] needs for `p` and `q`: the conv's own
/// ([`conv_2d_scratch_words`]) and `max(pad_top * width + pad_left, 4)` output pixels
/// held back.
pub fn conv_2d_in_place_scratch_words(p: &Conv2dParams, q: &ConvQuant<'_>) -> usize {
    let held = held_pixels(p).saturating_mul(p.output_depth);
    conv_2d_scratch_words(p, q).saturating_add(held.div_ceil(4))
}

/// How far behind an output pixel its conv's first input pixel lies, in NHWC pixel
/// order: `pad_top * width + pad_left`. A block whose last pixel is `x` is the last
/// to read input pixel `x - behind` and those before it.
fn behind(p: &Conv2dParams) -> usize {
    let w = &p.window;
    w.pad[0].saturating_mul(w.input[1]).saturating_add(w.pad[1])
}

/// Output pixels [`conv_2d_i8_in_place`] holds back: [`behind`], and at least one
/// block's four.
fn held_pixels(p: &Conv2dParams) -> usize {
    behind(p).max(COLUMNS)
}

/// CONV_2D writing its result over its input `inout` (stride 1, result shape equal to
/// the input shape, no groups), in the role of
/// [`in_place::conv_2d::conv_2d_i8_in_place`](crate::kernels::in_place::conv_2d::conv_2d_i8_in_place)
/// with its own scratch ([`conv_2d_in_place_scratch_words`]) instead of a ring of
/// pixels: the plain conv's loop nest over the whole image, where each block of four
/// output pixels first gathers its im2col columns from the intact input, then writes
/// back (over their own input pixels) the held results that no later block reads the
/// input of (`pad_top * width + pad_left` pixels back), and then puts its own results
/// behind those still held. So `pad_top * width + pad_left` pixels wait instead of `pad_top + 1` whole
/// rows (ResNet-8's 16x16x32 3x3 conv: 544 bytes instead of 1,024), each moved down
/// the buffer as older ones leave. Writes nothing unless `p` is such a conv and the
/// lengths match.
pub fn conv_2d_i8_in_place(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    filter: &[i8],
    bias: Option<&[i32]>,
    inout: &mut [i8],
    scratch: &mut [u32],
) {
    let w = &p.window;
    if w.stride != [1, 1]
        || w.output != w.input
        || p.output_depth != p.input_depth
        || p.filter_input_depth != p.input_depth
    {
        return;
    }
    let Some((conv_scratch, rest)) = scratch.split_at_mut_checked(conv_2d_scratch_words(p, q))
    else {
        return;
    };
    let Some(held) = bytes_mut(rest).get_mut(..held_pixels(p) * p.output_depth) else {
        return;
    };
    let io = Io::InPlace(inout, held, behind(p));
    conv_2d_i8_with(p, q, io, filter, bias, conv_scratch, None);
}

/// Copies the first `min(dst.len(), src.len())` bytes of `src` into `dst` as one memcpy
/// call: `copy_from_slice` would link a length-mismatch panic where it is not inlined
/// (opt-level z; the no-panic check), and `copy_into` inlined at every site costs flash.
#[allow(unsafe_code)]
fn copy_bytes(dst: &mut [i8], src: &[i8]) {
    let n = dst.len().min(src.len());
    // SAFETY: both pointers are valid for `n` bytes (`n` is at most either length), and
    // `dst` is a unique borrow, so the two ranges cannot overlap.
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr(), n) }
}

/// Writes the first `len` bytes of `held` to `inout[at..]` and moves `held[len..used]`
/// to the front, `len` bytes at a time (each copy between disjoint parts).
fn write_back(inout: &mut [i8], held: &mut [i8], at: usize, len: usize, used: usize) {
    if let (Some(dst), Some(src)) = (
        inout.get_mut(at..).and_then(|d| d.get_mut(..len)),
        held.get(..len),
    ) {
        copy_bytes(dst, src);
    }
    let mut to = 0;
    while len > 0 && to + len < used {
        let n = len.min(used - len - to);
        let Some((front, back)) = held.split_at_mut_checked(to + len) else {
            return;
        };
        if let (Some(dst), Some(src)) = (
            front.get_mut(to..).and_then(|d| d.get_mut(..n)),
            back.get(..n),
        ) {
            copy_bytes(dst, src);
        }
        to += n;
    }
}

/// Where [`conv`]'s block of `count` pixels from `pix` of image `n` (`pixels` each)
/// puts its first pixel's channel 0 (the rest follow at the output's pixel stride): the
/// output, or in place the held buffer after [`hold_block`]; `count == 0` at
/// `pix == pixels` writes an image's last held results back. Out of line, so the loop
/// nest exists once for both.
#[inline(never)]
fn block_out<'o>(
    io: &'o mut Io<'_>,
    (n, pixels): (usize, usize),
    (pix, count): (usize, usize),
    done: &mut usize,
    out_c: usize,
) -> Option<&'o mut [i8]> {
    match io {
        Io::Apart(_, output) if count > 0 => output.get_mut((n * pixels + pix) * out_c..),
        Io::Apart(..) => None,
        Io::InPlace(inout, held, behind) => {
            let behind = if count > 0 { *behind } else { 0 };
            hold_block(inout, held, behind, (n, pixels), (pix, count), done, out_c)
        }
    }
}

/// The in-place step of [`conv`] before the block of `count` pixels from `pix` of image
/// `n` (`pixels` each) writes its results: the columns hold the block's input, and no
/// later block reads the input pixels before `pix + count - behind`, so the held
/// results of the pixels from `*done` up to there go back over them. Returns where the
/// block's results go, after the results still held.
#[inline(always)]
fn hold_block<'h>(
    inout: &mut [i8],
    held: &'h mut [i8],
    behind: usize,
    (n, pixels): (usize, usize),
    (pix, count): (usize, usize),
    done: &mut usize,
    out_c: usize,
) -> Option<&'h mut [i8]> {
    let upto = (pix + count).saturating_sub(behind).max(*done).min(pix);
    let at = (n * pixels + *done) * out_c;
    write_back(
        inout,
        held,
        at,
        (upto - *done) * out_c,
        (pix - *done) * out_c,
    );
    *done = upto;
    held.get_mut((pix - upto) * out_c..)
}

/// Words of scratch [`conv_block_i8_in_place`] needs for the block `(a, b)`: each conv's
/// own ([`conv_2d_scratch_words`], [`conv_2d_add_scratch_words`]), kept apart so each
/// prepares its channels once, and room for the rows of `t` one output row reads,
/// gathered from the ring.
pub fn conv_block_scratch_words(
    a: &Conv2dParams,
    qa: &ConvQuant<'_>,
    b: &Conv2dParams,
    qb: &ConvQuant<'_>,
) -> usize {
    let span_b = b.window.filter[0]
        .saturating_sub(1)
        .saturating_mul(b.window.dilation[0])
        .saturating_add(1);
    let rows = span_b
        .saturating_mul(b.window.input[1])
        .saturating_mul(b.input_depth);
    conv_2d_scratch_words(a, qa)
        .saturating_add(conv_2d_add_scratch_words(b, qb))
        .saturating_add(rows.div_ceil(4))
}

/// A one-output-row slice of conv `p` over the input rows `first..=last` (all inside
/// the image) that output row `oy` reads: the same window with the rows above `first`
/// as padding.
fn row_conv(p: &Conv2dParams, origin: isize, first: usize, last: usize) -> Conv2dParams {
    let w = &p.window;
    Conv2dParams {
        batches: 1,
        window: crate::padding::Window2d {
            input: [last + 1 - first, w.input[1]],
            pad: [(first as isize - origin) as usize, w.pad[1]],
            output: [1, w.output[1]],
            ..*w
        },
        ..*p
    }
}

/// The input rows output row `oy` of `p` reads, clipped to the image: `(origin, first,
/// last)`, or `None` when none lies inside.
fn rows_read(p: &Conv2dParams, oy: usize) -> Option<(isize, usize, usize)> {
    let w = &p.window;
    let origin = w.origin(0, oy);
    let span = (w.filter[0].checked_sub(1)? * w.dilation[0]) as isize;
    let first = origin.max(0);
    let last = (origin + span).min(w.input[0] as isize - 1);
    (first <= last).then_some((origin, first as usize, last as usize))
}

/// The residual block `y = conv_b(conv_a(x)) + x` of
/// [`in_place::block::conv_block_i8_in_place`] (same arguments, same ring of rows of
/// `t = conv_a(x)`, same schedule and result), each row of `t` and of `y` computed by
/// the DSP kernels as a one-row conv over the input rows it reads: the rows of `t` from
/// the still intact rows of `x`, a row of `y` from the rows of `t` (copied out of the
/// ring into `scratch`, [`conv_block_scratch_words`] words) with the residual ADD
/// written over its row of `x`. Writes nothing unless the reference kernel's
/// preconditions hold and `scratch` is large enough.
///
/// [`in_place::block::conv_block_i8_in_place`]: crate::kernels::in_place::block::conv_block_i8_in_place
#[allow(clippy::too_many_arguments)]
pub fn conv_block_i8_in_place(
    a: &Conv2dParams,
    qa: &ConvQuant<'_>,
    filter_a: &[i8],
    bias_a: Option<&[i32]>,
    b: &Conv2dParams,
    qb: &ConvQuant<'_>,
    r: &ResidualAdd,
    filter_b: &[i8],
    bias_b: Option<&[i32]>,
    inout: &mut [i8],
    ring: &mut [i8],
    scratch: &mut [u32],
) {
    use crate::kernels::in_place::block::{block_ring_len, block_ring_rows};
    let (Some(ring_rows), Some(ring_len), Some(lens_a), Some(lens_b)) = (
        block_ring_rows(a, b),
        block_ring_len(a, b),
        conv_lens(a),
        conv_lens(b),
    ) else {
        return;
    };
    let [h, width] = a.window.input;
    let (c, ct) = (a.input_depth, a.output_depth);
    if inout.len() != lens_a.1
        || ring.len() < ring_len
        || filter_a.len() != lens_a.2
        || filter_b.len() != lens_b.2
        || bias_a.is_some_and(|v| v.len() != ct)
        || bias_b.is_some_and(|v| v.len() != c)
        || ring_rows == 0
    {
        return;
    }
    let Some((scratch_a, rest)) = scratch.split_at_mut_checked(conv_2d_scratch_words(a, qa)) else {
        return;
    };
    let Some((scratch_b, rows)) = rest.split_at_mut_checked(conv_2d_add_scratch_words(b, qb))
    else {
        return;
    };
    let rows = bytes_mut(rows);
    let (row_x, row_t) = (width * c, width * ct);
    // Rows of t below its output row that conv_b reads (block_ring_rows checked it).
    let below_b = (b.window.filter[0].saturating_sub(1) * b.window.dilation[0])
        .saturating_sub(b.window.pad[0]);
    let (mut prepared_a, mut prepared_b) = (None, None);
    for n in 0..a.batches {
        let Some(image) = inout.get_mut(n * h * row_x..(n + 1) * h * row_x) else {
            return;
        };
        let mut next_t = 0;
        for oy in 0..h {
            // Every row of t up to oy + below_b, from rows of x not overwritten yet.
            let last_t = (oy + below_b).min(h - 1);
            while next_t <= last_t {
                let j = next_t;
                next_t += 1;
                let slot = j.checked_rem(ring_rows).unwrap_or(0) * row_t;
                let (Some((origin, first, last)), Some(t)) =
                    (rows_read(a, j), ring.get_mut(slot..slot + row_t))
                else {
                    continue;
                };
                let Some(x) = image.get(first * row_x..(last + 1) * row_x) else {
                    continue;
                };
                let pa = row_conv(a, origin, first, last);
                let ran = conv_2d_i8_with(
                    &pa,
                    qa,
                    Io::Apart(x, t),
                    filter_a,
                    bias_a,
                    scratch_a,
                    prepared_a,
                );
                prepared_a = ran.or(prepared_a);
            }
            // Row oy of y: the rows of t it reads, gathered, then conv_b with the
            // residual ADD over row oy of x.
            let Some((origin, first, last)) = rows_read(b, oy) else {
                continue;
            };
            for (i, j) in (first..=last).enumerate() {
                let slot = j.checked_rem(ring_rows).unwrap_or(0) * row_t;
                if let (Some(src), Some(dst)) =
                    (ring.get(slot..slot + row_t), rows.get_mut(i * row_t..))
                {
                    copy_into(dst, src);
                }
            }
            let (Some(t), Some(y)) = (
                rows.get(..(last + 1 - first) * row_t),
                image.get_mut(oy * row_x..(oy + 1) * row_x),
            ) else {
                continue;
            };
            let pb = row_conv(b, origin, first, last);
            prepared_b = conv_add(
                &pb, qb, r, t, filter_b, bias_b, None, y, scratch_b, prepared_b,
            );
        }
    }
}

/// The bytes of `words` (any bit pattern is a valid `i8`), to gather im2col bytes in.
#[allow(unsafe_code)]
fn bytes_mut(words: &mut [u32]) -> &mut [i8] {
    // SAFETY: the 4 * len bytes of `words` are initialized, `i8` has alignment 1 and
    // accepts every bit pattern, and the result borrows `words` mutably for its lifetime.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<i8>(), words.len() * 4) }
}

/// Fills column `which` of `cols` with the im2col column of output pixel `(n, oy, ox)`,
/// filter group `group`: every tap's `filter_input_depth` channels plus the input
/// offset, zeros for padded taps. With whole groups of four channels per tap the words
/// are packed straight from the input; otherwise the column is first gathered as bytes
/// into `stage` (padded taps holding the zero point `-offset`) and its `kp` bytes packed
/// (the `kp - k` after the column's own meet zero filter values). Groups past `k` are
/// left as they are, for the same reason.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill_column(
    cols: &mut [u32],
    stage: &mut [i8],
    which: usize,
    p: &Conv2dParams,
    kp: usize,
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
    let row_len = f_w * fin;
    for (fy, dst) in stage.chunks_exact_mut(row_len.max(1)).take(f_h).enumerate() {
        let iy = y0.wrapping_add((fy * dy) as isize);
        if contiguous {
            // Padding, the taps inside the input (one copy), padding.
            let Some((left, rest)) = dst.split_at_mut_checked(lo * fin) else {
                continue;
            };
            let Some((mid, right)) = rest.split_at_mut_checked((hi - lo) * fin) else {
                continue;
            };
            left.fill(pad);
            right.fill(pad);
            match pixels(iy, x0 + lo as isize, mid.len()) {
                Some(src) => copy_into(mid, src),
                None => mid.fill(pad),
            }
            continue;
        }
        for (fx, tap) in dst.chunks_exact_mut(fin.max(1)).enumerate() {
            let ix = x0.wrapping_add((fx * dx) as isize);
            match pixels(iy, ix, fin) {
                Some(src) => tap.iter_mut().zip(src).for_each(|(d, s)| *d = *s),
                None => tap.fill(pad),
            }
        }
    }
    pack_column(cols, which, kp, stage, offset);
}

/// Fills columns `0..count` with the im2col columns of `count` consecutive output pixels
/// from `(oy, ox)` on (see [`fill_column`]) and returns the pixel after them.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill_columns(
    cols: &mut [u32],
    stage: &mut [i8],
    p: &Conv2dParams,
    (kp, offset): (usize, i32),
    input: &[i8],
    n: usize,
    (mut oy, mut ox): (usize, usize),
    (group, count): (usize, usize),
) -> (usize, usize) {
    let w = &p.window;
    let out_w = w.output[1];
    let fin = p.filter_input_depth;
    if w.filter == [1, 1] && w.pad == [0, 0] && fin == p.input_depth && fin.is_multiple_of(4) {
        // 1x1 unpadded, ungrouped, whole groups: each column is one input pixel's
        // channels, and the four are packed together.
        let [in_h, in_w] = w.input;
        let [sy, sx] = w.stride;
        let mut src: [&[[i8; 4]]; COLUMNS] = [&[]; COLUMNS];
        for which in 0..COLUMNS {
            if which < count {
                let start = ((n * in_h + oy * sy) * in_w + ox * sx) * fin;
                src[which] = input
                    .get(start..start + fin)
                    .map_or(&[], |s| s.as_chunks().0);
                ox += 1;
                if ox == out_w {
                    (oy, ox) = (oy + 1, 0);
                }
            } else {
                // Columns past `count` are computed and dropped: any values will do.
                src[which] = src[0];
            }
        }
        pack_groups4(cols, src, splat16(offset));
        return (oy, ox);
    }
    for which in 0..count.min(COLUMNS) {
        fill_column(cols, stage, which, p, kp, offset, input, n, (oy, ox), group);
        ox += 1;
        if ox == out_w {
            (oy, ox) = (oy + 1, 0);
        }
    }
    (oy, ox)
}

/// One output of a conv whose channels need the reference requantization (a multiplier
/// the fast path cannot take): sum `acc` of channel `oc` requantized and clamped. Out of
/// line and cold: one copy for every conv variant.
#[cold]
#[inline(never)]
fn slow_output(q: &ConvQuant<'_>, oc: usize, acc: i32) -> i8 {
    let scaled = q
        .multipliers
        .get(oc)
        .apply(acc)
        .wrapping_add(q.output_offset);
    q.activation.clamp_i8(scaled)
}

/// The results of a block of `count` (1..=4) pixels for the output channels `chs`
/// (filter rows `rows`, `k = 8 * pairs` values each; channel `j` is the conv's channel
/// `first + j` of `q`): channel `j` of pixel `which` goes to `out[which * stride + j]`.
/// `bounds` is the bytewise clamp when the channels take the fast requantization, `None`
/// for the reference one. Out of line, over plain slices, so its loops get the
/// registers to themselves; a partial block (the last of a row) runs the same dot
/// products and stores only its `count` pixels.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn block_channels(
    cols: &[u32],
    rows: &[i8],
    chs: &[Channel],
    pairs: usize,
    bounds: Option<(u32, u32)>,
    (q, first): (&ConvQuant<'_>, usize),
    out: &mut [i8],
    (stride, count): (usize, usize),
) {
    let k = pairs.wrapping_mul(8);
    if k == 0 || stride < chs.len() {
        return;
    }
    let full = count >= COLUMNS;
    let groups = cols.as_chunks::<8>().0;
    let groups = groups.get(..k / 4).unwrap_or(groups);
    let words = rows.as_chunks::<4>().0;
    let g = k / 4;
    let Some(bounds) = bounds else {
        // The reference requantization (cold: no shipped model needs it).
        for (j, ch) in chs.iter().enumerate() {
            let Some(f) = words.get(j * g..(j + 1) * g) else {
                break;
            };
            let init = [ch[0] as i32; 4];
            let acc = groups
                .iter()
                .zip(f)
                .fold(init, |acc, (x, w)| smlad_4x1(x, w, acc));
            let v = acc.map(|a| slow_output(q, first + j, a));
            store_count(out, &v, j, stride, count);
        }
        return;
    };
    // A full block: the whole channel loop in one [`conv_block4`]. A partial one (the
    // last of a row): channel by channel into a four-byte buffer, whose first `count`
    // pixels are copied out. One call site, so one copy of the block.
    let calls = if full { 1 } else { chs.len() };
    for j in 0..calls {
        let mut v = [0i8; COLUMNS];
        let (c, f, o, s) = if full {
            (chs, words, &mut *out, stride)
        } else {
            let (Some(c), Some(f)) = (chs.get(j..=j), words.get(j * g..)) else {
                break;
            };
            (c, f, &mut v[..], 1)
        };
        conv_block4(groups, f, c, bounds, o, s);
        if !full {
            store_count(out, &v, j, stride, count);
        }
    }
}

/// Stores the first `count` of the four values `v` at `out[j + which * stride]`.
#[inline(always)]
fn store_count(out: &mut [i8], v: &[i8; COLUMNS], j: usize, stride: usize, count: usize) {
    for (which, &x) in v.iter().enumerate().take(count) {
        if let Some(slot) = out.get_mut(which * stride + j) {
            *slot = x;
        }
    }
}

/// The loop nest shared by every DSP conv: each output element, once, in NHWC order,
/// into `output`. `prepared` is `None` to fill the channel table in scratch, or the
/// fast-path flag a previous call with the same quantization, bias and filter returned
/// (the table still in scratch): convs run row by row prepare once. Returns that flag,
/// `None` when nothing ran.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn conv(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    mut io: Io<'_>,
    filter: &[i8],
    bias: Option<&[i32]>,
    scratch: &mut [u32],
    prepared: Option<bool>,
) -> Option<bool> {
    let (groups, input_len, filter_len, output_len) = conv_lens(p)?;
    let out_c = p.output_depth;
    let io_fits = match &io {
        Io::Apart(input, output) => input.len() == input_len && output.len() == output_len,
        Io::InPlace(inout, held, _) => {
            inout.len() == input_len
                && input_len == output_len
                && groups == 1
                && held.len() >= held_pixels(p) * out_c
        }
    };
    if !io_fits
        || filter.len() != filter_len
        || bias.is_some_and(|b| b.len() != out_c)
        || !q.multipliers.covers(out_c)
        || !(-127..=128).contains(&q.input_offset)
    {
        return None;
    }
    // k >= 1: a filter without taps (never built by `Window2d`) is not run.
    let (Some(k), Some(per_group)) = (
        filter_len.checked_div(out_c).filter(|&k| k > 0),
        out_c.checked_div(groups),
    ) else {
        return None;
    };
    let kp = padded(k);
    let (cols, rest) = scratch.split_at_mut_checked(columns_words(kp))?;
    let (stage, rest) = rest.split_at_mut_checked(stage_words(p, kp))?;
    let stage = bytes_mut(stage);
    // The requantization of each channel: from flash when `q` brings it prepared, else
    // built in scratch.
    let flash = flash_channels(p, q);
    let (table, copy) = rest.split_at_mut_checked(table_words(p, q))?;
    let table = table.as_chunks_mut::<CHANNEL_WORDS>().0;
    // The filter rows the blocks read: the filter itself, or its copy with each row
    // zero-padded to `kp` values.
    let copy = bytes_mut(copy).get_mut(..if kp == k { 0 } else { out_c * kp })?;
    let offset = q.output_offset;
    let fast = match prepared {
        Some(fast) => fast,
        None => {
            if kp != k {
                for oc in 0..out_c {
                    let (Some(dst), Some(src)) = (
                        copy.get_mut(oc * kp..(oc + 1) * kp),
                        filter.get(oc * k..(oc + 1) * k),
                    ) else {
                        break;
                    };
                    if let Some((head, tail)) = dst.split_at_mut_checked(k) {
                        copy_into(head, src);
                        tail.fill(0);
                    }
                }
            }
            match flash {
                Some((_, fast)) => fast,
                None => prepare_channels(table, bias, &q.multipliers, offset, k, PRODUCT),
            }
        }
    };
    let filter: &[i8] = if kp == k { filter } else { copy };
    let table: &[Channel] = match flash {
        Some((channels, _)) => channels,
        None => table,
    };
    let act = q.activation;
    let bounds = Clamp4::new(act).bytewise();
    let [out_h, out_w] = p.window.output;
    let pixels = out_h * out_w;
    for n in 0..p.batches {
        for group in 0..groups {
            let (mut oy, mut ox) = (0, 0);
            let mut pix = 0;
            // In place: the results of pixels `done..pix` of image `n` wait in the held
            // buffer, from its start.
            let mut done = 0;
            while pix < pixels {
                // Columns `count..` keep stale values; their sums are computed and dropped.
                let count = (pixels - pix).min(COLUMNS);
                let input: &[i8] = match &io {
                    Io::Apart(input, _) => input,
                    Io::InPlace(inout, ..) => inout,
                };
                (oy, ox) = fill_columns(
                    cols,
                    stage,
                    p,
                    (kp, q.input_offset),
                    input,
                    n,
                    (oy, ox),
                    (group, count),
                );
                let channels = group * per_group..(group + 1) * per_group;
                let (Some(rows), Some(chs)) = (
                    filter.get(channels.start * kp..channels.end * kp),
                    table.get(channels.clone()),
                ) else {
                    break;
                };
                // Where the first pixel's channel 0 goes; the others follow.
                let out = block_out(&mut io, (n, pixels), (pix, count), &mut done, out_c)
                    .and_then(|out| out.get_mut(channels.start..));
                if let Some(out) = out {
                    let bounds = bounds.filter(|_| fast);
                    let (q, first) = (q, channels.start);
                    let pairs = kp / 8;
                    block_channels(
                        cols,
                        rows,
                        chs,
                        pairs,
                        bounds,
                        (q, first),
                        out,
                        (out_c, count),
                    );
                }
                pix += count;
            }
            // In place: the image's last results.
            block_out(&mut io, (n, pixels), (pixels, 0), &mut done, out_c);
        }
    }
    Some(fast)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::{ActivationRange, FusedActivation};
    use crate::kernels::dsp::test_util::{arb_multipliers, bytes, Case};
    use crate::kernels::reference::add::AddParams;
    use crate::kernels::reference::conv_2d as reference;
    use crate::padding::{Padding, Window2d};
    use crate::quant::{ChannelMultipliers, QuantizedMultiplier, TensorQuant};
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

        /// Every variant with the channels prepared in scratch, then from "flash".
        fn check(&self, one_by_one: bool) -> Result<(), TestCaseError> {
            let q = self.quant();
            self.check_with(&q, one_by_one)?;
            let mut table = Vec::new();
            if let Some(qf) = with_flash(&self.p, &q, self.bias.as_deref(), &mut table) {
                self.check_with(&qf, one_by_one)?;
            }
            Ok(())
        }

        fn check_with(&self, q: &ConvQuant<'_>, one_by_one: bool) -> Result<(), TestCaseError> {
            let (p, r) = (&self.p, self.residual());
            let q = *q;
            let bias = self.bias.as_deref();
            let (input, filter) = (&self.input[..], &self.filter[..]);
            let mut scratch = vec![0u32; conv_2d_add_scratch_words(p, &q)];
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

    /// `q` with its channels prepared as the compiler keeps them in flash
    /// ([`ChannelMultipliers::Prepared`]), when they can be (in `table`).
    fn with_flash<'a>(
        p: &Conv2dParams,
        q: &ConvQuant<'_>,
        bias: Option<&[i32]>,
        table: &'a mut Vec<[u32; CHANNEL_WORDS]>,
    ) -> Option<ConvQuant<'a>> {
        *table = vec![[0; CHANNEL_WORDS]; p.output_depth];
        let fast = prepare_flash_channels(p, q, bias, table)?;
        Some(ConvQuant {
            multipliers: ChannelMultipliers::Prepared {
                channels: table,
                fast,
            },
            ..*q
        })
    }

    /// A conv of `cin -> cout` channels over `h x w`, stride 1, "same" padding.
    fn same_conv(
        n: usize,
        [h, w]: [usize; 2],
        cin: usize,
        cout: usize,
        f: [usize; 2],
        d: [usize; 2],
    ) -> Option<Conv2dParams> {
        Conv2dParams::new(
            [n, h, w, cin],
            [cout, f[0], f[1], cin],
            [1, 1],
            d,
            Padding::Same,
        )
        .ok()
    }

    fn quant_of<'a>(
        case: &Case,
        multipliers: &'a [QuantizedMultiplier],
        per_channel: bool,
    ) -> ConvQuant<'a> {
        ConvQuant {
            input_offset: case.input_offset,
            output_offset: case.output_offset,
            multipliers: if per_channel {
                ChannelMultipliers::PerChannel(multipliers)
            } else {
                ChannelMultipliers::PerTensor(multipliers[0])
            },
            activation: case.activation,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn one_by_one_in_place_matches_the_reference(
            (p, case, (m, per_channel)) in (1usize..3, 1usize..9, 1usize..12, 1usize..10)
                .prop_map(|(n, h, w, c)| same_conv(n, [h, w], c, c, [1, 1], [1, 1]).unwrap())
                .prop_flat_map(|p| {
                    let c = p.output_depth;
                    (Just(p), Case::arb(p.input_len(), p.filter_len(), c, c), arb_multipliers(c))
                })
        ) {
            let q = quant_of(&case, &m, per_channel);
            let bias = case.bias.as_deref();
            let mut want = vec![0i8; p.output_len()];
            reference::conv_2d_i8(&p, &q, &case.input, &case.filter, bias, &mut want);
            let mut inout = case.input.clone();
            let mut scratch = vec![0u32; conv_2d_1x1_in_place_scratch_words(&p, &q)];
            conv_2d_1x1_i8_in_place(&p, &q, &case.filter, bias, &mut inout, &mut scratch);
            prop_assert_eq!(&inout, &want);
            let mut table = Vec::new();
            if let Some(qf) = with_flash(&p, &q, bias, &mut table) {
                let mut inout = case.input.clone();
                let mut scratch = vec![0u32; conv_2d_1x1_in_place_scratch_words(&p, &qf)];
                conv_2d_1x1_i8_in_place(&p, &qf, &case.filter, bias, &mut inout, &mut scratch);
                prop_assert_eq!(&inout, &want, "flash channels");
            }
        }

        #[test]
        fn in_place_matches_the_reference(
            (p, case, (m, per_channel)) in (
                (1usize..3, 1usize..8, 1usize..8, 1usize..9),
                prop_oneof![Just([1usize, 1]), Just([3, 3]), Just([3, 1]), Just([2, 3]), Just([5, 5])],
                1usize..3,
            )
                .prop_filter_map("window", |((n, h, w, c), f, d)| same_conv(n, [h, w], c, c, f, [d, d]))
                .prop_flat_map(|p| {
                    let c = p.output_depth;
                    (Just(p), Case::arb(p.input_len(), p.filter_len(), c, c), arb_multipliers(c))
                })
        ) {
            let q = quant_of(&case, &m, per_channel);
            let bias = case.bias.as_deref();
            let mut want = vec![0i8; p.output_len()];
            reference::conv_2d_i8(&p, &q, &case.input, &case.filter, bias, &mut want);
            let mut inout = case.input.clone();
            let mut scratch = vec![0u32; conv_2d_in_place_scratch_words(&p, &q)];
            conv_2d_i8_in_place(&p, &q, &case.filter, bias, &mut inout, &mut scratch);
            prop_assert_eq!(&inout, &want);
            let mut table = Vec::new();
            if let Some(qf) = with_flash(&p, &q, bias, &mut table) {
                let mut inout = case.input.clone();
                let mut scratch = vec![0u32; conv_2d_in_place_scratch_words(&p, &qf)];
                conv_2d_i8_in_place(&p, &qf, &case.filter, bias, &mut inout, &mut scratch);
                prop_assert_eq!(&inout, &want, "flash channels");
            }
        }

        #[test]
        fn banded_block_matches_conv_then_conv_add(
            (a, b, x, ca, cb, (ma, pca), (mb, pcb), conv_is_first) in (
                (1usize..3, 1usize..9, 1usize..9, 1usize..7, 1usize..7),
                (prop_oneof![Just([1usize, 1]), Just([3, 3]), Just([3, 1]), Just([1, 3])], 1usize..3),
                (prop_oneof![Just([1usize, 1]), Just([3, 3]), Just([2, 2])], 1usize..3),
            )
                .prop_filter_map("block", |((n, h, w, c, ct), (fa, da), (fb, db))| {
                    let a = same_conv(n, [h, w], c, ct, fa, [da, 1])?;
                    let b = same_conv(n, [h, w], ct, c, fb, [db, 1])?;
                    crate::kernels::in_place::block::block_ring_rows(&a, &b)?;
                    Some((a, b))
                })
                .prop_flat_map(|(a, b)| {
                    let (c, ct) = (a.input_depth, a.output_depth);
                    (
                        Just(a),
                        Just(b),
                        bytes(a.input_len()),
                        Case::arb(0, a.filter_len(), ct, 0),
                        Case::arb(0, b.filter_len(), c, 0),
                        arb_multipliers(ct),
                        arb_multipliers(c),
                        any::<bool>(),
                    )
                })
        ) {
            let (qa, qb) = (quant_of(&ca, &ma, pca), quant_of(&cb, &mb, pcb));
            let r = ResidualAdd {
                add: AddParams::prepare(
                    TensorQuant::new(0.05, -3),
                    TensorQuant::new(0.07, 11),
                    TensorQuant::new(0.09, 2),
                    FusedActivation::Relu,
                )
                .unwrap(),
                conv_is_first,
            };
            let (ba, bb) = (ca.bias.as_deref(), cb.bias.as_deref());
            let mut t = vec![0i8; a.output_len()];
            reference::conv_2d_i8(&a, &qa, &x, &ca.filter, ba, &mut t);
            let mut want = vec![0i8; b.output_len()];
            reference::conv_2d_i8_add(&b, &qb, &r, &t, &cb.filter, bb, &x, &mut want);
            let mut inout = x.clone();
            let mut ring = vec![0i8; crate::kernels::in_place::block::block_ring_len(&a, &b).unwrap()];
            let mut scratch = vec![0u32; conv_block_scratch_words(&a, &qa, &b, &qb)];
            conv_block_i8_in_place(&a, &qa, &ca.filter, ba, &b, &qb, &r, &cb.filter, bb, &mut inout, &mut ring, &mut scratch);
            prop_assert_eq!(&inout, &want);
            let (mut ta, mut tb) = (Vec::new(), Vec::new());
            if let (Some(qfa), Some(qfb)) = (with_flash(&a, &qa, ba, &mut ta), with_flash(&b, &qb, bb, &mut tb)) {
                let mut inout = x.clone();
                let mut scratch = vec![0u32; conv_block_scratch_words(&a, &qfa, &b, &qfb)];
                conv_block_i8_in_place(&a, &qfa, &ca.filter, ba, &b, &qfb, &r, &cb.filter, bb, &mut inout, &mut ring, &mut scratch);
                prop_assert_eq!(&inout, &want, "flash channels");
            }
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
        let words = conv_2d_scratch_words(&p, &q);
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
