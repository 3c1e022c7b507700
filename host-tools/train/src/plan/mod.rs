//! The static memory plan of a training graph: the order nodes run in (with gradient
//! checkpointing, some forward nodes run again during the backward pass) and the offset
//! of every activation and gradient in one f32 arena, computed once before running.
//!
//! Each computed value is a *buffer* alive from the step that writes it to the last step
//! that reads it; the graph's outputs, loss and gradients live to the end. An
//! elementwise node whose operand dies at that node writes over the operand (in place),
//! so both share one buffer. Offsets are placed greedily, largest buffer first, each at
//! the lowest offset that overlaps no placed buffer alive at a common step (the idea of
//! kiln's own planner, `kiln_codegen::plan`, and TFLM's greedy planner); the better of
//! two orders is kept. [`MemoryReport`] puts the arena next to the sum of all tensors
//! (no sharing) and the lower bound (most bytes alive at one step), so the quality of
//! the plan is visible.
//!
//! # Gradient checkpointing
//!
//! The forward nodes are cut into segments of consecutive nodes. A forward value is
//! *retained* (kept from its forward step to its last reader) when it is read by a
//! forward node of a later segment (a segment boundary), belongs to the last segment,
//! is a graph output, or comes from a node that must not run twice ([`recomputable`]).
//! Every other value is freed after its last forward reader; just before the first
//! backward node that reads such a value of segment `s`, the forward nodes of `s` that
//! produce the values the backward pass reads, and their ancestors inside `s`, run
//! again. Kernels are deterministic, so recomputed values, and so gradients, are bit
//! for bit those of a run without checkpointing. For a chain of `N` equal layers,
//! about `sqrt(N)` segments keep about `sqrt(N)` activations alive instead of `N`;
//! [`Checkpointing::Auto`] tries every segment count and keeps the smallest arena.

mod assign;
mod checkpoint;

pub use checkpoint::recomputable;

use crate::graph::{Kind, TOp, Tid, TrainGraph};
use assign::{lower_bound, place, Buffer};
use checkpoint::{schedule, Schedule};
use kiln_codegen::ir::Op;
use std::ops::Range;

/// Whether and how the forward activations are recomputed during the backward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Checkpointing {
    /// Every forward activation the backward pass reads stays alive (fastest).
    #[default]
    Off,
    /// Forward nodes cut into this many segments of about equal node counts.
    Segments(usize),
    /// Every segment count is planned; the smallest arena wins (ties: fewer nodes run
    /// again). Planning only: this never runs the graph.
    Auto,
}

/// Where a node's operand is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loc {
    /// The caller's feed of this index ([`TrainGraph::inputs`]).
    Feed(usize),
    /// The parameter of this index ([`TrainGraph::params`]).
    Param(usize),
    /// A constant tensor of the graph.
    Const(Tid),
    /// Elements of the arena.
    Arena(Range<usize>),
    /// An activation no earlier step computed (the graph is out of order); running
    /// the step fails, naming the node.
    Missing,
}

/// One step of the plan: a node, where its operands are and where its result goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Index in [`TrainGraph::nodes`].
    pub node: usize,
    /// Operand locations, in the node's operand order.
    pub inputs: Vec<Loc>,
    /// The result's elements in the arena.
    pub out: Range<usize>,
    /// The operand the result overwrites (same elements as `out`), if run in place.
    pub in_place: Option<usize>,
    /// True for a forward node run again by checkpointing.
    pub recompute: bool,
}

/// How much memory a plan needs, and how good it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryReport {
    /// Bytes of the arena: every activation and gradient of a training step.
    pub arena_bytes: usize,
    /// Bytes of all activations and gradients of the graph without any sharing.
    pub unshared_bytes: usize,
    /// Most bytes alive at one step of this schedule: no placement can do better.
    pub lower_bound_bytes: usize,
    /// Steps run in place over a dying operand.
    pub in_place: usize,
    /// Forward segments (1: no checkpointing).
    pub segments: usize,
    /// Forward nodes run a second time in the backward pass.
    pub recomputed: usize,
}

/// A static memory plan: run [`MemoryPlan::steps`] in order in an arena of
/// [`MemoryPlan::arena_len`] f32s.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Arena length in f32 elements.
    pub arena_len: usize,
    /// For every tensor kept after the run (outputs, loss, gradients, batch-norm statistics: [`TrainGraph::kept`]), its elements.
    pub kept: Vec<Option<Range<usize>>>,
    /// Sizes and quality.
    pub report: MemoryReport,
}

impl MemoryPlan {
    /// Plans `g` with `checkpointing` (and with in-place reuse of dying operands).
    pub fn new(g: &TrainGraph, checkpointing: Checkpointing) -> Self {
        match checkpointing {
            Checkpointing::Off => plan(g, &schedule(g, 1), true),
            Checkpointing::Segments(n) => plan(g, &schedule(g, n), true),
            Checkpointing::Auto => (1..=g.forward_len.max(1))
                .map(|n| plan(g, &schedule(g, n), true))
                .min_by_key(|p| (p.report.arena_bytes, p.report.recomputed, p.report.segments))
                .unwrap_or_else(|| plan(g, &schedule(g, 1), true)),
        }
    }

