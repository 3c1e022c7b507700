//! What the planner knows about a graph before it picks an order: where tensors outside
//! the arena live, which tensors share bytes whatever the order (reshape aliases), which
//! nodes may overwrite an operand, and what running one more node costs in arena bytes.
//!
//! The cost of running node `v` after the set of nodes `done` depends on `done` only, not
//! on the order inside it (a node may run in place exactly when every other reader of
//! its operand is in `done`). That is what makes the dynamic program in `order.rs` exact.
//!
//! Two kinds of node need arena scratch while they run, counted in that cost: a conv or
//! depthwise conv running in place keeps a ring of input pixels, and the second conv of
//! a banded residual block keeps a ring of rows of the first conv's result (which then
//! takes no arena bytes at all: [`Home::Band`]). With [`PlanOptions::dsp_scratch`] the
//! Cortex-M DSP kernels' own scratch (im2col columns, requantization tables, staged
//! rows; see `dsp.rs`) is counted too, for every node that has some, in or out of place.

use super::{Location, PlanOptions};
use crate::exec::kernel::Prepared;
use crate::ir::{Conv2dAttrs, DType, Graph, Op, TensorId};

/// A set of node indices, as a bitset (a state of the order search).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct NodeSet(Box<[u64]>);

impl NodeSet {
    /// The empty set over `n` nodes.
    pub(super) fn new(n: usize) -> Self {
        NodeSet(vec![0; n.div_ceil(64)].into_boxed_slice())
    }

    pub(super) fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    pub(super) fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
}

/// Where a tensor lives when the order does not matter (everything but arena offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Home {
    /// Flash, the caller's input or output buffer: not arena.
    Fixed(Location),
    /// Somewhere in the arena.
    Arena,
    /// No node reads or writes the tensor.
    Unused,
    /// The first conv's result in a banded residual block: it only ever exists as rows
    /// in the second conv's scratch ring.
    Band,
}

/// Static facts about a validated graph, all indexed by node or tensor index.
pub(super) struct Model<'g> {
    pub(super) graph: &'g Graph,
    /// Home of each tensor; reshape aliases inherit their input's home.
    pub(super) home: Vec<Home>,
    /// Aligned arena bytes of each tensor (0 unless its alias group is in the arena).
    pub(super) size: Vec<usize>,
    /// The tensor whose bytes each tensor shares through reshape aliases (itself if none).
    pub(super) group: Vec<usize>,
    /// Nodes reading any tensor of the alias group, indexed by the group's root tensor.
    pub(super) group_readers: Vec<Vec<usize>>,
    /// The node producing each tensor.
    pub(super) producer: Vec<Option<usize>>,
    /// Nodes that must run before each node (producers of its operands).
    pub(super) preds: Vec<Vec<usize>>,
    /// Nodes whose result is an alias of their operand (reshape): nothing runs.
    pub(super) alias: Vec<bool>,
    /// Operand indices each node may overwrite with its result, best first, each with
    /// the aligned scratch bytes the node then needs while it runs.
    pub(super) candidates: Vec<Vec<(usize, usize)>>,
    /// For the first conv of a banded residual block: the second conv, which runs both.
    pub(super) band_into: Vec<Option<usize>>,
    /// For the second conv of a banded residual block: the first conv.
    pub(super) band_first: Vec<Option<usize>>,
    /// Aligned arena bytes of kernel scratch each node needs while it runs out of place
    /// (or in place over a fused residual's skip operand): the DSP kernels' scratch with
    /// [`PlanOptions::dsp_scratch`], 0 otherwise.
    pub(super) out_scratch: Vec<usize>,
}

