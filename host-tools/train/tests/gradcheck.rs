//! Finite-difference gradient checks: every op with a gradient rule, on random shapes
//! and attributes (seeded, so a failure reproduces).
//!
//! Each case is a kiln IR graph `out = OP(input * P, weights..)`, trained with MSE
//! (or softmax cross-entropy) against a random target. `P` is a parameter of the
//! input's per-sample shape, so its gradient `sum_n dOP/dx_n * input_n` checks the op's
//! input gradient; the op's own weights are parameters too. Every parameter element
//! sampled is compared with the central difference `(L(p + e) - L(p - e)) / 2e`.
//! Batch norm runs in training mode (batch statistics) and dropout with a fixed mask.

use kiln_codegen::ir::{
    infer_output_shape, Activation, Conv2dAttrs, DepthwiseConv2dAttrs, Graph, Node, Op, Padding,
    Pool2dAttrs, TensorId, TensorInfo,
};
use kiln_train::autodiff::differentiate;
use kiln_train::exec::Executor;
use kiln_train::graph::{Kind, Loss, TOp, TrainGraph};
use kiln_train::layers::{BatchNorm, Dropout, TrainingLayers};
use kiln_train::rng::Rng;
use kiln_train::train::read_params;

struct B {
    g: Graph,
    rng: Rng,
    layers: TrainingLayers,
}

impl B {
    fn tensor(&mut self, shape: Vec<usize>, data: Option<Vec<f32>>) -> TensorId {
        let n = self.g.tensors.len();
        self.g.push_f32(format!("t{n}"), shape, data.as_deref())
    }

    fn param(&mut self, shape: Vec<usize>, lo: f32, hi: f32) -> TensorId {
        let len = shape.iter().product();
        let data = (0..len).map(|_| self.rng.uniform(lo, hi)).collect();
        self.tensor(shape, Some(data))
    }

    fn node(&mut self, op: Op, inputs: Vec<TensorId>) -> TensorId {
        let infos: Vec<&TensorInfo> = inputs.iter().map(|t| self.g.info(*t)).collect();
        let shape = infer_output_shape(&op, &infos, &[]).expect("shape");
        self.node_shaped(op, inputs, shape)
    }

    fn node_shaped(&mut self, op: Op, inputs: Vec<TensorId>, shape: Vec<usize>) -> TensorId {
        let y = self.tensor(shape, None);
        self.g.nodes.push(Node {
            name: format!("n{}", self.g.nodes.len()),
            op,
            inputs,
            outputs: vec![y],
        });
        y
    }

    fn shape(&self, t: TensorId) -> Vec<usize> {
        self.g.info(t).shape.clone()
    }

    fn pick(&mut self, options: &[usize]) -> usize {
        options[self.rng.below(options.len())]
    }
}

