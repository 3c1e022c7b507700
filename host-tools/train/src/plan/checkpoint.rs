//! Gradient checkpointing: which forward values are retained, and where the forward
//! nodes of a segment run again (see the module docs of [`crate::plan`]).

use crate::graph::{TOp, Tid, TrainGraph};
use kiln_codegen::ir::Op;

/// True for ops whose result may be computed again from the same operands (pure and
/// deterministic). Ops not listed here (e.g. ones with random or running state) are
/// never recomputed by checkpointing: their results are retained instead.
pub fn recomputable(op: &TOp) -> bool {
    matches!(
        op,
        TOp::Ir(
            Op::Conv2d(_)
                | Op::DepthwiseConv2d(_)
                | Op::FullyConnected { .. }
                | Op::MaxPool2d(_)
                | Op::AveragePool2d(_)
                | Op::Mean { .. }
                | Op::Add { .. }
                | Op::Mul { .. }
                | Op::Reshape
                | Op::Concatenation { .. }
                | Op::Relu
                | Op::Relu6
                | Op::LeakyRelu { .. }
                | Op::Logistic
                | Op::Tanh
                | Op::Softmax { .. }
        )
    )
}
/// The order nodes run in: `(node, recomputed)` pairs.
pub(super) struct Schedule {
    /// Each step's node, and whether it is a forward node run again.
    pub(super) order: Vec<(usize, bool)>,
    /// Forward segments (1: no checkpointing).
    pub(super) segments: usize,
}

/// The node order: forward nodes, then backward nodes with the recomputed forward
/// nodes inserted before the first backward node that needs them.
pub(super) fn schedule(g: &TrainGraph, segments: usize) -> Schedule {
    let fwd = g.forward_len.min(g.nodes.len());
    let segments = segments.clamp(1, fwd.max(1));
    let plain = || Schedule {
        order: (0..g.nodes.len()).map(|i| (i, false)).collect(),
        segments: 1,
    };
    if segments == 1 || g.nodes.len() == fwd {
        return plain();
    }
    let seg_len = fwd.div_ceil(segments);
    let seg = |i: usize| i / seg_len;
    let last_seg = seg(fwd - 1);
    let mut producer = vec![usize::MAX; g.tensors.len()];
    for (i, n) in g.nodes[..fwd].iter().enumerate() {
        producer[n.output] = i;
    }
    let mut retained = vec![false; g.tensors.len()];
    for t in g.kept() {
        retained[t] = true;
    }
    for (i, n) in g.nodes[..fwd].iter().enumerate() {
        if seg(i) == last_seg || !recomputable(&n.op) {
            retained[n.output] = true;
        }
        for &t in &n.inputs {
            if producer[t] != usize::MAX && seg(producer[t]) != seg(i) {
                retained[t] = true;
            }
        }
    }
    // Values of each segment that backward nodes read and that are not retained.
    let dropped = |t: Tid| producer[t] != usize::MAX && !retained[t];
    let mut order: Vec<(usize, bool)> = (0..fwd).map(|i| (i, false)).collect();
    let mut done = vec![false; last_seg + 1];
    for j in fwd..g.nodes.len() {
        for &t in &g.nodes[j].inputs {
            if !dropped(t) || done[seg(producer[t])] {
                continue;
            }
            let s = seg(producer[t]);
            done[s] = true;
            let span = s * seg_len..((s + 1) * seg_len).min(fwd);
            let mut run = vec![false; span.len()];
            for n in &g.nodes[fwd..] {
                for &u in &n.inputs {
                    if dropped(u) && span.contains(&producer[u]) {
                        run[producer[u] - span.start] = true;
                    }
                }
            }
            for i in span.clone().rev() {
                if run[i - span.start] {
                    for &u in &g.nodes[i].inputs {
                        if dropped(u) && span.contains(&producer[u]) {
                            run[producer[u] - span.start] = true;
                        }
                    }
                }
            }
            for i in span.clone().filter(|&i| run[i - span.start]) {
                order.push((i, true));
            }
        }
        order.push((j, false));
    }
    Schedule {
        order,
        segments: last_seg + 1,
    }
}
