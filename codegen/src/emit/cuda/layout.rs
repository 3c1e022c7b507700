//! Kernels that move or reduce elements: CONCATENATION, PAD, TRANSPOSE and MEAN, in
//! int8 and f32, one thread per output element. Each thread finds its source element(s)
//! from its output index with the literal shapes of kiln-runtime's params; MEAN sums
//! the reduced elements in the CPU's (row-major) order.

use super::float::clamp;
use super::{c_type, flit, Body, Ctx};
use crate::exec::kernel::Prepared;
use kiln_runtime::kernels::reference::concatenation::ConcatenationParams;
use kiln_runtime::kernels::reference::mean::{MeanParams, MeanQuant};
use kiln_runtime::kernels::reference::pad::PadParams;
use kiln_runtime::kernels::reference::transpose::TransposeParams;
use std::fmt::Write as _;

/// `{ k = r % extent; r /= extent; INDEX += k * stride; }` for each `(extent, stride)`,
/// innermost last in `dims` (emitted innermost first); extents of 1 add nothing.
fn decompose(s: &mut String, r: &str, index: &str, dims: &[(usize, usize)]) {
    for &(extent, stride) in dims.iter().rev() {
        if extent == 1 {
            continue;
        }
        let _ = writeln!(
            s,
            "  {{ const kiln_idx k = {r} % {extent}; {r} /= {extent}; {index} += k * {stride}; }}"
        );
    }
}

/// The kernel of a layout op, or `None` when `prepared` is not one (or its shapes do
/// not match the graph's, which validation rules out).
pub(super) fn kernel(cx: &Ctx, prepared: &Prepared) -> Option<Body> {
    match prepared {
        Prepared::ConcatenationI8(p, r) => {
            let lohi = format!("(signed char)kiln_clamp((int)v, {}, {})", r.min, r.max);
            concatenation(cx, p, "signed char", &lohi)
        }
        Prepared::ConcatenationF32(p, r) => concatenation(cx, p, "float", &clamp("v", r)),
        Prepared::PadI8(p, v) => Some(pad(cx, p, "signed char", &format!("(signed char){v}"))),
        Prepared::PadF32(p) => Some(pad(cx, p, "float", "0.0f")),
        Prepared::Transpose(p) => transpose(cx, p),
        Prepared::MeanI8(p, q) => Some(mean(cx, p, Some(q))),
        Prepared::MeanF32(p) => Some(mean(cx, p, None)),
        _ => None,
    }
}

/// CONCATENATION: output row `k` is row `k` of every input in turn; `finish` is the
/// fused activation's clamp of the element `v`.
fn concatenation(cx: &Ctx, p: &ConcatenationParams, ty: &str, finish: &str) -> Option<Body> {
    let row = p.axis_size * p.inner_size;
    let outer = p.outer_size;
    let copies: Vec<usize> = (0..cx.node.inputs.len())
        .map(|j| cx.graph.info(cx.node.inputs[j]).num_elements() / outer.max(1))
        .collect();
    if outer == 0 || row == 0 || copies.iter().sum::<usize>() != row {
        return None;
    }
    let threads = (outer * row) as u64;
    let mut s = cx.open(threads);
    let _ = write!(
        s,
        "  {ty}* y = {};\n  const kiln_idx k = t / {row}, w = t % {row};\n  {ty} v;\n",
        cx.output(ty)
    );
    let mut start = 0;
    for (j, &copy) in copies.iter().enumerate() {
        if copy == 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "  {}if (w < {}) v = {}[k * {copy} + (w - {start})];",
            if start == 0 { "" } else { "else " },
            start + copy,
            cx.input(j, ty)
        );
        start += copy;
    }
    let _ = writeln!(s, "  else v = ({ty})0;\n  y[t] = {finish};\n}}");
    Some(Body { source: s, threads })
}

