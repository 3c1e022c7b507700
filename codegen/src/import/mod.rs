//! Importers: model files in, validated [`Graph`] out.
//!
//! Every importer treats its input as untrusted: sizes and offsets are checked before
//! use, and any problem becomes an [`ImportError`] naming the file, node and tensor.

mod error;
pub mod onnx;
pub mod tflite;

pub use error::{ImportError, Unsupported};

use crate::ir::Graph;
use std::path::Path;

/// Imports a model file, choosing the importer by extension: `.onnx` is ONNX, anything
/// else is read as TFLite (whose importer reports a file that is not a flatbuffer).
pub fn load(path: &Path) -> Result<Graph, ImportError> {
    load_with_dims(path, &[])
}

/// [`load`] with the sizes of named symbolic input dimensions (ONNX's `dim_param`, such
/// as a dynamic batch `N`). TFLite models have no named dimensions: `dims` must be
/// empty for them.
pub fn load_with_dims(path: &Path, dims: &[(&str, usize)]) -> Result<Graph, ImportError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("onnx") => onnx::load_with_dims(path, dims),
        _ if !dims.is_empty() => Err(ImportError::DynamicShape {
            file: path.display().to_string(),
            message: "named input dimensions are for ONNX models; a TFLite model has none to set (its shapes are fixed when it is converted)".into(),
        }),
        _ => tflite::load(path),
    }
}
