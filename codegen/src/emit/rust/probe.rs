//! Measures a generated crate on its target: builds a bare-metal binary whose only root
//! is the model's `run` (linked with `--gc-sections`, so the ELF holds exactly the code
//! `run` reaches), then reads section sizes with `llvm-size` and looks for panic
//! symbols with `llvm-nm`. Needs cargo, the rustup target and `llvm-tools`.

use crate::ir::{DType, Graph};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Section sizes of the probe binary and what it links that could panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    /// Machine code (`.text`): the generated `run` plus every kernel it reaches.
    pub text: u64,
    /// Read-only data (`.rodata`): the weights blob, parameter tables, constants.
    pub rodata: u64,
    /// Initialized RAM (`.data`).
    pub data: u64,
    /// Zeroed RAM (`.bss`), the arena excluded (the probe does not allocate one).
    pub bss: u64,
    /// Linked symbols whose names say they can panic; empty for a panic-free `run`.
    pub panic_symbols: Vec<String>,
}

/// Why measuring failed (a missing tool or target, or a build error).
#[derive(Debug, thiserror::Error)]
#[error("measuring code size: {0}")]
pub struct ProbeError(pub String);

/// Symbol fragments of core's panic machinery and slice-index failures.
const PANIC_PATTERNS: [&str; 9] = [
    "panic",
    "unwind",
    "slice_index",
    "index_len_fail",
    "len_mismatch",
    "unwrap_failed",
    "expect_failed",
    "assert_failed",
    "unreachable",
];

fn rust_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::I8 => "i8",
        DType::I32 => "i32",
        DType::I64 => "i64",
    }
}

/// The probe's `main.rs`: `kiln_model_run` forwards to `run` with arguments the
/// optimizer cannot see, `_start` only takes its address.
fn probe_source(crate_name: &str, graph: &Graph) -> String {
    let port = |n: usize, i: usize, kind: &str| {
        if n == 1 {
            kind.to_uppercase()
        } else {
            format!("{}_{i}", kind.to_uppercase())
        }
    };
    let mut params = vec!["arena: &mut m::Arena".to_string()];
    let mut args = vec!["arena".to_string()];
    for (i, id) in graph.inputs.iter().enumerate() {
        params.push(format!(
            "x{i}: &[{}; m::{}_LEN]",
            rust_type(graph.info(*id).dtype),
            port(graph.inputs.len(), i, "input")
        ));
        args.push(format!("x{i}"));
    }
    for (j, id) in graph.outputs.iter().enumerate() {
        params.push(format!(
            "y{j}: &mut [{}; m::{}_LEN]",
            rust_type(graph.info(*id).dtype),
            port(graph.outputs.len(), j, "output")
        ));
        args.push(format!("y{j}"));
    }
    let signature: Vec<String> = params
        .iter()
        .map(|p| {
            p.split_once(": ")
                .map_or(String::new(), |(_, t)| t.to_string())
        })
        .collect();
    format!(
        r#"#![no_std]
#![no_main]
#![allow(improper_ctypes_definitions)]

use {crate_name} as m;

#[no_mangle]
pub extern "C" fn kiln_model_run({params}) {{
    m::run({args});
}}

#[no_mangle]
pub extern "C" fn _start() -> ! {{
    core::hint::black_box(kiln_model_run as extern "C" fn({signature}));
    loop {{}}
}}

#[panic_handler]
fn on_panic(_: &core::panic::PanicInfo<'_>) -> ! {{
    loop {{}}
}}
"#,
        params = params.join(", "),
        args = args.join(", "),
        signature = signature.join(", ")
    )
}

/// The host's LLVM tool `name` (`llvm-size`, `llvm-readelf`, ...) from rustup's
/// `llvm-tools` component, or an error saying how to install it.
pub fn llvm_tool(name: &str) -> Result<PathBuf, ProbeError> {
    let out = |cmd: &mut Command| {
        cmd.output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let sysroot = out(Command::new("rustc").args(["--print", "sysroot"]))
        .map_err(|e| ProbeError(format!("rustc: {e}")))?;
    let host = out(Command::new("rustc").arg("-vV"))
        .map_err(|e| ProbeError(format!("rustc: {e}")))?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .unwrap_or_default();
    let tool = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin")
        .join(name);
    if tool.is_file() {
        Ok(tool)
    } else {
        Err(ProbeError(format!(
            "{name} not found: run `rustup component add llvm-tools`"
        )))
    }
}

/// Runs `cargo build --release --target triple` for the crate in `dir` with extra cargo
/// `args` and environment `envs`; a failure carries cargo's messages (and the `rustup`
/// command to run when the target is missing).
pub fn cargo_build_release(
    dir: &Path,
    triple: &str,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &std::ffi::OsStr)],
) -> Result<(), ProbeError> {
    let build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "--target", triple])
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(dir)
        .output()
        .map_err(|e| ProbeError(format!("cargo: {e}")))?;
    if build.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&build.stderr);
    let hint = if stderr.contains("may not be installed")
        || stderr.contains("can't find crate for `core`")
    {
        format!(" (run `rustup target add {triple}`)")
    } else {
        String::new()
    };
    Err(ProbeError(format!(
        "cargo build --target {triple} failed{hint}:\n{stderr}"
    )))
}

/// Builds the probe for `triple` in `work` (created if needed) against the generated
/// crate at `crate_dir`, and measures it.
pub fn measure(
    crate_dir: &Path,
    crate_name: &str,
    graph: &Graph,
    triple: &str,
    work: &Path,
) -> Result<Sizes, ProbeError> {
    let io = |e: std::io::Error| ProbeError(format!("{}: {e}", work.display()));
    std::fs::create_dir_all(work.join("src")).map_err(io)?;
    let crate_dir = std::fs::canonicalize(crate_dir).map_err(io)?;
    let manifest = format!(
        "[package]\nname = \"kiln-size-probe\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\n{crate_name} = {{ path = {:?} }}\n\n[profile.release]\npanic = \"abort\"\ncodegen-units = 1\nlto = true\n\n[workspace]\n",
        crate_dir.display().to_string()
    );
    std::fs::write(work.join("Cargo.toml"), manifest).map_err(io)?;
    std::fs::write(work.join("src/main.rs"), probe_source(crate_name, graph)).map_err(io)?;
    let target_dir = work.join("target");
    cargo_build_release(
        work,
        triple,
        &["--target-dir".as_ref(), target_dir.as_os_str()],
        &[],
    )?;
    let elf = target_dir.join(triple).join("release/kiln-size-probe");
    let size = Command::new(llvm_tool("llvm-size")?)
        .args(["-A"])
        .arg(&elf)
        .output()
        .map_err(|e| ProbeError(format!("llvm-size: {e}")))?;
    let section = |name: &str| -> u64 {
        String::from_utf8_lossy(&size.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let n = f.next()?;
                let bytes = f.next()?.parse::<u64>().ok()?;
                (n == name || n.starts_with(&format!("{name}."))).then_some(bytes)
            })
            .sum()
    };
    let nm = Command::new(llvm_tool("llvm-nm")?)
        .arg("--demangle")
        .arg(&elf)
        .output()
        .map_err(|e| ProbeError(format!("llvm-nm: {e}")))?;
    let panic_symbols = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter(|l| {
            let lower = l.to_lowercase();
            PANIC_PATTERNS.iter().any(|p| lower.contains(p))
        })
        .map(str::to_string)
        .collect();
    Ok(Sizes {
        text: section(".text"),
        rodata: section(".rodata"),
        data: section(".data"),
        bss: section(".bss"),
        panic_symbols,
    })
}
