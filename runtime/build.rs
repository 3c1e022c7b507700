//! Sets `cfg(kiln_dsp)` when the build target is an Arm core with the DSP extension, so
//! `kernels::dsp::simd` emits SMLAD/SXTB16/... through `asm!` there and portable Rust
//! everywhere else.
//!
//! `cfg(target_feature = "dsp")` would say the same, but Arm target features are
//! unstable: stable rustc never sets it. So this script decides from what cargo tells
//! build scripts:
//! - `thumbv7em-*` targets (Cortex-M4/M7): ARMv7E-M always has the DSP extension;
//! - any Arm target whose enabled features include `dsp` (nightly reports it), whose
//!   `-C target-feature` flags add `+dsp`, or whose `-C target-cpu` is a core that
//!   always has it (e.g. `thumbv8m.main-none-eabihf` with `-C target-cpu=cortex-m33`
//!   or `-C target-feature=+dsp`);
//! - `-C target-feature=-dsp` turns it off again.

use std::env;

/// Cores whose DSP extension is always present (Cortex-M33/M35P make it optional, but
/// every shipping part kiln knows has it; `-C target-feature=-dsp` opts out).
const DSP_CPUS: [&str; 6] = [
    "cortex-m4",
    "cortex-m7",
    "cortex-m33",
    "cortex-m35p",
    "cortex-m55",
    "cortex-m85",
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kiln_dsp)");
    println!("cargo::rerun-if-changed=build.rs");
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("arm") {
        return;
    }
    let target = env::var("TARGET").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let flags: Vec<&str> = flags.split('\x1f').collect();
    // Values of `-C name=value`, given as `-Cname=value` or `-C` `name=value`.
    let codegen = |name: &str| -> Vec<String> {
        let prefix = format!("{name}=");
        let mut values = Vec::new();
        for (i, f) in flags.iter().enumerate() {
            let option = match f.strip_prefix("-C") {
                Some("") => flags.get(i + 1).copied().unwrap_or(""),
                Some(rest) => rest,
                None => continue,
            };
            if let Some(v) = option.strip_prefix(&prefix) {
                values.push(v.to_string());
            }
        }
        values
    };
    let target_features: Vec<String> = codegen("target-feature")
        .iter()
        .flat_map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let has = |f: &str| target_features.iter().any(|t| t == f);
    let cpu_has_dsp = codegen("target-cpu")
        .last()
        .is_some_and(|cpu| DSP_CPUS.contains(&cpu.as_str()));
    let dsp = (target.starts_with("thumbv7em")
        || features.split(',').any(|f| f == "dsp")
        || has("+dsp")
        || cpu_has_dsp)
        && !has("-dsp");
    if dsp {
        println!("cargo::rustc-cfg=kiln_dsp");
    }
}
