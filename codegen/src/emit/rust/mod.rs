//! The Rust emitter: a planned graph becomes a `no_std` module with the model's consts,
//! its weights (a separate blob, pulled in with `include_bytes!`) and one `run` function
//! that calls kiln-runtime's kernels in plan order with constant parameters.
//!
//! The module body can be the whole of a generated crate's `lib.rs` (see
//! [`write_crate`]) or be `include!`d from a firmware's `OUT_DIR` (see
//! [`crate::Builder`]).

mod in_place;
mod literal;
mod ops;
pub mod probe;

use super::{comment_text, toml_text};
use crate::compile::Target;
use crate::exec::kernel::Prepared;
use crate::exec::{kernel::Kernel, ExecError};
use crate::ir::{DType, Graph, TensorId};
use crate::plan::{dsp, Location, Plan, Reuse, Scratch};
use std::fmt::Write as _;
use std::path::Path;

/// Alignment of every constant tensor inside the weights blob, in bytes.
pub const WEIGHT_ALIGNMENT: usize = 16;

/// Generated source and data of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct RustModel {
    /// The module body: consts, the weights static, the arena type and `run`.
    pub source: String,
    /// The weights blob the source includes (constant tensors, aligned, little-endian).
    pub weights: Vec<u8>,
}

/// Why a graph could not be emitted.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// A node's kernel parameters cannot be derived.
    #[error(transparent)]
    Prepare(#[from] ExecError),
    /// The graph has a shape the generated API cannot express.
    #[error("tensor {index} '{name}': {message}")]
    Tensor {
        /// Tensor index.
        index: usize,
        /// Tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// How one graph input or output appears in the generated API.
struct Port {
    /// Argument name in `run`.
    arg: String,
    /// Prefix of its consts (`INPUT`, `OUTPUT_1`, ...).
    konst: String,
    id: TensorId,
}

fn ports(ids: &[TensorId], kind: &str) -> Vec<Port> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            let single = ids.len() == 1;
            Port {
                arg: if single {
                    kind.to_string()
                } else {
                    format!("{kind}_{i}")
                },
                konst: if single {
                    kind.to_uppercase()
                } else {
                    format!("{}_{i}", kind.to_uppercase())
                },
                id,
            }
        })
        .collect()
}

fn rust_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::I8 => "i8",
        DType::I32 => "i32",
        DType::I64 => "i64",
    }
}

/// The start of `run` in profiling builds: the declaration of the hook called after each
/// layer that runs code (aliases and nodes computed inside another node call none) with
/// the node's index in the planned graph. A crate that includes the generated module and
/// builds with `--cfg kiln_profile` defines it, e.g. to read a timer:
/// `#[no_mangle] fn kiln_profile_layer(node: usize) { ... }`. Without that cfg the hook
/// and its calls are compiled out: the code is exactly that of a normal build.
const PROFILE_HOOK: &str = "    #[cfg(kiln_profile)]
    unsafe extern \"Rust\" {
        /// Called after each layer with its node index (`--cfg kiln_profile` only).
        fn kiln_profile_layer(node: usize);
    }
";

