//! The f32 executor of training graphs, with a memory plan that shares buffers.
//!
//! Each activation's last reader is known before running; after that node its buffer
//! goes back to a pool (by length) and the next result of that length reuses it. The
//! graph's outputs, loss and gradients are kept until the next run. [`Executor::peak_bytes`]
//! reports the most activation memory held at once.

use crate::graph::{Kind, TOp, Tid, TrainGraph};
use crate::kernels::{self as k, Window};
use crate::TrainError;
use kiln_codegen::ir::Op;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
enum Slot {
    Feed(usize),
    Param(usize),
    Const,
    Activation,
}

/// Runs one [`TrainGraph`] repeatedly.
#[derive(Debug)]
pub struct Executor {
    graph: TrainGraph,
    slots: Vec<Slot>,
    last_use: Vec<usize>,
    keep: Vec<bool>,
    values: Vec<Option<Vec<f32>>>,
    pool: HashMap<usize, Vec<Vec<f32>>>,
    held: usize,
    peak: usize,
}

impl Executor {
    /// Prepares `graph` (computes each tensor's last reader).
    pub fn new(graph: TrainGraph) -> Self {
        let n = graph.tensors.len();
        let mut slots = vec![Slot::Activation; n];
        for (i, &t) in graph.inputs.iter().enumerate() {
            slots[t] = Slot::Feed(i);
        }
        for (i, &t) in graph.params.iter().enumerate() {
            slots[t] = Slot::Param(i);
        }
        for (t, tensor) in graph.tensors.iter().enumerate() {
            if matches!(tensor.kind, Kind::Const(_)) {
                slots[t] = Slot::Const;
            }
        }
        let mut last_use = vec![usize::MAX; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            for &t in &node.inputs {
                last_use[t] = i;
            }
        }
        let mut keep = vec![false; n];
        for &t in graph.outputs.iter().chain(&graph.grads).chain(&graph.loss) {
            keep[t] = true;
        }
        for bn in &graph.batch_norms {
            keep[bn.stats] = true;
        }
        Executor {
            graph,
            slots,
            last_use,
            keep,
            values: vec![None; n],
            pool: HashMap::new(),
            held: 0,
            peak: 0,
        }
    }

    /// The graph being run.
    pub fn graph(&self) -> &TrainGraph {
        &self.graph
    }

    /// Most bytes of activations (and gradients) held at once in any run so far.
    pub fn peak_bytes(&self) -> usize {
        self.peak
    }

    /// Runs every node with `feeds` (one slice per [`TrainGraph::inputs`]) and `params`
    /// (one vector per [`TrainGraph::params`]). Results are read with [`Executor::value`].
    pub fn run(&mut self, feeds: &[&[f32]], params: &[Vec<f32>]) -> Result<(), TrainError> {
        let g = &self.graph;
        if feeds.len() != g.inputs.len() || params.len() != g.params.len() {
            return Err(TrainError::Graph(format!(
                "executor: {} feeds and {} parameters given, the graph has {} and {}",
                feeds.len(),
                params.len(),
                g.inputs.len(),
                g.params.len()
            )));
        }
        for (i, (&t, f)) in g.inputs.iter().zip(feeds).enumerate() {
            if f.len() != g.tensors[t].len() {
                return Err(TrainError::Graph(format!(
                    "executor: input {i} '{}' needs {} values, got {}",
                    g.tensors[t].name,
                    g.tensors[t].len(),
                    f.len()
                )));
            }
        }
        for (&t, p) in g.params.iter().zip(params) {
            if p.len() != g.tensors[t].len() {
                return Err(TrainError::Graph(format!(
                    "executor: parameter '{}' needs {} values, got {}",
                    g.tensors[t].name,
                    g.tensors[t].len(),
                    p.len()
                )));
            }
        }
        for t in 0..self.values.len() {
            if let Some(v) = self.values[t].take() {
                self.pool.entry(v.len()).or_default().push(v);
            }
        }
        self.held = 0;
        for i in 0..self.graph.nodes.len() {
            let out_t = self.graph.nodes[i].output;
            let len = self.graph.tensors[out_t].len();
            let mut out = match self.pool.get_mut(&len).and_then(Vec::pop) {
                Some(mut v) => {
                    v.fill(0.0);
                    v
                }
                None => vec![0.0; len],
            };
            self.held += len * 4;
            self.peak = self.peak.max(self.held);
            self.compute(i, feeds, params, &mut out)?;
            self.values[out_t] = Some(out);
            for j in 0..self.graph.nodes[i].inputs.len() {
                let t = self.graph.nodes[i].inputs[j];
                if self.last_use[t] == i && !self.keep[t] {
                    if let Some(v) = self.values[t].take() {
                        self.held -= v.len() * 4;
                        self.pool.entry(v.len()).or_default().push(v);
                    }
                }
            }
        }
        Ok(())
    }

    /// The value of a kept tensor (an output, the loss or a gradient) after [`run`](Self::run).
    pub fn value(&self, t: Tid) -> Option<&[f32]> {
        match self.graph.tensors.get(t).map(|t| &t.kind) {
            Some(Kind::Const(v)) => Some(v),
            _ => self.values.get(t).and_then(|v| v.as_deref()),
        }
    }

