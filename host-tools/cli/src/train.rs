//! `kiln train --model FILE.toml --data PATH [--test PATH] --epochs N --out DIR`: trains
//! a model described by a kiln-train model file on an IDX, npy or CSV dataset (with
//! optional `--augment`), writes the weights (safetensors), a resumable checkpoint
//! (`--resume` continues from it), the model file and a training-curve SVG, and reports
//! float (and with `--quantize int8`, kiln's int8) test accuracy measured by running
//! the graphs (`--export-onnx FILE`: also an ONNX model). With `--qat`, the last epochs
//! train with fake quantization and kiln's int8 model is built from the ranges QAT
//! tracked (written to OUT/qat_ranges.toml).
//! `--grad-checkpoint` recomputes forward activations to lower peak memory;
//! `--memory-report` prints the memory plans with and without it and exits.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_train::augment::Augment;
use kiln_train::checkpoint::Checkpoint;
use kiln_train::data::{Dataset, LabelColumn, LoadOptions};
use kiln_train::model::ModelSpec;
use kiln_train::optim::{OptimizerKind, Schedule};
use kiln_train::plan::{Checkpointing, MemoryReport};
use kiln_train::qat::{self, QatConfig};
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
    /// Training data: a folder holding x.npy + y.npy (or images.npy + labels.npy), one
    /// .csv file, or IDX *images* + *labels* files (gz ok); a .csv file; or an
    /// IMAGES,LABELS pair of npy or IDX files. Integer data is divided by 255, float
    /// data used as is.
    #[arg(long, required_unless_present = "memory_report")]
    data: Option<PathBuf>,
    /// Test data (any of the same layouts), evaluated after every epoch.
    #[arg(long)]
    test: Option<PathBuf>,
    /// CSV label field: first, last, or a column number from 1. A first line with a
    /// non-number is a header.
    #[arg(long, default_value = "first")]
    label_column: String,
    /// Augment training batches on the fly, e.g. shift=2,noise=0.05 (shift by up to 2
    /// pixels with zero fill, Gaussian noise of sigma 0.05); add flip to mirror
    /// left-right (not for digits). Deterministic from --seed; evaluation never augments.
    #[arg(long, default_value = "none")]
    augment: String,
    /// Continue from a checkpoint (OUT/checkpoint.safetensors of an earlier run) up to
    /// --epochs; the other settings must match the checkpoint's. The result is
    /// bit-identical to a run that never stopped.
    #[arg(long)]
    resume: Option<PathBuf>,
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
    /// Output folder: model.toml, weights.safetensors, checkpoint.safetensors (written
    /// after every epoch), curve.svg.
    #[arg(long, required_unless_present = "memory_report")]
    out: Option<PathBuf>,
    /// Also quantize the trained model with kiln (int8 PTQ) and report its accuracy.
    #[arg(long, value_parser = ["int8"])]
    quantize: Option<String>,
    /// Training samples used to calibrate --quantize.
    #[arg(long, default_value_t = 1000)]
    calib_samples: usize,
    /// Quantization-aware training: fake int8 quantization matching kiln's int8 graph
    /// from --qat-start-epoch on; reports the fake-quantized and kiln's int8 accuracy.
    #[arg(long)]
    qat: bool,
    /// First epoch (from 1) of --qat; earlier ones train in float. Default: the last.
    #[arg(long, requires = "qat")]
    qat_start_epoch: Option<usize>,
    /// Gradient checkpointing: keep only segment boundaries of the forward pass and
    /// recompute the rest in the backward pass (same results, less memory, more
    /// compute). Alone: the segment count with the smallest planned peak; or a count.
    #[arg(long, num_args = 0..=1, default_missing_value = "auto", value_name = "SEGMENTS")]
    grad_checkpoint: Option<String>,
    /// Print the static memory plans of a training step (no sharing, the plan, the
    /// lower bound; without and with gradient checkpointing) at --batch, and exit
    /// without training.
    #[arg(long)]
    memory_report: bool,
    /// Also export the trained float model as ONNX (opset 13, NCHW input with a symbolic
    /// batch `N`, as PyTorch exports; see kiln_codegen::export::onnx).
    #[arg(long, value_name = "FILE")]
    export_onnx: Option<PathBuf>,
}

