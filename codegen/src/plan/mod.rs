//! Static memory plan: an execution order for the nodes, and where every tensor lives
//! while the model runs (caller's input or output buffer, flash, or an offset into the
//! one arena). Nothing is allocated at run time; the arena size is known at compile time.
//!
//! [`plan`] works in three stages:
//!
//! 1. **Sharing rules** that hold for any order. A RESHAPE result shares its input's
//!    bytes ([`Reuse::Alias`]; the chain may end in a graph input or output buffer),
//!    except when the result is a graph output (the emitter copies into the caller's
//!    buffer) or the input is a constant (the emitter copies out of flash). Element-wise
//!    nodes (RELU, RELU6, LOGISTIC, TANH, int8 QUANTIZE, and ADD/MUL on an operand with
//!    the result's exact shape and dtype) may write their result over an arena operand
//!    that no later node reads ([`Reuse::InPlace`]), when [`PlanOptions::in_place`] is on;
//!    so may size-preserving stride-1 convs (below). Banded blocks are fixed here too.
//! 2. **Order**: the topological order whose peak of live arena bytes is lowest, found
//!    by an exact search over sets of executed nodes (capped by
//!    [`PlanOptions::max_search_states`], then the better of the graph's own order and a
//!    greedy one). The peak of the chosen order is [`Plan::lower_bound_bytes`].
//! 3. **Offsets**: tensors sharing bytes form one buffer, live from the step writing its
//!    first tensor to the last step reading any of them; buffers are placed largest
//!    first at the lowest offset free during their whole lifetime (TFLM's greedy idea),
//!    or, where at most two buffers are live at any step (chains), alternately at the
//!    bottom and the top of an arena of exactly the lower bound.
//!
//! Steps are positions in [`Plan::order`]; a tensor is live from the step that writes it
//! to the last step that reads it or one of its aliases.
//!
//! # Lowering the bound itself
//!
//! The bound of an order is what the ops force to coexist, so the planner also changes
//! how ops run (kernels in `kiln_runtime::kernels::in_place`, all bit-exact with the
//! reference kernels), each behind a [`PlanOptions`] flag, and [`technique_arenas`]
//! reports the arena with each switched off:
//!
//! - **In-place convs** ([`PlanOptions::in_place_conv`]): a stride-1 CONV_2D or
//!   DEPTHWISE_CONV_2D whose result has its input's shape (a 64→64 pointwise 1x1, a
//!   "same" 3x3 depthwise or 32→32 conv) writes each output pixel over the input pixel
//!   at the same position, in raster order. Output pixel `l = y * W + x` reads input
//!   pixels from `l - (pad_top * W + pad_left)` on; those before `l` are already
//!   overwritten, so a ring of `pad_top * W + pad_left + 1` input pixels (input pixel `l`
//!   copied in just before output pixel `l` is written) is all the extra memory needed:
//!   for KWS's 25x5x64 3x3 depthwise convs 7 pixels (448 B) instead of a second
//!   8,000-byte tensor, for a pointwise conv one pixel. The ring is the node's
//!   [`Plan::scratch`], an arena buffer live for that one step. These are ordinary
//!   [`Reuse::InPlace`] candidates, chosen per node by the order search like the
//!   element-wise ones.
//! - **Banded residual blocks** ([`PlanOptions::band_blocks`]): `y = conv_b(conv_a(x)) +
//!   x` (the ADD fused into `conv_b` by `passes::fuse_residual`), both convs stride 1 and
//!   size-preserving, `x` read by the two convs only. The block runs row by row: before
//!   output row `r`, every row of `t = conv_a(x)` up to `r + below_b` (the rows `conv_b`
//!   reads below its centre) is computed into a ring of `span_b` rows, then output row
//!   `r` is written over `x`'s row `r`, each skip element read just before it is
//!   overwritten. Rows of `x` that `t` still needs are never overwritten early: the last
//!   row of `t` computed at step `r` starts at `x` row `r + below_b - pad_top_a >= r`,
//!   which holds when `below_b >= pad_top_a` (always for equal odd "same" filters). So
//!   `t` never exists whole ([`Reuse::Band`]: no bytes) and the result needs no bytes of
//!   its own ([`Reuse::BandBlock`]): ResNet-8's first block holds 16,384 + 1,536 bytes
//!   instead of 2 x 16,384.
//!
//! Both trade speed for memory (their kernels are plain loops; the out-of-place ones
//! have Cortex-M DSP versions), so with [`PlanOptions::only_where_smaller`] (default)
//! [`plan`] switches each in-place conv and banded block off in turn and keeps it off
//! when the arena does not grow ([`PlanOptions::out_of_place`]). KWS needs all eight of
//! its convs in place (any one out of place brings back 16,000 B); ResNet-8 keeps only
//! its first block banded.
//!
//! # Kernel scratch
//!
//! With [`PlanOptions::dsp_scratch`] (set for cortex-m4/m7/m33 by
//! `CompileOptions::plan_options`) the Cortex-M DSP kernels' scratch is planned too:
//! every node that runs one gets its words (`dsp.rs`: four packed im2col columns, the
//! prepared requantization of each output channel, held-back rows, a chunk of pixels,
//! the ADD's tables) as its [`Plan::scratch`], live for its one step, so it overlaps
//! dead tensors; an in-place conv's DSP kernel takes that range instead of the ring, a
//! banded block's follows its ring. `ARENA_BYTES` is then all the RAM a model needs but
//! the call stack. `kiln compile ... --target cortex-m4` prints each step's scratch and
//! live bytes.
//!
//! The plans without (`PlanOptions::default()`, e.g. the Cortex-M0/M3, which run the
//! reference kernels) and with DSP scratch, as `plan::tests` checks them (arena = bound):
//!
//! | technique off | KWS | ResNet-8 | KWS, DSP scratch | ResNet-8, DSP scratch |
//! |---|---|---|---|---|
//! | none (all on) | 8,448 | 25,152 | 9,536 | 27,424 |
//! | `band_blocks` | 8,448 | 32,768 | 9,536 | 36,480 |
//! | `in_place_conv` | 16,000 | 32,768 | 16,512 | 35,072 |
//! | `in_place` (element-wise and residual) | 8,448 | 32,768 | 9,536 | 35,456 |
//! | all three | 16,000 | 49,152 | 16,512 | 52,864 |
//!
//! (With DSP scratch the convs' prepared requantization comes from flash,
//! `dsp::with_flash_channels`, so the scratch is columns, staged pixels and rows only.)

