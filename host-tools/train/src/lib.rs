//! kiln-train: trains kiln models on the host.
//!
//! A model's forward graph **is** a [`kiln_codegen::ir::Graph`]: NHWC, batch 1, with
//! its weights as float constants, built from a small declarative model file
//! ([`model::ModelSpec`]). For training it is instantiated for a batch
//! ([`graph::TrainGraph::from_ir`]); every forward node keeps its kiln [`Op`] and
//! attributes (1:1), a loss is appended, and [`autodiff::differentiate`] adds the
//! gradient nodes (training-only ops in [`graph::TOp`]) by symbolic reverse-mode AD.
//! [`exec::Executor`] runs the whole graph in f32 (im2col + GEMM convolutions, rayon
//! across the batch, buffers shared by a memory plan). [`optim`] updates the weights,
//! which are written back into the kiln graph; that graph then goes unchanged through
//! kiln's passes, quantizer ([`kiln_codegen::quantize`]), executor and compiler.
//!
//! [`Op`]: kiln_codegen::ir::Op
//!
//! ```no_run
//! use kiln_train::{data::Dataset, model::ModelSpec, optim::*, train::*};
//! let spec = ModelSpec::load("models/lenet/model.toml".as_ref())?;
//! let mut graph = spec.build(1)?;
//! let data = Dataset::load_dir("data/mnist-10k".as_ref(), &spec.input, None)?;
//! let cfg = TrainConfig {
//!     epochs: 1,
//!     batch: 32,
//!     lr: 1e-3,
//!     optimizer: OptimizerKind::parse("adam", 0.0).unwrap(),
//!     schedule: Schedule::Constant,
//!     seed: 1,
//! };
//! let history = train(&mut graph, &data, None, &cfg, &mut |_| {})?;
//! println!("loss {}", history[0].loss);
//! # Ok::<(), kiln_train::TrainError>(())
//! ```
//!
//! # Model file
//!
//! TOML: the shape of one sample, then `[[layer]]` tables in order, each with a `type`.
//! Unknown fields are errors; syntax and field errors carry the file's line and column,
//! semantic ones (a window that does not fit) the layer number and line.
//!
//! ```toml
//! name = "lenet"
//! input = [28, 28, 1]          # [height, width, channels], or [features]
//!
//! [[layer]]
//! type = "conv"                # CONV_2D, filter OHWI
//! filters = 6
//! kernel = 5                   # or [kh, kw]
//! stride = 1                   # default 1; or [sh, sw]
//! padding = "valid"            # "valid" (default), "same", n, or [top, bottom, left, right]
//! bias = true                  # default
//!
//! [[layer]]
//! type = "relu"
//! ```
//!
//! | `type` | kiln op | fields |
//! | --- | --- | --- |
//! | `conv` | CONV_2D | `filters`, `kernel`, `stride`, `padding`, `bias` |
//! | `depthwise` | DEPTHWISE_CONV_2D | `kernel`, `multiplier` (1), `stride`, `padding`, `bias` |
//! | `dense` | FULLY_CONNECTED (flattens its input) | `units`, `bias` |
//! | `max_pool`, `avg_pool` | MAX_POOL_2D, AVERAGE_POOL_2D | `size`, `stride` (= size), `padding` |
//! | `global_avg_pool` | MEAN over H, W | |
//! | `relu`, `relu6`, `sigmoid`, `tanh` | RELU, RELU6, LOGISTIC, TANH | |
//! | `leaky_relu` | LEAKY_RELU | `alpha` (0.01) |
//! | `flatten` | RESHAPE to `[N, -1]` | |
//!
//! The last layer's outputs are the class logits; training uses softmax cross-entropy
//! (a softmax layer is not needed and has no gradient rule). `models/lenet/model.toml`
//! is LeNet-5, `models/lenet/mlp.toml` an MLP. Weights start He-uniform from the seed,
//! biases at zero.
//!
//! # Export
//!
//! A trained graph leaves kiln-train as the model file plus its weights ([`load`] joins
//! them again, and `kiln compile MODEL.toml --weights W.safetensors` compiles from them
//! directly), or as ONNX with [`kiln_codegen::export::onnx::write`] (`kiln train
//! --export-onnx FILE`): NCHW with a symbolic batch, as PyTorch exports, matching
//! onnxruntime within 1e-5 (`tests/export_onnx.rs`). Every layer type above exports.
//!
//! # Determinism
//!
//! One seed fixes the initial weights and the batch order. Every kernel either computes
//! each output element in one task, or sums per-chunk partials of a fixed [`kernels::CHUNK`]
//! of samples in chunk order, so a seed gives bit-identical training for any number of
//! threads.
//!
//! # Dependencies
//!
//! See Cargo.toml: matrixmultiply (GEMM), rayon (parallel batch), safetensors (weights), serde + toml (model file), thiserror, flate2
//! (gzip'd labels). The random generator is [`rng`], written here so that seeds are
//! stable across platforms and dependency upgrades.

pub mod autodiff;
pub mod data;
pub mod exec;
pub mod graph;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod rng;
pub mod svg;
pub mod train;

/// Why training could not proceed; each variant names the file or graph element.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model file is malformed or describes an impossible network.
    #[error("{file}: {message}")]
    Model {
        /// The model file.
        file: String,
        /// What is wrong, with line and layer where known.
        message: String,
    },
    /// A dataset file cannot be used.
    #[error("{file}: {message}")]
    Data {
        /// The data file or folder.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A weight file cannot be written or read.
    #[error("{file}: {message}")]
    Weights {
        /// The safetensors file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The graph cannot be trained or run (unsupported op, bad shapes, bad batch).
    #[error("{0}")]
    Graph(String),
    /// kiln's passes, quantizer or executor refused the trained graph.
    #[error("kiln: {0}")]
    Kiln(String),
    /// The loss became NaN or infinite.
    #[error("training diverged (loss not finite) at epoch {epoch}, step {step}; lower the learning rate")]
    Diverged {
        /// Epoch (from 1).
        epoch: usize,
        /// Step in the epoch (from 1).
        step: usize,
    },
}

/// Uses `threads` worker threads for all training kernels (rayon's global pool); call
/// once, before training. Results do not depend on it (see "Determinism").
pub fn set_threads(threads: usize) -> Result<(), TrainError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| TrainError::Graph(format!("cannot start {threads} threads: {e}")))
}

/// Number of threads the training kernels use.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// The trained float kiln graph from a model file and its safetensors weights (what
/// `kiln train` writes), ready for kiln's passes, quantizer and compiler.
pub fn load(
    model: &std::path::Path,
    weights: &std::path::Path,
) -> Result<kiln_codegen::ir::Graph, TrainError> {
    let mut graph = model::ModelSpec::load(model)?.build(0)?;
    train::load_weights(&mut graph, weights)?;
    Ok(graph)
}