    fn input<'a>(&'a self, t: Tid, feeds: &'a [&[f32]], params: &'a [Vec<f32>]) -> &'a [f32] {
        match self.slots[t] {
            Slot::Feed(i) => feeds[i],
            Slot::Param(i) => &params[i],
            Slot::Const => match &self.graph.tensors[t].kind {
                Kind::Const(v) => v,
                _ => &[],
            },
            Slot::Activation => self.values[t].as_deref().unwrap_or(&[]),
        }
    }

    fn compute(
        &self,
        i: usize,
        feeds: &[&[f32]],
        params: &[Vec<f32>],
        out: &mut [f32],
    ) -> Result<(), TrainError> {
        let g = &self.graph;
        let node = &g.nodes[i];
        let arg = |k: usize| self.input(node.inputs[k], feeds, params);
        let shape = |k: usize| g.shape(node.inputs[k]);
        let opt = |k: usize| (node.inputs.len() > k).then(|| arg(k));
        let out_shape = g.shape(node.output);
        for (k, &t) in node.inputs.iter().enumerate() {
            if arg(k).len() != g.tensors[t].len() {
                return Err(TrainError::Graph(format!(
                    "executor: node {i} ({}) operand {k} '{}' has no value (graph out of order?)",
                    node.op.name(),
                    g.tensors[t].name
                )));
            }
        }
        let unary = |f: &dyn Fn(f32) -> f32, out: &mut [f32]| {
            out.iter_mut().zip(arg(0)).for_each(|(o, x)| *o = f(*x));
        };
        let masked = |f: &dyn Fn(f32, f32) -> f32, out: &mut [f32]| {
            out.iter_mut()
                .zip(arg(0).iter().zip(arg(1)))
                .for_each(|(o, (v, d))| *o = f(*v, *d));
        };
        match &node.op {
            TOp::Ir(Op::Conv2d(a)) => {
                let f = shape(1);
                let w = Window::new(
                    shape(0),
                    out_shape,
                    [f[1], f[2]],
                    a.stride,
                    a.dilation,
                    a.padding,
                );
                k::conv2d(&w, arg(0), arg(1), opt(2), out);
            }
            TOp::Conv2dGradInput(a) => {
                let f = shape(1);
                let w = Window::new(
                    out_shape,
                    shape(0),
                    [f[1], f[2]],
                    a.stride,
                    a.dilation,
                    a.padding,
                );
                k::conv2d_grad_input(&w, arg(0), arg(1), out);
            }
            TOp::Conv2dGradFilter(a) => {
                let w = Window::new(
                    shape(0),
                    shape(1),
                    [out_shape[1], out_shape[2]],
                    a.stride,
                    a.dilation,
                    a.padding,
                );
                k::conv2d_grad_filter(&w, arg(0), arg(1), out);
            }
            TOp::Ir(Op::DepthwiseConv2d(a)) => {
                let f = shape(1);
                let w = Window::new(
                    shape(0),
                    out_shape,
                    [f[1], f[2]],
                    a.stride,
                    a.dilation,
                    a.padding,
                );
                k::depthwise(&w, arg(0), arg(1), opt(2), out);
            }
            TOp::DepthwiseGradInput(a) => {
                let f = shape(1);
                let w = Window::new(
                    out_shape,
                    shape(0),
                    [f[1], f[2]],
                    a.stride,
                    a.dilation,
                    a.padding,
                );
                k::depthwise_grad_input(&w, arg(0), arg(1), out);
            }
            TOp::DepthwiseGradFilter(a) => {
                let w = Window::new(
                    shape(0),
                    shape(1),
                    [out_shape[1], out_shape[2]],
                    a.stride,
                    a.dilation,
                    a.padding,
                );
                k::depthwise_grad_filter(&w, arg(0), arg(1), out);
            }
            TOp::Ir(Op::FullyConnected { .. }) => k::fc(arg(0), arg(1), opt(2), out, shape(1)[0]),
            TOp::FcGradInput => k::fc_grad_input(arg(0), arg(1), out, shape(1)[0]),
            TOp::FcGradWeights => k::fc_grad_weights(arg(0), arg(1), out, out_shape[0]),
            TOp::BiasGrad => k::bias_grad(arg(0), out),
            TOp::Ir(Op::MaxPool2d(a)) => {
                let w = Window::new(shape(0), out_shape, a.filter, a.stride, [1, 1], a.padding);
                k::max_pool(&w, arg(0), out);
            }
            TOp::MaxPoolGrad(a) => {
                let w = Window::new(shape(0), shape(1), a.filter, a.stride, [1, 1], a.padding);
                k::max_pool_grad(&w, arg(0), arg(1), out);
            }
            TOp::Ir(Op::AveragePool2d(a)) => {
                let w = Window::new(shape(0), out_shape, a.filter, a.stride, [1, 1], a.padding);
                k::avg_pool(&w, arg(0), out);
            }
            TOp::AvgPoolGrad(a) => {
                let w = Window::new(out_shape, shape(0), a.filter, a.stride, [1, 1], a.padding);
                k::avg_pool_grad(&w, arg(0), out);
            }
            TOp::Ir(Op::Mean { axes, .. }) => {
                let s = shape(0);
                let map = k::index_map(s, &k::reduce_strides(s, axes));
                let count: usize = axes.iter().map(|&a| s[a]).product();
                for (x, &m) in arg(0).iter().zip(&map) {
                    out[m] += x;
                }
                out.iter_mut().for_each(|o| *o /= count.max(1) as f32);
            }
            TOp::MeanGrad { axes } => {
                let map = k::index_map(out_shape, &k::reduce_strides(out_shape, axes));
                let count: usize = axes.iter().map(|&a| out_shape[a]).product();
                let dy = arg(0);
                for (o, &m) in out.iter_mut().zip(&map) {
                    *o = dy[m] / count.max(1) as f32;
                }
            }
            TOp::ReduceTo => {
                let map = k::index_map(shape(0), &k::broadcast_strides(shape(0), out_shape));
                for (d, &m) in arg(0).iter().zip(&map) {
                    out[m] += d;
                }
            }
            TOp::Ir(Op::Add { .. }) => k::broadcast(
                arg(0),
                shape(0),
                arg(1),
                shape(1),
                out_shape,
                out,
                |a, b| a + b,
            ),
            TOp::Ir(Op::Mul { .. }) => k::broadcast(
                arg(0),
                shape(0),
                arg(1),
                shape(1),
                out_shape,
                out,
                |a, b| a * b,
            ),
            TOp::Ir(Op::Reshape) => out.copy_from_slice(arg(0)),
            TOp::Ir(Op::Concatenation { axis, .. }) => {
                let parts: Vec<(&[f32], &[usize])> =
                    (0..node.inputs.len()).map(|k| (arg(k), shape(k))).collect();
                k::concat(&parts, *axis, out);
            }
            TOp::Slice { axis, start } => k::slice(arg(0), shape(0), *axis, *start, out, out_shape),
            TOp::Ir(Op::Relu) => unary(&|x| x.max(0.0), out),
            TOp::Ir(Op::Relu6) => unary(&|x| x.clamp(0.0, 6.0), out),
            TOp::Ir(Op::LeakyRelu { alpha }) => {
                unary(&|x| if x >= 0.0 { x } else { alpha * x }, out)
            }
            TOp::Ir(Op::Logistic) => unary(&|x| 1.0 / (1.0 + (-x).exp()), out),
            TOp::Ir(Op::Tanh) => unary(&f32::tanh, out),
            TOp::ReluGrad => masked(&|y, d| if y > 0.0 { d } else { 0.0 }, out),
            TOp::Relu6Grad => masked(&|x, d| if x > 0.0 && x < 6.0 { d } else { 0.0 }, out),
            TOp::LeakyReluGrad { alpha } => {
                masked(&|x, d| if x >= 0.0 { d } else { alpha * d }, out)
            }
            TOp::SigmoidGrad => masked(&|y, d| d * y * (1.0 - y), out),
            TOp::TanhGrad => masked(&|y, d| d * (1.0 - y * y), out),
            TOp::Ir(Op::Softmax { beta }) => {
                k::softmax(arg(0), *shape(0).last().unwrap_or(&1), *beta, out)
            }
            TOp::SoftmaxCrossEntropy => {
                out[0] = k::softmax_cross_entropy(arg(0), arg(1), shape(0)[1]);
            }
            TOp::SoftmaxCrossEntropyGrad => {
                k::softmax_cross_entropy_grad(arg(0), arg(1), shape(0)[1], arg(2)[0], out)
            }
            TOp::Mse => {
                let n = arg(0).len().max(1) as f64;
                let s: f64 = arg(0)
                    .iter()
                    .zip(arg(1))
                    .map(|(p, t)| ((p - t) as f64).powi(2))
                    .sum();
                out[0] = (s / n) as f32;
            }
            TOp::MseGrad => {
                let scale = 2.0 * arg(2)[0] / arg(0).len().max(1) as f32;
                out.iter_mut()
                    .zip(arg(0).iter().zip(arg(1)))
                    .for_each(|(o, (p, t))| *o = (p - t) * scale);
            }
            TOp::BatchNormStats => k::batch_norm_stats(arg(0), shape(0)[0], out),
            TOp::BatchNormTrain { eps } => k::batch_norm(arg(0), arg(1), arg(2), arg(3), *eps, out),
            TOp::BatchNormGradInput { eps } => {
                k::batch_norm_grad_input(arg(0), arg(1), arg(2), arg(3), shape(0)[0], *eps, out)
            }
            TOp::BatchNormGradGamma { eps } => {
                k::batch_norm_grad_gamma(arg(0), arg(1), arg(2), shape(0)[0], *eps, out)
            }
            TOp::Dropout => k::dropout(arg(0), arg(1), out),
            TOp::Ir(other) => {
                return Err(TrainError::Graph(format!(
                    "executor: no f32 training kernel for {}",
                    other.name()
                )))
            }
        }
        Ok(())
    }
}
