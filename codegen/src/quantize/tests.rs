//! Observers, calibration methods, the int8 rewrite and its TFLM constraints on small
//! hand-built float graphs, data loading and the report.

use super::data::{self, DataOptions};
use super::*;
use crate::exec::{check, Executor, TensorData};
use crate::ir::{
    Activation, Conv2dAttrs, DType, DepthwiseConv2dAttrs, Node, Op, Padding, Pool2dAttrs,
    QuantParams, TensorInfo,
};

/// A deterministic generator (64-bit LCG) for test data.
struct Rng(u64);

impl Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }

    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        f64::from(self.next_u32()) / 4294967296.0
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-12);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Laplace with scale 1.
    fn laplace(&mut self) -> f64 {
        let u = self.uniform() - 0.5;
        -u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln()
    }

    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (hi - lo) * self.uniform() as f32)
            .collect()
    }
}

// ---------------------------------------------------------------- observers

#[test]
fn minmax_is_the_exact_range() {
    let mut o = Observer::new();
    o.observe(&[0.5, -1.25, 3.0]);
    o.observe(&[2.0, 7.5, -0.5]);
    assert_eq!(o.range(Calibration::MinMax), Some((-1.25, 7.5)));
    assert_eq!((o.min(), o.max(), o.count()), (-1.25, 7.5, 6));
    assert_eq!(Observer::new().range(Calibration::MinMax), None);
}

#[test]
fn histogram_grows_in_one_pass_without_losing_counts() {
    let mut rng = Rng(1);
    let mut o = Observer::new();
    // Ranges that keep widening (by 10^6 overall), then a batch of zeros only.
    for k in 0..7 {
        let r = 10f32.powi(k);
        o.observe(&rng.vec(1000, -r / 2.0, r));
    }
    o.observe(&[0.0; 10]);
    let h = o.histogram();
    assert_eq!(h.total(), 7010);
    assert!(h.bins().len() <= MAX_BINS && h.bins().len() >= MAX_BINS / 4);
    assert!(h.edge(0) <= f64::from(o.min()) && h.edge(h.bins().len()) > f64::from(o.max()));
    // A single constant value, and values starting at zero, then far away.
    let mut c = Observer::new();
    c.observe(&[0.0; 4]);
    c.observe(&[1e30]);
    assert_eq!(c.histogram().total(), 5);
    assert!(c.histogram().bins().len() <= MAX_BINS);
    assert_eq!(c.range(Calibration::Mse).map(|r| r.0), Some(0.0));
}

#[test]
fn percentile_clips_both_tails() {
    let mut rng = Rng(2);
    let mut o = Observer::new();
    for _ in 0..100 {
        o.observe(&rng.vec(10_000, -1.0, 3.0));
    }
    let (lo, hi) = o.range(Calibration::Percentile(99.0)).unwrap();
    // 1% of [-1, 3] is 0.04 on each side.
    assert!((lo - -0.96).abs() < 0.005, "{lo}");
    assert!((hi - 2.96).abs() < 0.005, "{hi}");
    // 100% is the min/max.
    assert_eq!(
        o.range(Calibration::Percentile(100.0)),
        o.range(Calibration::MinMax)
    );
    // A few outliers are clipped away entirely by the default percentile.
    o.observe(&[1000.0, -500.0]);
    let (lo, hi) = o
        .range(Calibration::Percentile(DEFAULT_PERCENTILE))
        .unwrap();
    assert!(lo > -1.01 && hi < 3.01, "{lo} {hi}");
}

/// True mean squared error of quantizing `values` with the int8 range `[lo, hi]`.
fn true_mse(values: &[f32], lo: f32, hi: f32) -> f64 {
    let (s, z) = params::asymmetric(lo, hi);
    values
        .iter()
        .map(|&v| {
            let d =
                f64::from(v) - f64::from(params::dequantize(params::quantize_i8(v, s, z), s, z));
            d * d
        })
        .sum::<f64>()
        / values.len() as f64
}

/// The best range for `values` by brute force over a grid of both ends.
fn brute_force_mse(values: &[f32], min: f32, max: f32) -> f64 {
    let mut best = f64::INFINITY;
    for i in 1..=40 {
        for j in 1..=40 {
            let (lo, hi) = (min * i as f32 / 40.0, max * j as f32 / 40.0);
            best = best.min(true_mse(values, lo, hi));
        }
    }
    best
}

