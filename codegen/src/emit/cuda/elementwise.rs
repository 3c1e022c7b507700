//! Element-wise kernels, one thread per output element: the activations (RELU, RELU6,
//! CLIP, LEAKY_RELU, LOGISTIC, TANH), QUANTIZE / DEQUANTIZE / requantize, and the
//! broadcasting binary ops (ADD, SUB, MUL, DIV) in int8 and f32. The int8 arithmetic is
//! the prelude's port of kiln-runtime's (bit-exact); the f32 one is the CPU's expression.
//!
//! In-place plans (`Reuse::InPlace`) are safe: the planner only runs these in place on
//! an operand of the output's shape, so thread `t` reads element `t` before writing it.

use super::float::clamp;
use super::{flit, Body, Ctx};
use crate::exec::kernel::Prepared;
use kiln_runtime::kernels::reference::add::AddParams;
use kiln_runtime::quant::QuantizedMultiplier;
use kiln_runtime::shape::Broadcast;
use std::fmt::Write as _;

const I8: &str = "signed char";
const F32: &str = "float";

/// `multiplier, shift` of a quantized multiplier, as C arguments.
fn qm(m: &QuantizedMultiplier) -> String {
    format!("{}, {}", m.multiplier, m.shift)
}

/// The C expression of one element-wise op on `v` (an `int` for int8 inputs, a `float`
/// for f32 ones) and the input and output element types; `None` for other kernels.
fn unary_expr(prepared: &Prepared) -> Option<(String, &'static str, &'static str)> {
    let e = match prepared {
        Prepared::ReluI8(p) => (
            format!(
                "kiln_clamp(kiln_wadd(kiln_mbqm(v - ({}), {}), {}), {}, {})",
                p.input_zero_point,
                qm(&p.multiplier),
                p.output_zero_point,
                p.activation.min,
                p.activation.max
            ),
            I8,
            I8,
        ),
        Prepared::ReluF32 => ("v < 0.0f ? 0.0f : v".into(), F32, F32),
        Prepared::Relu6I8(p) => (
            format!(
                "v > {six} ? {six} : (v < {zero} ? {zero} : v)",
                six = p.six,
                zero = p.zero
            ),
            I8,
            I8,
        ),
        Prepared::Relu6F32 => ("v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v)".into(), F32, F32),
        Prepared::ClipI8(p) => (
            format!(
                "kiln_clamp(kiln_wadd(kiln_mbqm(kiln_wsub(v, {}), {}), {}), {}, {})",
                p.input_zero_point,
                qm(&p.multiplier),
                p.output_zero_point,
                p.range.min,
                p.range.max
            ),
            I8,
            I8,
        ),
        Prepared::ClipF32(r) => (clamp("v", r), F32, F32),
        Prepared::LeakyReluI8(p) => (
            format!(
                "kiln_leaky_relu_one(v, {}, {}, {}, {})",
                p.input_zero_point,
                p.output_zero_point,
                qm(&p.identity),
                qm(&p.alpha)
            ),
            I8,
            I8,
        ),
        Prepared::LeakyReluF32(alpha) => (format!("v > 0.0f ? v : v * {}", flit(*alpha)), F32, F32),
        Prepared::LogisticI8(p) | Prepared::TanhI8(p) => (
            format!(
                "kiln_sigmoid_i8(v, {}, {}, {}, {}, {})",
                p.input_zero_point,
                p.input_range_radius,
                p.input_multiplier,
                p.input_left_shift,
                i32::from(matches!(prepared, Prepared::TanhI8(_)))
            ),
            I8,
            I8,
        ),
        Prepared::LogisticF32 => ("kiln_logistic_f32(v)".into(), F32, F32),
        Prepared::TanhF32 => ("tanhf(v)".into(), F32, F32),
        Prepared::Quantize(p) => (
            format!(
                "kiln_clamp(kiln_sat_add(kiln_f2i_sat(roundf(v / {})), {}), -128, 127)",
                flit(p.scale),
                p.zero_point
            ),
            F32,
            I8,
        ),
        Prepared::Requantize(p) => (
            format!(
                "kiln_clamp(kiln_wadd(kiln_mbqm(v - ({}), {}), {}), -128, 127)",
                p.input_zero_point,
                qm(&p.multiplier),
                p.output_zero_point
            ),
            I8,
            I8,
        ),
        Prepared::Dequantize(p) => (
            format!(
                "(float)((double){} * (double)(v - ({})))",
                flit(p.scale),
                p.zero_point
            ),
            I8,
            F32,
        ),
        _ => return None,
    };
    Some(e)
}

