//! Kernels whose result overwrites their input, so the memory planner can give the
//! input and the result the same arena bytes. Each gives exactly the integers (and, for
//! f32, the same operations in the same order) as its out-of-place reference kernel,
//! which the property tests in `runtime/tests/in_place_conv.rs` check on random shapes.
//!
//! Three kinds, all keeping in a small scratch buffer (planned in the arena, never on
//! the heap) only the input values that are still needed after their bytes have been
//! overwritten:
//!
//! - [`conv_2d`]: a stride-1 CONV_2D whose result has its input's shape (same height,
//!   width and channels, e.g. a 64→64 pointwise 1x1 or a 32→32 3x3 "same" conv). Output
//!   pixels are computed in raster order and each is written over the input pixel at the
//!   same position; a ring of [`ring_pixels`] input pixels keeps the ones still read.
//! - [`depthwise_conv_2d`]: the same for a stride-1 DEPTHWISE_CONV_2D with depth
//!   multiplier 1 and "same" output size.
//! - [`block`]: two stride-1 convs `x → t → conv(t) + x` (a residual block whose second
//!   conv has the ADD fused in) run row band by row band: `t` exists only as a ring of
//!   rows, and the block's result overwrites `x` row by row.
//!
//! # Why the pixel ring is enough
//!
//! Let the window be stride 1 with the result as large as the input (`H x W`), padding
//! `pt` rows above and `pl` columns left. Number pixels in raster order, `l = y * W + x`.
//! Output pixel `cur = (oy, ox)` reads input pixels `(oy - pt + dy, ox - pl + dx)` with
//! `dy, dx >= 0`, all with `l >= cur - (pt * W + pl)`. When it is computed, output pixels
//! `0..cur` have been written over input pixels `0..cur`; input pixels after `cur` are
//! intact. So a ring of `R = pt * W + pl + 1` pixels, into which input pixel `cur` is
//! copied just before output pixel `cur` is computed, holds every overwritten input
//! pixel that output pixel `cur` or any later one still reads: pixel `l` sits in slot
//! `l % R` and is replaced only by pixel `l + R > cur`.

pub mod block;
pub mod conv_2d;
pub mod depthwise_conv_2d;

use crate::padding::Window2d;

/// Pixels of the input ring an in-place stride-1 window kernel needs (see the module
/// docs): `pad_top * width + pad_left + 1`, at most `height * width`. `None` unless the
/// window has stride 1 and its output is exactly as large as its input.
pub fn ring_pixels(w: &Window2d) -> Option<usize> {
    if w.stride != [1, 1] || w.output != w.input {
        return None;
    }
    let [h, width] = w.input;
    let pixels = h.checked_mul(width)?;
    let ring = w.pad[0]
        .checked_mul(width)?
        .checked_add(w.pad[1])?
        .checked_add(1)?;
    Some(ring.min(pixels))
}

/// Ring slot of input pixel `l` when the current pixel `cur >= l` sits in slot `slot`
/// of a ring of `ring` pixels and `cur - l < ring` (no division on the hot path).
#[inline(always)]
fn ring_slot(cur: usize, slot: usize, l: usize, ring: usize) -> usize {
    let back = cur.wrapping_sub(l);
    if slot >= back {
        slot - back
    } else {
        slot.wrapping_add(ring).wrapping_sub(back)
    }
}
