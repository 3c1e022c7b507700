//! Post-training int8 quantization of float graphs.
//!
//! A float graph (from any importer) is run on calibration samples with the host
//! executor; an [`Observer`] per activation tensor records its range and histogram
//! ([`calibrate`]). A [`Calibration`] method turns each into a clipping range, and the
//! graph is rewritten into TFLite's full-integer int8 scheme ([`quantize_with`]), so
//! the planner, emitters, executor and runtime treat it exactly like an imported int8
//! TFLite model, and [`crate::exec::check`] finds nothing TFLM's kernels would refuse.
//! [`report()`] measures how far each int8 tensor is from its float twin (SQNR), which
//! is possible because every tensor keeps its [`TensorId`].
//!
//! ```no_run
//! use kiln_codegen::quantize::{self, data, Calibration, QuantizeOptions};
//! let float = kiln_codegen::import::tflite::load("models/pretrainedResnet/model.tflite".as_ref())?;
//! let samples = data::load_for_graph(
//!     &["models/pretrainedResnet/golden/input_0.npy".into()],
//!     &float,
//!     &data::DataOptions::default(),
//! )?;
//! let options = QuantizeOptions { calibration: Calibration::Mse, ..Default::default() };
//! let int8 = quantize::quantize(&float, &samples, &options)?;
//! println!("{}", quantize::report(&float, &int8, &samples)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod data;
mod observer;
pub mod params;
mod report;
mod transform;

#[cfg(test)]
mod tests;

pub use observer::{Calibration, Histogram, Observer, DEFAULT_PERCENTILE, MAX_BINS};
pub use report::{report, LayerRow, OutputRow, QuantReport};

use crate::exec::{ExecError, Executor, TensorData};
use crate::ir::{Graph, TensorId, ValidateError};
use std::collections::BTreeMap;

/// One calibration sample: a value for each graph input, in order.
pub type Sample = Vec<TensorData>;

/// Why a graph could not be calibrated or quantized.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// A node cannot be quantized (no int8 kernel, non-constant weights, ...).
    #[error("node {index} '{name}' ({op}): {message}")]
    Node {
        /// Node index in the graph being quantized.
        index: usize,
        /// Node name.
        name: String,
        /// Operator name.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A tensor cannot be quantized (not float, NaN during calibration, ...).
    #[error("tensor {index} '{name}': {message}")]
    Tensor {
        /// Tensor index.
        index: usize,
        /// Tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The calibration data does not fit the graph.
    #[error("calibration: {0}")]
    Calibration(String),
    /// The float graph cannot be run.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The quantized graph breaks a rule of the IR (a bug in the quantizer).
    #[error("the quantized graph is invalid (a bug in kiln's quantizer): {0}")]
    Invalid(ValidateError),
}

/// How to quantize.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantizeOptions {
    /// How activation ranges are chosen from the calibration statistics.
    pub calibration: Calibration,
    /// Fully-connected weights get one scale per output channel (kiln's and TFLM's
    /// int8 FULLY_CONNECTED accept both); `false` gives one scale per tensor, as older
    /// TFLite converters did.
    pub fc_per_channel: bool,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            calibration: Calibration::MinMax,
            fc_per_channel: true,
        }
    }
}

/// The statistics of every float activation tensor over the calibration samples.
#[derive(Debug, Clone)]
pub struct Statistics {
    observers: Vec<Option<Observer>>,
    samples: usize,
}

impl Statistics {
    /// The observer of a tensor: `None` for constants and tensors that are not float.
    pub fn observer(&self, id: TensorId) -> Option<&Observer> {
        self.observers.get(id.0).and_then(Option::as_ref)
    }

    /// Number of samples observed.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The clipping range of every tensor under `method`, indexed by tensor id.
    pub fn ranges(&self, method: Calibration) -> Vec<Option<(f32, f32)>> {
        self.observers
            .iter()
            .map(|o| o.as_ref().and_then(|o| o.range(method)))
            .collect()
    }
}

