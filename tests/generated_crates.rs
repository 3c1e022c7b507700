//! The ahead-of-time path end to end: every model under models/ (TFLite and ONNX) is
//! compiled into a
//! no_std crate, all crates are built together with a host harness that runs them on the
//! golden inputs, and every output must equal the golden output bit for bit (int8) or
//! within the float tolerance (f32). The same crates are then built for Cortex-M0+ and
//! Cortex-M4F to prove they are no_std and no alloc.
//!
//! The TFLite models are compiled for the Cortex-M4, so their crates call the DSP
//! kernels (`kiln_runtime::kernels::dsp`) wherever the emitter picks them — on the host
//! through the same code with portable arithmetic — and are checked against TFLM's
//! outputs; the ONNX models are compiled for the host and keep the reference kernels.

use kiln_codegen::compile::{optimize_and_plan, CompileOptions, Target};
use kiln_codegen::emit::rust::{write_crate, RuntimeDependency};
use kiln_codegen::exec::{compare, TensorData};
use kiln_codegen::import;
use kiln_codegen::ir::{DType, Graph};
use kiln_tests::{model_file, models_dir, onnx_tolerance, Golden};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One compiled model: its folder under models/, crate name and graph.
struct Compiled {
    rel: String,
    krate: String,
    graph: Graph,
}

fn work_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("kiln-e2e")
}

fn model_dirs() -> Vec<String> {
    let root = models_dir();
    let mut dirs = Vec::new();
    for (prefix, parent) in [
        ("", root.clone()),
        ("ops/", root.join("ops")),
        ("onnx/", root.join("onnx")),
        ("onnx/ops/", root.join("onnx/ops")),
    ] {
        for e in std::fs::read_dir(&parent).unwrap().flatten() {
            if e.path().join("golden").is_dir() {
                dirs.push(format!("{prefix}{}", e.file_name().to_string_lossy()));
            }
        }
    }
    dirs.sort();
    dirs
}

fn crate_name(rel: &str) -> String {
    let s: String = rel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("m_{s}")
}

fn port(n: usize, i: usize, kind: &str) -> String {
    if n == 1 {
        kind.to_uppercase()
    } else {
        format!("{}_{i}", kind.to_uppercase())
    }
}

fn rust_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::I8 => "i8",
        DType::I32 => "i32",
        DType::I64 => "i64",
    }
}

