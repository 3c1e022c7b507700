//! `kiln eval MODEL --data IMAGES --labels LABELS [--quantize int8 --calib DATA]`:
//! classification accuracy of a model on a labelled dataset, and with `--quantize` the
//! accuracy of kiln's int8 version next to the float one, from one command.

use anyhow::{bail, Context};
use kiln_codegen::exec::{Executor, TensorData};
use kiln_codegen::ir::Graph;
use kiln_codegen::quantize::{self, data, Calibration, QuantizeOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `kiln eval`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file (.tflite or .onnx) with one input and one output of class scores.
    model: PathBuf,
    /// Samples: an IDX file (optionally .gz; bytes are divided by 255), an .npy batch or
    /// a folder of .npy files.
    #[arg(long)]
    data: PathBuf,
    /// Class labels: an IDX label file (optionally .gz) or an .npy of integers.
    #[arg(long)]
    labels: PathBuf,
    /// Evaluate at most this many samples (the first ones).
    #[arg(long)]
    limit: Option<usize>,
    /// Also quantize the float model to int8 with kiln and evaluate that.
    #[arg(long, value_parser = ["int8"])]
    quantize: Option<String>,
    /// Calibration samples for --quantize (same formats as --data).
    #[arg(long, requires = "quantize")]
    calib: Option<PathBuf>,
    /// Number of calibration samples to use (the first ones).
    #[arg(long, default_value_t = 1000)]
    calib_samples: usize,
    /// How activation ranges are chosen: minmax, percentile or mse.
    #[arg(long, default_value = "minmax")]
    method: String,
    /// Percentile for --method percentile.
    #[arg(long)]
    percentile: Option<f32>,
}

/// Prints the accuracy (and the int8 one with `--quantize`); exit 0.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let mut graph = crate::model::import(&args.model)?;
    kiln_codegen::passes::optimize(&mut graph)?;
    if graph.inputs.len() != 1 || graph.outputs.len() != 1 {
        bail!(
            "{}: kiln eval needs one input and one output, the model has {} and {}",
            args.model.display(),
            graph.inputs.len(),
            graph.outputs.len()
        );
    }
    let options = data::DataOptions {
        limit: args.limit,
        ..Default::default()
    };
    let float_input = float_view(&graph);
    let samples = data::load(&args.data, &float_input, &options)?;
    let labels = read_labels(&args.labels)?;
    if labels.len() < samples.len() {
        bail!(
            "{}: {} labels for {} samples in {}",
            args.labels.display(),
            labels.len(),
            samples.len(),
            args.data.display()
        );
    }
    let float_graph = graph.clone();
    let started = Instant::now();
    let float_pred = predict(&float_graph, &samples)?;
    let float_time = started.elapsed();
    let float_acc = accuracy(&float_pred, &labels);
    println!(
        "{}: {} samples of {}",
        args.model.display(),
        samples.len(),
        args.data.display()
    );
    println!(
        "float accuracy: {:.2}% ({} / {}, {:.1} s)",
        float_acc * 100.0,
        correct(&float_pred, &labels),
        samples.len(),
        float_time.as_secs_f64()
    );
    if args.quantize.is_none() {
        return Ok(ExitCode::SUCCESS);
    }
    let calib_path = args.calib.as_deref().unwrap_or(&args.data);
    let calib = data::load(
        calib_path,
        &float_input,
        &data::DataOptions {
            limit: Some(args.calib_samples),
            ..Default::default()
        },
    )?;
    let calibration =
        Calibration::parse(&args.method, args.percentile).map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let calib: Vec<Vec<TensorData>> = calib.into_iter().map(|s| vec![s]).collect();
    let mut int8 = quantize::quantize(
        &float_graph,
        &calib,
        &QuantizeOptions {
            calibration,
            ..Default::default()
        },
    )
    .with_context(|| format!("{}: quantizing", args.model.display()))?;
    kiln_codegen::passes::optimize(&mut int8)?;
    let quantize_time = started.elapsed();
    let started = Instant::now();
    let int8_pred = predict(&int8, &samples)?;
    let int8_time = started.elapsed();
    let int8_acc = accuracy(&int8_pred, &labels);
    let agree = float_pred
        .iter()
        .zip(&int8_pred)
        .filter(|(a, b)| a == b)
        .count();
    println!(
        "int8 accuracy:  {:.2}% ({} / {}, {:.1} s; calibrated on {} samples of {} by {}, {:.2} s)",
        int8_acc * 100.0,
        correct(&int8_pred, &labels),
        samples.len(),
        int8_time.as_secs_f64(),
        calib.len(),
        calib_path.display(),
        args.method,
        quantize_time.as_secs_f64()
    );
    println!(
        "int8 - float:   {:+.2} percentage points; top-1 agreement {:.2}%",
        (int8_acc - float_acc) * 100.0,
        agree as f64 * 100.0 / samples.len().max(1) as f64
    );
    Ok(ExitCode::SUCCESS)
}

/// The graph's input as the float tensor the data files must fill.
fn float_view(graph: &Graph) -> kiln_codegen::ir::TensorInfo {
    let mut info = graph.info(graph.inputs[0]).clone();
    info.dtype = kiln_codegen::ir::DType::F32;
    info.quant = None;
    info
}

/// Top-1 class of every sample; float samples are quantized for an int8 input.
fn predict(graph: &Graph, samples: &[TensorData]) -> anyhow::Result<Vec<usize>> {
    let exec = Executor::new(graph)?;
    samples
        .iter()
        .map(|s| {
            let input = quantize::quantize_input(graph, 0, s);
            let out = exec.run(&[input])?;
            Ok(argmax(&out[0].to_f64()))
        })
        .collect()
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

fn correct(pred: &[usize], labels: &[usize]) -> usize {
    pred.iter().zip(labels).filter(|(p, l)| p == l).count()
}

fn accuracy(pred: &[usize], labels: &[usize]) -> f64 {
    correct(pred, labels) as f64 / pred.len().max(1) as f64
}

/// Labels from an IDX label file (magic 0x00000801, optionally gzip'd) or an integer .npy.
fn read_labels(path: &Path) -> anyhow::Result<Vec<usize>> {
    let file = path.display().to_string();
    if path.extension().is_some_and(|e| e == "npy") {
        let a = kiln_codegen::npy::read(path)?;
        return a
            .data
            .to_f64()
            .iter()
            .map(|&v| {
                (v >= 0.0 && v.fract() == 0.0)
                    .then_some(v as usize)
                    .with_context(|| format!("{file}: label {v} is not a class index"))
            })
            .collect();
    }
    let raw = std::fs::read(path).with_context(|| format!("{file}: cannot read"))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(1 << 30)
            .read_to_end(&mut out)
            .with_context(|| format!("{file}: bad gzip data"))?;
        out
    } else {
        raw
    };
    if bytes.len() < 8 || bytes[..4] != [0, 0, 8, 1] {
        bail!("{file}: not an IDX label file (expected magic 00 00 08 01: unsigned bytes, one dimension)");
    }
    let n = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if bytes.len() != 8 + n {
        bail!(
            "{file}: header says {n} labels, the file holds {}",
            bytes.len() - 8
        );
    }
    Ok(bytes[8..].iter().map(|&b| b as usize).collect())
}