mod assign;
pub(crate) mod dsp;
mod model;
mod order;
mod report;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use report::{intervals, report, Interval, NodeReport};

use crate::ir::{Graph, NodeId, TensorId, ValidateError};
use assign::{assign, Buffer};
use model::{Home, Model};
use order::Choice;

/// Largest [`PlanOptions::alignment`] accepted (1 MiB).
pub const MAX_ALIGNMENT: usize = 1 << 20;

/// Where a tensor's bytes are while the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A constant, stored in flash with the weights.
    Const,
    /// Graph input `i`: the caller's (read-only) input buffer.
    Input(usize),
    /// Graph output `j`: the caller's output buffer.
    Output(usize),
    /// `offset` bytes into the arena. Tensors no node reads or writes also get
    /// `Arena(0)`, with no bytes reserved.
    Arena(usize),
}

/// How a node's result is stored, so the emitter picks the right kernel call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reuse {
    /// The result has its own bytes, disjoint from every operand's.
    #[default]
    None,
    /// A RESHAPE whose result shares its operand's bytes: nothing to run.
    Alias,
    /// The result is written over operand `operand` (same location, shape and dtype),
    /// which no later node reads: use the in-place kernel variant (with
    /// [`Plan::scratch`] for a conv or depthwise conv).
    InPlace {
        /// Index of the overwritten operand in the node's inputs.
        operand: usize,
    },
    /// The first conv of a residual block run in row bands: its result is never stored
    /// whole, and nothing runs at this step; node `into` computes its rows in a ring
    /// ([`Plan::scratch`] of `into`) as it needs them.
    Band {
        /// The block's second conv (with the residual ADD), which runs both.
        into: NodeId,
    },
    /// The second conv of a residual block run in row bands: it runs node `first` and
    /// itself band by band and writes the block's result over operand 3 (the skip
    /// tensor, the block's input).
    BandBlock {
        /// The block's first conv.
        first: NodeId,
    },
}

