//! The int8 convolutions, depthwise convolutions, dense layers, pools and softmax, and
//! the byte copy: one thread per output element (per row for softmax).
//!
//! Work the CPU kernels do per multiply is done once here, at compile time, where it is
//! exact: every sum is taken modulo 2^32 (the CPU's sums never overflow, so they equal
//! their value modulo 2^32), so regrouping it leaves every bit of the result unchanged.
//! - **Input offset.** A conv adds `f * (x + io)` per tap; the kernels add `f * x` and
//!   start from `io * (sum of the filter)`, folded into the bias. The taps a border
//!   output skips (they fall in the padding) are then taken out again: their filter sums
//!   (from a table, or from the filter itself below 4 input channels) are subtracted
//!   once, after the loop. Dense layers fold `io * sum f + depth * io * wo` the same way.
//! - **Epilogue constants.** Bias, multiplier and shift of an output channel sit next to
//!   each other in a table after the weights, read with one 16-byte load. (A
//!   `__constant__` array would serialise: neighbouring threads read different channels.)
//! - **Filter layout.** Neighbouring threads compute neighbouring output channels, so
//!   constant filters and dense weights are stored interleaved by output channel
//!   (`Ctx::interleaved_operand`): a warp's filter loads are one contiguous run.
//!
//! A filter or bias that is not a constant (an activation) is summed at run time instead,
//! as the CPU does.

use super::{act_range, elementwise, open_nhwc, pointers, pool_window, window_taps, Body, Ctx};
use crate::exec::kernel::{Multipliers, Owned, Prepared};
use crate::ir::DType;
use kiln_runtime::activation::ActivationRange;
use kiln_runtime::kernels::reference::conv_2d::ConvQuant;
use kiln_runtime::padding::Window2d;
use std::fmt::Write as _;

const I8: &str = "signed char";

/// The kernel of an int8 convolution, depthwise convolution, dense layer, pool,
/// softmax or copy, or `None` when `prepared` is none of them.
pub(super) fn kernel(cx: &Ctx, prepared: &Prepared) -> Option<Body> {
    match prepared {
        Prepared::Conv2dI8(..) | Prepared::Conv2dAddI8(..) => Some(conv(cx, prepared)),
        Prepared::DepthwiseI8(..) => Some(depthwise(cx, prepared)),
        Prepared::FullyConnectedI8(..) => Some(fully_connected(cx, prepared)),
        Prepared::AveragePoolI8(..) | Prepared::MaxPoolI8(..) => Some(pool(cx, prepared)),
        Prepared::SoftmaxI8(..) => softmax(cx, prepared),
        Prepared::Copy => Some(copy(cx)),
        _ => None,
    }
}

/// The int8 data of constant operand `k`, or `None` for an activation.
fn const_i8(cx: &Ctx, k: usize) -> Option<Vec<i32>> {
    let t = cx.graph.tensor(cx.node.inputs[k]);
    (t.info.dtype == DType::I8)
        .then_some(t.data.as_ref())
        .flatten()
        .map(|d| d.iter().map(|&b| i32::from(b as i8)).collect())
}

/// The per-channel bias every output channel starts from at compile time (the constant
/// bias, or zeros), and the C expression of a bias only known at run time.
pub(super) fn bias(cx: &Ctx, channels: usize) -> (Vec<i32>, Option<String>) {
    if !cx.has_bias(DType::I32) {
        return (vec![0; channels], None);
    }
    let t = cx.graph.tensor(cx.node.inputs[2]);
    match &t.data {
        Some(d) if d.len() == channels * 4 => (
            d.chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            None,
        ),
        _ => (
            vec![0; channels],
            Some(format!("{}[c]", cx.input(2, "int"))),
        ),
    }
}

/// Wrapping sums of consecutive runs of `len` values.
fn run_sums(values: &[i32], len: usize) -> Vec<i32> {
    values
        .chunks(len.max(1))
        .map(|r| r.iter().fold(0i32, |a, &v| a.wrapping_add(v)))
        .collect()
}

/// The C lines and expressions of a conv-like epilogue: `load` reads channel `c`'s
/// entry (`bias`, multiplier `m`, shift `s`) from a table after the weights.
pub(super) struct Epilogue {
    load: String,
    bias: String,
    /// The requantized, offset and clamped value of `acc` (an `int`).
    value: String,
}

