//! The float ONNX route end to end through the `kiln` binary: check, eval (float and
//! int8 accuracy on the official MNIST test set), compile with quantization, and the
//! errors a user sees for bad models.

mod common;
use common::{kiln, repo, temp_dir, text};

/// Parses "NN.NN%" after `label` in kiln eval's output.
fn percent_after(out: &str, label: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{out}"));
    let pct = line[label.len()..].trim_start().split('%').next().unwrap();
    pct.trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad line {line:?}"))
}

#[test]
fn lenet_int8_accuracy_is_within_half_a_point_of_float_on_mnist_test() {
    let o = kiln(&[
        "eval",
        "models/onnx/lenet_mnist/model.onnx",
        "--data",
        "data/mnist-test/t10k-images-idx3-ubyte.gz",
        "--labels",
        "data/mnist-test/t10k-labels-idx1-ubyte.gz",
        "--quantize",
        "int8",
        "--calib",
        "data/mnist-10k/train-images-idx3-ubyte.gz",
        "--calib-samples",
        "500",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("10000 samples"), "{out}");
    let float = percent_after(&out, "float accuracy:");
    let int8 = percent_after(&out, "int8 accuracy:");
    assert!(float >= 98.0, "float accuracy {float}%:\n{out}");
    assert!(
        (int8 - float).abs() <= 0.5,
        "int8 {int8}% vs float {float}%:\n{out}"
    );
}

#[test]
fn check_lists_every_unsupported_onnx_operator() {
    let o = kiln(&[
        "check",
        "tests/fixtures/onnx/unsupported_ops_resize_lstm.onnx",
    ]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("2 unsupported operator(s)"), "{out}");
    assert!(
        out.contains("Resize 'upsample_2x'") && out.contains("LSTM 'encoder_lstm'"),
        "{out}"
    );
    let o = kiln(&["check", "models/onnx/ds_cnn/model.onnx"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn malformed_onnx_gives_one_line_error_and_failure() {
    for f in [
        "truncated.onnx",
        "cycle.onnx",
        "dynamic_batch.onnx",
        "opset9.onnx",
    ] {
        let path = format!("tests/fixtures/onnx/{f}");
        let o = kiln(&[
            "run",
            &path,
            "--input",
            "models/onnx/mlp/golden/input_0.npy",
        ]);
        let out = text(&o);
        assert!(!o.status.success(), "{f}: {out}");
        assert!(out.starts_with("error: ") && out.contains(f), "{f}: {out}");
        assert!(!out.contains("panicked"), "{f}: {out}");
    }
}

#[test]
fn float_onnx_compiles_to_int8_crate() {
    let dir = temp_dir("onnx-compile");
    let out_dir = dir.join("lenet");
    let o = kiln(&[
        "compile",
        "models/onnx/lenet_mnist/model.onnx",
        "--quantize",
        "int8",
        "--calib",
        "data/mnist-10k/train-images-idx3-ubyte.gz",
        "--target",
        "cortex-m4",
        "--no-size",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let src = std::fs::read_to_string(out_dir.join("src/model.rs")).unwrap();
    // A quantized model: int8 input with its parameters exported for the firmware.
    assert!(src.contains("pub const INPUT_SCALE"), "{src}");
    assert!(src.contains("input: &[i8; INPUT_LEN]"), "{src}");
    assert!(repo().join("models/onnx/lenet_mnist/model.onnx").exists());
    let _ = std::fs::remove_dir_all(dir);
}
