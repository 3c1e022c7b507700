//! A residual block `y = conv_b(conv_a(x)) + x` run in row bands, with `y` written over
//! `x`: the intermediate `t = conv_a(x)` never exists in full, only as a ring of
//! [`block_ring_rows`] rows, and the block needs no second copy of `x`.
//!
//! Both convs have stride 1 and keep the height and width `H x W`; `conv_b` carries the
//! fused residual ADD ([`ResidualAdd`]) and its result has `x`'s shape. Let `conv_a` pad
//! `pa` rows above and `conv_b` pad `pb` rows above, with `span_b = dilation * (filter_h
//! - 1) + 1` rows of `t` per output row, so `below_b = span_b - 1 - pb` rows below.
//!
//! Schedule, per image: for `r` in `0..H`, first compute every row of `t` up to
//! `min(H - 1, r + below_b)` not computed yet into the ring (slot `row % ring`), then
//! compute output row `r` from ring rows `r - pb ..= r + below_b`, reading each skip
//! value `x[r, ox, c]` just before writing the sum over it.
//!
//! Why it is exact: (1) when output row `r` is written, rows `0..r` of `x` are already
//! overwritten; `t` row `j`, computed at step `r` with `j <= r + below_b`, reads `x` rows
//! from `j - pa`, and for the row computed last, `j = r + below_b`, that is
//! `r + below_b - pa >= r` when `below_b >= pa` (checked by [`block_ring_rows`]); rows
//! computed earlier were computed at earlier steps, before more rows were overwritten.
//! So every `x` row `t` reads is still intact. (2) Output row `r` reads `t` rows
//! `r - pb ..= r + below_b` (clipped to the image), all computed and, as the ring keeps
//! the last `span_b` rows computed (or all `H`), still in the ring. (3) The skip value of
//! each output element is read at its own position before it is overwritten, and no
//! other output element reads it. The arithmetic per element is the reference's.

use crate::kernels::reference::conv_2d::{for_each_tap, Conv2dParams, ConvQuant, ResidualAdd};
use crate::shape::checked_product;
use crate::unchecked::{get, set};

/// Rows of `t` the ring holds for the block `conv_b(conv_a(x)) + x`: `span_b` (at most
/// `H`). `None` when the pair cannot run banded in place: a stride other than 1, a
/// height or width change, `conv_b`'s result channels other than `conv_a`'s input
/// channels, `conv_b`'s input channels other than `conv_a`'s output channels, or
/// `conv_a` padding more rows above than `conv_b` reads below (`below_b < pa`).
pub fn block_ring_rows(a: &Conv2dParams, b: &Conv2dParams) -> Option<usize> {
    let (wa, wb) = (&a.window, &b.window);
    let same = wa.input == wa.output && wb.input == wa.input && wb.output == wa.input;
    if !same
        || wa.stride != [1, 1]
        || wb.stride != [1, 1]
        || a.batches != b.batches
        || b.input_depth != a.output_depth
        || b.output_depth != a.input_depth
    {
        return None;
    }
    let span_b = wb.filter[0]
        .checked_sub(1)?
        .checked_mul(wb.dilation[0])?
        .checked_add(1)?;
    let below_b = span_b.checked_sub(1)?.checked_sub(wb.pad[0])?;
    if below_b < wa.pad[0] {
        return None;
    }
    Some(span_b.min(wa.input[0]))
}

/// Ring elements [`conv_block_i8_in_place`] needs: `block_ring_rows * W * channels of t`.
pub fn block_ring_len(a: &Conv2dParams, b: &Conv2dParams) -> Option<usize> {
    checked_product(&[block_ring_rows(a, b)?, a.window.input[1], a.output_depth])
}

/// Slice lengths of one conv: `(groups, filter)`, or `None` when `p` is inconsistent.
fn conv_shape(p: &Conv2dParams) -> Option<(usize, usize)> {
    let fin = p.filter_input_depth;
    let groups = p.input_depth.checked_div(fin)?;
    if groups.checked_mul(fin)? != p.input_depth || !p.output_depth.is_multiple_of(groups) {
        return None;
    }
    let filter = checked_product(&[p.output_depth, p.window.filter[0], p.window.filter[1], fin])?;
    Some((groups, filter))
}

