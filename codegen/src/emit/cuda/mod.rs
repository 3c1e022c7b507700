//! The CUDA emitter: a planned int8 or float32 graph becomes one CUDA C source file with one fused
//! kernel per node that runs code, a weights blob, and a manifest that tells a host
//! driver (the `kiln-cuda` crate) where every tensor lives in the one device arena and
//! which kernels to launch, in plan order, with which grid.
//!
//! Every kernel takes the same two arguments, the weights buffer `W` and the arena `A`;
//! all offsets, shapes and quantization constants are literals in the source, taken
//! from the same prepared parameters (`exec::kernel::Prepared`) the host executor and
//! the Rust emitter use, and the arithmetic is a line-by-line port of kiln-runtime's
//! fixed-point code (`prelude.cuh`), so the results are bit-exact with the CPU int8
//! path. Convolutions and dense layers fold bias, requantization, the activation clamp
//! and (for convs) a fused residual ADD into their epilogue; where channels come in
//! groups of four at 4-byte-aligned addresses the dot products use `__dp4a`. The f32
//! kernels (`float`, and the f32 arms of the other modules) sum in the CPU reference
//! kernels' order; compiled without fused multiply-adds (`kiln_cuda::NVRTC_OPTIONS`,
//! the emulation's `-ffp-contract=off`) they round like the CPU, except inside `expf`
//! and `tanhf`, whose last bits may differ from the CPU's libm.
//!
//! Kernel generators by module: `int8` the int8 convolutions, dense layers, pools,
//! softmax and copies (with the work folded at compile time: see there); `float` their
//! f32 twins; `elementwise` activations,
//! (de/re)quantization and broadcasting binary ops; `layout` concatenation, pad,
//! transpose and mean; `transpose_conv` transposed convolutions.
//!
//! Batch `N` ([`CudaOptions::batch`]): every activation is `N` times larger. The plan
//! is made for one sample; each arena offset is multiplied by `N` and sample `n` of a
//! tensor sits at `N * offset + n * stride`, `stride` its byte size rounded up to the
//! plan's 16-byte alignment, so the plan's non-overlap (and its in-place sharing)
//! carries over unchanged. Graph inputs and outputs get their own regions after the
//! activations, inside the same arena: one device allocation for all activations.
//!
//! The plan must not run convolutions in place or in row bands (their ring buffers
//! rely on sequential execution); [`plan_options`] switches those off. Element-wise
//! in-place reuse stays: each thread reads the element it then overwrites.
//!
//! Without a GPU the generated source compiles with a host C++ compiler through
//! [`EMULATION_HEADER`] (which defines `__global__`, `threadIdx`, `__dp4a`, ...) and
//! [`EMULATION_MAIN`], which runs every block and thread serially: the tests compare that
//! with the CPU executor (int8 bit for bit, f32 within 1e-5 relative).

use super::{comment_text, toml_text};
use crate::exec::kernel::{Kernel, Prepared};
use crate::exec::ExecError;
use crate::ir::{DType, Graph, Node, TensorId};
use crate::plan::{Location, Plan, PlanOptions, Reuse};
use kiln_runtime::activation::ActivationRange;
use kiln_runtime::kernels::reference::average_pool_2d::Pool2dParams;
use kiln_runtime::padding::Window2d;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::Path;

mod elementwise;
pub mod emulate;
mod float;
mod int8;
mod layout;
mod transpose_conv;

/// The fixed-point functions every generated source starts with.
pub const PRELUDE: &str = include_str!("prelude.cuh");
/// Host C++ definitions of the CUDA built-ins the generated kernels use, for the CPU
/// emulation (`g++ -x c++ -include kiln_cuda_emu.h model.cu kiln_cuda_emu_main.cpp`).
pub const EMULATION_HEADER: &str = include_str!("emu/kiln_cuda_emu.h");
/// The emulation's `main`: loads the weights and inputs, runs every launch of the
/// generated launch table serially, writes the outputs (see the file's header).
pub const EMULATION_MAIN: &str = include_str!("emu/kiln_cuda_emu_main.cpp");
/// Version of the manifest format (first line: `kiln-cuda-manifest 1`).
pub const MANIFEST_VERSION: u32 = 1;
/// Byte alignment of every tensor (arena offsets, per-sample strides, weights).
pub const ALIGNMENT: usize = 16;

/// Settings of the CUDA emitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaOptions {
    /// Samples per `run` (every activation is this many times larger). At least 1.
    pub batch: usize,
    /// Threads per block of every launch (a multiple of 32, at most 1024).
    pub threads_per_block: u32,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            batch: 1,
            threads_per_block: 128,
        }
    }
}

