//! TRANSPOSE_CONV in int8 and f32, gathered: one thread per output element sums the
//! input positions whose taps land on it, filter taps in descending order (ascending
//! input positions, TFLM's and kiln-runtime's summation order), then bias, requantize
//! (int8) and the activation clamp.

use super::float::clamp;
use super::int8::{bias, conv_epilogue, finish, store};
use super::{open_nhwc, Body, Ctx};
use crate::exec::kernel::{Owned, Prepared};
use crate::ir::DType;
use kiln_runtime::activation::ActivationRangeF32;
use kiln_runtime::kernels::reference::conv_2d::ConvQuant;
use kiln_runtime::kernels::reference::transpose_conv_2d::TransposeConv2dParams;
use std::fmt::Write as _;

/// The kernel of a transposed convolution, or `None` when `prepared` is not one.
pub(super) fn kernel(cx: &Ctx, prepared: &Prepared) -> Option<Body> {
    match prepared {
        Prepared::TransposeConv2dI8(p, q) => Some(int8(cx, p, q)),
        Prepared::TransposeConv2dF32(p, act) => Some(float(cx, p, act)),
        _ => None,
    }
}

/// Shared part: the opening for `threads` threads (pointers, output coordinates),
/// `acc`'s declaration and the gather loop around `mac` (which adds `xp[k]` times
/// `fp[k]` to `acc`).
fn gather(
    cx: &Ctx,
    p: &TransposeConv2dParams,
    threads: u64,
    ty: &str,
    acc: &str,
    mac: &str,
) -> String {
    let [ih, iw] = p.input;
    let [oh, ow] = p.output;
    let [kh, kw] = p.filter;
    let (d, oc) = (p.input_depth, p.output_depth);
    let mut s = open_nhwc(cx, threads, ty, oc, ow, oh);
    let _ = writeln!(s, "  {acc}");
    let _ = write!(
        s,
        "  for (int ky = {}; ky >= 0; --ky) {{\n    const int sy = oy + {} - ky * {};\n    if (sy < 0 || sy % {} != 0 || sy / {} >= {ih}) continue;\n    const int iy = sy / {};\n    for (int kx = {}; kx >= 0; --kx) {{\n      const int sx = ox + {} - kx * {};\n      if (sx < 0 || sx % {} != 0 || sx / {} >= {iw}) continue;\n      const int ix = sx / {};\n      const {ty}* xp = x + (((long long)b * {ih} + iy) * {iw} + ix) * {d};\n      const {ty}* fp = f + ((c * {kh} + ky) * {kw} + kx) * {d};\n      for (int k = 0; k < {d}; ++k) {mac}\n    }}\n  }}\n",
        kh - 1,
        p.pad[0],
        p.dilation[0],
        p.stride[0],
        p.stride[0],
        p.stride[0],
        kw - 1,
        p.pad[1],
        p.dilation[1],
        p.stride[1],
        p.stride[1],
        p.stride[1],
    );
    s
}

/// int8 TRANSPOSE_CONV (per-channel or per-tensor multipliers, optional int32 bias).
fn int8(cx: &Ctx, p: &TransposeConv2dParams, q: &Owned<ConvQuant<'static>>) -> Body {
    let [oh, ow] = p.output;
    let threads = (p.batches * oh * ow * p.output_depth) as u64;
    let (bias, runtime_bias) = bias(cx, p.output_depth);
    let e = conv_epilogue(cx, q, &bias);
    let io = q.quant.input_offset;
    let mut s = gather(
        cx,
        p,
        threads,
        "signed char",
        "int acc = 0;",
        &format!("acc = kiln_wadd(acc, kiln_wmul((int)xp[k] + ({io}), (int)fp[k]));"),
    );
    let v = finish(&mut s, &e, runtime_bias.as_deref());
    store(s, &v, threads)
}

/// f32 TRANSPOSE_CONV (optional bias; no bias adds nothing, as on the CPU).
fn float(cx: &Ctx, p: &TransposeConv2dParams, act: &ActivationRangeF32) -> Body {
    let [oh, ow] = p.output;
    let threads = (p.batches * oh * ow * p.output_depth) as u64;
    let mut s = gather(
        cx,
        p,
        threads,
        "float",
        "float acc = 0.0f;",
        "acc += xp[k] * fp[k];",
    );
    let value = if cx.has_bias(DType::F32) {
        format!("acc + {}[c]", cx.input(2, "float"))
    } else {
        "acc".into()
    };
    let _ = writeln!(s, "  y[t] = {};\n}}", clamp(&value, act));
    Body { source: s, threads }
}
