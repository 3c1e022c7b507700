//! `Builder`: the compiler as a library call from a firmware's `build.rs`.

use crate::board::{Board, Needs};
use crate::compile::{optimize_and_plan, CompileError, CompileOptions, Target};
use crate::emit::rust::emit;
use crate::import::ImportError;
use std::path::{Path, PathBuf};

/// Compiles a model into `OUT_DIR` from a `build.rs`, so firmware can include it
/// without running the CLI:
///
/// ```no_run
/// // build.rs
/// kiln_codegen::Builder::new("models/kws_ref_model/model.tflite").name("kws").generate().unwrap();
/// ```
/// ```ignore
/// // src/main.rs
/// mod kws {
///     include!(concat!(env!("OUT_DIR"), "/kws.rs"));
/// }
/// static mut ARENA: kws::Arena = kws::Arena::new();
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    model: PathBuf,
    name: Option<String>,
    out_dir: Option<PathBuf>,
    options: CompileOptions,
    board: Option<&'static Board>,
    env: Option<String>,
}

/// What [`Builder::generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The module body to `include!`.
    pub source: PathBuf,
    /// The weights blob next to it.
    pub weights: PathBuf,
    /// Arena bytes the model needs.
    pub arena_bytes: usize,
    /// Weight bytes in flash.
    pub weight_bytes: usize,
}

impl Builder {
    /// A builder for the model file at `model` (`.tflite`).
    pub fn new(model: impl AsRef<Path>) -> Self {
        Builder {
            model: model.as_ref().to_path_buf(),
            name: None,
            out_dir: None,
            options: CompileOptions::default(),
            board: None,
            env: None,
        }
    }

    /// Base name of the generated files (`<name>.rs`, `<name>.weights.bin`); defaults to
    /// the model file's stem.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Folder to write into; defaults to the `OUT_DIR` cargo gives build scripts.
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The device the model is compiled for.
    pub fn target(mut self, target: Target) -> Self {
        self.options.target = target;
        self
    }

    /// Reads the model path from the environment variable `var` when it is set (the
    /// path given to [`Builder::new`] is the default), and tells cargo to rerun when
    /// the variable changes.
    pub fn model_from_env(mut self, var: impl Into<String>) -> Self {
        self.env = Some(var.into());
        self
    }

    /// Compiles for `board`'s core, and makes [`Builder::generate`] fail when the arena
    /// plus the board's stack exceed its RAM or the weights exceed its flash.
    pub fn board(mut self, board: &'static Board) -> Self {
        self.options.target = board.target;
        self.board = Some(board);
        self
    }

    /// The model file this builder compiles (after [`Builder::model_from_env`]).
    pub fn model_path(&self) -> PathBuf {
        match self.env.as_deref().and_then(std::env::var_os) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => self.model.clone(),
        }
    }

    /// Imports, plans and emits the model, and tells cargo to rerun when it changes.
    pub fn generate(mut self) -> Result<Generated, CompileError> {
        if let Some(var) = &self.env {
            println!("cargo:rerun-if-env-changed={var}");
            self.model = self.model_path();
        }
        let file = self.model.display().to_string();
        let out_dir = match self
            .out_dir
            .or_else(|| std::env::var_os("OUT_DIR").map(PathBuf::from))
        {
            Some(d) => d,
            None => {
                return Err(CompileError::Io {
                    path: "OUT_DIR".into(),
                    source: std::io::Error::other(
                        "not set: call Builder::out_dir outside build scripts",
                    ),
                })
            }
        };
        let stem = self
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = self.name.unwrap_or(stem);
        println!("cargo:rerun-if-changed={file}");
        println!("cargo:rerun-if-env-changed={DIMS_ENV}");
        let dims_text = std::env::var(DIMS_ENV).unwrap_or_default();
        let dims = parse_dims(&dims_text).map_err(|message| ImportError::DynamicShape {
            file: file.clone(),
            message,
        })?;
        let dims: Vec<(&str, usize)> = dims.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let graph = crate::import::load_with_dims(&self.model, &dims)?;
        let planned = optimize_and_plan(graph, &self.options, &file)?;
        let (graph, plan) = (&planned.graph, &planned.plan);
        let weights_file = format!("{name}.weights.bin");
        let model =
            emit(graph, plan, &file, &weights_file, self.options.target).map_err(|source| {
                CompileError::Emit {
                    file: file.clone(),
                    source,
                }
            })?;
        if let Some(board) = self.board {
            board
                .check_fit(&Needs {
                    arena: plan.arena_bytes as u64,
                    weights: model.weights.len() as u64,
                    ..Needs::default()
                })
                .map_err(|source| CompileError::Fit {
                    file: file.clone(),
                    source,
                })?;
        }
        let source = out_dir.join(format!("{name}.rs"));
        let weights = out_dir.join(&weights_file);
        for (path, bytes) in [
            (&source, model.source.as_bytes()),
            (&weights, model.weights.as_slice()),
        ] {
            std::fs::write(path, bytes).map_err(|e| CompileError::Io {
                path: path.display().to_string(),
                source: e,
            })?;
        }
        Ok(Generated {
            source,
            weights,
            arena_bytes: plan.arena_bytes,
            weight_bytes: model.weights.len(),
        })
    }
}

