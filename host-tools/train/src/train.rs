//! The training loop, evaluation (float with this crate's executor; float and int8 with
//! kiln's own executor and quantizer) and weight files.

use crate::autodiff::differentiate;
use crate::data::Dataset;
use crate::exec::Executor;
use crate::graph::{Loss, TrainGraph};
use crate::layers::{self, RunningStats, TrainingLayers};
use crate::optim::{Optimizer, OptimizerKind, Schedule};
use crate::rng::Rng;
use crate::TrainError;
use kiln_codegen::exec::TensorData;
use kiln_codegen::ir::{Graph, TensorId};
use kiln_codegen::quantize::{self, QuantizeOptions};
use std::path::Path;
use std::time::Instant;

/// How to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per step (a last partial batch is dropped).
    pub batch: usize,
    /// Base learning rate.
    pub lr: f32,
    /// Update rule.
    pub optimizer: OptimizerKind,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Seed of the batch shuffling (and of the dropout masks).
    pub seed: u64,
    /// The model's batch norm and dropout layers
    /// ([`ModelSpec::training_layers`](crate::model::ModelSpec::training_layers));
    /// empty for models without them. Without it a model's batch norms would train as
    /// plain per-channel scales and its dropouts would not drop.
    pub layers: TrainingLayers,
}

impl Default for TrainConfig {
    /// One epoch of Adam at 1e-3, batch 32, constant rate, seed 1; set the fields you
    /// need and take the rest with `..TrainConfig::default()`.
    fn default() -> Self {
        TrainConfig {
            epochs: 1,
            batch: 32,
            lr: 1e-3,
            optimizer: OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            schedule: Schedule::Constant,
            seed: 1,
            layers: TrainingLayers::default(),
        }
    }
}

/// Progress after one step, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Epoch (from 0).
    pub epoch: usize,
    /// Step within the epoch (from 1).
    pub step: usize,
    /// Steps per epoch.
    pub steps: usize,
    /// Mean loss of the epoch so far.
    pub loss: f32,
    /// Training accuracy of the epoch so far.
    pub accuracy: f64,
    /// Training throughput of the epoch so far.
    pub images_per_s: f64,
}

/// What one epoch did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// Epoch (from 1).
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f32,
    /// Training accuracy (on the batches as trained).
    pub train_accuracy: f64,
    /// Test accuracy after the epoch, if a test set was given.
    pub test_accuracy: Option<f64>,
    /// Learning rate at the epoch's last step.
    pub lr: f32,
    /// Seconds spent in training steps (not evaluation).
    pub seconds: f64,
    /// Training images per second.
    pub images_per_s: f64,
    /// Peak activation + gradient memory of the training graph, in bytes.
    pub peak_bytes: usize,
}

