//! The generated CUDA source, compiled with the host C++ compiler and run serially
//! (`emulate`), against the CPU executor and TFLM's golden outputs (int8 bit for bit,
//! f32 within 1e-5 relative of the executor); and a snapshot of the KWS source.

use super::emulate::Emulator;
use super::*;
use crate::compile::{optimize_and_plan, CompileOptions};
use crate::exec::{Executor, TensorData};
use crate::ir::DType;
use std::path::PathBuf;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Imports, optimizes and plans `model` for CUDA and emits it for `batch` samples.
fn compile(model: &Path, batch: usize) -> (Graph, Result<CudaModel, CudaEmitError>) {
    let graph = crate::import::load(model).unwrap();
    let cuda = compile_graph(&graph, batch);
    (graph, cuda)
}

/// Optimizes and plans `graph` for CUDA and emits it for `batch` samples.
fn compile_graph(graph: &Graph, batch: usize) -> Result<CudaModel, CudaEmitError> {
    let mut options = CompileOptions::default();
    options.plan = plan_options(&options.plan);
    let planned = optimize_and_plan(graph.clone(), &options, "m").unwrap();
    let cuda = CudaOptions {
        batch,
        ..Default::default()
    };
    emit(&planned.graph, &planned.plan, "m", &cuda)
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

/// The largest relative difference allowed between an emulated f32 output and the CPU
/// executor's (issue 7: f32 models within 1e-5 relative).
const F32_REL: f32 = 1e-5;
/// Below this magnitude differences are judged absolutely (`F32_REL * F32_FLOOR`): a
/// result near 0 from sums of larger terms has no meaningful relative error.
const F32_FLOOR: f32 = 1e-3;

/// How far an emulated f32 output is from the executor's.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct FloatDiff {
    /// Elements compared.
    elements: usize,
    /// Elements whose bits differ.
    inexact: usize,
    /// Largest `|got - want| / max(|want|, F32_FLOOR)`.
    max_rel: f32,
}

impl FloatDiff {
    fn add(&mut self, other: FloatDiff) {
        self.elements += other.elements;
        self.inexact += other.inexact;
        self.max_rel = self.max_rel.max(other.max_rel);
    }
}

/// Compares one output of the emulation with the executor's: int8 bytes exactly, f32
/// values within [`F32_REL`] (NaN only where the executor has NaN).
fn against_executor(got: &[u8], want: &TensorData) -> Result<FloatDiff, String> {
    let want_bytes = want.to_le_bytes();
    let Some(want) = want.as_f32() else {
        return match got.iter().zip(&want_bytes).position(|(a, b)| a != b) {
            None if got.len() == want_bytes.len() => Ok(FloatDiff::default()),
            at => Err(format!("differs from the executor at byte {at:?}")),
        };
    };
    let got = match TensorData::from_le_bytes(DType::F32, got) {
        TensorData::F32(v) if v.len() == want.len() => v,
        _ => return Err(format!("{} bytes for {} floats", got.len(), want.len())),
    };
    let mut diff = FloatDiff {
        elements: want.len(),
        ..Default::default()
    };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()) {
            continue;
        }
        diff.inexact += 1;
        let rel = (g - w).abs() / w.abs().max(F32_FLOOR);
        if rel.is_nan() || rel > F32_REL {
            return Err(format!(
                "element {i}: got {g:e}, the executor {w:e} (relative error {rel:e} > {F32_REL:e})"
            ));
        }
        diff.max_rel = diff.max_rel.max(rel);
    }
    Ok(diff)
}

