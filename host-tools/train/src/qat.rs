//! Quantization-aware training (QAT): fake quantization that matches kiln's int8 graph.
//!
//! Where the fake quantization goes is read off kiln's own optimized float graph (its
//! optimization passes, `fuse_residual` left out so every tensor keeps a name), so it
//! sits exactly on the tensors that are int8 in the compiled model:
//!
//! * every graph input and every node result that survives the passes, i.e. *after* a
//!   fused activation (conv → relu is one int8 tensor, quantized after the relu);
//!   max pooling, reshape, pad, transpose and concatenation results share their
//!   input's parameters and hold its values, so they need none;
//! * with kiln's quantizer's parameters: per-tensor asymmetric int8 from a range
//!   ([`params::asymmetric`]), the same range for tensors kiln ties together (pooling,
//!   reshape, a clamp and its private input), fixed parameters for softmax, logistic
//!   and tanh results; values are rounded as kiln's QUANTIZE kernel rounds;
//! * weights symmetric per output channel (`max|w| / 127`, [`params::quantize_weight`])
//!   and biases rounded to int32 at scale `input_scale × weight_scale`; where kiln's
//!   `fold_affine` folds per-channel MUL/ADD nodes (a batch norm's scale and shift)
//!   into a layer, the fold is redone with the same f32 operations and checked bit
//!   for bit against kiln's ([`Qat::new`] fails otherwise), and the folded weights and
//!   bias are what gets fake-quantized. In training, a folded batch norm keeps training
//!   with batch statistics: the layer computes with `fake_quant(w * scale)` (scale from
//!   the current gamma and running variance, fed each step), its result is divided by
//!   the scale again and normalized ([`crate::layers::BatchNormFold`]; PyTorch's
//!   ConvBn QAT does the same). Evaluation ([`predict`]) uses the fully folded graph,
//!   exactly what kiln compiles.
//!
//! Activation ranges are the exponential moving average of each batch's min/max
//! ([`TOp::MinMax`] nodes; tensors sharing parameters observe one range), started by an
//! observation run on the first QAT batch and frozen when training ends. Gradients use
//! the straight-through estimator: the identity inside the int8 range, zero where a
//! value is clipped ([`TOp::FakeQuantGrad`]); weights and biases are never clipped.
//! [`quantize_int8`] converts the trained float graph with exactly those ranges
//! ([`kiln_codegen::quantize::quantize_with_ranges`]), so the int8 model computes what
//! QAT trained, up to kiln's fixed-point requantization (one step, rarely).

use crate::data::Dataset;
use crate::exec::Executor;
use crate::graph::{Kind, Loss, TNode, TOp, Tid, TrainGraph};
use crate::layers::{BatchNormFold, TrainingLayers};
use crate::train::argmax;
use crate::TrainError;
use kiln_codegen::ir::{Graph, Op, TensorId};
use kiln_codegen::quantize::{self, params, QuantizeOptions};
use std::collections::{BTreeMap, HashMap};

/// How to train with fake quantization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QatConfig {
    /// First epoch (from 1) trained with fake quantization; earlier epochs are a float
    /// warm-up (the common recipe: float training, then QAT for the last epoch or two).
    pub start_epoch: usize,
    /// Weight of the old range in the moving average of batch ranges, in `[0, 1)`.
    pub ema_decay: f32,
}

impl Default for QatConfig {
    /// QAT from the first epoch, ranges averaged with decay 0.99 (about 100 batches).
    fn default() -> Self {
        QatConfig {
            start_epoch: 1,
            ema_decay: 0.99,
        }
    }
}

/// Activation ranges by IR tensor name, as [`kiln_codegen::quantize::quantize_with_ranges`]
/// takes them.
pub type Ranges = BTreeMap<String, (f32, f32)>;

/// One set of int8 parameters, shared by the tensors kiln ties together.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    /// Name of one member (for messages and the feed's name).
    name: String,
    /// Parameters the int8 kernel requires (softmax, logistic, tanh results).
    fixed: Option<(f32, i32)>,
}

/// A tensor fake-quantized after it is computed.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    name: String,
    slot: usize,
    /// Its values count towards the slot's range (not for a clamp's private input,
    /// which kiln quantizes with the clamp's range).
    observe: bool,
}

/// A conv or dense layer whose weights (and bias) are fake-quantized.
#[derive(Debug, Clone, PartialEq)]
struct Weighted {
    /// The layer's node (the name kiln's passes keep when they fold into it).
    node: String,
    weights: String,
    bias: Option<String>,
    axis: usize,
    /// Slot of the layer's input (the bias scale is `input_scale × weight_scale`).
    input_slot: usize,
    /// The per-channel MUL/ADD nodes after the layer that kiln's `fold_affine` folds
    /// into its weights and bias (a batch norm's `x * scale + shift`), in order.
    affine: Vec<Affine>,
}

/// One MUL or ADD by a per-channel constant, folded into the layer before it.
#[derive(Debug, Clone, PartialEq)]
struct Affine {
    /// MUL (scales weights and bias) or ADD (adds to the bias).
    mul: bool,
    /// The constant's IR name.
    constant: String,
    /// The node's result's IR name.
    output: String,
}

/// Where fake quantization goes in one model.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    slots: Vec<Slot>,
    points: Vec<Point>,
    /// Every int8 activation tensor of kiln's graph and its slot.
    members: Vec<(String, usize)>,
    weighted: Vec<Weighted>,
}

/// The tensors of a QAT graph holding each batch's range observations: `(tensor, slot)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observers(Vec<(Tid, usize)>);

/// Quantization-aware training of one model: where fake quantization goes, and the
/// activation ranges tracked so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Qat {
    plan: Plan,
    ranges: Vec<Option<(f32, f32)>>,
    decay: f32,
}

