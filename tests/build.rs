//! Generates one `#[test]` per model folder with golden vectors, so every model passes
//! or fails on its own line of the test report.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut dirs = Vec::new();
    for parent in [
        root.clone(),
        root.join("ops"),
        root.join("onnx"),
        root.join("onnx/ops"),
    ] {
        println!("cargo:rerun-if-changed={}", parent.display());
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            let has_model =
                e.path().join("model.tflite").is_file() || e.path().join("model.onnx").is_file();
            if e.path().join("golden").is_dir() && has_model {
                dirs.push(e.path().strip_prefix(&root).unwrap().to_path_buf());
            }
        }
    }
    dirs.sort();
    let mut code = String::new();
    for dir in dirs {
        let rel = dir.to_string_lossy().replace('\\', "/");
        let name: String = rel
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        writeln!(
            code,
            "#[test]\nfn {name}() {{ kiln_tests::assert_golden({rel:?}); }}"
        )
        .unwrap();
    }
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("golden_tests.rs");
    std::fs::write(out, code).unwrap();
}
