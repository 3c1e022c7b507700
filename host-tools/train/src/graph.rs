//! The training graph: kiln IR forward ops instantiated for a batch, a loss, and the
//! gradient nodes reverse-mode AD adds ([`crate::autodiff`]).
//!
//! Forward nodes carry the kiln [`Op`] they came from unchanged (`TOp::Ir`), so the
//! forward half of a training graph maps 1:1 onto the kiln [`Graph`] it was built from;
//! backward nodes use training-only ops ([`TOp`]'s other variants). The exceptions are
//! batch norm and dropout in training mode ([`crate::layers`]), whose forward nodes are
//! training-only ops too. Every tensor has a
//! static shape: activations are the IR's batch-1 shapes with dimension 0 replaced by
//! the batch size, parameters keep their IR shapes.

use crate::layers::{BatchNormFold, BatchNormStep, DropoutMask};
use crate::TrainError;
use kiln_codegen::ir::{
    Activation, Conv2dAttrs, DType, DepthwiseConv2dAttrs, Graph, Op, Pool2dAttrs, TensorId,
};

/// Index of a tensor in [`TrainGraph::tensors`].
pub type Tid = usize;

/// Where a tensor's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Fed by the caller on every run (images, labels).
    Input,
    /// A trainable parameter, fed from the parameter store.
    Param,
    /// A fixed value (e.g. the seed gradient 1.0 of the loss).
    Const(Vec<f32>),
    /// Computed by a node.
    Activation,
}

/// One tensor of the training graph.
#[derive(Debug, Clone, PartialEq)]
pub struct TTensor {
    /// Name (the IR tensor's, or `grad/<name>` for adjoints).
    pub name: String,
    /// Static shape, batch included.
    pub shape: Vec<usize>,
    /// Where the value comes from.
    pub kind: Kind,
}