/// One int8 conv output element `(oy, ox, oc)`, reading input pixel `(iy, ix)` at
/// `pixel(iy, ix)` of `src` (an index of its channel 0), as the reference computes it.
///
/// # Safety
/// `pixel(iy, ix) + p.input_depth <= src.len()` for every in-image pixel, `oc <
/// p.output_depth`, `filter.len()` and `bias` as [`conv_shape`] derives, `groups` from it.
#[inline(always)]
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
unsafe fn element_i8(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    groups: usize,
    filter: &[i8],
    bias: Option<&[i32]>,
    src: &[i8],
    pixel: impl Fn(usize, usize) -> usize,
    oy: usize,
    ox: usize,
    oc: usize,
) -> i8 {
    let fin = p.filter_input_depth;
    let [f_h, f_w] = p.window.filter;
    let group = oc
        .checked_div(p.output_depth.checked_div(groups).unwrap_or(0))
        .unwrap_or(0);
    let mut acc = 0i32;
    for_each_tap(&p.window, oy, ox, |fy, fx, iy, ix| {
        let start = pixel(iy, ix) + group * fin;
        let f_base = ((oc * f_h + fy) * f_w + fx) * fin;
        for ic in 0..fin {
            // SAFETY: the caller bounds the pixel and the filter (see above).
            let (x, f) = unsafe { (get(src, start + ic), get(filter, f_base + ic)) };
            acc = acc.wrapping_add(i32::from(f) * (i32::from(x) + q.input_offset));
        }
    });
    // SAFETY: oc < output_depth == b.len().
    let acc = match bias.map(|b| unsafe { get(b, oc) }) {
        Some(b) => acc.wrapping_add(b),
        None => acc,
    };
    let scaled = q
        .multipliers
        .get(oc)
        .apply(acc)
        .wrapping_add(q.output_offset);
    q.activation.clamp_i8(scaled)
}

/// int8 residual block in row bands: `inout` holds `x` on entry and
/// `add(conv_b(conv_a(x)), x)` on exit, bit-exact with
/// [`conv_2d_i8`](crate::kernels::reference::conv_2d::conv_2d_i8) for `conv_a` followed
/// by [`conv_2d_i8_add`](crate::kernels::reference::conv_2d::conv_2d_i8_add) for
/// `conv_b`. `ring` needs [`block_ring_len`] elements.
///
/// Preconditions: [`block_ring_rows`] accepts `(a, b)`; filter, bias and multiplier
/// lengths match each conv; `inout.len() == a.input_len()`; otherwise nothing is
/// written.
#[allow(unsafe_code)]
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
) {
    let (Some(rows), Some(ring_len), Some((groups_a, fa_len)), Some((groups_b, fb_len))) = (
        block_ring_rows(a, b),
        block_ring_len(a, b),
        conv_shape(a),
        conv_shape(b),
    ) else {
        return;
    };
    let [h, width] = a.window.input;
    let (c, ct) = (a.input_depth, a.output_depth);
    let Some(len) = checked_product(&[a.batches, h, width, c]) else {
        return;
    };
    if inout.len() != len
        || ring.len() < ring_len
        || filter_a.len() != fa_len
        || filter_b.len() != fb_len
        || bias_a.is_some_and(|v| v.len() != ct)
        || bias_b.is_some_and(|v| v.len() != c)
        || !qa.multipliers.covers(ct)
        || !qb.multipliers.covers(c)
    {
        return;
    }
    let span_b = b.window.filter[0].saturating_sub(1) * b.window.dilation[0] + 1;
    let below_b = span_b - 1 - b.window.pad[0];
    let image = h * width * c;
    let row_t = width * ct;
    for n in 0..a.batches {
        let base = n * image;
        let mut next_t = 0;
        for oy in 0..h {
            let last_t = (oy + below_b).min(h - 1);
            while next_t <= last_t {
                let slot = next_t.checked_rem(rows).unwrap_or(0) * row_t;
                for ox in 0..width {
                    for oc in 0..ct {
                        // SAFETY: in-image pixels (iy < h, ix < w) index below
                        // base + image <= inout.len(); oc < ct; filter and bias lengths were
                        // checked against conv_shape(a).
                        let v = unsafe {
                            element_i8(
                                a,
                                qa,
                                groups_a,
                                filter_a,
                                bias_a,
                                inout,
                                |iy, ix| base + (iy * width + ix) * c,
                                next_t,
                                ox,
                                oc,
                            )
                        };
                        // SAFETY: slot + row_t <= rows * row_t <= ring.len(), ox < w, oc < ct.
                        unsafe { set(ring, slot + ox * ct + oc, v) };
                    }
                }
                next_t += 1;
            }
            for ox in 0..width {
                let at = base + (oy * width + ox) * c;
                for oc in 0..c {
                    // SAFETY: t rows iy read here are in the ring (module docs), slot
                    // (iy % rows) * row_t + ix * ct + ct <= rows * row_t <= ring.len();
                    // oc < c == b.output_depth; lengths checked against conv_shape(b).
                    let v = unsafe {
                        element_i8(
                            b,
                            qb,
                            groups_b,
                            filter_b,
                            bias_b,
                            ring,
                            |iy, ix| iy.checked_rem(rows).unwrap_or(0) * row_t + ix * ct,
                            oy,
                            ox,
                            oc,
                        )
                    };
                    // SAFETY: at + oc < base + image <= inout.len().
                    unsafe {
                        let skip = get(inout, at + oc);
                        let sum = if r.conv_is_first {
                            r.add.add_one(v, skip)
                        } else {
                            r.add.add_one(skip, v)
                        };
                        set(inout, at + oc, sum);
                    }
                }
            }
        }
    }
}
