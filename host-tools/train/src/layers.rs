//! Batch norm and dropout: the layers that train differently from how they infer.
//!
//! The kiln graph a model file builds is the **inference** graph, so it stays a plain
//! float graph that kiln's passes, quantizer and compiler take unchanged:
//!
//! * batch norm layer `n` is `x * batch_norm<n>/scale + batch_norm<n>/shift` (a MUL and
//!   an ADD by per-channel constants, which kiln's `fold_batch_norm` pass folds into the
//!   convolution or dense layer before it). Its state is kept in the same graph as
//!   constants that no node reads: `batch_norm<n>/gamma`, `/beta`, `/running_mean` and
//!   `/running_var`, so weight files carry it under those names and a trained model
//!   reloads exactly; `scale = gamma / sqrt(running_var + eps)` and
//!   `shift = beta - running_mean * scale` are derived from it ([`BatchNorm::affine`]).
//! * dropout has no node at all.
//!
//! What the graph cannot say (which MUL/ADD pair is a batch norm, its momentum and eps,
//! where dropout goes and its rate) is a [`TrainingLayers`] from
//! [`crate::model::ModelSpec::training_layers`], handed to training in
//! [`crate::train::TrainConfig::layers`]. [`TrainGraph::from_ir_training`] then builds
//! the training graph: each batch norm becomes [`TOp::BatchNormStats`] (the batch mean and
//! biased variance, kept after a run) and [`TOp::BatchNormTrain`] (normalize, scale by
//! gamma, add beta), with gamma and beta trainable and the other four tensors fixed;
//! each dropout becomes [`TOp::Dropout`] by a mask fed every step (0 or `1 / (1 - rate)`,
//! drawn from the crate's seeded [`Rng`] on one thread, so training stays bit-identical
//! for any thread count). After every step [`RunningStats`] moves the running statistics
//! towards the batch's (the variance unbiased, as PyTorch); evaluation uses the kiln
//! graph, hence the running statistics and no dropout.

use crate::exec::Executor;
use crate::graph::{Kind, TNode, TOp, Tid, TrainGraph};
use crate::rng::Rng;
use crate::train::{read_params, write_params};
use crate::TrainError;
use kiln_codegen::ir::{Graph, Op, TensorId};

/// The training-only layers of a model (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingLayers {
    /// Batch norm layers, in model order.
    pub batch_norms: Vec<BatchNorm>,
    /// Dropout layers, in model order.
    pub dropouts: Vec<Dropout>,
}

impl TrainingLayers {
    /// True when the model has neither batch norm nor dropout.
    pub fn is_empty(&self) -> bool {
        self.batch_norms.is_empty() && self.dropouts.is_empty()
    }
}

/// One batch norm layer; its kiln tensors are named `<name>/<role>`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// Layer name, e.g. `batch_norm3`.
    pub name: String,
    /// Weight of a step's batch statistics in the running ones.
    pub momentum: f32,
    /// Added to the variance before the square root.
    pub eps: f32,
}

impl BatchNorm {
    /// The name of this layer's tensor or node `role` (`gamma`, `beta`, `running_mean`,
    /// `running_var`, `scale`, `shift`, ...).
    pub fn tensor(&self, role: &str) -> String {
        format!("{}/{role}", self.name)
    }

    /// Refuses a momentum outside `[0, 1]` or an eps that is not positive.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(format!("momentum {} must be in [0, 1]", self.momentum));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(format!("eps {} must be a positive number", self.eps));
        }
        Ok(())
    }

    /// The inference `(scale, shift)` per channel: `y = x * scale + shift` equals
    /// `gamma * (x - mean) / sqrt(var + eps) + beta`.
    pub fn affine(
        &self,
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = gamma
            .iter()
            .zip(var)
            .map(|(g, v)| g / (v + self.eps).sqrt())
            .collect();
        let shift = beta
            .iter()
            .zip(mean.iter().zip(&scale))
            .map(|(b, (m, s))| b - m * s)
            .collect();
        (scale, shift)
    }
}

/// One dropout layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropout {
    /// Layer name, e.g. `dropout7`.
    pub name: String,
    /// The kiln tensor it applies to (the previous layer's result).
    pub after: String,
    /// Fraction of values zeroed during training.
    pub rate: f32,
}

impl Dropout {
    /// Refuses a rate outside `[0, 1)`.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(format!("rate {} must be in [0, 1)", self.rate));
        }
        Ok(())
    }
}

/// A batch norm in a training graph: where its batch statistics land.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormStep {
    /// The layer.
    pub layer: BatchNorm,
    /// `[2, C]`: batch mean, then biased batch variance (kept after a run).
    pub stats: Tid,
    /// Values per channel in a batch (batch times spatial size).
    pub count: usize,
}

