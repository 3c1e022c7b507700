//! The ONNX exporter against kiln itself: graphs using every op the exporter maps are
//! exported, read back by kiln's ONNX importer (the symbolic batch bound to 1) and run
//! by kiln's f32 executor; the outputs must equal the original graph's within 1e-5 of
//! their largest magnitude. Inputs and 4-D outputs are converted between kiln's NHWC
//! and the exported model's NCHW. Unsupported graphs fail with the node named.
//! (onnxruntime's agreement is checked by tests/export_onnx.rs with golden vectors.)

use kiln_codegen::exec::{Executor, TensorData};
use kiln_codegen::export::onnx::{self, ExportError};
use kiln_codegen::import::onnx::parse_with_dims;
use kiln_codegen::ir::{
    infer_output_shape, Activation, Conv2dAttrs, DType, DepthwiseConv2dAttrs, Graph, Node, Op,
    Padding, Pool2dAttrs, QuantParams, ResidualAdd, TensorId, TensorInfo,
};

/// Builds a float graph node by node with seeded random constants.
struct G {
    g: Graph,
    rng: u64,
}

impl G {
    fn new(seed: u64) -> Self {
        G {
            g: Graph::default(),
            rng: seed | 1,
        }
    }

    fn next(&mut self) -> f32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        ((self.rng >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn tensor(&mut self, name: &str, shape: Vec<usize>, data: Option<Vec<f32>>) -> TensorId {
        self.g.push_f32(name, shape, data.as_deref())
    }

    fn input(&mut self, shape: Vec<usize>) -> TensorId {
        let id = self.tensor("input", shape, None);
        self.g.inputs.push(id);
        id
    }

    fn konst(&mut self, name: &str, shape: Vec<usize>) -> TensorId {
        let n = shape.iter().product();
        let data = (0..n).map(|_| self.next()).collect();
        self.tensor(name, shape, Some(data))
    }

    fn op(&mut self, name: &str, op: Op, inputs: Vec<TensorId>, declared: &[usize]) -> TensorId {
        let infos: Vec<&TensorInfo> = inputs.iter().map(|&i| self.g.info(i)).collect();
        let shape = infer_output_shape(&op, &infos, declared).unwrap();
        let out = self.tensor(&format!("{name}/out"), shape, None);
        self.g.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
            outputs: vec![out],
        });
        out
    }

    fn done(mut self, outputs: Vec<TensorId>) -> Graph {
        self.g.outputs = outputs;
        self.g.validate().unwrap();
        self.g
    }
}

fn conv(stride: usize, dilation: usize, padding: Padding, activation: Activation) -> Op {
    Op::Conv2d(Conv2dAttrs {
        stride: [stride, stride],
        dilation: [dilation, dilation],
        padding,
        activation,
        residual: None,
    })
}

fn pool(size: usize, stride: usize, padding: Padding) -> Pool2dAttrs {
    Pool2dAttrs {
        filter: [size, size],
        stride: [stride, stride],
        padding,
        activation: Activation::None,
    }
}

fn explicit(top: usize, bottom: usize, left: usize, right: usize) -> Padding {
    Padding::Explicit {
        top,
        bottom,
        left,
        right,
    }
}

/// `data` of an NHWC `shape` as NCHW, or back with `to_nhwc`.
fn relayout(data: &[f32], nhwc: &[usize], to_nhwc: bool) -> Vec<f32> {
    let (n, h, w, c) = (nhwc[0], nhwc[1], nhwc[2], nhwc[3]);
    let mut out = vec![0.0; data.len()];
    for b in 0..n {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let i_nhwc = ((b * h + y) * w + x) * c + ch;
                    let i_nchw = ((b * c + ch) * h + y) * w + x;
                    if to_nhwc {
                        out[i_nhwc] = data[i_nchw];
                    } else {
                        out[i_nchw] = data[i_nhwc];
                    }
                }
            }
        }
    }
    out
}

fn f32s(t: &TensorData) -> Vec<f32> {
    t.as_f32().expect("float output").to_vec()
}

