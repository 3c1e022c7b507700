//! The build-script half: model, sample input and `memory.x` into `OUT_DIR`.

use kiln_codegen::board::{self, Board};
use kiln_codegen::exec::TensorData;
use kiln_codegen::Builder;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The model firmware runs when `KILN_MODEL` is not set: the shipped keyword spotter.
pub fn default_model() -> PathBuf {
    let kiln = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&kiln)
        .unwrap_or(kiln)
        .join("models/kws_ref_model/model.tflite")
}

/// For a firmware's `build.rs`: compiles the model (`KILN_MODEL`, or
/// [`default_model`]) for `board` into `OUT_DIR/model.rs`, checks that it fits the
/// board, writes `OUT_DIR/sample.rs` (`MODEL`, `INPUT`, `EXPECTED`: the first golden
/// input next to the model, or `KILN_INPUT`, an int8 `.npy`) and `OUT_DIR/memory.x`,
/// and passes cortex-m-rt's and defmt's linker scripts. Exits with one clear line on
/// stderr when anything fails.
pub fn generate(board: &str) {
    if let Err(e) = try_generate(board) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn try_generate(name: &str) -> Result<(), String> {
    let board: &'static Board = board::find(name)?;
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let builder = Builder::new(default_model())
        .model_from_env("KILN_MODEL")
        .board(board)
        .name("model")
        .out_dir(&out);
    let model = builder.model_path();
    builder.generate().map_err(|e| e.to_string())?;
    println!("cargo:rerun-if-env-changed=KILN_INPUT");

    let golden = model.parent().unwrap_or(Path::new(".")).join("golden");
    let (input_file, expected) = match std::env::var_os("KILN_INPUT") {
        Some(f) => (Some(PathBuf::from(f)), None),
        None if golden.join("input_0.npy").is_file() => (
            Some(golden.join("input_0.npy")),
            first_sample(&golden.join("output_0.npy"))
                .ok()
                .map(|o| top_class(&o)),
        ),
        None => (None, None),
    };
    let input = match &input_file {
        Some(f) => {
            println!("cargo:rerun-if-changed={}", f.display());
            first_sample(f)?
        }
        None => Vec::new(),
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "/// The model file.\npub const MODEL: &str = {:?};",
        model.display().to_string()
    );
    let _ = writeln!(
        s,
        "/// Sample input ({}).\npub static INPUT: [i8; {}] = {input:?};",
        input_file
            .as_ref()
            .map_or("zeros".into(), |f| f.display().to_string()),
        input.len()
    );
    let _ = writeln!(s, "/// The host's top class for INPUT, when known.\npub const EXPECTED: Option<usize> = {expected:?};");
    write(&out.join("sample.rs"), s.as_bytes())?;
    write(&out.join("memory.x"), board.memory_x().as_bytes())?;
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo:rustc-link-arg=-Tdefmt.x");
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The first sample of an int8 `.npy` file (samples stacked on the first axis).
fn first_sample(path: &Path) -> Result<Vec<i8>, String> {
    let a = kiln_codegen::npy::read(path).map_err(|e| e.to_string())?;
    let TensorData::I8(data) = a.data else {
        return Err(format!("{}: expected int8 data", path.display()));
    };
    let n = a.shape.first().copied().unwrap_or(1).max(1);
    Ok(data[..data.len() / n].to_vec())
}

fn top_class(scores: &[i8]) -> usize {
    crate::top_class(scores)
}
