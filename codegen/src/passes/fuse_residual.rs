//! Fuses a residual ADD into the epilogue of the CONV_2D producing one of its operands:
//! the conv adds each result to the skip tensor's element as it computes it, so the
//! conv's result never occupies a tensor of its own (and the planner may write the sum
//! over the skip tensor). Exact: the fused kernel applies the conv's requantization and
//! clamp, then the ADD's arithmetic, to each element — the same integers as two nodes.

use super::{producer, single_private_use};
use crate::ir::{Conv2dAttrs, DType, Graph, NodeId, Op, ResidualAdd};

/// Fuses every fusable ADD; returns how many.
pub fn run(graph: &mut Graph) -> usize {
    let mut fused = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        if let Some((conv, k)) = candidate(graph, i) {
            fuse(graph, i, conv, k);
            fused += 1;
            // The conv moved into this slot; continue after it.
        }
        i += 1;
    }
    fused
}

/// The conv node and the ADD operand index it produces, for ADD node `i`.
fn candidate(graph: &Graph, i: usize) -> Option<(NodeId, usize)> {
    let add = &graph.nodes[i];
    if !matches!(add.op, Op::Add { .. }) {
        return None;
    }
    let out = graph.info(add.outputs[0]);
    let no_broadcast = add.inputs.iter().all(|t| graph.info(*t).shape == out.shape);
    if !no_broadcast
        || !matches!(out.dtype, DType::I8 | DType::F32)
        || add.inputs[0] == add.inputs[1]
    {
        return None;
    }
    // Prefer the operand produced last, so the skip tensor already exists there.
    let mut options: Vec<(NodeId, usize)> = (0..2)
        .filter_map(|k| {
            let t = add.inputs[k];
            let conv = producer(graph, t)?;
            let fusable = match &graph.nodes[conv.0].op {
                Op::Conv2d(Conv2dAttrs { residual: None, .. }) => {
                    graph.nodes[conv.0].inputs.len() == 3
                }
                _ => false,
            };
            (fusable && single_private_use(graph, t) == Some(NodeId(i))).then_some((conv, k))
        })
        .collect();
    options.sort_by_key(|(conv, _)| std::cmp::Reverse(conv.0));
    options.first().copied()
}

/// Moves conv `conv` into the ADD's slot `i` with the ADD folded into it.
fn fuse(graph: &mut Graph, i: usize, conv: NodeId, k: usize) {
    let add = graph.nodes[i].clone();
    let Op::Add { activation } = add.op else {
        return;
    };
    let conv_result = add.inputs[k];
    let skip = add.inputs[1 - k];
    let mut node = graph.nodes[conv.0].clone();
    let conv_quant = graph.info(conv_result).scale_zero_point();
    if let Op::Conv2d(a) = &mut node.op {
        a.residual = Some(ResidualAdd {
            conv_quant,
            conv_is_first: k == 0,
            activation,
        });
    }
    node.inputs.push(skip);
    node.outputs = add.outputs.clone();
    node.name = add.name.clone();
    // The conv runs where the ADD ran: its operands were ready earlier, the skip
    // tensor is ready here, and nothing else read the conv result.
    graph.nodes[i] = node;
    graph.nodes.remove(conv.0);
}
