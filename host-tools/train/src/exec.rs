//! The f32 executor of training graphs, running out of one arena laid out by a static
//! memory plan ([`crate::plan`]).
//!
//! The plan is computed once, when the executor is made: the order of the steps (with
//! gradient checkpointing, forward nodes run again in the backward pass), the elements
//! of the arena each result is written to, and where each operand is read from. A run
//! allocates nothing: each step splits the arena around its result (`split_at_mut`), so
//! operands are read from the parts before and after it; the plan never places an
//! operand alive at a step over that step's result, except for the one operand an
//! in-place step overwrites, which its kernel then reads from the result itself. The
//! graph's outputs, loss and gradients are kept until the next run.

use crate::graph::{Kind, TOp, Tid, TrainGraph};
use crate::kernels::{self as k, Window};
use crate::plan::{Checkpointing, Loc, MemoryPlan, MemoryReport, Step};
use crate::qat;
use crate::TrainError;
use kiln_codegen::ir::Op;

/// Runs one [`TrainGraph`] repeatedly.
#[derive(Debug)]
pub struct Executor {
    graph: TrainGraph,
    plan: MemoryPlan,
    arena: Vec<f32>,
    ran: bool,
}

impl Executor {
    /// Prepares `graph` with a memory plan without checkpointing.
    pub fn new(graph: TrainGraph) -> Self {
        Self::with_checkpointing(graph, Checkpointing::Off)
    }

    /// Prepares `graph` with a memory plan that recomputes forward activations as
    /// `checkpointing` says (results are bit-identical to [`Executor::new`]'s).
    pub fn with_checkpointing(graph: TrainGraph, checkpointing: Checkpointing) -> Self {
        let plan = MemoryPlan::new(&graph, checkpointing);
        Self::with_plan(graph, plan)
    }

    /// Prepares `graph` to run with `plan`, which must have been made for it.
    pub fn with_plan(graph: TrainGraph, plan: MemoryPlan) -> Self {
        Executor {
            arena: vec![0.0; plan.arena_len],
            graph,
            plan,
            ran: false,
        }
    }

    /// The graph being run.
    pub fn graph(&self) -> &TrainGraph {
        &self.graph
    }

    /// The memory plan: steps, arena size, and how it compares with no sharing and
    /// with the lower bound.
    pub fn memory(&self) -> &MemoryReport {
        &self.plan.report
    }

    /// Bytes of activations and gradients of a run: the planned arena.
    pub fn peak_bytes(&self) -> usize {
        self.plan.report.arena_bytes
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
        self.ran = false;
        for step in &self.plan.steps {
            let (before, rest) = self.arena.split_at_mut(step.out.start);
            let (out, after) = rest.split_at_mut(step.out.len());
            let ops = Operands {
                graph: g,
                step,
                before,
                after,
                feeds,
                params,
            };
            if step.in_place.is_none() {
                out.fill(0.0);
            }
            ops.compute(out)?;
        }
        self.ran = true;
        Ok(())
    }

    /// The value of a kept tensor (an output, the loss or a gradient) after [`run`](Self::run).
    pub fn value(&self, t: Tid) -> Option<&[f32]> {
        match self.graph.tensors.get(t).map(|t| &t.kind) {
            Some(Kind::Const(v)) => Some(v),
            _ if !self.ran => None,
            _ => self
                .plan
                .kept
                .get(t)
                .and_then(|r| r.clone())
                .map(|r| &self.arena[r]),
        }
    }
}

/// The operands of one step: the arena before and after its result, the feeds and the
/// parameters.
struct Operands<'a> {
    graph: &'a TrainGraph,
    step: &'a Step,
    before: &'a [f32],
    after: &'a [f32],
    feeds: &'a [&'a [f32]],
    params: &'a [Vec<f32>],
}

