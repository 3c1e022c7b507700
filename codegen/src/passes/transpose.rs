//! Removes the transposes that layout conversion (NCHW models on NHWC kernels) leaves:
//!
//! * a transpose with the identity permutation is dropped;
//! * a transpose that only moves size-1 axes keeps the element order, so it becomes a
//!   reshape (which the planner aliases for free);
//! * two transposes in a row become one (or none, when they cancel);
//! * a transpose feeding a flatten (reshape to `[batch, features]`) read only by fully
//!   connected layers is folded into their weights, whose columns are permuted instead
//!   (the classic NCHW-flatten before a dense layer).
//!
//! All rewrites only move data, so results are bit-exact.

use super::{consumers, producer, remove_nodes, replace_uses, single_private_use};
use crate::ir::{Graph, NodeId, Op, Tensor, TensorId};

/// Applies every rewrite above where it is legal; returns how many.
pub fn run(graph: &mut Graph) -> usize {
    let mut count = 0;
    let mut dead = Vec::new();
    for i in 0..graph.nodes.len() {
        let Op::Transpose { perm } = graph.nodes[i].op.clone() else {
            continue;
        };
        let (input, output) = (graph.nodes[i].inputs[0], graph.nodes[i].outputs[0]);
        if is_identity(&perm) && !graph.outputs.contains(&output) && !graph.inputs.contains(&input)
        {
            replace_uses(graph, output, input);
            dead.push(NodeId(i));
            count += 1;
            continue;
        }
        let shape = graph.info(input).shape.clone();
        let moved_non_unit: Vec<usize> = perm.iter().copied().filter(|&a| shape[a] != 1).collect();
        if moved_non_unit.windows(2).all(|w| w[0] < w[1]) {
            graph.nodes[i].op = Op::Reshape;
            count += 1;
            continue;
        }
        if let Some(p) = producer(graph, input) {
            if let Op::Transpose { perm: first } = &graph.nodes[p.0].op {
                if !dead.contains(&p) && single_private_use(graph, input) == Some(NodeId(i)) {
                    let composed: Vec<usize> = perm.iter().map(|&a| first[a]).collect();
                    graph.nodes[i].inputs[0] = graph.nodes[p.0].inputs[0];
                    graph.nodes[i].op = Op::Transpose { perm: composed };
                    dead.push(p);
                    count += 1;
                    continue;
                }
            }
        }
        if fold_into_dense(graph, i, &perm) {
            count += 1;
        }
    }
    remove_nodes(graph, &dead);
    count
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}

/// `transpose → reshape [N, K] → fully_connected(s)` with constant weights: the reshape
/// reads the transpose's input instead and each FC's weight columns are permuted.
fn fold_into_dense(graph: &mut Graph, t: usize, perm: &[usize]) -> bool {
    let (input, output) = (graph.nodes[t].inputs[0], graph.nodes[t].outputs[0]);
    let Some(r) = single_private_use(graph, output) else {
        return false;
    };
    let flat = graph.nodes[r.0].outputs[0];
    let in_shape = graph.info(input).shape.clone();
    let batch = in_shape[0];
    if graph.nodes[r.0].op != Op::Reshape
        || perm.first() != Some(&0)
        || graph.outputs.contains(&flat)
        || graph.info(flat).shape.first() != Some(&batch)
        || graph.info(flat).shape.len() != 2
    {
        return false;
    }
    let readers = consumers(graph, flat);
    let dense = |n: &NodeId| {
        let node = &graph.nodes[n.0];
        matches!(node.op, Op::FullyConnected { .. })
            && node.inputs[0] == flat
            && node.inputs[1] != flat
            && graph.tensor(node.inputs[1]).data.is_some()
    };
    if readers.is_empty() || !readers.iter().all(dense) {
        return false;
    }
    // sigma[k]: position in the untransposed sample of element k of the transposed one.
    let out_shape: Vec<usize> = perm.iter().map(|&a| in_shape[a]).collect();
    let features: usize = in_shape[1..].iter().product();
    let in_strides = strides(&in_shape);
    let mut sigma = Vec::with_capacity(features);
    let mut idx = vec![0usize; out_shape.len()];
    for _ in 0..features {
        sigma.push(
            (1..idx.len())
                .map(|a| idx[a] * in_strides[perm[a]])
                .sum::<usize>(),
        );
        for a in (1..idx.len()).rev() {
            idx[a] += 1;
            if idx[a] < out_shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    for n in &readers {
        let w = graph.nodes[n.0].inputs[1];
        let tensor = graph.tensor(w).clone();
        let info = &tensor.info;
        if info.shape.len() != 2 || info.shape[1] != features {
            return false;
        }
        let size = info.dtype.size();
        let data = tensor.data.as_deref().unwrap_or_default();
        let mut permuted = vec![0u8; data.len()];
        for o in 0..info.shape[0] {
            for (k, &s) in sigma.iter().enumerate() {
                let from = (o * features + k) * size;
                let to = (o * features + s) * size;
                permuted[to..to + size].copy_from_slice(&data[from..from + size]);
            }
        }
        graph.tensors.push(Tensor {
            name: format!("{}:columns_permuted", tensor.name),
            info: tensor.info.clone(),
            data: Some(permuted),
        });
        graph.nodes[n.0].inputs[1] = TensorId(graph.tensors.len() - 1);
    }
    graph.nodes[r.0].inputs[0] = input;
    graph.nodes[t].op = Op::Reshape; // now dead: its output has no reader
    true
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * shape[a + 1];
    }
    s
}
