//! Where a command's model comes from: a file kiln imports (`.onnx`, `.tflite`), or a
//! kiln-train model file (`.toml`) built with the weights `kiln train` wrote
//! (`--weights DIR/weights.safetensors`), so a trained model goes straight to
//! `kiln compile`/`run`/`check` without an intermediate model file.

use anyhow::bail;
use kiln_codegen::ir::Graph;
use std::path::Path;

/// True for a kiln-train model file (`.toml`).
pub fn is_train_model(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// The graph of `model`: built by kiln-train from a `.toml` model file and its
/// `weights`, or imported from any other model file (which must not get `weights`).
pub fn load(model: &Path, weights: Option<&Path>) -> anyhow::Result<Graph> {
    match (is_train_model(model), weights) {
        (true, Some(w)) => Ok(kiln_train::load(model, w)?),
        (true, None) => bail!(
            "{}: a kiln-train model file needs its trained weights: add --weights FILE.safetensors (`kiln train --out DIR` writes DIR/weights.safetensors)",
            model.display()
        ),
        (false, Some(_)) => bail!(
            "--weights is only for kiln-train model files (.toml); {} carries its own weights",
            model.display()
        ),
        (false, None) => Ok(kiln_codegen::import::load(model)?),
    }
}
