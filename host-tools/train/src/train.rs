//! The training loop, evaluation (float with this crate's executor; float and int8 with
//! kiln's own executor and quantizer) and weight files.

use crate::augment::Augment;
use crate::autodiff::differentiate;
use crate::checkpoint::{self, Checkpoint};
use crate::data::Dataset;
use crate::exec::Executor;
use crate::graph::{Loss, Tid, TrainGraph};
use crate::layers::{self, RunningStats, TrainingLayers};
use crate::optim::{Optimizer, OptimizerKind, Schedule};
use crate::plan::{Checkpointing, MemoryPlan, MemoryReport};
use crate::qat::{self, Observers, Qat, QatConfig};
use crate::rng::Rng;
use crate::TrainError;
use kiln_codegen::exec::TensorData;
use kiln_codegen::ir::{Graph, TensorId};
use kiln_codegen::quantize::{self, QuantizeOptions};
use std::path::{Path, PathBuf};
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
    /// Seed of the batch shuffling (and of the augmentation and the dropout masks).
    pub seed: u64,
    /// Augmentation of training batches (none by default); evaluation never augments.
    pub augment: Augment,
    /// Write a resumable [`Checkpoint`] here after every epoch (none by default).
    pub checkpoint: Option<PathBuf>,
    /// Quantization-aware training ([`crate::qat`]) from an epoch on; `None` trains in
    /// float only.
    pub qat: Option<QatConfig>,
    /// Gradient checkpointing: recompute forward activations in the backward pass to
    /// lower peak memory (same results, more compute).
    pub grad_checkpoint: Checkpointing,
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
            augment: Augment::default(),
            checkpoint: None,
            qat: None,
            grad_checkpoint: Checkpointing::Off,
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
    /// Test accuracy after the epoch, if a test set was given (of the fake-quantized
    /// model in QAT epochs).
    pub test_accuracy: Option<f64>,
    /// Learning rate at the epoch's last step.
    pub lr: f32,
    /// Seconds spent in training steps (not evaluation).
    pub seconds: f64,
    /// Training images per second.
    pub images_per_s: f64,
    /// Peak activation + gradient memory of the training graph, in bytes (the arena of
    /// its static memory plan, [`crate::plan`]).
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

/// What [`train_model`] produced besides the trained weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    /// One entry per epoch.
    pub history: Vec<EpochStats>,
    /// With [`TrainConfig::qat`]: the fake-quantization plan and its frozen ranges, for
    /// [`qat::predict`] and [`qat::quantize_int8`].
    pub qat: Option<Qat>,
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
    Ok(train_model(ir, data, test, cfg, None, on_step)?.history)
}

/// [`train`], continuing from `resume` when given: its parameters (matched to `ir`'s
/// by name and shape), optimizer state, sample order and generator state replace the
/// fresh ones and training goes on from its epoch up to `cfg.epochs`, bit-identical to
/// a run that never stopped. The checkpoint's essential settings must equal `cfg`'s
/// ([`Checkpoint::check_config`]). The history holds the epochs run by this call.
pub fn train_from(
    ir: &mut Graph,
    data: &Dataset,
    test: Option<&Dataset>,
    cfg: &TrainConfig,
    resume: Option<&Checkpoint>,
    on_step: &mut dyn FnMut(Step),
) -> Result<Vec<EpochStats>, TrainError> {
    Ok(train_model(ir, data, test, cfg, resume, on_step)?.history)
}

/// A training graph ready to run: the executor and the tensors the loop reads.
struct StepGraph {
    exec: Executor,
    loss: Tid,
    logits: Tid,
    grads: Vec<Tid>,
    param_ir: Vec<TensorId>,
    observers: Observers,
}

impl StepGraph {
    fn new(
        ir: &Graph,
        layers: &TrainingLayers,
        batch: usize,
        qat: Option<&Qat>,
        checkpointing: Checkpointing,
    ) -> Result<Self, TrainError> {
        let (mut g, observers) = match qat {
            Some(q) => q.training_graph(ir, layers, batch, Some(Loss::SoftmaxCrossEntropy))?,
            None => {
                let mut g = TrainGraph::from_ir_training(ir, layers, batch)?;
                g.add_loss(Loss::SoftmaxCrossEntropy)?;
                (g, Observers::default())
            }
        };
        differentiate(&mut g)?;
        Ok(StepGraph {
            loss: g.loss.unwrap_or(0),
            logits: g.outputs[0],
            grads: g.grads.clone(),
            param_ir: g.param_ir.clone(),
            exec: Executor::with_checkpointing(g, checkpointing),
            observers,
        })
    }