/// The epilogue table of `bias` (one value per output channel, folded terms included)
/// and the multipliers: per channel, `{bias, multiplier, shift, 0}` as one `int4`.
/// Per-tensor multipliers stay literals, so the compiler specialises the shift. The
/// value is requantized to `output_offset` and clamped to `activation`.
pub(super) fn epilogue(
    cx: &Ctx,
    multipliers: &Multipliers,
    bias: &[i32],
    output_offset: i32,
    activation: &ActivationRange,
) -> Epilogue {
    let per_channel: Option<Vec<(i32, i32)>> = match multipliers {
        Multipliers::PerTensor(_) => None,
        m => {
            let b = m.borrow();
            Some(
                (0..bias.len())
                    .map(|c| {
                        let q = b.get(c);
                        (q.multiplier, q.shift)
                    })
                    .collect(),
            )
        }
    };
    let mut entries = Vec::with_capacity(bias.len() * 4);
    for (c, &b) in bias.iter().enumerate() {
        let (m, s) = per_channel.as_ref().map_or((0, 0), |t| t[c]);
        entries.extend([b, m, s, 0]);
    }
    let offset = cx.table(&entries);
    let (m, s) = match multipliers {
        Multipliers::PerTensor(q) => (q.multiplier.to_string(), q.shift.to_string()),
        _ => ("e.y".to_string(), "e.z".to_string()),
    };
    let (lo, hi) = act_range(activation);
    Epilogue {
        load: format!("  const int4 e = ((const int4*)(W + {offset}ull))[c];\n"),
        bias: "e.x".into(),
        value: format!(
            "kiln_clamp(kiln_wadd(kiln_mbqm(acc, {m}, {s}), {output_offset}), {lo}, {hi})"
        ),
    }
}

/// [`epilogue`] of a convolution's quantization.
pub(super) fn conv_epilogue(cx: &Ctx, q: &Owned<ConvQuant<'static>>, bias: &[i32]) -> Epilogue {
    let quant = &q.quant;
    epilogue(
        cx,
        &q.multipliers,
        bias,
        quant.output_offset,
        &quant.activation,
    )
}

/// Whether some output's window reaches into the padding (or past the input's end).
fn taps_can_fall_outside(w: &Window2d) -> bool {
    (0..2).any(|d| {
        let last =
            (w.output[d].max(1) - 1) * w.stride[d] + (w.filter[d].max(1) - 1) * w.dilation[d];
        w.pad[d] > 0 || last >= w.input[d] + w.pad[d]
    })
}

/// The loops over output `(oy, ox)`'s taps with `body` (lines indented by six spaces)
/// inside; with `skip`, a tap outside the input runs that line (adding its filter sum
/// to `skipped`) instead of being passed over.
fn taps(w: &Window2d, body: &str, skip: Option<&str>) -> String {
    let Some(skip) = skip else {
        return window_taps(w, body);
    };
    let ([ih, iw], [fh, fw]) = (w.input, w.filter);
    format!(
        "  for (int fy = 0; fy < {fh}; ++fy) {{\n    const int iy = oy * {} - {} + fy * {};\n    const bool row_in = iy >= 0 && iy < {ih};\n    for (int fx = 0; fx < {fw}; ++fx) {{\n      const int ix = ox * {} - {} + fx * {};\n      if (!row_in || ix < 0 || ix >= {iw}) {{ {skip} continue; }}\n{body}    }}\n  }}\n",
        w.stride[0], w.pad[0], w.dilation[0], w.stride[1], w.pad[1], w.dilation[1]
    )
}

