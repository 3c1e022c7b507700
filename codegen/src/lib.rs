//! kiln-codegen: the host-side half of kiln.
//!
//! A model file is imported into the [`ir::Graph`] ([`import`]), checked by
//! [`ir::Graph::validate`], and executed on the host with the same kernels the device
//! runs ([`exec`]). Later stages (passes, quantizer, planner, emitters) consume the same
//! graph; [`export`] writes a float graph back out as ONNX.
//!
//! ```no_run
//! let graph = kiln_codegen::import::tflite::load("models/kws_ref_model/model.tflite".as_ref())?;
//! println!("{} nodes", graph.nodes.len());
//! # Ok::<(), kiln_codegen::import::ImportError>(())
//! ```
//!
//! # Adding an operator
//!
//! One snake_case name (`conv_2d`, `mean`, ...) is reused in every place an op lives:
//!
//! 1. the [`ir::Op`] variant with its attributes, and its name in `Op::name`;
//! 2. its shape rule in `ir/shape.rs` and its dtype rule in `ir/validate.rs`;
//! 3. the importer mapping (`import/tflite/ops.rs`);
//! 4. its kernels in `runtime/src/kernels/reference/<name>.rs`, int8 and f32;
//! 5. the executor's dispatch in `exec/kernel.rs`;
//! 6. single-op golden models in `scripts/golden/make_op_models.py`, regenerated with
//!    `scripts/golden/regen.sh`; `tests/golden.rs` picks them up automatically.
//!
//! # Dependencies
//!
//! planus reads flatbuffers with checked accessors (see `import::tflite`), thiserror
//! gives each stage a typed error, npyz reads and writes `.npy` files. flate2 (with its
//! default pure-Rust miniz_oxide backend: no C toolchain, already in the lock file through
//! probe-rs) decompresses gzip'd IDX calibration data such as MNIST's `*-ubyte.gz`
//! (see [`quantize::data`]).

pub mod board;
pub mod builder;
pub mod compile;
pub mod emit;
pub mod exec;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod import;
pub mod ir;
pub mod npy;
pub mod plan;
pub mod quantize;

pub use builder::Builder;
pub use compile::{CompileError, CompileOptions, Target};
pub mod passes;