/// Environment variable with the sizes of named symbolic input dimensions of an ONNX
/// model (`N=1` or `N=1,T=49`), read by [`Builder::generate`]: how `kiln --dim` reaches
/// the build scripts of the firmware it builds.
pub const DIMS_ENV: &str = "KILN_DIMS";

/// Parses `NAME=SIZE` pairs separated by commas (empty: none); sizes are positive and
/// each name appears once.
pub fn parse_dims(text: &str) -> Result<Vec<(String, usize)>, String> {
    let mut dims: Vec<(String, usize)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let parsed = item
            .split_once('=')
            .and_then(|(n, v)| Some((n.trim(), v.trim().parse::<usize>().ok()?)));
        match parsed {
            Some((name, size)) if !name.is_empty() && size > 0 => {
                if dims.iter().any(|(n, _)| n == name) {
                    return Err(format!("dimension '{name}' is given twice"));
                }
                dims.push((name.to_string(), size));
            }
            _ => {
                return Err(format!(
                    "'{item}': expected NAME=SIZE with a positive size, e.g. N=1"
                ))
            }
        }
    }
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_parse_and_bad_ones_say_why() {
        assert_eq!(parse_dims("").unwrap(), vec![]);
        assert_eq!(
            parse_dims("N=1, T=49").unwrap(),
            vec![("N".to_string(), 1), ("T".to_string(), 49)]
        );
        for bad in ["N", "N=0", "=3", "N=x", "N=-1"] {
            assert!(parse_dims(bad).unwrap_err().contains("NAME=SIZE"), "{bad}");
        }
        assert!(parse_dims("N=1,N=2").unwrap_err().contains("twice"));
    }

    fn kws() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/kws_ref_model/model.tflite")
    }

    #[test]
    fn writes_an_includable_module_and_its_weights() {
        let dir = std::env::temp_dir().join(format!("kiln-builder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = Builder::new(kws())
            .name("kws")
            .target(Target::CortexM4)
            .out_dir(&dir)
            .generate()
            .unwrap();
        assert_eq!(g.source, dir.join("kws.rs"));
        assert_eq!(g.weights, dir.join("kws.weights.bin"));
        // In-place depthwise and pointwise convs: one 8000-byte tensor and the DSP
        // kernels' scratch of the in-place 1x1 conv (1536 bytes), planned in the arena.
        assert_eq!(g.arena_bytes, 9536);
        assert_eq!(
            std::fs::metadata(&g.weights).unwrap().len() as usize,
            g.weight_bytes
        );
        let source = std::fs::read_to_string(&g.source).unwrap();
        // Relative to the generated file itself, so `include!` from OUT_DIR finds it.
        assert!(source.contains("include_bytes!(\"kws.weights.bin\")"));
        assert!(source.contains("pub fn run(arena: &mut Arena"));
        assert!(
            !source.contains("#![no_std]"),
            "a module body has no crate attributes"
        );
    }

    fn resnet() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/pretrainedResnet_quant/model.tflite")
    }

    #[test]
    fn a_board_too_small_fails_naming_both_figures() {
        let dir = std::env::temp_dir().join(format!("kiln-builder-fit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = Builder::new(resnet())
            .board(crate::board::find("microbit").unwrap())
            .out_dir(&dir)
            .generate()
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("model.tflite: does not fit microbit's RAM"),
            "{text}"
        );
        assert!(text.contains("arena 25152 + stack 2048"), "{text}");
        assert!(text.contains("> 16384 bytes of RAM"), "{text}");
        let ok = Builder::new(kws())
            .board(crate::board::find("nrf52840-dk").unwrap())
            .model_from_env("KILN_TEST_MODEL_UNSET_VARIABLE")
            .out_dir(&dir)
            .generate()
            .unwrap();
        // The nRF52840's Cortex-M4 runs the DSP kernels, their scratch in the arena.
        assert_eq!(ok.arena_bytes, 9536);
    }

    #[test]
    fn errors_name_the_model_and_need_an_output_folder() {
        let e = Builder::new("no/such/model.tflite")
            .out_dir("/tmp")
            .generate()
            .unwrap_err();
        assert!(e.to_string().contains("no/such/model.tflite"), "{e}");
        if std::env::var_os("OUT_DIR").is_none() {
            let e = Builder::new(kws()).generate().unwrap_err();
            assert!(e.to_string().contains("OUT_DIR"), "{e}");
        }
    }
}
