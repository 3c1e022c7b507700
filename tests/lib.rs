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

/// How many output quantization steps a quantized ONNX model's results may differ from
/// onnxruntime's: its integer kernels round requantization differently from TFLite's
/// fixed-point ones, so single layers differ by 1 LSB and later layers can amplify that.
pub const QUANTIZED_STEPS: f64 = 3.0;

/// The scale of the int8 tensor a float output is computed from: the input of the
/// Dequantize reached by walking back through nodes with one run-time operand.
fn quantization_step(graph: &Graph, mut id: kiln_codegen::ir::TensorId) -> Option<f64> {
    loop {
        let node = graph.nodes.iter().find(|n| n.outputs[0] == id)?;
        if node.op == Op::Dequantize {
            return graph
                .info(node.inputs[0])
                .scale_zero_point()
                .map(|(s, _)| s as f64);
        }
        let mut dynamic = node
            .inputs
            .iter()
            .filter(|t| graph.tensor(**t).data.is_none());
        id = *dynamic.next()?;
        if dynamic.next().is_some() {
            return None;
        }
    }
}

/// Compares a graph output with onnxruntime's: float results within 1e-5 relative error
/// in the infinity norm (`|kiln - ort| <= 1e-5 * max|ort|` element-wise, so that sums
/// with cancellation are judged against the tensor's scale, not a near-zero element);
/// results of an int8 model (a float output
/// computed from a Dequantize) within [`QUANTIZED_STEPS`] quantization steps.
pub fn onnx_tolerance(
    graph: &Graph,
    output: usize,
    got: &TensorData,
    want: &TensorData,
) -> Option<String> {
    let step = quantization_step(graph, graph.outputs[output]);
    let (g, w) = (got.to_f64(), want.to_f64());
    if got.dtype() != DType::F32 || g.len() != w.len() {
        return compare(got, want).map(|m| m.to_string());
    }
    let max_abs = w.iter().fold(0f64, |m, v| m.max(v.abs()));
    let mut worst: Option<(usize, f64, f64)> = None;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let tol = match step {
            Some(s) => s * QUANTIZED_STEPS * 1.001,
            None => 1e-5 * max_abs.max(f64::MIN_POSITIVE),
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