/// A batch norm in a quantization-aware training graph whose scale is folded into the
/// fake-quantized weights of the layer before it, as kiln folds it for inference: the
/// layer computes with `fake_quant(w * scale)`, its result is divided by `scale` again
/// and normalized with the batch's statistics as in float training. `scale` (from the
/// current gamma and running variance) and `1 / scale` are fed every step
/// ([`RunningStats::fold_feeds`]); gradients pass through them as through constants,
/// which is exact without quantization (the fold and the division cancel).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormFold {
    /// The layer.
    pub layer: BatchNorm,
    /// Its trained gamma.
    pub gamma: Tid,
    /// Fed `[C]`: gamma / sqrt(running variance + eps), as kiln's inference scale.
    pub scale: Tid,
    /// Fed `[C]`: 1 / scale (0 where |scale| < 1e-30, which would overflow).
    pub inverse: Tid,
}

/// A dropout in a training graph: the mask it multiplies by.
#[derive(Debug, Clone, PartialEq)]
pub struct DropoutMask {
    /// The fed mask tensor (shape of the dropped tensor).
    pub mask: Tid,
    /// Fraction of zeros.
    pub rate: f32,
}

fn find(ir: &Graph, name: &str, layer: &str) -> Result<TensorId, TrainError> {
    ir.tensors
        .iter()
        .position(|t| t.name == name)
        .map(TensorId)
        .ok_or_else(|| TrainError::Graph(format!("{layer}: the graph has no tensor '{name}'")))
}

/// The kiln tensors of one batch norm layer.
#[derive(Debug, Clone, Copy)]
struct BnTensors {
    gamma: TensorId,
    beta: TensorId,
    mean: TensorId,
    var: TensorId,
    scale: TensorId,
    shift: TensorId,
}

impl BnTensors {
    fn find(ir: &Graph, bn: &BatchNorm) -> Result<Self, TrainError> {
        let t = |role: &str| find(ir, &bn.tensor(role), &bn.name);
        let ids = BnTensors {
            gamma: t("gamma")?,
            beta: t("beta")?,
            mean: t("running_mean")?,
            var: t("running_var")?,
            scale: t("scale")?,
            shift: t("shift")?,
        };
        let c = ir.info(ids.gamma).shape.iter().product::<usize>();
        for id in [ids.beta, ids.mean, ids.var, ids.scale, ids.shift] {
            let info = ir.info(id);
            if ir.tensor(id).data.is_none() || info.shape.iter().product::<usize>() != c {
                return Err(TrainError::Graph(format!(
                    "{}: '{}' must be a constant of {c} values like its gamma, it is {:?}",
                    bn.name,
                    ir.tensor(id).name,
                    info.shape
                )));
            }
        }
        Ok(ids)
    }
}

impl TrainGraph {
    /// Instantiates the kiln graph `ir` for training `batch` samples with the
    /// training-only `layers` (see the module docs): batch norms normalize with batch
    /// statistics, dropouts multiply by fed masks (fed after the loss target, in
    /// `layers.dropouts` order). With empty `layers` this is [`TrainGraph::from_ir`].
    pub fn from_ir_training(
        ir: &Graph,
        layers: &TrainingLayers,
        batch: usize,
    ) -> Result<Self, TrainError> {
        let mut g = TrainGraph::from_ir(ir, batch)?;
        for bn in &layers.batch_norms {
            g.add_batch_norm(ir, bn)?;
        }
        for d in &layers.dropouts {
            g.add_dropout(ir, d)?;
        }
        g.forward_len = g.nodes.len();
        Ok(g)
    }

