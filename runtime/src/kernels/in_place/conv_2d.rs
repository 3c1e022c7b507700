//! CONV_2D writing its result over its input: stride 1, result shape equal to the input
//! shape (`output_depth == input_depth`, "same" spatial size), any filter size,
//! dilation, padding and groups. A ring of [`ring_pixels`] input pixels
//! (`scratch`, `ring_pixels * input_depth` elements) keeps the overwritten input pixels
//! still needed; see the [module docs](super) for why that suffices. A pointwise (1x1,
//! no padding) conv needs a one-pixel ring.
//!
//! Every output element is accumulated over the same taps in the same order, with the
//! same arithmetic, as [`conv_2d_i8`](crate::kernels::reference::conv_2d::conv_2d_i8)
//! and [`conv_2d_f32`](crate::kernels::reference::conv_2d::conv_2d_f32).

use super::{ring_pixels, ring_slot};
use crate::activation::ActivationRangeF32;
use crate::kernels::reference::conv_2d::{for_each_tap, Conv2dParams, ConvQuant};
use crate::shape::checked_product;
use crate::unchecked::{get, set};

/// Scratch elements [`conv_2d_i8_in_place`] and [`conv_2d_f32_in_place`] need for `p`
/// (`ring_pixels * input_depth`); `None` when `p` cannot run in place (stride other
/// than 1, result shape other than the input's, or overflow).
pub fn conv_2d_in_place_scratch(p: &Conv2dParams) -> Option<usize> {
    if p.output_depth != p.input_depth {
        return None;
    }
    ring_pixels(&p.window)?.checked_mul(p.input_depth)
}

/// The shared loop: `finish(acc, bias, oc)` gives each output element. Writes nothing
/// unless every length matches `p`.
#[inline]
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
fn conv_in_place_loop<T: Copy, B: Copy, A>(
    p: &Conv2dParams,
    filter: &[T],
    bias: Option<&[B]>,
    mut zero: impl FnMut() -> A,
    mut mac: impl FnMut(&mut A, T, T),
    mut finish: impl FnMut(A, Option<B>, usize) -> T,
    inout: &mut [T],
    scratch: &mut [T],
) {
    let Some(scratch_len) = conv_2d_in_place_scratch(p) else {
        return;
    };
    let w = &p.window;
    let [h, width] = w.input;
    let [f_h, f_w] = w.filter;
    let c = p.input_depth;
    let fin = p.filter_input_depth;
    let Some(groups) = c.checked_div(fin) else {
        return;
    };
    let (Some(len), Some(filter_len)) = (
        checked_product(&[p.batches, h, width, c]),
        checked_product(&[p.output_depth, f_h, f_w, fin]),
    ) else {
        return;
    };
    if groups * fin != c
        || !p.output_depth.is_multiple_of(groups)
        || inout.len() != len
        || filter.len() != filter_len
        || scratch.len() < scratch_len
        || bias.is_some_and(|b| b.len() != p.output_depth)
    {
        return;
    }
    // ring >= 1 since scratch_len = ring * c and c >= 1 (groups exist).
    let ring = scratch_len.checked_div(c).unwrap_or(0);
    let per_group = p.output_depth.checked_div(groups).unwrap_or(0);
    let image = h * width * c;
    for n in 0..p.batches {
        let base = n * image;
        let mut slot = 0;
        for oy in 0..h {
            for ox in 0..width {
                let cur = oy * width + ox;
                let at = base + cur * c;
                for i in 0..c {
                    // SAFETY: slot < ring and i < c, so slot * c + i < ring * c <= scratch.len();
                    // cur < h * width, so at + i < base + image <= inout.len().
                    unsafe { set(scratch, slot * c + i, get(inout, at + i)) };
                }
                for group in 0..groups {
                    for k in 0..per_group {
                        let oc = group * per_group + k;
                        let mut acc = zero();
                        for_each_tap(w, oy, ox, |fy, fx, iy, ix| {
                            let l = iy * width + ix;
                            // Overwritten pixels (l <= cur) come from the ring, where the
                            // module docs show they still are; later ones are intact.
                            let (src, start) = if l <= cur {
                                (&*scratch, ring_slot(cur, slot, l, ring) * c)
                            } else {
                                (&*inout, base + l * c)
                            };
                            let start = start + group * fin;
                            let f_base = ((oc * f_h + fy) * f_w + fx) * fin;
                            for ic in 0..fin {
                                // SAFETY: ring slots are < ring, so the ring index is below
                                // ring * c <= scratch.len(); iy < h, ix < w (for_each_tap) and
                                // group * fin + ic < c bound the input index by inout.len();
                                // oc < output_depth, fy < f_h, fx < f_w, ic < fin bound the
                                // filter index by filter.len().
                                let (x, f) =
                                    unsafe { (get(src, start + ic), get(filter, f_base + ic)) };
                                mac(&mut acc, x, f);
                            }
                        });
                        // SAFETY: oc < output_depth == b.len().
                        let b = bias.map(|b| unsafe { get(b, oc) });
                        // SAFETY: oc < output_depth == c, so at + oc < inout.len().
                        unsafe { set(inout, at + oc, finish(acc, b, oc)) };
                    }
                }
                slot += 1;
                if slot == ring {
                    slot = 0;
                }
            }
        }
    }
}

/// int8 CONV_2D in place: `inout` holds the input on entry and the result on exit,
/// bit-exact with [`conv_2d_i8`](crate::kernels::reference::conv_2d::conv_2d_i8).
///
/// Preconditions: [`conv_2d_in_place_scratch`] is `Some(s)` and `scratch.len() >= s`;
/// `inout.len() == p.input_len()`, `filter.len() == p.filter_len()`, `bias` (if any)
/// and `q.multipliers` cover `p.output_depth`; otherwise nothing is written.
pub fn conv_2d_i8_in_place(
    p: &Conv2dParams,
    q: &ConvQuant<'_>,
    filter: &[i8],
    bias: Option<&[i32]>,
    inout: &mut [i8],
    scratch: &mut [i8],
) {
    if !q.multipliers.covers(p.output_depth) {
        return;
    }
    let input_offset = q.input_offset;
    conv_in_place_loop(
        p,
        filter,
        bias,
        || 0i32,
        |acc, x, f| *acc = acc.wrapping_add(i32::from(f) * (i32::from(x) + input_offset)),
        |acc, b, oc| {
            let acc = match b {
                Some(b) => acc.wrapping_add(b),
                None => acc,
            };
            let scaled = q
                .multipliers
                .get(oc)
                .apply(acc)
                .wrapping_add(q.output_offset);
            q.activation.clamp_i8(scaled)
        },
        inout,
        scratch,
    );
}

/// f32 CONV_2D in place, the same operations in the same order as
/// [`conv_2d_f32`](crate::kernels::reference::conv_2d::conv_2d_f32). Preconditions as
/// [`conv_2d_i8_in_place`].
pub fn conv_2d_f32_in_place(
    p: &Conv2dParams,
    activation: ActivationRangeF32,
    filter: &[f32],
    bias: Option<&[f32]>,
    inout: &mut [f32],
    scratch: &mut [f32],
) {
    conv_in_place_loop(
        p,
        filter,
        bias,
        || 0.0f32,
        |acc, x, f| *acc += x * f,
        |acc, b, _| activation.apply(acc + b.unwrap_or(0.0)),
        inout,
        scratch,
    );
}