/// The kernel of an element-wise op, or `None` when `prepared` is not one.
pub(super) fn unary(cx: &Ctx, prepared: &Prepared) -> Option<Body> {
    let (expr, in_ty, out_ty) = unary_expr(prepared)?;
    let threads = cx.out_len() as u64;
    let mut s = cx.open(threads);
    let value = if in_ty == I8 {
        "const int v = (int)x[t];"
    } else {
        "const float v = x[t];"
    };
    let _ = write!(
        s,
        "  const {in_ty}* x = {};\n  {out_ty}* y = {};\n  {value}\n  y[t] = ({out_ty})({expr});\n}}\n",
        cx.input(0, in_ty),
        cx.output(out_ty),
    );
    Some(Body { source: s, threads })
}

/// Opening lines of a broadcasting binary kernel over `plan`'s output: the operand
/// pointers `a`, `bb` (element type `ty`), `y`, and their element indices `i1`, `i2`.
pub(super) fn broadcast_prologue(cx: &Ctx, plan: &Broadcast, ty: &str) -> String {
    let mut s = cx.open(plan.output_len() as u64);
    let _ = write!(
        s,
        "  const {ty}* a = {};\n  const {ty}* bb = {};\n  {ty}* y = {};\n  kiln_idx r = t, i1 = 0, i2 = 0;\n",
        cx.input(0, ty),
        cx.input(1, ty),
        cx.output(ty)
    );
    for d in (0..plan.extents.len()).rev() {
        let e = plan.extents[d];
        if e == 1 {
            continue;
        }
        let _ = writeln!(
            s,
            "  {{ const kiln_idx k = r % {e}; r /= {e}; i1 += k * {}; i2 += k * {}; }}",
            plan.stride1[d], plan.stride2[d]
        );
    }
    s
}

/// The argument list of `kiln_add_one` / `kiln_sub_one` after the two values, from
/// an `AddParams` or a `SubParams` (separate types with the same fields).
macro_rules! add_sub_args {
    ($p:expr) => {{
        let p = $p;
        format!(
            "{}, {}, {}, {}, {}, {}, {}, {}, {}",
            p.input1_offset,
            p.input2_offset,
            p.output_offset,
            p.left_shift,
            qm(&p.input1_multiplier),
            qm(&p.input2_multiplier),
            qm(&p.output_multiplier),
            p.activation.min,
            p.activation.max
        )
    }};
}

/// The argument list of `kiln_add_one` after the two values.
pub(super) fn add_args(p: &AddParams) -> String {
    add_sub_args!(p)
}

/// The kernel of a broadcasting binary op, or `None` when `prepared` is not one.
pub(super) fn binary(cx: &Ctx, prepared: &Prepared) -> Option<Body> {
    let (plan, ty, body) = match prepared {
        Prepared::AddI8(p, plan) => (
            plan,
            I8,
            format!(
                "  y[t] = (signed char)kiln_add_one((int)a[i1], (int)bb[i2], {});\n",
                add_args(p)
            ),
        ),
        Prepared::MulI8(p, plan) => (
            plan,
            I8,
            format!(
                "  const int v = ({} + (int)a[i1]) * ({} + (int)bb[i2]);\n  y[t] = (signed char)kiln_clamp(kiln_wadd(kiln_mbqm(v, {}), {}), {}, {});\n",
                p.input1_offset,
                p.input2_offset,
                qm(&p.output_multiplier),
                p.output_offset,
                p.activation.min,
                p.activation.max
            ),
        ),
        Prepared::SubI8(p, plan) => (
            plan,
            I8,
            format!(
                "  y[t] = (signed char)kiln_sub_one((int)a[i1], (int)bb[i2], {});\n",
                add_sub_args!(p)
            ),
        ),
        Prepared::DivI8(p, plan) => (
            plan,
            I8,
            format!(
                "  y[t] = (signed char)kiln_clamp(kiln_div_one((int)a[i1], (int)bb[i2], {}, {}, {}, {}), {}, {});\n",
                p.input1_offset,
                p.input2_offset,
                p.output_offset,
                qm(&p.output_multiplier),
                p.activation.min,
                p.activation.max
            ),
        ),
        Prepared::AddF32(r, plan)
        | Prepared::SubF32(r, plan)
        | Prepared::MulF32(r, plan)
        | Prepared::DivF32(r, plan) => {
            let op = match prepared {
                Prepared::AddF32(..) => '+',
                Prepared::SubF32(..) => '-',
                Prepared::MulF32(..) => '*',
                _ => '/',
            };
            (
                plan,
                F32,
                format!("  y[t] = {};\n", clamp(&format!("a[i1] {op} bb[i2]"), r)),
            )
        }
        _ => return None,
    };
    let mut s = broadcast_prologue(cx, plan, ty);
    s.push_str(&body);
    s.push_str("}\n");
    Some(Body {
        source: s,
        threads: plan.output_len() as u64,
    })
}
