//! Where a command's model comes from: a file kiln imports (`.onnx`, `.tflite`), or a
//! kiln-train model file (`.toml`) built with the weights `kiln train` wrote
//! (`--weights DIR/weights.safetensors`), so a trained model goes straight to
//! `kiln compile`/`run`/`check` without an intermediate model file.

use anyhow::bail;
use kiln_codegen::ir::Graph;
use std::path::Path;
use std::sync::OnceLock;

/// Sizes of named symbolic input dimensions (`kiln --dim NAME=SIZE`), set once by `main`.
static DIMS: OnceLock<Vec<(String, usize)>> = OnceLock::new();

/// Parses `--dim NAME=SIZE` values and keeps them for every model this run imports
/// (and the firmware builds it starts, through [`dims_env`]).
pub fn set_dims(values: &[String]) -> anyhow::Result<()> {
    let dims = kiln_codegen::builder::parse_dims(&values.join(","))
        .map_err(|e| anyhow::anyhow!("--dim: {e}"))?;
    // Set once, before any command runs; a second call keeps the first values.
    let _ = DIMS.set(dims);
    Ok(())
}

/// The `--dim` sizes as the `KILN_DIMS` variable firmware build scripts read
/// ([`kiln_codegen::builder::DIMS_ENV`]): `N=1,T=49`, empty for none.
pub fn dims_env() -> String {
    dims()
        .iter()
        .map(|(n, s)| format!("{n}={s}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `--dim` sizes, as the importers take them.
pub fn dims() -> Vec<(&'static str, usize)> {
    DIMS.get()
        .map(|d| d.iter().map(|(n, s)| (n.as_str(), *s)).collect())
        .unwrap_or_default()
}

/// Imports a model file (`.onnx`, `.tflite`) with the `--dim` sizes.
pub fn import(model: &Path) -> anyhow::Result<Graph> {
    Ok(kiln_codegen::import::load_with_dims(model, &dims())?)
}

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
        (false, None) => import(model),
    }
}
