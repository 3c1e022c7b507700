//! Errors of the import stage.

use crate::ir::ValidateError;
use std::fmt;

/// One operator (or operand type) of a model that kiln cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// Index of the operator in the model's (first) subgraph.
    pub node: usize,
    /// The operator as the model names it, e.g. `BATCH_MATMUL`.
    pub op: String,
    /// What exactly is missing: the operator, or an operand type or option.
    pub reason: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} {}: {}", self.node, self.op, self.reason)
    }
}

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The model file.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes are not a well-formed model (truncated, corrupted or hostile).
    #[error("{file}: malformed model: {message}")]
    Malformed {
        /// The model file.
        file: String,
        /// What is wrong and where.
        message: String,
    },
    /// A tensor's shape is not known at compile time.
    #[error("{file}: {message}")]
    DynamicShape {
        /// The model file.
        file: String,
        /// Which tensor and its shape.
        message: String,
    },
    /// The model is well formed but uses operators or types kiln has no kernel for;
    /// all of them are listed, not only the first.
    #[error("{file}: {} unsupported operator(s): {}", .items.len(), list(.items))]
    Unsupported {
        /// The model file.
        file: String,
        /// Every unsupported node.
        items: Vec<Unsupported>,
    },
    /// The model format version (e.g. an ONNX opset) is outside what kiln reads.
    #[error("{file}: {message}")]
    Version {
        /// The model file.
        file: String,
        /// The version found and the versions supported.
        message: String,
    },
    /// The imported graph breaks a structural rule (shapes, types, ordering).
    #[error("{file}: {source}")]
    Invalid {
        /// The model file.
        file: String,
        /// The broken rule, naming the node or tensor.
        source: ValidateError,
    },
}

fn list(items: &[Unsupported]) -> String {
    items
        .iter()
        .map(|u| u.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
