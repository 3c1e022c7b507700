//! Symbolic reverse-mode automatic differentiation over a [`TrainGraph`].
//!
//! The forward nodes are walked in reverse topological order. Each tensor collects the
//! partial adjoints its consumers contribute; when its producer is reached they are
//! summed (ADD nodes) and the producer's gradient rule adds the nodes computing the
//! adjoints of its operands. The result is more nodes in the same graph, run by the same
//! executor. Only tensors that depend on a parameter get adjoints, so no gradient of
//! the input images is ever computed.

use crate::graph::{Kind, TNode, TOp, Tid, TrainGraph};
use crate::TrainError;
use kiln_codegen::ir::{Activation, Op};

/// Adds the gradient nodes of `g`'s loss with respect to every parameter and fills
/// [`TrainGraph::grads`]. Fails naming the op when a forward op has no gradient rule.
pub fn differentiate(g: &mut TrainGraph) -> Result<(), TrainError> {
    let loss = g
        .loss
        .ok_or_else(|| TrainError::Graph("differentiate: the graph has no loss".into()))?;
    let forward = g.forward_len;
    let mut needs = vec![false; g.tensors.len()];
    for &p in &g.params {
        needs[p] = true;
    }
    for node in &g.nodes[..forward] {
        if node.inputs.iter().any(|&t| needs[t]) {
            needs[node.output] = true;
        }
    }
    let mut adjoints: Vec<Vec<Tid>> = vec![Vec::new(); g.tensors.len()];
    let seed = g.add_tensor("grad/loss", vec![1], Kind::Const(vec![1.0]));
    adjoints[loss].push(seed);
    for i in (0..forward).rev() {
        let node = g.nodes[i].clone();
        if !needs[node.output] || adjoints[node.output].is_empty() {
            continue;
        }
        let parts = std::mem::take(&mut adjoints[node.output]);
        let dy = sum(g, node.output, &parts);
        let want: Vec<bool> = node.inputs.iter().map(|&t| needs[t]).collect();
        for (k, d) in rule(g, &node, dy, &want)? {
            adjoints[node.inputs[k]].push(d);
        }
    }
    let mut grads = Vec::with_capacity(g.params.len());
    for p in g.params.clone() {
        let parts = std::mem::take(&mut adjoints[p]);
        let d = if parts.is_empty() {
            let shape = g.shape(p).to_vec();
            let len = shape.iter().product();
            let name = format!("grad/{}", g.tensors[p].name);
            g.add_tensor(name, shape, Kind::Const(vec![0.0; len]))
        } else {
            sum(g, p, &parts)
        };
        grads.push(d);
    }
    g.grads = grads;
    Ok(())
}

/// The sum of the partial adjoints of tensor `of`.
fn sum(g: &mut TrainGraph, of: Tid, parts: &[Tid]) -> Tid {
    let mut acc = parts[0];
    for &p in &parts[1..] {
        let shape = g.shape(of).to_vec();
        let name = format!("grad/{}/acc", g.tensors[of].name);
        acc = g.add_node(
            TOp::Ir(Op::Add {
                activation: Activation::None,
            }),
            vec![acc, p],
            name,
            shape,
        );
    }
    acc
}