    /// Replaces the MUL/ADD pair of `bn` by batch statistics and normalization, and
    /// fixes the tensors that are not trained (running statistics, scale, shift).
    fn add_batch_norm(&mut self, ir: &Graph, bn: &BatchNorm) -> Result<(), TrainError> {
        let ids = BnTensors::find(ir, bn)?;
        let err = |m: &str| TrainError::Graph(format!("{}: {m}", bn.name));
        let reader = |t: TensorId, what: &str| {
            let readers: Vec<usize> = (0..ir.nodes.len())
                .filter(|&i| ir.nodes[i].inputs.contains(&t))
                .collect();
            match readers[..] {
                [i] => Ok(i),
                _ => Err(err(&format!(
                    "'{}' must be read by exactly one {what} node, {} read it",
                    ir.tensor(t).name,
                    readers.len()
                ))),
            }
        };
        let mul = reader(ids.scale, "MUL")?;
        let add = reader(ids.shift, "ADD")?;
        let (m, a) = (&ir.nodes[mul], &ir.nodes[add]);
        if !matches!(m.op, Op::Mul { .. })
            || !matches!(a.op, Op::Add { .. })
            || m.inputs.get(1) != Some(&ids.scale)
            || a.inputs != [m.outputs[0], ids.shift]
        {
            return Err(err(&format!(
                "expected nodes '{}' = x * scale and '{}' = that + shift",
                m.name, a.name
            )));
        }
        if reader(m.outputs[0], "ADD")? != add || ir.outputs.contains(&m.outputs[0]) {
            return Err(err(&format!(
                "'{}' (x * scale) must feed only the ADD '{}'",
                ir.tensor(m.outputs[0]).name,
                a.name
            )));
        }
        let x = m.inputs[0];
        let shape = self.shape(x.0).to_vec();
        let c = *shape.last().unwrap_or(&0);
        let count = self.tensors[x.0].len() / c.max(1);
        if c != ir.info(ids.gamma).shape.iter().product::<usize>() {
            return Err(err(&format!(
                "input {shape:?} does not have {c} channels on its last axis",
            )));
        }
        if count < 2 {
            return Err(err(&format!(
                "training needs at least 2 values per channel in a batch, input {shape:?} has {count}"
            )));
        }
        let fixed = [ids.mean, ids.var, ids.scale, ids.shift];
        for id in fixed {
            let v = read_params(ir, &[id]).remove(0);
            self.tensors[id.0].kind = Kind::Const(v);
        }
        let keep: Vec<bool> = self.param_ir.iter().map(|p| !fixed.contains(p)).collect();
        let mut k = keep.iter();
        self.params.retain(|_| *k.next().unwrap_or(&true));
        let mut k = keep.iter();
        self.param_ir.retain(|_| *k.next().unwrap_or(&true));
        let stats = self.add_tensor(bn.tensor("batch_stats"), vec![2, c], Kind::Activation);
        self.nodes[mul] = TNode {
            op: TOp::BatchNormStats,
            inputs: vec![x.0],
            output: stats,
        };
        self.nodes[add] = TNode {
            op: TOp::BatchNormTrain { eps: bn.eps },
            inputs: vec![x.0, stats, ids.gamma.0, ids.beta.0],
            output: a.outputs[0].0,
        };
        self.batch_norms.push(BatchNormStep {
            layer: bn.clone(),
            stats,
            count,
        });
        Ok(())
    }

    /// Multiplies the tensor `d.after` by a fed mask right after it is produced; every
    /// later reader (and the graph output) reads the dropped tensor instead.
    fn add_dropout(&mut self, ir: &Graph, d: &Dropout) -> Result<(), TrainError> {
        let t = find(ir, &d.after, &d.name)?.0;
        if !matches!(self.tensors[t].kind, Kind::Activation | Kind::Input) {
            return Err(TrainError::Graph(format!(
                "{}: '{}' is a constant, dropout needs an activation",
                d.name, d.after
            )));
        }
        // A dropout already applied to `t` (two dropout layers in a row) comes first.
        let mut src = t;
        let mut at = self
            .nodes
            .iter()
            .position(|n| n.output == t)
            .map_or(0, |i| i + 1);
        while let Some(i) = self.nodes[at..]
            .iter()
            .position(|n| n.op == TOp::Dropout && n.inputs[0] == src)
        {
            src = self.nodes[at + i].output;
            at += i + 1;
        }
        let shape = self.shape(t).to_vec();
        let mask = self.add_tensor(format!("{}/mask", d.name), shape.clone(), Kind::Input);
        self.inputs.push(mask);
        let out = self.add_tensor(format!("{}/out", d.name), shape, Kind::Activation);
        for node in &mut self.nodes[at..] {
            node.inputs
                .iter_mut()
                .filter(|i| **i == src)
                .for_each(|i| *i = out);
        }
        self.outputs
            .iter_mut()
            .filter(|o| **o == src)
            .for_each(|o| *o = out);
        self.nodes.insert(
            at,
            TNode {
                op: TOp::Dropout,
                inputs: vec![src, mask],
                output: out,
            },
        );
        self.dropouts.push(DropoutMask { mask, rate: d.rate });
        Ok(())
    }
}

/// Fails when `ir` holds a batch norm (constants named `<layer>/running_mean`) that
/// `layers` does not declare: it would silently train as a plain per-channel scale.
/// (A dropout leaves no trace in the kiln graph, so it cannot be checked here.)
pub fn check_declared(ir: &Graph, layers: &TrainingLayers) -> Result<(), TrainError> {
    for t in ir.tensors.iter().filter(|t| t.data.is_some()) {
        let Some(layer) = t.name.strip_suffix("/running_mean") else {
            continue;
        };
        if !layers.batch_norms.iter().any(|b| b.name == layer) {
            return Err(TrainError::Graph(format!(
                "the model has batch norm '{layer}' but the training configuration does not declare it: pass ModelSpec::training_layers() as TrainConfig::layers"
            )));
        }
    }
    Ok(())
}

