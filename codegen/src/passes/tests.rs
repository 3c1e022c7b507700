//! Each pass on small graphs cut from the single-op test models: the rewrite happens
//! where it is legal, not where it is not, and the results never change.

use super::optimize;
use crate::exec::{Executor, TensorData};
use crate::import::tflite;
use crate::ir::{DType, Graph, Node, Op, QuantParams, Tensor, TensorId, TensorInfo};
use std::path::Path;

fn model(rel: &str) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/ops")
        .join(rel)
        .join("model.tflite");
    tflite::load(&path).unwrap()
}

/// Deterministic inputs covering the whole int8 range or [-4, 4) for floats.
fn inputs(graph: &Graph, seed: u64) -> Vec<TensorData> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
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
            let info = graph.info(*id);
            let n = info.num_elements();
            match info.dtype {
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

/// Optimizes a copy of `graph`, checks outputs on several inputs are unchanged, and
/// returns the number of nodes before and after.
fn assert_exact(graph: &Graph) -> (usize, usize) {
    graph.validate().unwrap();
    let mut optimized = graph.clone();
    optimize(&mut optimized).unwrap();
    let (before, after) = (
        Executor::new(graph).unwrap(),
        Executor::new(&optimized).unwrap(),
    );
    for seed in 0..8 {
        let x = inputs(graph, seed);
        assert_eq!(
            before.run(&x).unwrap(),
            after.run(&x).unwrap(),
            "seed {seed}"
        );
    }
    (graph.nodes.len(), optimized.nodes.len())
}

/// Appends `op` reading the graph's (only) output into a new tensor like it, with
/// `quant` if given, and makes that the output.
fn append(graph: &mut Graph, op: Op, quant: Option<QuantParams>, shape: Option<Vec<usize>>) {
    let last = graph.outputs[0];
    let mut info: TensorInfo = graph.info(last).clone();
    if let Some(q) = quant {
        info.quant = Some(q);
    }
    if let Some(s) = shape {
        info.shape = s;
    }
    graph.tensors.push(Tensor {
        name: format!("after_{}", op.name()),
        info,
        data: None,
    });
    let out = TensorId(graph.tensors.len() - 1);
    graph.nodes.push(Node {
        name: op.name().into(),
        op,
        inputs: vec![last],
        outputs: vec![out],
    });
    graph.outputs = vec![out];
}

/// Puts a PAD in front of the graph's (only) input: a new, smaller input padded by
/// `paddings` into the old one.
fn prepend_pad(graph: &mut Graph, paddings: Vec<[usize; 2]>) {
    let old = graph.inputs[0];
    let mut info = graph.info(old).clone();
    for (d, p) in info.shape.iter_mut().zip(&paddings) {
        *d -= p[0] + p[1];
    }
    graph.tensors.push(Tensor {
        name: "unpadded".into(),
        info,
        data: None,
    });
    let new = TensorId(graph.tensors.len() - 1);
    graph.nodes.insert(
        0,
        Node {
            name: "pad".into(),
            op: Op::Pad { paddings },
            inputs: vec![new],
            outputs: vec![old],
        },
    );
    graph.inputs = vec![new];
}

#[test]
fn relu_and_relu6_fold_into_the_producer() {
    for (rel, op) in [
        ("conv_2d_i8_s1_same_dil1_none_perchannel_k3", Op::Relu),
        ("conv_2d_i8_s1_same_dil1_none_perchannel_k3", Op::Relu6),
        ("conv_2d_i8_s2_same_dil1_relu6_perchannel_k3", Op::Relu),
        (
            "depthwise_conv_2d_i8_s1_same_dil1_m1_none_perchannel",
            Op::Relu6,
        ),
        (
            "fully_connected_i8_in1x640_out32_relu_perchannel_large",
            Op::Relu6,
        ),
        ("add_i8_1x4x4x8_1x4x4x8_none_twoscales", Op::Relu),
        ("conv_2d_f32_s1_same_dil1_none_perchannel_k3", Op::Relu6),
        ("conv_2d_f32_s2_same_dil1_relu6_perchannel_k3", Op::Relu),
    ] {
        let mut g = model(rel);
        append(&mut g, op.clone(), None, None);
        assert_eq!(assert_exact(&g), (2, 1), "{rel} + {}", op.name());
    }
}

#[test]
fn relu_with_its_own_requantization_stays() {
    let mut g = model("conv_2d_i8_s1_same_dil1_none_perchannel_k3");
    let (s, z) = g.info(g.outputs[0]).scale_zero_point().unwrap();
    append(
        &mut g,
        Op::Relu,
        Some(QuantParams::per_tensor(s * 0.5, z)),
        None,
    );
    assert_eq!(assert_exact(&g), (2, 2));
}

#[test]
fn pad_folds_into_convolutions() {
    for (rel, pads) in [
        (
            "conv_2d_i8_s1_valid_dil1_relu_pertensor_k3",
            vec![[0, 0], [1, 1], [0, 2], [0, 0]],
        ),
        (
            "conv_2d_i8_s2_same_dil1_relu6_perchannel_k3",
            vec![[0, 0], [1, 0], [1, 1], [0, 0]],
        ),
        (
            "depthwise_conv_2d_i8_s2_valid_dil2_m1_none_perchannel",
            vec![[0, 0], [2, 2], [1, 0], [0, 0]],
        ),
        (
            "conv_2d_f32_s1_valid_dil1_relu_pertensor_k3",
            vec![[0, 0], [2, 0], [1, 1], [0, 0]],
        ),
    ] {
        let mut g = model(rel);
        prepend_pad(&mut g, pads);
        assert_eq!(assert_exact(&g), (2, 1), "{rel}");
    }
}

#[test]
fn pad_of_channels_or_into_pooling_stays() {
    let mut g = model("conv_2d_i8_s1_valid_dil1_relu_pertensor_k3");
    let c = g.info(g.inputs[0]).shape[3];
    if c > 1 {
        prepend_pad(&mut g, vec![[0, 0], [0, 0], [0, 0], [1, 0]]);
        assert_eq!(assert_exact(&g), (2, 2));
    }
    let mut g = model("average_pool_2d_i8_f3x3_s1_same_relu");
    prepend_pad(&mut g, vec![[0, 0], [1, 1], [1, 1], [0, 0]]);
    assert_eq!(assert_exact(&g), (2, 2));
}

#[test]
fn reshape_chains_and_identity_requantize_collapse() {
    let mut g = model("reshape_i8_1x4x4x8_to_1x128");
    append(&mut g, Op::Reshape, None, Some(vec![2, 64]));
    append(&mut g, Op::Reshape, None, Some(vec![4, 32]));
    assert_eq!(assert_exact(&g), (3, 1));

    let mut g = model("relu_i8_1x64_s0.1_zp20_to_s0.1_zp20");
    append(&mut g, Op::Quantize, None, None);
    append(&mut g, Op::Relu, None, None);
    // quantize(identity) is removed, then the second relu folds into... nothing (relu
    // has no activation slot), so two nodes remain.
    assert_eq!(assert_exact(&g), (3, 2));
}

#[test]
fn unread_nodes_are_removed() {
    let mut g = model("relu_i8_1x64_s0.1_zp20_to_s0.1_zp20");
    let keep = g.outputs.clone();
    append(
        &mut g,
        Op::Tanh,
        Some(QuantParams::per_tensor(1.0 / 128.0, 0)),
        None,
    );
    g.outputs = keep;
    assert_eq!(assert_exact(&g), (2, 1));
}

#[test]
fn residual_add_fuses_into_the_conv_with_either_operand_order() {
    for (rel, conv_first) in [
        ("conv_2d_i8_s1_same_dil1_none_perchannel_k3", true),
        ("conv_2d_i8_s1_same_dil1_none_perchannel_k3", false),
        ("conv_2d_i8_s2_same_dil1_relu6_perchannel_k3", true),
        ("conv_2d_f32_s1_same_dil1_none_perchannel_k3", false),
    ] {
        let mut g = model(rel);
        // A second graph input shaped like the conv result is the skip tensor.
        let out = g.outputs[0];
        let mut skip_info = g.info(out).clone();
        if let Some((s, z)) = skip_info.scale_zero_point() {
            skip_info.quant = Some(QuantParams::per_tensor(s * 1.7, (z + 11).clamp(-128, 127)));
        }
        g.tensors.push(Tensor {
            name: "skip".into(),
            info: skip_info,
            data: None,
        });
        let skip = TensorId(g.tensors.len() - 1);
        g.inputs.push(skip);
        let mut sum_info = g.info(out).clone();
        if let Some((s, z)) = sum_info.scale_zero_point() {
            sum_info.quant = Some(QuantParams::per_tensor(s * 2.1, (z - 5).clamp(-128, 127)));
        }
        g.tensors.push(Tensor {
            name: "sum".into(),
            info: sum_info,
            data: None,
        });
        let sum = TensorId(g.tensors.len() - 1);
        let inputs = if conv_first {
            vec![out, skip]
        } else {
            vec![skip, out]
        };
        g.nodes.push(Node {
            name: "add".into(),
            op: Op::Add {
                activation: crate::ir::Activation::Relu,
            },
            inputs,
            outputs: vec![sum],
        });
        g.outputs = vec![sum];
        assert_eq!(assert_exact(&g), (2, 1), "{rel}, conv first: {conv_first}");
    }
}