impl Qat {
    /// Plans fake quantization for the float graph `ir` (no ranges yet); fails naming
    /// the node when kiln could not quantize it or its passes change the weights.
    pub fn new(ir: &Graph, ema_decay: f32) -> Result<Self, TrainError> {
        if !(0.0..1.0).contains(&ema_decay) {
            return Err(TrainError::Graph(format!(
                "QAT range decay {ema_decay} must be in [0, 1)"
            )));
        }
        let plan = plan(ir)?;
        Ok(Qat {
            ranges: vec![None; plan.slots.len()],
            plan,
            decay: ema_decay,
        })
    }

    /// The plan of `ir` with frozen `ranges` (from [`Qat::ranges`]); every tensor that
    /// needs a range must have one.
    pub fn with_ranges(ir: &Graph, ranges: &Ranges) -> Result<Self, TrainError> {
        let mut q = Qat::new(ir, 0.0)?;
        for (name, slot) in &q.plan.members {
            if let Some(&(lo, hi)) = ranges.get(name) {
                let r = q.ranges[*slot].get_or_insert((lo, hi));
                *r = (r.0.min(lo), r.1.max(hi));
            }
        }
        for (slot, s) in q.plan.slots.iter().enumerate() {
            if s.fixed.is_none() && q.ranges[slot].is_none() {
                return Err(TrainError::Graph(format!(
                    "QAT ranges: no range for tensor '{}'",
                    s.name
                )));
            }
        }
        Ok(q)
    }

    /// The training graph of `ir` for `batch` samples with fake quantization, and
    /// `loss` if given. Its fed inputs are the IR inputs, the loss target, then one
    /// `[scale, zero_point]` per parameter set ([`Qat::qparams`]); range observations
    /// are appended to its outputs (after the IR outputs).
    pub fn graph(
        &self,
        ir: &Graph,
        batch: usize,
        loss: Option<Loss>,
    ) -> Result<(TrainGraph, Observers), TrainError> {
        self.training_graph(ir, &TrainingLayers::default(), batch, loss)
    }

    /// [`Qat::graph`] for training a model with `layers`, as
    /// [`TrainGraph::from_ir_training`] builds it (batch norms train with batch
    /// statistics, dropouts drop; masks fed after the loss target), with fake
    /// quantization. A batch norm kiln folds into the layer before it is folded into
    /// that layer's fake-quantized weights here too ([`BatchNormFold`]: its scale and
    /// inverse are fed after the fake-quantization parameters). Constants no node
    /// reads stay fixed.
    pub fn training_graph(
        &self,
        ir: &Graph,
        layers: &TrainingLayers,
        batch: usize,
        loss: Option<Loss>,
    ) -> Result<(TrainGraph, Observers), TrainError> {
        // A batch norm kiln does not fold into a layer (after a relu or a pool, say)
        // stays an int8 MUL and ADD in the compiled model, which training with batch
        // statistics would not reproduce.
        for bn in &layers.batch_norms {
            let folded = self
                .plan
                .weighted
                .iter()
                .any(|w| w.affine.iter().any(|a| a.constant == bn.tensor("scale")));
            if !folded {
                return Err(TrainError::Graph(format!(
                    "QAT: kiln does not fold batch norm '{}' into a conv, depthwise or dense layer right before it (it runs it as an int8 MUL and ADD); QAT supports batch norms that directly follow such a layer",
                    bn.name
                )));
            }
        }
        let mut g = TrainGraph::from_ir_training(ir, layers, batch)?;
        if let Some(loss) = loss {
            g.add_loss(loss)?;
        }
        let observers = insert(&mut g, ir.tensors.len(), &self.plan)?;
        fix_unread_params(&mut g, ir);
        Ok((g, observers))
    }

    /// The `[scale, zero_point]` fed for each parameter set: fixed, from the tracked
    /// range, or `[0, 0]` (pass-through) while no range is known.
    pub fn qparams(&self) -> Vec<[f32; 2]> {
        self.plan
            .slots
            .iter()
            .zip(&self.ranges)
            .map(|(s, r)| match (s.fixed, r) {
                (Some((s, z)), _) => [s, z as f32],
                (None, Some((lo, hi))) => {
                    let (s, z) = params::asymmetric(*lo, *hi);
                    [s, z as f32]
                }
                (None, None) => [0.0, 0.0],
            })
            .collect()
    }

    /// True once every parameter set that is not fixed has a range.
    pub fn has_ranges(&self) -> bool {
        self.plan
            .slots
            .iter()
            .zip(&self.ranges)
            .all(|(s, r)| s.fixed.is_some() || r.is_some())
    }

    /// Folds the batch ranges a run of `exec` observed into the moving averages (a
    /// parameter set seen for the first time takes the batch's range).
    pub fn observe(&mut self, exec: &Executor, observers: &Observers) {
        let mut batch: Vec<Option<(f32, f32)>> = vec![None; self.ranges.len()];
        for &(t, slot) in &observers.0 {
            let Some(&[lo, hi]) = exec.value(t) else {
                continue;
            };
            if !(lo.is_finite() && hi.is_finite()) {
                continue;
            }
            let r = batch[slot].get_or_insert((lo, hi));
            *r = (r.0.min(lo), r.1.max(hi));
        }
        let d = self.decay;
        for (r, b) in self.ranges.iter_mut().zip(batch) {
            if let Some((lo, hi)) = b {
                *r = Some(match *r {
                    None => (lo, hi),
                    Some((a, b)) => (d * a + (1.0 - d) * lo, d * b + (1.0 - d) * hi),
                });
            }
        }
    }