/// One kernel launch of `run`, in plan order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Index of the node in the planned graph.
    pub node: usize,
    /// The `extern "C" __global__` function's name.
    pub kernel: String,
    /// Blocks (1-D grid).
    pub grid: u32,
    /// Threads per block.
    pub block: u32,
}

/// Where one graph input or output lives in the device arena.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    /// Tensor name.
    pub name: String,
    /// Element type (`int8` or `float32`).
    pub dtype: DType,
    /// Shape of one sample (the graph tensor's shape).
    pub shape: Vec<usize>,
    /// Byte offset of sample 0 in the arena.
    pub offset: usize,
    /// Bytes from one sample to the next.
    pub stride: usize,
    /// Bytes of one sample.
    pub bytes: usize,
    /// Scale and zero point (int8 tensors).
    pub quant: Option<(f32, i32)>,
}

/// The generated source, data and launch plan of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct CudaModel {
    /// CUDA C source: prelude, one kernel per node, and (for the emulation only) the
    /// launch table behind `#ifdef KILN_CUDA_EMULATION`.
    pub source: String,
    /// Constant tensors, each at an offset aligned to [`ALIGNMENT`] (filters re-laid out
    /// for the kernels that read them), then the tables kernels derive from them.
    pub weights: Vec<u8>,
    /// Kernel launches in plan order.
    pub launches: Vec<Launch>,
    /// Bytes of the device arena (activations of all samples, then inputs, outputs).
    pub arena_bytes: usize,
    /// The plan's arena for one sample.
    pub plan_arena_bytes: usize,
    /// Samples per run.
    pub batch: usize,
    /// Graph inputs.
    pub inputs: Vec<Port>,
    /// Graph outputs.
    pub outputs: Vec<Port>,
    /// The manifest text the host driver reads (see [`CudaModel::manifest`]).
    pub manifest: String,
}

/// Why a graph could not be emitted as CUDA.
#[derive(Debug, thiserror::Error)]
pub enum CudaEmitError {
    /// A node's kernel parameters cannot be derived.
    #[error(transparent)]
    Prepare(#[from] ExecError),
    /// The CUDA backend has no kernel for this node.
    #[error("node {index} '{name}' ({op}): not supported by the CUDA backend: {reason}")]
    Unsupported {
        /// Node index.
        index: usize,
        /// Node name.
        name: String,
        /// Operator name.
        op: &'static str,
        /// What is missing.
        reason: String,
    },
    /// The options or the plan cannot be used.
    #[error("{0}")]
    Options(String),
}

/// `base` with the techniques the CUDA backend cannot run switched off: in-place convs
/// and banded residual blocks (sequential ring buffers), and an alignment of
/// [`ALIGNMENT`] so every tensor starts on a 16-byte boundary (`__dp4a` loads).
pub fn plan_options(base: &PlanOptions) -> PlanOptions {
    PlanOptions {
        alignment: ALIGNMENT,
        in_place_conv: false,
        band_blocks: false,
        only_where_smaller: false,
        ..base.clone()
    }
}

/// How a kernel addresses one tensor: `base + n * stride` bytes into `W` or `A`.
#[derive(Debug, Clone, Copy)]
struct Addr {
    weights: bool,
    base: usize,
    stride: usize,
}

impl Addr {
    /// A typed pointer expression for sample `n`.
    fn ptr(&self, ty: &str, constant: bool) -> String {
        let (buf, q) = if self.weights {
            ("W", "const ")
        } else if constant {
            ("A", "const ")
        } else {
            ("A", "")
        };
        if self.stride == 0 {
            format!("(({q}{ty}*)({buf} + {}ull))", self.base)
        } else {
            format!(
                "(({q}{ty}*)({buf} + {}ull + (unsigned long long)n * {}ull))",
                self.base, self.stride
            )
        }
    }
}

/// Emits the CUDA source and launch plan for `graph` placed by `plan` (made with
/// [`plan_options`]); `source_model` names the model in the header comment.
pub fn emit(
    graph: &Graph,
    plan: &Plan,
    source_model: &str,
    options: &CudaOptions,
) -> Result<CudaModel, CudaEmitError> {
    let n = options.batch;
    if n == 0 || n > 1 << 20 {
        return Err(CudaEmitError::Options(format!(
            "batch {n} is out of range (1 to {})",
            1 << 20
        )));
    }
    let tpb = options.threads_per_block;
    if tpb == 0 || tpb > 1024 || !tpb.is_multiple_of(32) {
        return Err(CudaEmitError::Options(format!(
            "threads per block {tpb} must be a multiple of 32, at most 1024"
        )));
    }
    if !plan.alignment.is_multiple_of(ALIGNMENT) {
        return Err(CudaEmitError::Options(format!(
            "the plan's alignment {} is not a multiple of {ALIGNMENT}: plan with cuda::plan_options",
            plan.alignment
        )));
    }
    let kernels = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| crate::exec::prepare(graph, i, node))
        .collect::<Result<Vec<Kernel>, _>>()?;
    let blob = Blob::new(graph);
    let tables_base = blob.tables_base;
    let stride = |id: TensorId| graph.info(id).byte_size().next_multiple_of(ALIGNMENT);
    let activations = plan
        .arena_bytes
        .checked_mul(n)
        .ok_or_else(|| CudaEmitError::Options("the arena overflows".into()))?;
    let mut end = activations.next_multiple_of(ALIGNMENT);
    let port = |id: TensorId, end: &mut usize| {
        let info = graph.info(id);
        let p = Port {
            name: graph.tensor(id).name.clone(),
            dtype: info.dtype,
            shape: info.shape.clone(),
            offset: *end,
            stride: stride(id),
            bytes: info.byte_size(),
            quant: info.scale_zero_point(),
        };
        *end += n * p.stride;
        p
    };
    let inputs: Vec<Port> = graph.inputs.iter().map(|&id| port(id, &mut end)).collect();
    let outputs: Vec<Port> = graph.outputs.iter().map(|&id| port(id, &mut end)).collect();
    let arena_bytes = end.max(ALIGNMENT);
    let addr = |id: TensorId| -> Addr {
        match plan.location(id) {
            Location::Const => Addr {
                weights: true,
                base: blob.offsets[id.0],
                stride: 0,
            },
            Location::Arena(off) => Addr {
                weights: false,
                base: off * n,
                stride: stride(id),
            },
            Location::Input(i) => Addr {
                weights: false,
                base: inputs[i].offset,
                stride: inputs[i].stride,
            },
            Location::Output(j) => Addr {
                weights: false,
                base: outputs[j].offset,
                stride: outputs[j].stride,
            },
        }
    };

