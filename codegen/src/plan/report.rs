//! Views of a plan for people: one row per step, and the lifetime rectangles of arena
//! tensors (time on one axis, addresses on the other) for `kiln inspect --plot`.

use super::{Location, Plan, Reuse};
use crate::ir::{Graph, NodeId, TensorId};

/// The arena bytes one tensor holds from step `first_step` to step `last_step`
/// (inclusive): one rectangle of the memory plot.
///
/// A reshape alias is drawn as part of its input's rectangle. A result written in place
/// starts at the step where the overwritten operand's rectangle ends, at the same offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// The tensor that writes these bytes.
    pub tensor: TensorId,
    /// The step (position in [`Plan::order`]) that writes the tensor.
    pub first_step: usize,
    /// The last step that reads the tensor or one of its aliases.
    pub last_step: usize,
    /// Arena offset in bytes.
    pub offset: usize,
    /// Arena bytes (the tensor's size rounded up to the alignment).
    pub size: usize,
}

/// One row of the plan report: a node and where its result goes.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    /// Position in [`Plan::order`].
    pub step: usize,
    /// The node.
    pub node: NodeId,
    /// The node's name.
    pub name: String,
    /// The operator's name.
    pub op: &'static str,
    /// The node's result.
    pub output: TensorId,
    /// Where the result lives.
    pub location: Location,
    /// The result's size in bytes (not rounded up).
    pub bytes: usize,
    /// Whether the result shares an operand's bytes.
    pub reuse: Reuse,
    /// Arena bytes live while this step runs.
    pub live_bytes: usize,
}

/// One row per node, in execution order.
pub fn report(plan: &Plan, graph: &Graph) -> Vec<NodeReport> {
    plan.order
        .iter()
        .enumerate()
        .map(|(step, &node)| {
            let n = &graph.nodes[node.0];
            let output = n.outputs[0];
            NodeReport {
                step,
                node,
                name: n.name.clone(),
                op: n.op.name(),
                output,
                location: plan.location(output),
                bytes: graph.info(output).byte_size(),
                reuse: plan.reuse(node),
                live_bytes: plan.live_bytes.get(step).copied().unwrap_or(0),
            }
        })
        .collect()
}

/// The lifetime rectangle of every arena tensor that writes its own bytes (every node
/// result in the arena except reshape aliases and the rows of a banded block, which
/// live in the block's scratch), in order of the writing step.
pub fn intervals(plan: &Plan, graph: &Graph) -> Vec<Interval> {
    let step_of = steps(plan, graph);
    let data = data_roots(plan, graph);
    let mut last_read: Vec<Option<usize>> = vec![None; graph.tensors.len()];
    for (v, node) in graph.nodes.iter().enumerate() {
        for t in &node.inputs {
            let slot = &mut last_read[data[t.0]];
            *slot = Some(slot.map_or(step_of[v], |s: usize| s.max(step_of[v])));
        }
    }
    plan.order
        .iter()
        .enumerate()
        .filter(|&(_, &v)| !matches!(plan.reuse(v), Reuse::Alias | Reuse::Band { .. }))
        .filter_map(|(first_step, &v)| {
            let tensor = graph.nodes[v.0].outputs[0];
            let Location::Arena(offset) = plan.location(tensor) else {
                return None;
            };
            Some(Interval {
                tensor,
                first_step,
                last_step: last_read[tensor.0].unwrap_or(first_step).max(first_step),
                offset,
                size: plan.arena_size(graph, tensor),
            })
        })
        .collect()
}

/// The step of every node.
fn steps(plan: &Plan, graph: &Graph) -> Vec<usize> {
    let mut step_of = vec![0; graph.nodes.len()];
    for (step, v) in plan.order.iter().enumerate() {
        step_of[v.0] = step;
    }
    step_of
}

/// For every tensor, the tensor whose data it is (itself unless a reshape alias).
fn data_roots(plan: &Plan, graph: &Graph) -> Vec<usize> {
    let mut root: Vec<usize> = (0..graph.tensors.len()).collect();
    for v in &plan.order {
        let node = &graph.nodes[v.0];
        if plan.reuse(*v) == Reuse::Alias {
            root[node.outputs[0].0] = root[node.inputs[0].0];
        }
    }
    root
}
