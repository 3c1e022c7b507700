//! float32 kernels of the convolutions, dense layers, pools and softmax: ports of
//! kiln-runtime's f32 reference kernels with the same summation order (filter row,
//! filter column, channel), one thread per output (per row for softmax). Built without
//! fused multiply-adds (see `kiln_cuda::NVRTC_OPTIONS`), the products and sums round
//! like the CPU's; only `expf` (softmax) may differ from the CPU's libm in the last bits.

use super::{flit, open_nhwc, pool_window, window_taps, Body, Ctx};
use crate::ir::DType;
use kiln_runtime::activation::ActivationRangeF32;
use kiln_runtime::kernels::reference::average_pool_2d::Pool2dParams;
use kiln_runtime::kernels::reference::conv_2d::Conv2dParams;
use kiln_runtime::kernels::reference::depthwise_conv_2d::DepthwiseConv2dParams;
use kiln_runtime::kernels::reference::fully_connected::FullyConnectedParams;
use std::fmt::Write as _;

/// `kiln_fclamp(VALUE, lo, hi)`: the activation clamp of `r`.
pub(super) fn clamp(value: &str, r: &ActivationRangeF32) -> String {
    format!("kiln_fclamp({value}, {}, {})", flit(r.min), flit(r.max))
}

/// The bias term the CPU adds: `bias[c]`, or `0.0f` (the CPU adds 0.0 without a bias,
/// which turns a -0.0 sum into +0.0).
fn bias_term(cx: &Ctx) -> String {
    if cx.has_bias(DType::F32) {
        format!("{}[c]", cx.input(2, "float"))
    } else {
        "0.0f".into()
    }
}

/// f32 CONV_2D (grouped, dilated), with the fused residual ADD of `add` (its
/// activation; the skip tensor is operand 3) when given.
pub(super) fn conv(
    cx: &Ctx,
    p: &Conv2dParams,
    act: &ActivationRangeF32,
    add: Option<&ActivationRangeF32>,
) -> Body {
    let w = &p.window;
    let [ih, iw] = w.input;
    let [fh, fw] = w.filter;
    let [oh, ow] = w.output;
    let (ic, oc, fin) = (p.input_depth, p.output_depth, p.filter_input_depth);
    let fpg = oc / (ic / fin);
    let threads = (p.batches * oh * ow * oc) as u64;
    let mut s = open_nhwc(cx, threads, "float", oc, ow, oh);
    let _ = write!(
        s,
        "  const int group = c / {fpg};\n  const float* xb = x + (long long)b * {} + group * {fin};\n  float acc = 0.0f;\n",
        ih * iw * ic
    );
    // A constant filter is read from its copy interleaved by output channel (coalesced).
    let filter = match cx.interleaved_operand(1, DType::F32, oc, fh * fw * fin, 4) {
        Some(off) => {
            format!("((const float*)(W + {off}ull))[((fy * {fw} + fx) * {fin} + k) * {oc} + c]")
        }
        None => format!("f[((c * {fh} + fy) * {fw} + fx) * {fin} + k]"),
    };
    let body = format!(
        "      const float* xp = xb + (iy * {iw} + ix) * {ic};\n      for (int k = 0; k < {fin}; ++k) acc += xp[k] * {filter};\n"
    );
    s.push_str(&window_taps(w, &body));
    let _ = writeln!(
        s,
        "  float v = {};",
        clamp(&format!("acc + {}", bias_term(cx)), act)
    );
    if let Some(add) = add {
        let skip = format!("v + {}[t]", cx.input(3, "float"));
        let _ = writeln!(s, "  v = {};", clamp(&skip, add));
    }
    s.push_str("  y[t] = v;\n}\n");
    Body { source: s, threads }
}