    // The kernels first: their tables join the weights, which the header reports.
    let mut s = String::new();
    let mut launches = Vec::new();
    for &node_id in &plan.order {
        let i = node_id.0;
        let node = &graph.nodes[i];
        let unsupported = |reason: &str| CudaEmitError::Unsupported {
            index: i,
            name: node.name.clone(),
            op: node.op.name(),
            reason: reason.to_string(),
        };
        let out = node.outputs[0];
        let _ = writeln!(
            s,
            "\n// node {i}: {} '{}' {:?} -> {:?}",
            node.op.name(),
            comment_text(&node.name),
            graph.info(out).shape,
            plan.location(out)
        );
        match plan.reuse[i] {
            Reuse::Alias => {
                let _ = writeln!(s, "// (an alias of its input: nothing to launch)");
                continue;
            }
            Reuse::Band { .. } | Reuse::BandBlock { .. } => {
                return Err(unsupported(
                    "banded residual blocks run sequentially: plan with cuda::plan_options",
                ))
            }
            Reuse::InPlace { operand } => {
                let conv = matches!(
                    kernels[i].0,
                    Prepared::Conv2dI8(..)
                        | Prepared::DepthwiseI8(..)
                        | Prepared::Conv2dF32(..)
                        | Prepared::DepthwiseF32(..)
                );
                let conv_add = matches!(
                    kernels[i].0,
                    Prepared::Conv2dAddI8(..) | Prepared::Conv2dAddF32(..)
                );
                if conv || (operand == 0 && conv_add) {
                    return Err(unsupported(
                        "in-place convolutions run sequentially: plan with cuda::plan_options",
                    ));
                }
            }
            Reuse::None => {}
        }
        let ins: Vec<Addr> = node.inputs.iter().map(|&t| addr(t)).collect();
        let y = addr(out);
        let kernel = format!("kiln_node_{i}");
        let cx = Ctx {
            graph,
            node,
            ins: &ins,
            y,
            kernel: &kernel,
            samples: n,
            blob: &blob,
        };
        let body = node_kernel(&cx, &kernels[i].0)
            .ok_or_else(|| unsupported(unsupported_reason(&kernels[i].0)))?;
        s.push_str(&body.source);
        let threads = body
            .threads
            .checked_mul(n as u64)
            .ok_or_else(|| unsupported("too many threads"))?;
        let grid = threads.div_ceil(u64::from(tpb));
        if grid == 0 || grid > u64::from(i32::MAX as u32) {
            return Err(unsupported("grid out of range"));
        }
        launches.push(Launch {
            node: i,
            kernel,
            grid: grid as u32,
            block: tpb,
        });
    }
    let weights = blob.finish();
    let kernels_src = std::mem::take(&mut s);
    let version = env!("CARGO_PKG_VERSION");
    let _ = writeln!(
        s,
        "// Generated by kiln {version} from {}. Do not edit: run `kiln compile --target cuda` again.",
        comment_text(source_model)
    );
    let _ = writeln!(
        s,
        "// Batch {n}; device arena {arena_bytes} bytes (plan: {} per sample); weights {} bytes ({tables_base} of the model's constants, then tables derived from them).",
        plan.arena_bytes,
        weights.len()
    );
    let _ = writeln!(
        s,
        "// Every kernel: W = weights buffer, A = arena; one thread per output element (per row for softmax).\n"
    );
    s.push_str(PRELUDE);
    s.push_str(&kernels_src);
    emulation_tables(
        &mut s,
        &launches,
        &inputs,
        &outputs,
        arena_bytes,
        n,
        weights.len(),
    );
    let mut model = CudaModel {
        source: s,
        weights,
        launches,
        arena_bytes,
        plan_arena_bytes: plan.arena_bytes,
        batch: n,
        inputs,
        outputs,
        manifest: String::new(),
    };
    model.manifest = model.manifest_text(source_model);
    Ok(model)
}

