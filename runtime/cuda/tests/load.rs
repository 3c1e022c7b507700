//! kiln-cuda without a GPU: the manifest codegen writes parses back, a missing driver is
//! an error (never a panic), and NVRTC (when its library is found, e.g. through
//! `$KILN_NVRTC`) compiles the generated source of both shipped models for the Jetson
//! Orin (sm_87) and Hopper (sm_90) as PTX and as CUBIN, and of the float resnet8 and every single-op model
//! for the Orin, without fused multiply-adds.

use kiln_codegen::compile::{optimize_and_plan, CompileOptions};
use kiln_codegen::emit::cuda::{emit, plan_options, CudaModel, CudaOptions};
use kiln_cuda::{Error, LoadOptions, Manifest, Session};
use std::path::Path;

fn compile(model: &str, batch: usize) -> CudaModel {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(model);
    let graph = kiln_codegen::import::load(&path).unwrap();
    let mut options = CompileOptions::default();
    options.plan = plan_options(&options.plan);
    let planned = optimize_and_plan(graph, &options, model).unwrap();
    let cuda = CudaOptions {
        batch,
        ..Default::default()
    };
    emit(&planned.graph, &planned.plan, model, &cuda).unwrap()
}

#[test]
fn manifest_from_codegen_parses_back() {
    let model = compile("models/kws_ref_model/model.tflite", 64);
    let m = Manifest::parse(&model.manifest).unwrap();
    assert_eq!(m.batch, 64);
    assert_eq!(m.arena_bytes, model.arena_bytes);
    assert_eq!(m.weight_bytes, model.weights.len());
    assert_eq!(m.inputs.len(), 1);
    assert_eq!(m.outputs.len(), 1);
    let (a, b) = (&m.inputs[0], &model.inputs[0]);
    assert_eq!(
        (a.offset, a.stride, a.bytes, &a.shape),
        (b.offset, b.stride, b.bytes, &b.shape)
    );
    assert_eq!(a.quant, b.quant);
    assert_eq!(a.name, b.name);
    let names: Vec<&str> = m.kernels.iter().map(|k| k.name.as_str()).collect();
    let want: Vec<&str> = model.launches.iter().map(|l| l.kernel.as_str()).collect();
    assert_eq!(names, want);
    assert!(m
        .kernels
        .iter()
        .zip(&model.launches)
        .all(|(k, l)| k.grid == l.grid && k.block == l.block));
}

#[test]
fn bad_manifests_name_the_line() {
    let good = compile("models/kws_ref_model/model.tflite", 1).manifest;
    let err = Manifest::parse(&good.replace("batch 1", "batch x")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("manifest line 3: expected the batch"),
        "{err}"
    );
    let err = Manifest::parse("hello").unwrap_err();
    assert!(
        err.to_string().contains("not a kiln-cuda manifest"),
        "{err}"
    );
    // A port past the arena's end is refused before anything touches a device.
    let arena = good.lines().find(|l| l.starts_with("arena_bytes")).unwrap();
    let err = Manifest::parse(&good.replace(arena, "arena_bytes 16")).unwrap_err();
    assert!(err.to_string().contains("does not fit the arena"), "{err}");
}

#[test]
fn missing_gpu_is_a_clear_error_not_a_panic() {
    let model = compile("models/kws_ref_model/model.tflite", 1);
    let m = Manifest::parse(&model.manifest).unwrap();
    // Wrong weights are refused first, on any machine.
    let err =
        Session::load(m.clone(), &model.source, &[0u8; 3], &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Weights(_)), "{err}");
    if kiln_cuda::driver_present() {
        println!("a CUDA driver is present: scripts/gpu-check.sh covers loading on a GPU");
        return;
    }
    let err = Session::load(m, &model.source, &model.weights, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NoDriver), "{err}");
    assert!(err.to_string().starts_with("no CUDA driver"), "{err}");
}

