//! `kiln compile MODEL --target T --out DIR`: writes a no_std Rust crate for the model
//! and prints the memory plan and sizes, one row per op. With `--board B` it compiles
//! for the board's core and fails when the model does not fit the board's RAM or flash.

use kiln_codegen::board::{self, Board, Fit, Needs};
use kiln_codegen::compile::{optimize_and_plan, CompileOptions, Target};
use kiln_codegen::emit::rust::probe::{measure, Sizes};
use kiln_codegen::emit::rust::write_crate;
use kiln_codegen::emit::CrateDependency;
use kiln_codegen::ir::cost::macs;
use kiln_codegen::ir::Graph;
use kiln_codegen::plan::{Location, Plan};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `kiln compile`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file: .tflite, .onnx, or a kiln-train model file (.toml) with
    /// --weights (built directly from the model file and its trained weights).
    model: PathBuf,
    /// The device: host (default), cortex-m0plus, cortex-m3, cortex-m4, cortex-m7,
    /// cortex-m33, riscv32imac, cuda (CUDA C kernels + a Rust crate on kiln-cuda).
    #[arg(long)]
    target: Option<Target>,
    /// Samples per run (`--target cuda` only): every activation is N times larger.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// The board: nrf52840-dk, nucleo-f767zi, mps2-an386, mps2-an385, microbit. Implies
    /// its core's --target; fails when arena + stack exceed its RAM or weights + code
    /// its flash.
    #[arg(long, value_parser = parse_board)]
    board: Option<&'static Board>,
    /// Folder for the generated crate (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Crate name; defaults to the model file's stem (or its folder's name for
    /// `.../NAME/model.tflite`).
    #[arg(long)]
    name: Option<String>,
    /// Print the report as JSON instead of a table.
    #[arg(long, value_parser = ["table", "json"], default_value = "table")]
    report: String,
    /// Skip building the crate for the target to measure its code size (on by default
    /// for device targets; needs the rustup target and `llvm-tools`).
    #[arg(long)]
    no_size: bool,
    /// Fail when the arena needs more bytes than this (e.g. the target's free RAM).
    #[arg(long)]
    max_arena: Option<usize>,
    /// Plan without in-place convs (stride-1 convs and depthwise convs writing over
    /// their input).
    #[arg(long)]
    no_in_place_conv: bool,
    /// Plan without banded residual blocks (conv -> conv + skip in row bands).
    #[arg(long)]
    no_band_blocks: bool,
    #[command(flatten)]
    quantizing: crate::quantize::Quantizing,
    /// Where the generated crate finds kiln-runtime: a path to kiln's `runtime` folder,
    /// or a crates.io version such as `0.1`. Defaults to this kiln's own checkout.
    #[arg(long)]
    runtime: Option<String>,
}