/// Why [`node_kernel`] has no kernel for `p`.
fn unsupported_reason(p: &Prepared) -> &'static str {
    match p {
        Prepared::SoftmaxI8(..) | Prepared::SoftmaxF32(..) => {
            "the softmax output is not a whole number of rows"
        }
        Prepared::ConcatenationI8(..) | Prepared::ConcatenationF32(..) => {
            "the inputs do not add up to the output"
        }
        Prepared::Transpose(..) => "transpose of an element type other than int8, int32, float32",
        _ => "no CUDA kernel for this operator or element type",
    }
}

/// The emulation's launch table and port table (ignored by NVRTC: only compiled with
/// `-DKILN_CUDA_EMULATION`).
fn emulation_tables(
    s: &mut String,
    launches: &[Launch],
    inputs: &[Port],
    outputs: &[Port],
    arena: usize,
    batch: usize,
    weight_bytes: usize,
) {
    let _ = writeln!(s, "\n#ifdef KILN_CUDA_EMULATION");
    let _ = writeln!(
        s,
        "// What the host driver does, for the serial CPU emulation."
    );
    let _ = writeln!(
        s,
        "static const unsigned long long KILN_ARENA_BYTES = {arena}ull;\nstatic const unsigned long long KILN_WEIGHT_BYTES = {weight_bytes}ull;\nstatic const unsigned long long KILN_BATCH = {batch}ull;"
    );
    let _ = writeln!(s, "static const kiln_launch KILN_LAUNCHES[] = {{");
    for l in launches {
        let _ = writeln!(s, "  {{{}, {}u, {}u}},", l.kernel, l.grid, l.block);
    }
    let _ = writeln!(s, "  {{0, 0u, 0u}}\n}};");
    for (name, ports) in [("INPUTS", inputs), ("OUTPUTS", outputs)] {
        let _ = writeln!(s, "static const kiln_port KILN_{name}[] = {{");
        for p in ports {
            let _ = writeln!(s, "  {{{}ull, {}ull, {}ull}},", p.offset, p.stride, p.bytes);
        }
        let _ = writeln!(s, "  {{0ull, 0ull, 0ull}}\n}};");
    }
    let _ = writeln!(s, "#endif");
}

