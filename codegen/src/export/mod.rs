//! Exporters: a float [`crate::ir::Graph`] out to another framework's format, so a
//! model trained or optimized with kiln runs elsewhere (onnxruntime, PyTorch tooling).
//!
//! The inverse of [`crate::import`]: [`onnx`] writes what the ONNX importer reads back
//! into the same computation.

pub mod onnx;