impl<'g> Model<'g> {
    /// Analyses `graph`, which must be valid and have distinct outputs that are neither
    /// inputs nor constants.
    pub(super) fn new(graph: &'g Graph, options: &PlanOptions) -> Self {
        let producer = producers(graph);
        let mut model = Model {
            graph,
            home: homes(graph, &producer),
            size: vec![0; graph.tensors.len()],
            group: (0..graph.tensors.len()).collect(),
            group_readers: vec![Vec::new(); graph.tensors.len()],
            preds: Vec::new(),
            alias: vec![false; graph.nodes.len()],
            candidates: Vec::new(),
            band_into: vec![None; graph.nodes.len()],
            band_first: vec![None; graph.nodes.len()],
            out_scratch: vec![0; graph.nodes.len()],
            producer,
        };
        model.add_aliases();
        model.add_readers_and_sizes(options.alignment);
        let kernels = conv_kernels(graph, options.dsp_scratch);
        if options.band_blocks {
            model.add_bands(&kernels, options);
        }
        if options.dsp_scratch {
            model.out_scratch = (0..graph.nodes.len())
                .map(|v| match &kernels[v] {
                    Some(k) if !model.alias[v] && model.band_into[v].is_none() => {
                        aligned(4 * super::dsp::out_of_place_words(k), options.alignment)
                    }
                    _ => 0,
                })
                .collect();
        }
        model.preds = graph
            .nodes
            .iter()
            .map(|n| model.operand_producers(&n.inputs))
            .collect();
        model.candidates = (0..graph.nodes.len())
            .map(|v| {
                if let Some(ring) = model.band_ring(v, &kernels, options) {
                    // The banded block always writes over its skip tensor (operand 3).
                    return vec![(3, ring)];
                }
                let mut candidates: Vec<(usize, usize)> = Vec::new();
                if options.in_place {
                    // Element-wise kernels have no scratch; a conv with a fused residual
                    // takes the same scratch in place as out of place.
                    let scratch = model.out_scratch[v];
                    candidates.extend(
                        model
                            .in_place_candidates(v)
                            .into_iter()
                            .map(|k| (k, scratch)),
                    );
                }
                if options.in_place_conv && !options.out_of_place.contains(&v) {
                    candidates.extend(model.conv_in_place(v, &kernels, options));
                }
                candidates
            })
            .collect();
        model
    }

    /// Scratch bytes of a stride-1 conv or depthwise conv writing over its input
    /// (operand 0): a ring of input pixels (see `kiln_runtime::kernels::in_place`), or
    /// with [`PlanOptions::dsp_scratch`] the scratch of the DSP in-place kernel that
    /// runs it instead (see `dsp.rs`).
    fn conv_in_place(
        &self,
        v: usize,
        kernels: &[Option<Prepared>],
        options: &PlanOptions,
    ) -> Option<(usize, usize)> {
        use kiln_runtime::kernels::in_place::{conv_2d, depthwise_conv_2d};
        let alignment = options.alignment;
        let prepared = kernels[v].as_ref()?;
        let (elements, elem_bytes) = match prepared {
            Prepared::Conv2dI8(p, _) => (conv_2d::conv_2d_in_place_scratch(p)?, 1),
            Prepared::Conv2dF32(p, _) => (conv_2d::conv_2d_in_place_scratch(p)?, 4),
            Prepared::DepthwiseI8(p, _) => (depthwise_conv_2d::depthwise_in_place_scratch(p)?, 1),
            Prepared::DepthwiseF32(p, _) => (depthwise_conv_2d::depthwise_in_place_scratch(p)?, 4),
            _ => return None,
        };
        let node = &self.graph.nodes[v];
        let (x, y) = (node.inputs[0], node.outputs[0]);
        let (xi, yi) = (self.graph.info(x), self.graph.info(y));
        let g = self.group[x.0];
        let shared = node.inputs[1..].iter().any(|t| self.group[t.0] == g);
        let fits = !self.alias[v]
            && self.home[y.0] == Home::Arena
            && self.home[g] == Home::Arena
            && !shared
            && xi.shape == yi.shape
            && xi.dtype == yi.dtype;
        let dsp = options
            .dsp_scratch
            .then(|| super::dsp::in_place_conv_words(prepared))
            .flatten();
        let bytes = dsp.map_or(elements * elem_bytes, |words| 4 * words);
        fits.then(|| (0, aligned(bytes, alignment)))
    }