/// Compiles the model and prints the report.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let file = args.model.display().to_string();
    let target = match (args.board, args.target) {
        (Some(b), Some(t)) if b.target != t => anyhow::bail!(
            "--board {} is a {}, not --target {}",
            b.name,
            b.target.name(),
            t.name()
        ),
        (Some(b), _) => b.target,
        (None, t) => t.unwrap_or_default(),
    };
    if target == Target::Cuda {
        return cuda(args, &file);
    }
    if args.batch != 1 {
        anyhow::bail!("--batch is for --target cuda only");
    }
    let graph = args.quantizing.load(&args.model)?;
    let mut options = CompileOptions {
        target,
        ..Default::default()
    };
    options.plan.max_arena_bytes = args.max_arena;
    options.plan.in_place_conv = !args.no_in_place_conv;
    options.plan.band_blocks = !args.no_band_blocks;
    let planned = optimize_and_plan(graph, &options, &file)?;
    let (graph, plan) = (&planned.graph, &planned.plan);
    let name = crate_name(args.name.as_deref().unwrap_or_else(|| stem(&args.model)));
    let runtime = runtime_dependency(args.runtime.as_deref(), None);
    let model = write_crate(&args.out, &name, &file, graph, plan, &runtime, true, target)?;
    let mut report = Report::new(graph, plan, model.weights.len());
    report.passes = planned.passes.clone();
    report.techniques = kiln_codegen::plan::technique_arenas(graph, &options.plan_options())?;
    if let (Some(triple), false) = (target.triple(), args.no_size) {
        let work = std::env::temp_dir().join("kiln-size-probe").join(&name);
        let sizes = measure(&args.out, &name, graph, triple, &work)?;
        if !sizes.panic_symbols.is_empty() {
            anyhow::bail!(
                "the generated code can panic on {triple}; linked: {}",
                sizes.panic_symbols.join(", ")
            );
        }
        report.code = Some((triple, sizes));
    }
    if let Some(board) = args.board {
        let fit = board
            .check_fit(&report.needs())
            .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        report.board = Some((board, fit));
    }
    if args.report == "json" {
        println!("{}", report.json(&name, target));
    } else {
        print!("{}", report.table(graph));
        println!(
            "wrote crate '{name}' for {} to {}",
            target.name(),
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `--target cuda`: plans without in-place convs or banded blocks (sequential ring
/// buffers), writes the CUDA crate and prints one row per kernel launch.
fn cuda(args: Args, file: &str) -> anyhow::Result<ExitCode> {
    use kiln_codegen::emit::cuda::{plan_options, write_crate, CudaOptions};
    let graph = args.quantizing.load(&args.model)?;
    let mut options = CompileOptions {
        target: Target::Cuda,
        ..Default::default()
    };
    options.plan.max_arena_bytes = args.max_arena;
    options.plan = plan_options(&options.plan);
    let planned = optimize_and_plan(graph, &options, file)?;
    let (graph, plan) = (&planned.graph, &planned.plan);
    let name = crate_name(args.name.as_deref().unwrap_or_else(|| stem(&args.model)));
    let driver = runtime_dependency(args.runtime.as_deref(), Some("cuda"));
    let cuda = CudaOptions {
        batch: args.batch,
        ..Default::default()
    };
    let model = write_crate(&args.out, &name, file, graph, plan, &driver, &cuda)?;
    if args.report == "json" {
        let launches: Vec<serde_json::Value> = model
            .launches
            .iter()
            .map(|l| {
                serde_json::json!({"node": l.node, "op": graph.nodes[l.node].op.name(),
                    "kernel": l.kernel, "grid": l.grid, "block": l.block})
            })
            .collect();
        let report = serde_json::json!({
            "name": name, "target": "cuda", "batch": model.batch,
            "arena_bytes": model.arena_bytes, "plan_arena_bytes": model.plan_arena_bytes,
            "weight_bytes": model.weights.len(), "macs_per_sample": kiln_codegen::ir::cost::total_macs(graph),
            "launches": launches,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>4} {:<18} {:<16} {:>8} {:>6}  name",
        "node", "op", "kernel", "blocks", "threads"
    );
    for l in &model.launches {
        let n = &graph.nodes[l.node];
        let name: String = n.name.chars().take(48).collect();
        println!(
            "{:>4} {:<18} {:<16} {:>8} {:>6}  {name}",
            l.node,
            n.op.name(),
            l.kernel,
            l.grid,
            l.block
        );
    }
    println!("batch:          {}", model.batch);
    println!(
        "device arena:   {} bytes (plan {} per sample x {}, then inputs and outputs)",
        model.arena_bytes, model.plan_arena_bytes, model.batch
    );
    println!("weights:        {} bytes", model.weights.len());
    println!("kernel launches per run: {}", model.launches.len());
    println!(
        "wrote crate '{name}' for cuda to {} (src/model.cu, src/model.manifest, src/model.weights.bin)",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The file stem, or the folder's name for the `models/<name>/model.tflite` layout.
fn stem(path: &Path) -> &str {
    let file = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let folder = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|s| s.to_str());
    match folder {
        Some(f) if file == "model" => f,
        _ => file,
    }
}

/// A valid crate name: lower-case letters, digits and `_`, not starting with a digit.
fn crate_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s.insert_str(0, "model_");
    }
    s
}

fn parse_board(name: &str) -> Result<&'static Board, String> {
    board::find(name)
}

/// The `--runtime` dependency of a generated crate on a crate of kiln's `runtime`
/// folder: the folder itself, or its subfolder `sub` (`cuda` for kiln-cuda). ARG is a
/// version when it starts with a digit, else the `runtime` folder of a kiln checkout;
/// by default this kiln's own checkout when it exists, else this kiln's version.
fn runtime_dependency(arg: Option<&str>, sub: Option<&str>) -> CrateDependency {
    let within = |runtime: PathBuf| match sub {
        Some(sub) => runtime.join(sub),
        None => runtime,
    };
    match arg {
        Some(v) if v.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
            CrateDependency::Version(v.to_string())
        }
        Some(p) => CrateDependency::Path(
            std::fs::canonicalize(within(PathBuf::from(p))).unwrap_or_else(|_| PathBuf::from(p)),
        ),
        None => {
            let checkout = within(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runtime"));
            match std::fs::canonicalize(&checkout) {
                Ok(p) => CrateDependency::Path(p),
                Err(_) => CrateDependency::Version(env!("CARGO_PKG_VERSION").to_string()),
            }
        }
    }
}

/// One row per node in plan order, and totals.
struct Report {
    rows: Vec<Row>,
    macs: u64,
    arena: usize,
    lower_bound: usize,
    best_bound: usize,
    weight_bytes: usize,
    /// Section sizes on the target, when measured.
    code: Option<(&'static str, Sizes)>,
    /// Rewrites made by each optimization pass.
    passes: Vec<(&'static str, usize)>,
    /// The board checked with `--board`, and how full it is.
    board: Option<(&'static Board, Fit)>,
    /// The arena with each memory technique switched off in turn.
    techniques: Vec<kiln_codegen::plan::TechniqueArena>,
}

struct Row {
    step: usize,
    node: usize,
    op: &'static str,
    name: String,
    inputs: Vec<Vec<usize>>,
    output: Vec<usize>,
    macs: u64,
    location: Location,
    bytes: usize,
    /// Computed in row bands inside another node (its result is never stored whole).
    banded: bool,
    /// Arena scratch the node holds while it runs (offset, bytes): an in-place conv's
    /// ring, a banded block's ring of rows, the DSP kernels' columns and tables.
    scratch: Option<(usize, usize)>,
    /// Arena bytes live while the node runs (tensors and scratch).
    live: usize,
}

impl Report {
    fn new(graph: &Graph, plan: &Plan, weight_bytes: usize) -> Report {
        let rows: Vec<Row> = plan
            .order
            .iter()
            .enumerate()
            .map(|(step, id)| {
                let n = &graph.nodes[id.0];
                let out = graph.info(n.outputs[0]);
                Row {
                    step,
                    node: id.0,
                    op: n.op.name(),
                    name: n.name.clone(),
                    inputs: n
                        .inputs
                        .iter()
                        .map(|i| graph.info(*i).shape.clone())
                        .collect(),
                    output: out.shape.clone(),
                    macs: macs(graph, n),
                    location: plan.location(n.outputs[0]),
                    bytes: out.byte_size(),
                    banded: matches!(plan.reuse(*id), kiln_codegen::plan::Reuse::Band { .. }),
                    scratch: plan
                        .scratch
                        .get(id.0)
                        .copied()
                        .flatten()
                        .map(|s| (s.offset, s.bytes)),
                    live: plan.live_bytes.get(step).copied().unwrap_or(0),
                }
            })
            .collect();
        Report {
            macs: rows.iter().map(|r| r.macs).sum(),
            rows,
            arena: plan.arena_bytes,
            lower_bound: plan.lower_bound_bytes,
            best_bound: plan.best_order_bound_bytes,
            weight_bytes,
            code: None,
            passes: Vec::new(),
            board: None,
            techniques: Vec::new(),
        }
    }

    /// What the model needs from a board: the probe's code and other read-only data
    /// beside the weights count as code, its `.data` and `.bss` as other static RAM.
    fn needs(&self) -> Needs {
        let weights = self.weight_bytes as u64;
        let (code, static_ram) = match &self.code {
            Some((_, z)) => (
                z.text + z.rodata.saturating_sub(weights) + z.data,
                z.data + z.bss,
            ),
            None => (0, 0),
        };
        Needs {
            arena: self.arena as u64,
            weights,
            code,
            static_ram,
        }
    }

    fn table(&self, _graph: &Graph) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>4} {:<18} {:<34} {:>12} {:>10} {:>10} {:>13} {:>7}  name",
            "step", "op", "shapes", "MACs", "offset", "bytes", "scratch@off", "live"
        );
        for r in &self.rows {
            let ins: Vec<String> = r.inputs.iter().map(|d| dims(d)).collect();
            let shapes = format!("{} -> {}", ins.join(","), dims(&r.output));
            let place = match r.location {
                _ if r.banded => "band".to_string(),
                Location::Arena(off) => off.to_string(),
                Location::Output(j) => format!("output {j}"),
                other => format!("{other:?}"),
            };
            let name: String = r.name.chars().take(48).collect();
            let scratch = r
                .scratch
                .map_or("-".to_string(), |(off, bytes)| format!("{bytes}@{off}"));
            let _ = writeln!(
                s,
                "{:>4} {:<18} {:<34} {:>12} {:>10} {:>10} {:>13} {:>7}  {name}",
                r.step, r.op, shapes, r.macs, place, r.bytes, scratch, r.live
            );
        }
        let _ = writeln!(s, "total MACs:     {}", self.macs);
        let _ = writeln!(
            s,
            "arena bytes:    {} (lower bound for this op order {}, best order found {})",
            self.arena, self.lower_bound, self.best_bound
        );
        if !self.techniques.is_empty() {
            let _ = writeln!(
                s,
                "arena by memory technique (PlanOptions flags switched off):"
            );
            for t in &self.techniques {
                let _ = writeln!(
                    s,
                    "  {:<24} {:>8} bytes (lower bound {})",
                    t.name, t.arena_bytes, t.lower_bound_bytes
                );
            }
        }
        let _ = writeln!(s, "weight bytes:   {}", self.weight_bytes);
        let rewrites: Vec<String> = self
            .passes
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(p, n)| format!("{p} x{n}"))
            .collect();
        if !rewrites.is_empty() {
            let _ = writeln!(s, "passes:         {}", rewrites.join(", "));
        }
        match &self.code {
            Some((triple, z)) => {
                let _ = writeln!(
                    s,
                    "code bytes:     {} .text on {triple} (run + kernels), {} .rodata (weights and tables), {} .data, {} .bss",
                    z.text, z.rodata, z.data, z.bss
                );
            }
            None => {
                let _ = writeln!(s, "code bytes:     not measured (host target or --no-size)");
            }
        }
        if let Some((b, fit)) = &self.board {
            let _ = writeln!(
                s,
                "board:          {} ({}): RAM {} of {} bytes (arena + {} stack), flash {} of {} bytes{}",
                b.name,
                b.chip,
                fit.ram_used,
                b.ram.bytes,
                b.stack_bytes,
                fit.flash_used,
                b.flash.bytes,
                if self.code.is_some() { "" } else { " (weights only: code not measured)" }
            );
        }
        s
    }

    fn json(&self, name: &str, target: Target) -> String {
        let ops: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let (kind, offset) = match r.location {
                    _ if r.banded => ("band", None),
                    Location::Arena(off) => ("arena", Some(off)),
                    Location::Output(j) => ("output", Some(j)),
                    Location::Input(i) => ("input", Some(i)),
                    Location::Const => ("const", None),
                };
                serde_json::json!({
                    "step": r.step, "node": r.node, "op": r.op, "name": r.name,
                    "inputs": r.inputs, "output": r.output, "macs": r.macs,
                    "location": kind, "offset": offset, "bytes": r.bytes,
                    "scratch": r.scratch.map(|(offset, bytes)| serde_json::json!({"offset": offset, "bytes": bytes})),
                    "live_bytes": r.live,
                })
            })
            .collect();
        let report = serde_json::json!({
            "crate": name,
            "target": target.name(),
            "macs": self.macs,
            "arena_bytes": self.arena,
            "lower_bound_bytes": self.lower_bound,
            "best_order_bound_bytes": self.best_bound,
            "techniques": self.techniques.iter().map(|t| serde_json::json!({
                "name": t.name, "arena_bytes": t.arena_bytes, "lower_bound_bytes": t.lower_bound_bytes,
            })).collect::<Vec<_>>(),
            "weight_bytes": self.weight_bytes,
            "passes": self.passes.iter().map(|(p, n)| (p.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
            "code": self.code.as_ref().map(|(triple, z)| serde_json::json!({
                "triple": triple, "text": z.text, "rodata": z.rodata, "data": z.data, "bss": z.bss,
            })),
            "board": self.board.as_ref().map(|(b, fit)| serde_json::json!({
                "name": b.name, "chip": b.chip, "ram_used": fit.ram_used, "ram_bytes": b.ram.bytes,
                "stack_bytes": b.stack_bytes, "flash_used": fit.flash_used, "flash_bytes": b.flash.bytes,
            })),
            "ops": ops,
        });
        serde_json::to_string_pretty(&report).unwrap_or_default()
    }
}

fn dims(d: &[usize]) -> String {
    d.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("x")
}