#[test]
fn mse_keeps_a_uniform_range_and_clips_heavy_tails() {
    let mut rng = Rng(3);
    // Uniform: clipping only hurts, the range stays (nearly) the full one.
    let uniform = rng.vec(200_000, -2.0, 6.0);
    let mut o = Observer::new();
    o.observe(&uniform);
    let (lo, hi) = o.range(Calibration::Mse).unwrap();
    assert!(lo < -1.95 && hi > 5.9, "{lo} {hi}");

    // Laplace with two far outliers: the range shrinks (clipping two values costs less
    // than coarser steps for all the others), the real error drops well below
    // min/max's and is within 5% of the best range found by brute force.
    let mut tailed: Vec<f32> = (0..200_000).map(|_| rng.laplace() as f32).collect();
    tailed.extend([60.0, -45.0]);
    let mut o = Observer::new();
    o.observe(&tailed);
    let (lo, hi) = o.range(Calibration::Mse).unwrap();
    let chosen = true_mse(&tailed, lo, hi);
    let minmax = true_mse(&tailed, o.min(), o.max());
    let best = brute_force_mse(&tailed, o.min(), o.max());
    assert!(lo > 0.75 * o.min() && hi < 0.75 * o.max(), "{lo} {hi}");
    assert!(chosen < 0.75 * minmax, "{chosen} vs min/max {minmax}");
    assert!(chosen < best * 1.05, "{chosen} vs brute force {best}");

    // Gaussian (two-sided) and ReLU'd Gaussian with many exact zeros (one-sided).
    let gauss: Vec<f32> = (0..200_000).map(|_| rng.normal() as f32).collect();
    let relu: Vec<f32> = gauss.iter().map(|v| v.max(0.0)).collect();
    for values in [gauss, relu] {
        let mut o = Observer::new();
        o.observe(&values);
        let (lo, hi) = o.range(Calibration::Mse).unwrap();
        let chosen = true_mse(&values, lo, hi);
        let best = brute_force_mse(&values, o.min().min(-1e-3), o.max());
        assert!(chosen < best * 1.05, "{chosen} vs brute force {best}");
        assert!(chosen <= true_mse(&values, o.min(), o.max()));
    }
}

#[test]
fn calibration_methods_parse() {
    assert_eq!(Calibration::parse("minmax", None), Ok(Calibration::MinMax));
    assert_eq!(Calibration::parse("mse", None), Ok(Calibration::Mse));
    assert_eq!(
        Calibration::parse("percentile", None),
        Ok(Calibration::Percentile(DEFAULT_PERCENTILE))
    );
    assert_eq!(
        Calibration::parse("percentile", Some(99.9)),
        Ok(Calibration::Percentile(99.9))
    );
    assert!(Calibration::parse("percentile", Some(40.0)).is_err());
    assert!(Calibration::parse("percentile", Some(f32::NAN)).is_err());
    assert!(Calibration::parse("minmax", Some(99.0)).is_err());
    assert!(Calibration::parse("kl", None)
        .unwrap_err()
        .contains("unknown calibration method 'kl'"));
}

// ---------------------------------------------------------------- graph builder

/// Builds small float graphs tensor by tensor.
#[derive(Default)]
struct Builder {
    g: Graph,
}

impl Builder {
    fn input(&mut self, name: &str, shape: &[usize]) -> TensorId {
        let id = self.tensor(name, shape, None);
        self.g.inputs.push(id);
        id
    }

    fn tensor(&mut self, name: &str, shape: &[usize], data: Option<Vec<f32>>) -> TensorId {
        self.g.push_f32(name, shape.to_vec(), data.as_deref())
    }

    fn constant(&mut self, name: &str, shape: &[usize], values: Vec<f32>) -> TensorId {
        assert_eq!(values.len(), shape.iter().product::<usize>());
        self.tensor(name, shape, Some(values))
    }

    fn node(&mut self, op: Op, inputs: &[TensorId], shape: &[usize]) -> TensorId {
        let name = format!("{}_{}", op.name(), self.g.nodes.len());
        let out = self.tensor(&format!("{name}_out"), shape, None);
        self.g.nodes.push(Node {
            name,
            op,
            inputs: inputs.to_vec(),
            outputs: vec![out],
        });
        out
    }

    fn finish(mut self, outputs: &[TensorId]) -> Graph {
        self.g.outputs = outputs.to_vec();
        self.g.validate().unwrap();
        self.g
    }
}

fn conv_attrs(activation: Activation) -> Conv2dAttrs {
    Conv2dAttrs {
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Same,
        activation,
        residual: None,
    }
}

fn pool_attrs() -> Pool2dAttrs {
    Pool2dAttrs {
        filter: [2, 2],
        stride: [2, 2],
        padding: Padding::Valid,
        activation: Activation::None,
    }
}

/// Random float samples for every graph input, uniform over `[lo, hi)`.
fn samples(g: &Graph, n: usize, lo: f32, hi: f32, seed: u64) -> Vec<Sample> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            g.inputs
                .iter()
                .map(|id| TensorData::F32(rng.vec(g.info(*id).num_elements(), lo, hi)))
                .collect()
        })
        .collect()
}

fn quant(g: &Graph, id: TensorId) -> (f32, i32) {
    g.info(id).scale_zero_point().unwrap()
}