/// Exports `g`, imports it back and compares both on seeded random inputs.
fn round_trip(g: &Graph) -> Vec<u8> {
    let bytes = onnx::to_bytes(g).unwrap_or_else(|e| panic!("export: {e}"));
    assert_eq!(
        bytes,
        onnx::to_bytes(g).unwrap(),
        "export is not deterministic"
    );
    let back = parse_with_dims(&bytes, "exported.onnx", None, &[(onnx::BATCH, 1)])
        .unwrap_or_else(|e| panic!("import of the export: {e}"));
    let mut rng = G::new(99);
    for _ in 0..3 {
        let inputs: Vec<Vec<f32>> = g
            .inputs
            .iter()
            .map(|&i| (0..g.info(i).num_elements()).map(|_| rng.next()).collect())
            .collect();
        let want = Executor::new(g)
            .unwrap()
            .run(
                &inputs
                    .iter()
                    .cloned()
                    .map(TensorData::F32)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let fed: Vec<TensorData> = g
            .inputs
            .iter()
            .zip(&inputs)
            .map(|(&i, d)| {
                let s = &g.info(i).shape;
                TensorData::F32(if s.len() == 4 {
                    relayout(d, s, false)
                } else {
                    d.clone()
                })
            })
            .collect();
        let got = Executor::new(&back).unwrap().run(&fed).unwrap();
        for (j, (&o, (w, gt))) in g.outputs.iter().zip(want.iter().zip(&got)).enumerate() {
            let s = &g.info(o).shape;
            let gt = if s.len() == 4 {
                relayout(&f32s(gt), s, true)
            } else {
                f32s(gt)
            };
            let w = f32s(w);
            assert_eq!(gt.len(), w.len(), "output {j}");
            let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = w
                .iter()
                .zip(&gt)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-5 * max.max(1e-3),
                "output {j}: max |diff| {diff} for max |value| {max}"
            );
        }
    }
    bytes
}

/// Convolutions (SAME with stride 2, dilation, explicit padding), depthwise with a
/// multiplier, per-channel Mul/Add constants, pools with padding (the average over
/// in-bounds elements only), a channel concatenation, a fused residual, a spatial mean
/// and a softmax.
#[test]
fn image_ops_round_trip() {
    let mut b = G::new(1);
    let x = b.input(vec![1, 9, 9, 3]);
    let f1 = b.konst("c1/filter", vec![4, 3, 3, 3]);
    let b1 = b.konst("c1/bias", vec![4]);
    let c1 = b.op(
        "c1",
        conv(2, 1, Padding::Same, Activation::Relu6),
        vec![x, f1, b1],
        &[],
    );
    let dwf = b.konst("dw/filter", vec![1, 3, 3, 8]);
    let dw = b.op(
        "dw",
        Op::DepthwiseConv2d(DepthwiseConv2dAttrs {
            stride: [1, 1],
            dilation: [2, 2],
            padding: Padding::Same,
            depth_multiplier: 2,
            activation: Activation::None,
        }),
        vec![c1, dwf],
        &[],
    );
    let scale = b.konst("bn/scale", vec![8]);
    let m = b.op(
        "bn_mul",
        Op::Mul {
            activation: Activation::None,
        },
        vec![dw, scale],
        &[],
    );
    let shift = b.konst("bn/shift", vec![1, 1, 1, 8]);
    let a = b.op(
        "bn_add",
        Op::Add {
            activation: Activation::Relu,
        },
        vec![m, shift],
        &[],
    );
    let lr = b.op("leaky", Op::LeakyRelu { alpha: 0.1 }, vec![a], &[]);
    let ap = b.op(
        "avg",
        Op::AveragePool2d(pool(3, 2, Padding::Same)),
        vec![lr],
        &[],
    );
    let mp = b.op(
        "max",
        Op::MaxPool2d(pool(2, 2, explicit(1, 0, 1, 0))),
        vec![lr],
        &[],
    );
    let cat = b.op(
        "cat",
        Op::Concatenation {
            axis: 3,
            activation: Activation::None,
        },
        vec![ap, mp],
        &[],
    );
    let f2 = b.konst("c2/filter", vec![16, 1, 1, 16]);
    let b2 = b.konst("c2/bias", vec![16]);
    let mut res = conv(1, 1, Padding::Valid, Activation::None);
    if let Op::Conv2d(attrs) = &mut res {
        attrs.residual = Some(ResidualAdd {
            conv_quant: None,
            conv_is_first: false,
            activation: Activation::Relu,
        });
    }
    let c2 = b.op("c2_res", res, vec![cat, f2, b2, cat], &[]);
    let mean = b.op(
        "mean",
        Op::Mean {
            axes: vec![1, 2],
            keep_dims: false,
        },
        vec![c2],
        &[],
    );
    let sm = b.op("softmax", Op::Softmax { beta: 1.0 }, vec![mean], &[]);
    let g = b.done(vec![sm]);
    round_trip(&g);
}

