//! The host executor: runs a validated graph node by node with kiln-runtime's kernels.

mod data;

pub use data::TensorData;