/// f32 DEPTHWISE_CONV_2D.
pub(super) fn depthwise(cx: &Ctx, p: &DepthwiseConv2dParams, act: &ActivationRangeF32) -> Body {
    let w = &p.window;
    let [ih, iw] = w.input;
    let fw = w.filter[1];
    let [oh, ow] = w.output;
    let (ic, dm) = (p.input_depth, p.depth_multiplier);
    let oc = ic * dm;
    let threads = (p.batches * oh * ow * oc) as u64;
    let mut s = open_nhwc(cx, threads, "float", oc, ow, oh);
    let _ = write!(
        s,
        "  const float* xb = x + (long long)b * {} + c / {dm};\n  float acc = 0.0f;\n",
        ih * iw * ic
    );
    let body =
        format!("      acc += xb[(iy * {iw} + ix) * {ic}] * f[(fy * {fw} + fx) * {oc} + c];\n");
    s.push_str(&window_taps(w, &body));
    let _ = writeln!(
        s,
        "  y[t] = {};\n}}",
        clamp(&format!("acc + {}", bias_term(cx)), act)
    );
    Body { source: s, threads }
}

/// f32 FULLY_CONNECTED.
pub(super) fn fully_connected(
    cx: &Ctx,
    p: &FullyConnectedParams,
    act: &ActivationRangeF32,
) -> Body {
    let (d, od) = (p.accum_depth, p.output_depth);
    let threads = (p.batches * od) as u64;
    let weight = match cx.interleaved_operand(1, DType::F32, od, d, 4) {
        Some(off) => format!("((const float*)(W + {off}ull))[k * {od} + c]"),
        None => "fp[k]".into(),
    };
    let mut s = cx.open(threads);
    let _ = write!(
        s,
        "  const float* x = {};\n  const float* f = {};\n  float* y = {};\n  const int c = (int)(t % {od}); const kiln_idx b = t / {od};\n  const float* xp = x + b * {d};\n  const float* fp = f + (long long)c * {d};\n  float acc = 0.0f;\n  for (int k = 0; k < {d}; ++k) acc += xp[k] * {weight};\n",
        cx.input(0, "float"),
        cx.input(1, "float"),
        cx.output("float")
    );
    let _ = writeln!(
        s,
        "  y[t] = {};\n}}",
        clamp(&format!("acc + {}", bias_term(cx)), act)
    );
    Body { source: s, threads }
}

/// f32 AVERAGE_POOL_2D (`avg`) or MAX_POOL_2D over the in-bounds part of each window.
pub(super) fn pool(cx: &Ctx, p: &Pool2dParams, act: &ActivationRangeF32, avg: bool) -> Body {
    let [oh, ow] = p.window.output;
    let threads = (p.batches * oh * ow * p.depth) as u64;
    let mut s = cx.open(threads);
    s.push_str(&pool_window(cx, p, "float"));
    let iw = p.window.input[1];
    let c = p.depth;
    if avg {
        let _ = write!(
            s,
            "  float total = 0.0f; unsigned int count = 0;\n  for (int iy = ys; iy < ye; ++iy)\n    for (int ix = xs; ix < xe; ++ix) {{ total += xb[(iy * {iw} + ix) * {c}]; ++count; }}\n  const float avg = count == 0 ? 0.0f : total / (float)count;\n  y[t] = {};\n}}\n",
            clamp("avg", act)
        );
    } else {
        let _ = write!(
            s,
            "  float m = {};\n  for (int iy = ys; iy < ye; ++iy)\n    for (int ix = xs; ix < xe; ++ix) {{ const float v = xb[(iy * {iw} + ix) * {c}]; if (v > m) m = v; }}\n  y[t] = {};\n}}\n",
            flit(f32::MIN),
            clamp("m", act)
        );
    }
    Body { source: s, threads }
}

/// f32 SOFTMAX over the last axis (`depth`): one thread per row; `None` when the
/// output is not a whole number of rows.
pub(super) fn softmax(cx: &Ctx, beta: f32, depth: usize) -> Option<Body> {
    let (mut s, threads) = cx.open_rows(depth)?;
    let _ = write!(
        s,
        "  const float* x = {} + t * {depth};\n  float* y = {} + t * {depth};\n  float mx = {};\n  for (int k = 0; k < {depth}; ++k) mx = mx < x[k] ? x[k] : mx;\n  float sum = 0.0f;\n  for (int k = 0; k < {depth}; ++k) {{\n    const float e = expf((x[k] - mx) * {});\n    y[k] = e;\n    sum += e;\n  }}\n  for (int k = 0; k < {depth}; ++k) y[k] /= sum;\n}}\n",
        cx.input(0, "float"),
        cx.output("float"),
        flit(f32::MIN),
        flit(beta)
    );
    Some(Body { source: s, threads })
}