/// input → conv(relu6 fused) → relu (separate, private) → max_pool → reshape → fc →
/// softmax, plus a second branch depthwise → tanh and mean → logistic.
fn classifier() -> (Graph, [TensorId; 9]) {
    let mut rng = Rng(7);
    let mut b = Builder::default();
    let x = b.input("x", &[1, 8, 8, 3]);
    let w = b.constant("w", &[4, 3, 3, 3], rng.vec(108, -0.5, 0.5));
    let bias = b.constant("b", &[4], vec![0.1, -0.2, 0.3, 0.0]);
    let c = b.node(
        Op::Conv2d(conv_attrs(Activation::None)),
        &[x, w, bias],
        &[1, 8, 8, 4],
    );
    let r = b.node(Op::Relu, &[c], &[1, 8, 8, 4]);
    let p = b.node(Op::MaxPool2d(pool_attrs()), &[r], &[1, 4, 4, 4]);
    let f = b.node(Op::Reshape, &[p], &[1, 64]);
    let fw = b.constant("fw", &[10, 64], rng.vec(640, -0.3, 0.3));
    let fb = b.constant("fb", &[10], rng.vec(10, -1.0, 1.0));
    let logits = b.node(
        Op::FullyConnected {
            activation: Activation::None,
            keep_num_dims: false,
        },
        &[f, fw, fb],
        &[1, 10],
    );
    let probs = b.node(Op::Softmax { beta: 1.0 }, &[logits], &[1, 10]);
    let dw = b.constant("dw", &[1, 3, 3, 3], rng.vec(27, -1.0, 1.0));
    let d = b.node(
        Op::DepthwiseConv2d(DepthwiseConv2dAttrs {
            stride: [1, 1],
            dilation: [1, 1],
            padding: Padding::Valid,
            depth_multiplier: 1,
            activation: Activation::Relu6,
        }),
        &[x, dw],
        &[1, 6, 6, 3],
    );
    let t = b.node(Op::Tanh, &[d], &[1, 6, 6, 3]);
    let m = b.node(
        Op::Mean {
            axes: vec![1, 2],
            keep_dims: false,
        },
        &[t],
        &[1, 3],
    );
    let l = b.node(Op::Logistic, &[m], &[1, 3]);
    let g = b.finish(&[probs, l]);
    (g, [x, c, r, p, f, logits, probs, d, t])
}

// ---------------------------------------------------------------- transformation

#[test]
fn classifier_quantizes_to_tflms_int8_scheme() {
    let (float, [x, c, r, p, f, logits, probs, d, t]) = classifier();
    let s = samples(&float, 16, -1.0, 1.0, 11);
    let int8 = quantize(&float, &s, &QuantizeOptions::default()).unwrap();
    int8.validate().unwrap();
    assert!(check(&int8).unwrap().is_empty());
    // Same tensors, same nodes, int8 inputs and outputs.
    assert_eq!(int8.tensors.len(), float.tensors.len());
    assert_eq!(int8.nodes.len(), float.nodes.len());
    assert_eq!(
        (&int8.inputs, &int8.outputs),
        (&float.inputs, &float.outputs)
    );
    for id in int8.inputs.iter().chain(&int8.outputs) {
        assert_eq!(int8.info(*id).dtype, DType::I8);
    }
    // Input range [-1, 1] (minmax of the samples).
    let (sx, zx) = quant(&int8, x);
    assert!(
        (sx - 2.0 / 255.0).abs() < 1e-4 && (-1..=0).contains(&zx),
        "{sx} {zx}"
    );
    // The conv's private RELU: the conv result takes the RELU's range (zero point
    // -128), so fold_activation can fold it.
    assert_eq!(quant(&int8, c), quant(&int8, r));
    assert_eq!(quant(&int8, r).1, -128);
    // Pooling and reshape keep their input's parameters.
    assert_eq!(quant(&int8, p), quant(&int8, r));
    assert_eq!(quant(&int8, f), quant(&int8, p));
    // Fixed output parameters.
    assert_eq!(quant(&int8, probs), (1.0 / 256.0, -128));
    assert_eq!(quant(&int8, t), (1.0 / 128.0, 0));
    assert_eq!(quant(&int8, float.outputs[1]), (1.0 / 256.0, -128));
    // Fused RELU6 uses the post-activation range, inside [0, 6].
    let (sd, zd) = quant(&int8, d);
    assert_eq!(zd, -128);
    assert!(sd <= 6.0 / 255.0 + 1e-6);
    assert!(quant(&int8, logits).0 > 0.0);

    // Weights: symmetric per channel on the right axis; biases int32 with
    // scale input_scale x weight_scale.
    let conv = &int8.nodes[0];
    let w = int8.info(conv.inputs[1]).quant.clone().unwrap();
    assert_eq!(
        (w.axis, w.scale.len(), w.zero_point.clone()),
        (0, 4, vec![0; 4])
    );
    let bias = int8.tensor(conv.inputs[2]);
    assert_eq!(bias.info.dtype, DType::I32);
    let bq = bias.info.quant.as_ref().unwrap();
    for ch in 0..4 {
        assert_eq!(bq.scale[ch], sx * w.scale[ch]);
    }
    let b0 = i32::from_le_bytes(bias.data.as_ref().unwrap()[0..4].try_into().unwrap());
    assert_eq!(b0, (0.1 / f64::from(bq.scale[0])).round() as i32);
    let weights = int8.tensor(conv.inputs[1]).data.as_ref().unwrap();
    assert!(weights.iter().any(|&q| q as i8 == 127 || q as i8 == -127));
    assert!(weights.iter().all(|&q| q as i8 != -128));
    let dw = int8.info(int8.nodes[6].inputs[1]).quant.clone().unwrap();
    assert_eq!((dw.axis, dw.scale.len()), (3, 3));
    let fc = int8.info(int8.nodes[4].inputs[1]).quant.clone().unwrap();
    assert_eq!((fc.axis, fc.scale.len()), (0, 10));

    // Per-tensor fully connected on request.
    let options = QuantizeOptions {
        fc_per_channel: false,
        ..Default::default()
    };
    let per_tensor = quantize(&float, &s, &options).unwrap();
    let fc = per_tensor.info(per_tensor.nodes[4].inputs[1]);
    assert!(fc.quant.as_ref().unwrap().is_per_tensor());
    assert!(check(&per_tensor).unwrap().is_empty());

    // Every calibration method gives a graph TFLM's kernels accept, close to float.
    for calibration in [
        Calibration::MinMax,
        Calibration::Percentile(99.9),
        Calibration::Mse,
    ] {
        let options = QuantizeOptions {
            calibration,
            ..Default::default()
        };
        let int8 = quantize(&float, &s, &options).unwrap();
        assert!(check(&int8).unwrap().is_empty());
        let r = report(&float, &int8, &s).unwrap();
        assert!(r.outputs[0].sqnr_db > 20.0, "{calibration}: {r}");
        assert!(r.top1_agreement().unwrap() >= 0.9, "{calibration}: {r}");
    }
}