/// Builds `input [1, sample..] * P` and hands it to `body`; checks all gradients.
fn check(
    name: &str,
    seed: u64,
    sample: Vec<usize>,
    loss: Loss,
    body: impl Fn(&mut B, TensorId) -> TensorId,
) {
    let mut b = B {
        g: Graph::default(),
        rng: Rng::new(seed),
        layers: TrainingLayers::default(),
    };
    let mut shape = vec![1];
    shape.extend(&sample);
    let x = b.tensor(shape.clone(), None);
    b.g.inputs.push(x);
    let p = b.param(shape, 0.5, 1.5);
    let h = b.node(
        Op::Mul {
            activation: Activation::None,
        },
        vec![x, p],
    );
    let out = body(&mut b, h);
    b.g.outputs.push(out);
    b.g.validate()
        .unwrap_or_else(|e| panic!("{name}: invalid test graph: {e}"));
    // Batch norm of [N, F] needs two samples for a variance.
    let batch = if b.layers.batch_norms.is_empty() {
        1
    } else {
        2
    } + b.rng.below(3);
    let mut g = TrainGraph::from_ir_training(&b.g, &b.layers, batch).expect("from_ir");
    g.add_loss(loss).expect("loss");
    differentiate(&mut g).expect("differentiate");
    let inputs: Vec<Vec<f32>> = g
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let len = g.tensors[t].len();
            if i >= 2 {
                // A dropout mask, fixed for every run.
                let rate = g.dropouts[i - 2].rate;
                (0..len)
                    .map(|_| {
                        if b.rng.unit() < rate {
                            0.0
                        } else {
                            1.0 / (1.0 - rate)
                        }
                    })
                    .collect()
            } else if i == 0 || loss == Loss::Mse {
                (0..len).map(|_| b.rng.uniform(-1.0, 1.0)).collect()
            } else {
                let classes = *g.shape(t).last().unwrap();
                let mut v = vec![0.0; len];
                for row in v.chunks_mut(classes) {
                    row[b.rng.below(classes)] = 1.0;
                }
                v
            }
        })
        .collect();
    let feeds: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let (loss_t, grads_t) = (g.loss.unwrap(), g.grads.clone());
    let mut params = read_params(&b.g, &g.param_ir);
    let mut exec = Executor::new(g);
    exec.run(&feeds, &params).unwrap();
    let analytic: Vec<Vec<f32>> = grads_t
        .iter()
        .map(|&t| exec.value(t).unwrap().to_vec())
        .collect();
    let eps = 1e-3f32;
    let mut checked = 0;
    for pi in 0..params.len() {
        let len = params[pi].len();
        let picks: Vec<usize> = if len <= 24 {
            (0..len).collect()
        } else {
            (0..24).map(|_| b.rng.below(len)).collect()
        };
        for e in picks {
            let keep = params[pi][e];
            params[pi][e] = keep + eps;
            exec.run(&feeds, &params).unwrap();
            let plus = f64::from(exec.value(loss_t).unwrap()[0]);
            params[pi][e] = keep - eps;
            exec.run(&feeds, &params).unwrap();
            let minus = f64::from(exec.value(loss_t).unwrap()[0]);
            params[pi][e] = keep;
            let numeric = (plus - minus) / (2.0 * f64::from(eps));
            let a = f64::from(analytic[pi][e]);
            let tol = 2e-2 * a.abs().max(numeric.abs()) + 2e-3;
            assert!(
                (a - numeric).abs() <= tol,
                "{name} (seed {seed}, batch {batch}): parameter {pi} element {e}: analytic {a}, numeric {numeric}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "{name}: nothing checked");
}

fn padding(b: &mut B) -> Padding {
    match b.rng.below(3) {
        0 => Padding::Valid,
        1 => Padding::Same,
        _ => Padding::Explicit {
            top: b.rng.below(2),
            bottom: b.rng.below(2),
            left: b.rng.below(2),
            right: b.rng.below(2),
        },
    }
}

fn image(rng: &mut Rng) -> Vec<usize> {
    vec![4 + rng.below(4), 4 + rng.below(4), 1 + rng.below(3)]
}

const SEEDS: std::ops::Range<u64> = 1..7;

#[test]
fn conv_2d() {
    for seed in SEEDS {
        let sample = image(&mut Rng::new(seed));
        check("conv_2d", seed, sample, Loss::Mse, |b, x| {
            let c = b.shape(x)[3];
            let (kh, kw) = (b.pick(&[1, 2, 3]), b.pick(&[1, 3]));
            let o = b.pick(&[1, 2, 4]);
            let f = b.param(vec![o, kh, kw, c], -1.0, 1.0);
            let bias = b.param(vec![o], -1.0, 1.0);
            let attrs = Conv2dAttrs {
                stride: [b.pick(&[1, 2]), b.pick(&[1, 2])],
                dilation: [1, b.pick(&[1, 2])],
                padding: padding(b),
                activation: Activation::None,
                residual: None,
            };
            b.node(Op::Conv2d(attrs), vec![x, f, bias])
        });
    }
}

#[test]
fn depthwise_conv_2d() {
    for seed in SEEDS {
        let sample = image(&mut Rng::new(seed));
        check("depthwise_conv_2d", seed, sample, Loss::Mse, |b, x| {
            let c = b.shape(x)[3];
            let m = b.pick(&[1, 2]);
            let (kh, kw) = (b.pick(&[2, 3]), b.pick(&[1, 3]));
            let f = b.param(vec![1, kh, kw, c * m], -1.0, 1.0);
            let bias = b.param(vec![c * m], -1.0, 1.0);
            let attrs = DepthwiseConv2dAttrs {
                stride: [b.pick(&[1, 2]), b.pick(&[1, 2])],
                dilation: [if kh == 2 { b.pick(&[1, 2]) } else { 1 }, 1],
                padding: padding(b),
                depth_multiplier: m,
                activation: Activation::None,
            };
            b.node(Op::DepthwiseConv2d(attrs), vec![x, f, bias])
        });
    }
}

fn dense(b: &mut B, x: TensorId, units: usize) -> TensorId {
    let fan_in: usize = b.shape(x)[1..].iter().product();
    let w = b.param(vec![units, fan_in], -0.5, 0.5);
    let bias = b.param(vec![units], -0.5, 0.5);
    let op = Op::FullyConnected {
        activation: Activation::None,
        keep_num_dims: false,
    };
    b.node(op, vec![x, w, bias])
}

#[test]
fn fully_connected() {
    for seed in SEEDS {
        let mut r = Rng::new(seed);
        let sample = if seed % 2 == 0 {
            vec![3 + r.below(20)]
        } else {
            image(&mut r)
        };
        check("fully_connected", seed, sample, Loss::Mse, |b, x| {
            let units = 1 + b.rng.below(20);
            dense(b, x, units)
        });
    }
}

fn pool(max: bool) -> impl Fn(&mut B, TensorId) -> TensorId {
    move |b, x| {
        let k = [b.pick(&[1, 2, 3]), b.pick(&[2, 3])];
        let attrs = Pool2dAttrs {
            filter: k,
            stride: [b.pick(&[1, 2]), b.pick(&[1, 2, 3])],
            padding: if b.rng.below(2) == 0 {
                Padding::Same
            } else {
                Padding::Valid
            },
            activation: Activation::None,
        };
        b.node(
            if max {
                Op::MaxPool2d(attrs)
            } else {
                Op::AveragePool2d(attrs)
            },
            vec![x],
        )
    }
}

#[test]
fn max_pool_2d() {
    for seed in SEEDS {
        check(
            "max_pool_2d",
            seed,
            image(&mut Rng::new(seed)),
            Loss::Mse,
            pool(true),
        );
    }
}

#[test]
fn average_pool_2d() {
    for seed in SEEDS {
        check(
            "average_pool_2d",
            seed,
            image(&mut Rng::new(seed)),
            Loss::Mse,
            pool(false),
        );
    }
}

#[test]
fn global_average_pool() {
    for seed in SEEDS {
        check(
            "mean",
            seed,
            image(&mut Rng::new(seed)),
            Loss::Mse,
            |b, x| {
                let keep_dims = b.rng.below(2) == 0;
                b.node(
                    Op::Mean {
                        axes: vec![1, 2],
                        keep_dims,
                    },
                    vec![x],
                )
            },
        );
    }
}

fn unary(op: Op, scale: f32) -> impl Fn(&mut B, TensorId) -> TensorId {
    move |b, x| {
        let s = b.shape(x);
        let k = b.param(s[1..].to_vec(), scale, scale * 1.5);
        let y = b.node(
            Op::Mul {
                activation: Activation::None,
            },
            vec![x, k],
        );
        b.node(op.clone(), vec![y])
    }
}

#[test]
fn activations() {
    let ops = [
        ("relu", Op::Relu, 1.0),
        ("relu6", Op::Relu6, 8.0),
        ("leaky_relu", Op::LeakyRelu { alpha: 0.1 }, 1.0),
        ("logistic", Op::Logistic, 2.0),
        ("tanh", Op::Tanh, 1.0),
    ];
    for (name, op, scale) in ops {
        for seed in SEEDS {
            check(
                name,
                seed,
                image(&mut Rng::new(seed)),
                Loss::Mse,
                unary(op.clone(), scale),
            );
        }
    }
}

#[test]
fn add_and_mul_with_broadcasting() {
    for seed in SEEDS {
        for mul in [false, true] {
            check(
                "add/mul",
                seed,
                image(&mut Rng::new(seed)),
                Loss::Mse,
                move |b, x| {
                    let s = b.shape(x);
                    let other = match b.rng.below(3) {
                        0 => s[1..].to_vec(),
                        1 => vec![s[3]],
                        _ => vec![1, s[2], 1],
                    };
                    let k = b.param(other, -1.0, 1.0);
                    let op = if mul {
                        Op::Mul {
                            activation: Activation::None,
                        }
                    } else {
                        Op::Add {
                            activation: Activation::None,
                        }
                    };
                    // Both operand orders; the same tensor used twice sums two adjoints.
                    let y = b.node(op.clone(), vec![k, x]);
                    b.node(op, vec![y, x])
                },
            );
        }
    }
}

#[test]
fn reshape_and_concatenation() {
    for seed in SEEDS {
        check(
            "reshape/concatenation",
            seed,
            image(&mut Rng::new(seed)),
            Loss::Mse,
            |b, x| {
                let s = b.shape(x);
                let c2 = 1 + b.rng.below(3);
                let f = b.param(vec![c2, 1, 1, s[3]], -1.0, 1.0);
                let attrs = Conv2dAttrs {
                    stride: [1, 1],
                    dilation: [1, 1],
                    padding: Padding::Valid,
                    activation: Activation::None,
                    residual: None,
                };
                let y = b.node(Op::Conv2d(attrs), vec![x, f]);
                let axis = b.pick(&[1, 2, 3]);
                let cat = if axis == 3 {
                    b.node(
                        Op::Concatenation {
                            axis,
                            activation: Activation::None,
                        },
                        vec![x, y, x],
                    )
                } else {
                    let z = b.node(Op::Relu, vec![x]);
                    b.node(
                        Op::Concatenation {
                            axis,
                            activation: Activation::None,
                        },
                        vec![z, x],
                    )
                };
                let cs = b.shape(cat);
                b.node_shaped(Op::Reshape, vec![cat], vec![1, cs[1..].iter().product()])
            },
        );
    }
}

#[test]
fn softmax_cross_entropy() {
    for seed in SEEDS {
        let sample = vec![2 + Rng::new(seed).below(12)];
        check(
            "softmax_cross_entropy",
            seed,
            sample,
            Loss::SoftmaxCrossEntropy,
            |b, x| {
                let classes = 2 + b.rng.below(9);
                dense(b, x, classes)
            },
        );
    }
}

#[test]
fn lenet_shaped_stack() {
    // Conv, relu, pools, flatten and dense together, as in LeNet (small sizes).
    check(
        "lenet stack",
        3,
        vec![12, 12, 1],
        Loss::SoftmaxCrossEntropy,
        |b, x| {
            let f = b.param(vec![3, 3, 3, 1], -1.0, 1.0);
            let attrs = Conv2dAttrs {
                stride: [1, 1],
                dilation: [1, 1],
                padding: Padding::Valid,
                activation: Activation::None,
                residual: None,
            };
            let y = b.node(Op::Conv2d(attrs), vec![x, f]);
            let y = b.node(Op::Relu, vec![y]);
            let pool = Pool2dAttrs {
                filter: [2, 2],
                stride: [2, 2],
                padding: Padding::Valid,
                activation: Activation::None,
            };
            let y = b.node(Op::MaxPool2d(pool), vec![y]);
            let y = b.node(Op::AveragePool2d(pool), vec![y]);
            let s = b.shape(y);
            let y = b.node_shaped(Op::Reshape, vec![y], vec![1, s[1..].iter().product()]);
            let y = dense(b, y, 8);
            let y = b.node(Op::Relu, vec![y]);
            dense(b, y, 5)
        },
    );
}

// ------------------------------------------------ quantization-aware training (STE)
//
// Fake quantization is piecewise constant, so finite differences say nothing; its
// gradient is the straight-through estimator by definition: the identity where the
// value quantizes inside the int8 range, zero where it is clipped. These check that
// rule exactly on `loss = mse(FAKE_QUANT(p), target)`, whose gradient with respect to
// the fake-quantized value is `2 (y - target) / n`.

/// Runs `p [shape] -> op(p, extra params.., fed qparams) -> mse` and returns
/// `(y, gradient of each parameter)`.
fn ste_case(
    op: TOp,
    params: Vec<(Vec<usize>, Vec<f32>)>,
    qparams: Option<[f32; 2]>,
    target: &[f32],
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut g = TrainGraph::default();
    let ids: Vec<usize> = params
        .iter()
        .enumerate()
        .map(|(i, (shape, _))| g.add_tensor(format!("p{i}"), shape.clone(), Kind::Param))
        .collect();
    g.params = ids.clone();
    let mut inputs = ids.clone();
    if qparams.is_some() {
        let q = g.add_tensor("qparams", vec![2], Kind::Input);
        g.inputs.push(q);
        inputs.push(q);
    }
    let shape = params[0].0.clone();
    let y = g.add_node(op, inputs, "y", shape);
    g.outputs.push(y);
    g.forward_len = g.nodes.len();
    g.add_loss(Loss::Mse).unwrap();
    differentiate(&mut g).unwrap();
    let grads = g.grads.clone();
    let mut exec = Executor::new(g);
    let q = qparams.unwrap_or_default();
    let mut feeds: Vec<&[f32]> = Vec::new();
    if qparams.is_some() {
        feeds.push(&q);
    }
    feeds.push(target);
    let values: Vec<Vec<f32>> = params.into_iter().map(|(_, v)| v).collect();
    exec.run(&feeds, &values).unwrap();
    let grads = grads
        .iter()
        .map(|&t| exec.value(t).unwrap().to_vec())
        .collect();
    (exec.value(y).unwrap().to_vec(), grads)
}

#[test]
fn fake_quant_straight_through_estimator() {
    let mut rng = Rng::new(21);
    let n = 64;
    let p: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 2.0)).collect();
    let target: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let (s, z) = kiln_codegen::quantize::params::asymmetric(-0.5, 1.0);
    let (y, grads) = ste_case(
        TOp::FakeQuant,
        vec![(vec![n], p.clone())],
        Some([s, z as f32]),
        &target,
    );
    let (mut inside, mut clipped) = (0, 0);
    for i in 0..n {
        let q = (p[i] / s).round() as i32 + z;
        // Forward: kiln's quantize then dequantize.
        let expect = s * (q.clamp(-128, 127) - z) as f32;
        assert_eq!(y[i], expect, "element {i}");
        let dy = 2.0 * (y[i] - target[i]) / n as f32;
        let want = if (-128..=127).contains(&q) {
            inside += 1;
            dy
        } else {
            clipped += 1;
            0.0
        };
        assert!(
            (grads[0][i] - want).abs() <= 1e-6,
            "element {i}: {} vs {want}",
            grads[0][i]
        );
    }
    assert!(
        inside > 10 && clipped > 10,
        "{inside} inside, {clipped} clipped"
    );
    // Scale 0 (no range yet): the identity, forward and backward.
    let (y, grads) = ste_case(
        TOp::FakeQuant,
        vec![(vec![n], p.clone())],
        Some([0.0, 0.0]),
        &target,
    );
    assert_eq!(y, p);
    for i in 0..n {
        let want = 2.0 * (p[i] - target[i]) / n as f32;
        assert!((grads[0][i] - want).abs() <= 1e-6);
    }
}

