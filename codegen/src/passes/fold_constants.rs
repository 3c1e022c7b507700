//! Evaluates nodes whose operands are all constants (a `Transpose` of a weight, the
//! `Mul` of two constants an importer left behind) and replaces their result by a
//! constant tensor.
//!
//! Exact: the node is run by the executor's own kernel, the one the device would run.

use super::remove_nodes;
use crate::exec::{self, TensorData};
use crate::ir::{Graph, NodeId};

/// Folds every node whose operands are all constant; returns how many.
pub fn run(graph: &mut Graph) -> usize {
    let mut dead = Vec::new();
    for i in 0..graph.nodes.len() {
        let node = &graph.nodes[i];
        let out = node.outputs[0];
        let constant = |t: &crate::ir::TensorId| graph.tensor(*t).data.is_some();
        if node.outputs.len() != 1
            || !node.inputs.iter().all(constant)
            || graph.outputs.contains(&out)
        {
            continue;
        }
        let Ok(kernel) = exec::prepare(graph, i, node) else {
            continue; // left for the executor to report
        };
        let operands: Vec<TensorData> = node
            .inputs
            .iter()
            .map(|t| {
                let tensor = graph.tensor(*t);
                TensorData::from_le_bytes(
                    tensor.info.dtype,
                    tensor.data.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        let refs: Vec<&TensorData> = operands.iter().collect();
        let info = graph.info(out);
        let mut result = TensorData::zeros(info.dtype, info.num_elements());
        kernel.run(&refs, &mut result);
        graph.tensors[out.0].data = Some(result.to_le_bytes());
        dead.push(NodeId(i));
    }
    remove_nodes(graph, &dead);
    dead.len()
}