/// A flatten of an image (features in CHW order in the model) feeding element-wise ops
/// with constants, a dense layer with a fused activation, and a softmax with a beta.
#[test]
fn flatten_then_dense_round_trip() {
    let mut b = G::new(2);
    let x = b.input(vec![1, 6, 6, 2]);
    let f = b.konst("c/filter", vec![4, 3, 3, 2]);
    let c = b.op(
        "c",
        conv(1, 1, Padding::Valid, Activation::None),
        vec![x, f],
        &[],
    );
    let flat = b.op("flatten", Op::Reshape, vec![c], &[1, 64]);
    let k = b.konst("scale", vec![64]);
    let m = b.op(
        "mul",
        Op::Mul {
            activation: Activation::None,
        },
        vec![flat, k],
        &[],
    );
    let t = b.op("tanh", Op::Tanh, vec![m], &[]);
    let s = b.op("sigmoid", Op::Logistic, vec![t], &[]);
    let w = b.konst("fc/weights", vec![10, 64]);
    let bias = b.konst("fc/bias", vec![10]);
    let fc = b.op(
        "fc",
        Op::FullyConnected {
            activation: Activation::Relu,
            keep_num_dims: false,
        },
        vec![s, w, bias],
        &[],
    );
    let sm = b.op("softmax", Op::Softmax { beta: 0.5 }, vec![fc], &[]);
    // A dense layer straight on a 4-D tensor flattens it too.
    let w2 = b.konst("fc2/weights", vec![3, 64]);
    let fc2 = b.op(
        "fc2",
        Op::FullyConnected {
            activation: Activation::None,
            keep_num_dims: false,
        },
        vec![c, w2],
        &[],
    );
    // Joining the flattened features with another tensor needs kiln's (HWC) order back.
    let joined = b.op(
        "join",
        Op::Concatenation {
            axis: 1,
            activation: Activation::None,
        },
        vec![t, fc2],
        &[],
    );
    let g = b.done(vec![sm, fc2, joined]);
    round_trip(&g);
}

/// Ops that need kiln's element order (a reshape that is not a flatten, a transpose, a
/// dense layer keeping its leading dims), pads, clips, Sub/Div and a 4-D graph output.
#[test]
fn order_dependent_ops_round_trip() {
    let mut b = G::new(3);
    let x = b.input(vec![1, 5, 4, 3]);
    let f = b.konst("c/filter", vec![6, 2, 2, 3]);
    let c = b.op(
        "c",
        conv(1, 2, explicit(1, 0, 2, 1), Activation::None),
        vec![x, f],
        &[],
    );
    let clip = b.op(
        "clip",
        Op::Clip {
            min: -0.5,
            max: 0.7,
        },
        vec![c],
        &[],
    );
    let pad = b.op(
        "pad",
        Op::Pad {
            paddings: vec![[0, 0], [1, 2], [0, 1], [0, 0]],
        },
        vec![clip],
        &[],
    );
    let tr = b.op(
        "transpose",
        Op::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        vec![pad],
        &[],
    );
    let k = b.konst("k", vec![6]);
    let sub = b.op(
        "sub",
        Op::Sub {
            activation: Activation::None,
        },
        vec![tr, k],
        &[],
    );
    let s = b.g.info(sub).shape.clone();
    let rows = b.op("rows", Op::Reshape, vec![sub], &[1, s[1] * s[2], s[3]]);
    let w = b.konst("fc/weights", vec![5, 6]);
    let fc = b.op(
        "fc",
        Op::FullyConnected {
            activation: Activation::None,
            keep_num_dims: true,
        },
        vec![rows, w],
        &[],
    );
    let d = b.konst("d", vec![5]);
    let div = b.op(
        "div",
        Op::Div {
            activation: Activation::None,
        },
        vec![fc, d],
        &[],
    );
    let r6 = b.op("relu6", Op::Relu6, vec![div], &[]);
    let keep = b.op(
        "mean_keep",
        Op::Mean {
            axes: vec![1, 2],
            keep_dims: true,
        },
        vec![sub],
        &[],
    );
    let relu = b.op("relu", Op::Relu, vec![keep], &[]);
    let g = b.done(vec![r6, sub, relu]);
    round_trip(&g);
}

fn export_error(g: &Graph) -> String {
    match onnx::to_bytes(g) {
        Ok(_) => panic!("exported"),
        Err(e) => {
            assert!(matches!(e, ExportError::Node { .. }), "{e}");
            e.to_string()
        }
    }
}

#[test]
fn unsupported_graphs_name_the_node() {
    let mut b = G::new(4);
    let x = b.input(vec![1, 4, 4, 2]);
    let flat = b.op("batch_mixer", Op::Reshape, vec![x], &[2, 16]);
    let e = export_error(&b.done(vec![flat]));
    assert!(
        e.contains("batch_mixer") && e.contains("batch dimension"),
        "{e}"
    );

    let mut b = G::new(5);
    let x = b.input(vec![1, 4, 4, 2]);
    let m = b.op(
        "batch_mean",
        Op::Mean {
            axes: vec![0, 1],
            keep_dims: true,
        },
        vec![x],
        &[],
    );
    let e = export_error(&b.done(vec![m]));
    assert!(
        e.contains("node 0 'batch_mean' (mean)") && e.contains("batch axis"),
        "{e}"
    );

    let mut b = G::new(6);
    let x = b.input(vec![1, 8]);
    let q = b.op("to_int8", Op::Quantize, vec![x], &[]);
    b.g.tensors[q.0].info.dtype = DType::I8;
    b.g.tensors[q.0].info.quant = Some(QuantParams::per_tensor(0.1, 0));
    let dq = b.op("to_float", Op::Dequantize, vec![q], &[]);
    let e = export_error(&b.done(vec![dq]));
    assert!(e.contains("to_int8") && e.contains("float graph"), "{e}");
}
