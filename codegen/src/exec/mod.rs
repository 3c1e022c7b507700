//! The host executor: runs a validated graph node by node with kiln-runtime's kernels.
//!
//! It serves `kiln run`, the golden-vector tests and (later) calibration. Every kernel
//! parameter (multipliers, shifts, clamp ranges, windows) is computed once by
//! [`Executor::new`] with the same runtime functions generated code uses, so host and
//! device results are the same integers.

mod compare;
mod data;
pub(crate) mod kernel;

pub use compare::{compare, Mismatch, F32_ABS_TOLERANCE, F32_REL_TOLERANCE};
pub use data::TensorData;

use crate::ir::{Graph, Node};
use kernel::Kernel;

/// Why a graph cannot be prepared or run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Kernel parameters could not be derived for a node (e.g. a scale the fixed-point
    /// arithmetic cannot represent).
    #[error("node {index} '{name}' ({op}): {message}")]
    Prepare {
        /// Node index.
        index: usize,
        /// Node name.
        name: String,
        /// Operator name.
        op: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The caller passed inputs that do not fit the graph.
    #[error("input {index} '{name}': {message}")]
    Input {
        /// Graph input index.
        index: usize,
        /// Tensor name.
        name: String,
        /// What does not fit.
        message: String,
    },
    /// The graph fails validation.
    #[error(transparent)]
    Invalid(#[from] crate::ir::ValidateError),
}

/// Every node of a valid graph whose kernel parameters cannot be derived (e.g. a
/// softmax whose output quantization TFLM's integer algorithm does not accept), without
/// running anything. Empty when [`Executor::new`] will succeed.
pub fn check(graph: &Graph) -> Result<Vec<ExecError>, ExecError> {
    graph.validate()?;
    Ok(graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, node)| prepare(graph, i, node).err())
        .collect())
}

pub(crate) fn prepare(graph: &Graph, index: usize, node: &Node) -> Result<Kernel, ExecError> {
    Kernel::prepare(graph, node).map_err(|message| ExecError::Prepare {
        index,
        name: node.name.clone(),
        op: node.op.name(),
        message,
    })
}

/// A graph with every kernel prepared, ready to run any number of times.
pub struct Executor<'g> {
    graph: &'g Graph,
    kernels: Vec<Kernel>,
}

impl<'g> Executor<'g> {
    /// Validates `graph` and prepares a kernel for every node; fails with the first
    /// node whose kernel parameters cannot be derived (see [`check`] for all of them).
    pub fn new(graph: &'g Graph) -> Result<Self, ExecError> {
        graph.validate()?;
        let kernels = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| prepare(graph, index, node))
            .collect::<Result<_, _>>()?;
        Ok(Executor { graph, kernels })
    }

    /// Runs the graph on one value per graph input and returns one per graph output.
    pub fn run(&self, inputs: &[TensorData]) -> Result<Vec<TensorData>, ExecError> {
        self.run_observed(inputs, &mut |_, _, _| {})
    }

    /// Like [`run`](Self::run), calling `observe(node_index, node, result)` after each
    /// node, e.g. to dump intermediate tensors.
    pub fn run_observed(
        &self,
        inputs: &[TensorData],
        observe: &mut dyn FnMut(usize, &Node, &TensorData),
    ) -> Result<Vec<TensorData>, ExecError> {
        let g = self.graph;
        if inputs.len() != g.inputs.len() {
            return Err(ExecError::Input {
                index: inputs.len().min(g.inputs.len()),
                name: String::new(),
                message: format!(
                    "{} values given for {} graph inputs",
                    inputs.len(),
                    g.inputs.len()
                ),
            });
        }
        let mut values: Vec<Option<TensorData>> = g
            .tensors
            .iter()
            .map(|t| {
                t.data
                    .as_ref()
                    .map(|d| TensorData::from_le_bytes(t.info.dtype, d))
            })
            .collect();
        for (index, (id, value)) in g.inputs.iter().zip(inputs).enumerate() {
            let info = g.info(*id);
            if value.dtype() != info.dtype || value.len() != info.num_elements() {
                return Err(ExecError::Input {
                    index,
                    name: g.tensor(*id).name.clone(),
                    message: format!(
                        "got {} x {}, expected {} x {} (shape {:?})",
                        value.len(),
                        value.dtype().name(),
                        info.num_elements(),
                        info.dtype.name(),
                        info.shape
                    ),
                });
            }
            values[id.0] = Some(value.clone());
        }
        for (index, (node, kernel)) in g.nodes.iter().zip(&self.kernels).enumerate() {
            // Validation guarantees every operand is defined before use.
            let operands: Vec<&TensorData> = node
                .inputs
                .iter()
                .map(|id| values[id.0].as_ref().expect("validated: operand defined"))
                .collect();
            let out_info = g.info(node.outputs[0]);
            let mut result = TensorData::zeros(out_info.dtype, out_info.num_elements());
            kernel.run(&operands, &mut result);
            observe(index, node, &result);
            values[node.outputs[0].0] = Some(result);
        }
        Ok(g.outputs
            .iter()
            .map(|id| values[id.0].clone().expect("validated: output defined"))
            .collect())
    }
}
