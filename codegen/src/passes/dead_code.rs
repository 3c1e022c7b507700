//! Removes nodes whose results nobody reads (they cannot affect any graph output).

use super::{consumers, remove_nodes};
use crate::ir::{Graph, NodeId};

/// Removes every node none of whose results is read or is a graph output.
pub fn run(graph: &mut Graph) -> usize {
    let dead: Vec<NodeId> = (0..graph.nodes.len())
        .map(NodeId)
        .filter(|id| {
            graph.nodes[id.0]
                .outputs
                .iter()
                .all(|t| !graph.outputs.contains(t) && consumers(graph, *t).is_empty())
        })
        .collect();
    remove_nodes(graph, &dead);
    dead.len()
}
