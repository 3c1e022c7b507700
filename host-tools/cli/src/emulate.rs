//! `kiln emulate MODEL [--machine mps2-an386]`: compiles the model into the QEMU firmware
//! (`boards/qemu`, through its `build.rs` and `kiln_codegen::Builder`), runs it under
//! `qemu-system-arm` on the golden (or given) inputs, and prints the outputs, pass/fail
//! against the expected outputs, instructions per inference and the ELF's flash and RAM.
//!
//! Instructions are counted by running QEMU with `-icount shift=0` (one instruction per
//! nanosecond of virtual time) while the firmware reads the mps2 CMSDK TIMER0 (25 MHz:
//! one tick is 40 instructions) or, on the microbit, SysTick (16 MHz: 62.5) around each
//! `run` call; the count is the same on every run.

use anyhow::{bail, Context as _};
use kiln_codegen::board::Needs;
use kiln_codegen::compile::{optimize_and_plan, CompileOptions};
use kiln_codegen::emit::rust::probe::{cargo_build_release, llvm_tool};
use kiln_codegen::exec::TensorData;
use kiln_codegen::ir::DType;
use kiln_codegen::npy;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Instructions per second of virtual time under `-icount shift=0`.
pub(crate) const INSTRUCTIONS_PER_SECOND: u64 = 1_000_000_000;

/// A QEMU machine the firmware supports; its memory, core and stack come from the
/// board table (`kiln_codegen::board`).
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    /// QEMU's `-machine` name, also its name in the board table.
    pub name: &'static str,
    /// The core, in words.
    pub core: &'static str,
    /// The counter the firmware reads around `run`.
    pub timer: &'static str,
}

/// The machines `kiln emulate` knows, the default first.
pub const MACHINES: [Machine; 3] = [
    Machine {
        name: "mps2-an386",
        core: "Cortex-M4F",
        timer: "CMSDK TIMER0",
    },
    Machine {
        name: "mps2-an385",
        core: "Cortex-M3",
        timer: "CMSDK TIMER0",
    },
    Machine {
        name: "microbit",
        core: "Cortex-M0, 16 KiB RAM",
        timer: "SysTick",
    },
];

/// Arguments of `kiln emulate`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file (.tflite or .onnx) with one int8 input and one int8 output.
    model: PathBuf,
    /// QEMU machine: mps2-an386 (Cortex-M4F), mps2-an385 (Cortex-M3), microbit
    /// (Cortex-M0, 16 KiB RAM).
    #[arg(long, default_value = "mps2-an386")]
    machine: String,
    /// Input samples (.npy, the input's shape or [N, ...]; float32 is quantized).
    /// Default: the model folder's golden/input_0.npy.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Expected outputs (.npy, int8); default: golden/output_0.npy when --input is not
    /// given. Exit status 2 when any sample differs.
    #[arg(long)]
    expect: Option<PathBuf>,
    /// Run at most this many samples.
    #[arg(long)]
    samples: Option<usize>,
    /// Print the outputs of this many samples (top-5 for a classifier).
    #[arg(long, default_value_t = 1)]
    show: usize,
    /// Classes listed per classifier output.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Seconds QEMU may run before it is stopped.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Build the same firmware without the model call (to measure the model's own cost).
    #[arg(long)]
    no_model: bool,
    /// Firmware build folder (default: the system temp folder's kiln-emulate/).
    #[arg(long)]
    target_dir: Option<PathBuf>,
}

/// What one emulation printed, parsed.
#[derive(Debug, Default)]
pub(crate) struct Run {
    /// Timer ticks around `run`, per sample.
    pub ticks: Vec<u64>,
    /// The outputs, per sample.
    pub outputs: Vec<Vec<i8>>,
    /// Ticks of two back-to-back timer reads.
    pub overhead: u64,
    /// The timer's frequency (0: no timer).
    pub hz: u64,
    /// Samples whose outputs differ from the expected ones.
    pub mismatches: Vec<usize>,
    /// Whether outputs were compared.
    pub compared: bool,
    /// Stack bytes the first inference took (the firmware paints the free stack and
    /// scans it after that inference), if printed.
    pub stack: Option<u64>,
    /// Everything the firmware printed (`kiln bench` parses its profile lines).
    pub printed: String,
}