#[test]
fn ranges_by_name_reproduce_calibration_on_the_optimized_graph() {
    let (float, _) = classifier();
    let s = samples(&float, 8, -1.0, 1.0, 13);
    let mut optimized = float.clone();
    crate::passes::optimize(&mut optimized).unwrap();
    let options = QuantizeOptions::default();
    let stats = calibrate(&optimized, &s).unwrap();
    let expected = quantize_with(&optimized, &stats, &options).unwrap();
    // The passes folded the RELU: its input tensor is gone from the graph, the names
    // of what survives carry the ranges.
    let ranges: BTreeMap<String, (f32, f32)> = stats
        .ranges(Calibration::MinMax)
        .iter()
        .enumerate()
        .filter_map(|(t, r)| r.map(|r| (optimized.tensors[t].name.clone(), r)))
        .collect();
    assert!(ranges.len() >= 6, "{ranges:?}");
    let got = quantize_with_ranges(&optimized, &ranges, &options).unwrap();
    assert_eq!(got, expected);

    // Wider ranges give wider scales, so the ranges are really used.
    let wide: BTreeMap<String, (f32, f32)> = ranges
        .iter()
        .map(|(n, &(lo, hi))| (n.clone(), (lo * 2.0, hi * 2.0)))
        .collect();
    let widened = quantize_with_ranges(&optimized, &wide, &options).unwrap();
    let x = optimized.inputs[0];
    assert!(quant(&widened, x).0 > quant(&expected, x).0 * 1.9);

    // Errors name the tensor.
    let mut missing = ranges.clone();
    let name = optimized.tensors[x.0].name.clone();
    missing.remove(&name);
    let e = quantize_with_ranges(&optimized, &missing, &options).unwrap_err();
    assert!(e.to_string().contains(&name), "{e}");
    let mut unknown = ranges.clone();
    unknown.insert("no_such_tensor".into(), (0.0, 1.0));
    let e = quantize_with_ranges(&optimized, &unknown, &options).unwrap_err();
    assert!(e.to_string().contains("no_such_tensor"), "{e}");
    let mut bad = ranges;
    bad.insert(name.clone(), (1.0, f32::NAN));
    let e = quantize_with_ranges(&optimized, &bad, &options).unwrap_err();
    assert!(
        e.to_string().contains(&name) && e.to_string().contains("finite"),
        "{e}"
    );
}

#[test]
fn optimized_int8_graph_folds_the_private_relu_and_runs_the_same() {
    let (float, _) = classifier();
    let s = samples(&float, 8, -1.0, 1.0, 12);
    let int8 = quantize(&float, &s, &QuantizeOptions::default()).unwrap();
    let mut optimized = int8.clone();
    let passes = crate::passes::optimize(&mut optimized).unwrap();
    assert!(passes.contains(&("fold_activation", 1)), "{passes:?}");
    let (a, b) = (
        Executor::new(&int8).unwrap(),
        Executor::new(&optimized).unwrap(),
    );
    for sample in &s {
        let q: Vec<TensorData> = (0..sample.len())
            .map(|i| quantize_input(&int8, i, &sample[i]))
            .collect();
        assert_eq!(a.run(&q).unwrap(), b.run(&q).unwrap());
    }
}

#[test]
fn concatenation_shares_one_range_and_requantizes_pinned_inputs() {
    let mut b = Builder::default();
    let x = b.input("x", &[1, 4]);
    let y = b.input("y", &[1, 4]);
    let k = b.constant("k", &[1, 2], vec![-3.0, 5.0]);
    let sx = b.node(Op::Softmax { beta: 1.0 }, &[x], &[1, 4]);
    let cat = Op::Concatenation {
        axis: 1,
        activation: Activation::None,
    };
    let out = b.node(cat, &[x, y, sx, k], &[1, 14]);
    let float = b.finish(&[out]);
    let s = samples(&float, 8, -2.0, 1.0, 5);
    let int8 = quantize(&float, &s, &QuantizeOptions::default()).unwrap();
    assert!(check(&int8).unwrap().is_empty());
    // One QUANTIZE inserted for the softmax input; its result is the only new tensor.
    assert_eq!(int8.nodes.len(), 3);
    assert_eq!(int8.nodes[1].op, Op::Quantize);
    assert_eq!(int8.tensors.len(), float.tensors.len() + 1);
    let concat = &int8.nodes[2];
    let q = quant(&int8, out);
    for id in &concat.inputs {
        assert_eq!(quant(&int8, *id), q);
    }
    // The common range covers every input: [-3, 5] from the constant.
    assert!((q.0 - 8.0 / 255.0).abs() < 1e-6, "{q:?}");
    assert_eq!(quant(&int8, sx), (1.0 / 256.0, -128));
    let r = report(&float, &int8, &s).unwrap();
    assert!(r.outputs[0].sqnr_db > 30.0, "{r}");
}

