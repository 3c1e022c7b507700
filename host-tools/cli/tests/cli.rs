//! The `kiln` binary as a user runs it: exit codes and what it prints.

mod common;

use common::{kiln, repo, temp_dir, text};

#[test]
fn check_lists_every_unsupported_operator() {
    let o = kiln(&["check", "tests/fixtures/unsupported_ops.tflite"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("unsupported_ops.tflite: 2 unsupported operator(s)"),
        "{t}"
    );
    assert!(t.contains("node 1 SQUARED_DIFFERENCE"), "{t}");
    assert!(
        t.contains("node 2 ADD: tensor 4 'a16' has type INT16"),
        "{t}"
    );
}

#[test]
fn run_refuses_unsupported_models_with_the_same_list() {
    let o = kiln(&[
        "run",
        "tests/fixtures/unsupported_ops.tflite",
        "--input",
        "x.npy",
        "--input",
        "y.npy",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("SQUARED_DIFFERENCE") && t.contains("INT16"),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");
}

#[test]
fn check_accepts_the_shipped_models() {
    let o = kiln(&["check", "models/kws_ref_model/model.tflite"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("4 x depthwise_conv_2d") && t.contains("supported"),
        "{t}"
    );
}

#[test]
fn missing_and_malformed_files_are_one_line_errors() {
    let o = kiln(&["check", "no/such/model.tflite"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("no/such/model.tflite: cannot read"),
        "{}",
        text(&o)
    );

    let dir = temp_dir("malformed");
    let bad = dir.join("bad.tflite");
    std::fs::write(&bad, b"definitely not a flatbuffer").unwrap();
    let o = kiln(&["check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("bad.tflite: malformed model"),
        "{}",
        text(&o)
    );
}

#[test]
fn run_matches_golden_outputs_and_writes_npy() {
    let dir = temp_dir("run");
    let out = dir.join("out.npy");
    let m = "models/kws_ref_model";
    let o = kiln(&[
        "run",
        &format!("{m}/model.tflite"),
        "--input",
        &format!("{m}/golden/input_0.npy"),
        "--expect",
        &format!("{m}/golden/output_0.npy"),
        "--output",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("bit-exact: 20/20 samples match"), "{t}");
    assert!(t.contains("top-1 class"), "{t}");
    let written = std::fs::read(&out).unwrap();
    let golden = std::fs::read(repo().join(m).join("golden/output_0.npy")).unwrap();
    // Same header layout (numpy writes the same dict) is not guaranteed; compare data.
    assert_eq!(written[written.len() - 240..], golden[golden.len() - 240..]);
}

#[test]
fn run_reports_a_mismatch_with_exit_status_2() {
    let m = "models/pretrainedResnet_quant";
    // The KWS golden outputs have the wrong shape for ResNet: a clear error, exit 1.
    let o = kiln(&[
        "run",
        &format!("{m}/model.tflite"),
        "--input",
        &format!("{m}/golden/input_0.npy"),
        "--expect",
        "models/kws_ref_model/golden/output_0.npy",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // A tampered expectation with the right shape: exit 2 and the differing sample.
    let dir = temp_dir("mismatch");
    let golden = repo().join(m).join("golden/output_0.npy");
    let mut bytes = std::fs::read(golden).unwrap();
    let last = bytes.len() - 1;
    bytes[last] = bytes[last].wrapping_add(1);
    let tampered = dir.join("expected.npy");
    std::fs::write(&tampered, bytes).unwrap();
    let o = kiln(&[
        "run",
        &format!("{m}/model.tflite"),
        "--input",
        &format!("{m}/golden/input_0.npy"),
        "--expect",
        tampered.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("sample 19: 1 of 10 elements differ") && t.contains("19/20 samples match"),
        "{t}"
    );
}

#[test]
fn dump_writes_every_intermediate_tensor() {
    let dir = temp_dir("dump");
    let m = "models/kws_ref_model";
    let o = kiln(&[
        "run",
        &format!("{m}/model.tflite"),
        "--input",
        &format!("{m}/golden/input_0.npy"),
        "--dump",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    // 1 input + 13 nodes + index.txt.
    assert_eq!(files.len(), 15, "{files:?}");
    assert!(files[0].starts_with("000_conv_2d_"), "{files:?}");
    assert!(
        files.iter().any(|f| f.starts_with("012_softmax_")),
        "{files:?}"
    );
    let index = std::fs::read_to_string(dir.join("index.txt")).unwrap();
    assert!(
        index.contains("depthwise_conv_2d\tint8\t[1, 25, 5, 64]"),
        "{index}"
    );
}

#[test]
fn run_rejects_inputs_of_the_wrong_shape() {
    let o = kiln(&[
        "run",
        "models/kws_ref_model/model.tflite",
        "--input",
        "models/pretrainedResnet_quant/golden/input_0.npy",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("does not match the model input [1, 49, 10, 1]"),
        "{t}"
    );
}

#[test]
fn check_lists_every_node_whose_quantization_the_kernels_refuse() {
    let o = kiln(&["check", "tests/fixtures/bad_quantization.tflite"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("2 operator(s) with quantization kiln's kernels cannot use"),
        "{t}"
    );
    assert!(
        t.contains("node 0 'probabilities' (softmax)") && t.contains("1/256"),
        "{t}"
    );
    assert!(t.contains("node 1 'joined' (concatenation)"), "{t}");
}

#[test]
fn compile_writes_a_crate_and_reports_the_plan() {
    let dir = temp_dir("compile");
    let o = kiln(&[
        "compile",
        "models/kws_ref_model/model.tflite",
        "--target",
        "cortex-m4",
        "--out",
        dir.to_str().unwrap(),
        "--name",
        "kws",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("arena bytes:") && t.contains("total MACs:") && t.contains("depthwise_conv_2d"),
        "{t}"
    );
    // Measured on the target: the probe links run and the kernels, and nothing that panics.
    assert!(t.contains(".text on thumbv7em-none-eabihf"), "{t}");
    for f in [
        "Cargo.toml",
        "src/lib.rs",
        "src/model.rs",
        "src/model.weights.bin",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let source = std::fs::read_to_string(dir.join("src/model.rs")).unwrap();
    assert!(
        source.contains("pub const ARENA_BYTES: usize = 9536;"),
        "{}",
        &source[..2000]
    );
    assert!(source.contains(
        "pub fn run(arena: &mut Arena, input: &[i8; INPUT_LEN], output: &mut [i8; OUTPUT_LEN])"
    ));
    assert!(source.contains("pub const INPUT_ZERO_POINT: i32 = 83;"));
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("name = \"kws\"") && manifest.contains("kiln-runtime"),
        "{manifest}"
    );
}

#[test]
fn compile_report_json_has_one_row_per_op() {
    let dir = temp_dir("compile-json");
    let o = kiln(&[
        "compile",
        "models/pretrainedResnet_quant/model.tflite",
        "--out",
        dir.to_str().unwrap(),
        "--report",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    // 16 operators, 3 of them residual ADDs fused into the convolutions before them.
    assert_eq!(report["ops"].as_array().unwrap().len(), 13);
    assert_eq!(report["passes"]["fuse_residual"], 3);
    let arena = report["arena_bytes"].as_u64().unwrap();
    assert!(arena >= report["lower_bound_bytes"].as_u64().unwrap());
    assert_eq!(report["ops"][0]["op"], "conv_2d");
    assert_eq!(
        report["macs"].as_u64().unwrap(),
        report["ops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["macs"].as_u64().unwrap())
            .sum::<u64>()
    );
}

#[test]
fn compile_rejects_an_arena_over_the_limit_and_unknown_targets() {
    let dir = temp_dir("compile-limit");
    let o = kiln(&[
        "compile",
        "models/kws_ref_model/model.tflite",
        "--out",
        dir.to_str().unwrap(),
        "--max-arena",
        "4096",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("4096"), "{t}");
    let o = kiln(&[
        "compile",
        "models/kws_ref_model/model.tflite",
        "--out",
        dir.to_str().unwrap(),
        "--target",
        "z80",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("unknown target 'z80'"), "{}", text(&o));
}

#[test]
fn inspect_draws_the_memory_plan() {
    let dir = temp_dir("inspect");
    let svg = dir.join("plan.svg");
    let o = kiln(&[
        "inspect",
        "models/pretrainedResnet_quant/model.tflite",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.trim_end().ends_with("</svg>"));
    // One rectangle per arena tensor plus the background.
    assert!(picture.matches("<rect").count() > 10, "{picture}");
    assert!(picture.contains("peak at step"));
}

#[test]
fn dynamic_shapes_are_refused_with_the_tensor_named() {
    let dir = temp_dir("dynamic");
    for args in [
        vec!["check", "tests/fixtures/dynamic_shape.tflite"],
        vec![
            "compile",
            "tests/fixtures/dynamic_shape.tflite",
            "--out",
            dir.to_str().unwrap(),
        ],
    ] {
        let o = kiln(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(
            t.contains("tensor 0 'x' has the dynamic shape [-1, 10]"),
            "{t}"
        );
        assert!(
            !dir.join("src").exists(),
            "nothing is written for a refused model"
        );
    }
}
