//! The generated CUDA source, compiled with the host C++ compiler and run serially
//! (`emulate`), against the CPU executor and TFLM's golden outputs, bit for bit; and a
//! snapshot of the source for the KWS model.

use super::emulate::Emulator;
use super::*;
use crate::compile::{optimize_and_plan, CompileOptions};
use crate::exec::{Executor, TensorData};
use std::path::PathBuf;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Imports, optimizes and plans `model` for CUDA and emits it for `batch` samples.
fn compile(model: &Path, batch: usize) -> (Graph, Result<CudaModel, CudaEmitError>) {
    let graph = crate::import::load(model).unwrap();
    let mut options = CompileOptions::default();
    options.plan = plan_options(&options.plan);
    let planned = optimize_and_plan(graph.clone(), &options, "m").unwrap();
    let cuda = CudaOptions {
        batch,
        ..Default::default()
    };
    (graph, emit(&planned.graph, &planned.plan, "m", &cuda))
}

/// The golden inputs and outputs of a model folder: `(samples, inputs, outputs)`.
fn golden(dir: &Path) -> (usize, Vec<TensorData>, Vec<TensorData>) {
    let read = |prefix: &str| -> Vec<crate::npy::Array> {
        (0..)
            .map(|i| dir.join(format!("golden/{prefix}_{i}.npy")))
            .take_while(|p| p.exists())
            .map(|p| crate::npy::read(&p).unwrap())
            .collect()
    };
    let (ins, outs) = (read("input"), read("output"));
    let samples = ins[0].shape[0];
    (
        samples,
        ins.into_iter().map(|a| a.data).collect(),
        outs.into_iter().map(|a| a.data).collect(),
    )
}

fn work_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kiln-cuda-emu-{}-{name}", std::process::id()))
}