impl TTensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a tensor without elements (never produced by the builders).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An operator of the training graph: a kiln IR op (forward, kiln semantics in f32), a
/// loss, or a training-only gradient op. Operands are listed on each variant.
#[derive(Debug, Clone, PartialEq)]
pub enum TOp {
    /// A forward kiln op with kiln's operand order; fused activations must be `None`.
    Ir(Op),
    /// `[logits [N, C], one-hot labels [N, C]] -> [loss [1]]`: mean over the batch of
    /// `-sum(labels * log_softmax(logits))`.
    SoftmaxCrossEntropy,
    /// `[prediction, target] -> [loss [1]]`: mean of the squared difference.
    Mse,
    /// `[logits, labels, dloss] -> [dlogits]`.
    SoftmaxCrossEntropyGrad,
    /// `[prediction, target, dloss] -> [dprediction]`.
    MseGrad,
    /// `[dy NHWC, filter OHWI] -> [dx NHWC]` (shape of the output tensor).
    Conv2dGradInput(Conv2dAttrs),
    /// `[x NHWC, dy NHWC] -> [dfilter OHWI]`.
    Conv2dGradFilter(Conv2dAttrs),
    /// `[dy NHWC, filter [1, H, W, C*M]] -> [dx NHWC]`.
    DepthwiseGradInput(DepthwiseConv2dAttrs),
    /// `[x NHWC, dy NHWC] -> [dfilter [1, H, W, C*M]]`.
    DepthwiseGradFilter(DepthwiseConv2dAttrs),
    /// `[dy [N, O], weights [O, I]] -> [dx]` (dx has the forward input's shape).
    FcGradInput,
    /// `[x [N, I], dy [N, O]] -> [dweights [O, I]]`.
    FcGradWeights,
    /// `[dy [.., C]] -> [dbias [C]]`: sum over every axis but the last.
    BiasGrad,
    /// `[x NHWC, dy NHWC] -> [dx]`: `dy` routed to the first maximum of each window.
    MaxPoolGrad(Pool2dAttrs),
    /// `[dy NHWC] -> [dx]`: `dy` spread over each window's in-bounds elements.
    AvgPoolGrad(Pool2dAttrs),
    /// `[dy] -> [dx]`: the gradient of MEAN over `axes` (broadcast and divided).
    MeanGrad {
        /// The forward op's reduced axes.
        axes: Vec<usize>,
    },
    /// `[y, dy] -> [dx]`: `dy` where `y > 0`.
    ReluGrad,
    /// `[x, dy] -> [dx]`: `dy` where `0 < x < 6`.
    Relu6Grad,
    /// `[x, dy] -> [dx]`: `dy`, times `alpha` where `x < 0`.
    LeakyReluGrad {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `[y, dy] -> [dx]`: `dy * y * (1 - y)`.
    SigmoidGrad,
    /// `[y, dy] -> [dx]`: `dy * (1 - y^2)`.
    TanhGrad,
    /// `[dy] -> [dx]`: sums a broadcast result back to the (smaller) output shape.
    ReduceTo,
    /// `[x] -> [y]`: the slice `start..start + y.shape[axis]` of `x` along `axis` (the
    /// gradient of CONCATENATION).
    Slice {
        /// The sliced axis.
        axis: usize,
        /// First index taken.
        start: usize,
    },
    /// `[x, qparams [2]] -> [y]`: fake quantization for quantization-aware training
    /// ([`crate::qat`]): `x` quantized to int8 with `qparams = [scale, zero_point]` as
    /// kiln's QUANTIZE kernel does, then dequantized. A scale of 0 passes `x` through
    /// (used while no range is known yet).
    FakeQuant,
    /// `[x, qparams, dy] -> [dx]`: the straight-through estimator of [`TOp::FakeQuant`]:
    /// `dy` where `x` quantizes inside the int8 range, 0 where it is clipped.
    FakeQuantGrad,
    /// `[w] -> [w']`: weights quantized as kiln's quantizer does (symmetric int8, one
    /// scale `max|w| / 127` per channel along `axis`) and dequantized; its gradient is
    /// the identity (straight-through: nothing is clipped).
    FakeQuantWeights {
        /// The output-channel axis (0 for conv and dense filters, 3 for depthwise).
        axis: usize,
    },
    /// `[b, w, qparams_in] -> [b']`: a bias rounded to kiln's int32 bias, of scale
    /// `input_scale × weight_scale` per channel of `w` along `axis`; gradient identity.
    FakeQuantBias {
        /// The weights' output-channel axis.
        axis: usize,
    },
    /// `[x] -> [2]`: the minimum and maximum of `x` (QAT range observation; no gradient).
    MinMax,
    /// `[x [.., C]] -> [stats [2, C]]`: batch mean and biased variance per channel (over
    /// every axis but the last); see [`crate::layers`].
    BatchNormStats,
    /// `[x, stats, gamma [C], beta [C]] -> [y]`: `gamma * (x - mean) / sqrt(var + eps) + beta`
    /// with the batch statistics. Its gradient rule gives the total derivative of `x`
    /// (through the statistics too), so `stats` gets no adjoint.
    BatchNormTrain {
        /// Added to the variance.
        eps: f32,
    },
    /// `[x, stats, gamma, dy] -> [dx]`: the input gradient of [`TOp::BatchNormTrain`].
    BatchNormGradInput {
        /// Added to the variance.
        eps: f32,
    },
    /// `[x, stats, dy] -> [dgamma [C]]`: `sum(dy * normalized x)` per channel.
    BatchNormGradGamma {
        /// Added to the variance.
        eps: f32,
    },
    /// `[x, mask] -> [x * mask]`: dropout by a fed mask; also its own gradient
    /// (`[dy, mask] -> [dx]`).
    Dropout,
}

impl TOp {
    /// Short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            TOp::Ir(op) => op.name(),
            TOp::SoftmaxCrossEntropy => "softmax_cross_entropy",
            TOp::Mse => "mse",
            TOp::SoftmaxCrossEntropyGrad => "softmax_cross_entropy_grad",
            TOp::MseGrad => "mse_grad",
            TOp::Conv2dGradInput(_) => "conv_2d_grad_input",
            TOp::Conv2dGradFilter(_) => "conv_2d_grad_filter",
            TOp::DepthwiseGradInput(_) => "depthwise_conv_2d_grad_input",
            TOp::DepthwiseGradFilter(_) => "depthwise_conv_2d_grad_filter",
            TOp::FcGradInput => "fully_connected_grad_input",
            TOp::FcGradWeights => "fully_connected_grad_weights",
            TOp::BiasGrad => "bias_grad",
            TOp::MaxPoolGrad(_) => "max_pool_2d_grad",
            TOp::AvgPoolGrad(_) => "average_pool_2d_grad",
            TOp::MeanGrad { .. } => "mean_grad",
            TOp::ReluGrad => "relu_grad",
            TOp::Relu6Grad => "relu6_grad",
            TOp::LeakyReluGrad { .. } => "leaky_relu_grad",
            TOp::SigmoidGrad => "logistic_grad",
            TOp::TanhGrad => "tanh_grad",
            TOp::ReduceTo => "reduce_to",
            TOp::Slice { .. } => "slice",
            TOp::FakeQuant => "fake_quant",
            TOp::FakeQuantGrad => "fake_quant_grad",
            TOp::FakeQuantWeights { .. } => "fake_quant_weights",
            TOp::FakeQuantBias { .. } => "fake_quant_bias",
            TOp::MinMax => "min_max",
            TOp::BatchNormStats => "batch_norm_stats",
            TOp::BatchNormTrain { .. } => "batch_norm_train",
            TOp::BatchNormGradInput { .. } => "batch_norm_grad_input",
            TOp::BatchNormGradGamma { .. } => "batch_norm_grad_gamma",
            TOp::Dropout => "dropout",
        }
    }
}