    /// Pairs `first -> second` of stride-1 convs forming a residual block
    /// `second(first(x)) + x` (the ADD fused into `second`) that run in row bands: the
    /// first conv's result is read by the second conv only, `x` by the two convs only,
    /// and the runtime's `block_ring_rows` accepts the pair.
    fn add_bands(&mut self, kernels: &[Option<Prepared>], options: &PlanOptions) {
        let alignment = options.alignment;
        for b in 0..self.nodes() {
            let Some(a) = self.band_pair(b, kernels, alignment) else {
                continue;
            };
            if options.out_of_place.contains(&a) || options.out_of_place.contains(&b) {
                continue;
            }
            let t = self.graph.nodes[b].inputs[0].0;
            self.home[t] = Home::Band;
            self.size[t] = 0;
            self.band_into[a] = Some(b);
            self.band_first[b] = Some(a);
        }
    }

    /// The first conv of the banded block ending at node `b`, if `b` ends one.
    fn band_pair(&self, b: usize, kernels: &[Option<Prepared>], alignment: usize) -> Option<usize> {
        let Some(Prepared::Conv2dAddI8(pb, _, _)) = kernels[b].as_ref() else {
            return None;
        };
        let node_b = &self.graph.nodes[b];
        let (t, x) = (node_b.inputs[0].0, node_b.inputs.get(3)?.0);
        let a = self.producer[t]?;
        let Some(Prepared::Conv2dI8(pa, _)) = kernels[a].as_ref() else {
            return None;
        };
        let node_a = &self.graph.nodes[a];
        let mut x_readers = self.group_readers[self.group[x]].clone();
        x_readers.sort_unstable();
        let constants = |n: &crate::ir::Node| {
            n.inputs[1..]
                .iter()
                .all(|c| self.home[c.0] == Home::Fixed(Location::Const))
        };
        let ok = node_a.inputs[0].0 == x
            && self.home[t] == Home::Arena
            && self.group[t] == t
            && self.group_readers[t] == [b]
            && self.home[self.group[x]] == Home::Arena
            && self.home[node_b.outputs[0].0] == Home::Arena
            && x_readers == [a.min(b), a.max(b)]
            && constants(node_a)
            && node_b.inputs[1..3]
                .iter()
                .all(|c| self.home[c.0] == Home::Fixed(Location::Const))
            && self.graph.info(node_b.outputs[0]).shape == self.graph.info(node_b.inputs[3]).shape
            && kiln_runtime::kernels::in_place::block::block_ring_len(pa, pb).is_some();
        let _ = alignment;
        ok.then_some(a)
    }

    /// Aligned scratch bytes of the banded block ending at node `v`: its ring of rows,
    /// then (with [`PlanOptions::dsp_scratch`]) the DSP block kernel's scratch.
    fn band_ring(
        &self,
        v: usize,
        kernels: &[Option<Prepared>],
        options: &PlanOptions,
    ) -> Option<usize> {
        let a = self.band_first[v]?;
        let (
            Some(first @ Prepared::Conv2dI8(pa, _)),
            Some(second @ Prepared::Conv2dAddI8(pb, _, _)),
        ) = (kernels[a].as_ref(), kernels[v].as_ref())
        else {
            return None;
        };
        let ring = kiln_runtime::kernels::in_place::block::block_ring_len(pa, pb)?;
        let dsp = options
            .dsp_scratch
            .then(|| super::dsp::band_block_words(first, second))
            .flatten()
            .map_or(0, |words| aligned(4 * words, options.alignment));
        Some(aligned(ring, options.alignment) + dsp)
    }

    /// Number of nodes.
    pub(super) fn nodes(&self) -> usize {
        self.graph.nodes.len()
    }

    /// The single result of node `v` (validation guarantees exactly one).
    pub(super) fn output(&self, v: usize) -> usize {
        self.graph.nodes[v].outputs[0].0
    }

    /// A reshape shares its input's bytes unless its result is a graph output (the
    /// caller's buffer must receive a copy) or its input is a constant (constants stay in
    /// flash under their own name). Graph order visits inputs before their reshapes.
    fn add_aliases(&mut self) {
        for (v, node) in self.graph.nodes.iter().enumerate() {
            let (x, y) = (node.inputs[0].0, node.outputs[0].0);
            let shares = matches!(node.op, Op::Reshape)
                && self.home[y] == Home::Arena
                && self.home[x] != Home::Fixed(Location::Const);
            if shares {
                self.alias[v] = true;
                self.group[y] = self.group[x];
                self.home[y] = self.home[self.group[x]];
            }
        }
    }

