//! `kiln train`: bad model files fail with the file, line and field, and a tiny run
//! writes its artifacts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run kiln")
}

fn train_with_model(text: &str, name: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("kiln-train-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.toml");
    std::fs::write(&model, text).unwrap();
    let out = dir.join("out");
    let o = kiln(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "data/mnist-10k",
        "--epochs",
        "1",
        "--limit",
        "64",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (o.status.success(), stderr)
}

#[test]
fn bad_model_files_name_file_line_and_field() {
    let cases = [
        (
            "unknown_field",
            "input = [28, 28, 1]\n\n[[layer]]\ntype = \"conv\"\nfilters = 4\nkernel = 3\nfilterz = 2\n",
            &["model.toml", "line 3", "filterz"][..],
        ),
        (
            "unknown_type",
            "input = [28, 28, 1]\n[[layer]]\ntype = \"convolution\"\n",
            &["model.toml", "line 3", "convolution", "expected one of"][..],
        ),
        (
            "syntax",
            "input = [28, 28, 1\n",
            &["model.toml", "line 1"][..],
        ),
        (
            "missing_input",
            "[[layer]]\ntype = \"relu\"\n",
            &["model.toml", "input"][..],
        ),
        (
            "window_too_big",
            "input = [28, 28, 1]\n[[layer]]\ntype = \"flatten\"\n\n[[layer]]\ntype = \"max_pool\"\nsize = 2\n",
            &["model.toml", "line 5", "layer 2", "max_pool", "image input"][..],
        ),
        (
            "kernel_does_not_fit",
            "input = [4, 4, 1]\n[[layer]]\ntype = \"conv\"\nfilters = 2\nkernel = 5\n",
            &["model.toml", "line 2", "layer 1", "does not fit"][..],
        ),
        (
            "bad_padding",
            "input = [8, 8, 1]\n[[layer]]\ntype = \"conv\"\nfilters = 2\nkernel = 3\npadding = \"full\"\n",
            &["model.toml", "line 2", "padding \"full\""][..],
        ),
    ];
    for (name, text, wants) in cases {
        let (ok, stderr) = train_with_model(text, name);
        assert!(!ok, "{name}: should fail");
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        for want in wants {
            assert!(stderr.contains(want), "{name}: no '{want}' in: {stderr}");
        }
    }
}

#[test]
fn bad_data_and_options_fail_cleanly() {
    let o = kiln(&[
        "train",
        "--model",
        "models/lenet/mlp.toml",
        "--data",
        "models",
        "--out",
        "/tmp/x",
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("models") && stderr.contains("images"),
        "{stderr}"
    );
    let o = kiln(&[
        "train",
        "--model",
        "models/lenet/mlp.toml",
        "--data",
        "data/mnist-10k",
        "--optimizer",
        "lbfgs",
        "--out",
        "/tmp/x",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("lbfgs"));
}

#[test]
fn trains_an_mlp_and_writes_artifacts() {
    let out = std::env::temp_dir().join(format!("kiln-train-cli-{}-mlp", std::process::id()));
    let o = kiln(&[
        "train",
        "--model",
        "models/lenet/mlp.toml",
        "--data",
        "data/mnist-10k",
        "--test",
        "data/mnist-10k",
        "--limit",
        "512",
        "--test-limit",
        "200",
        "--quantize",
        "int8",
        "--calib-samples",
        "50",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("float test accuracy"), "{stdout}");
    assert!(stdout.contains("int8 test accuracy"), "{stdout}");
    for f in ["model.toml", "weights.safetensors", "curve.svg"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let graph = kiln_train_load(&out);
    assert_eq!(graph.outputs.len(), 1);
}

fn kiln_train_load(out: &Path) -> kiln_codegen::ir::Graph {
    kiln_train::load(&out.join("model.toml"), &out.join("weights.safetensors")).expect("load")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-train-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `kiln train` of the MLP on 64 MNIST samples, batch 16, with `extra` arguments.
fn train_mlp(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--model",
        "models/lenet/mlp.toml",
        "--data",
        "data/mnist-10k",
        "--limit",
        "64",
        "--batch",
        "16",
        "--augment",
        "shift=1,noise=0.02",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    kiln(&args)
}

#[test]
fn resume_continues_bit_identically() {
    let dir = temp("resume");
    let (straight, first, resumed) = (dir.join("a"), dir.join("b"), dir.join("c"));
    let ok = |o: &Output| {
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    ok(&train_mlp(&straight, &["--epochs", "3"]));
    ok(&train_mlp(&first, &["--epochs", "1"]));
    let ckpt = first.join("checkpoint.safetensors");
    let stdout = ok(&train_mlp(
        &resumed,
        &["--epochs", "3", "--resume", ckpt.to_str().unwrap()],
    ));
    assert!(
        stdout.contains("resuming from") && stdout.contains("after epoch 1 of 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("epoch 3:") && !stdout.contains("epoch 1:"),
        "{stdout}"
    );
    let read = |d: &Path| std::fs::read(d.join("weights.safetensors")).unwrap();
    assert!(
        read(&straight) == read(&resumed),
        "resumed weights differ from a straight run"
    );
    // Other settings than the checkpoint's are refused, naming each.
    let o = train_mlp(
        &dir.join("d"),
        &[
            "--epochs",
            "3",
            "--optimizer",
            "sgd",
            "--resume",
            ckpt.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(
        stderr.contains("checkpoint.safetensors") && stderr.contains("optimizer Adam"),
        "{stderr}"
    );
    // A plain weights file is not a checkpoint.
    let weights = first.join("weights.safetensors");
    let o = train_mlp(&dir.join("e"), &["--resume", weights.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("not a kiln-train checkpoint"), "{stderr}");
}

#[test]
fn bad_csv_and_labels_name_file_line_and_column() {
    let dir = temp("csv");
    // One label and 784 pixels per row; the model has 10 classes.
    let row = |label: &str, pixel: &str| format!("{label}{}\n", format!(",{pixel}").repeat(784));
    let cases = [
        (
            "ragged",
            format!("{}{}", row("1", "0"), row("2", "0").replacen(",0", "", 1)),
            "ragged.csv:2: 784 fields, the first row (line 1) has 785",
        ),
        (
            "number",
            format!("{}{}", row("1", "0"), row("2", "1O")),
            "number.csv:2:3: '1O' is not a finite number",
        ),
        (
            "label",
            format!("{}{}", row("1", "0"), row("12", "0")),
            "label.csv: label 12 of sample 1 does not fit the model's 10 classes",
        ),
    ];
    for (name, text, want) in cases {
        let file = dir.join(format!("{name}.csv"));
        std::fs::write(&file, text).unwrap();
        let o = kiln(&[
            "train",
            "--model",
            "models/lenet/mlp.toml",
            "--data",
            file.to_str().unwrap(),
            "--out",
            dir.join("out").to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && !stderr.contains("panicked"),
            "{stderr}"
        );
        assert!(stderr.contains(want), "{name}: no '{want}' in {stderr}");
    }
}

#[test]
fn qat_reports_fake_quant_and_int8_accuracy_and_writes_ranges() {
    let out = std::env::temp_dir().join(format!("kiln-train-cli-{}-qat", std::process::id()));
    let args = |start: &str| {
        vec![
            "train".to_string(),
            "--model".into(),
            "models/lenet/mlp.toml".into(),
            "--data".into(),
            "data/mnist-10k".into(),
            "--test".into(),
            "data/mnist-test".into(),
            "--limit".into(),
            "512".into(),
            "--test-limit".into(),
            "200".into(),
            "--epochs".into(),
            "2".into(),
            "--qat".into(),
            "--qat-start-epoch".into(),
            start.into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let run = |start: &str| {
        let a = args(start);
        kiln(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let o = run("2");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("QAT test accuracy"), "{stdout}");
    assert!(stdout.contains("int8 (QAT) accuracy"), "{stdout}");
    // The weights and the ranges rebuild kiln's int8 model.
    let graph = kiln_train_load(&out);
    let ranges = kiln_train::qat::load_ranges(&out.join("qat_ranges.toml")).expect("ranges");
    assert!(ranges.contains_key("input"), "{ranges:?}");
    kiln_train::qat::quantize_int8(&graph, &ranges).expect("int8 from the QAT ranges");

    let o = run("3");
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("QAT start epoch 3"), "{stderr}");
}

#[test]
fn memory_report_and_checkpointing() {
    // --memory-report plans and exits: no data or output folder needed.
    let o = kiln(&[
        "train",
        "--model",
        "models/lenet/model.toml",
        "--batch",
        "32",
        "--memory-report",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for want in [
        "at batch 32",
        "no sharing",
        "static plan",
        "with checkpointing",
    ] {
        assert!(stdout.contains(want), "{want}: {stdout}");
    }
    let o = kiln(&[
        "train",
        "--model",
        "models/lenet/model.toml",
        "--grad-checkpoint",
        "1",
        "--memory-report",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--grad-checkpoint 1"));
    // Training needs --data and --out.
    let o = kiln(&["train", "--model", "models/lenet/model.toml"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--data"));
    // A checkpointed run trains and reports both plans.
    let out = std::env::temp_dir().join(format!("kiln-train-cli-{}-ckpt", std::process::id()));
    let o = kiln(&[
        "train",
        "--model",
        "models/lenet/model.toml",
        "--data",
        "data/mnist-10k",
        "--limit",
        "64",
        "--epochs",
        "1",
        "--grad-checkpoint",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("(checkpointing)"), "{stdout}");
    assert!(stdout.contains("3 segments"), "{stdout}");
}