/// Emits the module body for `graph` placed by `plan`. `weights_file` is the file name
/// (next to the generated source) the weights blob will be written to. `target` picks
/// the kernels: the DSP variants (`kiln_runtime::kernels::dsp`) where it has the DSP
/// extension and the op's shape suits them, the reference kernels elsewhere.
pub fn emit(
    graph: &Graph,
    plan: &Plan,
    source_model: &str,
    weights_file: &str,
    target: Target,
) -> Result<RustModel, EmitError> {
    let kernel_family = if target.has_dsp() {
        ops::Kernels::Dsp
    } else {
        ops::Kernels::Reference
    };
    let kernels = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            // On DSP targets the convs read their prepared channels from flash.
            crate::exec::prepare(graph, i, n).map(|k| match kernel_family {
                ops::Kernels::Dsp => Kernel(dsp::with_flash_channels(graph, n, k.0)),
                ops::Kernels::Reference => k,
            })
        })
        .collect::<Result<Vec<Kernel>, _>>()?;
    let (weights, weight_offsets) = super::weights_blob(graph, WEIGHT_ALIGNMENT);
    let inputs = ports(&graph.inputs, "input");
    let outputs = ports(&graph.outputs, "output");
    for p in inputs.iter().chain(&outputs) {
        let t = graph.tensor(p.id);
        if t.info.dtype == DType::I64 {
            return Err(EmitError::Tensor {
                index: p.id.0,
                name: t.name.clone(),
                message: "int64 graph inputs and outputs are not supported".into(),
            });
        }
    }

    let mut s = String::new();
    header(
        &mut s,
        graph,
        plan,
        source_model,
        weights.len(),
        weights_file,
        &inputs,
        &outputs,
    );

    // The run function.
    let args: Vec<String> = inputs
        .iter()
        .map(|p| {
            format!(
                "{}: &[{}; {}_LEN]",
                p.arg,
                rust_type(graph.info(p.id).dtype),
                p.konst
            )
        })
        .chain(outputs.iter().map(|p| {
            format!(
                "{}: &mut [{}; {}_LEN]",
                p.arg,
                rust_type(graph.info(p.id).dtype),
                p.konst
            )
        }))
        .collect();
    writeln!(
        s,
        "/// Runs the model once: reads the inputs, writes the outputs, uses `arena` as scratch."
    )
    .unwrap();
    writeln!(s, "/// Allocates nothing and cannot fail: every shape was checked when this code was generated.").unwrap();
    // Scratch of the DSP kernels (im2col columns, requantization tables, staged rows):
    // each node's range of the arena the plan reserved for its step, or a stack array
    // for that one call where the plan holds none (a plan made without `dsp_scratch`).
    let scratch_words: Vec<usize> = (0..graph.nodes.len())
        .map(|v| {
            let prepared = &kernels[v].0;
            match plan.reuse[v] {
                Reuse::BandBlock { first } if kernel_family == ops::Kernels::Dsp => {
                    dsp::band_block_words(&kernels[first.0].0, prepared).unwrap_or(0)
                }
                reuse if in_place::is_conv(prepared, reuse) => match kernel_family {
                    ops::Kernels::Dsp => dsp::in_place_conv_words(prepared).unwrap_or(0),
                    ops::Kernels::Reference => 0,
                },
                Reuse::Alias | Reuse::Band { .. } | Reuse::BandBlock { .. } => 0,
                _ => ops::scratch_words(prepared, kernel_family),
            }
        })
        .collect();
    let scratch = plan
        .order
        .iter()
        .map(|n| scratch_words[n.0])
        .max()
        .unwrap_or(0);
    writeln!(
        s,
        "/// Largest kernel scratch of one layer in bytes (the DSP kernels' im2col columns and\n/// requantization tables), planned inside the arena: [`ARENA_BYTES`] includes it."
    )
    .unwrap();
    writeln!(s, "pub const SCRATCH_BYTES: usize = {};", 4 * scratch).unwrap();
    let tables: usize = (0..graph.nodes.len())
        .filter(|&v| plan.reuse[v] != Reuse::Alias)
        .map(|v| ops::table_bytes(&kernels[v].0))
        .sum();
    writeln!(
        s,
        "/// Bytes of per-channel requantization tables (multiplier and shift per output\n/// channel) in flash: model data besides [`WEIGHT_BYTES`], not runtime code."
    )
    .unwrap();
    writeln!(s, "pub const PARAMETER_TABLE_BYTES: usize = {tables};\n").unwrap();
    writeln!(
        s,
        "#[allow(unused_variables, unused_unsafe, unexpected_cfgs, clippy::all)]"
    )
    .unwrap();
    writeln!(s, "pub fn run(arena: &mut Arena, {}) {{", args.join(", ")).unwrap();
    // The profiling hook: compiled out unless the including crate sets `kiln_profile`.
    s.push_str(PROFILE_HOOK);
    writeln!(s, "    let base = arena.0.as_mut_ptr();").unwrap();
    let read = |id: TensorId| -> String {
        let info = graph.info(id);
        let (ty, len) = (rust_type(info.dtype), info.num_elements());
        match plan.location(id) {
            Location::Const => format!("weights::<{ty}>({}, {len})", weight_offsets[id.0]),
            Location::Input(i) => format!("&{}[..]", inputs[i].arg),
            Location::Output(j) => format!("&{}[..]", outputs[j].arg),
            Location::Arena(off) => format!("unsafe {{ view::<{ty}>(base, {off}, {len}) }}"),
        }
    };
    for &node_id in &plan.order {
        let node = &graph.nodes[node_id.0];
        let out = node.outputs[0];
        let info = graph.info(out);
        let (ty, len) = (rust_type(info.dtype), info.num_elements());
        let write = match plan.location(out) {
            Location::Output(j) => format!("&mut {}[..]", outputs[j].arg),
            Location::Arena(off) => format!("unsafe {{ view_mut::<{ty}>(base, {off}, {len}) }}"),
            // An alias shares its input's bytes (possibly the caller's input buffer).
            _ if plan.reuse[node_id.0] == Reuse::Alias => String::new(),
            other => {
                return Err(EmitError::Tensor {
                    index: out.0,
                    name: graph.tensor(out).name.clone(),
                    message: format!("a node result cannot live in {other:?}"),
                })
            }
        };
        writeln!(
            s,
            "\n    // {}: {} '{}' {:?} -> {:?}",
            node_id.0,
            node.op.name(),
            comment_text(&node.name),
            info.shape,
            plan.location(out)
        )
        .unwrap();
        let prepared = &kernels[node_id.0].0;
        match plan.reuse[node_id.0] {
            Reuse::Alias => {
                writeln!(s, "    // (an alias of its input: nothing to do)").unwrap();
                continue;
            }
            Reuse::Band { into } => {
                writeln!(
                    s,
                    "    // (computed row band by row band inside node {}: nothing to do)",
                    into.0
                )
                .unwrap();
                continue;
            }
            Reuse::BandBlock { first } => {
                // Runs `first` and this node band by band over the skip tensor
                // (operand 3), which only `y` borrows; the rows of `first`'s result
                // live in the scratch ring.
                let first_node = &graph.nodes[first.0];
                writeln!(s, "    {{").unwrap();
                let mut bind = |prefix: &str, inputs: &[TensorId]| -> Vec<String> {
                    let mut names = Vec::new();
                    for (i, &t) in inputs.iter().enumerate() {
                        if i == 1 || i == 2 {
                            writeln!(s, "        let {prefix}{i} = {};", read(t)).unwrap();
                        }
                        names.push(format!("{prefix}{i}"));
                    }
                    names
                };
                let first_names = bind("a", &first_node.inputs);
                let names = bind("x", &node.inputs);
                writeln!(s, "        let y = {write};").unwrap();
                let words = scratch_words[node_id.0];
                let range = in_place::scratch_of(plan, node_id.0);
                let ring_len = match (&kernels[first.0].0, prepared) {
                    (Prepared::Conv2dI8(a, _), Prepared::Conv2dAddI8(b, ..)) => {
                        kiln_runtime::kernels::in_place::block::block_ring_len(a, b).unwrap_or(0)
                    }
                    _ => 0,
                };
                let (ring, dsp) = split_ring(range, ring_len, words, plan.alignment);
                writeln!(s, "        {}", in_place::scratch_view("ring", ty, ring)).unwrap();
                if words > 0 {
                    writeln!(s, "        {}", scratch_binding(dsp, words)).unwrap();
                }
                let call = ops::dsp_band_block_call(
                    &kernels[first.0].0,
                    prepared,
                    &first_names,
                    &names,
                    "y",
                    "ring",
                    kernel_family,
                )
                .or_else(|| {
                    in_place::band_block_call(
                        &kernels[first.0].0,
                        prepared,
                        &first_names,
                        &names,
                        "y",
                        "ring",
                    )
                })
                .ok_or_else(|| EmitError::Tensor {
                    index: out.0,
                    name: graph.tensor(out).name.clone(),
                    message: "no banded kernel for this block".into(),
                })?;
                for line in call.lines() {
                    writeln!(s, "        {line}").unwrap();
                }
            }
            reuse if in_place::is_conv(prepared, reuse) => {
                // A conv over its own input (operand 0, borrowed only as `y`), with its
                // ring of input pixels in the arena.
                writeln!(s, "    {{").unwrap();
                let mut names = Vec::new();
                for (i, &t) in node.inputs.iter().enumerate() {
                    if i != 0 {
                        writeln!(s, "        let x{i} = {};", read(t)).unwrap();
                    }
                    names.push(format!("x{i}"));
                }
                writeln!(s, "        let y = {write};").unwrap();
                // The DSP kernel takes the plan's range as its scratch, the reference
                // kernel as its ring of input pixels.
                let range = in_place::scratch_of(plan, node_id.0);
                let call = match ops::dsp_in_place_conv_call(prepared, &names, "y", kernel_family) {
                    Some(call) => {
                        let words = scratch_words[node_id.0];
                        writeln!(s, "        {}", scratch_binding(range, words)).unwrap();
                        call
                    }
                    None => {
                        writeln!(s, "        {}", in_place::scratch_view("ring", ty, range))
                            .unwrap();
                        in_place::conv_call(prepared, &names, "y", "ring").unwrap_or_default()
                    }
                };
                for line in call.lines() {
                    writeln!(s, "        {line}").unwrap();
                }
            }
            Reuse::InPlace { operand } => {
                // The result overwrites operand `operand`, so that operand is only
                // borrowed, mutably, as `y`; the others are read as usual.
                writeln!(s, "    {{").unwrap();
                let mut names = Vec::new();
                for (i, &t) in node.inputs.iter().enumerate() {
                    if i != operand {
                        writeln!(s, "        let x{i} = {};", read(t)).unwrap();
                    }
                    names.push(format!("x{i}"));
                }
                writeln!(s, "        let y = {write};").unwrap();
                let words = scratch_words[node_id.0];
                if words > 0 {
                    let range = in_place::scratch_of(plan, node_id.0);
                    writeln!(s, "        {}", scratch_binding(range, words)).unwrap();
                }
                let call = ops::in_place_call(prepared, operand, &names, "y", kernel_family)
                    .ok_or_else(|| EmitError::Tensor {
                        index: out.0,
                        name: graph.tensor(out).name.clone(),
                        message: format!("{} has no in-place kernel", node.op.name()),
                    })?;
                for line in call.lines() {
                    writeln!(s, "        {line}").unwrap();
                }
            }
            Reuse::None => {
                let operand_exprs: Vec<String> = node.inputs.iter().map(|&i| read(i)).collect();
                writeln!(s, "    {{").unwrap();
                for (i, e) in operand_exprs.iter().enumerate() {
                    writeln!(s, "        let x{i} = {e};").unwrap();
                }
                writeln!(s, "        let y = {write};").unwrap();
                let words = scratch_words[node_id.0];
                if words > 0 {
                    let range = in_place::scratch_of(plan, node_id.0);
                    writeln!(s, "        {}", scratch_binding(range, words)).unwrap();
                }
                let names: Vec<String> =
                    (0..operand_exprs.len()).map(|i| format!("x{i}")).collect();
                let call = ops::kernel_call(
                    prepared,
                    &ops::Operands {
                        inputs: &names,
                        output: "y",
                    },
                    kernel_family,
                );
                for line in call.lines() {
                    writeln!(s, "        {line}").unwrap();
                }
            }
        }
        writeln!(s, "    }}").unwrap();
        writeln!(s, "    #[cfg(kiln_profile)]").unwrap();
        writeln!(s, "    unsafe {{ kiln_profile_layer({}) }};", node_id.0).unwrap();
    }
    writeln!(s, "}}").unwrap();
    Ok(RustModel { source: s, weights })
}