    fn add_readers_and_sizes(&mut self, alignment: usize) {
        for (v, node) in self.graph.nodes.iter().enumerate() {
            for id in &node.inputs {
                let readers = &mut self.group_readers[self.group[id.0]];
                if readers.last() != Some(&v) {
                    readers.push(v);
                }
            }
        }
        for t in 0..self.graph.tensors.len() {
            if self.home[self.group[t]] == Home::Arena {
                let bytes = self.graph.tensors[t].info.byte_size();
                self.size[t] = bytes.div_ceil(alignment).saturating_mul(alignment);
            }
        }
    }

    fn operand_producers(&self, inputs: &[TensorId]) -> Vec<usize> {
        let mut preds: Vec<usize> = inputs.iter().filter_map(|t| self.producer[t.0]).collect();
        preds.sort_unstable();
        preds.dedup();
        preds
    }

    /// Operands node `v` may overwrite if it is their last reader: the op computes each
    /// result element from the same element of that operand only, the operand has the
    /// result's shape and dtype, both live in the arena, and no other operand of `v`
    /// shares the operand's bytes.
    fn in_place_candidates(&self, v: usize) -> Vec<usize> {
        let node = &self.graph.nodes[v];
        let y = node.outputs[0].0;
        if self.alias[v] || self.home[y] != Home::Arena {
            return Vec::new();
        }
        let same_layout = |k: usize| {
            let (a, b) = (
                self.graph.info(node.inputs[k]),
                self.graph.info(node.outputs[0]),
            );
            a.shape == b.shape && a.dtype == b.dtype
        };
        let operands: &[usize] = match node.op {
            Op::Relu
            | Op::Relu6
            | Op::Logistic
            | Op::Tanh
            | Op::LeakyRelu { .. }
            | Op::Clip { .. } => &[0],
            Op::Quantize if self.graph.info(node.inputs[0]).dtype == DType::I8 => &[0],
            Op::Add { .. } | Op::Mul { .. } | Op::Sub { .. } | Op::Div { .. } => &[0, 1],
            // A conv with a fused residual writes each sum over the skip element it
            // just read; its other operands are read-only and live elsewhere.
            Op::Conv2d(Conv2dAttrs {
                residual: Some(_), ..
            }) => &[3],
            _ => &[],
        };
        let element_type = matches!(
            self.graph.info(node.outputs[0]).dtype,
            DType::I8 | DType::F32
        );
        operands
            .iter()
            .copied()
            .filter(|&k| element_type && same_layout(k))
            .filter(|&k| {
                let g = self.group[node.inputs[k].0];
                let shared = node
                    .inputs
                    .iter()
                    .enumerate()
                    .any(|(j, t)| j != k && self.group[t.0] == g);
                self.home[g] == Home::Arena && !shared
            })
            .collect()
    }

    /// True when no node other than `v` outside `done` reads alias group `g`.
    fn last_reader(&self, g: usize, v: usize, done: &NodeSet) -> bool {
        self.group_readers[g]
            .iter()
            .all(|&r| r == v || done.contains(r))
    }

    /// The operand node `v` overwrites when it runs right after the nodes in `done`, and
    /// the scratch bytes it then needs.
    pub(super) fn in_place_operand(&self, v: usize, done: &NodeSet) -> Option<(usize, usize)> {
        let inputs = &self.graph.nodes[v].inputs;
        self.candidates[v]
            .iter()
            .copied()
            .find(|&(k, _)| self.last_reader(self.group[inputs[k].0], v, done))
    }

    /// Nodes not in `done` whose operands are all produced by nodes in `done`.
    pub(super) fn ready<'a>(&'a self, done: &'a NodeSet) -> impl Iterator<Item = usize> + 'a {
        (0..self.nodes())
            .filter(move |&v| !done.contains(v) && self.preds[v].iter().all(|&p| done.contains(p)))
    }

    /// Running `v` after `done`, with `live` arena bytes held before it: the bytes held
    /// while `v` runs, and the bytes still held after it.
    pub(super) fn step(&self, live: usize, v: usize, done: &NodeSet) -> (usize, usize) {
        let y = self.output(v);
        let during = live
            + match self.in_place_operand(v, done) {
                _ if self.alias[v] => 0,
                Some((_, scratch)) => scratch,
                None => self.size[y] + self.out_scratch[v],
            };
        let kept = if self.alias[v] || self.group_readers[y].is_empty() {
            0
        } else {
            self.size[y]
        };
        (during, live - self.freed(v, done) + kept)
    }

