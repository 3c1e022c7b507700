//! `kiln train --model FILE.toml --data DIR [--test DIR] --epochs N --out DIR`: trains
//! a model described by a kiln-train model file on an IDX dataset, writes the weights
//! (safetensors), the model file and a training-curve SVG (`--export-onnx FILE`: also an
//! ONNX model), and reports float (and with `--quantize int8`, kiln's int8) test accuracy
//! measured by running the graphs.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_train::data::Dataset;
use kiln_train::model::ModelSpec;
use kiln_train::optim::{OptimizerKind, Schedule};
use kiln_train::train::{self, TrainConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `kiln train`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file (TOML: input shape and layers; see the kiln-train crate docs).
    #[arg(long)]
    model: PathBuf,
    /// Training data: a folder with an IDX images file and an IDX labels file (gz ok).
    #[arg(long)]
    data: PathBuf,
    /// Test data (same layout), evaluated after every epoch.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Passes over the training data.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Samples per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// sgd (momentum 0.9), adam or adamw.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Weight decay (L2 for sgd/adam, decoupled for adamw).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Learning-rate schedule: constant, step (x0.1 every --step-every epochs) or cosine.
    #[arg(long, default_value = "constant")]
    schedule: String,
    /// Epochs between decays of --schedule step.
    #[arg(long, default_value_t = 2)]
    step_every: usize,
    /// Seed of the initial weights and the batch order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads (default: one per core). Results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Train on at most this many samples (the first ones).
    #[arg(long)]
    limit: Option<usize>,
    /// Test on at most this many samples (the first ones).
    #[arg(long)]
    test_limit: Option<usize>,
    /// Output folder: model.toml, weights.safetensors, curve.svg.
    #[arg(long)]
    out: PathBuf,
    /// Also quantize the trained model with kiln (int8 PTQ) and report its accuracy.
    #[arg(long, value_parser = ["int8"])]
    quantize: Option<String>,
    /// Training samples used to calibrate --quantize.
    #[arg(long, default_value_t = 1000)]
    calib_samples: usize,
    /// Also export the trained float model as ONNX (opset 13, NCHW input with a symbolic
    /// batch `N`, as PyTorch exports; see kiln_codegen::export::onnx).
    #[arg(long, value_name = "FILE")]
    export_onnx: Option<PathBuf>,
}