    /// Continues from `ranges` (from [`Qat::ranges`], e.g. a checkpoint's): every
    /// parameter set that is not fixed must get its range back.
    pub fn restore(&mut self, ranges: &Ranges) -> Result<(), TrainError> {
        for (name, slot) in &self.plan.members {
            if let Some(&r) = ranges.get(name) {
                self.ranges[*slot] = Some(r);
            }
        }
        if !self.has_ranges() {
            return Err(TrainError::Graph(
                "QAT ranges: the checkpoint lacks ranges this model's int8 tensors need".into(),
            ));
        }
        Ok(())
    }

    /// The tracked range of every int8 activation tensor of kiln's graph (tensors
    /// sharing parameters get the same range; fixed ones are left out).
    pub fn ranges(&self) -> Ranges {
        self.plan
            .members
            .iter()
            .filter_map(|(name, slot)| {
                let r = self.ranges[*slot]?;
                self.plan.slots[*slot]
                    .fixed
                    .is_none()
                    .then(|| (name.clone(), r))
            })
            .collect()
    }
}

/// `x` quantized as kiln's QUANTIZE kernel does (`round(x / scale)` half away from
/// zero, plus the zero point), not yet clamped.
fn quantize_unclamped(x: f32, scale: f32, zero_point: i32) -> i32 {
    ((x / scale).round() as i32).saturating_add(zero_point)
}

/// [`TOp::FakeQuant`]: `x` through int8 with `qparams = [scale, zero_point]`.
pub fn fake_quant(x: &[f32], qparams: &[f32], out: &mut [f32]) {
    let (s, z) = (qparams[0], qparams[1] as i32);
    if s.is_nan() || s <= 0.0 {
        out.copy_from_slice(x);
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        let q = quantize_unclamped(v, s, z).clamp(-128, 127);
        *o = params::dequantize(q as i8, s, z);
    }
}

/// [`TOp::FakeQuantGrad`]: `dy` where `x` quantizes inside `[-128, 127]`, else 0.
pub fn fake_quant_grad(x: &[f32], qparams: &[f32], dy: &[f32], out: &mut [f32]) {
    let (s, z) = (qparams[0], qparams[1] as i32);
    if s.is_nan() || s <= 0.0 {
        out.copy_from_slice(dy);
        return;
    }
    for ((o, &v), &d) in out.iter_mut().zip(x).zip(dy) {
        let inside = (-128..=127).contains(&quantize_unclamped(v, s, z));
        *o = if inside { d } else { 0.0 };
    }
}

/// kiln's symmetric weight scale of every channel along `axis` of weights `w` of
/// `shape`, and the number of values per channel run.
fn weight_scales(w: &[f32], shape: &[usize], axis: usize) -> (Vec<f32>, usize) {
    let channels = shape.get(axis).copied().unwrap_or(1).max(1);
    let inner: usize = shape.get(axis + 1..).map_or(1, |s| s.iter().product());
    let inner = inner.max(1);
    let mut max_abs = vec![0f32; channels];
    for (i, &v) in w.iter().enumerate() {
        let c = (i / inner) % channels;
        max_abs[c] = max_abs[c].max(v.abs());
    }
    let scales = max_abs
        .iter()
        .map(|&m| params::symmetric_scale(m))
        .collect();
    (scales, inner)
}

/// [`TOp::FakeQuantWeights`]: weights through kiln's per-channel symmetric int8.
pub fn fake_quant_weights(w: &[f32], shape: &[usize], axis: usize, out: &mut [f32]) {
    let (scales, inner) = weight_scales(w, shape, axis);
    for (i, (o, &v)) in out.iter_mut().zip(w).enumerate() {
        let s = scales[(i / inner) % scales.len()];
        *o = f32::from(params::quantize_weight(v, s)) * s;
    }
}

/// [`TOp::FakeQuantBias`]: bias `b` through kiln's int32 bias of scale
/// `input_scale × weight_scale` (per channel of `w` along `axis`).
pub fn fake_quant_bias(
    b: &[f32],
    w: &[f32],
    w_shape: &[usize],
    axis: usize,
    qparams_in: &[f32],
    out: &mut [f32],
) {
    let s_in = qparams_in[0];
    if s_in.is_nan() || s_in <= 0.0 {
        out.copy_from_slice(b);
        return;
    }
    let (scales, _) = weight_scales(w, w_shape, axis);
    for (c, (o, &v)) in out.iter_mut().zip(b).enumerate() {
        let s = s_in * scales[c % scales.len()];
        *o = params::quantize_bias(v, s) as f32 * s;
    }
}

/// [`TOp::MinMax`]: `[min, max]` of `x` (`[0, 0]` for no finite value).
pub fn min_max(x: &[f32], out: &mut [f32]) {
    let finite = x.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo <= hi {
        out.copy_from_slice(&[lo, hi]);
    } else {
        out.fill(0.0);
    }
}

/// `ir` through kiln's optimization passes except `fuse_residual` (a fused residual's
/// conv result would lose its name, and kiln's quantizer splits it out again anyway).
fn optimized(ir: &Graph) -> Result<Graph, TrainError> {
    let mut g = ir.clone();
    let passes = kiln_codegen::passes::PIPELINE;
    loop {
        let mut changed = false;
        for pass in passes.iter().filter(|p| p.name != "fuse_residual") {
            if (pass.run)(&mut g) > 0 {
                g.validate().map_err(|e| {
                    TrainError::Kiln(format!("pass {} broke the graph: {e}", pass.name))
                })?;
                changed = true;
            }
        }
        if !changed {
            return Ok(g);
        }
    }
}

