//! Folds a per-channel `Mul` and `Add` by constants into the float convolution or dense
//! layer before it: batch normalization in inference mode, which importers turn into
//! `x * scale + shift`, costs nothing at run time.
//!
//! `conv(x, w, b) * s = conv(x, w * s, b * s)` and `conv(x, w, b) + t = conv(x, w, b + t)`
//! per output channel. Exact in real arithmetic; in f32 the results differ from the
//! unfolded graph by rounding only (about 1e-7 relative). int8 graphs are left alone.

use super::{producer, remove_nodes, replace_uses, single_private_use};
use crate::ir::{Activation, DType, Graph, NodeId, Op, TensorId};

/// Folds every foldable Mul/Add; returns how many.
pub fn run(graph: &mut Graph) -> usize {
    let mut dead = Vec::new();
    for i in 0..graph.nodes.len() {
        let (is_mul, activation) = match graph.nodes[i].op {
            Op::Mul { activation } => (true, activation),
            Op::Add { activation } => (false, activation),
            _ => continue,
        };
        let out = graph.nodes[i].outputs[0];
        if graph.info(out).dtype != DType::F32 {
            continue;
        }
        // Which operand is the layer's result and which the constant.
        let [a, b] = [graph.nodes[i].inputs[0], graph.nodes[i].inputs[1]];
        let (x, c) = if graph.tensor(b).data.is_some() {
            (a, b)
        } else {
            (b, a)
        };
        let Some(p) = producer(graph, x) else {
            continue;
        };
        if dead.contains(&p) || single_private_use(graph, x) != Some(NodeId(i)) {
            continue;
        }
        if graph.info(x).shape != graph.info(out).shape {
            continue; // the constant broadcasts the result to a larger shape
        }
        let channels = *graph.info(x).shape.last().unwrap_or(&0);
        let Some(values) = per_channel(graph, c, channels) else {
            continue;
        };
        let (weight_axis, has_activation) = match &graph.nodes[p.0].op {
            Op::Conv2d(a) if a.residual.is_none() => (0, a.activation != Activation::None),
            Op::DepthwiseConv2d(a) => (3, a.activation != Activation::None),
            Op::FullyConnected { activation, .. } => (0, *activation != Activation::None),
            _ => continue,
        };
        let node = &graph.nodes[p.0];
        if has_activation
            || node.inputs[1..]
                .iter()
                .any(|t| graph.tensor(*t).data.is_none())
        {
            continue;
        }
        let bias = node.inputs.get(2).copied();
        if is_mul {
            let w = node.inputs[1];
            let scaled = scale_axis(graph, w, weight_axis, &values);
            graph.nodes[p.0].inputs[1] = scaled;
            if let Some(b) = bias {
                let scaled = scale_axis(graph, b, 0, &values);
                graph.nodes[p.0].inputs[2] = scaled;
            }
        } else {
            let old = match bias {
                Some(b) => f32s(graph, b),
                None => vec![0.0; channels],
            };
            let sum: Vec<f32> = old.iter().zip(&values).map(|(o, v)| o + v).collect();
            let t = push_f32(
                graph,
                format!("{}:bias", graph.nodes[p.0].name),
                vec![channels],
                &sum,
            );
            if bias.is_some() {
                graph.nodes[p.0].inputs[2] = t;
            } else {
                graph.nodes[p.0].inputs.push(t);
            }
        }
        set_activation(&mut graph.nodes[p.0].op, activation);
        graph.nodes[p.0].outputs[0] = out;
        replace_uses(graph, x, out);
        dead.push(NodeId(i));
    }
    remove_nodes(graph, &dead);
    dead.len()
}

/// The constant's value per channel, when it is f32 and varies along the last axis only.
fn per_channel(graph: &Graph, c: TensorId, channels: usize) -> Option<Vec<f32>> {
    let info = graph.info(c);
    if info.dtype != DType::F32 {
        return None;
    }
    let v = f32s(graph, c);
    match info.shape.iter().rev().skip(1).all(|&d| d == 1) {
        true if v.len() == channels => Some(v),
        true if v.len() == 1 => Some(vec![v[0]; channels]),
        _ => None,
    }
}

fn f32s(graph: &Graph, t: TensorId) -> Vec<f32> {
    graph
        .tensor(t)
        .data
        .as_deref()
        .unwrap_or_default()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn push_f32(graph: &mut Graph, name: String, shape: Vec<usize>, v: &[f32]) -> TensorId {
    graph.push_f32(name, shape, Some(v))
}

/// A copy of the f32 constant `t` with every element multiplied by `s[index on axis]`.
fn scale_axis(graph: &mut Graph, t: TensorId, axis: usize, s: &[f32]) -> TensorId {
    let info = graph.info(t).clone();
    let inner: usize = info.shape[axis + 1..].iter().product();
    let n = info.shape[axis];
    let v: Vec<f32> = f32s(graph, t)
        .iter()
        .enumerate()
        .map(|(i, &x)| x * s[(i / inner) % n])
        .collect();
    let name = format!("{}:folded", graph.tensor(t).name);
    push_f32(graph, name, info.shape, &v)
}

fn set_activation(op: &mut Op, act: Activation) {
    match op {
        Op::Conv2d(a) => a.activation = act,
        Op::DepthwiseConv2d(a) => a.activation = act,
        Op::FullyConnected { activation, .. } => *activation = act,
        _ => {}
    }
}