impl Run {
    /// Instructions counted by `ticks` timer ticks under `-icount shift=0`.
    pub fn instructions(&self, ticks: u64) -> u64 {
        if self.hz == 0 {
            return 0;
        }
        ticks * INSTRUCTIONS_PER_SECOND / self.hz
    }

    /// Instructions per inference of each sample (the timer-read overhead subtracted).
    pub fn per_inference(&self) -> Vec<u64> {
        self.ticks
            .iter()
            .map(|t| self.instructions(t.saturating_sub(self.overhead)))
            .collect()
    }
}

/// A model checked for a QEMU machine, with the tools to build and run its firmware
/// (found by [`Emulation::tools`]).
pub(crate) struct Emulation {
    /// The machine.
    pub machine: &'static Machine,
    /// Its entry in the board table.
    pub board: &'static kiln_codegen::board::Board,
    /// Its Rust target triple.
    pub triple: &'static str,
    /// The model file, absolute.
    pub model: PathBuf,
    /// The model as given on the command line (for messages).
    pub model_arg: PathBuf,
    /// The imported graph.
    pub graph: kiln_codegen::ir::Graph,
    /// The optimized graph and its plan, as the firmware's build script compiles them.
    pub planned: kiln_codegen::compile::Planned,
    /// The build folder (absolute).
    pub work: PathBuf,
    qemu: PathBuf,
    llvm_size: PathBuf,
}

/// Input samples written for the firmware's build script, and the expected outputs.
pub(crate) struct Samples {
    /// Int8 `.npy` of the inputs, in the build folder; removed on drop.
    file: PathBuf,
    /// Expected outputs (`.npy`), if any.
    expect: Option<PathBuf>,
}

impl Drop for Samples {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// A firmware ELF (a private copy, removed on drop) and its sizes.
pub(crate) struct Firmware {
    elf: PathBuf,
    /// Its section sizes.
    pub sections: Sections,
}

impl Drop for Firmware {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.elf);
    }
}