fn find(parent: &mut [usize], mut t: usize) -> usize {
    while parent[t] != t {
        parent[t] = parent[parent[t]];
        t = parent[t];
    }
    t
}

/// Reads where the int8 tensors of kiln's compiled graph are, with kiln's quantizer's
/// rules (see the module docs).
fn plan(ir: &Graph) -> Result<Plan, TrainError> {
    quantize::check_quantizable(ir).map_err(|e| TrainError::Kiln(format!("QAT: {e}")))?;
    let g = optimized(ir)?;
    let n = g.tensors.len();
    let mut parent: Vec<usize> = (0..n).collect();
    let union = |parent: &mut Vec<usize>, a: TensorId, b: TensorId| {
        let (a, b) = (find(parent, a.0), find(parent, b.0));
        if a != b {
            parent[b] = a;
        }
    };
    let (mut member, mut point, mut excluded) = (vec![false; n], vec![false; n], vec![false; n]);
    let mut fixed: Vec<Option<(f32, i32)>> = vec![None; n];
    for x in &g.inputs {
        member[x.0] = true;
        point[x.0] = true;
    }
    let private = |x: TensorId, node: usize| {
        let readers: Vec<usize> = (0..g.nodes.len())
            .filter(|&i| g.nodes[i].inputs.contains(&x))
            .collect();
        !g.inputs.contains(&x)
            && !g.outputs.contains(&x)
            && g.tensor(x).data.is_none()
            && readers == [node]
            && g.nodes[node].inputs.iter().filter(|&&t| t == x).count() == 1
    };
    for (i, node) in g.nodes.iter().enumerate() {
        let (x, y) = (node.inputs[0], node.outputs[0]);
        member[y.0] = true;
        match &node.op {
            Op::MaxPool2d(_) | Op::Reshape | Op::Pad { .. } | Op::Transpose { .. } => {
                union(&mut parent, y, x)
            }
            Op::Concatenation { .. } => {
                for &t in node.inputs.iter().filter(|t| g.tensor(**t).data.is_none()) {
                    union(&mut parent, y, t);
                }
            }
            Op::AveragePool2d(_) => {
                union(&mut parent, y, x);
                point[y.0] = true;
            }
            Op::Softmax { .. } | Op::Logistic | Op::Tanh => {
                fixed[y.0] = Some(if matches!(node.op, Op::Tanh) {
                    (1.0 / 128.0, 0)
                } else {
                    (1.0 / 256.0, -128)
                });
                point[y.0] = true;
            }
            Op::Relu | Op::Relu6 | Op::Clip { .. } if private(x, i) => {
                union(&mut parent, y, x);
                excluded[x.0] = true;
                point[y.0] = true;
            }
            Op::Relu6 => {
                union(&mut parent, y, x);
                point[y.0] = true;
            }
            _ => point[y.0] = true,
        }
    }
    // One slot per group of members; fixed parameters per group.
    let mut slot_of_root: HashMap<usize, usize> = HashMap::new();
    let mut slots: Vec<Slot> = Vec::new();
    let mut slot = vec![usize::MAX; n];
    for t in (0..n).filter(|&t| member[t]) {
        let root = find(&mut parent, t);
        let s = *slot_of_root.entry(root).or_insert_with(|| {
            slots.push(Slot {
                name: g.tensors[root].name.clone(),
                fixed: None,
            });
            slots.len() - 1
        });
        slot[t] = s;
        if let Some(f) = fixed[t] {
            if slots[s].fixed.is_some_and(|p| p != f) {
                return Err(TrainError::Graph(format!(
                    "QAT: tensor '{}' would need two different fixed int8 parameters",
                    g.tensors[t].name
                )));
            }
            slots[s].fixed = Some(f);
        }
    }
    let points = (0..n)
        .filter(|&t| member[t] && point[t])
        .map(|t| Point {
            name: g.tensors[t].name.clone(),
            slot: slot[t],
            observe: !excluded[t] && slots[slot[t]].fixed.is_none(),
        })
        .collect();
    let members = (0..n)
        .filter(|&t| member[t])
        .map(|t| (g.tensors[t].name.clone(), slot[t]))
        .collect();
    let mut weighted = Vec::new();
    for node in &g.nodes {
        let axis = match node.op {
            Op::Conv2d(_) | Op::FullyConnected { .. } => 0,
            Op::DepthwiseConv2d(_) => 3,
            _ => continue,
        };
        let input_slot = slot[node.inputs[0].0];
        let consts: Vec<&kiln_codegen::ir::Tensor> =
            node.inputs[1..].iter().map(|&t| g.tensor(t)).collect();
        let unchanged = consts.iter().all(|t| {
            ir.tensors
                .iter()
                .any(|o| o.name == t.name && o.data == t.data)
        });
        let folded = if unchanged {
            None
        } else {
            Some(folded_layer(ir, &g, node, axis).ok_or_else(|| {
                TrainError::Graph(format!(
                    "QAT: kiln's passes change the constants of node '{}' in a way QAT cannot follow (only per-channel MUL/ADD folds, as of a batch norm, are)",
                    node.name
                ))
            })?)
        };
        weighted.push(match folded {
            Some(mut w) => {
                w.input_slot = input_slot;
                w
            }
            None => Weighted {
                node: node.name.clone(),
                weights: consts.first().map(|t| t.name.clone()).unwrap_or_default(),
                bias: consts.get(1).map(|t| t.name.clone()),
                axis,
                input_slot,
                affine: Vec::new(),
            },
        });
    }
    Ok(Plan {
        slots,
        points,
        members,
        weighted,
    })
}