/// The gradient rule of one forward node: `(operand index, its partial adjoint)` for
/// each operand with `want[k]`.
fn rule(
    g: &mut TrainGraph,
    node: &TNode,
    dy: Tid,
    want: &[bool],
) -> Result<Vec<(usize, Tid)>, TrainError> {
    let x = node.inputs.clone();
    let y = node.output;
    let mut out: Vec<(usize, Tid)> = Vec::new();
    let grad = |g: &mut TrainGraph, out: &mut Vec<(usize, Tid)>, k: usize, op: TOp, inputs| {
        if want.get(k).copied().unwrap_or(false) {
            let shape = g.shape(x[k]).to_vec();
            let name = format!("grad/{}", g.tensors[x[k]].name);
            out.push((k, g.add_node(op, inputs, name, shape)));
        }
    };
    match &node.op {
        TOp::Ir(Op::Conv2d(a)) => {
            grad(g, &mut out, 0, TOp::Conv2dGradInput(*a), vec![dy, x[1]]);
            grad(g, &mut out, 1, TOp::Conv2dGradFilter(*a), vec![x[0], dy]);
            grad(g, &mut out, 2, TOp::BiasGrad, vec![dy]);
        }
        TOp::Ir(Op::DepthwiseConv2d(a)) => {
            grad(g, &mut out, 0, TOp::DepthwiseGradInput(*a), vec![dy, x[1]]);
            grad(g, &mut out, 1, TOp::DepthwiseGradFilter(*a), vec![x[0], dy]);
            grad(g, &mut out, 2, TOp::BiasGrad, vec![dy]);
        }
        TOp::Ir(Op::FullyConnected { .. }) => {
            grad(g, &mut out, 0, TOp::FcGradInput, vec![dy, x[1]]);
            grad(g, &mut out, 1, TOp::FcGradWeights, vec![x[0], dy]);
            grad(g, &mut out, 2, TOp::BiasGrad, vec![dy]);
        }
        TOp::Ir(Op::MaxPool2d(a)) => grad(g, &mut out, 0, TOp::MaxPoolGrad(*a), vec![x[0], dy]),
        TOp::Ir(Op::AveragePool2d(a)) => grad(g, &mut out, 0, TOp::AvgPoolGrad(*a), vec![dy]),
        TOp::Ir(Op::Mean { axes, .. }) => {
            grad(g, &mut out, 0, TOp::MeanGrad { axes: axes.clone() }, vec![dy])
        }
        TOp::Ir(Op::Reshape) => grad(g, &mut out, 0, TOp::Ir(Op::Reshape), vec![dy]),
        TOp::Ir(Op::Relu) => grad(g, &mut out, 0, TOp::ReluGrad, vec![y, dy]),
        TOp::Ir(Op::Relu6) => grad(g, &mut out, 0, TOp::Relu6Grad, vec![x[0], dy]),
        TOp::Ir(Op::LeakyRelu { alpha }) => {
            grad(g, &mut out, 0, TOp::LeakyReluGrad { alpha: *alpha }, vec![x[0], dy])
        }
        TOp::Ir(Op::Logistic) => grad(g, &mut out, 0, TOp::SigmoidGrad, vec![y, dy]),
        TOp::Ir(Op::Tanh) => grad(g, &mut out, 0, TOp::TanhGrad, vec![y, dy]),
        TOp::Ir(Op::Add { .. }) => {
            for k in 0..2 {
                if g.shape(x[k]) == g.shape(y) {
                    if want[k] {
                        out.push((k, dy));
                    }
                } else {
                    grad(g, &mut out, k, TOp::ReduceTo, vec![dy]);
                }
            }
        }
        TOp::Ir(Op::Mul { .. }) => {
            for k in 0..2 {
                if !want[k] {
                    continue;
                }
                let shape = g.shape(y).to_vec();
                let name = format!("grad/{}/full", g.tensors[x[k]].name);
                let mul = TOp::Ir(Op::Mul {
                    activation: Activation::None,
                });
                let full = g.add_node(mul, vec![dy, x[1 - k]], name, shape);
                if g.shape(x[k]) == g.shape(y) {
                    out.push((k, full));
                } else {
                    grad(g, &mut out, k, TOp::ReduceTo, vec![full]);
                }
            }
        }
        TOp::Ir(Op::Concatenation { axis, .. }) => {
            let mut start = 0;
            for (k, &part) in x.iter().enumerate() {
                let len = g.shape(part)[*axis];
                grad(g, &mut out, k, TOp::Slice { axis: *axis, start }, vec![dy]);
                start += len;
            }
        }
        TOp::BatchNormTrain { eps } => {
            // The total derivative of x, through the batch statistics as well: the
            // statistics operand (1) gets no adjoint, so its node adds none.
            let eps = *eps;
            let dx = TOp::BatchNormGradInput { eps };
            grad(g, &mut out, 0, dx, vec![x[0], x[1], x[2], dy]);
            let dgamma = TOp::BatchNormGradGamma { eps };
            grad(g, &mut out, 2, dgamma, vec![x[0], x[1], dy]);
            grad(g, &mut out, 3, TOp::BiasGrad, vec![dy]);
        }
        TOp::Dropout => grad(g, &mut out, 0, TOp::Dropout, vec![dy, x[1]]),
        TOp::SoftmaxCrossEntropy => {
            grad(g, &mut out, 0, TOp::SoftmaxCrossEntropyGrad, vec![x[0], x[1], dy])
        }
        TOp::Mse => grad(g, &mut out, 0, TOp::MseGrad, vec![x[0], x[1], dy]),
        // Quantization-aware training: straight-through estimators (crate::qat). The
        // quantization parameters and the weights a bias is scaled by get no gradient.
        TOp::FakeQuant => grad(g, &mut out, 0, TOp::FakeQuantGrad, vec![x[0], x[1], dy]),
        TOp::FakeQuantWeights { .. } | TOp::FakeQuantBias { .. } => {
            if want[0] {
                out.push((0, dy));
            }
        }
        other => {
            return Err(TrainError::Graph(format!(
                "no gradient rule for {} (train with the softmax_cross_entropy loss on logits instead of a softmax layer)",
                other.name()
            )))
        }
    }
    Ok(out)
}