impl Emulation {
    /// Imports and plans `model` for `machine` (its fit check unless `no_model`), and finds
    /// or installs the rustup target, QEMU and llvm-size. `target_dir` is the build folder
    /// (default: the system temp folder's `kiln-emulate/`).
    pub fn prepare(
        model_arg: &Path,
        machine: &str,
        target_dir: Option<&Path>,
        no_model: bool,
    ) -> anyhow::Result<Emulation> {
        let machine = MACHINES
            .iter()
            .find(|m| m.name == machine)
            .with_context(|| {
                let names: Vec<&str> = MACHINES.iter().map(|m| m.name).collect();
                format!(
                    "unknown machine '{}' (known: {})",
                    machine,
                    names.join(", ")
                )
            })?;
        let board = kiln_codegen::board::find(machine.name).map_err(anyhow::Error::msg)?;
        let triple = board
            .target
            .triple()
            .context("the board table gives this machine no Rust target")?;
        let model = std::fs::canonicalize(model_arg)
            .with_context(|| format!("{}: cannot open the model", model_arg.display()))?;
        let graph = crate::model::import(&model)?;
        let (in_info, out_info) = match (&graph.inputs[..], &graph.outputs[..]) {
            ([i], [o]) => (graph.info(*i), graph.info(*o)),
            _ => bail!(
                "{}: kiln emulate runs models with one input and one output ({} and {} here)",
                model_arg.display(),
                graph.inputs.len(),
                graph.outputs.len()
            ),
        };
        if in_info.dtype != DType::I8 || out_info.dtype != DType::I8 {
            bail!(
                "{}: kiln emulate runs int8 models (input {}, output {})",
                model_arg.display(),
                in_info.dtype.name(),
                out_info.dtype.name()
            );
        }
        // The same fit check as `kiln compile --board`, before spending a build on it.
        let planned = optimize_and_plan(
            graph.clone(),
            &CompileOptions {
                target: board.target,
                ..Default::default()
            },
            &model_arg.display().to_string(),
        )?;
        if !no_model {
            board
                .check_fit(&Needs {
                    arena: planned.plan.arena_bytes as u64,
                    ..Needs::default()
                })
                .with_context(|| model_arg.display().to_string())?;
        }
        let work = target_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| std::env::temp_dir().join("kiln-emulate"));
        std::fs::create_dir_all(&work).with_context(|| format!("{}", work.display()))?;
        // Absolute: cargo and the build script run in the firmware's folder.
        let work = std::fs::canonicalize(&work).with_context(|| format!("{}", work.display()))?;
        Ok(Emulation {
            machine,
            board,
            triple,
            model,
            model_arg: model_arg.to_path_buf(),
            graph,
            planned,
            work,
            qemu: PathBuf::new(),
            llvm_size: PathBuf::new(),
        })
    }

    /// Reads the input samples (default: the model folder's `golden/input_0.npy`) and
    /// checks the expected outputs (default: `golden/output_0.npy` when `input` is not
    /// given and the file exists) and writes the inputs as int8 for the build script.
    pub fn samples(&self, input: Option<&Path>, expect: Option<&Path>) -> anyhow::Result<Samples> {
        let (in_info, out_info) = (
            self.graph.info(self.graph.inputs[0]).clone(),
            self.graph.info(self.graph.outputs[0]).clone(),
        );
        // Inputs and expected outputs, checked here so a mismatch is one clear line.
        let golden = self.model.parent().unwrap_or(Path::new(".")).join("golden");
        let absolute = |p: &Path| {
            std::fs::canonicalize(p).with_context(|| format!("{}: cannot open", p.display()))
        };
        let (input, expect) = match input {
            Some(i) => (absolute(i)?, expect.map(absolute).transpose()?),
            None => {
                let input = golden.join("input_0.npy");
                if !input.is_file() {
                    bail!(
                        "{}: no golden/input_0.npy next to the model: pass --input X.npy",
                        self.model_arg.display()
                    );
                }
                let expect = match expect {
                    Some(e) => Some(absolute(e)?),
                    None => Some(golden.join("output_0.npy")).filter(|p| p.is_file()),
                };
                (input, expect)
            }
        };
        let input_len = in_info.num_elements();
        let (input_i8, count) = load_samples(&input, input_len, Some(&in_info))?;
        let file = self.work.join(format!("input-{}.npy", std::process::id()));
        npy::write(&file, &[count, input_len], &TensorData::I8(input_i8))?;
        let samples = Samples { file, expect };
        if let Some(e) = &samples.expect {
            let (_, n) = load_samples(e, out_info.num_elements(), None)?;
            if n < count {
                bail!("{}: {n} expected samples for {count} inputs", e.display());
            }
        }
        Ok(samples)
    }

    /// Finds the rustup target, QEMU and llvm-size, installing what is missing.
    pub fn tools(&mut self) -> anyhow::Result<()> {
        ensure_target(self.triple)?;
        self.qemu = ensure_qemu()?;
        self.llvm_size = match llvm_tool("llvm-size") {
            Ok(t) => t,
            Err(_) => {
                eprintln!("note: installing llvm-tools: rustup component add llvm-tools");
                let _ = Command::new("rustup")
                    .args(["component", "add", "llvm-tools"])
                    .status();
                llvm_tool("llvm-size")?
            }
        };
        Ok(())
    }

    /// Builds the firmware on `samples` (at most `limit` of them) with the firmware's
    /// cargo `features` (`empty`: without the model call; `profile`: per-layer stamps),
    /// copies the ELF and checks it fits the machine.
    pub fn build(
        &self,
        samples: &Samples,
        limit: Option<usize>,
        features: &[&str],
    ) -> anyhow::Result<Firmware> {
        let (machine, triple) = (self.machine, self.triple);
        let firmware = firmware_dir()?;
        let target_dir = self.work.join("target");
        let samples_env = limit.map(|n| n.to_string()).unwrap_or_default();
        let expect_env = samples.expect.clone().unwrap_or_default();
        let features = features.join(",");
        let mut cargo_args: Vec<&OsStr> = vec![
            "--locked".as_ref(),
            "--target-dir".as_ref(),
            target_dir.as_os_str(),
        ];
        if !features.is_empty() {
            cargo_args.extend([OsStr::new("--features"), OsStr::new(&features)]);
        }
        eprintln!(
            "building the firmware for {} ({}, {}){}",
            machine.name,
            machine.core,
            triple,
            if features.is_empty() {
                String::new()
            } else {
                format!(" with {features}")
            }
        );
        let started = Instant::now();
        // Another `kiln emulate` may build a different model into the same folder: hold
        // the folder from the build until the ELF is copied.
        let lock = BuildLock::acquire(&self.work)?;
        let dims_env = crate::model::dims_env();
        cargo_build_release(
            &firmware,
            triple,
            &cargo_args,
            &[
                ("KILN_MODEL", self.model.as_os_str()),
                ("KILN_MACHINE", machine.name.as_ref()),
                ("KILN_INPUT", samples.file.as_os_str()),
                ("KILN_EXPECT", expect_env.as_os_str()),
                ("KILN_SAMPLES", samples_env.as_ref()),
                (kiln_codegen::builder::DIMS_ENV, dims_env.as_ref()),
            ],
        )
        .map_err(|e| anyhow::anyhow!("building the QEMU firmware: {}", e.0))?;
        // A private copy: another build for a different model reuses the same path.
        let elf = self.work.join(format!(
            "kiln-qemu-{}-{}{}.elf",
            machine.name,
            std::process::id(),
            if features.is_empty() {
                String::new()
            } else {
                format!("-{}", features.replace(',', "-"))
            }
        ));
        let built = target_dir.join(triple).join("release/kiln-qemu");
        std::fs::copy(&built, &elf).with_context(|| format!("{}", built.display()))?;
        drop(lock);
        eprintln!("built in {:.1} s", started.elapsed().as_secs_f64());

        let sections = sizes(&self.llvm_size, &elf)?;
        let (flash, ram) = (sections.flash(), sections.ram());
        let firmware = Firmware { elf, sections };
        // Again with what the ELF holds (RAM besides the arena: buffers, formatting state).
        let arena_in_elf = if features.split(',').any(|f| f == "empty") {
            0
        } else {
            self.planned.plan.arena_bytes as u64
        };
        if let Err(e) = self.board.check_fit(&Needs {
            arena: arena_in_elf,
            static_ram: ram.saturating_sub(arena_in_elf),
            code: flash,
            weights: 0,
        }) {
            bail!("{}: {e}", self.model_arg.display());
        }
        Ok(firmware)
    }

    /// Runs `firmware` in QEMU (at most `timeout`) and parses what it printed.
    pub fn run(&self, firmware: &Firmware, timeout: Duration) -> anyhow::Result<Run> {
        run_qemu(&self.qemu, self.machine, &firmware.elf, timeout)
    }
}