    /// Plans `g` without checkpointing and without in-place steps: every node writes a
    /// buffer of its own (a reference for tests of the in-place kernels).
    pub fn without_in_place(g: &TrainGraph) -> Self {
        plan(g, &schedule(g, 1), false)
    }
}
/// The operand an op may overwrite with its result: elementwise ops whose result has
/// that operand's shape. The executor's kernels for exactly these ops read the operand
/// from the result buffer when a step is in place.
pub fn in_place_operand(g: &TrainGraph, node: usize) -> Option<&'static [usize]> {
    let n = &g.nodes[node];
    let same = |k: usize| {
        n.inputs
            .get(k)
            .is_some_and(|&t| g.shape(t) == g.shape(n.output))
    };
    match n.op {
        TOp::Ir(Op::Relu | Op::Relu6 | Op::LeakyRelu { .. } | Op::Logistic | Op::Tanh) => {
            same(0).then_some(&[0])
        }
        TOp::Ir(Op::Reshape) => n
            .inputs
            .first()
            .is_some_and(|&t| g.tensors[t].len() == g.tensors[n.output].len())
            .then_some(&[0]),
        TOp::ReluGrad
        | TOp::Relu6Grad
        | TOp::LeakyReluGrad { .. }
        | TOp::SigmoidGrad
        | TOp::TanhGrad => (same(0) && same(1)).then_some(&[1]),
        TOp::Ir(Op::Add { .. } | Op::Mul { .. }) => (same(0) && same(1)).then_some(&[0, 1]),
        _ => None,
    }
}
/// One computed value: a tensor written at one step, read last at step `last`.
#[derive(Debug, Clone, Copy)]
struct Value {
    tensor: Tid,
    last: usize,
    buffer: usize,
}
fn plan(g: &TrainGraph, schedule: &Schedule, in_place: bool) -> MemoryPlan {
    let (order, segments) = (&schedule.order, schedule.segments);
    let n = order.len();
    let mut kept = vec![false; g.tensors.len()];
    for t in g.kept() {
        kept[t] = true;
    }
    // Values and who reads them.
    let mut values: Vec<Value> = Vec::new();
    let mut current = vec![usize::MAX; g.tensors.len()];
    let mut reads: Vec<Vec<usize>> = Vec::with_capacity(n);
    let mut writes = Vec::with_capacity(n);
    for (s, &(i, _)) in order.iter().enumerate() {
        let node = &g.nodes[i];
        let r = node
            .inputs
            .iter()
            .map(|&t| {
                let v = current[t];
                if v != usize::MAX {
                    values[v].last = values[v].last.max(s);
                }
                v
            })
            .collect();
        reads.push(r);
        let t = node.output;
        values.push(Value {
            tensor: t,
            last: if kept[t] { n } else { s },
            buffer: usize::MAX,
        });
        current[t] = values.len() - 1;
        writes.push(values.len() - 1);
    }
    // Buffers: a value written in place joins its operand's buffer.
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut steps_in_place = vec![None; n];
    for (s, &(i, _)) in order.iter().enumerate() {
        let node = &g.nodes[i];
        let w = writes[s];
        let over = in_place
            .then(|| in_place_operand(g, i))
            .flatten()
            .and_then(|ks| {
                ks.iter().copied().find(|&k| {
                    let v = reads[s][k];
                    let t = node.inputs[k];
                    v != usize::MAX
                        && values[v].last == s
                        && !kept[t]
                        && node.inputs.iter().filter(|&&u| u == t).count() == 1
                })
            });
        let b = match over {
            Some(k) => {
                steps_in_place[s] = Some(k);
                values[reads[s][k]].buffer
            }
            None => {
                buffers.push(Buffer {
                    first: s,
                    last: s,
                    len: g.tensors[node.output].len(),
                });
                buffers.len() - 1
            }
        };
        values[w].buffer = b;
        buffers[b].last = buffers[b].last.max(values[w].last);
    }
    let offsets = place(&buffers);
    let arena_len = buffers
        .iter()
        .zip(&offsets)
        .map(|(b, o)| o + b.len)
        .max()
        .unwrap_or(0);
    let range = |v: usize| {
        let b = values[v].buffer;
        offsets[b]..offsets[b] + g.tensors[values[v].tensor].len()
    };
    let steps = order
        .iter()
        .enumerate()
        .map(|(s, &(i, recompute))| {
            let node = &g.nodes[i];
            let inputs = node
                .inputs
                .iter()
                .zip(&reads[s])
                .map(|(&t, &v)| match &g.tensors[t].kind {
                    Kind::Input => g
                        .inputs
                        .iter()
                        .position(|&x| x == t)
                        .map_or(Loc::Missing, Loc::Feed),
                    Kind::Param => g
                        .params
                        .iter()
                        .position(|&x| x == t)
                        .map_or(Loc::Missing, Loc::Param),
                    Kind::Const(_) => Loc::Const(t),
                    Kind::Activation if v == usize::MAX => Loc::Missing,
                    Kind::Activation => Loc::Arena(range(v)),
                })
                .collect();
            Step {
                node: i,
                inputs,
                out: range(writes[s]),
                in_place: steps_in_place[s],
                recompute,
            }
        })
        .collect();
    let mut kept_at = vec![None; g.tensors.len()];
    for (t, &v) in current.iter().enumerate() {
        if kept[t] && v != usize::MAX {
            kept_at[t] = Some(range(v));
        }
    }
    let unshared: usize = g
        .tensors
        .iter()
        .filter(|t| t.kind == Kind::Activation)
        .map(|t| t.len())
        .sum();
    let report = MemoryReport {
        arena_bytes: arena_len * 4,
        unshared_bytes: unshared * 4,
        lower_bound_bytes: lower_bound(&buffers, n) * 4,
        in_place: steps_in_place.iter().filter(|k| k.is_some()).count(),
        segments,
        recomputed: order.iter().filter(|s| s.1).count(),
    };
    MemoryPlan {
        steps,
        arena_len,
        kept: kept_at,
        report,
    }
}
