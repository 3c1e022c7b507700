//! DEPTHWISE_CONV_2D writing its result over its input: stride 1, depth multiplier 1,
//! result as large as the input ("same" spatial size), any filter size, dilation and
//! padding. A ring of [`ring_pixels`] input pixels (`scratch`,
//! `ring_pixels * input_depth` elements) keeps the overwritten input pixels still
//! needed; see the [module docs](super). For a 3x3 "same" filter over a `W`-wide image
//! that is `W + 2` pixels instead of a second `H x W` tensor.
//!
//! Each output element sums the same taps in the same order, with the same arithmetic,
//! as [`depthwise_conv_2d_i8`](crate::kernels::reference::depthwise_conv_2d::depthwise_conv_2d_i8)
//! and its f32 twin.

use super::{ring_pixels, ring_slot};
use crate::activation::ActivationRangeF32;
use crate::kernels::reference::conv_2d::for_each_tap;
use crate::kernels::reference::depthwise_conv_2d::{ConvQuant, DepthwiseConv2dParams};
use crate::shape::checked_product;
use crate::unchecked::{get, set};

/// Scratch elements the in-place depthwise kernels need for `p`
/// (`ring_pixels * input_depth`); `None` when `p` cannot run in place (depth multiplier
/// other than 1, stride other than 1, output size other than the input's, overflow).
pub fn depthwise_in_place_scratch(p: &DepthwiseConv2dParams) -> Option<usize> {
    if p.depth_multiplier != 1 {
        return None;
    }
    ring_pixels(&p.window)?.checked_mul(p.input_depth)
}

/// The shared loop: `finish(acc, bias, channel)` gives each output element. Writes
/// nothing unless every length matches `p`.
#[inline]
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
fn depthwise_in_place_loop<T: Copy, B: Copy, A>(
    p: &DepthwiseConv2dParams,
    filter: &[T],
    bias: Option<&[B]>,
    mut zero: impl FnMut() -> A,
    mut mac: impl FnMut(&mut A, T, T),
    mut finish: impl FnMut(A, Option<B>, usize) -> T,
    inout: &mut [T],
    scratch: &mut [T],
) {
    let Some(scratch_len) = depthwise_in_place_scratch(p) else {
        return;
    };
    let w = &p.window;
    let [h, width] = w.input;
    let f_w = w.filter[1];
    let c = p.input_depth;
    let (Some(len), Some(filter_len)) = (
        checked_product(&[p.batches, h, width, c]),
        checked_product(&[w.filter[0], f_w, c]),
    ) else {
        return;
    };
    if c == 0
        || inout.len() != len
        || filter.len() != filter_len
        || scratch.len() < scratch_len
        || bias.is_some_and(|b| b.len() != c)
    {
        return;
    }
    let ring = scratch_len.checked_div(c).unwrap_or(0);
    let image = h * width * c;
    for n in 0..p.batches {
        let base = n * image;
        let mut slot = 0;
        for oy in 0..h {
            for ox in 0..width {
                let cur = oy * width + ox;
                let at = base + cur * c;
                for i in 0..c {
                    // SAFETY: slot < ring, i < c: below ring * c <= scratch.len();
                    // cur < h * width: at + i < base + image <= inout.len().
                    unsafe { set(scratch, slot * c + i, get(inout, at + i)) };
                }
                for ch in 0..c {
                    let mut acc = zero();
                    for_each_tap(w, oy, ox, |fy, fx, iy, ix| {
                        let l = iy * width + ix;
                        // Overwritten pixels (l <= cur) are still in the ring (module docs).
                        let (src, i) = if l <= cur {
                            (&*scratch, ring_slot(cur, slot, l, ring) * c + ch)
                        } else {
                            (&*inout, base + l * c + ch)
                        };
                        // SAFETY: ring slots < ring and ch < c bound the ring index by
                        // scratch.len(); iy < h, ix < w (for_each_tap) bound the input index
                        // by inout.len(); fy < f_h, fx < f_w, ch < c bound the filter index.
                        let (x, f) =
                            unsafe { (get(src, i), get(filter, (fy * f_w + fx) * c + ch)) };
                        mac(&mut acc, x, f);
                    });
                    // SAFETY: ch < c == b.len().
                    let b = bias.map(|b| unsafe { get(b, ch) });
                    // SAFETY: at + ch < base + image <= inout.len().
                    unsafe { set(inout, at + ch, finish(acc, b, ch)) };
                }
                slot += 1;
                if slot == ring {
                    slot = 0;
                }
            }
        }
    }
}

/// int8 DEPTHWISE_CONV_2D in place: `inout` holds the input on entry and the result on
/// exit, bit-exact with the reference kernel.
///
/// Preconditions: [`depthwise_in_place_scratch`] is `Some(s)` with `scratch.len() >= s`;
/// `inout.len() == p.input_len()`, `filter.len() == p.filter_len()`, `bias` (if any) and
/// `q.multipliers` cover `p.input_depth`; otherwise nothing is written.
pub fn depthwise_conv_2d_i8_in_place(
    p: &DepthwiseConv2dParams,
    q: &ConvQuant<'_>,
    filter: &[i8],
    bias: Option<&[i32]>,
    inout: &mut [i8],
    scratch: &mut [i8],
) {
    if !q.multipliers.covers(p.input_depth) {
        return;
    }
    let input_offset = q.input_offset;
    depthwise_in_place_loop(
        p,
        filter,
        bias,
        || 0i32,
        |acc, x, f| *acc = acc.wrapping_add(i32::from(f) * (i32::from(x) + input_offset)),
        |acc, b, oc| {
            let acc = b.map_or(acc, |b| acc.wrapping_add(b));
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

/// f32 DEPTHWISE_CONV_2D in place, the reference's operations in the reference's order.
/// Preconditions as [`depthwise_conv_2d_i8_in_place`].
pub fn depthwise_conv_2d_f32_in_place(
    p: &DepthwiseConv2dParams,
    activation: ActivationRangeF32,
    filter: &[f32],
    bias: Option<&[f32]>,
    inout: &mut [f32],
    scratch: &mut [f32],
) {
    depthwise_in_place_loop(
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