/// Emulates `model` (compiled for `samples`) on `inputs` (each holding all samples back
/// to back) and checks every output of every sample against the CPU executor on the
/// source `graph` ([`against_executor`]). Returns the emulated outputs and the f32
/// differences.
fn emulate_against_executor(
    name: &str,
    graph: &Graph,
    model: &CudaModel,
    samples: usize,
    inputs: &[TensorData],
) -> Result<(Vec<TensorData>, FloatDiff), String> {
    let work = work_dir(name);
    let emu = Emulator::build(model, &work).map_err(|e| format!("{name}: {e}"))?;
    let bytes: Vec<Vec<u8>> = inputs.iter().map(|x| x.to_le_bytes()).collect();
    let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    let got = emu.run(&refs).map_err(|e| format!("{name}: {e}"))?;
    let exec = Executor::new(graph).unwrap();
    let mut diff = FloatDiff::default();
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
            let n = model.outputs[j].bytes;
            let d = against_executor(&got[j][s * n..(s + 1) * n], y)
                .map_err(|e| format!("{name}: sample {s} output {j}: {e}"))?;
            diff.add(d);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let outputs = got
        .iter()
        .zip(&model.outputs)
        .map(|(g, port)| TensorData::from_le_bytes(port.dtype, g))
        .collect();
    Ok((outputs, diff))
}

