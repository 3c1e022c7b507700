//! CLIP has no TFLite builtin, so no TFLM golden vectors: it is checked here at the
//! executor level instead. int8 results are within half an output quantization step of
//! the float clamp on every int8 input (plus, for requantization multipliers below 1/2,
//! the intermediate rounding of TFLM's double-rounding multiply, which the int8 CLIP
//! shares with TFLM's RELU); f32 is the exact clamp; and a CLIP with the
//! bounds of RELU, RELU6 or RELU_N1_TO_1 folds into the producing op without changing a
//! single output bit (other bounds stay a node of their own).

use kiln_codegen::exec::{Executor, TensorData};
use kiln_codegen::import::tflite;
use kiln_codegen::ir::{DType, Graph, Node, Op, QuantParams, Tensor, TensorId, TensorInfo};
use kiln_codegen::passes::optimize;
use kiln_runtime::quant::quantize_multiplier;
use std::path::Path;

/// A graph with one CLIP from a `[1, 256]` input to an output of the same shape.
fn clip_graph(dtype: DType, quant: Option<((f32, i32), (f32, i32))>, min: f32, max: f32) -> Graph {
    let info = |q: Option<(f32, i32)>| TensorInfo {
        shape: vec![1, 256],
        dtype,
        quant: q.map(|(s, z)| QuantParams::per_tensor(s, z)),
    };
    let tensor = |name: &str, q| Tensor {
        name: name.into(),
        info: info(q),
        data: None,
    };
    let graph = Graph {
        tensors: vec![
            tensor("x", quant.map(|q| q.0)),
            tensor("y", quant.map(|q| q.1)),
        ],
        nodes: vec![Node {
            name: "clip".into(),
            op: Op::Clip { min, max },
            inputs: vec![TensorId(0)],
            outputs: vec![TensorId(1)],
        }],
        inputs: vec![TensorId(0)],
        outputs: vec![TensorId(1)],
    };
    graph.validate().unwrap();
    graph
}

const BOUNDS: [(f32, f32); 8] = [
    (0.0, f32::INFINITY),
    (0.0, 6.0),
    (-1.0, 1.0),
    (-3.7, 2.2),
    (f32::NEG_INFINITY, 0.5),
    (f32::NEG_INFINITY, f32::INFINITY),
    (0.3, 0.31),
    (2.0, -2.0),
];

#[test]
fn int8_is_within_half_a_step_of_the_float_clamp() {
    let quants = [
        ((0.05f32, -3), (0.05f32, -3)),
        ((0.1, 20), (0.03, -128)),
        ((0.02, -128), (0.07, 5)),
        ((0.5, 0), (0.01, 100)),
    ];
    let all: Vec<i8> = (-128..=127).collect();
    for (qi, qo) in quants {
        for (lo, hi) in BOUNDS {
            let g = clip_graph(DType::I8, Some((qi, qo)), lo, hi);
            let got = Executor::new(&g)
                .unwrap()
                .run(&[TensorData::I8(all.clone())])
                .unwrap();
            let TensorData::I8(got) = &got[0] else {
                panic!("int8 result expected")
            };
            let (so, zo) = (f64::from(qo.0), f64::from(qo.1));
            // Half a step, plus what the rounding high multiply can add before a right
            // shift of `-shift` bits (TFLM's MultiplyByQuantizedMultiplier).
            let m = quantize_multiplier(f64::from(qi.0 / qo.0)).unwrap();
            let steps = 0.5
                + if m.shift < 0 {
                    0.5 * 2f64.powi(m.shift)
                } else {
                    0.0
                };
            let (out_lo, out_hi) = ((-128.0 - zo) * so, (127.0 - zo) * so);
            for (&x, &y) in all.iter().zip(got) {
                let real = f64::from(qi.0) * (f64::from(x) - f64::from(qi.1));
                // ONNX clip (max wins when lo > hi), then what int8 can hold.
                let want = real
                    .max(f64::from(lo))
                    .min(f64::from(hi))
                    .clamp(out_lo, out_hi);
                let have = (f64::from(y) - zo) * so;
                assert!(
                    (have - want).abs() <= steps * so * (1.0 + 1e-5) + 1e-7,
                    "clip({lo}, {hi}) of {x} with {qi:?} -> {qo:?}: {y} is {have}, want {want}"
                );
            }
        }
    }
}

#[test]
fn f32_is_the_exact_clamp() {
    let x: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) * 0.0625).collect();
    for (lo, hi) in BOUNDS {
        let g = clip_graph(DType::F32, None, lo, hi);
        let got = Executor::new(&g)
            .unwrap()
            .run(&[TensorData::F32(x.clone())])
            .unwrap();
        let want: Vec<f32> = x.iter().map(|&v| v.max(lo).min(hi)).collect();
        assert_eq!(got, vec![TensorData::F32(want)], "clip({lo}, {hi})");
    }
}