#[test]
fn nvrtc_compiles_both_shipped_models_for_orin_and_hopper() {
    if !kiln_cuda::nvrtc_present() {
        println!(
            "skipped: no libnvrtc found (set {} to a libnvrtc.so, e.g. from the nvidia-cuda-nvrtc wheel; scripts/test.sh does)",
            kiln_cuda::NVRTC_ENV
        );
        return;
    }
    for model in [
        "models/kws_ref_model/model.tflite",
        "models/pretrainedResnet_quant/model.tflite",
    ] {
        let source = compile(model, 64).source;
        for arch in ["sm_87", "sm_90"] {
            let ptx = kiln_cuda::compile_ptx(&source, model, arch).unwrap();
            assert!(ptx.contains(&format!(".target {arch}")), "{model} {arch}");
            // The int8 dot products became the hardware's 4-way instruction.
            assert!(
                ptx.contains("dp4a.s32.s32"),
                "{model} {arch}: no dp4a in the PTX"
            );
            // What `Session::load` loads: device code for the architecture, an ELF file.
            let cubin = kiln_cuda::compile_cubin(&source, model, arch).unwrap();
            assert_eq!(&cubin[..4], b"\x7fELF", "{model} {arch}");
        }
    }
    let err = kiln_cuda::compile_cubin("", "virtual.cu", "compute_87")
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a real architecture"), "{err}");
    // A compile error comes back as NVRTC's log, naming the source.
    let err = kiln_cuda::compile_ptx("__global__ void f() { oops }", "broken.cu", "sm_87")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("NVRTC compiling broken.cu for sm_87:") && err.contains("oops"),
        "{err}"
    );
}

/// Whether NVRTC can be used here; says why a test skips when not.
fn nvrtc_or_skip() -> bool {
    let present = kiln_cuda::nvrtc_present();
    if !present {
        println!(
            "skipped: no libnvrtc found (set {} to a libnvrtc.so, e.g. from the nvidia-cuda-nvrtc wheel; scripts/test.sh does)",
            kiln_cuda::NVRTC_ENV
        );
    }
    present
}

/// Checks the `--fmad=false` contract kernel by kernel: no `fma` in the PTX of any
/// kernel whose source does float arithmetic without calling a math-library function
/// (`expf` and `tanhf` use fused multiply-adds inside, on purpose). Returns how many
/// float kernels were checked.
fn float_kernels_without_fma(source: &str, ptx: &str) -> Result<usize, String> {
    let mut checked = 0;
    for entry in ptx.split(".entry ").skip(1) {
        let name: String = entry
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let start = source
            .find(&format!("void {name}("))
            .ok_or_else(|| format!("{name}: not in the source"))?;
        let body = &source[start..];
        let body = &body[..body[1..].find("extern \"C\"").map_or(body.len(), |e| e + 1)];
        let float = body.contains("float");
        let library = ["expf(", "tanhf(", "kiln_logistic_f32("]
            .iter()
            .any(|f| body.contains(f));
        if float && !library {
            if entry.contains("fma.rn.f32") {
                return Err(format!("{name}: fused multiply-add in the PTX"));
            }
            checked += 1;
        }
    }
    Ok(checked)
}

/// The float kernels compile with `--fmad=false`: the PTX multiplies and adds with
/// separate roundings (as the CPU and the g++ emulation do).
#[test]
fn nvrtc_compiles_the_float_resnet8_without_fused_multiply_adds() {
    if !nvrtc_or_skip() {
        return;
    }
    let model = "models/pretrainedResnet/model.tflite";
    let source = compile(model, 8).source;
    let ptx = kiln_cuda::compile_ptx(&source, model, "sm_87").unwrap();
    assert!(
        ptx.contains("mul.rn.f32") && ptx.contains("add.rn.f32"),
        "{model}"
    );
    let checked = float_kernels_without_fma(&source, &ptx).unwrap();
    assert!(checked >= 9, "{model}: {checked} float kernels checked");
}

/// Every generated kernel kind (all single-op models, int8 and f32) is CUDA C that NVRTC
/// accepts, not only C++ that g++ accepts.
#[test]
fn nvrtc_compiles_every_single_op_model() {
    if !nvrtc_or_skip() {
        return;
    }
    let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/ops");
    let mut dirs: Vec<_> = std::fs::read_dir(&ops)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(dirs.len() > 100, "{}", ops.display());
    let mut float_kernels = 0;
    for dir in dirs {
        let model = format!(
            "models/ops/{}/model.tflite",
            dir.file_name().unwrap().to_string_lossy()
        );
        let source = compile(&model, 2).source;
        let ptx =
            kiln_cuda::compile_ptx(&source, &model, "sm_87").unwrap_or_else(|e| panic!("{e}"));
        float_kernels +=
            float_kernels_without_fma(&source, &ptx).unwrap_or_else(|e| panic!("{model}: {e}"));
    }
    assert!(float_kernels > 30, "{float_kernels}");
}