/// The layer `folded` of kiln's optimized graph traced back to `ir`: its IR node (same
/// name), and the longest run of per-channel MUL/ADD nodes after it whose fold, redone
/// here in f32 exactly as kiln's `fold_affine` does it, gives `folded`'s constants bit
/// for bit. `None` when no such run exists.
fn folded_layer(
    ir: &Graph,
    g: &Graph,
    folded: &kiln_codegen::ir::Node,
    axis: usize,
) -> Option<Weighted> {
    let layer = ir.nodes.iter().find(|n| n.name == folded.name)?;
    let f32s = |graph: &Graph, t: TensorId| crate::train::read_params(graph, &[t]).remove(0);
    let want: Vec<Vec<f32>> = folded.inputs[1..].iter().map(|&t| f32s(g, t)).collect();
    let (w_id, b_id) = (layer.inputs.get(1)?, layer.inputs.get(2));
    let w_shape = ir.info(*w_id).shape.clone();
    let channels = *w_shape.get(axis)?;
    let inner: usize = w_shape[axis + 1..].iter().product();
    let mut w = f32s(ir, *w_id);
    let mut b = b_id.map(|&t| f32s(ir, t));
    let mut chain = Vec::new();
    let mut best = None;
    let mut x = layer.outputs[0];
    loop {
        let readers: Vec<&kiln_codegen::ir::Node> =
            ir.nodes.iter().filter(|n| n.inputs.contains(&x)).collect();
        let [next] = readers[..] else { break };
        let mul = match next.op {
            Op::Mul { .. } => true,
            Op::Add { .. } => false,
            _ => break,
        };
        let Some(&c) = next.inputs.iter().find(|&&t| t != x) else {
            break;
        };
        let values = f32s(ir, c);
        let per_channel = ir.info(c).shape.iter().rev().skip(1).all(|&d| d == 1)
            && (values.len() == channels || values.len() == 1);
        let same_shape = ir.info(x).shape == ir.info(next.outputs[0]).shape;
        if ir.tensor(c).data.is_none() || !per_channel || !same_shape || ir.outputs.contains(&x) {
            break;
        }
        let v = |i: usize| values[if values.len() == 1 { 0 } else { i }];
        if mul {
            w.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x *= v((i / inner.max(1)) % channels));
            if let Some(b) = &mut b {
                b.iter_mut().enumerate().for_each(|(i, x)| *x *= v(i));
            }
        } else {
            let old = b.take().unwrap_or_else(|| vec![0.0; channels]);
            b = Some(old.iter().enumerate().map(|(i, o)| o + v(i)).collect());
        }
        chain.push(Affine {
            mul,
            constant: ir.tensor(c).name.clone(),
            output: ir.tensor(next.outputs[0]).name.clone(),
        });
        let mut got = vec![w.clone()];
        got.extend(b.clone());
        let same = got.len() == want.len()
            && got.iter().zip(&want).all(|(a, e)| {
                a.iter()
                    .map(|v| v.to_bits())
                    .eq(e.iter().map(|v| v.to_bits()))
            });
        if same {
            best = Some(chain.clone());
        }
        x = next.outputs[0];
    }
    Some(Weighted {
        node: layer.name.clone(),
        weights: ir.tensor(*w_id).name.clone(),
        bias: b_id.map(|&t| ir.tensor(t).name.clone()),
        axis,
        input_slot: 0,
        affine: best?,
    })
}

