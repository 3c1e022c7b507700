//! `kiln emulate` end to end: the shipped models compiled into the QEMU firmware, run on
//! the emulated Cortex-M4F (mps2-an386) and Cortex-M3 (mps2-an385) on their golden
//! inputs, must match TFLM's outputs bit for bit; the instruction count must repeat;
//! mismatches, faults and models too large for the Cortex-M0 machine must be reported.
//! Needs `qemu-system-arm` (scripts/test.sh installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The firmware builds share one target folder: one emulation at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("kiln-emulate")
}

fn emulate(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let o: Output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("emulate")
        .args(args)
        .arg("--target-dir")
        .arg(target_dir())
        .envs(env.iter().copied())
        .current_dir(repo())
        .output()
        .expect("kiln runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

/// The instruction count `kiln emulate` printed.
fn instructions(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("instructions per inference: "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in:\n{text}"))
}

fn figure(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no '{prefix}' in:\n{text}"))
}

#[test]
fn shipped_models_match_golden_outputs_on_m4_and_m3_with_repeatable_counts() {
    for machine in ["mps2-an386", "mps2-an385"] {
        for model in ["kws_ref_model", "pretrainedResnet_quant"] {
            let path = format!("models/{model}/model.tflite");
            let (code, text) = emulate(&[&path, "--machine", machine], &[]);
            assert_eq!(code, Some(0), "{model} on {machine}:\n{text}");
            assert!(
                text.contains("PASS: 20/20 samples match"),
                "{model} on {machine}:\n{text}"
            );
            assert!(text.contains("top-1 class"), "{text}");
            let n = instructions(&text);
            // A sanity floor: both models take millions of instructions even with the
            // DSP kernels (about 4-20 M on the M4, tens of millions on the M3).
            assert!(
                n > 1_000_000,
                "{model} on {machine}: {n} instructions\n{text}"
            );
            let ram = figure(&text, "RAM bytes:      ");
            // The arena holds the DSP kernels' scratch on the M4 (not on the M3).
            let arena = match (model, machine) {
                ("kws_ref_model", "mps2-an386") => 9536,
                ("kws_ref_model", _) => 8448,
                (_, "mps2-an386") => 27424,
                _ => 25152,
            };
            assert!(ram >= arena, "{model}: RAM {ram} < arena {arena}\n{text}");
            // The measured stack of an inference: the kernels keep their scratch in the
            // arena, so `run` needs little more than its frames.
            let stack = figure(&text, "stack bytes:    ");
            assert!(
                (64..4096).contains(&stack),
                "{model} on {machine}: stack {stack}\n{text}"
            );
            if model == "kws_ref_model" {
                let (code, again) = emulate(&[&path, "--machine", machine, "--samples", "3"], &[]);
                assert_eq!(code, Some(0), "{again}");
                assert_eq!(
                    instructions(&again),
                    n,
                    "the count changed between runs on {machine}"
                );
            }
        }
    }
}

#[test]
fn a_wrong_expected_output_fails_with_status_2_naming_the_sample() {
    let golden = repo().join("models/kws_ref_model/golden");
    let mut want = kiln_codegen::npy::read(&golden.join("output_0.npy")).unwrap();
    let kiln_codegen::exec::TensorData::I8(v) = &mut want.data else {
        panic!("int8 golden output")
    };
    v[2 * 12 + 9] = v[2 * 12 + 9].wrapping_add(1);
    let expect = std::env::temp_dir().join(format!("kiln-emulate-bad-{}.npy", std::process::id()));
    kiln_codegen::npy::write(&expect, &want.shape, &want.data).unwrap();
    let input = golden.join("input_0.npy");
    let (code, text) = emulate(
        &[
            "models/kws_ref_model/model.tflite",
            "--input",
            input.to_str().unwrap(),
            "--expect",
            expect.to_str().unwrap(),
            "--samples",
            "4",
        ],
        &[],
    );
    let _ = std::fs::remove_file(&expect);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("FAIL: 1 of 4 samples differ"), "{text}");
    assert!(text.contains("(samples 2)"), "{text}");
}

#[test]
fn the_cortex_m0_machine_runs_a_single_op_model_and_refuses_one_too_large() {
    let (code, text) = emulate(
        &[
            "models/ops/conv_2d_i8_s1_same_dil1_none_perchannel_k3/model.tflite",
            "--machine",
            "microbit",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("PASS: 8/8 samples match"), "{text}");
    let m0 = instructions(&text);
    assert!(m0 > 10_000, "{m0} instructions on the M0\n{text}");
    let (code, text) = emulate(
        // KWS fits the micro:bit's 16 KiB since its convs run in place (8,448 B
        // arena on the M0, which runs no DSP kernels); ResNet-8's 25,152 B do not.
        &[
            "models/pretrainedResnet_quant/model.tflite",
            "--machine",
            "microbit",
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("does not fit microbit's RAM"), "{text}");
}

#[test]
fn faults_and_bad_arguments_are_one_line_errors() {
    let (code, text) = emulate(
        &["models/kws_ref_model/model.tflite", "--samples", "1"],
        &[("KILN_FAULT", "1")],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("error: the firmware faulted on mps2-an386"),
        "{text}"
    );
    assert!(text.contains("HardFault at pc"), "{text}");

    let (code, text) = emulate(
        &["models/kws_ref_model/model.tflite", "--timeout", "0"],
        &[],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("QEMU (mps2-an386) did not finish within 0 s"),
        "{text}"
    );

    let (code, text) = emulate(&["models/no_such/model.tflite"], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("models/no_such/model.tflite: cannot open the model"),
        "{text}"
    );
    let (code, text) = emulate(
        &["models/kws_ref_model/model.tflite", "--machine", "pdp11"],
        &[],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("unknown machine 'pdp11'"), "{text}");
}