fn raw_bytes(d: &TensorData) -> Vec<u8> {
    match d {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The harness function that runs one model on every sample of its data folder.
fn harness_fn(c: &Compiled) -> String {
    let g = &c.graph;
    let (ni, no) = (g.inputs.len(), g.outputs.len());
    let mut s = format!(
        "fn run_{}(dir: &Path) {{\n    use {} as m;\n",
        c.krate, c.krate
    );
    for (i, id) in g.inputs.iter().enumerate() {
        let ty = rust_type(g.info(*id).dtype);
        let _ = writeln!(
            s,
            "    let in{i}: Vec<{ty}> = read(&dir.join(\"input_{i}.bin\"));"
        );
    }
    let first = port(ni, 0, "input");
    let _ = writeln!(s, "    let samples = in0.len() / m::{first}_LEN;");
    let _ = writeln!(s, "    let mut arena = Box::new(m::Arena::new());");
    for (j, id) in g.outputs.iter().enumerate() {
        let ty = rust_type(g.info(*id).dtype);
        let _ = writeln!(s, "    let mut all{j}: Vec<{ty}> = Vec::new();");
    }
    let _ = writeln!(s, "    for s in 0..samples {{");
    let mut args = Vec::new();
    for i in 0..ni {
        let p = port(ni, i, "input");
        let _ = writeln!(s, "        let x{i}: &[_; m::{p}_LEN] = in{i}[s * m::{p}_LEN..(s + 1) * m::{p}_LEN].try_into().unwrap();");
        args.push(format!("x{i}"));
    }
    for (j, id) in g.outputs.iter().enumerate() {
        let p = port(no, j, "output");
        let zero = if g.info(*id).dtype == DType::F32 {
            "0.0"
        } else {
            "0"
        };
        let _ = writeln!(s, "        let mut y{j} = [{zero}; m::{p}_LEN];");
        args.push(format!("&mut y{j}"));
    }
    let _ = writeln!(s, "        m::run(&mut arena, {});", args.join(", "));
    for j in 0..no {
        let _ = writeln!(s, "        all{j}.extend_from_slice(&y{j});");
    }
    let _ = writeln!(s, "    }}");
    for j in 0..no {
        let _ = writeln!(s, "    write(&dir.join(\"output_{j}.bin\"), &all{j});");
    }
    s.push_str("}\n");
    s
}

const HARNESS_HELPERS: &str = r#"use std::path::Path;

trait Element: Copy {
    fn from_le(b: &[u8]) -> Self;
    fn to_le(self) -> Vec<u8>;
}
impl Element for i8 {
    fn from_le(b: &[u8]) -> Self { b[0] as i8 }
    fn to_le(self) -> Vec<u8> { vec![self as u8] }
}
impl Element for f32 {
    fn from_le(b: &[u8]) -> Self { f32::from_le_bytes(b.try_into().unwrap()) }
    fn to_le(self) -> Vec<u8> { self.to_le_bytes().to_vec() }
}
impl Element for i32 {
    fn from_le(b: &[u8]) -> Self { i32::from_le_bytes(b.try_into().unwrap()) }
    fn to_le(self) -> Vec<u8> { self.to_le_bytes().to_vec() }
}
fn read<T: Element>(p: &Path) -> Vec<T> {
    let bytes = std::fs::read(p).unwrap();
    bytes.chunks_exact(std::mem::size_of::<T>()).map(T::from_le).collect()
}
fn write<T: Element>(p: &Path, v: &[T]) {
    std::fs::write(p, v.iter().flat_map(|x| x.to_le()).collect::<Vec<u8>>()).unwrap();
}
"#;

/// Compiles every model into `work_dir()` once and builds the host harness.
fn compiled() -> &'static Vec<Compiled> {
    static ONCE: OnceLock<Vec<Compiled>> = OnceLock::new();
    ONCE.get_or_init(|| {
        let work = work_dir();
        let _ = std::fs::remove_dir_all(work.join("crates"));
        let _ = std::fs::remove_dir_all(work.join("data"));
        let runtime = RuntimeDependency::Path(std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime")).unwrap());
        let mut all = Vec::new();
        for rel in model_dirs() {
            let file = model_file(&models_dir().join(&rel));
            let graph = import::load(&file).unwrap_or_else(|e| panic!("{e}"));
            let source = format!("{rel}/{}", file.file_name().unwrap().to_string_lossy());
            let planned = optimize_and_plan(graph, &CompileOptions::default(), &rel).unwrap_or_else(|e| panic!("{e}"));
            let (graph, plan) = (planned.graph, planned.plan);
            let krate = crate_name(&rel);
            let target = if rel.starts_with("onnx/") { Target::Host } else { Target::CortexM4 };
            write_crate(&work.join("crates").join(&krate), &krate, &source, &graph, &plan, &runtime, false, target)
                .unwrap_or_else(|e| panic!("{rel}: {e}"));
            let data = work.join("data").join(&krate);
            std::fs::create_dir_all(&data).unwrap();
            let golden = Golden::load(&models_dir().join(&rel));
            for (i, a) in golden.inputs.iter().enumerate() {
                std::fs::write(data.join(format!("input_{i}.bin")), raw_bytes(&a.data)).unwrap();
            }
            all.push(Compiled { rel, krate, graph });
        }
        // The workspace: every model crate plus the host harness.
        std::fs::write(
            work.join("Cargo.toml"),
            "[workspace]\nmembers = [\"crates/*\", \"harness\"]\nresolver = \"2\"\n\n[profile.dev]\nopt-level = 1\ndebug = false\n",
        )
        .unwrap();
        let harness = work.join("harness");
        std::fs::create_dir_all(harness.join("src")).unwrap();
        let mut manifest = String::from("[package]\nname = \"harness\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\n");
        let mut main = String::from(HARNESS_HELPERS);
        let mut dispatch = String::new();
        for c in &all {
            let _ = writeln!(manifest, "{} = {{ path = \"../crates/{}\" }}", c.krate, c.krate);
            main.push_str(&harness_fn(c));
            let _ = writeln!(dispatch, "    run_{0}(&data.join(\"{0}\"));", c.krate);
        }
        let _ = write!(main, "\nfn main() {{\n    let data = std::path::PathBuf::from(std::env::args().nth(1).unwrap());\n{dispatch}}}\n");
        std::fs::write(harness.join("Cargo.toml"), manifest).unwrap();
        std::fs::write(harness.join("src/main.rs"), main).unwrap();
        cargo(&work, &["build", "-p", "harness"]);
        all
    })
}

/// Runs cargo in `dir` with its own target folder; panics with cargo's output on failure.
fn cargo(dir: &Path, args: &[&str]) {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .arg("--target-dir")
        .arg(dir.join("target"))
        .current_dir(dir)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.trim_start().starts_with("Compiling"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn generated_crates_match_golden_outputs_on_the_host() {
    let all = compiled();
    let work = work_dir();
    let status = Command::new(work.join("target/debug/harness"))
        .arg(work.join("data"))
        .status()
        .expect("harness runs");
    assert!(status.success(), "the harness failed");
    let mut failures = Vec::new();
    for c in all {
        let golden = Golden::load(&models_dir().join(&c.rel));
        for (j, want) in golden.outputs.iter().enumerate() {
            let bytes = std::fs::read(
                work.join("data")
                    .join(&c.krate)
                    .join(format!("output_{j}.bin")),
            )
            .unwrap();
            let got = TensorData::from_le_bytes(want.data.dtype(), &bytes);
            let diff = if c.rel.starts_with("onnx/") {
                onnx_tolerance(&c.graph, j, &got, &want.data)
            } else {
                compare(&got, &want.data).map(|m| m.to_string())
            };
            if let Some(m) = diff {
                failures.push(format!("{} output {j}: {m}", c.rel));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} models differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    assert!(all.len() >= 126 + 95, "only {} models compiled", all.len());
}

#[test]
fn generated_crates_build_for_cortex_m() {
    let all = compiled();
    let work = work_dir();
    for triple in ["thumbv6m-none-eabi", "thumbv7em-none-eabihf"] {
        let mut args = vec!["build", "--release", "--target", triple];
        for c in all {
            args.push("-p");
            args.push(&c.krate);
        }
        cargo(&work, &args);
    }
}

#[test]
fn shipped_models_have_no_panic_path_on_cortex_m4() {
    let all = compiled();
    let work = work_dir();
    // The shipped models, and three ONNX networks covering float, int8 and transposed
    // convolutions.
    let probed = |rel: &str| {
        !rel.contains("ops/")
            && (!rel.starts_with("onnx/")
                || ["onnx/lenet_mnist", "onnx/ds_cnn_qdq", "onnx/autoencoder"].contains(&rel))
    };
    for c in all.iter().filter(|c| probed(&c.rel)) {
        let sizes = kiln_codegen::emit::rust::probe::measure(
            &work.join("crates").join(&c.krate),
            &c.krate,
            &c.graph,
            "thumbv7em-none-eabihf",
            &work.join("probe").join(&c.krate),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", c.rel));
        println!(
            "{}: .text {} .rodata {} .data {} .bss {}",
            c.rel, sizes.text, sizes.rodata, sizes.data, sizes.bss
        );
        assert!(
            sizes.panic_symbols.is_empty(),
            "{}: run can panic: {:?}",
            c.rel,
            sizes.panic_symbols
        );
        assert!(
            sizes.text > 500,
            "{}: the probe holds no code ({} bytes)",
            c.rel,
            sizes.text
        );
    }
}