/// Rewrites the forward half of `g` (built from an IR graph of `ir_len` tensors, not
/// yet differentiated) with the fake quantization of `plan`.
fn insert(g: &mut TrainGraph, ir_len: usize, plan: &Plan) -> Result<Observers, TrainError> {
    if !g.grads.is_empty() || g.forward_len != g.nodes.len() {
        return Err(TrainError::Graph(
            "QAT: fake quantization must be added before differentiating".into(),
        ));
    }
    let by_name: HashMap<String, Tid> = (0..ir_len.min(g.tensors.len()))
        .map(|t| (g.tensors[t].name.clone(), t))
        .collect();
    let lookup = |name: &str| {
        by_name.get(name).copied().ok_or_else(|| {
            TrainError::Graph(format!(
                "QAT: tensor '{name}' of kiln's optimized graph is not in the training graph"
            ))
        })
    };
    let mut after: HashMap<Tid, &Point> = HashMap::new();
    for p in &plan.points {
        after.insert(lookup(&p.name)?, p);
    }
    let mut layers: HashMap<Tid, (&Weighted, Option<Tid>)> = HashMap::new();
    // The results of MUL/ADD nodes folded into the layer before them: those nodes go,
    // the layer computes their result from the folded weights.
    let mut folded_away: Vec<Tid> = Vec::new();
    // Layers whose folded MUL/ADD pair is a batch norm training with batch statistics.
    let mut bn_layers: Vec<(Tid, BatchNormFold)> = Vec::new();
    for w in &plan.weighted {
        let wt = lookup(&w.weights)?;
        let bt = w.bias.as_deref().map(lookup).transpose()?;
        if let Some(fold) = batch_norm_fold(g, w, &lookup)? {
            bn_layers.push((wt, fold));
            layers.insert(wt, (w, bt));
            continue;
        }
        // Each folded node must read the previous result directly in the training
        // graph too (not through a dropout, which kiln's inference graph does not have;
        // batch norms, handled above, may).
        let mut prev = g
            .nodes
            .iter()
            .find(|n| n.inputs.get(1) == Some(&wt))
            .map(|n| n.output);
        for a in &w.affine {
            let out = lookup(&a.output)?;
            let reader = g.nodes.iter().find(|n| n.output == out);
            if let (Some(p), Some(n)) = (prev, reader) {
                if !n.inputs.contains(&p) {
                    return Err(TrainError::Graph(format!(
                        "QAT: kiln folds '{}' into layer '{}', but in training it does not read the layer's result directly (a dropout in between?); put the dropout after it",
                        a.output, w.node
                    )));
                }
            }
            prev = Some(out);
            folded_away.push(out);
            let c = lookup(&a.constant)?;
            if g.tensors[c].kind != Kind::Param {
                return Err(TrainError::Graph(format!(
                    "QAT: '{}' should be a trainable constant",
                    a.constant
                )));
            }
        }
        for t in std::iter::once(wt).chain(bt) {
            if g.tensors[t].kind != Kind::Param {
                return Err(TrainError::Graph(format!(
                    "QAT: '{}' should be a trainable constant",
                    g.tensors[t].name
                )));
            }
        }
        layers.insert(wt, (w, bt));
    }
    let qparams: Vec<Tid> = plan
        .slots
        .iter()
        .map(|s| g.add_tensor(format!("qat/qparams/{}", s.name), vec![2], Kind::Input))
        .collect();
    let fed: Vec<Tid> = g.inputs.clone();
    g.inputs.extend(&qparams);
    for (_, fold) in &bn_layers {
        g.inputs.extend([fold.scale, fold.inverse]);
        g.bn_folds.push(fold.clone());
    }

    let mut rw = Rewrite {
        after,
        qparams,
        nodes: Vec::new(),
        subst: HashMap::new(),
        observers: Vec::new(),
    };
    for &x in &fed {
        rw.quantize_after(g, x);
    }
    for mut node in std::mem::take(&mut g.nodes) {
        if folded_away.contains(&node.output) {
            continue;
        }
        for t in &mut node.inputs {
            if let Some(&s) = rw.subst.get(t) {
                *t = s;
            }
        }
        let layer = matches!(
            node.op,
            TOp::Ir(Op::Conv2d(_) | Op::DepthwiseConv2d(_) | Op::FullyConnected { .. })
        );
        if let Some(&(w, bias)) = node
            .inputs
            .get(1)
            .and_then(|t| layers.get(t))
            .filter(|_| layer)
        {
            let (mut wt, mut bias) = (
                node.inputs[1],
                bias.filter(|b| node.inputs.get(2) == Some(b)),
            );
            if let Some((_, fold)) = bn_layers.iter().find(|(t, _)| *t == wt) {
                rw.batch_norm_layer(g, node, w, fold, bias);
                continue;
            }
            if let Some(last) = w.affine.last() {
                (wt, bias) = rw.fold(g, w, wt, bias, &lookup)?;
                node.output = lookup(&last.output)?;
                if let Some(b) = bias {
                    node.inputs.truncate(2);
                    node.inputs.push(b);
                }
            }
            let (name, shape) = (g.tensors[wt].name.clone(), g.shape(wt).to_vec());
            let wq = g.add_tensor(format!("{name}/fake_quant"), shape, Kind::Activation);
            rw.nodes.push(TNode {
                op: TOp::FakeQuantWeights { axis: w.axis },
                inputs: vec![wt],
                output: wq,
            });
            node.inputs[1] = wq;
            if let Some(bt) = bias {
                let (name, shape) = (g.tensors[bt].name.clone(), g.shape(bt).to_vec());
                let bq = g.add_tensor(format!("{name}/fake_quant"), shape, Kind::Activation);
                rw.nodes.push(TNode {
                    op: TOp::FakeQuantBias { axis: w.axis },
                    inputs: vec![bt, wt, rw.qparams[w.input_slot]],
                    output: bq,
                });
                node.inputs[2] = bq;
            }
        }
        let out = node.output;
        rw.nodes.push(node);
        rw.quantize_after(g, out);
    }
    for t in &mut g.outputs {
        if let Some(&s) = rw.subst.get(t) {
            *t = s;
        }
    }
    g.outputs.extend(rw.observers.iter().map(|&(t, _)| t));
    g.nodes = rw.nodes;
    g.forward_len = g.nodes.len();
    Ok(Observers(rw.observers))
}

/// The [`BatchNormFold`] of layer `w` when the MUL/ADD pair kiln folds into it is a
/// batch norm that trains with batch statistics in `g` (its fed scale and inverse are
/// new tensors, not yet inputs); `None` for other layers. A fold of more than the
/// batch norm is refused.
fn batch_norm_fold(
    g: &mut TrainGraph,
    w: &Weighted,
    lookup: &dyn Fn(&str) -> Result<Tid, TrainError>,
) -> Result<Option<BatchNormFold>, TrainError> {
    let Some(step) = g.batch_norms.iter().find(|b| {
        w.affine
            .iter()
            .any(|a| a.constant == b.layer.tensor("scale") || a.constant == b.layer.tensor("shift"))
    }) else {
        return Ok(None);
    };
    let layer = step.layer.clone();
    let exact = w.affine.len() == 2
        && w.affine[0].mul
        && w.affine[0].constant == layer.tensor("scale")
        && !w.affine[1].mul
        && w.affine[1].constant == layer.tensor("shift");
    if !exact {
        return Err(TrainError::Graph(format!(
            "QAT: kiln folds more than batch norm '{}' into layer '{}'; QAT can fold only the batch norm",
            layer.name, w.node
        )));
    }
    let gamma = lookup(&layer.tensor("gamma"))?;
    let shape = g.shape(gamma).to_vec();
    let scale = g.add_tensor(layer.tensor("qat_fold_scale"), shape.clone(), Kind::Input);
    let inverse = g.add_tensor(layer.tensor("qat_fold_inverse"), shape, Kind::Input);
    Ok(Some(BatchNormFold {
        layer,
        gamma,
        scale,
        inverse,
    }))
}