    /// Arena bytes of the operand groups of `v` that no later node reads.
    fn freed(&self, v: usize, done: &NodeSet) -> usize {
        let inputs = &self.graph.nodes[v].inputs;
        let group = |k: usize| self.group[inputs[k].0];
        (0..inputs.len())
            .filter(|&k| (0..k).all(|j| group(j) != group(k)))
            .filter(|&k| self.last_reader(group(k), v, done))
            .map(|k| self.size[group(k)])
            .sum()
    }

    /// Runs `order` (a topological order): the bytes held at each step and the operand
    /// each node overwrites.
    pub(super) fn trace(&self, order: &[usize]) -> Trace {
        let mut done = NodeSet::new(self.nodes());
        let mut trace = Trace {
            during: Vec::with_capacity(order.len()),
            in_place: vec![None; self.nodes()],
            scratch: vec![0; self.nodes()],
        };
        let mut live = 0;
        for &v in order {
            let (during, after) = self.step(live, v, &done);
            trace.during.push(during);
            let chosen = self.in_place_operand(v, &done);
            trace.in_place[v] = chosen.map(|(k, _)| k);
            trace.scratch[v] = chosen.map_or(self.out_scratch[v], |(_, s)| s);
            done.insert(v);
            live = after;
        }
        trace
    }
}

/// Arena use of one order, step by step.
pub(super) struct Trace {
    /// Arena bytes held while each step runs.
    pub(super) during: Vec<usize>,
    /// Per node: the operand its result overwrites.
    pub(super) in_place: Vec<Option<usize>>,
    /// Per node: aligned scratch bytes it holds while it runs.
    pub(super) scratch: Vec<usize>,
}

impl Trace {
    /// The largest arena use of any step: the lower bound of the order.
    pub(super) fn peak(&self) -> usize {
        self.during.iter().copied().max().unwrap_or(0)
    }
}

/// `bytes` rounded up to a multiple of `alignment`.
fn aligned(bytes: usize, alignment: usize) -> usize {
    bytes.div_ceil(alignment).saturating_mul(alignment)
}

/// The prepared kernel of every conv and depthwise conv node (the shapes the in-place
/// and banded kernels check); `None` for other nodes and nodes that fail to prepare. With
/// `dsp` (the DSP kernels' scratch planned), each conv as the emitter calls it on a DSP
/// target: its channels prepared in flash ([`super::dsp::with_flash_channels`]).
fn conv_kernels(graph: &Graph, dsp: bool) -> Vec<Option<Prepared>> {
    graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| match n.op {
            Op::Conv2d(_) | Op::DepthwiseConv2d(_) => {
                let k = crate::exec::prepare(graph, i, n).ok().map(|k| k.0);
                k.map(|k| match dsp {
                    true => super::dsp::with_flash_channels(graph, n, k),
                    false => k,
                })
            }
            _ => None,
        })
        .collect()
}

fn producers(graph: &Graph) -> Vec<Option<usize>> {
    let mut producer = vec![None; graph.tensors.len()];
    for (v, node) in graph.nodes.iter().enumerate() {
        for t in &node.outputs {
            producer[t.0] = Some(v);
        }
    }
    producer
}

/// Constants in flash, graph inputs and outputs in the caller's buffers (first index if
/// listed twice), node results in the arena.
fn homes(graph: &Graph, producer: &[Option<usize>]) -> Vec<Home> {
    let mut home: Vec<Home> = graph
        .tensors
        .iter()
        .zip(producer)
        .map(|(t, p)| match (&t.data, p) {
            (Some(_), _) => Home::Fixed(Location::Const),
            (None, Some(_)) => Home::Arena,
            (None, None) => Home::Unused,
        })
        .collect();
    for (j, t) in graph.outputs.iter().enumerate().rev() {
        home[t.0] = Home::Fixed(Location::Output(j));
    }
    for (i, t) in graph.inputs.iter().enumerate().rev() {
        home[t.0] = Home::Fixed(Location::Input(i));
    }
    home
}
