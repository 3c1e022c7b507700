//! kiln-train: trains kiln models on the host.
//!
//! A model's forward graph **is** a [`kiln_codegen::ir::Graph`]: NHWC, batch 1, with
//! its weights as float constants, built from a small declarative model file
//! ([`model::ModelSpec`]). For training it is instantiated for a batch
//! ([`graph::TrainGraph::from_ir`]); every forward node keeps its kiln [`Op`] and
//! attributes (1:1), a loss is appended, and [`autodiff::differentiate`] adds the
//! gradient nodes (training-only ops in [`graph::TOp`]) by symbolic reverse-mode AD.
//! [`exec::Executor`] runs the whole graph in f32 (im2col + GEMM convolutions, rayon
//! across the batch) out of one arena laid out by a static memory plan ([`plan`]:
//! lifetimes, in-place elementwise steps, greedy offsets; optional gradient
//! checkpointing, [`plan::Checkpointing`], recomputes forward segments in the backward
//! pass for a lower peak with bit-identical results). [`optim`] updates the weights,
//! which are written back into the kiln graph; that graph then goes unchanged through
//! kiln's passes, quantizer ([`kiln_codegen::quantize`]), executor and compiler.
//!
//! [`Op`]: kiln_codegen::ir::Op
//!
//! ```no_run
//! use kiln_train::{data::Dataset, model::ModelSpec, optim::*, train::*};
//! let spec = ModelSpec::load("models/lenet/model.toml".as_ref())?;
//! let (mut graph, layers) = spec.build_training(1)?; // layers: batch norm, dropout
//! let data = Dataset::load_dir("data/mnist-10k".as_ref(), &spec.input, None)?;
//! let cfg = TrainConfig {
//!     epochs: 1,
//!     batch: 32,
//!     lr: 1e-3,
//!     optimizer: OptimizerKind::parse("adam", 0.0).unwrap(),
//!     schedule: Schedule::Constant,
//!     seed: 1,
//!     layers,
//!     ..TrainConfig::default()
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
//! | `batch_norm` | MUL, ADD by per-channel constants (last axis; NHWC or `[N, F]`) | `momentum` (0.1), `eps` (1e-5) |
//! | `dropout` | none (training only) | `rate` (zeroed fraction, in `[0, 1)`) |
//!
//! `batch_norm` and `dropout` train differently from how they infer ([`layers`]): batch
//! norm normalizes with the batch mean and biased variance, learns gamma and beta, and
//! moves its running mean and (unbiased) running variance by `momentum` each step;
//! dropout zeroes values with probability `rate` and scales the rest by
//! `1 / (1 - rate)`, with masks from the seed. The kiln graph is the inference graph:
//! batch norm `x * scale + shift` from the running statistics (kiln's `fold_batch_norm`
//! folds it into the conv/depthwise/dense before it), no dropout. gamma, beta, the
//! running statistics, scale and shift are constants named `batch_norm<n>/<role>`, so
//! weight files carry them. Training needs [`model::ModelSpec::training_layers`] in
//! [`train::TrainConfig::layers`] to know where they are (`build_training` returns both).
//!
//! The last layer's outputs are the class logits; training uses softmax cross-entropy
//! (a softmax layer is not needed and has no gradient rule). `models/lenet/model.toml`
//! is LeNet-5, `models/lenet/mlp.toml` an MLP, `models/lenet/lenet-bn.toml` LeNet-5 with
//! batch norm and dropout, `models/lenet/dscnn.toml` a depthwise-separable CNN with
//! batch norm. Weights start He-uniform from the seed,
//! biases at zero.
//!
//! # Data
//!
//! [`data::Dataset::open`] reads IDX (MNIST's files, gzip'd or not), NumPy `.npy`
//! (`x.npy` + `y.npy` or `images.npy` + `labels.npy` in a folder, or an explicit
//! `IMAGES.npy,LABELS.npy` pair) and CSV (one sample per row, the label in the first,
//! last or a chosen column, an optional header, strict parsing with `file:line:column`
//! errors). One normalization for all: integer data is divided by 255 (bytes become
//! `[0, 1]`, as `kiln eval` and `kiln quantize` read IDX), float data is used as is; a
//! CSV file is integer data when every value is written as an integer.
//!
//! # Augmentation
//!
//! [`augment::Augment`] (`TrainConfig::augment`) shifts training samples by up to `k`
//! pixels with zero fill, adds Gaussian noise and optionally flips them left-right, on
//! the fly per batch: the dataset is never changed and evaluation never augments. Each
//! sample's randomness is keyed on (seed, epoch, slot), so it is deterministic for any
//! thread count and after a resume.
//!
//! # Checkpoints
//!
//! With `TrainConfig::checkpoint` set, every epoch writes a [`checkpoint::Checkpoint`]:
//! a safetensors file with the parameters (under their IR names, so it also loads as
//! weights), the optimizer state (`optim/m/*`, `optim/v/*`), the batch norms' running
//! statistics (`state/*`), the sample order, and in its metadata the epoch, optimizer
//! step count, shuffle- and dropout-generator states, configuration
//! essentials and per-epoch history. [`train::train_from`] continues from it: K epochs,
//! a stop and N-K more give bit-identical weights to N epochs straight. A checkpoint of
//! another model (missing tensor, other shape) or other settings (optimizer, batch,
//! seed, lr, schedule, augmentation, sample count) is refused, naming the difference.
//! The cosine schedule spans `epochs`, so resume with the `epochs` of the stopped run.
//!
//! # Quantization-aware training
//!
//! With [`train::TrainConfig::qat`] ([`qat::QatConfig`]: the first QAT epoch after a
//! float warm-up), [`train::train_model`] trains the graph with fake quantization
//! ([`qat`]) placed on exactly the tensors that are int8 in kiln's compiled graph (read
//! off kiln's own optimization passes: after fused relus, not between), with kiln's
//! quantizer's parameters and rounding: per-channel symmetric weights, int32 biases,
//! per-tensor asymmetric activations whose ranges are moving averages of batch
//! min/max, frozen at the end. Gradients are straight-through (zero where a value is
//! clipped). [`qat::quantize_int8`] hands those ranges to
//! [`kiln_codegen::quantize::quantize_with_ranges`], so kiln's int8 model predicts
//! what the fake-quantized graph predicts ([`qat::predict`]); `kiln train --qat`
//! reports both and writes the ranges (`qat_ranges.toml`, [`qat::load_ranges`]).
//! A batch norm kiln folds into the layer before it keeps training with batch
//! statistics during QAT, while that layer computes with its weights folded and
//! fake-quantized as kiln compiles them (the scale divided out again before the
//! normalization), as PyTorch's ConvBn QAT does; dropout layers keep dropping.
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
//! One seed fixes the initial weights, the batch order and the dropout masks (drawn on
//! one thread before each step). Every kernel either computes
//! each output element in one task, or sums per-chunk partials of a fixed [`kernels::CHUNK`]
//! of samples in chunk order, so a seed gives bit-identical training for any number of
//! threads.
//!
//! # Memory
//!
//! [`plan::MemoryPlan`] is computed once per training graph: each activation and
//! gradient lives from the step that writes it to its last reader (outputs, loss and
//! gradients to the end), elementwise steps overwrite a dying operand, and offsets in
//! one f32 arena are placed greedily (largest first, first fit). Runs allocate
//! nothing. Its [`plan::MemoryReport`] gives the arena next to the sum of all tensors
//! and the lower bound (most bytes alive at one step); [`train::memory_plans`] plans
//! without running, and `TrainConfig::grad_checkpoint` turns on gradient checkpointing.
//! LeNet-5's peak is its first layer's backward (ReLU output, its gradient and the
//! pooled gradient alive at once), so checkpointing cannot lower it; eight 3x3
//! convolutions of 8 filters with ReLU on 28x28 images drop from 7.14 MiB to 3.90 MiB
//! at batch 32 (3 segments, 11 of 19 forward nodes recomputed).
//!
//! # Dependencies
//!
//! See Cargo.toml: matrixmultiply (GEMM), rayon (parallel batch), safetensors (weights), serde + toml (model file), thiserror, flate2
//! (gzip'd labels), npyz (npy datasets). The random generator is [`rng`], written here so that seeds are
//! stable across platforms and dependency upgrades.

pub mod augment;
pub mod autodiff;
pub mod checkpoint;
pub mod data;
pub mod exec;
pub mod graph;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod optim;
pub mod plan;
pub mod qat;
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

/// Runs `f` on a worker thread of the training pool and returns its result. Kernels
/// called from inside the pool start their parallel loops where they are: with one
/// thread every loop runs inline, and with more the caller works alongside the others,
/// instead of handing each loop to the pool and sleeping until it is done (a wake-up
/// and a context switch per kernel call, a fifth of the time of a small model's step).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
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