/// Arena bytes a node uses as scratch while it runs (an in-place conv's ring of input
/// pixels, a banded block's ring of rows, and with [`PlanOptions::dsp_scratch`] the DSP
/// kernels' scratch, after the ring for a banded block): planned like a tensor live for
/// one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scratch {
    /// Arena offset in bytes.
    pub offset: usize,
    /// Bytes (a multiple of the alignment).
    pub bytes: usize,
}

/// Settings of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Every arena offset is a multiple of this, and every arena tensor takes a
    /// multiple of it (a power of two, at most [`MAX_ALIGNMENT`]). Default 16.
    pub alignment: usize,
    /// Let element-wise nodes (and convs with a fused residual ADD) overwrite an operand
    /// nobody reads afterwards. Default on; off shows what in-place execution saves.
    pub in_place: bool,
    /// Let stride-1 convs and depthwise convs whose result has their input's shape
    /// (pointwise 1x1 convs, "same" 3x3 convs) overwrite their input, keeping a ring of
    /// `pad_top * W + pad_left + 1` input pixels as scratch. Default on.
    pub in_place_conv: bool,
    /// Run residual blocks `conv_b(conv_a(x)) + x` of stride-1 convs in row bands: the
    /// intermediate tensor only exists as a ring of rows and the result overwrites `x`.
    /// Default on.
    pub band_blocks: bool,
    /// Nodes (indices into the graph's nodes) that must run out of place even where
    /// `in_place_conv` or `band_blocks` would allow otherwise. [`plan`] fills it itself
    /// when `only_where_smaller` is on.
    pub out_of_place: Vec<usize>,
    /// Keep in-place convs and banded blocks only where they lower the arena: they
    /// trade speed for memory (their kernels are plain loops, slower than the
    /// out-of-place DSP kernels), so each is switched off in turn and stays off when the
    /// arena does not grow. Default on.
    pub only_where_smaller: bool,
    /// Sets of executed nodes the exact order search may visit before it falls back to
    /// a greedy order; 0 keeps the graph's own order. Default 200 000.
    pub max_search_states: usize,
    /// Fail when the arena (or one tensor in it) needs more bytes than this.
    pub max_arena_bytes: Option<usize>,
    /// Plan the scratch of the Cortex-M DSP kernels (`kiln_runtime::kernels::dsp`: im2col
    /// columns, requantization tables, staged rows) in the arena, as each node's
    /// [`Plan::scratch`] live for its one step, so it overlaps dead tensors and the arena
    /// is all the RAM the model takes besides a small call stack. Set from the target by
    /// [`crate::compile::CompileOptions::plan_options`] (cortex-m4/m7/m33). Default off.
    pub dsp_scratch: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            alignment: 16,
            in_place: true,
            in_place_conv: true,
            band_blocks: true,
            out_of_place: Vec::new(),
            only_where_smaller: true,
            max_search_states: 200_000,
            max_arena_bytes: None,
            dsp_scratch: false,
        }
    }
}