/// Emulates `model` on all golden samples in one batch and checks every output against
/// the golden outputs (`exec::compare`: int8 exact, f32 within its TFLM tolerance) and
/// the CPU executor run sample by sample ([`against_executor`]). `Ok(None)`: the CUDA
/// backend does not support the model; else the f32 differences from the executor.
fn check_model(dir: &Path) -> Result<Option<FloatDiff>, String> {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let (samples, inputs, expected) = golden(dir);
    let (graph, model) = compile(&dir.join("model.tflite"), samples);
    let model = match model {
        Ok(m) => m,
        Err(CudaEmitError::Unsupported { .. }) => return Ok(None),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    let (got, diff) = emulate_against_executor(&name, &graph, &model, samples, &inputs)?;
    for (j, (g, e)) in got.iter().zip(&expected).enumerate() {
        if let Some(m) = crate::exec::compare(g, e) {
            return Err(format!(
                "{name}: output {j} differs from the golden output: {m}"
            ));
        }
    }
    Ok(Some(diff))
}

#[test]
fn kws_emulation_is_bit_exact_with_the_executor_on_20_golden_inputs_in_one_batch() {
    let diff = check_model(&root().join("models/kws_ref_model"));
    assert_eq!(diff, Ok(Some(FloatDiff::default())));
}

#[test]
fn resnet8_emulation_is_bit_exact_with_the_executor_on_20_golden_inputs_in_one_batch() {
    let diff = check_model(&root().join("models/pretrainedResnet_quant"));
    assert_eq!(diff, Ok(Some(FloatDiff::default())));
}

/// The float32 graph of resnet8 (before quantization: convs with fused residual adds,
/// average pool, dense, softmax) end to end, batch 8.
#[test]
fn float_resnet8_emulation_is_within_1e_5_of_the_executor() {
    let diff = check_model(&root().join("models/pretrainedResnet")).unwrap();
    let diff = diff.expect("the float resnet8 runs on the CUDA backend");
    println!("float resnet8: {diff:?}");
    assert!(diff.elements > 0 && diff.max_rel <= F32_REL, "{diff:?}");
}

/// The ops of `models/ops` that must all run on the CUDA backend, in int8 and f32.
const OPS: [&str; 23] = [
    "conv_2d",
    "depthwise_conv_2d",
    "fully_connected",
    "average_pool_2d",
    "max_pool_2d",
    "add",
    "sub",
    "mul",
    "div",
    "softmax",
    "reshape",
    "leaky_relu",
    "logistic",
    "tanh",
    "relu",
    "relu6",
    "concatenation",
    "pad",
    "mean",
    "transpose",
    "quantize",
    "dequantize",
    "transpose_conv_2d",
];

/// Every single-op model (int8 and f32) against TFLM's golden outputs and the CPU
/// executor: int8 bit-exact, f32 within 1e-5 relative of the executor.
#[test]
fn single_op_models_emulation_matches_tflm_and_the_executor() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("models/ops"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    let results: Vec<(String, Result<Option<FloatDiff>, String>)> = std::thread::scope(|scope| {
        let halves: Vec<_> = dirs
            .chunks(dirs.len().div_ceil(2))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|d| {
                            let name = d.file_name().unwrap().to_string_lossy().to_string();
                            (name, check_model(d))
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
    assert!(failures.is_empty(), "{failures:#?}");
    let mut float = FloatDiff::default();
    let mut passed = Vec::new();
    let mut skipped = Vec::new();
    for (name, r) in &results {
        match r {
            Ok(Some(d)) => {
                float.add(*d);
                passed.push(name.as_str());
            }
            _ => skipped.push(name.as_str()),
        }
    }
    println!(
        "supported: {} models; f32 vs the executor: {float:?}\nunsupported by the CUDA backend: {}",
        passed.len(),
        skipped.join(" ")
    );
    for op in OPS {
        for dtype in ["i8", "f32"] {
            let prefix = format!("{op}_{dtype}_");
            let all = results
                .iter()
                .filter(|(p, _)| p.starts_with(&prefix))
                .count();
            let n = passed.iter().filter(|p| p.starts_with(&prefix)).count();
            assert_eq!(n, all, "every {prefix} model runs on the CUDA backend");
        }
        assert!(passed.iter().any(|p| p.starts_with(op)), "{op}");
    }
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(float.elements > 0 && float.max_rel <= F32_REL, "{float:?}");
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

/// What makes the int8 kernels of both shipped models fast, pinned so a change cannot
/// drop it unnoticed (their results are checked by the emulation tests): the input
/// offset folded at compile time (no filter sums at run time), no `__constant__`
/// tables indexed by channel, filters read interleaved by output channel, 32-bit
/// indices, and the derived tables inside the one weights buffer.
#[test]
fn int8_kernels_fold_the_input_offset_and_read_interleaved_filters() {
    for (model, convs) in [
        ("models/kws_ref_model/model.tflite", 5),
        ("models/pretrainedResnet_quant/model.tflite", 9),
    ] {
        let (graph, cuda) = compile(&root().join(model), 64);
        let cuda = cuda.unwrap();
        let src = &cuda.source;
        assert!(
            !src.contains("fsum") && !src.contains("__constant__"),
            "{model}"
        );
        assert!(!src.contains("typedef long long kiln_idx"), "{model}");
        // Every conv and dense layer reads interleaved weights: `[...] * OC + c]` from W.
        let interleaved = src
            .split("__global__ void")
            .filter(|k| k.contains("acc = __dp4a(xv, fv, acc)") || k.contains("* (int)xp[k]"))
            .filter(|k| k.contains("+ c];") || k.contains("+ c] * (int)xp[k]"))
            .count();
        // The convolutions and the dense layer.
        assert_eq!(interleaved, convs + 1, "{model}");
        let constants: usize = graph
            .tensors
            .iter()
            .filter_map(|t| t.data.as_ref())
            .map(|d| d.len())
            .sum();
        assert!(cuda.weights.len() > constants, "{model}: no derived tables");
    }
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
fn float_literals_read_back_exactly() {
    assert_eq!(flit(0.1), "(1e-1f)");
    assert_eq!(flit(-0.0), "(-0e0f)");
    assert_eq!(flit(f32::MAX), "(3.4028235e38f)");
    assert_eq!(flit(f32::INFINITY), "__int_as_float(2139095040)");
    for v in [0.1f32, 1.0 / 3.0, 1e-45, 16.619_047, -6.0, f32::MIN] {
        let text = flit(v);
        let digits = text.trim_start_matches('(').trim_end_matches("f)");
        assert_eq!(
            digits.parse::<f32>().unwrap().to_bits(),
            v.to_bits(),
            "{text}"
        );
    }
}

/// A float graph with the ops no `models/ops` model has (CLIP) in a chain with others:
/// x -> clip -> (and conv(x)) concatenation -> tanh -> mean, and x -> pad -> logistic.
fn built_graph() -> Graph {
    use crate::ir::{Activation, Conv2dAttrs, Node, Op, Padding};
    fn tensor(g: &mut Graph, shape: &[usize], data: Option<Vec<f32>>) -> TensorId {
        g.push_f32(
            format!("t{}", g.tensors.len()),
            shape.to_vec(),
            data.as_deref(),
        )
    }
    fn node(g: &mut Graph, op: Op, inputs: &[TensorId], shape: &[usize]) -> TensorId {
        let out = tensor(g, shape, None);
        g.nodes.push(Node {
            name: format!("{}_{}", op.name(), g.nodes.len()),
            op,
            inputs: inputs.to_vec(),
            outputs: vec![out],
        });
        out
    }
    let mut g = Graph::default();
    let x = tensor(&mut g, &[1, 6, 6, 4], None);
    g.inputs.push(x);
    let clip = node(
        &mut g,
        Op::Clip {
            min: -0.6,
            max: 0.9,
        },
        &[x],
        &[1, 6, 6, 4],
    );
    let weights: Vec<f32> = (0..144)
        .map(|i| ((i * 37) % 17) as f32 / 17.0 - 0.5)
        .collect();
    let w = tensor(&mut g, &[4, 3, 3, 4], Some(weights));
    let bias = tensor(&mut g, &[4], Some(vec![0.1, -0.2, 0.05, 0.0]));
    let conv = Op::Conv2d(Conv2dAttrs {
        stride: [1, 1],
        dilation: [1, 1],
        padding: Padding::Same,
        activation: Activation::None,
        residual: None,
    });
    let conv = node(&mut g, conv, &[x, w, bias], &[1, 6, 6, 4]);
    let cat = Op::Concatenation {
        axis: 3,
        activation: Activation::None,
    };
    let cat = node(&mut g, cat, &[clip, conv], &[1, 6, 6, 8]);
    let tanh = node(&mut g, Op::Tanh, &[cat], &[1, 6, 6, 8]);
    let mean = Op::Mean {
        axes: vec![1, 2],
        keep_dims: false,
    };
    let mean = node(&mut g, mean, &[tanh], &[1, 8]);
    let pad = Op::Pad {
        paddings: vec![[0, 0], [1, 0], [0, 2], [0, 0]],
    };
    let pad = node(&mut g, pad, &[clip], &[1, 7, 8, 4]);
    let logistic = node(&mut g, Op::Logistic, &[pad], &[1, 7, 8, 4]);
    // A dense layer whose depth (14) is not a multiple of 4: the int8 kernel's
    // byte-by-byte path. Its 224 inputs are 16 rows of 14.
    let fc_weights: Vec<f32> = (0..70)
        .map(|i| ((i * 29) % 13) as f32 / 13.0 - 0.45)
        .collect();
    let fc_w = tensor(&mut g, &[5, 14], Some(fc_weights));
    let fc_b = tensor(&mut g, &[5], Some(vec![0.3, -0.1, 0.0, 0.2, -0.25]));
    let fc = Op::FullyConnected {
        activation: Activation::Relu,
        keep_num_dims: false,
    };
    let fc = node(&mut g, fc, &[logistic, fc_w, fc_b], &[16, 5]);
    g.outputs = vec![mean, logistic, clip, fc];
    g.validate().unwrap();
    g
}

/// `samples` samples of every input of `g`, back to back: uniform in [-1.5, 1.5) for
/// f32, any byte for int8.
fn random_inputs(g: &Graph, samples: usize) -> Vec<TensorData> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as u32
    };
    g.inputs
        .iter()
        .map(|&id| {
            let len = g.info(id).num_elements() * samples;
            match g.info(id).dtype {
                DType::I8 => TensorData::I8((0..len).map(|_| next() as u8 as i8).collect()),
                _ => TensorData::F32(
                    (0..len)
                        .map(|_| next() as f32 / (1u32 << 24) as f32 * 3.0 - 1.5)
                        .collect(),
                ),
            }
        })
        .collect()
}

/// CLIP (float and int8) and a chain of the new ops, on a graph built here and on its
/// int8 quantization, 5 samples in one batch.
#[test]
fn built_float_graph_and_its_int8_quantization_match_the_executor() {
    let float = built_graph();
    let calibration: Vec<crate::quantize::Sample> = (0..8)
        .map(|s| {
            random_inputs(&float, 8)
                .iter()
                .map(|x| x.slice(s * 144, 144))
                .collect()
        })
        .collect();
    let int8 = crate::quantize::quantize(
        &float,
        &calibration,
        &crate::quantize::QuantizeOptions::default(),
    )
    .unwrap();
    for (name, graph, float_outputs) in [("built_f32", &float, true), ("built_i8", &int8, false)] {
        let ops: Vec<&str> = graph.nodes.iter().map(|n| n.op.name()).collect();
        assert!(ops.contains(&"clip"), "{name}: {ops:?}");
        let model = compile_graph(graph, 5).unwrap();
        let inputs = random_inputs(graph, 5);
        let (_, diff) = emulate_against_executor(name, graph, &model, 5, &inputs).unwrap();
        println!("{name} ({}): {diff:?}", ops.join(" "));
        assert!(diff.max_rel <= F32_REL, "{name}: {diff:?}");
        // The float graph's outputs were compared within F32_REL; the int8 graph has
        // only int8 outputs, compared exactly.
        assert_eq!(diff.elements > 0, float_outputs, "{name}: {diff:?}");
    }
}

/// Moves constant operand `k` of the graph's only node to a new graph input and returns
/// its data repeated for `samples` samples: the kernel then sees it only at run time.
fn constant_to_input(g: &mut Graph, k: usize, samples: usize) -> TensorData {
    let id = g.nodes[0].inputs[k];
    let t = &mut g.tensors[id.0];
    let bytes = t.data.take().unwrap();
    g.inputs.push(id);
    TensorData::from_le_bytes(t.info.dtype, &bytes.repeat(samples))
}

/// Where the compile-time folds cannot apply, the kernels compute at run time what the
/// CPU computes: a filter and a bias fed as inputs (convolution with padding, with and
/// without `__dp4a`; depthwise; dense; transposed convolution; f32 convolution and
/// dense).
#[test]
fn run_time_filters_and_biases_match_the_executor() {
    // (model, operands made inputs): 1 the filter, 2 the bias.
    let both: &[usize] = &[1, 2];
    let cases: [(&str, &[usize]); 10] = [
        ("conv_2d_i8_s1_same_dil1_none_perchannel_k3", both),
        ("conv_2d_i8_s1_same_dil1_none_perchannel_k3_deep128", both),
        ("conv_2d_i8_s2_same_dil1_relu6_perchannel_k3", both),
        (
            "depthwise_conv_2d_i8_s2_same_dil1_m3_none_pertensor_k5",
            both,
        ),
        (
            "fully_connected_i8_in4x24_out8_relu6_perchannel_batch4",
            both,
        ),
        ("transpose_conv_2d_i8_s2_same_none_perchannel_k3", both),
        ("conv_2d_f32_s2_same_dil1_relu6_perchannel_k3", both),
        (
            "fully_connected_f32_in4x24_out8_relu6_perchannel_batch4",
            both,
        ),
        // A constant filter (folded, tap sums for the padding) with a run-time bias.
        ("conv_2d_i8_s1_same_dil1_none_perchannel_k3_deep128", &[2]),
        ("depthwise_conv_2d_i8_s1_same_dil1_m1_none_perchannel", &[2]),
    ];
    let mut checked = 0;
    for (case, operands) in cases {
        let dir = root().join("models/ops").join(case);
        let (samples, inputs, _) = golden(&dir);
        let mut graph = crate::import::load(&dir.join("model.tflite")).unwrap();
        assert_eq!(graph.nodes.len(), 1, "{case}");
        let mut inputs = inputs;
        for &k in operands {
            inputs.push(constant_to_input(&mut graph, k, samples));
        }
        graph.validate().unwrap();
        let model = compile_graph(&graph, samples).unwrap();
        let source = &model.source;
        emulate_against_executor(case, &graph, &model, samples, &inputs)
            .unwrap_or_else(|e| panic!("{e}"));
        let filter_known = !operands.contains(&1);
        assert_eq!(
            source.contains("skipped"),
            filter_known && case.contains("_i8_"),
            "{case} {operands:?}: compile-time tap sums exactly where the filter is known"
        );
        checked += 1;
    }
    assert_eq!(checked, cases.len());
}
