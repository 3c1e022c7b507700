//! The one function the importer fuzz target and the robustness tests share.

use crate::compile::{optimize_and_plan, CompileOptions};
use crate::emit::rust::emit;
use crate::exec::{Executor, TensorData};
use crate::import::{onnx, tflite};
use crate::ir::cost::total_macs;

/// Graphs above this many multiply-accumulates are imported but not run, so a fuzzed
/// file cannot turn into a long computation.
pub const MAX_FUZZ_MACS: u64 = 20_000_000;

/// Imports `bytes` as a TFLite model and, if it imports, compiles it (passes, memory
/// plan, Rust source) and, if small enough, runs it on all-zero inputs. Returns what
/// happened; never panics (that is what it tests).
pub fn import_and_run(bytes: &[u8]) -> Result<(), String> {
    compile_and_run(tflite::parse(bytes, "input").map_err(|e| e.to_string())?)
}

/// [`import_and_run`] for ONNX bytes (no external data files).
pub fn import_onnx_and_run(bytes: &[u8]) -> Result<(), String> {
    compile_and_run(onnx::parse(bytes, "input", None).map_err(|e| e.to_string())?)
}

fn compile_and_run(graph: crate::ir::Graph) -> Result<(), String> {
    if let Ok(planned) = optimize_and_plan(graph.clone(), &CompileOptions::default(), "input") {
        // Both kernel families: the reference calls and the DSP selection.
        for target in [crate::Target::Host, crate::Target::CortexM4] {
            emit(
                &planned.graph,
                &planned.plan,
                "input",
                "weights.bin",
                target,
            )
            .map_err(|e| e.to_string())?;
        }
    }
    if total_macs(&graph) > MAX_FUZZ_MACS {
        return Ok(());
    }
    let exec = Executor::new(&graph).map_err(|e| e.to_string())?;
    let inputs: Vec<TensorData> = graph
        .inputs
        .iter()
        .map(|id| TensorData::zeros(graph.info(*id).dtype, graph.info(*id).num_elements()))
        .collect();
    exec.run(&inputs).map(|_| ()).map_err(|e| e.to_string())
}
