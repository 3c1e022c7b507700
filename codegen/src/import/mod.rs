//! Importers: model files in, validated [`Graph`](crate::ir::Graph) out.
//!
//! Every importer treats its input as untrusted: sizes and offsets are checked before
//! use, and any problem becomes an [`ImportError`] naming the file, node and tensor.

mod error;
pub mod tflite;

pub use error::{ImportError, Unsupported};