/// Makes the parameters of `g` that no node reads fixed constants (their values from
/// `ir`), so they are neither trained nor given optimizer state.
fn fix_unread_params(g: &mut TrainGraph, ir: &Graph) {
    let read: std::collections::HashSet<Tid> = g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().copied())
        .collect();
    let keep: Vec<bool> = g.params.iter().map(|p| read.contains(p)).collect();
    for ((&p, &ir_id), &k) in g.params.iter().zip(&g.param_ir).zip(&keep) {
        if !k {
            g.tensors[p].kind = Kind::Const(crate::train::read_params(ir, &[ir_id]).remove(0));
        }
    }
    let mut k = keep.iter();
    g.params.retain(|_| *k.next().unwrap_or(&true));
    let mut k = keep.iter();
    g.param_ir.retain(|_| *k.next().unwrap_or(&true));
}

/// The shape of rank `rank` that holds `channels` values along `axis` (1 elsewhere):
/// a per-channel vector reshaped to broadcast along a weight tensor's channel axis.
fn channel_shape(rank: usize, axis: usize, channels: usize) -> Vec<usize> {
    (0..rank)
        .map(|i| if i == axis { channels } else { 1 })
        .collect()
}

/// Appends node `op(inputs)` with a new result `name` of `shape` to `nodes`.
fn push(
    nodes: &mut Vec<TNode>,
    g: &mut TrainGraph,
    op: Op,
    inputs: &[Tid],
    name: String,
    shape: Vec<usize>,
) -> Tid {
    let output = g.add_tensor(name, shape, Kind::Activation);
    nodes.push(TNode {
        op: TOp::Ir(op),
        inputs: inputs.to_vec(),
        output,
    });
    output
}

/// The forward nodes being rewritten by [`insert`].
struct Rewrite<'a> {
    /// The tensors fake-quantized after they are computed.
    after: HashMap<Tid, &'a Point>,
    /// The fed `[scale, zero_point]` of each slot.
    qparams: Vec<Tid>,
    nodes: Vec<TNode>,
    /// Tensor → its fake-quantized twin, for later readers.
    subst: HashMap<Tid, Tid>,
    observers: Vec<(Tid, usize)>,
}

impl Rewrite<'_> {
    /// Appends layer `node` (weights operand 1, optional bias `bias`) with its batch
    /// norm's scale `fold` folded into its fake-quantized weights, the scale divided
    /// out of its result again and its bias added after that: what the batch norm
    /// after it then normalizes, reading the result through `subst`.
    fn batch_norm_layer(
        &mut self,
        g: &mut TrainGraph,
        mut node: TNode,
        w: &Weighted,
        fold: &BatchNormFold,
        bias: Option<Tid>,
    ) {
        let wt = node.inputs[1];
        let w_shape = g.shape(wt).to_vec();
        let channels = g.shape(fold.scale).iter().product::<usize>();
        let along = channel_shape(w_shape.len(), w.axis, channels);
        let name = |what: &str| format!("{}/qat_bn_fold/{what}", w.node);
        let none = kiln_codegen::ir::Activation::None;
        let nodes = &mut self.nodes;
        let per_weight = push(
            nodes,
            g,
            Op::Reshape,
            &[fold.scale],
            name("per_weight"),
            along,
        );
        let mul = Op::Mul { activation: none };
        let folded = push(
            nodes,
            g,
            mul.clone(),
            &[wt, per_weight],
            name("weights"),
            w_shape.clone(),
        );
        let wq = g.add_tensor(
            format!("{}/fake_quant", name("weights")),
            w_shape,
            Kind::Activation,
        );
        nodes.push(TNode {
            op: TOp::FakeQuantWeights { axis: w.axis },
            inputs: vec![folded],
            output: wq,
        });
        node.inputs[1] = wq;
        node.inputs.truncate(2);
        let out = node.output;
        let shape = g.shape(out).to_vec();
        nodes.push(node);
        let mut result = push(
            nodes,
            g,
            mul,
            &[out, fold.inverse],
            name("unscaled"),
            shape.clone(),
        );
        if let Some(b) = bias {
            let add = Op::Add { activation: none };
            result = push(nodes, g, add, &[result, b], name("biased"), shape);
        }
        self.subst.insert(out, result);
    }

    /// Appends the fold of `w.affine` into weights `wt` and bias `bt` as training
    /// nodes (so the folded constants' gradients reach the layer and the MUL/ADD
    /// constants): per MUL `w * s` along the weights' channel axis and `b * s`, per ADD
    /// `b + t`, the same f32 operations kiln's `fold_affine` does. Returns the folded
    /// weights and bias.
    fn fold(
        &mut self,
        g: &mut TrainGraph,
        w: &Weighted,
        mut wt: Tid,
        mut bt: Option<Tid>,
        lookup: &dyn Fn(&str) -> Result<Tid, TrainError>,
    ) -> Result<(Tid, Option<Tid>), TrainError> {
        let w_shape = g.shape(wt).to_vec();
        let channels = w_shape.get(w.axis).copied().unwrap_or(1);
        for (k, a) in w.affine.iter().enumerate() {
            let c = lookup(&a.constant)?;
            let per_channel = g.tensors[c].len() == channels;
            let values = if per_channel { channels } else { 1 };
            let along = |rank: usize, axis: usize| channel_shape(rank, axis, values);
            let name = |what: &str| format!("{}/qat_fold{k}/{what}", w.node);
            let nodes = &mut self.nodes;
            let none = kiln_codegen::ir::Activation::None;
            let (mul, add) = (Op::Mul { activation: none }, Op::Add { activation: none });
            let per_bias = |g: &mut TrainGraph, nodes: &mut Vec<TNode>| {
                push(nodes, g, Op::Reshape, &[c], name("per_bias"), along(1, 0))
            };
            if a.mul {
                let shape = along(w_shape.len(), w.axis);
                let per_weight = push(nodes, g, Op::Reshape, &[c], name("per_weight"), shape);
                wt = push(
                    nodes,
                    g,
                    mul.clone(),
                    &[wt, per_weight],
                    name("weights"),
                    w_shape.clone(),
                );
                if let Some(b) = bt {
                    let (shape, s) = (g.shape(b).to_vec(), per_bias(g, nodes));
                    bt = Some(push(nodes, g, mul, &[b, s], name("bias"), shape));
                }
            } else {
                let s = per_bias(g, nodes);
                bt = Some(match bt {
                    Some(b) => {
                        let shape = g.shape(b).to_vec();
                        push(nodes, g, add, &[b, s], name("bias"), shape)
                    }
                    // No bias yet: the constant is the bias (kiln adds it to zeros).
                    None if per_channel => s,
                    None => {
                        return Err(TrainError::Graph(format!(
                            "QAT: '{}' adds one value to every channel of '{}', which has no bias",
                            a.constant, w.node
                        )))
                    }
                });
            }
        }
        Ok((wt, bt))
    }

    /// Appends the range observation and fake quantization of `t` if it is a point.
    fn quantize_after(&mut self, g: &mut TrainGraph, t: Tid) {
        let Some(p) = self.after.get(&t) else { return };
        let (name, shape) = (g.tensors[t].name.clone(), g.shape(t).to_vec());
        if p.observe {
            let mm = g.add_tensor(format!("qat/range/{name}"), vec![2], Kind::Activation);
            self.nodes.push(TNode {
                op: TOp::MinMax,
                inputs: vec![t],
                output: mm,
            });
            self.observers.push((mm, p.slot));
        }
        let fq = g.add_tensor(format!("{name}/fake_quant"), shape, Kind::Activation);
        self.nodes.push(TNode {
            op: TOp::FakeQuant,
            inputs: vec![t, self.qparams[p.slot]],
            output: fq,
        });
        self.subst.insert(t, fq);
    }
}