/// The statement binding `scratch` to `words` words of kernel scratch: the plan's arena
/// range when it holds them, else a stack array for this one call.
fn scratch_binding(range: Option<Scratch>, words: usize) -> String {
    match range.filter(|r| r.bytes >= 4 * words) {
        Some(r) => format!(
            "let scratch = unsafe {{ view_mut::<u32>(base, {}, {words}) }};",
            r.offset
        ),
        None => format!("let mut stack_scratch = [0u32; {words}];\n        let scratch = &mut stack_scratch[..];"),
    }
}

/// A banded block's plan range split into its ring of rows (`ring` bytes, aligned as
/// the planner laid it out) and, after it, the DSP block kernel's `words` words of
/// scratch; `None` for the scratch when the plan holds no room for it.
fn split_ring(
    range: Option<Scratch>,
    ring: usize,
    words: usize,
    alignment: usize,
) -> (Option<Scratch>, Option<Scratch>) {
    let ring = ring.next_multiple_of(alignment.max(1));
    match range {
        Some(r) if words > 0 && r.bytes >= ring + 4 * words => (
            Some(Scratch {
                offset: r.offset,
                bytes: ring,
            }),
            Some(Scratch {
                offset: r.offset + ring,
                bytes: r.bytes - ring,
            }),
        ),
        _ => (range, None),
    }
}

