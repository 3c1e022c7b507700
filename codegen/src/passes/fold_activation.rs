//! Folds a RELU or RELU6 node into the clamp of the node producing its input.
//!
//! Exact for floats always, and for int8 when the activation's input and output share
//! scale and zero point: the int8 RELU then requantizes by exactly 1.0 and clamps at the
//! zero point, which is precisely the producer's fused-activation clamp.

use super::{producer, remove_nodes, single_private_use};
use crate::ir::{Activation, DType, Graph, NodeId, Op};

/// The combined clamp of `first` followed by `then`, if an [`Activation`] expresses it.
fn compose(first: Activation, then: &Op) -> Option<Activation> {
    use Activation::*;
    match (first, then) {
        (None | Relu, Op::Relu) => Some(Relu),
        (Relu6, Op::Relu) => Some(Relu6),
        (None | Relu | Relu6, Op::Relu6) => Some(Relu6),
        _ => Option::None,
    }
}

/// The fused activation slot of ops that have one.
fn activation_slot(op: &mut Op) -> Option<&mut Activation> {
    match op {
        // With a fused residual the node's result is the ADD's, clamped by its activation.
        Op::Conv2d(a) => Some(match &mut a.residual {
            Some(r) => &mut r.activation,
            None => &mut a.activation,
        }),
        Op::DepthwiseConv2d(a) => Some(&mut a.activation),
        Op::AveragePool2d(a) | Op::MaxPool2d(a) => Some(&mut a.activation),
        Op::FullyConnected { activation, .. } | Op::Add { activation } | Op::Mul { activation } => {
            Some(activation)
        }
        _ => None,
    }
}

/// Folds every foldable activation node; returns how many.
pub fn run(graph: &mut Graph) -> usize {
    let mut dead = Vec::new();
    for i in 0..graph.nodes.len() {
        let act = &graph.nodes[i];
        if !matches!(act.op, Op::Relu | Op::Relu6) {
            continue;
        }
        let (t, out) = (act.inputs[0], act.outputs[0]);
        let Some(p) = producer(graph, t) else {
            continue;
        };
        if dead.contains(&p) || single_private_use(graph, t) != Some(NodeId(i)) {
            continue;
        }
        let (ti, oi) = (graph.info(t), graph.info(out));
        let exact = match ti.dtype {
            DType::F32 => true,
            DType::I8 => {
                ti.scale_zero_point().is_some() && ti.scale_zero_point() == oi.scale_zero_point()
            }
            _ => false,
        };
        let then = graph.nodes[i].op.clone();
        let producer_node = &mut graph.nodes[p.0];
        let Some(slot) = activation_slot(&mut producer_node.op) else {
            continue;
        };
        let Some(combined) = compose(*slot, &then) else {
            continue;
        };
        if !exact {
            continue;
        }
        *slot = combined;
        producer_node.outputs[0] = out;
        dead.push(NodeId(i));
    }
    remove_nodes(graph, &dead);
    dead.len()
}