#[test]
fn fake_quant_weights_and_bias_pass_gradients_straight_through() {
    let mut rng = Rng::new(22);
    let w: Vec<f32> = (0..12).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let target: Vec<f32> = (0..12).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let (y, grads) = ste_case(
        TOp::FakeQuantWeights { axis: 0 },
        vec![(vec![3, 4], w.clone())],
        None,
        &target,
    );
    for c in 0..3 {
        let row = &w[c * 4..][..4];
        let s = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        for i in c * 4..c * 4 + 4 {
            // kiln's symmetric per-channel weights: the largest is exactly ±127 steps.
            assert!((y[i] - (w[i] / s).round() * s).abs() <= 1e-6);
            let want = 2.0 * (y[i] - target[i]) / 12.0;
            assert!((grads[0][i] - want).abs() <= 1e-6);
        }
    }
    // A bias: rounded at input_scale x weight_scale; the weights get no gradient from it.
    let b = vec![0.3, -0.7, 0.05];
    let t3 = &target[..3];
    let s_in = 0.02f32;
    let (y, grads) = ste_case(
        TOp::FakeQuantBias { axis: 0 },
        vec![(vec![3], b.clone()), (vec![3, 4], w.clone())],
        Some([s_in, -128.0]),
        t3,
    );
    for c in 0..3 {
        let s_w = w[c * 4..][..4].iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        let s = s_in * s_w;
        assert!((y[c] - (b[c] / s).round() * s).abs() <= 1e-6);
        assert!((grads[0][c] - 2.0 * (y[c] - t3[c]) / 3.0).abs() <= 1e-6);
    }
    assert!(grads[1].iter().all(|&d| d == 0.0));
}