    /// The fake-quantized step graph of `q`, which must train the float graph's
    /// parameters `param_ir` (the optimizer state and checkpoints follow them).
    fn quantized(
        ir: &Graph,
        cfg: &TrainConfig,
        q: &Qat,
        param_ir: &[TensorId],
    ) -> Result<Self, TrainError> {
        let sg = StepGraph::new(ir, &cfg.layers, cfg.batch, Some(q), cfg.grad_checkpoint)?;
        if sg.param_ir != param_ir {
            return Err(TrainError::Graph(
                "QAT: the fake-quantized graph would train other parameters than the float graph"
                    .into(),
            ));
        }
        Ok(sg)
    }
}

/// [`train`], returning the QAT ranges too: with [`TrainConfig::qat`], epochs from
/// `start_epoch` on train the fake-quantized graph (the first QAT batch is run once
/// without updating the weights, to start the ranges), and continuing from `resume` as
/// [`train_from`] does: from a checkpoint of the float epochs, or of the QAT epochs
/// of a run with the same QAT settings (whose activation ranges it holds).
pub fn train_model(
    ir: &mut Graph,
    data: &Dataset,
    test: Option<&Dataset>,
    cfg: &TrainConfig,
    resume: Option<&Checkpoint>,
    on_step: &mut dyn FnMut(Step),
) -> Result<Trained, TrainError> {
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
    let mut qat = match cfg.qat {
        Some(q) if q.start_epoch == 0 || q.start_epoch > cfg.epochs => {
            return Err(TrainError::Graph(format!(
                "QAT start epoch {} must be between 1 and the {} epochs",
                q.start_epoch, cfg.epochs
            )))
        }
        Some(q) => Some(Qat::new(ir, q.ema_decay)?),
        None => None,
    };
    let qat_from = cfg.qat.map_or(usize::MAX, |q| q.start_epoch - 1);
    layers::check_declared(ir, &cfg.layers)?;
    let mut sg = StepGraph::new(ir, &cfg.layers, cfg.batch, None, cfg.grad_checkpoint)?;
    if let Some(q) = &qat {
        // What QAT cannot train is refused now, not after the float epochs.
        StepGraph::quantized(ir, cfg, q, &sg.param_ir)?;
    }
    let input = &sg.exec.graph().inputs[0];
    let sample_len: usize = sg.exec.graph().shape(*input)[1..].iter().product();
    if sample_len != data.sample_len() {
        return Err(TrainError::Graph(format!(
            "samples have {} values, the model input {:?} needs {sample_len}",
            data.sample_len(),
            &sg.exec.graph().shape(*input)[1..]
        )));
    }
    let sample_shape = sg.exec.graph().shape(*input)[1..].to_vec();
    cfg.augment
        .check(&sample_shape)
        .map_err(TrainError::Graph)?;
    let param_ir = sg.param_ir.clone();
    let names = param_names(ir, &param_ir);
    // Dropout masks come from their own stream, so adding dropout to a model does not
    // change its batch order.
    let mut mask_rng = Rng::new(cfg.seed ^ 0xD50F_0A7E_5EED_0001);
    let mut params = read_params(ir, &param_ir);
    let mut opt = Optimizer::new(cfg.optimizer);
    let mut rng = Rng::new(cfg.seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut first_epoch = 0;
    let mut all_history = Vec::new();
    if let Some(c) = resume {
        c.check_config(cfg, data.len()).map_err(TrainError::Graph)?;
        let settings = checkpoint::qat_settings(cfg);
        match &c.qat {
            None if c.epoch > qat_from => {
                return Err(TrainError::Graph(format!(
                    "the checkpoint is from epoch {}, inside this run's QAT epochs (from {}), but holds no QAT ranges: it was not taken during QAT (resume it with a later --qat-start-epoch)",
                    c.epoch,
                    qat_from + 1
                )))
            }
            Some(saved) if Some(saved) != settings.as_ref() => {
                return Err(TrainError::Graph(format!(
                    "the checkpoint was taken during QAT with {saved}; this run has {}",
                    settings.as_deref().unwrap_or("no QAT")
                )))
            }
            _ => {}
        }
        let (p, m, v) = resumed_state(c, &names, cfg.optimizer)?;
        params = p;
        opt = Optimizer::resumed(cfg.optimizer, c.optimizer_steps, m, v);
        rng = Rng::from_state(c.rng);
        order.clone_from(&c.order);
        first_epoch = c.epoch;
        all_history.clone_from(&c.history);
        write_params(ir, &param_ir, &params);
        restore_state(ir, &c.state)?;
        mask_rng = Rng::from_state(c.mask_rng);
    }
    let mut running = RunningStats::new(ir, sg.exec.graph())?;
    let state_ids = running.tensors();
    if let Some(c) = resume {
        if c.state.len() != state_ids.len() {
            return Err(TrainError::Graph(format!(
                "checkpoint does not fit the model: it holds {} batch-norm statistics tensors, the model has {}",
                c.state.len(),
                state_ids.len()
            )));
        }
    }
    if let (Some(c), Some(q)) = (resume, qat.as_mut()) {
        if c.epoch > qat_from {
            // Resuming inside the QAT epochs: the fake-quantized graph, with the
            // ranges tracked so far, from the first step on.
            q.restore(&c.qat_ranges)?;
            sg = StepGraph::quantized(ir, cfg, q, &param_ir)?;
            running = RunningStats::new(ir, sg.exec.graph())?;
        }
    }
    let steps = data.len() / cfg.batch;
    let total = steps * cfg.epochs;
    let mut x = vec![0.0; cfg.batch * sample_len];
    let mut y = vec![0.0; cfg.batch * classes];
    let mut history = Vec::new();
    for epoch in first_epoch..cfg.epochs {
        rng.shuffle(&mut order);
        let quantized = epoch >= qat_from;
        if epoch == qat_from {
            // The batch norms' running statistics carry over into the QAT graph.
            write_params(ir, &param_ir, &params);
            running.write(ir);
            if let Some(q) = qat.as_ref() {
                sg = StepGraph::quantized(ir, cfg, q, &param_ir)?;
                running = RunningStats::new(ir, sg.exec.graph())?;
            }
        }
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
            cfg.augment
                .apply_batch(&mut x, &sample_shape, cfg.seed, epoch, s * cfg.batch);
            let masks = layers::draw_masks(sg.exec.graph(), &mut mask_rng);
            // Batch norms folded into fake-quantized weights: their current scales.
            let folds = running.fold_feeds(sg.exec.graph(), &params);
            let mut run = |qat: &mut Option<Qat>| -> Result<(), TrainError> {
                let qparams = qat.as_ref().filter(|_| quantized).map(Qat::qparams);
                let mut feeds: Vec<&[f32]> = vec![&x, &y];
                feeds.extend(masks.iter().map(Vec::as_slice));
                feeds.extend(qparams.iter().flatten().map(|p| &p[..]));
                feeds.extend(folds.iter().map(Vec::as_slice));
                sg.exec.run(&feeds, &params)?;
                if let Some(q) = qat.as_mut().filter(|_| quantized) {
                    q.observe(&sg.exec, &sg.observers);
                }
                Ok(())
            };
            if quantized && !qat.as_ref().is_some_and(Qat::has_ranges) {
                run(&mut qat)?;
            }
            run(&mut qat)?;
            let exec = &sg.exec;
            running.update(exec);
            let loss = exec.value(sg.loss).map_or(f32::NAN, |v| v[0]);
            if !loss.is_finite() {
                return Err(TrainError::Diverged {
                    epoch: epoch + 1,
                    step: s + 1,
                });
            }
            let logits = exec.value(sg.logits).unwrap_or(&[]);
            correct += idx
                .iter()
                .enumerate()
                .filter(|(b, &i)| argmax(&logits[b * classes..][..classes]) == data.labels[i])
                .count();
            seen += cfg.batch;
            loss_sum += f64::from(loss) * cfg.batch as f64;
            lr = cfg.schedule.lr(cfg.lr, epoch, epoch * steps + s, total);
            let grads: Vec<&[f32]> = sg
                .grads
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
        let test_accuracy = match (test, qat.as_ref().filter(|_| quantized)) {
            (Some(t), Some(q)) => Some(accuracy(&qat::predict(ir, q, t, 256)?, &t.labels)),
            (Some(t), None) => Some(accuracy(&predict(ir, t, 256)?, &t.labels)),
            (None, _) => None,
        };
        let stats = EpochStats {
            epoch: epoch + 1,
            loss: (loss_sum / seen.max(1) as f64) as f32,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            test_accuracy,
            lr,
            seconds,
            images_per_s: seen as f64 / seconds.max(1e-9),
            peak_bytes: sg.exec.peak_bytes(),
        };
        history.push(stats);
        all_history.push(stats);
        if let Some(path) = &cfg.checkpoint {
            let mut checkpoint = Checkpoint::capture(
                epoch + 1,
                &names,
                &params,
                &opt,
                &rng,
                &order,
                cfg,
                all_history.clone(),
            );
            checkpoint.state = state_ids
                .iter()
                .zip(read_params(ir, &state_ids))
                .map(|(&id, v)| (ir.tensor(id).name.clone(), ir.info(id).shape.clone(), v))
                .collect();
            checkpoint.mask_rng = mask_rng.state();
            if let Some(q) = qat.as_ref().filter(|_| quantized) {
                checkpoint.qat_ranges = q.ranges();
                checkpoint.qat = checkpoint::qat_settings(cfg);
            }
            checkpoint.save(path)?;
        }
    }
    write_params(ir, &param_ir, &params);
    running.write(ir);
    Ok(Trained { history, qat })
}

/// Name and shape of each parameter (checkpoints address parameters by name).
fn param_names(ir: &Graph, param_ir: &[TensorId]) -> Vec<(String, Vec<usize>)> {
    param_ir
        .iter()
        .map(|&id| (ir.tensor(id).name.clone(), ir.tensor(id).info.shape.clone()))
        .collect()
}

type State = (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<f32>>);

/// Writes a checkpoint's non-trained state (batch-norm running statistics) into the
/// constants of `ir` with the same names and shapes.
fn restore_state(
    ir: &mut Graph,
    state: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<(), TrainError> {
    for (name, shape, values) in state {
        let Some(i) = ir
            .tensors
            .iter()
            .position(|t| &t.name == name && t.data.is_some())
        else {
            return Err(TrainError::Graph(format!(
                "checkpoint does not fit the model: it holds the state '{name}', which the model has no constant for"
            )));
        };
        if &ir.tensors[i].info.shape != shape {
            return Err(TrainError::Graph(format!(
                "checkpoint does not fit the model: '{name}' is {shape:?} in the checkpoint, {:?} in the model",
                ir.tensors[i].info.shape
            )));
        }
        write_params(ir, &[TensorId(i)], std::slice::from_ref(values));
    }
    Ok(())
}

/// The parameters and optimizer moments of `c` in the order of `names` (the training
/// graph's parameters), checking that the model and the checkpoint match.
fn resumed_state(
    c: &Checkpoint,
    names: &[(String, Vec<usize>)],
    kind: OptimizerKind,
) -> Result<State, TrainError> {
    let bad = |m: String| TrainError::Graph(format!("checkpoint does not fit the model: {m}"));
    let by_name: std::collections::HashMap<&str, usize> = c
        .params
        .iter()
        .enumerate()
        .map(|(i, (n, _, _))| (n.as_str(), i))
        .collect();
    if let Some((extra, _, _)) = c
        .params
        .iter()
        .find(|(n, _, _)| !names.iter().any(|(m, _)| m == n))
    {
        return Err(bad(format!(
            "it holds '{extra}', which the model has no parameter for"
        )));
    }
    let (mut p, mut m, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for (name, shape) in names {
        let &i = by_name
            .get(name.as_str())
            .ok_or_else(|| bad(format!("no tensor '{name}'")))?;
        let (_, cshape, values) = &c.params[i];
        if cshape != shape {
            return Err(bad(format!(
                "'{name}' is {cshape:?} in the checkpoint, {shape:?} in the model"
            )));
        }
        p.push(values.clone());
        if let Some(mi) = c.m.get(i) {
            m.push(mi.clone());
        }
        if let Some(vi) = c.v.get(i) {
            v.push(vi.clone());
        }
    }
    let adam = !matches!(kind, OptimizerKind::Sgd { .. });
    if c.optimizer_steps > 0 && (m.len() != p.len() || (adam && v.len() != p.len())) {
        return Err(bad(format!(
            "it has {} optimizer steps but not the optimizer state of every parameter",
            c.optimizer_steps
        )));
    }
    if !adam && !m.is_empty() {
        // SGD keeps no second moments; the optimizer expects zeros there.
        v = p.iter().map(|x| vec![0.0; x.len()]).collect();
    }
    Ok((p, m, v))
}

/// The memory plans of training `ir` with its training-only `layers` (softmax
/// cross-entropy) at `batch`: without and
/// with `checkpointing`. Plans only; nothing runs, so this is cheap.
pub fn memory_plans(
    ir: &Graph,
    layers: &TrainingLayers,
    batch: usize,
    checkpointing: Checkpointing,
) -> Result<(MemoryReport, MemoryReport), TrainError> {
    classes_of(ir)?;
    let mut g = TrainGraph::from_ir_training(ir, layers, batch)?;
    g.add_loss(Loss::SoftmaxCrossEntropy)?;
    differentiate(&mut g)?;
    Ok((
        MemoryPlan::new(&g, Checkpointing::Off).report,
        MemoryPlan::new(&g, checkpointing).report,
    ))
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