#[test]
fn add_mul_pad_and_pool_operands() {
    let mut b = Builder::default();
    let x = b.input("x", &[1, 4, 4, 2]);
    let k = b.constant("k", &[2], vec![0.5, -1.5]);
    let a = b.node(
        Op::Add {
            activation: Activation::Relu,
        },
        &[x, k],
        &[1, 4, 4, 2],
    );
    let m = b.node(
        Op::Mul {
            activation: Activation::None,
        },
        &[a, x],
        &[1, 4, 4, 2],
    );
    let p = b.node(
        Op::Pad {
            paddings: vec![[0, 0], [1, 1], [1, 1], [0, 0]],
        },
        &[m],
        &[1, 6, 6, 2],
    );
    let avg = b.node(Op::AveragePool2d(pool_attrs()), &[p], &[1, 3, 3, 2]);
    let r6 = b.node(Op::Relu6, &[avg], &[1, 3, 3, 2]);
    let other = b.node(Op::Relu, &[avg], &[1, 3, 3, 2]);
    let float = b.finish(&[r6, other]);
    let s = samples(&float, 8, -4.0, 4.0, 9);
    let int8 = quantize(&float, &s, &QuantizeOptions::default()).unwrap();
    assert!(check(&int8).unwrap().is_empty());
    let kq = int8.tensor(k);
    assert_eq!(kq.info.dtype, DType::I8);
    let (ks, kz) = kq.info.scale_zero_point().unwrap();
    assert!((ks - 2.0 / 255.0).abs() < 1e-6 && kz == 63, "{ks} {kz}");
    // PAD and pooling keep quantization; RELU6 reading a shared tensor shares it too.
    assert_eq!(quant(&int8, p), quant(&int8, m));
    assert_eq!(quant(&int8, avg), quant(&int8, p));
    assert_eq!(quant(&int8, r6), quant(&int8, avg));
    // A RELU reading a shared tensor has its own range (it requantizes).
    assert_eq!(quant(&int8, other).1, -128);
    assert_ne!(quant(&int8, other), quant(&int8, avg));
    let r = report(&float, &int8, &s).unwrap();
    assert_eq!(r.layers.len(), 1 + 6);
    for row in &r.layers {
        assert!(row.sqnr_db > 25.0, "{r}");
    }
}