/// Checks without running anything that `graph` is a float graph every node of which
/// has an int8 form (the first problem, naming the node or tensor).
pub fn check_quantizable(graph: &Graph) -> Result<(), QuantizeError> {
    graph.validate().map_err(ExecError::from)?;
    transform::check(&transform::unfuse_residuals(graph), true).map(|_| ())
}

/// Runs the float `graph` on every sample and records each activation tensor's
/// statistics (graph inputs and every node's result). A graph that went through the
/// optimization passes is accepted: residual ADDs fused into convolutions are split
/// out first (their conv result becomes a new tensor, appended after the others).
pub fn calibrate(graph: &Graph, samples: &[Sample]) -> Result<Statistics, QuantizeError> {
    check_quantizable(graph)?;
    let graph = &*transform::unfuse_residuals(graph);
    if samples.is_empty() {
        return Err(QuantizeError::Calibration("no calibration samples".into()));
    }
    let exec = Executor::new(graph)?;
    let mut observers: Vec<Option<Observer>> = vec![None; graph.tensors.len()];
    let produced = graph.nodes.iter().flat_map(|n| n.outputs.iter());
    for id in graph.inputs.iter().chain(produced) {
        observers[id.0] = Some(Observer::new());
    }
    for (s, sample) in samples.iter().enumerate() {
        for (id, value) in graph.inputs.iter().zip(sample) {
            if let (Some(o), Some(v)) = (observers[id.0].as_mut(), value.as_f32()) {
                o.observe(v);
            }
        }
        exec.run_observed(sample, &mut |_, node, result| {
            if let (Some(o), Some(v)) = (observers[node.outputs[0].0].as_mut(), result.as_f32()) {
                o.observe(v);
            }
        })
        .map_err(|e| QuantizeError::Calibration(format!("sample {s}: {e}")))?;
    }
    for (t, o) in observers.iter().enumerate() {
        let Some(o) = o else { continue };
        if o.non_finite() > 0 {
            return Err(QuantizeError::Tensor {
                index: t,
                name: graph.tensors[t].name.clone(),
                message: format!(
                    "{} NaN or infinite values during calibration",
                    o.non_finite()
                ),
            });
        }
    }
    Ok(Statistics {
        observers,
        samples: samples.len(),
    })
}

/// The int8 graph for `float` from its calibration statistics: same tensor ids (plus
/// any requantization inserted before a CONCATENATION, and the conv results of fused
/// residual ADDs, which are split out again), int8 inputs and outputs.
/// Fails naming the node when the result would not run on TFLM's int8 kernels.
pub fn quantize_with(
    float: &Graph,
    stats: &Statistics,
    options: &QuantizeOptions,
) -> Result<Graph, QuantizeError> {
    options
        .calibration
        .check()
        .map_err(QuantizeError::Calibration)?;
    let ranges = stats.ranges(options.calibration);
    let float = transform::unfuse_residuals(float);
    finish(&float, &ranges, options)
}