/// Why a graph cannot be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The graph fails validation.
    #[error(transparent)]
    Invalid(#[from] ValidateError),
    /// The options are unusable.
    #[error("plan options: {0}")]
    Options(String),
    /// A graph output is also a graph input: the caller's buffers cannot be both.
    #[error("graph output {output} (tensor {tensor} '{name}') is also graph input {input}")]
    OutputIsInput {
        /// Index in the graph's outputs.
        output: usize,
        /// Index in the graph's inputs.
        input: usize,
        /// Tensor index.
        tensor: usize,
        /// Tensor name.
        name: String,
    },
    /// A graph output is a constant, which no node writes.
    #[error("graph output {output} (tensor {tensor} '{name}') is a constant")]
    OutputIsConstant {
        /// Index in the graph's outputs.
        output: usize,
        /// Tensor index.
        tensor: usize,
        /// Tensor name.
        name: String,
    },
    /// The same tensor is listed as two graph outputs.
    #[error("graph outputs {first} and {second} are the same tensor {tensor} '{name}'")]
    DuplicateOutput {
        /// The first output index.
        first: usize,
        /// The repeated output index.
        second: usize,
        /// Tensor index.
        tensor: usize,
        /// Tensor name.
        name: String,
    },
    /// One arena tensor alone exceeds [`PlanOptions::max_arena_bytes`].
    #[error("tensor {tensor} '{name}' needs {bytes} arena bytes, over the limit of {limit}")]
    TensorTooLarge {
        /// Tensor index.
        tensor: usize,
        /// Tensor name.
        name: String,
        /// Its aligned size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The arena exceeds [`PlanOptions::max_arena_bytes`].
    #[error(
        "the plan needs {bytes} arena bytes (lower bound {lower_bound}), over the limit of {limit}"
    )]
    ArenaTooLarge {
        /// Arena bytes of the plan.
        bytes: usize,
        /// Peak live bytes of the chosen order.
        lower_bound: usize,
        /// The limit.
        limit: usize,
    },
    /// The order given to [`plan_with_order`] is not a topological order of the graph.
    #[error("order: {0}")]
    Order(String),
}

/// The memory plan of one graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Nodes in execution order (a topological order of the graph).
    pub order: Vec<NodeId>,
    /// Location of every tensor, indexed by `TensorId`.
    pub locations: Vec<Location>,
    /// Bytes of arena the plan needs (the end of the highest arena tensor).
    pub arena_bytes: usize,
    /// For `order`: the largest total size of arena tensors live at the same time
    /// (tensors sharing memory in place counted once). No plan for this order can use
    /// less arena.
    pub lower_bound_bytes: usize,
    /// The lowest such bound over all orders examined (equals `lower_bound_bytes` when
    /// the search picked the best order it found).
    pub best_order_bound_bytes: usize,
    /// The bound of the graph's own node order, for comparison in reports.
    pub graph_order_bound_bytes: usize,
    /// True when the order search was exhaustive: no topological order has a lower
    /// bound than `best_order_bound_bytes`.
    pub order_is_optimal: bool,
    /// How each node stores its result, indexed by `NodeId`.
    pub reuse: Vec<Reuse>,
    /// Arena scratch of each node while it runs, indexed by `NodeId`.
    pub scratch: Vec<Option<Scratch>>,
    /// Arena bytes live while each step of `order` runs (shared bytes counted once).
    pub live_bytes: Vec<usize>,
    /// The alignment of every arena offset and size.
    pub alignment: usize,
}

impl Plan {
    /// Location of a tensor.
    pub fn location(&self, id: TensorId) -> Location {
        self.locations[id.0]
    }

    /// How node `id` stores its result.
    pub fn reuse(&self, id: NodeId) -> Reuse {
        self.reuse[id.0]
    }

    /// Arena bytes a tensor occupies (its size rounded up to the alignment), 0 for
    /// tensors outside the arena.
    pub fn arena_size(&self, graph: &Graph, id: TensorId) -> usize {
        match self.location(id) {
            Location::Arena(_) => graph.info(id).byte_size().next_multiple_of(self.alignment),
            _ => 0,
        }
    }
}