#[test]
fn nan_bounds_are_refused() {
    let g = clip_graph(DType::F32, None, 0.0, 1.0);
    let mut bad = g.clone();
    bad.nodes[0].op = Op::Clip {
        min: f32::NAN,
        max: 1.0,
    };
    assert!(bad.validate().is_err());
}

/// One of the single-op models under models/ops.
fn model(rel: &str) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/ops")
        .join(rel)
        .join("model.tflite");
    tflite::load(&path).unwrap()
}

/// Appends a CLIP reading the graph's only output into a tensor quantized like it.
fn append_clip(graph: &mut Graph, min: f32, max: f32) {
    let last = graph.outputs[0];
    let info = graph.info(last).clone();
    graph.tensors.push(Tensor {
        name: "clipped".into(),
        info,
        data: None,
    });
    let out = TensorId(graph.tensors.len() - 1);
    graph.nodes.push(Node {
        name: "clip".into(),
        op: Op::Clip { min, max },
        inputs: vec![last],
        outputs: vec![out],
    });
    graph.outputs = vec![out];
}

/// Deterministic inputs: all of int8, or floats in [-4, 4).
fn inputs(graph: &Graph, seed: u64) -> Vec<TensorData> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(99);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    graph
        .inputs
        .iter()
        .map(|id| {
            let n = graph.info(*id).num_elements();
            match graph.info(*id).dtype {
                DType::F32 => TensorData::F32(
                    (0..n)
                        .map(|_| (next() % 8000) as f32 / 1000.0 - 4.0)
                        .collect(),
                ),
                _ => TensorData::I8((0..n).map(|_| next() as u8 as i8).collect()),
            }
        })
        .collect()
}

/// Optimizes a copy of `graph`, checks the outputs are bit-identical on several inputs,
/// and returns the node counts before and after.
fn nodes_before_after_exact(graph: &Graph) -> (usize, usize) {
    graph.validate().unwrap();
    let mut optimized = graph.clone();
    optimize(&mut optimized).unwrap();
    let (a, b) = (
        Executor::new(graph).unwrap(),
        Executor::new(&optimized).unwrap(),
    );
    for seed in 0..6 {
        let x = inputs(graph, seed);
        let (ya, yb) = (a.run(&x).unwrap(), b.run(&x).unwrap());
        // Bit for bit, floats included.
        let bits =
            |ys: &[TensorData]| -> Vec<Vec<u8>> { ys.iter().map(|y| y.to_le_bytes()).collect() };
        assert_eq!(bits(&ya), bits(&yb), "seed {seed}");
    }
    (graph.nodes.len(), optimized.nodes.len())
}

#[test]
fn relu_shaped_clips_fold_into_the_producer_bit_exactly() {
    for rel in [
        "conv_2d_i8_s1_same_dil1_none_perchannel_k3",
        "conv_2d_i8_s2_same_dil1_relu6_perchannel_k3",
        "add_i8_1x4x4x8_1x4x4x8_none_twoscales",
        "fully_connected_i8_in1x32_out16_none_perchannel",
        "conv_2d_f32_s1_same_dil1_none_perchannel_k3",
        "add_f32_1x4x4x8_1x1x1x8_relu_bcast",
    ] {
        for (lo, hi) in [(0.0, f32::INFINITY), (0.0, 6.0), (-1.0, 1.0)] {
            let mut g = model(rel);
            let producer = g.nodes[0].op.clone();
            append_clip(&mut g, lo, hi);
            let (before, after) = nodes_before_after_exact(&g);
            // RELU_N1_TO_1 does not compose with a RELU or RELU6 already fused.
            let composes = lo != -1.0 || !format!("{producer:?}").contains("Relu");
            let want = if composes { 1 } else { 2 };
            assert_eq!((before, after), (2, want), "{rel} + clip({lo}, {hi})");
        }
    }
}

#[test]
fn other_clips_and_requantizing_clips_stay() {
    let mut g = model("conv_2d_i8_s1_same_dil1_none_perchannel_k3");
    append_clip(&mut g, -1.0, 2.0);
    assert_eq!(nodes_before_after_exact(&g), (2, 2));

    // A RELU-shaped clip that also requantizes is not the producer's clamp.
    let mut g = model("conv_2d_i8_s1_same_dil1_none_perchannel_k3");
    append_clip(&mut g, 0.0, f32::INFINITY);
    let out = g.outputs[0];
    let (s, z) = g.info(out).scale_zero_point().unwrap();
    g.tensors[out.0].info.quant = Some(QuantParams::per_tensor(s * 0.5, z));
    assert_eq!(nodes_before_after_exact(&g), (2, 2));
}
