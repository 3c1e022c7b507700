//! kiln-codegen: the host-side half of kiln.
//!
//! A model file is imported into the [`ir::Graph`] ([`import`]), checked by
//! [`ir::Graph::validate`], and executed on the host with the same kernels the device
//! runs ([`exec`]). Later stages (passes, quantizer, planner, emitters) consume the same
//! graph.
//!
//! ```no_run
//! let graph = kiln_codegen::import::tflite::load("models/kws_ref_model/model.tflite".as_ref())?;
//! println!("{} nodes", graph.nodes.len());
//! # Ok::<(), kiln_codegen::import::ImportError>(())
//! ```

pub mod import;
pub mod ir;
pub mod exec;
pub mod npy;