/// Plans `graph`: picks the order with the lowest peak of live arena bytes the search
/// finds, decides aliases and in-place execution, and places every tensor.
pub fn plan(graph: &Graph, options: &PlanOptions) -> Result<Plan, PlanError> {
    let mut best = plan_once(graph, options)?;
    if !options.only_where_smaller {
        return Ok(best);
    }
    // Each in-place conv or banded block, switched off in turn: kept off (the faster
    // out-of-place kernels run) when the arena does not grow.
    let mut options = options.clone();
    for v in 0..graph.nodes.len() {
        let conv_in_place = matches!(best.reuse[v], Reuse::InPlace { operand: 0 })
            && match &graph.nodes[v].op {
                crate::ir::Op::Conv2d(a) => a.residual.is_none(),
                crate::ir::Op::DepthwiseConv2d(_) => true,
                _ => false,
            };
        let banded = matches!(best.reuse[v], Reuse::Band { .. } | Reuse::BandBlock { .. });
        let slow = conv_in_place || banded;
        if !slow || options.out_of_place.contains(&v) {
            continue;
        }
        options.out_of_place.push(v);
        match plan_once(graph, &options) {
            Ok(p) if p.arena_bytes <= best.arena_bytes => best = p,
            _ => {
                options.out_of_place.pop();
            }
        }
    }
    Ok(best)
}

/// [`plan`] with exactly the techniques `options` allows.
fn plan_once(graph: &Graph, options: &PlanOptions) -> Result<Plan, PlanError> {
    check(graph, options)?;
    let model = Model::new(graph, options);
    check_tensor_sizes(&model, options)?;
    let choice = order::choose(&model, options.max_search_states);
    build(&model, choice, options)
}

/// Plans `graph` for a given execution `order` (every node once, operands produced
/// before use), e.g. to compare orders in a report.
pub fn plan_with_order(
    graph: &Graph,
    order: &[NodeId],
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    check(graph, options)?;
    let model = Model::new(graph, options);
    check_tensor_sizes(&model, options)?;
    let order = check_order(&model, order)?;
    let graph_order: Vec<usize> = (0..model.nodes()).collect();
    let choice = Choice {
        bound: model.trace(&order).peak(),
        graph_order_bound: model.trace(&graph_order).peak(),
        order,
        optimal: false,
    };
    build(&model, choice, options)
}

/// The arena of one plan with some of the memory-saving techniques switched off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TechniqueArena {
    /// Which techniques are on: `all`, `without <flag>` or `none`.
    pub name: String,
    /// [`Plan::arena_bytes`] with those options.
    pub arena_bytes: usize,
    /// [`Plan::lower_bound_bytes`] with those options.
    pub lower_bound_bytes: usize,
}

/// Plans `graph` with `options` as given, then with each of the [`PlanOptions`]
/// techniques switched off in turn (`band_blocks`, `in_place_conv`, `in_place`), then
/// with all three off: what each technique saves, for reports. Techniques already off in
/// `options` are skipped.
pub fn technique_arenas(
    graph: &Graph,
    options: &PlanOptions,
) -> Result<Vec<TechniqueArena>, PlanError> {
    type Switch = fn(&mut PlanOptions);
    let switches: [(&str, bool, Switch); 3] = [
        ("band_blocks", options.band_blocks, |o| {
            o.band_blocks = false
        }),
        ("in_place_conv", options.in_place_conv, |o| {
            o.in_place_conv = false
        }),
        ("in_place", options.in_place, |o| o.in_place = false),
    ];
    let base = PlanOptions {
        max_arena_bytes: None,
        ..options.clone()
    };
    let row = |name: String, o: &PlanOptions| -> Result<TechniqueArena, PlanError> {
        let p = plan(graph, o)?;
        Ok(TechniqueArena {
            name,
            arena_bytes: p.arena_bytes,
            lower_bound_bytes: p.lower_bound_bytes,
        })
    };
    let mut rows = vec![row("all".into(), &base)?];
    let mut none = base.clone();
    for (flag, on, off) in switches.into_iter().filter(|s| s.1) {
        let _ = on;
        let mut o = base.clone();
        off(&mut o);
        off(&mut none);
        rows.push(row(format!("without {flag}"), &o)?);
    }
    rows.push(row("none".into(), &none)?);
    Ok(rows)
}