/// Trains, writes OUT and prints the report; exit 0.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let spec = ModelSpec::load(&args.model)?;
    let optimizer =
        OptimizerKind::parse(&args.optimizer, args.weight_decay).map_err(anyhow::Error::msg)?;
    let schedule = Schedule::parse(&args.schedule, args.step_every).map_err(anyhow::Error::msg)?;
    if !(args.lr.is_finite() && args.lr > 0.0) {
        bail!("--lr {} must be a positive number", args.lr);
    }
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        kiln_train::set_threads(t)?;
    }
    let mut graph = spec.build(args.seed)?;
    let data = Dataset::load_dir(&args.data, &spec.input, args.limit)?;
    let test = match &args.test {
        Some(dir) => Some(Dataset::load_dir(dir, &spec.input, args.test_limit)?),
        None => None,
    };
    let params: usize = graph
        .tensors
        .iter()
        .filter(|t| t.data.is_some())
        .map(|t| t.info.num_elements())
        .sum();
    println!(
        "training {} ({params} parameters) on {} samples of {}: {} epochs, batch {}, {} lr {} ({}), seed {}, {} threads",
        spec.name,
        data.len(),
        args.data.display(),
        args.epochs,
        args.batch,
        args.optimizer,
        args.lr,
        args.schedule,
        args.seed,
        kiln_train::threads()
    );
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch: args.batch,
        lr: args.lr,
        optimizer,
        schedule,
        seed: args.seed,
    };
    let steps = (data.len() / args.batch.max(1)) * args.epochs;
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let history = train::train(&mut graph, &data, test.as_ref(), &cfg, &mut |s| {
        bar.inc(1);
        if s.step % 10 == 0 || s.step == s.steps {
            bar.set_message(format!(
                "epoch {}/{} loss {:.4} acc {:.2}% {:.0} img/s",
                s.epoch + 1,
                args.epochs,
                s.loss,
                s.accuracy * 100.0,
                s.images_per_s
            ));
        }
    });
    bar.finish_and_clear();
    let history = history?;
    let elapsed = started.elapsed().as_secs_f64();
    for e in &history {
        let test = e
            .test_accuracy
            .map_or_else(String::new, |a| format!(", test {:.2}%", a * 100.0));
        println!(
            "epoch {}: loss {:.4}, train {:.2}%{test} (lr {:.2e}, {:.1} s, {:.0} images/s)",
            e.epoch,
            e.loss,
            e.train_accuracy * 100.0,
            e.lr,
            e.seconds,
            e.images_per_s
        );
    }
    let train_s: f64 = history.iter().map(|e| e.seconds).sum();
    let images: usize = (data.len() / args.batch) * args.batch * args.epochs;
    println!(
        "training: {train_s:.1} s in steps ({:.0} images/s, {} threads), {elapsed:.1} s with evaluation; peak training memory {:.1} MiB",
        images as f64 / train_s.max(1e-9),
        kiln_train::threads(),
        history.last().map_or(0, |e| e.peak_bytes) as f64 / (1 << 20) as f64
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let model_out = args.out.join("model.toml");
    std::fs::write(&model_out, spec.source())
        .with_context(|| format!("{}: cannot write", model_out.display()))?;
    let weights = args.out.join("weights.safetensors");
    let ids: Vec<_> = (0..graph.tensors.len())
        .filter(|&i| graph.tensors[i].data.is_some())
        .map(kiln_codegen::ir::TensorId)
        .collect();
    train::save_weights(&graph, &ids, &weights)?;
    if let Some(path) = &args.export_onnx {
        kiln_codegen::export::onnx::write(&graph, path)
            .with_context(|| format!("exporting {} to ONNX", spec.name))?;
        println!(
            "wrote {} (ONNX opset {}, batch dimension '{}')",
            path.display(),
            kiln_codegen::export::onnx::OPSET,
            kiln_codegen::export::onnx::BATCH
        );
    }
    let svg = args.out.join("curve.svg");
    std::fs::write(&svg, kiln_train::svg::training_curve(&spec.name, &history))
        .with_context(|| format!("{}: cannot write", svg.display()))?;
    println!(
        "wrote {}, {}, {}",
        model_out.display(),
        weights.display(),
        svg.display()
    );
    let Some(test) = &test else {
        return Ok(ExitCode::SUCCESS);
    };
    let ours = train::accuracy(&train::predict(&graph, test, 256)?, &test.labels);
    let started = Instant::now();
    let float_pred = train::predict_kiln(&graph, test)?;
    let float_acc = train::accuracy(&float_pred, &test.labels);
    println!(
        "float test accuracy: {:.2}% by kiln's executor ({:.1} s), {:.2}% by kiln-train's ({} samples of {})",
        float_acc * 100.0,
        started.elapsed().as_secs_f64(),
        ours * 100.0,
        test.len(),
        args.test.as_deref().unwrap_or(&args.data).display()
    );
    if args.quantize.is_some() {
        let int8 = train::quantize_int8(&graph, &data, args.calib_samples)?;
        let pred = train::predict_kiln(&int8, test)?;
        let acc = train::accuracy(&pred, &test.labels);
        let agree = pred.iter().zip(&float_pred).filter(|(a, b)| a == b).count();
        println!(
            "int8 test accuracy:  {:.2}% by kiln's executor (kiln quantize, minmax on {} training samples); int8 - float {:+.2} points, top-1 agreement {:.2}%",
            acc * 100.0,
            args.calib_samples.min(data.len()),
            (acc - float_acc) * 100.0,
            agree as f64 * 100.0 / test.len().max(1) as f64
        );
    }
    Ok(ExitCode::SUCCESS)
}