/// CONV_2D (grouped, dilated, optionally with a fused residual ADD).
fn conv(cx: &Ctx, prepared: &Prepared) -> Body {
    let (Prepared::Conv2dI8(p, q) | Prepared::Conv2dAddI8(p, q, _)) = prepared else {
        unreachable!("conv() is only called on convolutions")
    };
    let w = &p.window;
    let [ih, iw] = w.input;
    let [fh, fw] = w.filter;
    let [oh, ow] = w.output;
    let (ic, oc, fin) = (p.input_depth, p.output_depth, p.filter_input_depth);
    let groups = ic / fin;
    let fpg = oc / groups;
    let threads = (p.batches * oh * ow * oc) as u64;
    let io = q.quant.input_offset;
    let dp4a = fin % 4 == 0 && ic % 4 == 0;
    let filter = const_i8(cx, 1).filter(|f| f.len() == oc * fh * fw * fin);
    let (mut bias, runtime_bias) = bias(cx, oc);
    // The input offset is folded where the filter is known (and matters).
    let fold = io != 0 && filter.is_some();
    let tap = format!("(fy * {fw} + fx)");
    // Filter value `k` of the thread's tap (with `__dp4a`: word `k`, four values): from
    // the interleaved layout of a constant filter, else from the OHWI operand.
    let interleaved =
        cx.interleaved_operand(1, DType::I8, oc, fh * fw * fin, if dp4a { 4 } else { 1 });
    let filter_value = |k: &str| match (interleaved, dp4a) {
        (Some(off), true) => format!(
            "((const int*)(W + {off}ull))[({tap} * {} + {k}) * {oc} + c]",
            fin / 4
        ),
        (Some(off), false) => {
            format!("(int)((const signed char*)(W + {off}ull))[({tap} * {fin} + {k}) * {oc} + c]")
        }
        (None, true) => format!(
            "*(const int*)(f + ((long long)c * {} + {tap}) * {fin} + 4 * {k})",
            fh * fw
        ),
        (None, false) => format!("(int)f[((long long)c * {} + {tap}) * {fin} + {k}]", fh * fw),
    };
    let mut skip = None;
    if let (true, Some(f)) = (fold, &filter) {
        for (b, sum) in bias.iter_mut().zip(run_sums(f, fh * fw * fin)) {
            *b = b.wrapping_add(io.wrapping_mul(sum));
        }
        if taps_can_fall_outside(w) {
            skip = Some(if fin < 4 {
                // A tap's sum costs no more than its table entry would: read the filter.
                format!(
                    "for (int k = 0; k < {fin}; ++k) skipped = kiln_wadd(skipped, {});",
                    filter_value("k")
                )
            } else {
                // Tap-major like the filter copy: neighbouring channels, neighbouring words.
                let sums = run_sums(f, fin);
                let taps = fh * fw;
                let by_tap: Vec<i32> = (0..taps * oc)
                    .map(|i| sums[(i % oc) * taps + i / oc])
                    .collect();
                let offset = cx.table(&by_tap);
                format!("skipped = kiln_wadd(skipped, ((const int*)(W + {offset}ull))[{tap} * {oc} + c]);")
            });
        }
    }
    let e = conv_epilogue(cx, q, &bias);
    let mut s = open_nhwc(cx, threads, I8, oc, ow, oh);
    let _ = write!(
        s,
        "  const int group = c / {fpg};\n  const signed char* xb = x + (long long)b * {} + group * {fin};\n  int acc = 0;\n",
        ih * iw * ic
    );
    let runtime_fsum = dp4a && !fold && io != 0;
    if runtime_fsum {
        s.push_str("  int fsum = 0;\n");
    }
    if skip.is_some() {
        s.push_str("  int skipped = 0;\n");
    }
    let mut body = format!("      const signed char* xp = xb + (iy * {iw} + ix) * {ic};\n");
    if dp4a {
        let fsum = if runtime_fsum {
            "\n        fsum = __dp4a(fv, 0x01010101, fsum);"
        } else {
            ""
        };
        let _ = write!(
            body,
            "      for (int k = 0; k < {}; ++k) {{\n        const int xv = *(const int*)(xp + 4 * k);\n        const int fv = {};\n        acc = __dp4a(xv, fv, acc);{fsum}\n      }}\n",
            fin / 4,
            filter_value("k")
        );
    } else {
        let x = if fold || io == 0 {
            "(int)xp[k]".to_string()
        } else {
            format!("((int)xp[k] + ({io}))")
        };
        let _ = writeln!(
            body,
            "      for (int k = 0; k < {fin}; ++k) acc = kiln_wadd(acc, {} * {x});",
            filter_value("k")
        );
    }
    s.push_str(&taps(w, &body, skip.as_deref()));
    if runtime_fsum {
        let _ = writeln!(s, "  acc = kiln_wadd(acc, kiln_wmul(fsum, {io}));");
    }
    if skip.is_some() {
        let _ = writeln!(s, "  acc = kiln_wsub(acc, kiln_wmul(skipped, {io}));");
    }
    let v = finish(&mut s, &e, runtime_bias.as_deref());
    let _ = writeln!(s, "  int v = {v};");
    if let Prepared::Conv2dAddI8(_, _, r) = prepared {
        let _ = writeln!(s, "  const int skip = (int)({})[t];", cx.input(3, I8));
        let (a, bb) = if r.conv_is_first {
            ("v", "skip")
        } else {
            ("skip", "v")
        };
        let _ = writeln!(
            s,
            "  v = kiln_add_one({a}, {bb}, {});",
            elementwise::add_args(&r.add)
        );
    }
    s.push_str("  y[t] = (signed char)v;\n}\n");
    Body { source: s, threads }
}

