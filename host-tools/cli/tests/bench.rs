//! `kiln bench` end to end on the KWS model (emulated Cortex-M4F, mps2-an386): the JSON
//! report's structure, the per-layer counts adding up to the inference's count within
//! the documented tolerance, and the comparison with the committed TFLM figures; bad
//! arguments fail with one line before anything is built. No timing assertions: the
//! instruction counts are deterministic. Needs `qemu-system-arm` (scripts/test.sh
//! installs it).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The firmware build folder of the emulate tests (one build lock serializes them).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("kiln-emulate")
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("bench")
        .args(args)
        .arg("--target-dir")
        .arg(target_dir())
        .current_dir(repo())
        .output()
        .expect("kiln runs")
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("'{key}' is not a count in {v}"))
}

#[test]
fn kws_layers_add_up_to_the_inference_and_compare_with_tflm() {
    let o = bench(&[
        "models/kws_ref_model/model.tflite",
        "--json",
        "--compare",
        "models/kws_ref_model/tflm-cmsis-nn.json",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(r["machine"], "mps2-an386");
    assert_eq!(r["instructions_per_tick"].as_f64(), Some(40.0));
    assert_eq!(r["outputs_match"], Value::Bool(true));

    // One row per node in plan order.
    let layers = r["layers"].as_array().expect("layers");
    assert!(layers.len() >= 10, "{r}");
    let mut sum = 0;
    let mut hooks = 0;
    for l in layers {
        assert!(l["op"].is_string() && l["node"].is_u64(), "{l}");
        assert!(l["output"].is_array() && l["inputs"].is_array(), "{l}");
        let macs = u64_at(l, "counted_macs");
        assert!(macs >= u64_at(l, "macs"), "{l}");
        match l["instructions"].as_u64() {
            Some(n) => {
                sum += n;
                hooks += 1;
                let per_mac = l["instructions_per_mac"].as_f64().expect("per MAC");
                assert!((per_mac - n as f64 / macs as f64).abs() < 1e-9, "{l}");
            }
            // An alias, or a node computed inside a later one.
            None => assert!(l["op"] == "reshape" || l["computed_in"].is_u64(), "{l}"),
        }
    }
    assert!(hooks >= 10, "{r}");

    // The sum of the layers (hook cost subtracted) plus the return from `run` is the
    // build without hooks, within two timer ticks + 16 per layer + 0.2%.
    let total = &r["total"];
    let instructions = u64_at(total, "instructions");
    assert!(instructions > 1_000_000, "{total}");
    assert_eq!(u64_at(total, "layers_sum"), sum);
    let accounted = sum + u64_at(&r, "after_layers");
    let tolerance = 80 + 16 * hooks + instructions / 500;
    assert_eq!(u64_at(total, "tolerance"), tolerance);
    let difference = accounted as i64 - instructions as i64;
    assert_eq!(total["difference"].as_i64(), Some(difference));
    assert!(
        difference.unsigned_abs() <= tolerance,
        "layers {accounted} vs inference {instructions} (tolerance {tolerance})"
    );
    let hook = r["hook_overhead"].as_f64().expect("hook overhead");
    assert!(hook > 0.0 && hook < 100.0, "{hook}");

    // Sizes, and the comparison column against the committed TFLM figures.
    let (flash, weights) = (u64_at(total, "flash"), u64_at(total, "weights"));
    assert_eq!(u64_at(total, "flash_beyond_weights"), flash - weights);
    assert!(u64_at(total, "model_code_flash") < flash - weights);
    assert!(u64_at(total, "ram") >= u64_at(total, "arena"));
    let c = &r["compare"];
    assert_eq!(c["name"], "TFLM+CMSIS-NN");
    assert_eq!(u64_at(c, "instructions"), 7_700_000);
    let ratio = c["ratios"]["instructions"].as_f64().expect("ratio");
    assert!((ratio - instructions as f64 / 7.7e6).abs() < 1e-12);
    let arena_ratio = c["ratios"]["arena"].as_f64().expect("ratio");
    assert!((arena_ratio - u64_at(total, "arena") as f64 / 22824.0).abs() < 1e-12);
}

#[test]
fn bad_arguments_fail_with_one_line_before_building() {
    let dir = std::env::temp_dir().join(format!("kiln-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let typo = dir.join("typo.json");
    std::fs::write(&typo, r#"{"name": "TFLM", "instrs": 7700000}"#).unwrap();
    let not_json = dir.join("not.json");
    std::fs::write(&not_json, "instructions = 5").unwrap();
    let kws = "models/kws_ref_model/model.tflite";
    for (args, want) in [
        (
            vec![kws, "--compare", typo.to_str().unwrap()],
            "unknown field 'instrs'",
        ),
        (
            vec![kws, "--compare", not_json.to_str().unwrap()],
            "not JSON",
        ),
        (
            vec![kws, "--compare", "no/such.json"],
            "no/such.json: cannot read",
        ),
        (
            vec![kws, "--machine", "lm3s6965evb"],
            "unknown machine 'lm3s6965evb'",
        ),
        (vec!["no/such/model.tflite"], "cannot open the model"),
        (
            vec![
                "models/pretrainedResnet_quant/model.tflite",
                "--machine",
                "microbit",
            ],
            "does not fit microbit's RAM",
        ),
    ] {
        let o = bench(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
