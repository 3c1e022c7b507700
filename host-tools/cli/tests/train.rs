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
        "--checkpoint",
        "1",
        "--memory-report",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--checkpoint 1"));
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
        "--checkpoint",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("(checkpointing)"), "{stdout}");
    assert!(stdout.contains("3 segments"), "{stdout}");
}
