//! Shared helpers for the end-to-end tests in this folder.

use kiln_codegen::exec::{compare, Executor, TensorData};
use kiln_codegen::import;
use kiln_codegen::ir::{DType, Graph, Op};
use kiln_codegen::npy;
use std::path::{Path, PathBuf};

/// The repository's `models/` folder.
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The golden vectors of one model: per graph input and output, all samples stacked.
pub struct Golden {
    /// `input_<i>.npy`, shape `[samples, ..]`.
    pub inputs: Vec<npy::Array>,
    /// `output_<j>.npy`, shape `[samples, ..]`.
    pub outputs: Vec<npy::Array>,
}

impl Golden {
    /// Reads `golden/input_*.npy` and `golden/output_*.npy` of a model folder.
    pub fn load(model_dir: &Path) -> Golden {
        let read_all = |prefix: &str| {
            (0..)
                .map(|i| model_dir.join(format!("golden/{prefix}_{i}.npy")))
                .take_while(|p| p.exists())
                .map(|p| npy::read(&p).unwrap_or_else(|e| panic!("{e}")))
                .collect::<Vec<_>>()
        };
        Golden {
            inputs: read_all("input"),
            outputs: read_all("output"),
        }
    }

    /// Number of samples.
    pub fn samples(&self) -> usize {
        self.inputs[0].shape[0]
    }

    /// Sample `s` of each array in `arrays`.
    pub fn sample(arrays: &[npy::Array], s: usize) -> Vec<TensorData> {
        arrays
            .iter()
            .map(|a| {
                let per = a.data.len() / a.shape[0];
                a.data.slice(s * per, per)
            })
            .collect()
    }
}

/// The model file of a model folder: `model.tflite` or `model.onnx`.
pub fn model_file(dir: &Path) -> PathBuf {
    let tflite = dir.join("model.tflite");
    if tflite.is_file() {
        tflite
    } else {
        dir.join("model.onnx")
    }
}

/// Imports `models/<rel>/model.{tflite,onnx}`, runs every golden sample on the imported
/// graph and on the graph after kiln's optimization passes, and panics with a list of
/// every differing sample and output. TFLite goldens (TFLM) must match bit-exactly for
/// int8 ([`compare`]); ONNX goldens (onnxruntime) within [`onnx_tolerance`].
pub fn assert_golden(rel: &str) {
    let dir = models_dir().join(rel);
    let file = model_file(&dir);
    let is_onnx = file.extension().is_some_and(|e| e == "onnx");
    let graph = import::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let mut optimized = graph.clone();
    kiln_codegen::passes::optimize(&mut optimized).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let golden = Golden::load(&dir);
    assert_eq!(
        golden.inputs.len(),
        graph.inputs.len(),
        "{rel}: golden inputs vs graph inputs"
    );
    assert_eq!(
        golden.outputs.len(),
        graph.outputs.len(),
        "{rel}: golden outputs vs graph outputs"
    );
    let mut failures = Vec::new();
    for (label, g) in [("imported", &graph), ("optimized", &optimized)] {
        let exec = Executor::new(g).unwrap_or_else(|e| panic!("{rel}: {e}"));
        for s in 0..golden.samples() {
            let outputs = exec
                .run(&Golden::sample(&golden.inputs, s))
                .unwrap_or_else(|e| panic!("{rel}: {e}"));
            for (j, (got, want)) in outputs
                .iter()
                .zip(Golden::sample(&golden.outputs, s))
                .enumerate()
            {
                let diff = if is_onnx {
                    onnx_tolerance(g, j, got, &want)
                } else {
                    compare(got, &want).map(|m| m.to_string())
                };
                if let Some(diff) = diff {
                    failures.push(format!("{label} graph, sample {s} output {j}: {diff}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{rel}: {} mismatches\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Compares a graph output with onnxruntime's: float results within 1e-5 relative error
/// (plus 1e-6 absolute for values near zero); results of an int8 model (a float output
/// produced by a Dequantize) within one quantization step, since onnxruntime rounds its
/// integer requantization differently from TFLite's fixed-point arithmetic.
pub fn onnx_tolerance(
    graph: &Graph,
    output: usize,
    got: &TensorData,
    want: &TensorData,
) -> Option<String> {
    let id = graph.outputs[output];
    let step = graph
        .nodes
        .iter()
        .find(|n| n.outputs[0] == id && n.op == Op::Dequantize)
        .and_then(|n| graph.info(n.inputs[0]).scale_zero_point())
        .map(|(s, _)| s as f64);
    let (g, w) = (got.to_f64(), want.to_f64());
    if got.dtype() != DType::F32 || g.len() != w.len() {
        return compare(got, want).map(|m| m.to_string());
    }
    let mut worst: Option<(usize, f64, f64)> = None;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let tol = match step {
            Some(s) => s * 1.001,
            None => 1e-5 * b.abs() + 1e-6,
        };
        if (a - b).abs() > tol && worst.is_none_or(|(_, d, _)| (a - b).abs() > d) {
            worst = Some((i, (a - b).abs(), b));
        }
    }
    worst.map(|(i, d, b)| {
        format!(
            "element {i}: got {}, expected {b} (|diff| {d:e}{})",
            g[i],
            step.map(|s| format!(", {:.2} quantization steps", d / s))
                .unwrap_or_default()
        )
    })
}
