//! Folds a RELU or RELU6 node, or a CLIP whose bounds are those of RELU (0, inf), RELU6
//! (0, 6) or RELU_N1_TO_1 (-1, 1), into the clamp of the node producing its input.
//!
//! Exact for floats always, and for int8 when the activation's input and output share
//! scale and zero point: the int8 RELU (or CLIP) then requantizes by exactly 1.0 and
//! clamps to the quantized bounds, which is precisely the producer's fused-activation
//! clamp.

use super::{producer, remove_nodes, single_private_use};
use crate::ir::{Activation, DType, Graph, NodeId, Op};

/// The fused activation a standalone node applies, if it is exactly one: RELU, RELU6,
/// or a CLIP with the bounds of RELU, RELU6 or RELU_N1_TO_1.
fn as_activation(op: &Op) -> Option<Activation> {
    match op {
        Op::Relu => Some(Activation::Relu),
        Op::Relu6 => Some(Activation::Relu6),
        Op::Clip { min, max } => match (*min, *max) {
            (lo, hi) if lo == 0.0 && hi == f32::INFINITY => Some(Activation::Relu),
            (lo, hi) if lo == 0.0 && hi == 6.0 => Some(Activation::Relu6),
            (lo, hi) if lo == -1.0 && hi == 1.0 => Some(Activation::ReluN1To1),
            _ => None,
        },
        _ => None,
    }
}

/// The combined clamp of `first` followed by `then`, if an [`Activation`] expresses it.
fn compose(first: Activation, then: Activation) -> Option<Activation> {
    use Activation::*;
    match (first, then) {
        (None | Relu, Relu) => Some(Relu),
        (Relu6, Relu) => Some(Relu6),
        (None | Relu | Relu6, Relu6) => Some(Relu6),
        (None | ReluN1To1, ReluN1To1) => Some(ReluN1To1),
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
        Op::TransposeConv2d(a) => Some(&mut a.activation),
        Op::FullyConnected { activation, .. }
        | Op::Add { activation }
        | Op::Mul { activation }
        | Op::Sub { activation }
        | Op::Div { activation } => Some(activation),
        _ => None,
    }
}

/// Folds every foldable activation node; returns how many.
pub fn run(graph: &mut Graph) -> usize {
    let mut dead = Vec::new();
    for i in 0..graph.nodes.len() {
        let act = &graph.nodes[i];
        let Some(then) = as_activation(&act.op) else {
            continue;
        };
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
        let producer_node = &mut graph.nodes[p.0];
        let Some(slot) = activation_slot(&mut producer_node.op) else {
            continue;
        };
        let Some(combined) = compose(*slot, then) else {
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