impl<'a> Operands<'a> {
    /// Operand `k`; empty when it has no value (the step's own in-place operand, which
    /// the kernel reads from the result, or an activation the plan could not find).
    fn get(&self, k: usize) -> &'a [f32] {
        let out = &self.step.out;
        match &self.step.inputs[k] {
            Loc::Feed(i) => self.feeds[*i],
            Loc::Param(i) => &self.params[*i],
            Loc::Const(t) => match &self.graph.tensors[*t].kind {
                Kind::Const(v) => v,
                _ => &[],
            },
            _ if self.step.in_place == Some(k) => &[],
            Loc::Arena(r) if r.end <= out.start => &self.before[r.clone()],
            Loc::Arena(r) if r.start >= out.end => &self.after[r.start - out.end..r.end - out.end],
            Loc::Arena(_) | Loc::Missing => &[],
        }
    }
}

/// `out[i] = f(x[i])`; with `x` `None` the step runs in place and `out` holds `x`.
/// Generic, so `f` is inlined and the loop vectorizes where `f` allows.
#[inline]
fn map1(out: &mut [f32], x: Option<&[f32]>, f: impl Fn(f32) -> f32) {
    match x {
        Some(x) => out.iter_mut().zip(x).for_each(|(o, x)| *o = f(*x)),
        None => out.iter_mut().for_each(|o| *o = f(*o)),
    }
}

/// `out[i] = f(a[i], d[i])`; with `d` `None` the step runs in place and `out` holds `d`.
#[inline]
fn map2(out: &mut [f32], a: &[f32], d: Option<&[f32]>, f: impl Fn(f32, f32) -> f32) {
    match d {
        Some(d) => out
            .iter_mut()
            .zip(a.iter().zip(d))
            .for_each(|(o, (a, d))| *o = f(*a, *d)),
        None => out.iter_mut().zip(a).for_each(|(o, a)| *o = f(*a, *o)),
    }
}

/// A shape and its values.
type Shaped<'s> = (&'s [f32], &'s [usize]);

/// `out = f(a, b)` with broadcasting; in place (`in_place` the overwritten operand,
/// whose values `out` holds) the shapes are equal.
#[inline]
fn binary(
    out: &mut [f32],
    in_place: Option<usize>,
    ((a, sa), (b, sb), out_shape): (Shaped, Shaped, &[usize]),
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    match in_place {
        Some(0) => map2(out, b, None, |b, o| f(o, b)),
        Some(_) => map2(out, a, None, f),
        None => k::broadcast(a, sa, b, sb, out_shape, out, f),
    }
}