#[test]
fn graphs_that_cannot_be_quantized_say_which_node() {
    // Already quantized.
    let mut b = Builder::default();
    let x = b.input("x", &[1, 4]);
    let out = b.tensor("q", &[1, 4], None);
    b.g.tensors[out.0].info.dtype = DType::I8;
    b.g.tensors[out.0].info.quant = Some(QuantParams::per_tensor(0.1, 0));
    b.g.nodes.push(Node {
        name: "to_int8".into(),
        op: Op::Quantize,
        inputs: vec![x],
        outputs: vec![out],
    });
    let g = b.finish(&[out]);
    let err = check_quantizable(&g).unwrap_err().to_string();
    assert!(err.contains("'q'") && err.contains("int8"), "{err}");

    let mut b = Builder::default();
    let x = b.input("x", &[1, 4]);
    let y = b.node(Op::Quantize, &[x], &[1, 4]);
    b.g.tensors[y.0].info.dtype = DType::F32;
    let err = rule_error(b);
    assert!(err.contains("node 0 'quantize_0' (quantize)"), "{err}");

    // Non-constant weights.
    let mut b = Builder::default();
    let x = b.input("x", &[1, 4]);
    let w = b.input("w", &[3, 4]);
    b.node(
        Op::FullyConnected {
            activation: Activation::None,
            keep_num_dims: false,
        },
        &[x, w],
        &[1, 3],
    );
    let err = rule_error(b);
    assert!(
        err.contains("fully_connected") && err.contains("not constant"),
        "{err}"
    );

    // No samples, and samples of the wrong size.
    let (float, _) = classifier();
    let err = quantize(&float, &[], &QuantizeOptions::default()).unwrap_err();
    assert!(err.to_string().contains("no calibration samples"));
    let bad = vec![vec![TensorData::F32(vec![0.0; 5])]];
    let err = quantize(&float, &bad, &QuantizeOptions::default()).unwrap_err();
    assert!(err.to_string().contains("sample 0"), "{err}");
    // NaN in a weight.
    let mut nan = float.clone();
    nan.tensors[1].data.as_mut().unwrap()[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let s = samples(&nan, 2, -1.0, 1.0, 1);
    let err = quantize(&nan, &s, &QuantizeOptions::default()).unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
}

fn rule_error(mut b: Builder) -> String {
    let last = TensorId(b.g.tensors.len() - 1);
    b.g.outputs = vec![last];
    check_quantizable(&b.g).unwrap_err().to_string()
}

// ---------------------------------------------------------------- data

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-quant-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn info(shape: &[usize]) -> TensorInfo {
    TensorInfo {
        shape: shape.to_vec(),
        dtype: DType::F32,
        quant: None,
    }
}

fn idx_bytes(kind: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, kind, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend(data);
    v
}

#[test]
fn npy_samples_from_files_and_folders() {
    let dir = temp("npy");
    let input = info(&[1, 2, 2, 1]);
    let opts = DataOptions::default();
    let one = dir.join("one.npy");
    crate::npy::write(
        &one,
        &[1, 2, 2, 1],
        &TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]),
    )
    .unwrap();
    assert_eq!(data::load(&one, &input, &opts).unwrap().len(), 1);
    let batch = dir.join("batch.npy");
    let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
    crate::npy::write(&batch, &[3, 2, 2], &TensorData::F32(values)).unwrap();
    let s = data::load(&batch, &input, &opts).unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!(s[2], TensorData::F32(vec![8.0, 9.0, 10.0, 11.0]));
    let limited = DataOptions {
        limit: Some(2),
        ..opts
    };
    assert_eq!(data::load(&batch, &input, &limited).unwrap().len(), 2);
    // A folder: every .npy, in name order, other files ignored.
    std::fs::write(dir.join("notes.txt"), "x").unwrap();
    assert_eq!(data::load(&dir, &input, &opts).unwrap().len(), 4);

    // Errors name the file and the problem.
    let err =
        |p: &std::path::Path, i: &TensorInfo| data::load(p, i, &opts).unwrap_err().to_string();
    let e = err(&batch, &info(&[1, 3, 2]));
    assert!(
        e.contains("batch.npy") && e.contains("[3, 2, 2]") && e.contains("[1, 3, 2]"),
        "{e}"
    );
    let ints = dir.join("ints.npy");
    crate::npy::write(&ints, &[4], &TensorData::I8(vec![1, 2, 3, 4])).unwrap();
    let e = err(&ints, &info(&[4]));
    assert!(
        e.contains("ints.npy") && e.contains("int8") && e.contains("float32"),
        "{e}"
    );
    let nan = dir.join("nan.npy");
    crate::npy::write(&nan, &[2], &TensorData::F32(vec![1.0, f32::NAN])).unwrap();
    assert!(err(&nan, &info(&[2])).contains("NaN"));
    let e = err(&dir.join("missing.npy"), &input);
    assert!(e.contains("missing.npy"), "{e}");
    let empty = temp("npy-empty");
    assert!(err(&empty, &input).contains("no .npy files"));
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, b"hello").unwrap();
    assert!(err(&junk, &input).contains("neither an .npy file"));
    let e = data::load(
        &one,
        &TensorInfo {
            dtype: DType::I8,
            ..input.clone()
        },
        &opts,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("int8"), "{e}");
}

#[test]
fn idx_samples_plain_and_gzipped() {
    use std::io::Write;
    let dir = temp("idx");
    let pixels: Vec<u8> = (0..2 * 2 * 3).map(|v| (v * 20) as u8).collect();
    let raw = idx_bytes(0x08, &[3, 2, 2], &pixels);
    let plain = dir.join("images-idx3-ubyte");
    std::fs::write(&plain, &raw).unwrap();
    let gz = dir.join("images-idx3-ubyte.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&raw).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    // Each 2x2 image becomes a [1, 2, 2, 1] sample, bytes divided by 255 (or a chosen
    // divisor).
    let input = info(&[1, 2, 2, 1]);
    for path in [&plain, &gz] {
        let s = data::load(path, &input, &DataOptions::default()).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[1],
            TensorData::F32(vec![
                80.0 / 255.0,
                100.0 / 255.0,
                120.0 / 255.0,
                140.0 / 255.0
            ])
        );
    }
    let opts = DataOptions {
        divisor: 1.0,
        limit: Some(1),
    };
    let s = data::load(&gz, &input, &opts).unwrap();
    assert_eq!(s, vec![TensorData::F32(vec![0.0, 20.0, 40.0, 60.0])]);
    // float32 IDX data is used as is.
    let floats: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let fpath = dir.join("floats.idx");
    std::fs::write(&fpath, idx_bytes(0x0D, &[1, 2], &floats)).unwrap();
    let s = data::load(&fpath, &info(&[2]), &DataOptions::default()).unwrap();
    assert_eq!(s, vec![TensorData::F32(vec![1.5, -2.0])]);

    let err = |p: &std::path::Path, i: &TensorInfo| {
        data::load(p, i, &DataOptions::default())
            .unwrap_err()
            .to_string()
    };
    // Truncated data, wrong sample size, labels, bad type, garbage gzip.
    let short = dir.join("short-idx");
    std::fs::write(&short, &raw[..raw.len() - 3]).unwrap();
    let e = err(&short, &input);
    assert!(e.contains("short-idx") && e.contains("truncated"), "{e}");
    let e = err(&plain, &info(&[1, 3, 3, 1]));
    assert!(e.contains("[2, 2]") && e.contains("[1, 3, 3, 1]"), "{e}");
    let labels = dir.join("labels-idx1-ubyte");
    std::fs::write(&labels, idx_bytes(0x08, &[3], &[1, 2, 3])).unwrap();
    assert!(err(&labels, &input).contains("label file"));
    let bad_type = dir.join("bad-type");
    std::fs::write(&bad_type, idx_bytes(0x07, &[1], &[1])).unwrap();
    assert!(err(&bad_type, &input).contains("element type 0x07"));
    let bad_gz = dir.join("bad.gz");
    std::fs::write(&bad_gz, [0x1f, 0x8b, 1, 2, 3]).unwrap();
    assert!(err(&bad_gz, &input).contains("bad.gz"));
    let huge = dir.join("huge-idx");
    std::fs::write(&huge, idx_bytes(0x08, &[u32::MAX, 65536, 65536], &[])).unwrap();
    assert!(err(&huge, &input).contains("too large"));
}

