//! TRANSPOSE_CONV with explicit padding (what ONNX ConvTranspose imports to) against the
//! TFLite SAME / VALID models whose TFLM golden vectors it must then reproduce: the same
//! top/left padding given explicitly gives bit-identical results.

use kiln_codegen::exec::{Executor, TensorData};
use kiln_codegen::import::tflite;
use kiln_codegen::ir::{Graph, Op, Padding};
use kiln_codegen::npy;
use std::path::{Path, PathBuf};

fn dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/ops")
        .join(rel)
}

/// The golden input and output of sample `s`.
fn sample(rel: &str, s: usize) -> (TensorData, TensorData) {
    let read = |f: &str| npy::read(&dir(rel).join("golden").join(f)).unwrap();
    let (x, y) = (read("input_0.npy"), read("output_0.npy"));
    let (nx, ny) = (x.data.len() / x.shape[0], y.data.len() / y.shape[0]);
    (x.data.slice(s * nx, nx), y.data.slice(s * ny, ny))
}

/// `graph` with its padding given explicitly; `None` if the shapes then do not fit.
fn with_explicit(graph: &Graph, top: usize, left: usize) -> Option<Graph> {
    let mut g = graph.clone();
    let Op::TransposeConv2d(a) = &mut g.nodes[0].op else {
        panic!("not a transpose conv model")
    };
    // bottom/right are implied by the output shape; give them arbitrary values.
    a.padding = Padding::Explicit {
        top,
        bottom: 99,
        left,
        right: 99,
    };
    g.validate().ok().map(|()| g)
}

#[test]
fn explicit_padding_reproduces_same_and_valid() {
    for (rel, pad) in [
        // Output 7 from input 4, stride 2, 3x3: forward SAME conv pads 1 on top/left.
        (
            "transpose_conv_2d_i8_s2_same_relu_n1_to_1_perchannel_k3_out7",
            1,
        ),
        ("transpose_conv_2d_f32_s2_same_none_perchannel_k3_out7", 1),
        ("transpose_conv_2d_i8_s2_same_none_perchannel_k3", 0),
        ("transpose_conv_2d_i8_s2_valid_relu6_perchannel_k4", 0),
        ("transpose_conv_2d_f32_s1_valid_relu_pertensor_k3x2", 0),
    ] {
        let graph = tflite::load(&dir(rel).join("model.tflite")).unwrap();
        let explicit = with_explicit(&graph, pad, pad).unwrap();
        let (a, b) = (
            Executor::new(&graph).unwrap(),
            Executor::new(&explicit).unwrap(),
        );
        for s in 0..4 {
            let (x, want) = sample(rel, s);
            let x = std::slice::from_ref(&x);
            let (ya, yb) = (a.run(x).unwrap(), b.run(x).unwrap());
            assert_eq!(ya[0].to_le_bytes(), yb[0].to_le_bytes(), "{rel} sample {s}");
            if let TensorData::I8(_) = want {
                assert_eq!(ya[0], want, "{rel} sample {s} against TFLM");
            }
        }
        // One row more padding (where the stride leaves room) shifts the output.
        if let Some(shifted) = with_explicit(&graph, pad + 1, pad) {
            let (x, _) = sample(rel, 0);
            let x = std::slice::from_ref(&x);
            let ys = Executor::new(&shifted).unwrap().run(x).unwrap();
            assert_ne!(ys, a.run(x).unwrap(), "{rel}");
        }
    }
}