impl CudaModel {
    /// The manifest: a line-based text file the host driver parses (`kiln-cuda`'s
    /// `Manifest`). Lines: `kiln-cuda-manifest 1`, `model TEXT`, `batch N`,
    /// `arena_bytes N`, `weight_bytes N`, then per port `input|output DTYPE OFFSET
    /// STRIDE BYTES SCALE ZERO_POINT D0xD1x.. NAME` (`-` for no quantization), then per
    /// launch `kernel NAME GRID BLOCK NODE`.
    fn manifest_text(&self, source_model: &str) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "kiln-cuda-manifest {MANIFEST_VERSION}");
        let _ = writeln!(m, "model {}", comment_text(source_model));
        let _ = writeln!(m, "batch {}", self.batch);
        let _ = writeln!(m, "arena_bytes {}", self.arena_bytes);
        let _ = writeln!(m, "weight_bytes {}", self.weights.len());
        for (kind, ports) in [("input", &self.inputs), ("output", &self.outputs)] {
            for p in ports {
                let (scale, zp) = match p.quant {
                    Some((s, z)) => (format!("{s:e}"), z.to_string()),
                    None => ("-".into(), "-".into()),
                };
                let shape: Vec<String> = p.shape.iter().map(|d| d.to_string()).collect();
                let shape = if shape.is_empty() {
                    "scalar".to_string()
                } else {
                    shape.join("x")
                };
                let _ = writeln!(
                    m,
                    "{kind} {} {} {} {} {scale} {zp} {shape} {}",
                    p.dtype.name(),
                    p.offset,
                    p.stride,
                    p.bytes,
                    comment_text(&p.name)
                );
            }
        }
        for l in &self.launches {
            let _ = writeln!(m, "kernel {} {} {} {}", l.kernel, l.grid, l.block, l.node);
        }
        m
    }
}

/// One generated kernel: its source and how many threads one sample needs.
struct Body {
    source: String,
    threads: u64,
}

fn act_range(r: &ActivationRange) -> (i32, i32) {
    (r.min, r.max)
}

/// What every kernel generator needs to know about the node it generates.
struct Ctx<'a> {
    graph: &'a Graph,
    node: &'a Node,
    ins: &'a [Addr],
    y: Addr,
    kernel: &'a str,
    /// Samples per run.
    samples: usize,
    /// The weights buffer being built.
    blob: &'a Blob,
}

/// The weights buffer `W` while kernels are generated: the model's constants (a kernel
/// may re-lay one out in place where it is its only reader), then the tables kernels
/// derive from them at compile time (see [`Ctx::table`]).
struct Blob {
    /// The constants, at [`ALIGNMENT`].
    constants: RefCell<Vec<u8>>,
    /// Offset of each constant tensor in `constants`.
    offsets: Vec<usize>,
    /// How many operands of the graph (and graph outputs) each tensor is.
    readers: Vec<usize>,
    /// The derived tables.
    tables: RefCell<Vec<u8>>,
    /// Offset of `tables` in `W` (they follow the constants).
    tables_base: usize,
}

impl Blob {
    fn new(graph: &Graph) -> Blob {
        let (constants, offsets) = weights_blob(graph);
        let mut readers = vec![0; graph.tensors.len()];
        for id in graph
            .nodes
            .iter()
            .flat_map(|n| &n.inputs)
            .chain(&graph.outputs)
        {
            readers[id.0] += 1;
        }
        Blob {
            tables_base: constants.len(),
            constants: RefCell::new(constants),
            offsets,
            readers,
            tables: RefCell::new(Vec::new()),
        }
    }

    /// The whole buffer: constants, then tables, padded to [`ALIGNMENT`].
    fn finish(self) -> Vec<u8> {
        let mut w = self.constants.into_inner();
        w.extend(self.tables.into_inner());
        w.resize(w.len().next_multiple_of(ALIGNMENT), 0);
        w
    }
}