/// Builds the firmware, runs it in QEMU and reports.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let mut emulation = Emulation::prepare(
        &args.model,
        &args.machine,
        args.target_dir.as_deref(),
        args.no_model,
    )?;
    let samples = emulation.samples(args.input.as_deref(), args.expect.as_deref())?;
    emulation.tools()?;
    let features: &[&str] = if args.no_model { &["empty"] } else { &[] };
    let firmware = emulation.build(&samples, args.samples, features)?;
    drop(samples);
    let run = emulation.run(&firmware, Duration::from_secs(args.timeout))?;
    let (machine, graph) = (emulation.machine, &emulation.graph);
    let (flash, ram, sections) = (
        firmware.sections.flash(),
        firmware.sections.ram(),
        firmware.sections.describe(),
    );
    drop(firmware);

    // Report.
    let n = run.outputs.len();
    for (s, out) in run.outputs.iter().enumerate().take(args.show) {
        crate::run::print_sample(graph, s, n, &[TensorData::I8(out.clone())], args.top);
    }
    println!("machine:        {} ({})", machine.name, machine.core);
    if run.hz > 0 {
        let per = run.per_inference();
        let (lo, hi) = (
            per.iter().min().copied().unwrap_or(0),
            per.iter().max().copied().unwrap_or(0),
        );
        println!(
            "instructions per inference: {} (sample 0; {lo}..{hi} over {n} samples; {} ticks at {} MHz under -icount shift=0, {} instructions each)",
            per.first().copied().unwrap_or(0),
            machine.timer,
            run.hz as f64 / 1e6,
            INSTRUCTIONS_PER_SECOND as f64 / run.hz as f64
        );
    } else {
        println!("instructions per inference: not measured (the firmware reported no timer)");
    }
    println!("flash bytes:    {flash} ({sections})");
    println!("RAM bytes:      {ram} (.data + .bss, arena included; the stack takes the rest)");
    if let Some(stack) = run.stack {
        println!(
            "stack bytes:    {stack} (measured: what one inference took below main's frame; RAM + stack = {})",
            ram + stack
        );
    }
    if run.compared {
        if run.mismatches.is_empty() {
            println!("PASS: {n}/{n} samples match the expected outputs bit for bit");
        } else {
            let list: Vec<String> = run.mismatches.iter().map(|s| s.to_string()).collect();
            println!(
                "FAIL: {} of {n} samples differ from the expected outputs (samples {})",
                run.mismatches.len(),
                list.join(", ")
            );
            return Ok(ExitCode::from(2));
        }
    } else if args.no_model {
        println!("ran {n} sample(s) without the model call (--no-model)");
    } else {
        println!("ran {n} sample(s); no expected outputs to compare with");
    }
    Ok(ExitCode::SUCCESS)
}