/// The checkpointing of `--grad-checkpoint` (`auto` or a segment count).
fn checkpointing(arg: Option<&str>) -> anyhow::Result<Checkpointing> {
    match arg {
        None => Ok(Checkpointing::Off),
        Some("auto") => Ok(Checkpointing::Auto),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n >= 2 => Ok(Checkpointing::Segments(n)),
            _ => bail!("--grad-checkpoint {n}: give a segment count of at least 2, or no value"),
        },
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Prints the plans without and with checkpointing (activations and gradients of one
/// training step; weights and optimizer state are not counted).
fn print_memory(batch: usize, off: &MemoryReport, ckpt: &MemoryReport) {
    println!("peak training memory at batch {batch} (activations + gradients of one step):");
    println!("  no sharing          {:8.2} MiB", mib(off.unshared_bytes));
    println!(
        "  static plan         {:8.2} MiB  (lower bound {:.2} MiB, {} steps in place)",
        mib(off.arena_bytes),
        mib(off.lower_bound_bytes),
        off.in_place
    );
    let how = if ckpt.recomputed == 0 {
        "no segmentation lowers the peak, nothing recomputed".to_string()
    } else {
        format!(
            "{} segments, {} forward nodes recomputed",
            ckpt.segments, ckpt.recomputed
        )
    };
    println!(
        "  with checkpointing  {:8.2} MiB  (lower bound {:.2} MiB, {how})",
        mib(ckpt.arena_bytes),
        mib(ckpt.lower_bound_bytes)
    );
}

/// Trains, writes OUT and prints the report; exit 0.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        kiln_train::set_threads(t)?;
    }
    kiln_train::on_pool(|| train_on_pool(args))
}