/// Top-1 class of every sample through the fake-quantized graph with `qat`'s current
/// ranges, `batch` at a time (what the int8 model should predict).
pub fn predict(
    ir: &Graph,
    qat: &Qat,
    data: &Dataset,
    batch: usize,
) -> Result<Vec<usize>, TrainError> {
    let batch = batch.clamp(1, data.len().max(1));
    let classes = *ir
        .outputs
        .first()
        .and_then(|o| ir.info(*o).shape.last())
        .ok_or_else(|| TrainError::Graph("the model has no output".into()))?;
    let qparams = qat.qparams();
    let (template, _) = qat.graph(ir, 1, None)?;
    let params = crate::train::read_params(ir, &template.param_ir);
    let mut pred = Vec::with_capacity(data.len());
    let mut exec: Option<(usize, Executor)> = None;
    for start in (0..data.len()).step_by(batch) {
        let n = batch.min(data.len() - start);
        if exec.as_ref().is_none_or(|(b, _)| *b != n) {
            exec = Some((n, Executor::new(qat.graph(ir, n, None)?.0)));
        }
        let Some((_, e)) = exec.as_mut() else {
            continue;
        };
        let x = &data.images[start * data.sample_len()..][..n * data.sample_len()];
        let mut feeds: Vec<&[f32]> = vec![x];
        feeds.extend(qparams.iter().map(|p| &p[..]));
        e.run(&feeds, &params)?;
        let logits = e.value(e.graph().outputs[0]).unwrap_or(&[]);
        pred.extend(logits.chunks(classes.max(1)).map(argmax));
    }
    Ok(pred)
}

/// kiln's int8 graph of the QAT-trained float graph `ir`, quantized with the tracked
/// `ranges` ([`Qat::ranges`]) instead of calibration, then optimized: what `kiln
/// compile` would build from it.
pub fn quantize_int8(ir: &Graph, ranges: &Ranges) -> Result<Graph, TrainError> {
    let kiln = |e: &dyn std::fmt::Display| TrainError::Kiln(e.to_string());
    let float = optimized(ir)?;
    let mut int8 = quantize::quantize_with_ranges(&float, ranges, &QuantizeOptions::default())
        .map_err(|e| kiln(&e))?;
    kiln_codegen::passes::optimize(&mut int8).map_err(|e| kiln(&e))?;
    Ok(int8)
}

/// The ranges file `kiln train --qat` writes next to the weights: `[ranges]` with one
/// `"tensor name" = [lo, hi]` per int8 activation tensor.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RangesFile {
    ranges: Ranges,
}

/// Writes `ranges` as TOML (floats round-trip exactly), so the int8 model can be
/// rebuilt from the weights with [`load_ranges`] and [`quantize_int8`].
pub fn save_ranges(ranges: &Ranges, path: &std::path::Path) -> Result<(), TrainError> {
    let err = |message: String| TrainError::Weights {
        file: path.display().to_string(),
        message,
    };
    let file = RangesFile {
        ranges: ranges.clone(),
    };
    let text = toml::to_string(&file).map_err(|e| err(e.to_string()))?;
    let header = "# Activation ranges tracked by quantization-aware training (kiln train --qat).\n";
    std::fs::write(path, format!("{header}{text}")).map_err(|e| err(e.to_string()))
}

/// Reads a ranges file written by [`save_ranges`].
pub fn load_ranges(path: &std::path::Path) -> Result<Ranges, TrainError> {
    let err = |message: String| TrainError::Weights {
        file: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: RangesFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    Ok(file.ranges)
}
