//! Shared helpers for the end-to-end tests in this folder.

use kiln_codegen::exec::{compare, Executor, TensorData};
use kiln_codegen::import::tflite;
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

/// Imports `models/<rel>/model.tflite`, runs every golden sample on the imported graph
/// and on the graph after kiln's optimization passes, and panics with a list of every
/// differing sample and output.
pub fn assert_golden(rel: &str) {
    let dir = models_dir().join(rel);
    let graph = tflite::load(&dir.join("model.tflite")).unwrap_or_else(|e| panic!("{e}"));
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
                if let Some(diff) = compare(got, &want) {
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