/// Emulates `model` on all golden samples in one batch and checks every output byte
/// against the golden outputs and (when `executor`) the CPU executor run sample by
/// sample. `Ok(false)`: the CUDA backend does not support the model.
fn check_model(dir: &Path, executor: bool) -> Result<bool, String> {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let (samples, inputs, expected) = golden(dir);
    let (graph, model) = compile(&dir.join("model.tflite"), samples);
    let model = match model {
        Ok(m) => m,
        Err(CudaEmitError::Unsupported { .. }) => return Ok(false),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    let work = work_dir(&name);
    let emu = Emulator::build(&model, &work).map_err(|e| format!("{name}: {e}"))?;
    let bytes: Vec<Vec<u8>> = inputs.iter().map(|x| x.to_le_bytes()).collect();
    let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    let got = emu.run(&refs).map_err(|e| format!("{name}: {e}"))?;
    for (j, (g, e)) in got.iter().zip(&expected).enumerate() {
        let e = e.to_le_bytes();
        if g != &e {
            let first = g.iter().zip(&e).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!(
                "{name}: output {j} differs from the golden output at byte {first} of {} (got {}, want {})",
                e.len(),
                g.get(first).map_or(-1, |&v| v as i8 as i32),
                e.get(first).map_or(-1, |&v| v as i8 as i32)
            ));
        }
    }
    if executor {
        let exec = Executor::new(&graph).unwrap();
        for s in 0..samples {
            let xs: Vec<TensorData> = inputs
                .iter()
                .map(|x| {
                    let len = x.len() / samples;
                    x.slice(s * len, len)
                })
                .collect();
            let ys = exec.run(&xs).unwrap();
            for (j, y) in ys.iter().enumerate() {
                let y = y.to_le_bytes();
                let n = y.len();
                if got[j][s * n..(s + 1) * n] != y[..] {
                    return Err(format!(
                        "{name}: sample {s} output {j} differs from the executor"
                    ));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(true)
}

#[test]
fn kws_emulation_is_bit_exact_with_the_executor_on_20_golden_inputs_in_one_batch() {
    assert_eq!(
        check_model(&root().join("models/kws_ref_model"), true),
        Ok(true)
    );
}

#[test]
fn resnet8_emulation_is_bit_exact_with_the_executor_on_20_golden_inputs_in_one_batch() {
    assert_eq!(
        check_model(&root().join("models/pretrainedResnet_quant"), true),
        Ok(true)
    );
}

/// The int8 single-op models the backend supports (conv, depthwise, dense, pools, add,
/// mul, softmax, reshape) against TFLM's golden outputs; the others are listed.
#[test]
fn single_op_models_emulation_is_bit_exact_with_tflm() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("models/ops"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("_i8_"))
        .collect();
    dirs.sort();
    let results: Vec<(String, Result<bool, String>)> = std::thread::scope(|scope| {
        let halves: Vec<_> = dirs
            .chunks(dirs.len().div_ceil(2))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|d| {
                            let name = d.file_name().unwrap().to_string_lossy().to_string();
                            (name, check_model(d, false))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let failures: Vec<&String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    let passed: Vec<&str> = results
        .iter()
        .filter(|(_, r)| r == &Ok(true))
        .map(|(n, _)| n.as_str())
        .collect();
    let skipped: Vec<&str> = results
        .iter()
        .filter(|(_, r)| r == &Ok(false))
        .map(|(n, _)| n.as_str())
        .collect();
    println!(
        "bit-exact: {}\nunsupported by the CUDA backend: {}",
        passed.len(),
        skipped.join(" ")
    );
    assert!(failures.is_empty(), "{failures:#?}");
    for op in [
        "conv_2d",
        "depthwise_conv_2d",
        "fully_connected",
        "average_pool_2d",
        "max_pool_2d",
        "add",
        "mul",
        "softmax",
        "reshape",
    ] {
        let n = passed
            .iter()
            .filter(|p| p.starts_with(&format!("{op}_i8")))
            .count();
        let all = results
            .iter()
            .filter(|(p, _)| p.starts_with(&format!("{op}_i8")))
            .count();
        assert_eq!(n, all, "every {op} model runs on the CUDA backend");
        assert!(n > 0, "{op}");
    }
}

/// The generated source for KWS, batch 1, against `snapshots/kws_ref_model.cu`.
/// Regenerate after an intended change with
/// `KILN_UPDATE_SNAPSHOTS=1 cargo test -p kiln-codegen cuda::tests::snapshot`.
#[test]
fn snapshot_of_the_kws_source() {
    let (_, model) = compile(&root().join("models/kws_ref_model/model.tflite"), 1);
    let model = model.unwrap();
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/emit/cuda/snapshots/kws_ref_model.cu");
    // The version line changes with every release; the snapshot keeps a placeholder.
    let source = model
        .source
        .replace(concat!("kiln ", env!("CARGO_PKG_VERSION")), "kiln VERSION");
    if std::env::var_os("KILN_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &source).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == source,
        "{} differs from the generated source; if the change is intended, regenerate it with \
         KILN_UPDATE_SNAPSHOTS=1 cargo test -p kiln-codegen cuda::tests::snapshot",
        path.display()
    );
    // Sanity of what the snapshot pins: dp4a in the convs, one kernel per launch.
    assert!(source.contains("__dp4a("));
    assert_eq!(
        source.matches("__global__ void").count(),
        model.launches.len()
    );
}

#[test]
fn batch_scales_every_activation_and_the_plan_rejects_in_place_convs() {
    let path = root().join("models/kws_ref_model/model.tflite");
    let (_, one) = compile(&path, 1);
    let (_, many) = compile(&path, 64);
    let (one, many) = (one.unwrap(), many.unwrap());
    assert_eq!(many.plan_arena_bytes, one.plan_arena_bytes);
    assert!(many.arena_bytes >= 64 * one.plan_arena_bytes);
    assert_eq!(many.inputs[0].offset, 64 * one.plan_arena_bytes);
    for (a, b) in one.launches.iter().zip(&many.launches) {
        // ceil(64 T / 128) > 64 (ceil(T / 128) - 1) for any thread count T.
        assert!(b.grid > 64 * (a.grid - 1), "{a:?} {b:?}");
    }
    // The default CPU plan runs KWS's convs in place: the CUDA emitter refuses it.
    let graph = crate::import::load(&path).unwrap();
    let planned = optimize_and_plan(graph, &CompileOptions::default(), "kws").unwrap();
    let err = emit(
        &planned.graph,
        &planned.plan,
        "kws",
        &CudaOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("plan with cuda::plan_options"),
        "{err}"
    );
    // The manifest lists every launch and both ports.
    assert_eq!(
        many.manifest
            .lines()
            .filter(|l| l.starts_with("kernel "))
            .count(),
        many.launches.len()
    );
    assert!(many
        .manifest
        .contains(&format!("batch 64\narena_bytes {}\n", many.arena_bytes)));
}

#[test]
fn float_models_are_refused_naming_the_node() {
    let (_, model) = compile(&root().join("models/pretrainedResnet/model.tflite"), 1);
    let err = model.unwrap_err().to_string();
    assert!(
        err.contains("not supported by the CUDA backend") && err.contains("float32"),
        "{err}"
    );
}