/// [`main`] after the thread pool is set up, on one of its workers.
fn train_on_pool(args: Args) -> anyhow::Result<ExitCode> {
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
    let augment = Augment::parse(&args.augment).map_err(|e| anyhow::anyhow!("--augment: {e}"))?;
    let label_column = LabelColumn::parse(&args.label_column)
        .map_err(|e| anyhow::anyhow!("--label-column: {e}"))?;
    let grad_checkpoint = checkpointing(args.grad_checkpoint.as_deref())?;
    let (mut graph, layers) = spec.build_training(args.seed)?;
    let with = match grad_checkpoint {
        Checkpointing::Off => Checkpointing::Auto,
        c => c,
    };
    let (plain, checkpointed) = train::memory_plans(&graph, &layers, args.batch.max(1), with)?;
    if args.memory_report {
        print_memory(args.batch.max(1), &plain, &checkpointed);
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(data_path), Some(out_dir)) = (&args.data, &args.out) else {
        bail!("--data and --out are needed to train");
    };
    let classes = graph
        .outputs
        .first()
        .map(|&o| graph.info(o).shape.last().copied().unwrap_or(0))
        .unwrap_or(0);
    let open = |path: &PathBuf, limit| -> anyhow::Result<Dataset> {
        let d = Dataset::open(
            path,
            &spec.input,
            &LoadOptions {
                limit,
                label_column,
            },
        )?;
        d.check_labels(classes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(d)
    };
    let data = open(data_path, args.limit)?;
    let test = match &args.test {
        Some(path) => Some(open(path, args.test_limit)?),
        None => None,
    };
    let resume = match &args.resume {
        Some(path) => Some(Checkpoint::load(path)?),
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
        data_path.display(),
        args.epochs,
        args.batch,
        args.optimizer,
        args.lr,
        args.schedule,
        args.seed,
        kiln_train::threads()
    );
    if !augment.is_none() {
        println!("augmenting training batches: {augment}");
    }
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("{}: cannot create", out_dir.display()))?;
    let checkpoint = out_dir.join("checkpoint.safetensors");
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch: args.batch,
        lr: args.lr,
        optimizer,
        schedule,
        seed: args.seed,
        augment,
        checkpoint: Some(checkpoint.clone()),
        grad_checkpoint,
        qat: args.qat.then(|| QatConfig {
            start_epoch: args.qat_start_epoch.unwrap_or(args.epochs),
            ..QatConfig::default()
        }),
        layers,
    };
    let done = resume.as_ref().map_or(0, |c| c.epoch);
    if let (Some(c), Some(path)) = (&resume, &args.resume) {
        c.check_config(&cfg, data.len())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        println!(
            "resuming from {} after epoch {done} of {}",
            path.display(),
            args.epochs
        );
    }
    let steps = (data.len() / args.batch.max(1)) * (args.epochs - done);
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let trained = train::train_model(
        &mut graph,
        &data,
        test.as_ref(),
        &cfg,
        resume.as_ref(),
        &mut |s| {
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
        },
    );
    bar.finish_and_clear();
    let trained = trained?;
    let history = &trained.history;
    let elapsed = started.elapsed().as_secs_f64();
    for e in history {
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
    let images: usize = (data.len() / args.batch) * args.batch * (args.epochs - done);
    println!(
        "training: {train_s:.1} s in steps ({:.0} images/s, {} threads), {elapsed:.1} s with evaluation; {:.2} MiB of activations and gradients ({})",
        images as f64 / train_s.max(1e-9),
        kiln_train::threads(),
        mib(history.last().map_or(0, |e| e.peak_bytes)),
        if grad_checkpoint == Checkpointing::Off {
            "no checkpointing"
        } else {
            "checkpointing"
        }
    );
    print_memory(args.batch, &plain, &checkpointed);
    let model_out = out_dir.join("model.toml");
    std::fs::write(&model_out, spec.source())
        .with_context(|| format!("{}: cannot write", model_out.display()))?;
    let weights = out_dir.join("weights.safetensors");
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
    let svg = out_dir.join("curve.svg");
    // The curve covers the whole run, the epochs before a resume included.
    let mut curve = resume.map(|c| c.history).unwrap_or_default();
    curve.extend(history.iter().copied());
    std::fs::write(&svg, kiln_train::svg::training_curve(&spec.name, &curve))
        .with_context(|| format!("{}: cannot write", svg.display()))?;
    println!(
        "wrote {}, {}, {}, {}",
        model_out.display(),
        weights.display(),
        checkpoint.display(),
        svg.display()
    );
    if let Some(q) = &trained.qat {
        let path = out_dir.join("qat_ranges.toml");
        qat::save_ranges(&q.ranges(), &path)?;
        println!(
            "wrote {} (activation ranges of the int8 model)",
            path.display()
        );
    }
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
        args.test.as_deref().unwrap_or(data_path).display()
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
    if let Some(q) = &trained.qat {
        let fake = qat::predict(&graph, q, test, 256)?;
        let fake_acc = train::accuracy(&fake, &test.labels);
        println!(
            "QAT test accuracy:   {:.2}% fake-quantized by kiln-train's executor (from epoch {})",
            fake_acc * 100.0,
            cfg.qat.map_or(0, |c| c.start_epoch)
        );
        let int8 = qat::quantize_int8(&graph, &q.ranges())?;
        let pred = train::predict_kiln(&int8, test)?;
        let acc = train::accuracy(&pred, &test.labels);
        let agree = pred.iter().zip(&fake).filter(|(a, b)| a == b).count();
        println!(
            "int8 (QAT) accuracy: {:.2}% by kiln's executor (kiln quantize with the QAT ranges); int8 - float {:+.2} points, int8 - QAT {:+.2} points, top-1 agreement with QAT {:.2}%",
            acc * 100.0,
            (acc - float_acc) * 100.0,
            (acc - fake_acc) * 100.0,
            agree as f64 * 100.0 / test.len().max(1) as f64
        );
    }
    Ok(ExitCode::SUCCESS)
}