/// Batch norm `x * scale + shift` as a model file builds it, with random gamma, beta
/// and running statistics; registered as a training-only layer.
fn batch_norm(b: &mut B, x: TensorId) -> TensorId {
    let c = *b.shape(x).last().unwrap();
    let name = format!("bn{}", b.layers.batch_norms.len());
    let bn = BatchNorm {
        name: name.clone(),
        momentum: 0.1,
        eps: [1e-5, 1e-3][b.rng.below(2)],
    };
    let named = |b: &mut B, role: &str, lo: f32, hi: f32| {
        let t = b.param(vec![c], lo, hi);
        b.g.tensors[t.0].name = bn.tensor(role);
        t
    };
    for (role, lo, hi) in [
        ("gamma", 0.5, 1.5),
        ("beta", -1.0, 1.0),
        ("running_mean", -1.0, 1.0),
        ("running_var", 0.5, 2.0),
    ] {
        named(b, role, lo, hi);
    }
    let scale = named(b, "scale", 0.5, 1.5);
    let shift = named(b, "shift", -1.0, 1.0);
    let none = Activation::None;
    let y = b.node(Op::Mul { activation: none }, vec![x, scale]);
    b.layers.batch_norms.push(bn);
    b.node(Op::Add { activation: none }, vec![y, shift])
}