impl Operands<'_> {
    /// Runs the step's node, writing `out` (zeroed, or for an in-place step holding the
    /// overwritten operand): one match arm per op.
    fn compute(&self, out: &mut [f32]) -> Result<(), TrainError> {
        let g = self.graph;
        let i = self.step.node;
        let node = &g.nodes[i];
        let arg = |k: usize| self.get(k);
        let shape = |k: usize| g.shape(node.inputs[k]);
        let opt = |k: usize| (node.inputs.len() > k).then(|| arg(k));
        let out_shape = g.shape(node.output);
        let in_place = self.step.in_place;
        for (k, &t) in node.inputs.iter().enumerate() {
            if in_place != Some(k) && arg(k).len() != g.tensors[t].len() {
                return Err(TrainError::Graph(format!(
                    "executor: node {i} ({}) operand {k} '{}' has no value (graph out of order?)",
                    node.op.name(),
                    g.tensors[t].name
                )));
            }
        }
        // The elementwise kernels below also run in place (see `plan::in_place_operand`):
        // then `out` already holds the overwritten operand, and `src` gives `None`.
        let src = |k: usize| in_place.is_none().then(|| arg(k));
        let operands = || ((arg(0), shape(0)), (arg(1), shape(1)), out_shape);
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
                let count: usize = axes.iter().map(|&a| s[a]).product();
                if let Some((_, reduced, inner)) = k::contiguous_axes(s, axes) {
                    // Same order of additions as the index map below, without it.
                    for (xo, oo) in arg(0)
                        .chunks(reduced * inner)
                        .zip(out.chunks_mut(inner.max(1)))
                    {
                        for xr in xo.chunks(inner.max(1)) {
                            oo.iter_mut().zip(xr).for_each(|(o, x)| *o += x);
                        }
                    }
                } else {
                    let map = k::index_map(s, &k::reduce_strides(s, axes));
                    for (x, &m) in arg(0).iter().zip(&map) {
                        out[m] += x;
                    }
                }
                out.iter_mut().for_each(|o| *o /= count.max(1) as f32);
            }
            TOp::MeanGrad { axes } => {
                let count: usize = axes.iter().map(|&a| out_shape[a]).product();
                let dy = arg(0);
                if let Some((_, reduced, inner)) = k::contiguous_axes(out_shape, axes) {
                    for (oo, dyo) in out.chunks_mut(reduced * inner).zip(dy.chunks(inner.max(1))) {
                        for orow in oo.chunks_mut(inner.max(1)) {
                            orow.iter_mut()
                                .zip(dyo)
                                .for_each(|(o, d)| *o = d / count.max(1) as f32);
                        }
                    }
                } else {
                    let map = k::index_map(out_shape, &k::reduce_strides(out_shape, axes));
                    for (o, &m) in out.iter_mut().zip(&map) {
                        *o = dy[m] / count.max(1) as f32;
                    }
                }
            }
            TOp::ReduceTo => {
                if k::repeats(shape(0), out_shape) && !out.is_empty() {
                    // Same order of additions as the index map below, without it.
                    for dc in arg(0).chunks(out.len()) {
                        out.iter_mut().zip(dc).for_each(|(o, d)| *o += d);
                    }
                } else {
                    let map = k::index_map(shape(0), &k::broadcast_strides(shape(0), out_shape));
                    for (d, &m) in arg(0).iter().zip(&map) {
                        out[m] += d;
                    }
                }
            }
            TOp::Ir(Op::Add { .. }) => binary(out, in_place, operands(), |a, b| a + b),
            TOp::Ir(Op::Mul { .. }) => binary(out, in_place, operands(), |a, b| a * b),
            TOp::Ir(Op::Reshape) => {
                if in_place.is_none() {
                    out.copy_from_slice(arg(0))
                }
            }
            TOp::Ir(Op::Concatenation { axis, .. }) => {
                let parts: Vec<(&[f32], &[usize])> =
                    (0..node.inputs.len()).map(|k| (arg(k), shape(k))).collect();
                k::concat(&parts, *axis, out);
            }
            TOp::Slice { axis, start } => k::slice(arg(0), shape(0), *axis, *start, out, out_shape),
            TOp::Ir(Op::Relu) => map1(out, src(0), |x| x.max(0.0)),
            TOp::Ir(Op::Relu6) => map1(out, src(0), |x| x.clamp(0.0, 6.0)),
            TOp::Ir(Op::LeakyRelu { alpha }) => {
                map1(out, src(0), |x| if x >= 0.0 { x } else { alpha * x })
            }
            TOp::Ir(Op::Logistic) => map1(out, src(0), |x| 1.0 / (1.0 + (-x).exp())),
            TOp::Ir(Op::Tanh) => map1(out, src(0), f32::tanh),
            TOp::ReluGrad => map2(out, arg(0), src(1), |y, d| if y > 0.0 { d } else { 0.0 }),
            TOp::Relu6Grad => map2(out, arg(0), src(1), |x, d| {
                if x > 0.0 && x < 6.0 {
                    d
                } else {
                    0.0
                }
            }),
            TOp::LeakyReluGrad { alpha } => {
                map2(
                    out,
                    arg(0),
                    src(1),
                    |x, d| if x >= 0.0 { d } else { alpha * d },
                )
            }
            TOp::SigmoidGrad => map2(out, arg(0), src(1), |y, d| d * y * (1.0 - y)),
            TOp::TanhGrad => map2(out, arg(0), src(1), |y, d| d * (1.0 - y * y)),
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
            TOp::FakeQuant => qat::fake_quant(arg(0), arg(1), out),
            TOp::FakeQuantGrad => qat::fake_quant_grad(arg(0), arg(1), arg(2), out),
            TOp::FakeQuantWeights { axis } => qat::fake_quant_weights(arg(0), shape(0), *axis, out),
            TOp::FakeQuantBias { axis } => {
                qat::fake_quant_bias(arg(0), arg(1), shape(1), *axis, arg(2), out)
            }
            TOp::MinMax => qat::min_max(arg(0), out),
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