/// One node: an op, its operands and its single result.
#[derive(Debug, Clone, PartialEq)]
pub struct TNode {
    /// The operator.
    pub op: TOp,
    /// Operand tensors.
    pub inputs: Vec<Tid>,
    /// Result tensor.
    pub output: Tid,
}

/// A loss appended to the forward graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Softmax cross-entropy against one-hot labels (classification).
    SoftmaxCrossEntropy,
    /// Mean squared error against targets of the output's shape (regression).
    Mse,
}

/// A training graph: nodes in topological order over statically shaped tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainGraph {
    /// All tensors.
    pub tensors: Vec<TTensor>,
    /// Nodes, every operand produced before use.
    pub nodes: Vec<TNode>,
    /// Fed tensors in order: the IR graph's inputs, then the loss target if any, then
    /// the dropout masks ([`TrainGraph::dropouts`]); with quantization-aware training
    /// then the fake-quantization parameters and the batch-norm fold scales
    /// ([`TrainGraph::bn_folds`]).
    pub inputs: Vec<Tid>,
    /// Trainable parameters, in IR tensor order.
    pub params: Vec<Tid>,
    /// For each parameter, the IR tensor it came from.
    pub param_ir: Vec<TensorId>,
    /// The IR graph's outputs (e.g. logits).
    pub outputs: Vec<Tid>,
    /// The loss, once added.
    pub loss: Option<Tid>,
    /// The gradient of each parameter (same order as `params`), once differentiated.
    pub grads: Vec<Tid>,
    /// Number of forward nodes (IR nodes and the loss); gradient nodes follow.
    pub forward_len: usize,
    /// Batch norms in training mode; their statistics are kept after a run.
    pub batch_norms: Vec<BatchNormStep>,
    /// Dropouts and their fed masks, in feed order.
    pub dropouts: Vec<DropoutMask>,
    /// Quantization-aware training: batch norms folded into the fake-quantized weights
    /// of the layer before them, with their fed fold scales, in feed order (after the
    /// fake-quantization parameters).
    pub bn_folds: Vec<BatchNormFold>,
}