/// Dropout of `x` with a random rate (the check feeds a fixed mask).
fn dropout(b: &mut B, x: TensorId) -> TensorId {
    let d = Dropout {
        name: format!("dropout{}", b.layers.dropouts.len()),
        after: b.g.tensors[x.0].name.clone(),
        rate: [0.1, 0.3, 0.5][b.rng.below(3)],
    };
    b.layers.dropouts.push(d);
    x
}

#[test]
fn batch_norm_training_mode() {
    for seed in SEEDS {
        let mut r = Rng::new(seed);
        let sample = if seed % 2 == 0 {
            vec![2 + r.below(12)]
        } else {
            image(&mut r)
        };
        check("batch_norm", seed, sample, Loss::Mse, |b, x| {
            if b.shape(x).len() == 4 && b.rng.below(2) == 0 {
                // After a convolution, as in a CNN.
                let c = b.shape(x)[3];
                let o = b.pick(&[1, 3, 4]);
                let f = b.param(vec![o, 3, 3, c], -1.0, 1.0);
                let attrs = Conv2dAttrs {
                    stride: [1, 1],
                    dilation: [1, 1],
                    padding: Padding::Same,
                    activation: Activation::None,
                    residual: None,
                };
                let y = b.node(Op::Conv2d(attrs), vec![x, f]);
                batch_norm(b, y)
            } else {
                batch_norm(b, x)
            }
        });
    }
}