fn check(graph: &Graph, options: &PlanOptions) -> Result<(), PlanError> {
    let a = options.alignment;
    if !a.is_power_of_two() || a > MAX_ALIGNMENT {
        return Err(PlanError::Options(format!(
            "alignment {a} is not a power of two up to {MAX_ALIGNMENT}"
        )));
    }
    graph.validate()?;
    check_outputs(graph)
}

fn check_outputs(graph: &Graph) -> Result<(), PlanError> {
    for (output, id) in graph.outputs.iter().enumerate() {
        let (tensor, name) = (id.0, graph.tensor(*id).name.clone());
        if let Some(input) = graph.inputs.iter().position(|i| i == id) {
            return Err(PlanError::OutputIsInput {
                output,
                input,
                tensor,
                name,
            });
        }
        if graph.tensor(*id).data.is_some() {
            return Err(PlanError::OutputIsConstant {
                output,
                tensor,
                name,
            });
        }
        if let Some(second) = graph.outputs[output + 1..].iter().position(|o| o == id) {
            return Err(PlanError::DuplicateOutput {
                first: output,
                second: output + 1 + second,
                tensor,
                name,
            });
        }
    }
    Ok(())
}

fn check_tensor_sizes(model: &Model, options: &PlanOptions) -> Result<(), PlanError> {
    let Some(limit) = options.max_arena_bytes else {
        return Ok(());
    };
    match (0..model.size.len()).find(|&t| model.size[t] > limit) {
        Some(t) => Err(PlanError::TensorTooLarge {
            tensor: t,
            name: model.graph.tensors[t].name.clone(),
            bytes: model.size[t],
            limit,
        }),
        None => Ok(()),
    }
}

/// Checks that `order` runs every node once, after the producers of its operands.
fn check_order(model: &Model, order: &[NodeId]) -> Result<Vec<usize>, PlanError> {
    if order.len() != model.nodes() {
        return Err(PlanError::Order(format!(
            "{} nodes given for a graph of {}",
            order.len(),
            model.nodes()
        )));
    }
    let mut done = model::NodeSet::new(model.nodes());
    for (step, id) in order.iter().enumerate() {
        let v = id.0;
        let ready = v < model.nodes()
            && !done.contains(v)
            && model.preds[v].iter().all(|&p| done.contains(p));
        if !ready {
            return Err(PlanError::Order(format!(
                "node {v} at step {step} is out of range, repeated, or runs before an operand's producer"
            )));
        }
        done.insert(v);
    }
    Ok(order.iter().map(|id| id.0).collect())
}

