//! Work per node: multiply-accumulates for the compute ops, elements touched for the
//! rest. Used for reports and to bound the work of fuzzed graphs.

use super::{Graph, Node, Op};

/// Multiply-accumulate operations of one node (for data movement and element-wise ops:
/// output elements). Saturates instead of overflowing.
pub fn macs(graph: &Graph, node: &Node) -> u64 {
    let out = graph.info(node.outputs[0]).num_elements() as u64;
    let dims = |i: usize| graph.info(node.inputs[i]).shape.clone();
    let per_output = match &node.op {
        Op::Conv2d(_) => {
            let f = dims(1);
            (f[1] * f[2] * f[3]) as u64
        }
        Op::DepthwiseConv2d(_) => {
            let f = dims(1);
            (f[1] * f[2]) as u64
        }
        Op::FullyConnected { .. } => dims(1)[1] as u64,
        Op::AveragePool2d(a) | Op::MaxPool2d(a) => (a.filter[0] * a.filter[1]) as u64,
        // Every input element times every filter tap and output channel (TFLM's scatter
        // count; taps that fall outside the output are a small minority).
        Op::TransposeConv2d(_) => {
            let input = graph.info(node.inputs[0]).num_elements() as u64;
            let f = dims(1);
            return input.saturating_mul((f[0] * f[1] * f[2]) as u64);
        }
        Op::Mean { .. } => {
            let input = graph.info(node.inputs[0]).num_elements() as u64;
            return input.max(out);
        }
        _ => 1,
    };
    out.saturating_mul(per_output)
}

/// Sum of [`macs`] over all nodes.
pub fn total_macs(graph: &Graph) -> u64 {
    graph
        .nodes
        .iter()
        .map(|n| macs(graph, n))
        .fold(0, u64::saturating_add)
}
