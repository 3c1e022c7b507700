//! `kiln quantize MODEL --calib DATA [--report]`: post-training int8 quantization of a
//! float model, with its per-layer SQNR report; and the `--quantize int8 --calib DATA`
//! options that `kiln compile` and `kiln run` share to work on the quantized graph.

use anyhow::{bail, Context};
use kiln_codegen::ir::{DType, Graph};
use kiln_codegen::quantize::{self, data, Calibration, QuantizeOptions, Sample};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Where calibration samples come from and how ranges are chosen.
#[derive(clap::Args, Clone, Debug)]
pub struct Calib {
    /// Calibration data, one per model input in order: a folder of .npy files, an .npy
    /// batch [N, ...] (float32), or an IDX file (MNIST format, optionally .gz; integer
    /// pixels are divided by --divisor and reshaped to the model input).
    #[arg(long = "calib", value_name = "DATA")]
    pub calib: Vec<PathBuf>,
    /// How activation ranges are chosen: minmax (observed range, as TFLite's converter),
    /// percentile (clips both tails) or mse (least expected quantization error).
    #[arg(long, default_value = "minmax", value_parser = ["minmax", "percentile", "mse"])]
    pub method: String,
    /// Percentile kept by --method percentile (default 99.99: 0.01% clipped per tail).
    #[arg(long)]
    pub percentile: Option<f32>,
    /// Calibrate on at most this many samples (the first ones).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Integer IDX values are divided by this (255 turns bytes into [0, 1]).
    #[arg(long, default_value_t = 255.0)]
    pub divisor: f32,
    /// One scale for all fully-connected weights instead of one per output channel.
    #[arg(long)]
    pub fc_per_tensor: bool,
}

/// A float model quantized with [`Calib`], and how it went.
pub struct Quantized {
    /// The float graph as imported.
    pub float: Graph,
    /// Its int8 quantization.
    pub int8: Graph,
    /// The calibration samples.
    pub samples: Vec<Sample>,
    /// The method used.
    pub calibration: Calibration,
    /// Calibration plus transformation time.
    pub took: Duration,
}

impl Calib {
    fn options(&self) -> anyhow::Result<QuantizeOptions> {
        let calibration =
            Calibration::parse(&self.method, self.percentile).map_err(anyhow::Error::msg)?;
        Ok(QuantizeOptions {
            calibration,
            fc_per_channel: !self.fc_per_tensor,
        })
    }

    /// Samples in `paths` for the float `graph`'s inputs, at most `limit`.
    fn load(
        &self,
        paths: &[PathBuf],
        graph: &Graph,
        limit: Option<usize>,
    ) -> anyhow::Result<Vec<Sample>> {
        if paths.is_empty() {
            bail!("calibration data missing: give --calib DATA (one per model input)");
        }
        let options = data::DataOptions {
            divisor: self.divisor,
            limit,
        };
        Ok(data::load_for_graph(paths, graph, &options)?)
    }

    /// Imports the float model at `model`, optimizes it (batch norms and activations
    /// folded into convolutions, as TFLite's converter does before quantizing, so they
    /// are not quantized on their own) and quantizes it on the calibration data.
    /// `weights`: those of a kiln-train model file (see [`crate::model::load`]).
    pub fn quantize(&self, model: &Path, weights: Option<&Path>) -> anyhow::Result<Quantized> {
        let file = model.display().to_string();
        let options = self.options()?;
        let mut float = crate::model::load(model, weights)?;
        kiln_codegen::passes::optimize(&mut float).with_context(|| file.clone())?;
        if let Some(id) = float
            .inputs
            .iter()
            .find(|id| float.info(**id).dtype != DType::F32)
        {
            bail!(
                "{file}: input '{}' is {}; only float32 models can be quantized (this one already is)",
                float.tensor(*id).name,
                float.info(*id).dtype.name()
            );
        }
        quantize::check_quantizable(&float).with_context(|| format!("{file}: cannot quantize"))?;
        let samples = self.load(&self.calib, &float, self.samples)?;
        let start = Instant::now();
        let int8 = quantize::quantize(&float, &samples, &options)
            .with_context(|| format!("{file}: quantizing"))?;
        Ok(Quantized {
            float,
            int8,
            samples,
            calibration: options.calibration,
            took: start.elapsed(),
        })
    }
}