#[test]
fn samples_for_every_graph_input() {
    let dir = temp("multi");
    let (a, b) = (dir.join("a.npy"), dir.join("b.npy"));
    crate::npy::write(&a, &[2, 3], &TensorData::F32(vec![0.0; 6])).unwrap();
    crate::npy::write(&b, &[3, 3], &TensorData::F32(vec![0.0; 9])).unwrap();
    let mut builder = Builder::default();
    let x = builder.input("x", &[3]);
    let y = builder.input("y", &[3]);
    let s = builder.node(
        Op::Add {
            activation: Activation::None,
        },
        &[x, y],
        &[3],
    );
    let g = builder.finish(&[s]);
    let opts = DataOptions::default();
    let two = data::load_for_graph(&[a.clone(), a.clone()], &g, &opts).unwrap();
    assert_eq!((two.len(), two[0].len()), (2, 2));
    let e = data::load_for_graph(&[a.clone(), b], &g, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("b.npy") && e.contains("3 samples"), "{e}");
    let e = data::load_for_graph(&[a], &g, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 input(s), 1 data path(s)"), "{e}");
}

// ---------------------------------------------------------------- report

#[test]
fn report_measures_sqnr_of_every_layer() {
    let (float, _) = classifier();
    let s = samples(&float, 8, -1.0, 1.0, 3);
    let int8 = quantize(&float, &s, &QuantizeOptions::default()).unwrap();
    let r = report(&float, &int8, &s).unwrap();
    assert_eq!(r.samples, 8);
    // One row per graph input and node.
    assert_eq!(r.layers.len(), 1 + float.nodes.len());
    assert_eq!(r.layers[0].op, "input");
    // Quantizing a uniform input with 256 levels: SQNR close to the theoretical
    // 6.02 * 8 + 1.76 - 10 log10(3) ~ 49 dB for a full-scale uniform signal.
    assert!((r.layers[0].sqnr_db - 48.2).abs() < 2.0, "{r}");
    assert!(r.layers.iter().all(|l| l.sqnr_db > 15.0), "{r}");
    assert_eq!(r.outputs.len(), 2);
    assert_eq!(r.outputs[0].top1.map(|t| t.1), Some(8));
    let text = r.to_string();
    assert!(text.contains("SQNR dB") && text.contains("softmax") && text.contains("top-1"));
    // A graph compared with itself (float twin of float) has no noise at all.
    let same = report(&float, &float, &s).unwrap();
    assert!(same.layers.iter().all(|l| l.sqnr_db == f64::INFINITY));
    assert_eq!(same.top1_agreement(), Some(1.0));
}

#[test]
fn optimized_float_graphs_with_fused_residuals_quantize() {
    // x -> conv -> (+ x) -> relu: fuse_residual turns the ADD into the conv's epilogue.
    let mut rng = Rng(21);
    let mut b = Builder::default();
    let x = b.input("x", &[1, 4, 4, 2]);
    let w = b.constant("w", &[2, 3, 3, 2], rng.vec(36, -0.4, 0.4));
    let bias = b.constant("b", &[2], vec![0.05, -0.05]);
    let c = b.node(
        Op::Conv2d(conv_attrs(Activation::Relu)),
        &[x, w, bias],
        &[1, 4, 4, 2],
    );
    let y = b.node(
        Op::Add {
            activation: Activation::Relu,
        },
        &[x, c],
        &[1, 4, 4, 2],
    );
    let plain = b.finish(&[y]);
    let mut fused = plain.clone();
    crate::passes::optimize(&mut fused).unwrap();
    assert_eq!(fused.nodes.len(), 1);
    let s = samples(&plain, 8, -1.0, 1.0, 4);
    let from_fused = quantize(&fused, &s, &QuantizeOptions::default()).unwrap();
    let from_plain = quantize(&plain, &s, &QuantizeOptions::default()).unwrap();
    assert!(check(&from_fused).unwrap().is_empty());
    // The conv result is calibrated as a new tensor after the others; everything else
    // is quantized exactly as from the unfused graph, and the passes fuse it again.
    assert_eq!(from_fused.tensors.len(), fused.tensors.len() + 1);
    assert_eq!(from_fused.nodes.len(), 2);
    assert_eq!(quant(&from_fused, y), quant(&from_plain, y));
    let conv_result = from_fused.nodes[0].outputs[0];
    assert_eq!(quant(&from_fused, conv_result), quant(&from_plain, c));
    let mut refused = from_fused.clone();
    crate::passes::optimize(&mut refused).unwrap();
    assert_eq!(refused.nodes.len(), 1);
    let r = report(&fused, &from_fused, &s).unwrap();
    assert!(r.outputs[0].sqnr_db > 30.0, "{r}");
    // The split-out conv result is compared too.
    assert_eq!(r.layers.len(), 3, "{r}");
}

#[test]
fn onnx_operators_quantize_as_tflite_would() {
    use crate::ir::TransposeConv2dAttrs;
    let mut rng = Rng(31);
    let mut b = Builder::default();
    let x = b.input("x", &[1, 3, 3, 2]);
    // TRANSPOSE_CONV: per-channel weights on axis 0 (OHWI), int32 bias.
    let w = b.constant("tw", &[4, 3, 3, 2], rng.vec(72, -0.5, 0.5));
    let bias = b.constant("tb", &[4], vec![0.1, 0.2, -0.1, 0.0]);
    let tc = b.node(
        Op::TransposeConv2d(TransposeConv2dAttrs {
            stride: [2, 2],
            dilation: [1, 1],
            padding: Padding::Valid,
            activation: Activation::None,
        }),
        &[x, w, bias],
        &[1, 7, 7, 4],
    );
    // CLIP reading the conv alone: the conv takes the clip's range.
    let clip = b.node(
        Op::Clip {
            min: -1.0,
            max: 2.0,
        },
        &[tc],
        &[1, 7, 7, 4],
    );
    let k = b.constant("k", &[4], vec![0.5, 1.0, 1.5, 2.0]);
    let sub = b.node(
        Op::Sub {
            activation: Activation::None,
        },
        &[clip, k],
        &[1, 7, 7, 4],
    );
    let div = b.node(
        Op::Div {
            activation: Activation::None,
        },
        &[sub, k],
        &[1, 7, 7, 4],
    );
    let leaky = b.node(Op::LeakyRelu { alpha: 0.1 }, &[div], &[1, 7, 7, 4]);
    let t = b.node(
        Op::Transpose {
            perm: vec![0, 3, 1, 2],
        },
        &[leaky],
        &[1, 4, 7, 7],
    );
    // CLIP reading a tensor that another node reads too: its own range.
    let shared = b.node(Op::Clip { min: 0.0, max: 0.5 }, &[leaky], &[1, 7, 7, 4]);
    let float = b.finish(&[t, shared]);
    let s = samples(&float, 8, -1.0, 1.0, 8);
    let int8 = quantize(&float, &s, &QuantizeOptions::default()).unwrap();
    assert!(check(&int8).unwrap().is_empty());
    let wq = int8.info(w).quant.clone().unwrap();
    assert_eq!((wq.axis, wq.scale.len(), wq.zero_point), (0, 4, vec![0; 4]));
    assert_eq!(int8.info(bias).dtype, DType::I32);
    assert_eq!(quant(&int8, tc), quant(&int8, clip));
    assert_eq!(quant(&int8, t), quant(&int8, leaky));
    assert_ne!(quant(&int8, shared), quant(&int8, leaky));
    // The calibrated range lies inside the clip's [-1, 2].
    let (sc, zc) = quant(&int8, clip);
    assert!(sc <= 3.0 / 255.0 + 1e-6 && zc > -128, "{sc} {zc}");
    assert_eq!(int8.info(k).dtype, DType::I8);
    // DIV: s_sub / (s_k x s_div) >= 64, so TFLM's division stays within 31-bit shifts.
    let (s1, s2, s3) = (quant(&int8, sub).0, quant(&int8, k).0, quant(&int8, div).0);
    assert!(
        f64::from(s1) / (f64::from(s2) * f64::from(s3)) >= 63.9,
        "{s1} {s2} {s3}"
    );
    let r = report(&float, &int8, &s).unwrap();
    assert_eq!(r.layers[1].clamped_by, Some("clip"));
    for row in &r.layers {
        assert!(row.sqnr_db > 20.0, "{r}");
    }
}

#[test]
fn truncated_or_corrupted_data_files_never_panic() {
    use std::io::Write;
    let dir = temp("corrupt");
    let raw = idx_bytes(0x08, &[4, 2, 2], &[7; 16]);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&raw).unwrap();
    let gz = enc.finish().unwrap();
    let npy_path = dir.join("ok.npy");
    crate::npy::write(&npy_path, &[4, 2, 2], &TensorData::F32(vec![0.5; 16])).unwrap();
    let npy = std::fs::read(&npy_path).unwrap();
    let input = info(&[1, 2, 2, 1]);
    let opts = DataOptions::default();
    let mut rng = Rng(99);
    for (k, original) in [raw, gz, npy].into_iter().enumerate() {
        let path = dir.join(format!("case{k}"));
        for cut in 0..original.len() {
            std::fs::write(&path, &original[..cut]).unwrap();
            let _ = data::load(&path, &input, &opts);
        }
        for _ in 0..200 {
            let mut bytes = original.clone();
            let i = rng.next_u32() as usize % bytes.len();
            bytes[i] ^= 1 << (rng.next_u32() % 8);
            std::fs::write(&path, &bytes).unwrap();
            let _ = data::load(&path, &input, &opts);
        }
        std::fs::write(&path, &original).unwrap();
        assert_eq!(data::load(&path, &input, &opts).unwrap().len(), 4);
    }
}