/// Loads the epilogue entry and adds the bias (the table's, and one known only at run
/// time); returns the C expression of the requantized, clamped output value.
pub(super) fn finish(s: &mut String, e: &Epilogue, runtime_bias: Option<&str>) -> String {
    s.push_str(&e.load);
    let _ = writeln!(s, "  acc = kiln_wadd(acc, {});", e.bias);
    if let Some(b) = runtime_bias {
        let _ = writeln!(s, "  acc = kiln_wadd(acc, {b});");
    }
    e.value.clone()
}

/// Closes a kernel by storing the int8 value `v` at `y[t]`.
pub(super) fn store(mut s: String, v: &str, threads: u64) -> Body {
    let _ = writeln!(s, "  y[t] = (signed char){v};\n}}");
    Body { source: s, threads }
}

/// DEPTHWISE_CONV_2D (any depth multiplier).
fn depthwise(cx: &Ctx, prepared: &Prepared) -> Body {
    let Prepared::DepthwiseI8(p, q) = prepared else {
        unreachable!("depthwise() is only called on depthwise convolutions")
    };
    let w = &p.window;
    let [ih, iw] = w.input;
    let [fh, fw] = w.filter;
    let [oh, ow] = w.output;
    let ic = p.input_depth;
    let dm = p.depth_multiplier;
    let oc = ic * dm;
    let threads = (p.batches * oh * ow * oc) as u64;
    let io = q.quant.input_offset;
    let filter = const_i8(cx, 1).filter(|f| f.len() == fh * fw * oc);
    let (mut bias, runtime_bias) = bias(cx, oc);
    let fold = io != 0 && filter.is_some();
    let mut skip = None;
    if let (true, Some(f)) = (fold, &filter) {
        // Filter layout [1, fh, fw, oc]: channel c's taps are every oc-th value.
        for (c, b) in bias.iter_mut().enumerate() {
            let sum = f
                .iter()
                .skip(c)
                .step_by(oc)
                .fold(0i32, |a, &v| a.wrapping_add(v));
            *b = b.wrapping_add(io.wrapping_mul(sum));
        }
        if taps_can_fall_outside(w) {
            skip = Some(format!(
                "skipped = kiln_wadd(skipped, (int)f[(fy * {fw} + fx) * {oc} + c]);"
            ));
        }
    }
    let e = conv_epilogue(cx, q, &bias);
    let mut s = open_nhwc(cx, threads, I8, oc, ow, oh);
    let _ = write!(
        s,
        "  const int ic = c / {dm};\n  const signed char* xb = x + (long long)b * {} + ic;\n  int acc = 0;\n",
        ih * iw * ic
    );
    if skip.is_some() {
        s.push_str("  int skipped = 0;\n");
    }
    let tap = format!("(int)xb[(iy * {iw} + ix) * {ic}]");
    let x = if fold || io == 0 {
        tap
    } else {
        format!("({tap} + ({io}))")
    };
    let body = format!("      acc = kiln_wadd(acc, (int)f[(fy * {fw} + fx) * {oc} + c] * {x});\n");
    s.push_str(&taps(w, &body, skip.as_deref()));
    if skip.is_some() {
        let _ = writeln!(s, "  acc = kiln_wsub(acc, kiln_wmul(skipped, {io}));");
    }
    let v = finish(&mut s, &e, runtime_bias.as_deref());
    store(s, &v, threads)
}