/// Turns an order into a plan: in-place decisions, buffers, offsets, locations.
fn build(model: &Model, choice: Choice, options: &PlanOptions) -> Result<Plan, PlanError> {
    let trace = model.trace(&choice.order);
    let reuse: Vec<Reuse> = (0..model.nodes())
        .map(|v| match (model.alias[v], trace.in_place[v]) {
            (true, _) => Reuse::Alias,
            _ if model.band_into[v].is_some() => Reuse::Band {
                into: NodeId(model.band_into[v].unwrap_or(v)),
            },
            (false, Some(_)) if model.band_first[v].is_some() => Reuse::BandBlock {
                first: NodeId(model.band_first[v].unwrap_or(v)),
            },
            (false, Some(operand)) => Reuse::InPlace { operand },
            (false, None) => Reuse::None,
        })
        .collect();
    let (mut buffers, buffer_of) = buffers(model, &choice.order, &reuse);
    let mut scratch_buffer = vec![None; model.nodes()];
    for (step, &v) in choice.order.iter().enumerate() {
        if trace.scratch[v] > 0 {
            scratch_buffer[v] = Some(buffers.len());
            buffers.push(Buffer {
                first: step,
                last: step,
                size: trace.scratch[v],
            });
        }
    }
    let live_bytes = live_bytes(&buffers, choice.order.len());
    debug_assert_eq!(live_bytes, trace.during, "buffers disagree with the trace");
    let lower_bound_bytes = trace.peak();
    let (offsets, arena_bytes) = assign(&buffers, lower_bound_bytes);
    if let Some(limit) = options.max_arena_bytes.filter(|&l| arena_bytes > l) {
        return Err(PlanError::ArenaTooLarge {
            bytes: arena_bytes,
            lower_bound: lower_bound_bytes,
            limit,
        });
    }
    let locations = (0..model.home.len())
        .map(|t| match model.home[t] {
            Home::Fixed(location) => location,
            Home::Arena => Location::Arena(offsets[buffer_of[t]]),
            Home::Unused | Home::Band => Location::Arena(0),
        })
        .collect();
    let scratch = scratch_buffer
        .iter()
        .map(|b| {
            b.map(|b| Scratch {
                offset: offsets[b],
                bytes: buffers[b].size,
            })
        })
        .collect();
    Ok(Plan {
        order: choice.order.iter().map(|&v| NodeId(v)).collect(),
        locations,
        arena_bytes,
        lower_bound_bytes,
        best_order_bound_bytes: choice.bound.min(lower_bound_bytes),
        graph_order_bound_bytes: choice.graph_order_bound,
        order_is_optimal: choice.optimal,
        reuse,
        scratch,
        live_bytes,
        alignment: options.alignment,
    })
}

/// The arena buffers of an order: one per set of tensors sharing bytes (reshape alias
/// groups, joined by in-place nodes), and the buffer of every arena tensor.
fn buffers(model: &Model, order: &[usize], reuse: &[Reuse]) -> (Vec<Buffer>, Vec<usize>) {
    let tensors = model.home.len();
    let mut step_of = vec![0; model.nodes()];
    for (step, &v) in order.iter().enumerate() {
        step_of[v] = step;
    }
    let mut joined = UnionFind::new(tensors);
    for (v, r) in reuse.iter().enumerate() {
        let operand = match r {
            Reuse::InPlace { operand } => Some(*operand),
            Reuse::BandBlock { .. } => Some(3),
            _ => None,
        };
        if let Some(operand) = operand {
            let x = model.graph.nodes[v].inputs[operand].0;
            joined.union(model.group[x], model.group[model.output(v)]);
        }
    }
    let mut index = vec![usize::MAX; tensors];
    let mut buffers: Vec<Buffer> = Vec::new();
    for t in (0..tensors).filter(|&t| model.home[t] == Home::Arena) {
        let root = joined.find(model.group[t]);
        if index[root] == usize::MAX {
            index[root] = buffers.len();
            buffers.push(Buffer {
                first: usize::MAX,
                last: 0,
                size: 0,
            });
        }
        let b = &mut buffers[index[root]];
        let first = model.producer[t].map_or(0, |p| step_of[p]);
        let last = model.group_readers[t]
            .iter()
            .map(|&r| step_of[r])
            .fold(first, usize::max);
        b.first = b.first.min(first);
        b.last = b.last.max(last);
        b.size = b.size.max(model.size[t]);
    }
    let buffer_of = (0..tensors)
        .map(|t| index[joined.find(model.group[t])])
        .collect();
    (buffers, buffer_of)
}

/// Bytes of the buffers live at each step.
fn live_bytes(buffers: &[Buffer], steps: usize) -> Vec<usize> {
    let mut live = vec![0; steps];
    for b in buffers {
        for bytes in &mut live[b.first..=b.last] {
            *bytes += b.size;
        }
    }
    live
}

/// Disjoint sets of tensor indices.
struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind((0..n).collect())
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        self.0[a] = b;
    }
}