/// A lock file in the build folder, removed on drop; one left behind by a process that
/// was killed is taken over after ten minutes.
struct BuildLock(PathBuf);

impl BuildLock {
    fn acquire(work: &Path) -> anyhow::Result<BuildLock> {
        let path = work.join("build.lock");
        let started = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(BuildLock(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok());
                    if age.is_some_and(|a| a > Duration::from_secs(600)) {
                        let _ = std::fs::remove_file(&path);
                    } else if started.elapsed() > Duration::from_secs(900) {
                        bail!("{} is held by another kiln emulate", path.display());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
            }
        }
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The firmware crate: `boards/qemu` of this kiln checkout, or `KILN_FIRMWARE_DIR`.
fn firmware_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("KILN_FIRMWARE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../boards/qemu"));
    std::fs::canonicalize(&dir).with_context(|| {
        format!(
            "the QEMU firmware crate is not at {} (set KILN_FIRMWARE_DIR to kiln's boards/qemu)",
            dir.display()
        )
    })
}

/// Reads `.npy` samples of `len` elements each as int8 (quantizing float32 with `info`).
fn load_samples(
    path: &Path,
    len: usize,
    info: Option<&kiln_codegen::ir::TensorInfo>,
) -> anyhow::Result<(Vec<i8>, usize)> {
    let a = npy::read(path)?;
    let data = match info {
        Some(info) => crate::run::convert_input(a.data, info)
            .with_context(|| format!("{}", path.display()))?,
        None => a.data,
    };
    let TensorData::I8(v) = data else {
        bail!(
            "{}: int8 data expected, found {}",
            path.display(),
            data.dtype().name()
        );
    };
    if len == 0 || v.is_empty() || v.len() % len != 0 {
        bail!(
            "{}: shape {:?} is not N samples of {len} elements",
            path.display(),
            a.shape
        );
    }
    let n = v.len() / len;
    Ok((v, n))
}

/// Adds the rustup target when it is missing.
fn ensure_target(triple: &str) -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == triple) =>
        {
            Ok(())
        }
        Ok(_) => {
            eprintln!("note: installing the Rust target: rustup target add {triple}");
            let ok = Command::new("rustup")
                .args(["target", "add", triple])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                Ok(())
            } else {
                bail!("the Rust target {triple} is missing and `rustup target add {triple}` failed")
            }
        }
        // No rustup: the build reports a missing target itself.
        Err(_) => Ok(()),
    }
}

/// `qemu-system-arm`, installed with apt-get when missing and running as root.
fn ensure_qemu() -> anyhow::Result<PathBuf> {
    let find = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("qemu-system-arm"))
                .find(|p| p.is_file())
        })
    };
    if let Some(q) = find() {
        return Ok(q);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let apt = Path::new("/usr/bin/apt-get").is_file();
    if root && apt {
        eprintln!("note: installing QEMU: apt-get install -y qemu-system-arm");
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "qemu-system-arm"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let _ = Command::new("apt-get")
                .arg("update")
                .stdout(Stdio::null())
                .status();
            install();
        }
        if let Some(q) = find() {
            return Ok(q);
        }
    }
    bail!("qemu-system-arm is not installed: run `sudo apt-get install -y qemu-system-arm` (Debian/Ubuntu)")
}