/// PAD: the input element under each output position, or `value` in the padding.
fn pad(cx: &Ctx, p: &PadParams, ty: &str, value: &str) -> Body {
    let out_dims: Vec<usize> = (0..p.input.len())
        .map(|d| p.before[d] + p.input[d] + p.after[d])
        .collect();
    let threads = out_dims.iter().product::<usize>() as u64;
    let mut s = cx.open(threads);
    let _ = write!(
        s,
        "  const {ty}* x = {};\n  {ty}* y = {};\n  kiln_idx r = t, off = 0;\n  bool inside = true;\n",
        cx.input(0, ty),
        cx.output(ty)
    );
    let mut stride = 1;
    for d in (0..p.input.len()).rev() {
        let (extent, before, size) = (out_dims[d], p.before[d], p.input[d]);
        if extent > 1 || before > 0 {
            let _ = writeln!(
                s,
                "  {{ const kiln_idx c = r % {extent} - {before}; r /= {extent}; if (c < 0 || c >= {size}) inside = false; else off += c * {stride}; }}"
            );
        }
        stride *= size;
    }
    let _ = writeln!(s, "  y[t] = inside ? x[off] : {value};\n}}");
    Body { source: s, threads }
}

/// TRANSPOSE: output element `t` (row-major over the permuted extents) reads the input
/// at the sum of its coordinates times the permuted input strides.
fn transpose(cx: &Ctx, p: &TransposeParams) -> Option<Body> {
    let ty = c_type(cx.graph.info(cx.node.outputs[0]).dtype)?;
    let threads = p.len() as u64;
    let mut s = cx.open(threads);
    let _ = write!(
        s,
        "  const {ty}* x = {};\n  {ty}* y = {};\n  kiln_idx r = t, i = 0;\n",
        cx.input(0, ty),
        cx.output(ty)
    );
    let dims: Vec<(usize, usize)> = p.extents.iter().copied().zip(p.strides).collect();
    decompose(&mut s, "r", "i", &dims);
    s.push_str("  y[t] = x[i];\n}\n");
    Some(Body { source: s, threads })
}

/// MEAN over the reduced axes: each thread sums its kept position's reduced elements in
/// row-major order, then divides (f32) or requantizes (int8, `q`).
fn mean(cx: &Ctx, p: &MeanParams, q: Option<&MeanQuant>) -> Body {
    let dims = p.input.dims();
    let mut strides = vec![1; dims.len()];
    for d in (0..dims.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * dims[d + 1];
    }
    let split = |reduced: bool| -> Vec<(usize, usize)> {
        (0..dims.len())
            .filter(|&d| p.reduced[d] == reduced)
            .map(|d| (dims[d], strides[d]))
            .collect()
    };
    let (kept, folded) = (split(false), split(true));
    let threads = kept.iter().map(|d| d.0).product::<usize>() as u64;
    let folded_len: usize = folded.iter().map(|d| d.0).product();
    let ty = if q.is_some() { "signed char" } else { "float" };
    let mut s = cx.open(threads);
    let _ = write!(
        s,
        "  const {ty}* x = {};\n  {ty}* y = {};\n  kiln_idx r = t, base = 0;\n",
        cx.input(0, ty),
        cx.output(ty)
    );
    decompose(&mut s, "r", "base", &kept);
    let (init, step) = match q {
        Some(_) => ("int acc = 0;", "acc = kiln_wadd(acc, (int)x[off]);"),
        None => ("float acc = 0.0f;", "acc = acc + x[off];"),
    };
    let _ = writeln!(
        s,
        "  {init}\n  for (kiln_idx fi = 0; fi < {folded_len}; ++fi) {{\n  kiln_idx f = fi, off = base;"
    );
    decompose(&mut s, "f", "off", &folded);
    let _ = writeln!(s, "  {step}\n  }}");
    match q {
        Some(q) => {
            let _ = writeln!(
                s,
                "  const int shifted = (int)((long long)acc - (long long)({}) * {}ll);\n  y[t] = (signed char)kiln_clamp(kiln_wadd(kiln_mbqm(shifted, {}, {}), {}), -128, 127);\n}}",
                q.input_zero_point,
                q.num_elements,
                q.multiplier.multiplier,
                q.multiplier.shift,
                q.output_zero_point
            );
        }
        None => {
            let _ = writeln!(s, "  y[t] = acc / {};\n}}", flit(p.num_reduced as f32));
        }
    }
    Body { source: s, threads }
}
