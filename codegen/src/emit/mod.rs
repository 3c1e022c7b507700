//! Emitters: a planned graph in, source code out.

pub mod cuda;
pub mod rust;

use std::path::{Path, PathBuf};

/// Where a generated crate finds the kiln crate it depends on (kiln-runtime for the
/// Rust emitter, kiln-cuda for the CUDA emitter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrateDependency {
    /// A local checkout (path to the crate's folder).
    Path(PathBuf),
    /// A crates.io version requirement.
    Version(String),
}

impl CrateDependency {
    /// The dependency's value in `Cargo.toml`: `{ path = "..." }` or `"version"`.
    pub(crate) fn toml_value(&self) -> String {
        match self {
            CrateDependency::Path(p) => {
                format!("{{ path = \"{}\" }}", toml_text(&p.display().to_string()))
            }
            CrateDependency::Version(v) => format!("\"{}\"", toml_text(v)),
        }
    }
}

/// `text` for a `//` comment or doc line: control characters (a newline would end the
/// comment) become spaces.
pub(crate) fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` as the inside of a TOML basic string.
pub(crate) fn toml_text(text: &str) -> String {
    comment_text(text)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// Refuses a generated crate's name that Cargo would not take (letters, digits, `_`,
/// `-`, a letter first), as an I/O error on the crate's folder `dir`.
pub(crate) fn check_crate_name(name: &str, dir: &Path) -> Result<(), crate::CompileError> {
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        return Ok(());
    }
    Err(crate::CompileError::Io {
        path: dir.display().to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("'{name}' is not a crate name (letters, digits, '_', '-'; a letter first)"),
        ),
    })
}

/// Packs every constant tensor some node reads into one blob, each at an offset aligned
/// to `alignment`. Returns the blob and each tensor's offset (by tensor index).
pub(crate) fn weights_blob(graph: &crate::ir::Graph, alignment: usize) -> (Vec<u8>, Vec<usize>) {
    let mut used = vec![false; graph.tensors.len()];
    for n in &graph.nodes {
        for i in &n.inputs {
            used[i.0] = true;
        }
    }
    let mut blob = Vec::new();
    let mut offsets = vec![0; graph.tensors.len()];
    for (i, t) in graph.tensors.iter().enumerate() {
        if let (Some(data), true) = (&t.data, used[i]) {
            blob.resize(blob.len().next_multiple_of(alignment), 0);
            offsets[i] = blob.len();
            blob.extend_from_slice(data);
        }
    }
    (blob, offsets)
}