/// The float values of `ir`'s constant tensors `ids`.
pub fn read_params(ir: &Graph, ids: &[TensorId]) -> Vec<Vec<f32>> {
    ids.iter()
        .map(|id| {
            ir.tensor(*id)
                .data
                .as_deref()
                .unwrap_or(&[])
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect()
}

/// Writes `values` into `ir`'s constant tensors `ids`.
pub fn write_params(ir: &mut Graph, ids: &[TensorId], values: &[Vec<f32>]) {
    for (id, v) in ids.iter().zip(values) {
        ir.tensors[id.0].data = Some(v.iter().flat_map(|x| x.to_le_bytes()).collect());
    }
}

fn classes_of(ir: &Graph) -> Result<usize, TrainError> {
    let out = ir
        .outputs
        .first()
        .ok_or_else(|| TrainError::Graph("the model has no output".into()))?;
    let shape = &ir.info(*out).shape;
    if shape.len() != 2 {
        return Err(TrainError::Graph(format!(
            "classification needs an output [1, classes], the model's is {shape:?} (end with a dense layer)"
        )));
    }
    Ok(shape[1])
}

/// Trains `ir` (a float kiln graph with batch 1) in place on `data` with softmax
/// cross-entropy; evaluates on `test` after each epoch. `on_step` sees every step.
pub fn train(
    ir: &mut Graph,
    data: &Dataset,
    test: Option<&Dataset>,
    cfg: &TrainConfig,
    on_step: &mut dyn FnMut(Step),
) -> Result<Vec<EpochStats>, TrainError> {
    let classes = classes_of(ir)?;
    if let Some(bad) = data.labels.iter().find(|&&l| l >= classes) {
        return Err(TrainError::Graph(format!(
            "label {bad} does not fit the model's {classes} classes"
        )));
    }
    if cfg.batch == 0 || cfg.batch > data.len() {
        return Err(TrainError::Graph(format!(
            "batch size {} must be between 1 and the {} training samples",
            cfg.batch,
            data.len()
        )));
    }
    let mut g = TrainGraph::from_ir_training(ir, &cfg.layers, cfg.batch)?;
    let sample_len: usize = g.shape(g.inputs[0])[1..].iter().product();
    if sample_len != data.sample_len() {
        return Err(TrainError::Graph(format!(
            "samples have {} values, the model input {:?} needs {sample_len}",
            data.sample_len(),
            &g.shape(g.inputs[0])[1..]
        )));
    }
    g.add_loss(Loss::SoftmaxCrossEntropy)?;
    differentiate(&mut g)?;
    let param_ir = g.param_ir.clone();
    let (loss_t, logits_t, grads_t) = (g.loss.unwrap_or(0), g.outputs[0], g.grads.clone());
    let mut running = RunningStats::new(ir, &g)?;
    // Dropout masks come from their own stream, so adding dropout to a model does not
    // change its batch order.
    let mut mask_rng = Rng::new(cfg.seed ^ 0xD50F_0A7E_5EED_0001);
    let mut exec = Executor::new(g);
    let mut params = read_params(ir, &param_ir);
    let mut opt = Optimizer::new(cfg.optimizer);
    let mut rng = Rng::new(cfg.seed);
    let steps = data.len() / cfg.batch;
    let total = steps * cfg.epochs;
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut x = vec![0.0; cfg.batch * sample_len];
    let mut y = vec![0.0; cfg.batch * classes];
    let mut history = Vec::new();
    for epoch in 0..cfg.epochs {
        rng.shuffle(&mut order);
        let started = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = cfg.lr;
        for s in 0..steps {
            let idx = &order[s * cfg.batch..][..cfg.batch];
            y.fill(0.0);
            for (b, &i) in idx.iter().enumerate() {
                x[b * sample_len..][..sample_len].copy_from_slice(data.image(i));
                y[b * classes + data.labels[i]] = 1.0;
            }
            let masks = layers::draw_masks(exec.graph(), &mut mask_rng);
            let mut feeds: Vec<&[f32]> = vec![&x, &y];
            feeds.extend(masks.iter().map(Vec::as_slice));
            exec.run(&feeds, &params)?;
            running.update(&exec);
            let loss = exec.value(loss_t).map_or(f32::NAN, |v| v[0]);
            if !loss.is_finite() {
                return Err(TrainError::Diverged {
                    epoch: epoch + 1,
                    step: s + 1,
                });
            }
            let logits = exec.value(logits_t).unwrap_or(&[]);
            correct += idx
                .iter()
                .enumerate()
                .filter(|(b, &i)| argmax(&logits[b * classes..][..classes]) == data.labels[i])
                .count();
            seen += cfg.batch;
            loss_sum += f64::from(loss) * cfg.batch as f64;
            lr = cfg.schedule.lr(cfg.lr, epoch, epoch * steps + s, total);
            let grads: Vec<&[f32]> = grads_t
                .iter()
                .map(|&t| exec.value(t).unwrap_or(&[]))
                .collect();
            opt.step(&mut params, &grads, lr);
            on_step(Step {
                epoch,
                step: s + 1,
                steps,
                loss: (loss_sum / seen as f64) as f32,
                accuracy: correct as f64 / seen as f64,
                images_per_s: seen as f64 / started.elapsed().as_secs_f64().max(1e-9),
            });
        }
        let seconds = started.elapsed().as_secs_f64();
        write_params(ir, &param_ir, &params);
        running.write(ir);
        let test_accuracy = match test {
            Some(t) => Some(accuracy(&predict(ir, t, 256)?, &t.labels)),
            None => None,
        };
        history.push(EpochStats {
            epoch: epoch + 1,
            loss: (loss_sum / seen.max(1) as f64) as f32,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            test_accuracy,
            lr,
            seconds,
            images_per_s: seen as f64 / seconds.max(1e-9),
            peak_bytes: exec.peak_bytes(),
        });
    }
    write_params(ir, &param_ir, &params);
    running.write(ir);
    Ok(history)
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

/// Fraction of `pred` equal to `labels`.
pub fn accuracy(pred: &[usize], labels: &[usize]) -> f64 {
    let hits = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    hits as f64 / pred.len().max(1) as f64
}

/// Top-1 class of every sample with this crate's f32 executor, `batch` at a time.
pub fn predict(ir: &Graph, data: &Dataset, batch: usize) -> Result<Vec<usize>, TrainError> {
    let batch = batch.clamp(1, data.len().max(1));
    let classes = classes_of(ir)?;
    let mut pred = Vec::with_capacity(data.len());
    let mut exec: Option<(usize, Executor)> = None;
    let params = {
        let g = TrainGraph::from_ir(ir, 1)?;
        read_params(ir, &g.param_ir)
    };
    for start in (0..data.len()).step_by(batch) {
        let n = batch.min(data.len() - start);
        if exec.as_ref().is_none_or(|(b, _)| *b != n) {
            exec = Some((n, Executor::new(TrainGraph::from_ir(ir, n)?)));
        }
        let Some((_, e)) = exec.as_mut() else {
            continue;
        };
        let x = &data.images[start * data.sample_len()..][..n * data.sample_len()];
        e.run(&[x], &params)?;
        let out = e.graph().outputs[0];
        let logits = e.value(out).unwrap_or(&[]);
        pred.extend(logits.chunks(classes).map(argmax));
    }
    Ok(pred)
}

/// Top-1 class of every sample run one by one through kiln's own executor (the host
/// twin of the device kernels); float samples are quantized for an int8 graph.
pub fn predict_kiln(ir: &Graph, data: &Dataset) -> Result<Vec<usize>, TrainError> {
    let exec =
        kiln_codegen::exec::Executor::new(ir).map_err(|e| TrainError::Kiln(e.to_string()))?;
    (0..data.len())
        .map(|i| {
            let input = quantize::quantize_input(ir, 0, &TensorData::F32(data.image(i).to_vec()));
            let out = exec
                .run(&[input])
                .map_err(|e| TrainError::Kiln(e.to_string()))?;
            let v: Vec<f32> = out[0].to_f64().iter().map(|&x| x as f32).collect();
            Ok(argmax(&v))
        })
        .collect()
}

/// The int8 graph of a trained float graph, by kiln's optimizer passes and PTQ
/// (min/max calibration on the first `calib_samples` of `calib`).
pub fn quantize_int8(
    ir: &Graph,
    calib: &Dataset,
    calib_samples: usize,
) -> Result<Graph, TrainError> {
    let kiln = |e: &dyn std::fmt::Display| TrainError::Kiln(e.to_string());
    let mut float = ir.clone();
    kiln_codegen::passes::optimize(&mut float).map_err(|e| kiln(&e))?;
    let samples: Vec<Vec<TensorData>> = (0..calib.len().min(calib_samples))
        .map(|i| vec![TensorData::F32(calib.image(i).to_vec())])
        .collect();
    let mut int8 =
        quantize::quantize(&float, &samples, &QuantizeOptions::default()).map_err(|e| kiln(&e))?;
    kiln_codegen::passes::optimize(&mut int8).map_err(|e| kiln(&e))?;
    Ok(int8)
}

/// Saves the constant tensors `ids` of `ir` as a safetensors file (names are the IR
/// tensor names, dtype F32).
pub fn save_weights(ir: &Graph, ids: &[TensorId], path: &Path) -> Result<(), TrainError> {
    let mut views = Vec::new();
    for id in ids {
        let t = ir.tensor(*id);
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            t.info.shape.clone(),
            t.data.as_deref().unwrap_or(&[]),
        )
        .map_err(|e| TrainError::Weights {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        views.push((t.name.clone(), view));
    }
    let bytes = safetensors::serialize(views, None).map_err(|e| TrainError::Weights {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    std::fs::write(path, bytes).map_err(|e| TrainError::Weights {
        file: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Loads a safetensors file into `ir`'s constant tensors of the same names; every
/// constant must be present with its shape and dtype F32.
pub fn load_weights(ir: &mut Graph, path: &Path) -> Result<(), TrainError> {
    let err = |m: String| TrainError::Weights {
        file: path.display().to_string(),
        message: m,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    for t in ir.tensors.iter_mut().filter(|t| t.data.is_some()) {
        let v = st
            .tensor(&t.name)
            .map_err(|e| err(format!("tensor '{}': {e}", t.name)))?;
        if v.dtype() != safetensors::Dtype::F32 || v.shape() != t.info.shape.as_slice() {
            return Err(err(format!(
                "tensor '{}' is {:?} {:?}, the model needs F32 {:?}",
                t.name,
                v.dtype(),
                v.shape(),
                t.info.shape
            )));
        }
        t.data = Some(v.data().to_vec());
    }
    Ok(())
}