impl TrainGraph {
    /// The tensors whose values outlive a run (read after it): the outputs, the loss,
    /// the gradients and the batch norms' statistics (for the running averages).
    pub fn kept(&self) -> impl Iterator<Item = Tid> + '_ {
        self.outputs
            .iter()
            .chain(&self.loss)
            .chain(&self.grads)
            .copied()
            .chain(self.batch_norms.iter().map(|b| b.stats))
    }

    /// Adds a tensor and returns its id.
    pub fn add_tensor(&mut self, name: impl Into<String>, shape: Vec<usize>, kind: Kind) -> Tid {
        self.tensors.push(TTensor {
            name: name.into(),
            shape,
            kind,
        });
        self.tensors.len() - 1
    }

    /// Adds a node producing a new activation of `shape`; returns the result's id.
    pub fn add_node(
        &mut self,
        op: TOp,
        inputs: Vec<Tid>,
        name: impl Into<String>,
        shape: Vec<usize>,
    ) -> Tid {
        let output = self.add_tensor(name, shape, Kind::Activation);
        self.nodes.push(TNode { op, inputs, output });
        output
    }

    /// Shape of a tensor.
    pub fn shape(&self, t: Tid) -> &[usize] {
        &self.tensors[t].shape
    }

    /// Instantiates a float kiln IR graph for `batch` samples. Every float constant of
    /// `ir` becomes a trainable parameter; activations must have batch dimension 1, which
    /// becomes `batch`. Nodes with a fused activation or without an f32 kernel here are
    /// refused, naming the node.
    pub fn from_ir(ir: &Graph, batch: usize) -> Result<Self, TrainError> {
        if batch == 0 {
            return Err(TrainError::Graph("batch size must be at least 1".into()));
        }
        ir.validate()
            .map_err(|e| TrainError::Graph(format!("invalid kiln graph: {e}")))?;
        let mut g = TrainGraph::default();
        let mut map = vec![usize::MAX; ir.tensors.len()];
        for (i, t) in ir.tensors.iter().enumerate() {
            if t.info.dtype != DType::F32 {
                return Err(TrainError::Graph(format!(
                    "tensor '{}' is {}; training needs a float32 graph",
                    t.name,
                    t.info.dtype.name()
                )));
            }
            let (shape, kind) = if t.data.is_some() {
                (t.info.shape.clone(), Kind::Param)
            } else {
                let mut shape = t.info.shape.clone();
                if shape.first() != Some(&1) {
                    return Err(TrainError::Graph(format!(
                        "activation '{}' has shape {:?}; the first dimension must be the batch (1)",
                        t.name, t.info.shape
                    )));
                }
                shape[0] = batch;
                (shape, Kind::Activation)
            };
            let id = g.add_tensor(t.name.clone(), shape, kind.clone());
            if kind == Kind::Param {
                g.params.push(id);
                g.param_ir.push(TensorId(i));
            }
            map[i] = id;
        }
        for id in &ir.inputs {
            g.tensors[map[id.0]].kind = Kind::Input;
            g.inputs.push(map[id.0]);
        }
        for node in &ir.nodes {
            check_trainable(&node.op).map_err(|m| {
                TrainError::Graph(format!("node '{}' ({}): {m}", node.name, node.op.name()))
            })?;
            if node.outputs.len() != 1 {
                return Err(TrainError::Graph(format!(
                    "node '{}' has {} results; training ops have one",
                    node.name,
                    node.outputs.len()
                )));
            }
            g.nodes.push(TNode {
                op: TOp::Ir(node.op.clone()),
                inputs: node.inputs.iter().map(|t| map[t.0]).collect(),
                output: map[node.outputs[0].0],
            });
        }
        g.outputs = ir.outputs.iter().map(|t| map[t.0]).collect();
        g.forward_len = g.nodes.len();
        Ok(g)
    }

    /// Appends `loss` on the first output and a fed target tensor (one-hot labels or
    /// regression targets of the output's shape); returns the loss tensor.
    pub fn add_loss(&mut self, loss: Loss) -> Result<Tid, TrainError> {
        let Some(&out) = self.outputs.first() else {
            return Err(TrainError::Graph("the graph has no output".into()));
        };
        let shape = self.shape(out).to_vec();
        let (op, name) = match loss {
            Loss::SoftmaxCrossEntropy => {
                if shape.len() != 2 {
                    return Err(TrainError::Graph(format!(
                        "softmax cross-entropy needs logits [batch, classes], the output is {shape:?}"
                    )));
                }
                (TOp::SoftmaxCrossEntropy, "softmax_cross_entropy")
            }
            Loss::Mse => (TOp::Mse, "mse"),
        };
        let target = self.add_tensor("target", shape, Kind::Input);
        let at = self.inputs.len() - self.dropouts.len();
        self.inputs.insert(at, target);
        let l = self.add_node(op, vec![out, target], name, vec![1]);
        self.loss = Some(l);
        self.forward_len = self.nodes.len();
        Ok(l)
    }
}

fn check_trainable(op: &Op) -> Result<(), String> {
    let fused = |a: Activation| {
        if a == Activation::None {
            Ok(())
        } else {
            Err("fused activations are not trained; use a separate activation op".to_string())
        }
    };
    match op {
        Op::Conv2d(a) => {
            if a.residual.is_some() {
                return Err("fused residual adds are not trained".into());
            }
            fused(a.activation)
        }
        Op::DepthwiseConv2d(a) => fused(a.activation),
        Op::FullyConnected { activation, .. } => fused(*activation),
        Op::AveragePool2d(a) | Op::MaxPool2d(a) => fused(a.activation),
        Op::Add { activation } | Op::Mul { activation } => fused(*activation),
        Op::Concatenation { activation, .. } => fused(*activation),
        Op::Reshape
        | Op::Mean { .. }
        | Op::Relu
        | Op::Relu6
        | Op::LeakyRelu { .. }
        | Op::Logistic
        | Op::Tanh
        | Op::Softmax { .. } => Ok(()),
        other => Err(format!("{} has no f32 training kernel", other.name())),
    }
}