impl Ctx<'_> {
    /// The kernel's opening lines for `threads` work items per sample (see [`open`]):
    /// 32-bit index arithmetic where every index of this node fits, 64-bit otherwise.
    fn open(&self, threads: u64) -> String {
        let fits = |v: u64| v <= i32::MAX as u64;
        let narrow = threads.checked_mul(self.samples as u64).is_some_and(fits)
            && self
                .node
                .inputs
                .iter()
                .chain(&self.node.outputs)
                .all(|&id| fits(self.graph.info(id).num_elements() as u64));
        open(self.kernel, threads, self.samples, narrow)
    }

    /// Appends `values` to the derived tables (at [`ALIGNMENT`]) and returns their byte
    /// offset in `W`: per-channel constants a kernel would otherwise recompute per thread.
    fn table(&self, values: &[i32]) -> usize {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.table_bytes(&bytes)
    }

    /// Constant operand `k`, `rows` rows (e.g. a filter's output channels) of
    /// `row_len` elements of `dtype`, with the rows interleaved in units of `unit`
    /// bytes: unit `u` of row `r` at unit index `u * rows + r`. Threads of neighbouring
    /// rows (output channels) then read neighbouring units: one coalesced load per warp
    /// instead of one per thread. Where this node is the operand's only reader the
    /// constant is re-laid out in place (its original layout is then gone: the kernel
    /// must read it only this way), else the copy goes to the derived tables. Returns
    /// its offset in `W`; `None` when the operand is no constant of that type and size.
    fn interleaved_operand(
        &self,
        k: usize,
        dtype: DType,
        rows: usize,
        row_len: usize,
        unit: usize,
    ) -> Option<usize> {
        let id = self.node.inputs[k];
        let tensor = self.graph.tensor(id);
        let data = tensor.data.as_ref()?;
        let row = row_len * dtype.size();
        if tensor.info.dtype != dtype
            || rows == 0
            || data.len() != rows * row
            || !row.is_multiple_of(unit)
        {
            return None;
        }
        let mut out = Vec::with_capacity(data.len());
        for u in (0..row).step_by(unit) {
            for r in 0..rows {
                out.extend_from_slice(&data[r * row + u..r * row + u + unit]);
            }
        }
        if self.blob.readers[id.0] == 1 {
            let at = self.blob.offsets[id.0];
            self.blob.constants.borrow_mut()[at..at + out.len()].copy_from_slice(&out);
            return Some(at);
        }
        Some(self.table_bytes(&out))
    }

    /// [`Ctx::table`] of raw bytes.
    fn table_bytes(&self, bytes: &[u8]) -> usize {
        let mut t = self.blob.tables.borrow_mut();
        let start = t.len().next_multiple_of(ALIGNMENT);
        t.resize(start, 0);
        t.extend_from_slice(bytes);
        self.blob.tables_base + start
    }

    /// A `const TY*` expression for operand `k`.
    fn input(&self, k: usize, ty: &str) -> String {
        self.ins[k].ptr(ty, true)
    }

    /// A `TY*` expression for the output.
    fn output(&self, ty: &str) -> String {
        self.y.ptr(ty, false)
    }

    /// Elements of one sample's output.
    fn out_len(&self) -> usize {
        self.graph.info(self.node.outputs[0]).num_elements()
    }

    /// The opening of a kernel with one thread per row of `depth` output elements and
    /// its thread count; `None` when the output is not a whole number of rows.
    fn open_rows(&self, depth: usize) -> Option<(String, u64)> {
        let len = self.out_len();
        if depth == 0 || !len.is_multiple_of(depth) {
            return None;
        }
        let threads = (len / depth) as u64;
        Some((self.open(threads), threads))
    }

    /// Whether operand 2 is a bias of element type `dtype` (what the executor passes as
    /// the bias: an operand of another type is not one).
    fn has_bias(&self, dtype: DType) -> bool {
        self.node
            .inputs
            .get(2)
            .is_some_and(|&b| self.graph.info(b).dtype == dtype)
    }
}

/// A C expression for the float `v`, exactly: the shortest decimal that reads back as
/// `v` (`1.5e-1f`), or its bits for infinities and NaNs.
fn flit(v: f32) -> String {
    if v.is_finite() {
        format!("({v:e}f)")
    } else {
        format!("__int_as_float({})", v.to_bits() as i32)
    }
}

/// The C element type of `dtype`, where kernels can move it.
fn c_type(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::I8 => Some("signed char"),
        DType::F32 => Some("float"),
        DType::I32 => Some("int"),
        _ => None,
    }
}

/// Opening of a pooling kernel after [`open`]: pointers `x`, `y` of element type `ty`,
/// the output coordinates and the in-bounds window rows `ys..ye`, columns `xs..xe` of
/// `xb`, the input at the thread's batch and channel (kiln-runtime's `in_bounds`).
fn pool_window(cx: &Ctx, p: &Pool2dParams, ty: &str) -> String {
    let w = &p.window;
    let [ih, iw] = w.input;
    let [fh, fw] = w.filter;
    let [oh, ow] = w.output;
    let c = p.depth;
    format!(
        "  const {ty}* x = {};\n  {ty}* y = {};\n{}  const int y0 = oy * {} - {}, x0 = ox * {} - {};\n  const int ys = y0 < 0 ? 0 : (y0 > {ih} ? {ih} : y0), ye0 = y0 + {fh} < 0 ? 0 : (y0 + {fh} > {ih} ? {ih} : y0 + {fh});\n  const int xs = x0 < 0 ? 0 : (x0 > {iw} ? {iw} : x0), xe0 = x0 + {fw} < 0 ? 0 : (x0 + {fw} > {iw} ? {iw} : x0 + {fw});\n  const int ye = ye0 < ys ? ys : ye0, xe = xe0 < xs ? xs : xe0;\n  const {ty}* xb = x + (long long)b * {} + c;\n",
        cx.input(0, ty),
        cx.output(ty),
        nhwc_index(c, ow, oh),
        w.stride[0],
        w.pad[0],
        w.stride[1],
        w.pad[1],
        ih * iw * c
    )
}

