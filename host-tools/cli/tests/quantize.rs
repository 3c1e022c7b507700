//! `kiln quantize`, and `--quantize int8` on `kiln compile` and `kiln run`, as a user
//! runs them on the float ResNet-8 with its golden inputs as calibration data.

mod common;

use common::{kiln, temp_dir, text};

const MODEL: &str = "models/pretrainedResnet/model.tflite";
const CALIB: &str = "models/pretrainedResnet/golden/input_0.npy";

#[test]
fn quantize_report_prints_every_layer_and_the_output_agreement() {
    let o = kiln(&[
        "quantize", MODEL, "--calib", CALIB, "--method", "mse", "--report",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("quantized to int8") && t.contains("calibrated on 20 samples, mse"),
        "{t}"
    );
    assert!(
        t.contains("input 'input_1': int8 [1, 32, 32, 3]")
            && t.contains("output 'Identity': int8 [1, 10], scale 0.00390625, zero point -128"),
        "{t}"
    );
    // One row per graph input and node, each with an SQNR in dB.
    assert!(t.contains("SQNR dB"), "{t}");
    let rows: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("conv_2d") || l.contains("softmax"))
        .collect();
    assert_eq!(rows.len(), 10, "{t}");
    for row in rows {
        let sqnr: f64 = row.split_whitespace().last().unwrap().parse().unwrap();
        assert!(sqnr > 15.0, "{row}");
    }
    assert!(t.contains("top-1 agreement 20/20 (100.00%)"), "{t}");

    // --samples and --eval: calibrate on 5 samples, compare on all 20.
    let o = kiln(&[
        "quantize",
        MODEL,
        "--calib",
        CALIB,
        "--samples",
        "5",
        "--method",
        "percentile",
        "--percentile",
        "99.9",
        "--eval",
        CALIB,
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("calibrated on 5 samples, percentile 99.9") && t.contains("20 sample(s)"),
        "{t}"
    );
}

#[test]
fn compile_and_run_the_quantized_model() {
    let dir = temp_dir("compile-quantized");
    let o = kiln(&[
        "compile",
        MODEL,
        "--quantize",
        "int8",
        "--calib",
        CALIB,
        "--target",
        "cortex-m4",
        "--out",
        dir.to_str().unwrap(),
        "--name",
        "resnet_q",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // The shipped int8 ResNet-8's plan: the same fusions and arena.
    assert!(
        t.contains("quantized models/pretrainedResnet/model.tflite to int8: 20 calibration samples, minmax"),
        "{t}"
    );
    assert!(
        t.contains("arena bytes:    27424") && t.contains("fuse_residual x3"),
        "{t}"
    );
    assert!(t.contains(".text on thumbv7em-none-eabihf"), "{t}");
    let source = std::fs::read_to_string(dir.join("src/model.rs")).unwrap();
    assert!(
        source.contains("pub const INPUT_ZERO_POINT: i32 = -128;")
            && source.contains("pub const OUTPUT_SCALE: f32 = 0.00390625;"),
        "{}",
        &source[..2000.min(source.len())]
    );

    // kiln run quantizes the float input with the model's input parameters.
    let o = kiln(&[
        "run",
        MODEL,
        "--quantize",
        "int8",
        "--calib",
        CALIB,
        "--input",
        CALIB,
        "--show",
        "1",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("output 0 'Identity' int8 [1, 10]") && t.contains("top-1 class"),
        "{t}"
    );
}

#[test]
fn quantize_errors_name_the_file() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["quantize", MODEL, "--calib", "no/such/calib.npy"],
            "no/such/calib.npy",
        ),
        (
            &[
                "quantize",
                MODEL,
                "--calib",
                "models/kws_ref_model/golden/input_0.npy",
            ],
            "models/kws_ref_model/golden/input_0.npy: holds int8",
        ),
        (
            &[
                "quantize",
                MODEL,
                "--calib",
                "data/mnist-test/t10k-images-idx3-ubyte.gz",
            ],
            "t10k-images-idx3-ubyte.gz: IDX samples of shape [28, 28]",
        ),
        (
            &[
                "quantize",
                "models/pretrainedResnet_quant/model.tflite",
                "--calib",
                CALIB,
            ],
            "pretrainedResnet_quant/model.tflite: input 'input_1_int8' is int8",
        ),
        (
            &["quantize", "no/such/model.tflite", "--calib", CALIB],
            "no/such/model.tflite",
        ),
        (
            &[
                "quantize",
                MODEL,
                "--calib",
                CALIB,
                "--method",
                "percentile",
                "--percentile",
                "10",
            ],
            "percentile 10 is outside (50, 100]",
        ),
        (
            &[
                "compile",
                MODEL,
                "--quantize",
                "int8",
                "--out",
                "/tmp/unused",
            ],
            "calibration data missing",
        ),
        (
            &["run", MODEL, "--calib", CALIB, "--input", CALIB],
            "--calib is only used with --quantize int8",
        ),
    ];
    for (args, want) in cases {
        let o = kiln(args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {t}");
        assert!(t.contains(want), "{args:?}: {t}");
        assert!(!t.contains("panicked"), "{args:?}: {t}");
    }
}