/// How commands that compile or run a model load it: `--weights` for a kiln-train
/// model file, and `--quantize int8` with its calibration options.
#[derive(clap::Args, Clone, Debug)]
pub struct Quantizing {
    /// The trained weights (safetensors, as `kiln train` writes them) when MODEL is a
    /// kiln-train model file (.toml): the graph is built from both, no export needed.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Quantize a float model to int8 (TFLite's full-integer scheme) before use;
    /// needs --calib.
    #[arg(long, value_parser = ["int8"])]
    pub quantize: Option<String>,
    #[command(flatten)]
    pub calib: Calib,
}

impl Quantizing {
    /// The model as imported, or its int8 quantization with `--quantize int8` (a line
    /// on standard error says how it was calibrated).
    pub fn load(&self, model: &Path) -> anyhow::Result<Graph> {
        if self.quantize.is_none() {
            if !self.calib.calib.is_empty() {
                bail!("--calib is only used with --quantize int8");
            }
            return crate::model::load(model, self.weights.as_deref());
        }
        let q = self.calib.quantize(model, self.weights.as_deref())?;
        eprintln!(
            "quantized {} to int8: {} calibration samples, {}, {:.2} s",
            model.display(),
            q.samples.len(),
            q.calibration,
            q.took.as_secs_f64()
        );
        Ok(q.int8)
    }
}

/// Arguments of `kiln quantize`.
#[derive(clap::Args)]
pub struct Args {
    /// The float model file (.tflite, .onnx, or a kiln-train .toml with --weights).
    model: PathBuf,
    /// The trained weights of a kiln-train model file (.toml).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    #[command(flatten)]
    calib: Calib,
    /// Print the per-layer comparison with the float model: SQNR of every tensor,
    /// output error and top-1 agreement.
    #[arg(long)]
    report: bool,
    /// Compare on these samples instead of the calibration ones (same formats as
    /// --calib, one per model input; implies --report).
    #[arg(long, value_name = "DATA")]
    eval: Vec<PathBuf>,
}

/// Quantizes the model and prints its int8 parameters (and the report).
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let file = args.model.display().to_string();
    let q = args.calib.quantize(&args.model, args.weights.as_deref())?;
    println!(
        "{file}: quantized to int8 in {:.2} s ({} nodes, calibrated on {} samples, {})",
        q.took.as_secs_f64(),
        q.int8.nodes.len(),
        q.samples.len(),
        q.calibration
    );
    for (label, ids) in [("input", &q.int8.inputs), ("output", &q.int8.outputs)] {
        for id in ids {
            let info = q.int8.info(*id);
            let (s, z) = info.scale_zero_point().unwrap_or((1.0, 0));
            println!(
                "  {label} '{}': {} {:?}, scale {s}, zero point {z}",
                q.int8.tensor(*id).name,
                info.dtype.name(),
                info.shape
            );
        }
    }
    let weight_bytes = constant_bytes(&q.int8);
    let float_bytes = constant_bytes(&q.float);
    println!("  constants: {weight_bytes} bytes (float: {float_bytes})");
    if args.report || !args.eval.is_empty() {
        let samples = if args.eval.is_empty() {
            q.samples.clone()
        } else {
            args.calib.load(&args.eval, &q.float, None)?
        };
        let report = quantize::report(&q.float, &q.int8, &samples)
            .with_context(|| format!("{file}: comparing with the float model"))?;
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Bytes of the constants some node reads (tensors the passes left unreferenced do not
/// reach the compiled model).
fn constant_bytes(graph: &kiln_codegen::ir::Graph) -> usize {
    let mut used = vec![false; graph.tensors.len()];
    for n in &graph.nodes {
        for t in &n.inputs {
            used[t.0] = true;
        }
    }
    graph
        .tensors
        .iter()
        .zip(&used)
        .filter(|(t, &u)| u && t.data.is_some())
        .map(|(t, _)| t.info.byte_size())
        .sum()
}
