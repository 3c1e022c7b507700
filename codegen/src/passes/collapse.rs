//! Collapses data-movement chains that compute nothing: RESHAPE of a RESHAPE, and
//! int8 requantization between identical quantization parameters.

use super::{producer, remove_nodes, replace_uses, single_private_use};
use crate::ir::{DType, Graph, NodeId, Op};

/// `reshape(reshape(x))` becomes `reshape(x)`: the first reshape is dropped when the
/// second is its only reader.
pub fn reshape_chains(graph: &mut Graph) -> usize {
    let mut dead = Vec::new();
    for i in 0..graph.nodes.len() {
        if graph.nodes[i].op != Op::Reshape {
            continue;
        }
        let input = graph.nodes[i].inputs[0];
        let Some(first) = producer(graph, input) else {
            continue;
        };
        let first_node = &graph.nodes[first.0];
        if first_node.op != Op::Reshape || dead.contains(&first) {
            continue;
        }
        if single_private_use(graph, input) == Some(NodeId(i)) {
            let source = first_node.inputs[0];
            graph.nodes[i].inputs[0] = source;
            dead.push(first);
        }
    }
    remove_nodes(graph, &dead);
    dead.len()
}

/// An int8 QUANTIZE whose input and output have the same scale and zero point
/// multiplies by exactly 1.0 (multiplier 2^30, shift 1), so it is removed and its
/// readers read its input. Kept when its result is a graph output.
pub fn identity_requantize(graph: &mut Graph) -> usize {
    let mut dead = Vec::new();
    for i in 0..graph.nodes.len() {
        let n = &graph.nodes[i];
        if n.op != Op::Quantize || graph.outputs.contains(&n.outputs[0]) {
            continue;
        }
        let (x, y) = (graph.info(n.inputs[0]), graph.info(n.outputs[0]));
        let same = x.dtype == DType::I8
            && y.dtype == DType::I8
            && x.scale_zero_point().is_some()
            && x.scale_zero_point() == y.scale_zero_point();
        if same {
            let (from, to) = (n.outputs[0], n.inputs[0]);
            replace_uses(graph, from, to);
            dead.push(NodeId(i));
        }
    }
    remove_nodes(graph, &dead);
    dead.len()
}