/// Section sizes of a firmware ELF, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sections {
    /// `.vector_table`.
    pub vectors: u64,
    /// `.text`.
    pub text: u64,
    /// `.rodata`.
    pub rodata: u64,
    /// `.data` (in flash and in RAM).
    pub data: u64,
    /// `.bss` + `.uninit`.
    pub zeroed: u64,
}

impl Sections {
    /// Loaded into flash: vector table + `.text` + `.rodata` + `.data`.
    pub fn flash(&self) -> u64 {
        self.vectors + self.text + self.rodata + self.data
    }

    /// Static RAM: `.data` + `.bss` + `.uninit`.
    pub fn ram(&self) -> u64 {
        self.data + self.zeroed
    }

    /// The flash sections in words.
    pub fn describe(&self) -> String {
        format!(
            ".vector_table {} + .text {} + .rodata {} + .data {}",
            self.vectors, self.text, self.rodata, self.data
        )
    }
}

/// The section sizes of the ELF (`llvm-size -A`).
fn sizes(llvm_size: &Path, elf: &Path) -> anyhow::Result<Sections> {
    let out = Command::new(llvm_size)
        .arg("-A")
        .arg(elf)
        .output()
        .context("llvm-size")?;
    if !out.status.success() {
        bail!(
            "llvm-size {}: {}",
            elf.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let section = |name: &str| -> u64 {
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next()? == name).then(|| f.next()?.parse::<u64>().ok())?
            })
            .sum()
    };
    Ok(Sections {
        vectors: section(".vector_table"),
        text: section(".text"),
        rodata: section(".rodata"),
        data: section(".data"),
        zeroed: section(".bss") + section(".uninit"),
    })
}

/// Runs the firmware under QEMU and parses what it printed.
fn run_qemu(qemu: &Path, machine: &Machine, elf: &Path, timeout: Duration) -> anyhow::Result<Run> {
    let log = elf.with_extension("log");
    let log_file = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
    let mut child = Command::new(qemu)
        .args(["-machine", machine.name, "-nographic", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-icount", "shift=0"])
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{}", qemu.display()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let printed = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            bail!(
                "QEMU ({}) did not finish within {} s (raise --timeout; last output: {})",
                machine.name,
                timeout.as_secs(),
                last_line(&printed)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let printed = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    match status.code() {
        Some(0) | Some(2) => {}
        Some(3) => bail!(
            "the firmware faulted on {} ({}): {}",
            machine.name,
            machine.core,
            last_line(&printed)
        ),
        Some(4) => bail!(
            "the firmware panicked on {}: {}",
            machine.name,
            last_line(&printed)
        ),
        code => bail!(
            "QEMU ({}) exited with {}: {}{}",
            machine.name,
            code.map_or("a signal".to_string(), |c| format!("status {c}")),
            stderr.trim(),
            last_line(&printed)
        ),
    }
    let mut run = Run::default();
    for line in printed.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["timer-hz", hz, "timer-overhead", t] => {
                run.hz = hz.parse().unwrap_or(0);
                run.overhead = t.parse().unwrap_or(0);
            }
            ["sample", _, "ticks", t, "output", values @ ..] => {
                run.ticks.push(t.parse().unwrap_or(0));
                run.outputs
                    .push(values.iter().map(|v| v.parse().unwrap_or(0)).collect());
            }
            ["sample", s, "MISMATCH"] => run.mismatches.push(s.parse().unwrap_or(0)),
            ["stack", "run-bytes", n] => run.stack = n.parse().ok(),
            ["done", "samples", _, "compared", c, ..] => run.compared = *c == "true",
            _ => {}
        }
    }
    if run.outputs.is_empty() {
        bail!("the firmware printed no results: {}", last_line(&printed));
    }
    run.printed = printed;
    if status.code() == Some(2) && run.mismatches.is_empty() {
        bail!("the firmware reported a failure without naming a sample");
    }
    Ok(run)
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(nothing)")
        .chars()
        .take(200)
        .collect()
}
