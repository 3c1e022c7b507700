//! Graph rewrites that remove nodes and tensors: fewer kernel calls, and fewer tensors
//! for the memory planner to place. Every pass keeps results bit-exact except
//! `fold_batch_norm`, which folds float per-channel scales into weights (rounding-level
//! differences, see its module).
//!
//! Each pass is a function `fn(&mut Graph) -> usize` returning how many rewrites it
//! made. [`optimize`] runs the pipeline until no pass changes anything, validating the
//! graph after every pass that did (a failure there is a bug in the pass, reported with
//! its name rather than silently producing a wrong model).

mod collapse;
mod dead_code;
mod fold_activation;
mod fold_affine;
mod fold_constants;
mod fold_pad;
mod fuse_residual;
mod transpose;

use crate::ir::{Graph, NodeId, TensorId, ValidateError};

/// A named rewrite.
pub struct Pass {
    /// Name shown in reports.
    pub name: &'static str,
    /// Applies the rewrite everywhere it is legal; returns the number of rewrites.
    pub run: fn(&mut Graph) -> usize,
}

/// The default pipeline, in the order it runs each round.
pub const PIPELINE: [Pass; 9] = [
    Pass {
        name: "fold_constants",
        run: fold_constants::run,
    },
    Pass {
        name: "simplify_transpose",
        run: transpose::run,
    },
    Pass {
        name: "fold_batch_norm",
        run: fold_affine::run,
    },
    Pass {
        name: "fold_pad",
        run: fold_pad::run,
    },
    Pass {
        name: "fold_activation",
        run: fold_activation::run,
    },
    Pass {
        name: "collapse_reshape",
        run: collapse::reshape_chains,
    },
    Pass {
        name: "remove_identity_requantize",
        run: collapse::identity_requantize,
    },
    Pass {
        name: "fuse_residual",
        run: fuse_residual::run,
    },
    Pass {
        name: "dead_code",
        run: dead_code::run,
    },
];

/// A pass left an invalid graph (a bug in that pass).
#[derive(Debug, thiserror::Error)]
#[error("pass {pass} broke the graph: {source}")]
pub struct PassError {
    /// The pass.
    pub pass: &'static str,
    /// The rule the graph now breaks.
    pub source: ValidateError,
}

/// Runs [`PIPELINE`] to a fixpoint; returns each pass's total rewrite count.
pub fn optimize(graph: &mut Graph) -> Result<Vec<(&'static str, usize)>, PassError> {
    let mut totals: Vec<(&'static str, usize)> = PIPELINE.iter().map(|p| (p.name, 0)).collect();
    loop {
        let mut changed = false;
        for (pass, total) in PIPELINE.iter().zip(totals.iter_mut()) {
            let n = (pass.run)(graph);
            if n > 0 {
                graph.validate().map_err(|source| PassError {
                    pass: pass.name,
                    source,
                })?;
                total.1 += n;
                changed = true;
            }
        }
        if !changed {
            return Ok(totals);
        }
    }
}

/// The nodes that read `tensor`.
pub(crate) fn consumers(graph: &Graph, tensor: TensorId) -> Vec<NodeId> {
    graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.inputs.contains(&tensor))
        .map(|(i, _)| NodeId(i))
        .collect()
}

/// The node that writes `tensor`, if any.
pub(crate) fn producer(graph: &Graph, tensor: TensorId) -> Option<NodeId> {
    graph
        .nodes
        .iter()
        .position(|n| n.outputs.contains(&tensor))
        .map(NodeId)
}

/// True when `tensor` is read by exactly one node and is not a graph output, so the
/// node producing it may be merged into that reader.
pub(crate) fn single_private_use(graph: &Graph, tensor: TensorId) -> Option<NodeId> {
    if graph.outputs.contains(&tensor) {
        return None;
    }
    match consumers(graph, tensor).as_slice() {
        [only]
            if graph.nodes[only.0]
                .inputs
                .iter()
                .filter(|&&t| t == tensor)
                .count()
                == 1 =>
        {
            Some(*only)
        }
        _ => None,
    }
}

/// Makes every reader of `from` read `to` instead (graph outputs included).
pub(crate) fn replace_uses(graph: &mut Graph, from: TensorId, to: TensorId) {
    for n in &mut graph.nodes {
        for i in &mut n.inputs {
            if *i == from {
                *i = to;
            }
        }
    }
    for o in &mut graph.outputs {
        if *o == from {
            *o = to;
        }
    }
}

/// Removes the nodes in `dead` (indices into `graph.nodes`), keeping the order of the rest.
pub(crate) fn remove_nodes(graph: &mut Graph, dead: &[NodeId]) {
    let mut index = 0;
    graph.nodes.retain(|_| {
        let keep = !dead.iter().any(|d| d.0 == index);
        index += 1;
        keep
    });
}

#[cfg(test)]
mod tests;