/// The int8 graph for `float` with the activation ranges given by tensor name (e.g.
/// those quantization-aware training tracked) instead of calibration statistics; the
/// rest is [`quantize_with`]'s rewrite, so parameters are derived exactly as there
/// (`params::asymmetric` of each range, shared and fixed parameters where TFLM needs
/// them). Names are used because the optimization passes drop nodes and tensors: pass
/// the ranges of the tensors that survive them. Every activation tensor whose
/// parameters are not fixed by its op needs a range; a name matching no tensor, a
/// name shared by two tensors, or a range that is not finite is an error naming it.
/// A graph with fused residual ADDs is refused: their conv results have no name of
/// their own to give a range to (quantize before `fuse_residual`).
pub fn quantize_with_ranges(
    float: &Graph,
    ranges: &BTreeMap<String, (f32, f32)>,
    options: &QuantizeOptions,
) -> Result<Graph, QuantizeError> {
    check_quantizable(float)?;
    if let Some((index, node)) = float
        .nodes
        .iter()
        .enumerate()
        .find(|(_, n)| matches!(&n.op, crate::ir::Op::Conv2d(a) if a.residual.is_some()))
    {
        return Err(QuantizeError::Node {
            index,
            name: node.name.clone(),
            op: node.op.name(),
            message: "has a fused residual ADD, whose conv result has no tensor to give a range to; quantize before the fuse_residual pass".into(),
        });
    }
    let tensor_error = |index: usize, message: String| QuantizeError::Tensor {
        index,
        name: float.tensors[index].name.clone(),
        message,
    };
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, t) in float.tensors.iter().enumerate() {
        if let Some(first) = by_name.insert(&t.name, i) {
            if ranges.contains_key(&t.name) {
                return Err(tensor_error(
                    i,
                    format!("has the same name as tensor {first}, so a range by name is ambiguous"),
                ));
            }
        }
    }
    let mut by_id: Vec<Option<(f32, f32)>> = vec![None; float.tensors.len()];
    for (name, &(lo, hi)) in ranges {
        let Some(&i) = by_name.get(name.as_str()) else {
            return Err(QuantizeError::Calibration(format!(
                "a range is given for '{name}', but the graph has no tensor of that name"
            )));
        };
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(tensor_error(
                i,
                format!("range [{lo}, {hi}] is not a finite interval"),
            ));
        }
        by_id[i] = Some((lo, hi));
    }
    finish(float, &by_id, options)
}

/// The rewrite shared by [`quantize_with`] and [`quantize_with_ranges`], then the
/// checks that the result is valid and runs on TFLM's int8 kernels.
fn finish(
    float: &Graph,
    ranges: &[Option<(f32, f32)>],
    options: &QuantizeOptions,
) -> Result<Graph, QuantizeError> {
    let int8 = transform::quantize_graph(float, ranges, options.fc_per_channel)?;
    int8.validate().map_err(QuantizeError::Invalid)?;
    if let Some(e) = crate::exec::check(&int8)?.into_iter().next() {
        return Err(match e {
            ExecError::Prepare {
                index,
                name,
                op,
                message,
            } => QuantizeError::Node {
                index,
                name,
                op,
                message: format!("no int8 kernel accepts the quantized node: {message}"),
            },
            other => QuantizeError::Exec(other),
        });
    }
    Ok(int8)
}

/// [`calibrate`] then [`quantize_with`].
pub fn quantize(
    float: &Graph,
    samples: &[Sample],
    options: &QuantizeOptions,
) -> Result<Graph, QuantizeError> {
    options
        .calibration
        .check()
        .map_err(QuantizeError::Calibration)?;
    let stats = calibrate(float, samples)?;
    quantize_with(float, &stats, options)
}

/// A float sample for an int8 graph input, quantized with the input's parameters by
/// the runtime's QUANTIZE kernel (as `kiln run` and firmware would); other inputs are
/// passed through.
pub fn quantize_input(graph: &Graph, input: usize, value: &TensorData) -> TensorData {
    use kiln_runtime::kernels::reference::quantize::{quantize_f32_to_i8, QuantizeParams};
    use kiln_runtime::quant::TensorQuant;
    let Some(info) = graph.inputs.get(input).map(|id| graph.info(*id)) else {
        return value.clone();
    };
    match (value, info.scale_zero_point()) {
        (TensorData::F32(v), Some((s, z))) if info.dtype == crate::ir::DType::I8 => {
            match QuantizeParams::prepare(TensorQuant::new(s, z)) {
                Ok(p) => {
                    let mut q = vec![0i8; v.len()];
                    quantize_f32_to_i8(&p, v, &mut q);
                    TensorData::I8(q)
                }
                Err(_) => TensorData::I8(v.iter().map(|&x| params::quantize_i8(x, s, z)).collect()),
            }
        }
        _ => value.clone(),
    }
}
