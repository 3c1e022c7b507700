//! The ONNX importer on bad input: every fixture in tests/fixtures/onnx fails with the
//! error its README promises (naming the file, node and problem), and truncated or
//! bit-flipped copies of valid models end in a result or an error, never a panic.

use kiln_codegen::fuzzing::import_onnx_and_run;
use kiln_codegen::import::{onnx, ImportError};
use kiln_tests::models_dir;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/onnx")
        .join(name)
}

fn error_of(name: &str) -> (ImportError, String) {
    match onnx::load(&fixture(name)) {
        Ok(_) => panic!("{name} imported"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(name),
                "{name}: error does not name the file: {text}"
            );
            (e, text)
        }
    }
}

fn assert_mentions(name: &str, words: &[&str]) -> ImportError {
    let (e, text) = error_of(name);
    for w in words {
        assert!(text.contains(w), "{name}: error lacks {w:?}: {text}");
    }
    e
}

#[test]
fn unsupported_operators_are_all_listed_with_node_names() {
    let e = assert_mentions(
        "unsupported_op_resize.onnx",
        &["Resize", "upsample_2x", "node 1"],
    );
    assert!(
        matches!(e, ImportError::Unsupported { ref items, .. } if items.len() == 1),
        "{e}"
    );
    let e = assert_mentions(
        "unsupported_ops_resize_lstm.onnx",
        &["Resize", "upsample_2x", "LSTM", "encoder_lstm", "node 3"],
    );
    assert!(
        matches!(e, ImportError::Unsupported { ref items, .. } if items.len() == 2),
        "{e}"
    );
}

#[test]
fn malformed_files_are_reported() {
    assert_mentions("truncated.onnx", &["not an ONNX model"]);
    assert_mentions(
        "missing_external_data.onnx",
        &[
            "fc.weight",
            "missing_external_data.onnx.data",
            "cannot read",
        ],
    );
    assert_mentions("conv_missing_weight.onnx", &["conv", "weight", "missing"]);
    assert_mentions(
        "conv_weight_not_constant.onnx",
        &["conv", "weight", "constant"],
    );
    assert_mentions("cycle.onnx", &["add", "relu_out", "cycle"]);
    assert_mentions("dangling_input.onnx", &["add", "bias_typo"]);
}

#[test]
fn unsupported_versions_and_shapes_are_reported() {
    let e = assert_mentions("dynamic_batch.onnx", &["input", "'N'", "static shapes"]);
    assert!(matches!(e, ImportError::DynamicShape { .. }), "{e}");
    let e = assert_mentions("opset9.onnx", &["opset 9", "11 to 21"]);
    assert!(matches!(e, ImportError::Version { .. }), "{e}");
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const MODELS: [&str; 4] = ["lenet5", "ds_cnn_qdq", "pytorch_reshape", "autoencoder"];

#[test]
fn damaged_models_never_panic() {
    let mut panics = Vec::new();
    let mut rng = Rng(0x6f6e_6e78);
    for rel in MODELS {
        let original =
            std::fs::read(models_dir().join("onnx").join(rel).join("model.onnx")).unwrap();
        assert_eq!(import_onnx_and_run(&original), Ok(()), "{rel}");
        let n = original.len();
        let mut variants: Vec<Vec<u8>> = (0..n)
            .step_by(n / 60 + 1)
            .map(|c| original[..c].to_vec())
            .collect();
        for _ in 0..120 {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.next() % 4 {
                // Flips land mostly in the first 4 KiB (graph structure), sometimes anywhere.
                let span = if rng.next().is_multiple_of(4) {
                    n
                } else {
                    n.min(4096)
                };
                let at = (rng.next() % span as u64) as usize;
                bytes[at] ^= 1 << (rng.next() % 8);
            }
            variants.push(bytes);
        }
        for (i, bytes) in variants.iter().enumerate() {
            if std::panic::catch_unwind(|| import_onnx_and_run(bytes)).is_err() {
                panics.push(format!("{rel} variant {i}"));
            }
        }
    }
    assert!(panics.is_empty(), "panics: {panics:?}");
}

/// Inputs the fuzzer once crashed the importer with (tests/fixtures/onnx/fuzz/): each
/// must now end in an error or a result.
#[test]
fn fuzzer_findings_stay_fixed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/onnx/fuzz");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let outcome = std::panic::catch_unwind(|| import_onnx_and_run(&bytes));
        assert!(outcome.is_ok(), "{} panics", f.display());
    }
}