#[allow(clippy::too_many_arguments)]
fn header(
    s: &mut String,
    graph: &Graph,
    plan: &Plan,
    source_model: &str,
    weight_bytes: usize,
    weights_file: &str,
    inputs: &[Port],
    outputs: &[Port],
) {
    let version = env!("CARGO_PKG_VERSION");
    let source_model = comment_text(source_model);
    let _ = write!(
        s,
        r#"// Generated by kiln {version} from {source_model}. Do not edit: run `kiln compile` again.

#[allow(unused_imports)]
use kiln_runtime::kernels::reference::{{
    add::*, average_pool_2d::*, clip::*, concatenation::*, conv_2d::*, depthwise_conv_2d::*,
    dequantize::*, div::*, fully_connected::*, leaky_relu::*, logistic::*, max_pool_2d::*, mean::*,
    mul::*, pad::*, quantize::*, relu::*, relu6::*, softmax::*, sub::*, tanh::*, transpose::*,
    transpose_conv_2d::*,
}};
#[allow(unused_imports)]
use kiln_runtime::{{activation::*, padding::*, quant::*, shape::*}};

#[cfg(target_endian = "big")]
compile_error!("kiln's weights blob is little-endian");

/// Bytes of scratch memory [`run`] needs (the static memory plan's arena).
pub const ARENA_BYTES: usize = {arena};
/// Lower bound of the arena for the chosen op order (largest set of live tensors).
pub const ARENA_LOWER_BOUND_BYTES: usize = {bound};
/// Bytes of constant data (weights, biases) kept in flash.
pub const WEIGHT_BYTES: usize = {weight_bytes};
/// Multiply-accumulate operations per inference.
pub const MACS: u64 = {macs};

/// The scratch memory of [`run`], aligned so tensors of every element type fit.
#[repr(C, align(16))]
pub struct Arena(pub [u8; ARENA_BYTES]);

impl Arena {{
    /// A zeroed arena (place it in a `static` or on the stack).
    pub const fn new() -> Self {{
        Arena([0; ARENA_BYTES])
    }}
}}

impl Default for Arena {{
    fn default() -> Self {{
        Self::new()
    }}
}}

#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

/// The weights, in flash.
static WEIGHTS: Aligned<[u8; WEIGHT_BYTES]> = Aligned(*include_bytes!("{weights_file}"));

/// `len` elements of `T` at byte `offset` of the weights.
#[inline(always)]
#[allow(dead_code)]
fn weights<T>(offset: usize, len: usize) -> &'static [T] {{
    // SAFETY: kiln placed a tensor of `len` elements of `T` at `offset`, aligned for `T`,
    // inside WEIGHTS when it generated this file; i8/i32/f32 accept any bit pattern.
    unsafe {{ core::slice::from_raw_parts(WEIGHTS.0.as_ptr().add(offset).cast::<T>(), len) }}
}}