/// Draws a fresh mask for every dropout of `g`: each value 0 with probability `rate`,
/// else `1 / (1 - rate)` (inverted dropout), in order from `rng`.
pub fn draw_masks(g: &TrainGraph, rng: &mut Rng) -> Vec<Vec<f32>> {
    g.dropouts
        .iter()
        .map(|d| {
            let keep = 1.0 / (1.0 - d.rate);
            (0..g.tensors[d.mask].len())
                .map(|_| if rng.unit() < d.rate { 0.0 } else { keep })
                .collect()
        })
        .collect()
}

/// The running statistics of a training graph's batch norms, updated every step.
#[derive(Debug, Clone)]
pub struct RunningStats {
    layers: Vec<(BatchNormStep, BnTensors, Vec<f32>, Vec<f32>)>,
}

impl RunningStats {
    /// Reads the running statistics of `g`'s batch norms from `ir`.
    pub fn new(ir: &Graph, g: &TrainGraph) -> Result<Self, TrainError> {
        let layers = g
            .batch_norms
            .iter()
            .map(|step| {
                let ids = BnTensors::find(ir, &step.layer)?;
                let mut v = read_params(ir, &[ids.mean, ids.var]);
                let var = v.pop().unwrap_or_default();
                let mean = v.pop().unwrap_or_default();
                Ok((step.clone(), ids, mean, var))
            })
            .collect::<Result<_, TrainError>>()?;
        Ok(RunningStats { layers })
    }

    /// The kiln constants holding the running statistics (mean, then variance, per
    /// layer): the state a checkpoint must carry besides the parameters.
    pub fn tensors(&self) -> Vec<TensorId> {
        self.layers
            .iter()
            .flat_map(|(_, ids, _, _)| [ids.mean, ids.var])
            .collect()
    }

    /// Moves each running mean and variance towards the batch statistics of the last
    /// run: `r = (1 - momentum) r + momentum b`, with the variance made unbiased.
    pub fn update(&mut self, exec: &Executor) {
        for (step, _, mean, var) in &mut self.layers {
            let Some(stats) = exec.value(step.stats) else {
                continue;
            };
            let (bm, bv) = stats.split_at(stats.len() / 2);
            let m = step.layer.momentum;
            let unbias = step.count as f32 / (step.count - 1).max(1) as f32;
            for (r, b) in mean.iter_mut().zip(bm) {
                *r = (1.0 - m) * *r + m * b;
            }
            for (r, b) in var.iter_mut().zip(bv) {
                *r = (1.0 - m) * *r + m * b * unbias;
            }
        }
    }

    /// The fed values of `g`'s batch-norm folds ([`BatchNormFold`]), in feed order:
    /// each fold's scale (the same f32 expression as [`BatchNorm::affine`], from the
    /// trained gamma in `params`, in `g.params` order, and the running variance) and
    /// its inverse.
    pub fn fold_feeds(&self, g: &TrainGraph, params: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let mut feeds = Vec::new();
        for f in &g.bn_folds {
            let gamma = g
                .params
                .iter()
                .position(|&p| p == f.gamma)
                .and_then(|i| params.get(i))
                .map_or(&[][..], Vec::as_slice);
            let var = self
                .layers
                .iter()
                .find(|(step, ..)| step.layer.name == f.layer.name)
                .map_or(&[][..], |(_, _, _, var)| var.as_slice());
            let scale: Vec<f32> = gamma
                .iter()
                .zip(var)
                .map(|(g, v)| g / (v + f.layer.eps).sqrt())
                .collect();
            let inverse = scale
                .iter()
                .map(|&s| if s.abs() < 1e-30 { 0.0 } else { 1.0 / s })
                .collect();
            feeds.push(scale);
            feeds.push(inverse);
        }
        feeds
    }

    /// Writes the running statistics into `ir` and derives each batch norm's `scale`
    /// and `shift` from them and the (already written) gamma and beta.
    pub fn write(&self, ir: &mut Graph) {
        for (step, ids, mean, var) in &self.layers {
            write_params(ir, &[ids.mean, ids.var], &[mean.clone(), var.clone()]);
            let gb = read_params(ir, &[ids.gamma, ids.beta]);
            let (scale, shift) = step.layer.affine(&gb[0], &gb[1], mean, var);
            write_params(ir, &[ids.scale, ids.shift], &[scale, shift]);
        }
    }
}