/// The opening of a kernel over an NHWC output of element type `ty`: thread index,
/// the pointers `x` (operand 0), `f` (operand 1) and `y`, and the output coordinates
/// (see [`nhwc_index`]).
fn open_nhwc(cx: &Ctx, threads: u64, ty: &str, channels: usize, ow: usize, oh: usize) -> String {
    let mut s = cx.open(threads);
    s.push_str(&pointers(cx, ty));
    s.push_str(&nhwc_index(channels, ow, oh));
    s
}

/// The pointers `x` (operand 0), `f` (operand 1) and `y` of element type `ty`.
fn pointers(cx: &Ctx, ty: &str) -> String {
    format!(
        "  const {ty}* x = {};\n  const {ty}* f = {};\n  {ty}* y = {};\n",
        cx.input(0, ty),
        cx.input(1, ty),
        cx.output(ty)
    )
}

/// The generated lines that split the thread index `t` into channel `c`, column `ox`,
/// row `oy` and sample `b` of an NHWC output `[.., oh, ow, channels]`.
fn nhwc_index(channels: usize, ow: usize, oh: usize) -> String {
    format!(
        "  const int c = (int)(t % {channels}); kiln_idx r = t / {channels};\n  const int ox = (int)(r % {ow}); r /= {ow};\n  const int oy = (int)(r % {oh}); const int b = (int)(r / {oh});\n"
    )
}

/// The generated loops over the in-bounds taps (`iy`, `ix`, tap `fy`, `fx`) of output
/// `(oy, ox)`'s window, with `body` (lines indented by six spaces) inside.
fn window_taps(w: &Window2d, body: &str) -> String {
    let ([ih, iw], [fh, fw]) = (w.input, w.filter);
    format!(
        "  for (int fy = 0; fy < {fh}; ++fy) {{\n    const int iy = oy * {} - {} + fy * {};\n    if (iy < 0 || iy >= {ih}) continue;\n    for (int fx = 0; fx < {fw}; ++fx) {{\n      const int ix = ox * {} - {} + fx * {};\n      if (ix < 0 || ix >= {iw}) continue;\n{body}    }}\n  }}\n",
        w.stride[0], w.pad[0], w.dilation[0], w.stride[1], w.pad[1], w.dilation[1]
    )
}

/// The kernel's opening lines: the global thread index `t` over one sample's `threads`
/// work items and the sample `n`, and `kiln_idx`, the type of every index derived from
/// `t`: `int` when `narrow` (all of them fit; 32-bit divisions by constants are a
/// multiply and a shift, 64-bit ones a long sequence), `long long` otherwise.
fn open(kernel: &str, threads: u64, samples: usize, narrow: bool) -> String {
    let head = format!(
        "extern \"C\" __global__ void {kernel}(const unsigned char* __restrict__ W, unsigned char* A) {{\n"
    );
    if narrow {
        let total = threads * samples as u64;
        format!(
            "{head}  typedef int kiln_idx;\n  const unsigned int g = blockIdx.x * blockDim.x + threadIdx.x;\n  if (g >= {total}u) return;\n  const unsigned int n = g / {threads}u;\n  const kiln_idx t = (kiln_idx)(g % {threads}u);\n"
        )
    } else {
        format!(
            "{head}  typedef long long kiln_idx;\n  const unsigned long long g = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;\n  if (g >= {threads}ull * {samples}ull) return;\n  const unsigned long long n = g / {threads}ull;\n  const kiln_idx t = (kiln_idx)(g % {threads}ull);\n"
        )
    }
}