/// `len` elements of `T` at byte `offset` of the arena.
///
/// # Safety
/// The range must lie inside the arena, be aligned for `T`, and not overlap a range
/// borrowed mutably at the same time: the memory plan guarantees all three.
#[inline(always)]
#[allow(dead_code)]
unsafe fn view<'a, T>(base: *mut u8, offset: usize, len: usize) -> &'a [T] {{
    core::slice::from_raw_parts(base.add(offset).cast::<T>(), len)
}}

/// Mutable twin of [`view`], with the same safety contract.
#[inline(always)]
#[allow(dead_code)]
unsafe fn view_mut<'a, T>(base: *mut u8, offset: usize, len: usize) -> &'a mut [T] {{
    core::slice::from_raw_parts_mut(base.add(offset).cast::<T>(), len)
}}

/// A per-channel requantization multiplier (keeps the tables short).
#[allow(dead_code)]
const fn qm(multiplier: i32, shift: i32) -> QuantizedMultiplier {{
    QuantizedMultiplier {{ multiplier, shift }}
}}
"#,
        arena = plan.arena_bytes,
        bound = plan.lower_bound_bytes,
        macs = crate::ir::cost::total_macs(graph),
    );
    for (kind, list) in [("input", inputs), ("output", outputs)] {
        for p in list {
            let t = graph.tensor(p.id);
            let name = comment_text(&t.name);
            let info = &t.info;
            let _ = writeln!(
                s,
                "\n/// Elements of {kind} '{}' ({} {:?}).",
                name,
                info.dtype.name(),
                info.shape
            );
            let _ = writeln!(
                s,
                "pub const {}_LEN: usize = {};",
                p.konst,
                info.num_elements()
            );
            let _ = writeln!(s, "/// Shape of {kind} '{}'.", name);
            let _ = writeln!(
                s,
                "pub const {}_SHAPE: [usize; {}] = {:?};",
                p.konst,
                info.shape.len(),
                info.shape
            );
            if let Some((scale, zp)) = info.scale_zero_point() {
                let _ = writeln!(
                    s,
                    "/// Quantization of {kind} '{}': real = SCALE * (q - ZERO_POINT).",
                    name
                );
                let _ = writeln!(
                    s,
                    "pub const {}_SCALE: f32 = {};",
                    p.konst,
                    literal::literal(&scale)
                );
                let _ = writeln!(s, "/// Zero point of {kind} '{}'.", name);
                let _ = writeln!(s, "pub const {}_ZERO_POINT: i32 = {zp};", p.konst);
            }
        }
    }
    s.push('\n');
}