/// FULLY_CONNECTED: `sum (f + wo) * (x + io)` expands to `f.x`, plus `wo * sum x`, plus
/// `io * sum f` and `depth * io * wo`. The last two are per-channel constants (bias);
/// `wo * sum x` is only computed where the weights have an offset (never for a validated
/// graph, whose int8 weights are symmetric; kept so the kernel computes what the CPU's
/// does).
fn fully_connected(cx: &Ctx, prepared: &Prepared) -> Body {
    let Prepared::FullyConnectedI8(p, q) = prepared else {
        unreachable!("fully_connected() is only called on dense layers")
    };
    let (d, od) = (p.accum_depth, p.output_depth);
    let threads = (p.batches * od) as u64;
    let (io, wo) = (q.quant.input_offset, q.quant.weights_offset);
    let filter = const_i8(cx, 1).filter(|f| f.len() == od * d);
    let (mut bias, runtime_bias) = bias(cx, od);
    let fold = filter.is_some();
    if let Some(f) = &filter {
        let constant = (d as i32).wrapping_mul(io).wrapping_mul(wo);
        for (b, sum) in bias.iter_mut().zip(run_sums(f, d)) {
            *b = b.wrapping_add(io.wrapping_mul(sum)).wrapping_add(constant);
        }
    }
    let e = epilogue(
        cx,
        &q.multipliers,
        &bias,
        q.quant.output_offset,
        &q.quant.activation,
    );
    let words = d % 4 == 0;
    // Weight `k` of the thread's row: from the interleaved copy of constant weights (in
    // words of 4 with `__dp4a`), else from the `[od, d]` operand.
    let interleaved = cx.interleaved_operand(1, DType::I8, od, d, if words { 4 } else { 1 });
    let weight = |k: &str| match (interleaved, words) {
        (Some(off), true) => format!("((const int*)(W + {off}ull))[{k} * {od} + c]"),
        (Some(off), false) => format!("(int)((const signed char*)(W + {off}ull))[{k} * {od} + c]"),
        (None, true) => format!("*(const int*)(fp + 4 * {k})"),
        (None, false) => format!("(int)fp[{k}]"),
    };
    let mut s = cx.open(threads);
    s.push_str(&pointers(cx, I8));
    let _ = write!(
        s,
        "  const int c = (int)(t % {od}); const kiln_idx b = t / {od};\n  const signed char* xp = x + b * {d};\n  const signed char* fp = f + (long long)c * {d};\n  int acc = 0;\n"
    );
    if words {
        let (fsum, xsum) = (!fold && io != 0, wo != 0);
        let _ = write!(
            s,
            "{}{}  for (int k = 0; k < {}; ++k) {{\n    const int xv = *(const int*)(xp + 4 * k);\n    const int fv = {};\n    acc = __dp4a(xv, fv, acc);\n{}{}  }}\n",
            if fsum { "  int fsum = 0;\n" } else { "" },
            if xsum { "  int xsum = 0;\n" } else { "" },
            d / 4,
            weight("k"),
            if fsum {
                "    fsum = __dp4a(fv, 0x01010101, fsum);\n"
            } else {
                ""
            },
            if xsum {
                "    xsum = __dp4a(xv, 0x01010101, xsum);\n"
            } else {
                ""
            },
        );
        if fsum {
            let _ = writeln!(s, "  acc = kiln_wadd(acc, kiln_wmul(fsum, {io}));");
            let _ = writeln!(
                s,
                "  acc = kiln_wadd(acc, kiln_wmul({d}, kiln_wmul({io}, {wo})));"
            );
        }
        if xsum {
            let _ = writeln!(s, "  acc = kiln_wadd(acc, kiln_wmul(xsum, {wo}));");
        }
    } else {
        let x = if fold {
            "(int)xp[k]".to_string()
        } else {
            format!("((int)xp[k] + ({io}))")
        };
        let _ = writeln!(
            s,
            "  for (int k = 0; k < {d}; ++k) acc = kiln_wadd(acc, ({} + ({wo})) * {x});",
            weight("k")
        );
    }
    let v = finish(&mut s, &e, runtime_bias.as_deref());
    store(s, &v, threads)
}

/// AVERAGE_POOL_2D and MAX_POOL_2D over the in-bounds part of each window.
fn pool(cx: &Ctx, prepared: &Prepared) -> Body {
    let (Prepared::AveragePoolI8(p, r) | Prepared::MaxPoolI8(p, r)) = prepared else {
        unreachable!("pool() is only called on pools")
    };
    let avg = matches!(prepared, Prepared::AveragePoolI8(..));
    let [oh, ow] = p.window.output;
    let iw = p.window.input[1];
    let c = p.depth;
    let threads = (p.batches * oh * ow * c) as u64;
    let mut s = cx.open(threads);
    s.push_str(&pool_window(cx, p, I8));
    let (lo, hi) = act_range(r);
    if avg {
        let _ = write!(
            s,
            "  int acc = 0, count = 0;\n  for (int iy = ys; iy < ye; ++iy)\n    for (int ix = xs; ix < xe; ++ix) {{ acc = kiln_wadd(acc, (int)xb[(iy * {iw} + ix) * {c}]); ++count; }}\n  const int half = count / 2;\n  const int avg = count == 0 ? 0 : (acc > 0 ? (acc + half) / count : (acc - half) / count);\n  y[t] = (signed char)kiln_clamp(avg, {lo}, {hi});\n}}\n"
        );
    } else {
        let _ = write!(
            s,
            "  int m = -128;\n  for (int iy = ys; iy < ye; ++iy)\n    for (int ix = xs; ix < xe; ++ix) {{ const int v = (int)xb[(iy * {iw} + ix) * {c}]; m = v > m ? v : m; }}\n  y[t] = (signed char)kiln_clamp(m, {lo}, {hi});\n}}\n"
        );
    }
    Body { source: s, threads }
}

