//! kiln's ONNX exporter against onnxruntime: models built by kiln-train from model files
//! (fixed seeds, no training) are exported and compared with the committed
//! `tests/fixtures/export/<name>/model.onnx` byte for byte, so the golden vectors next to
//! them (onnxruntime 1.32 on a batch of 8, written by scripts/onnx/make_export_goldens.py)
//! belong to today's exporter. kiln's f32 executor on the original graph, and on the
//! export read back by kiln's importer, must match onnxruntime within 1e-5 of the
//! output's largest magnitude.
//!
//! After a deliberate change to the exporter, regenerate with `scripts/onnx/regen_export.sh`.

use kiln_codegen::exec::{Executor, TensorData};
use kiln_codegen::export::onnx;
use kiln_codegen::import::onnx::parse_with_dims;
use kiln_codegen::ir::{Activation, Graph, Node, Op, TensorId};
use kiln_codegen::npy;
use kiln_tests::{models_dir, onnx_tolerance};
use kiln_train::model::ModelSpec;
use std::path::{Path, PathBuf};

const REGEN: &str = "scripts/onnx/regen_export.sh";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/export")
        .join(name)
}

/// LeNet-5 (models/lenet/model.toml) with seed 7: conv, relu, max pool, flatten, dense.
fn lenet() -> Graph {
    let spec = ModelSpec::load(&models_dir().join("lenet/model.toml")).unwrap();
    spec.build(7).unwrap()
}

/// Every kiln-train layer type (fixtures/export/layers/model.toml, seed 3) with non-zero
/// biases, a batch-norm-like per-channel Mul and Add after the depthwise conv, and a
/// softmax on the logits.
fn layers() -> Graph {
    let spec = ModelSpec::load(&fixture("layers").join("model.toml")).unwrap();
    let mut g = spec.build(3).unwrap();
    let mut k = 0u32;
    let mut value = move || {
        k += 1;
        ((k * 7919 % 199) as f32 - 99.0) / 400.0
    };
    for t in g.tensors.iter_mut().filter(|t| t.name.ends_with("/bias")) {
        let n = t.info.num_elements();
        t.data = Some((0..n).flat_map(|_| value().to_le_bytes()).collect());
    }
    let dw = g
        .nodes
        .iter()
        .position(|n| matches!(n.op, Op::DepthwiseConv2d(_)))
        .unwrap();
    let channels = *g.info(g.nodes[dw].outputs[0]).shape.last().unwrap();
    let scale: Vec<f32> = (0..channels).map(|_| 1.0 + value()).collect();
    let shift: Vec<f32> = (0..channels).map(|_| value()).collect();
    splice_after(
        &mut g,
        dw,
        "bn/mul",
        Op::Mul {
            activation: Activation::None,
        },
        scale,
    );
    splice_after(
        &mut g,
        dw + 1,
        "bn/add",
        Op::Add {
            activation: Activation::None,
        },
        shift,
    );
    let logits = g.outputs[0];
    let shape = g.info(logits).shape.clone();
    let probs = add_tensor(&mut g, "softmax/out", shape, None);
    g.nodes.push(Node {
        name: "softmax".into(),
        op: Op::Softmax { beta: 1.0 },
        inputs: vec![logits],
        outputs: vec![probs],
    });
    g.outputs = vec![probs];
    g.validate().unwrap();
    g
}

fn add_tensor(g: &mut Graph, name: &str, shape: Vec<usize>, data: Option<&[f32]>) -> TensorId {
    g.push_f32(name, shape, data)
}

/// Inserts `op(output of node i, per-channel constant)` after node `i`.
fn splice_after(g: &mut Graph, i: usize, name: &str, op: Op, channel: Vec<f32>) {
    let x = g.nodes[i].outputs[0];
    let shape = g.info(x).shape.clone();
    let c = add_tensor(
        g,
        &format!("{name}/const"),
        vec![channel.len()],
        Some(&channel),
    );
    let y = add_tensor(g, &format!("{name}/out"), shape, None);
    for n in &mut g.nodes[i + 1..] {
        for t in &mut n.inputs {
            if *t == x {
                *t = y;
            }
        }
    }
    g.nodes.insert(
        i + 1,
        Node {
            name: name.into(),
            op,
            inputs: vec![x, c],
            outputs: vec![y],
        },
    );
}

/// Builds one test model's float graph.
type Build = fn() -> Graph;

const MODELS: [(&str, Build); 2] = [("lenet", lenet), ("layers", layers)];

#[test]
fn exports_equal_the_committed_models() {
    let bless = std::env::var_os("KILN_BLESS").is_some();
    for (name, build) in MODELS {
        let bytes = onnx::to_bytes(&build()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let path = fixture(name).join("model.onnx");
        if bless {
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let committed =
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run {REGEN}", path.display()));
        assert!(
            bytes == committed,
            "{}: today's exporter writes different bytes ({} vs {} committed). If the change \
             is intended, regenerate the model and its onnxruntime goldens with {REGEN}",
            path.display(),
            bytes.len(),
            committed.len()
        );
    }
}

/// `data` of an NCHW `[c, h, w]` sample as NHWC.
fn nchw_to_nhwc(data: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                out[(y * w + x) * c + ch] = data[(ch * h + y) * w + x];
            }
        }
    }
    out
}

#[test]
fn kiln_matches_onnxruntime_goldens() {
    for (name, build) in MODELS {
        let dir = fixture(name);
        let graph = build();
        let model = std::fs::read(dir.join("model.onnx")).unwrap();
        let back = parse_with_dims(&model, name, None, &[(onnx::BATCH, 1)])
            .unwrap_or_else(|e| panic!("{name}: kiln cannot import its export: {e}"));
        let input = npy::read(&dir.join("input.npy")).unwrap();
        let output = npy::read(&dir.join("output.npy")).unwrap();
        let (samples, c, h, w) = match input.shape[..] {
            [n, c, h, w] => (n, c, h, w),
            ref s => panic!("{name}: input.npy {s:?} is not NCHW"),
        };
        assert!(samples >= 8, "{name}: {samples} golden samples");
        let per_in = c * h * w;
        let per_out = output.data.len() / samples;
        let original = Executor::new(&graph).unwrap();
        let imported = Executor::new(&back).unwrap();
        let mut failures = Vec::new();
        for s in 0..samples {
            let x = input.data.slice(s * per_in, per_in);
            let nchw = x.as_f32().unwrap();
            let nhwc = TensorData::F32(nchw_to_nhwc(nchw, c, h, w));
            let want = output.data.slice(s * per_out, per_out);
            for (label, exec, g, x) in [
                ("kiln graph", &original, &graph, nhwc),
                ("re-imported export", &imported, &back, x.clone()),
            ] {
                let got = exec.run(&[x]).unwrap();
                if let Some(d) = onnx_tolerance(g, 0, &got[0], &want) {
                    failures.push(format!("{name} sample {s}, {label}: {d}"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
