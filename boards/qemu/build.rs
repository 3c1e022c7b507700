//! Compiles the model named by `KILN_MODEL` into `OUT_DIR` with `kiln_codegen::Builder`,
//! writes its input (and expected output) samples as raw bytes next to it, and picks the
//! linker memory map for `KILN_MACHINE`.
//!
//! Environment (set by `kiln emulate`, or by hand):
//! - `KILN_MODEL`: the model file (`.tflite`), required.
//! - `KILN_MACHINE`: `mps2-an386` (default), `mps2-an385` or `microbit`; its memory map
//!   and core come from `kiln_codegen::board`.
//! - `KILN_INPUT`: int8 `.npy` of input samples `[N, ...]`; defaults to the model
//!   folder's `golden/input_0.npy`.
//! - `KILN_EXPECT`: int8 `.npy` of expected outputs; defaults to `golden/output_0.npy`
//!   when `KILN_INPUT` is unset; empty to compare nothing.
//! - `KILN_SAMPLES`: run at most this many samples.
//! - `KILN_FAULT=1`: execute an undefined instruction first (tests the HardFault exit).
//!
//! Feature `profile` sets `cfg(kiln_profile)`, which turns on the generated code's
//! per-layer hook (see `src/main.rs`).

use kiln_codegen::exec::TensorData;
use kiln_codegen::npy;
use std::path::{Path, PathBuf};

fn main() {
    if let Err(e) = build() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn env(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var(name).ok()
}

/// Raw int8 samples of an `.npy` file: (bytes, elements per sample, samples).
fn samples(path: &Path) -> Result<(Vec<u8>, usize, usize), String> {
    println!("cargo:rerun-if-changed={}", path.display());
    let a = npy::read(path).map_err(|e| e.to_string())?;
    let TensorData::I8(v) = &a.data else {
        return Err(format!(
            "{}: int8 data expected (kiln emulate quantizes float inputs)",
            path.display()
        ));
    };
    let n = a.shape.first().copied().unwrap_or(1).max(1);
    Ok((v.iter().map(|&x| x as u8).collect(), v.len() / n, n))
}

fn build() -> Result<(), String> {
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let machine = env("KILN_MACHINE").unwrap_or_else(|| "mps2-an386".into());
    // Memory map, core and timer from kiln's board table.
    let board = kiln_codegen::board::find(&machine).map_err(|e| format!("KILN_MACHINE: {e}"))?;
    let timer = match machine.as_str() {
        "mps2-an386" | "mps2-an385" => true,
        "microbit" => false,
        other => return Err(format!("KILN_MACHINE={other}: not a QEMU machine this firmware runs on (mps2-an386, mps2-an385, microbit)")),
    };
    let target = board.target;
    std::fs::write(out.join("memory.x"), board.memory_x()).map_err(|e| e.to_string())?;
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo::rustc-check-cfg=cfg(kiln_timer)");
    println!("cargo::rustc-check-cfg=cfg(kiln_fault)");
    println!("cargo::rustc-check-cfg=cfg(kiln_profile)");
    if std::env::var_os("CARGO_FEATURE_PROFILE").is_some() {
        println!("cargo:rustc-cfg=kiln_profile");
    }
    if env("KILN_FAULT").is_some_and(|v| v == "1") {
        println!("cargo:rustc-cfg=kiln_fault");
    }
    if timer {
        println!("cargo:rustc-cfg=kiln_timer");
    }

    let model = env("KILN_MODEL").ok_or(
        "KILN_MODEL is not set: name the model file, e.g. KILN_MODEL=models/kws_ref_model/model.tflite (or use `kiln emulate`)",
    )?;
    let model = PathBuf::from(model);
    kiln_codegen::Builder::new(&model)
        .name("model")
        .target(target)
        .out_dir(&out)
        .generate()
        .map_err(|e| e.to_string())?;

    let golden = model.parent().unwrap_or(Path::new(".")).join("golden");
    let (input, expect) = match env("KILN_INPUT") {
        Some(i) => (PathBuf::from(i), env("KILN_EXPECT").map(PathBuf::from)),
        None => (
            golden.join("input_0.npy"),
            Some(env("KILN_EXPECT").map_or(golden.join("output_0.npy"), PathBuf::from)),
        ),
    };
    let expect = expect.filter(|p| !p.as_os_str().is_empty());
    let (x, x_len, mut n) = samples(&input)?;
    if let Some(limit) = env("KILN_SAMPLES").filter(|s| !s.is_empty()) {
        let limit: usize = limit
            .parse()
            .map_err(|_| format!("KILN_SAMPLES={limit}: not a number"))?;
        n = n.min(limit.max(1));
    }
    std::fs::write(out.join("input.bin"), &x[..n * x_len]).map_err(|e| e.to_string())?;
    let y_len = match &expect {
        Some(p) => {
            let (y, y_len, m) = samples(p)?;
            if m < n {
                return Err(format!(
                    "{}: {m} expected samples for {n} inputs",
                    p.display()
                ));
            }
            std::fs::write(out.join("expect.bin"), &y[..n * y_len]).map_err(|e| e.to_string())?;
            y_len
        }
        None => {
            std::fs::write(out.join("expect.bin"), []).map_err(|e| e.to_string())?;
            0
        }
    };
    let data = format!(
        "/// The machine this firmware was built for.\npub const MACHINE: &str = {machine:?};\n\
         /// Samples to run.\npub const SAMPLES: usize = {n};\n\
         /// Input elements per sample in `input.bin`.\npub const INPUT_SAMPLE: usize = {x_len};\n\
         /// Expected output elements per sample in `expect.bin` (0: no comparison).\npub const EXPECT_SAMPLE: usize = {y_len};\n"
    );
    std::fs::write(out.join("data.rs"), data).map_err(|e| e.to_string())?;
    Ok(())
}