/// SOFTMAX, one thread per row; `None` when the output is not a whole number of rows.
fn softmax(cx: &Ctx, prepared: &Prepared) -> Option<Body> {
    let Prepared::SoftmaxI8(p, depth) = prepared else {
        return None;
    };
    let depth = *depth;
    let (mut s, threads) = cx.open_rows(depth)?;
    let _ = write!(
        s,
        "  const signed char* x = {} + t * {depth};\n  signed char* y = {} + t * {depth};\n  int mx = -128;\n  for (int k = 0; k < {depth}; ++k) mx = (int)x[k] > mx ? (int)x[k] : mx;\n  int sum = 0;\n  for (int k = 0; k < {depth}; ++k) {{\n    const int diff = (int)x[k] - mx;\n    if (diff >= {dmin}) sum = kiln_wadd(sum, kiln_rescale(kiln_exp_on_negative_values(kiln_mbqm_greater(diff, {mul}, {ls}), 5), 0, 12));\n  }}\n  int bits = 0;\n  const int scale = kiln_get_reciprocal(sum, 12, &bits);\n  const int exponent = bits + 31 - 8;\n  for (int k = 0; k < {depth}; ++k) {{\n    const int diff = (int)x[k] - mx;\n    if (diff >= {dmin}) {{\n      const int e = kiln_exp_on_negative_values(kiln_mbqm_greater(diff, {mul}, {ls}), 5);\n      y[k] = (signed char)kiln_clamp(kiln_rdbp(kiln_srdhm(scale, e), exponent) - 128, -128, 127);\n    }} else {{\n      y[k] = (signed char)-128;\n    }}\n  }}\n}}\n",
        cx.input(0, I8),
        cx.output(I8),
        dmin = p.diff_min,
        mul = p.input_multiplier,
        ls = p.input_left_shift,
    );
    Some(Body { source: s, threads })
}

/// A byte copy (RESHAPE and friends that the plan could not alias).
fn copy(cx: &Ctx) -> Body {
    let bytes = cx.graph.info(cx.node.outputs[0]).byte_size();
    let threads = bytes as u64;
    let mut s = cx.open(threads);
    let _ = writeln!(
        s,
        "  {}[t] = {}[t];\n}}",
        cx.output("unsigned char"),
        cx.input(0, "unsigned char")
    );
    Body { source: s, threads }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(input: usize, filter: usize, stride: usize, pad: usize, output: usize) -> Window2d {
        Window2d {
            input: [input; 2],
            filter: [filter; 2],
            stride: [stride; 2],
            dilation: [1; 2],
            pad: [pad; 2],
            output: [output; 2],
        }
    }

    #[test]
    fn taps_fall_outside_only_with_padding_or_a_short_input() {
        // VALID 3x3 on 8x8 -> 6x6: every tap inside.
        assert!(!taps_can_fall_outside(&window(8, 3, 1, 0, 6)));
        // SAME 3x3: padding of 1.
        assert!(taps_can_fall_outside(&window(8, 3, 1, 1, 8)));
        // SAME with stride 2 on an even input: no leading pad, but the last window ends
        // past the input.
        assert!(taps_can_fall_outside(&window(8, 2, 2, 0, 5)));
        assert!(!taps_can_fall_outside(&window(8, 2, 2, 0, 4)));
    }

    #[test]
    fn run_sums_wrap() {
        assert_eq!(run_sums(&[1, 2, 3, 4, 5, 6], 3), vec![6, 15]);
        assert_eq!(run_sums(&[i32::MAX, 1], 2), vec![i32::MIN]);
    }
}