/// Where the generated crate finds kiln-runtime (a local checkout or a version).
pub type RuntimeDependency = super::CrateDependency;

/// Writes a self-contained crate: `Cargo.toml`, `src/lib.rs` (the module body behind
/// `#![no_std]`) and `src/model.weights.bin`. `standalone` adds an empty `[workspace]`
/// so the crate builds on its own even inside another workspace's folder; `target`
/// picks the kernels as in [`emit`].
#[allow(clippy::too_many_arguments)]
pub fn write_crate(
    dir: &Path,
    crate_name: &str,
    graph_source: &str,
    graph: &Graph,
    plan: &Plan,
    runtime: &RuntimeDependency,
    standalone: bool,
    target: Target,
) -> Result<RustModel, crate::CompileError> {
    let model = emit(graph, plan, graph_source, "model.weights.bin", target).map_err(|source| {
        crate::CompileError::Emit {
            file: graph_source.to_string(),
            source,
        }
    })?;
    let io = |e: std::io::Error, p: &Path| crate::CompileError::Io {
        path: p.display().to_string(),
        source: e,
    };
    super::check_crate_name(crate_name, dir)?;
    let src = dir.join("src");
    std::fs::create_dir_all(&src).map_err(|e| io(e, &src))?;
    let dep = runtime.toml_value();
    let workspace = if standalone { "\n[workspace]\n" } else { "" };
    let cargo = format!(
        "[package]\nname = \"{crate_name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\ndescription = \"{} compiled by kiln {}\"\n\n[dependencies]\nkiln-runtime = {dep}\n{workspace}",
        toml_text(graph_source),
        env!("CARGO_PKG_VERSION")
    );
    let graph_source = comment_text(graph_source);
    let lib = format!(
        "//! The model {graph_source}, compiled ahead of time by kiln: call [`run`] with an\n//! [`Arena`], the input and the output buffer.\n#![no_std]\n\ninclude!(\"model.rs\");\n"
    );
    for (path, bytes) in [
        (dir.join("Cargo.toml"), cargo.as_bytes()),
        (src.join("lib.rs"), lib.as_bytes()),
        (src.join("model.rs"), model.source.as_bytes()),
        (src.join("model.weights.bin"), model.weights.as_slice()),
    ] {
        std::fs::write(&path, bytes).map_err(|e| io(e, &path))?;
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiling_hook_calls_follow_each_layer_and_compile_out_by_default() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/kws_ref_model/model.tflite");
        let graph = crate::import::load(&path).unwrap();
        let options = crate::compile::CompileOptions::default();
        let planned = crate::compile::optimize_and_plan(graph, &options, "kws").unwrap();
        let (graph, plan) = (&planned.graph, &planned.plan);
        let model = emit(graph, plan, "kws", "w.bin", options.target).unwrap();
        // One section per node in plan order; a node that runs code ends with its hook
        // call, behind the cfg (so a normal build has none); one with nothing to do has none.
        let sections: Vec<&str> = model.source.split("\n\n    // ").skip(1).collect();
        assert_eq!(sections.len(), plan.order.len());
        let mut calls = 0;
        for (section, node) in sections.iter().zip(&plan.order) {
            let call = format!(
                "    #[cfg(kiln_profile)]\n    unsafe {{ kiln_profile_layer({}) }};",
                node.0
            );
            assert!(section.starts_with(&format!("{}: ", node.0)), "{section}");
            if section.contains("nothing to do") {
                assert!(!section.contains("kiln_profile_layer"), "{section}");
            } else {
                // The last section also holds the end of `run`.
                let body = section.trim_end().trim_end_matches('}').trim_end();
                assert!(body.ends_with(&call), "{section}");
                calls += 1;
            }
        }
        assert!(calls > 0 && plan.reuse.contains(&Reuse::Alias));
        assert!(model.source.contains("fn kiln_profile_layer(node: usize);"));
    }

    /// Every DSP call's scratch is the node's planned arena range (none on the stack) when
    /// the plan holds it; a plan made without `dsp_scratch` gets a stack array per call.
    #[test]
    fn dsp_scratch_lives_in_the_arena_when_planned() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/pretrainedResnet_quant/model.tflite");
        let graph = crate::import::load(&path).unwrap();
        let options = crate::compile::CompileOptions {
            target: Target::CortexM4,
            ..Default::default()
        };
        let planned = crate::compile::optimize_and_plan(graph, &options, "resnet").unwrap();
        let (graph, plan) = (&planned.graph, &planned.plan);
        let model = emit(graph, plan, "resnet", "w.bin", options.target).unwrap();
        let calls = model.source.matches(", scratch);").count();
        let views = model
            .source
            .matches("let scratch = unsafe { view_mut::<u32>(base, ")
            .count();
        assert!(calls >= 8, "{calls} DSP calls with scratch");
        assert_eq!(views, calls);
        assert!(!model.source.contains("stack_scratch"));
        // Every range lies inside the arena and matches the plan.
        for v in 0..graph.nodes.len() {
            if let Some(r) = plan.scratch[v] {
                assert!(r.offset + r.bytes <= plan.arena_bytes, "node {v}: {r:?}");
            }
        }
        // The same graph planned without the DSP scratch: the calls fall back to stack
        // arrays (the ring of the banded block still in the arena).
        let bare = crate::plan::plan(graph, &crate::plan::PlanOptions::default()).unwrap();
        let model = emit(graph, &bare, "resnet", "w.bin", options.target).unwrap();
        assert_eq!(
            model
                .source
                .matches("let mut stack_scratch = [0u32; ")
                .count(),
            calls
        );
        assert!(bare.arena_bytes < plan.arena_bytes);
    }

    #[test]
    fn names_cannot_break_out_of_comments_or_toml_strings() {
        assert_eq!(comment_text("a\nb\r\tc"), "a b  c");
        assert_eq!(toml_text("C:\\m\"x\n"), "C:\\\\m\\\"x ");
    }
}
