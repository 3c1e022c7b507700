//! A trained model leaves `kiln train` two ways: as ONNX (`--export-onnx`, which kiln's
//! importer reads back to the same outputs) and straight into `kiln compile`/`check` from
//! its model file and weights (float -> int8 -> crate, no intermediate model file).

mod common;

use common::{kiln, repo, temp_dir, text};
use kiln_codegen::exec::{Executor, TensorData};
use kiln_codegen::export::onnx;
use kiln_codegen::import::onnx::parse_with_dims;

#[test]
fn trained_lenet_exports_to_onnx_and_compiles_from_its_model_file() {
    let dir = temp_dir("export");
    let out = dir.join("trained");
    let exported = dir.join("lenet.onnx");
    let o = kiln(&[
        "train",
        "--model",
        "models/lenet/model.toml",
        "--data",
        "data/mnist-10k",
        "--limit",
        "256",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--export-onnx",
        exported.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("ONNX opset 13"), "{t}");
    let (model, weights) = (out.join("model.toml"), out.join("weights.safetensors"));

    // The ONNX file is the trained graph: kiln reads it back to the same outputs.
    let trained = kiln_train::load(&model, &weights).unwrap();
    let bytes = std::fs::read(&exported).unwrap();
    let back = parse_with_dims(&bytes, "lenet.onnx", None, &[(onnx::BATCH, 1)]).unwrap();
    let image: Vec<f32> = (0..784).map(|i| ((i * 37) % 255) as f32 / 255.0).collect();
    // One channel: NHWC and NCHW hold the same element order.
    let want = Executor::new(&trained)
        .unwrap()
        .run(&[TensorData::F32(image.clone())]);
    let got = Executor::new(&back).unwrap().run(&[TensorData::F32(image)]);
    let (want, got) = (want.unwrap(), got.unwrap());
    let (w, g) = (want[0].as_f32().unwrap(), got[0].as_f32().unwrap());
    let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        w.iter().zip(g).all(|(a, b)| (a - b).abs() <= 1e-5 * max),
        "{w:?} vs {g:?}"
    );

    // The export's batch is the symbol N: kiln's commands take it with --dim N=1 and
    // say so without it; a TFLite model has no such names.
    let onnx_path = exported.to_str().unwrap();
    let o = kiln(&["check", onnx_path]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("--dim N=1"), "{t}");
    let o = kiln(&["check", onnx_path, "--dim", "N=1"]);
    let t = text(&o);
    assert!(o.status.success() && t.contains("supported"), "{t}");
    let o = kiln(&["--dim", "N=1", "inspect", onnx_path]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for bad in ["N", "N=0", "=3", "N=x"] {
        let o = kiln(&["check", onnx_path, "--dim", bad]);
        let t = text(&o);
        assert!(!o.status.success() && t.contains("NAME=SIZE"), "{bad}: {t}");
    }
    // A name no input has (a typo) is refused, naming the symbols there are.
    let o = kiln(&["check", onnx_path, "--dim", "N=1", "--dim", "B=4"]);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("'B'") && t.contains("symbols: N"),
        "{t}"
    );
    let o = kiln(&["check", "models/kws_ref_model/model.tflite", "--dim", "N=1"]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("for ONNX models"), "{t}");

    // Straight from the model file to an int8 crate for a Cortex-M4 (its code size is
    // measured by building it for the target, so the crate builds).
    let krate = dir.join("crate");
    let o = kiln(&[
        "compile",
        model.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--quantize",
        "int8",
        "--calib",
        "data/mnist-10k/train-images-idx3-ubyte.gz",
        "--samples",
        "100",
        "--target",
        "cortex-m4",
        "--name",
        "lenet_from_toml",
        "--out",
        krate.to_str().unwrap(),
        "--report",
        "json",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("quantized") && t.contains("100 calibration samples"),
        "{t}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {t}"));
    let ops: Vec<&str> = report["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "conv_2d",
            "max_pool_2d",
            "conv_2d",
            "max_pool_2d",
            "reshape",
            "fully_connected",
            "fully_connected",
            "fully_connected"
        ],
        "relus fused, int8 throughout: {t}"
    );
    // int8 weights (44,190) and int32 biases (236 x 4), plus alignment.
    let weight_bytes = report["weight_bytes"].as_u64().unwrap();
    assert!((45_134..45_300).contains(&weight_bytes), "{weight_bytes}");
    let arena = report["arena_bytes"].as_u64().unwrap();
    assert!((3456..=8192).contains(&arena), "{arena}");
    assert!(report["code"]["text"].as_u64().unwrap() > 0, "{t}");
    let source = std::fs::read_to_string(krate.join("src/model.rs")).unwrap();
    assert!(
        source.contains("pub const INPUT_LEN: usize = 784;"),
        "{source}"
    );
    assert!(source.contains("pub const OUTPUT_LEN: usize = 10;"));
    assert!(source.contains(&format!("pub const ARENA_BYTES: usize = {arena};")));

    let o = kiln(&[
        "check",
        model.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success() && t.contains("supported"), "{t}");
}

#[test]
fn model_files_and_weights_must_go_together() {
    let dir = temp_dir("export-weights");
    let o = kiln(&[
        "compile",
        "models/lenet/model.toml",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.starts_with("error: ") && t.contains("model.toml") && t.contains("--weights"),
        "{t}"
    );
    let o = kiln(&[
        "run",
        "models/kws_ref_model/model.tflite",
        "--weights",
        "w.safetensors",
        "--input",
        "x.npy",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("--weights is only for kiln-train model files"),
        "{t}"
    );
    let wrong = repo().join("models/lenet/mlp.toml");
    let o = kiln(&[
        "check",
        "models/lenet/model.toml",
        "--weights",
        wrong.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("mlp.toml") && !t.contains("panicked"), "{t}");
}