/// The source of the kernel `cx` describes, or `None` when the backend has no kernel
/// for it.
fn node_kernel(cx: &Ctx, prepared: &Prepared) -> Option<Body> {
    match prepared {
        Prepared::Conv2dF32(p, act) => Some(float::conv(cx, p, act, None)),
        Prepared::Conv2dAddF32(p, act, add) => Some(float::conv(cx, p, act, Some(add))),
        Prepared::DepthwiseF32(p, act) => Some(float::depthwise(cx, p, act)),
        Prepared::FullyConnectedF32(p, act) => Some(float::fully_connected(cx, p, act)),
        Prepared::AveragePoolF32(p, act) => Some(float::pool(cx, p, act, true)),
        Prepared::MaxPoolF32(p, act) => Some(float::pool(cx, p, act, false)),
        Prepared::SoftmaxF32(beta, depth) => float::softmax(cx, *beta, *depth),
        _ => elementwise::unary(cx, prepared)
            .or_else(|| elementwise::binary(cx, prepared))
            .or_else(|| layout::kernel(cx, prepared))
            .or_else(|| transpose_conv::kernel(cx, prepared))
            .or_else(|| int8::kernel(cx, prepared)),
    }
}

/// [`super::weights_blob`] at [`ALIGNMENT`], padded at the end to a whole, non-zero
/// number of alignment units (the device buffer is never empty).
fn weights_blob(graph: &Graph) -> (Vec<u8>, Vec<usize>) {
    let (mut blob, offsets) = super::weights_blob(graph, ALIGNMENT);
    blob.resize(blob.len().next_multiple_of(ALIGNMENT).max(ALIGNMENT), 0);
    (blob, offsets)
}

/// Where the generated crate finds the `kiln-cuda` host driver (a local checkout or a
/// version).
pub type DriverDependency = super::CrateDependency;

/// Writes a crate around the model: `Cargo.toml` (depending on `kiln-cuda`),
/// `src/lib.rs`, `src/model.cu`, `src/model.weights.bin` and `src/model.manifest`. The
/// crate's `load()` compiles the source with NVRTC, uploads the weights and allocates
/// the arena once; see `kiln-cuda`'s `Session`. `boards/jetson` loads the same three
/// files from a folder at run time instead.
#[allow(clippy::too_many_arguments)]
pub fn write_crate(
    dir: &Path,
    crate_name: &str,
    graph_source: &str,
    graph: &Graph,
    plan: &Plan,
    driver: &DriverDependency,
    options: &CudaOptions,
) -> Result<CudaModel, crate::CompileError> {
    let model = emit(graph, plan, graph_source, options).map_err(|source| {
        crate::CompileError::CudaEmit {
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
    let dep = driver.toml_value();
    let cargo = format!(
        "[package]\nname = \"{crate_name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\ndescription = \"{} compiled for CUDA by kiln {}\"\n\n[dependencies]\nkiln-cuda = {dep}\n\n[workspace]\n",
        toml_text(graph_source),
        env!("CARGO_PKG_VERSION")
    );
    let lib = format!(
        r#"//! The model {source}, compiled ahead of time by kiln for CUDA (batch {batch}):
//! [`load`] it once (NVRTC compile, weights upload, one arena allocation), then call
//! `run` as often as needed; nothing is allocated on the device after `load`.

/// Samples per `run`.
pub const BATCH: usize = {batch};
/// Bytes of the one device arena (activations of every sample, inputs, outputs).
pub const ARENA_BYTES: usize = {arena};
/// The generated CUDA C source.
pub const CUDA_SOURCE: &str = include_str!("model.cu");
/// The launch plan and the arena layout.
pub const MANIFEST: &str = include_str!("model.manifest");
/// The constant tensors, uploaded once by [`load`].
pub static WEIGHTS: &[u8] = include_bytes!("model.weights.bin");

/// Loads the model on device 0 (see [`kiln_cuda::Session::load`]): an error, never a
/// panic, when there is no driver, no GPU or no NVRTC.
pub fn load(options: &kiln_cuda::LoadOptions) -> Result<kiln_cuda::Session, kiln_cuda::Error> {{
    let manifest = kiln_cuda::Manifest::parse(MANIFEST)?;
    kiln_cuda::Session::load(manifest, CUDA_SOURCE, WEIGHTS, options)
}}
"#,
        source = comment_text(graph_source),
        batch = model.batch,
        arena = model.arena_bytes,
    );
    for (path, bytes) in [
        (dir.join("Cargo.toml"), cargo.as_bytes()),
        (src.join("lib.rs"), lib.as_bytes()),
        (src.join("model.cu"), model.source.as_bytes()),
        (src.join("model.manifest"), model.manifest.as_bytes()),
        (src.join("model.weights.bin"), model.weights.as_slice()),
    ] {
        std::fs::write(&path, bytes).map_err(|e| io(e, &path))?;
    }
    Ok(model)
}

#[cfg(test)]
mod tests;
