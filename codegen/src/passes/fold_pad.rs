//! Folds a PAD of the height and width axes into the explicit padding of the
//! convolution reading it.
//!
//! Exact because a convolution skips taps outside its input, and a padded element
//! contributes nothing either: int8 PAD writes the zero point, which the convolution's
//! input offset turns into 0; f32 PAD writes 0.0. (Pooling is not folded: an average
//! counts padded elements and a maximum sees them.)

use super::{producer, remove_nodes, single_private_use};
use crate::ir::shape::window_output_size;
use crate::ir::{DType, Graph, NodeId, Op, Padding};

/// `(before, after)` per spatial axis that `padding` means for an input of `size`.
fn explicit_amounts(
    padding: Padding,
    size: [usize; 2],
    filter: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> [(usize, usize); 2] {
    let axis = |a: usize| match padding {
        Padding::Valid => (0, 0),
        Padding::Explicit { .. } => padding.explicit(a).unwrap_or((0, 0)),
        Padding::Same => {
            let effective = (filter[a] - 1) * dilation[a] + 1;
            let out = size[a].div_ceil(stride[a]);
            let total = ((out - 1) * stride[a] + effective).saturating_sub(size[a]);
            (total / 2, total - total / 2)
        }
    };
    [axis(0), axis(1)]
}

/// Folds every foldable PAD; returns how many.
pub fn run(graph: &mut Graph) -> usize {
    let mut dead = Vec::new();
    for i in 0..graph.nodes.len() {
        let (stride, dilation, padding, filter_tensor) = match &graph.nodes[i].op {
            Op::Conv2d(a) => (a.stride, a.dilation, a.padding, graph.nodes[i].inputs[1]),
            Op::DepthwiseConv2d(a) => (a.stride, a.dilation, a.padding, graph.nodes[i].inputs[1]),
            _ => continue,
        };
        let padded = graph.nodes[i].inputs[0];
        let Some(p) = producer(graph, padded) else {
            continue;
        };
        let Op::Pad { paddings } = &graph.nodes[p.0].op else {
            continue;
        };
        if dead.contains(&p) || single_private_use(graph, padded) != Some(NodeId(i)) {
            continue;
        }
        let source = graph.nodes[p.0].inputs[0];
        let (src, pad_out) = (graph.info(source), graph.info(padded));
        let spatial_only = paddings.len() == 4 && paddings[0] == [0, 0] && paddings[3] == [0, 0];
        let same_quant = match src.dtype {
            DType::F32 => true,
            DType::I8 => {
                src.scale_zero_point().is_some()
                    && src.scale_zero_point() == pad_out.scale_zero_point()
            }
            _ => false,
        };
        if !spatial_only || !same_quant {
            continue;
        }
        let f = &graph.info(filter_tensor).shape;
        let filter = [f[1], f[2]];
        let base = explicit_amounts(
            padding,
            [pad_out.shape[1], pad_out.shape[2]],
            filter,
            stride,
            dilation,
        );
        let merged = Padding::Explicit {
            top: base[0].0 + paddings[1][0],
            bottom: base[0].1 + paddings[1][1],
            left: base[1].0 + paddings[2][0],
            right: base[1].1 + paddings[2][1],
        };
        // The result must keep its shape, and every window must still touch real input
        // (the runtime's explicit windows require it).
        let out = &graph.info(graph.nodes[i].outputs[0]).shape;
        let fits = (0..2).all(|a| {
            let (before, _) = merged.explicit(a).unwrap_or((0, 0));
            let size = src.shape[1 + a];
            let effective = (filter[a] - 1) * dilation[a] + 1;
            let last_start = (out[1 + a] - 1) * stride[a];
            window_output_size(size, filter[a], stride[a], dilation[a], merged, a)
                == Some(out[1 + a])
                && before < effective
                && last_start < before + size
        });
        if !fits {
            continue;
        }
        let node = &mut graph.nodes[i];
        node.inputs[0] = source;
        if let Op::Conv2d(a) = &mut node.op {
            a.padding = merged;
        } else if let Op::DepthwiseConv2d(a) = &mut node.op {
            a.padding = merged;
        }
        dead.push(p);
    }
    remove_nodes(graph, &dead);
    dead.len()
}