#[test]
fn dropout_with_a_fixed_mask() {
    for seed in SEEDS {
        let mut r = Rng::new(seed);
        let sample = if seed % 2 == 0 {
            vec![3 + r.below(12)]
        } else {
            image(&mut r)
        };
        check("dropout", seed, sample, Loss::Mse, |b, x| {
            // Dropout between two layers with parameters, and on the output.
            let y = dropout(b, x);
            let units = 2 + b.rng.below(6);
            let y = dense(b, y, units);
            dropout(b, y)
        });
    }
}

#[test]
fn conv_batch_norm_relu_dropout_dense_stack() {
    for seed in [2, 5] {
        check(
            "bn/dropout stack",
            seed,
            vec![8, 8, 2],
            Loss::SoftmaxCrossEntropy,
            |b, x| {
                let f = b.param(vec![3, 3, 3, 2], -1.0, 1.0);
                let attrs = Conv2dAttrs {
                    stride: [1, 1],
                    dilation: [1, 1],
                    padding: Padding::Valid,
                    activation: Activation::None,
                    residual: None,
                };
                let y = b.node(Op::Conv2d(attrs), vec![x, f]);
                let y = batch_norm(b, y);
                let y = b.node(Op::Relu, vec![y]);
                let y = dropout(b, y);
                let y = dense(b, y, 6);
                let y = batch_norm(b, y);
                let y = dropout(b, y);
                dense(b, y, 4)
            },
        );
    }
}
