//! `kiln bench MODEL [--machine mps2-an386] [--compare FILE.json] [--json | --markdown]`:
//! instructions per layer and per inference on an emulated Cortex-M, with arena, flash
//! and RAM, optionally next to another runtime's figures.
//!
//! It builds the QEMU firmware of `kiln emulate` twice on the first input sample: once
//! as shipped, for the instructions per inference, flash and RAM; once with the firmware
//! feature `profile`, which compiles the model with `--cfg kiln_profile` so that `run`
//! calls a hook after each layer that records the timer (see `boards/qemu/src/main.rs`).
//!
//! Precision: under `-icount shift=0` QEMU advances virtual time by 1 ns per instruction,
//! so one timer tick is 40 instructions on the mps2 machines (TIMER0, 25 MHz) and 62.5 on
//! the microbit (SysTick, 16 MHz); each layer's count is exact to one tick, and the
//! stamps telescope, so the layers' raw sum is the profiled inference exactly. The
//! hook's own cost (a call that reads the timer and stores it: 22 to 25 instructions on
//! the M4, calibrated by the firmware over 256 back-to-back calls) is subtracted from
//! every layer. The layers then add up to the build without hooks within [`tolerance`]: two
//! ticks for the rounding of the two totals, [`PER_LAYER_TOLERANCE`] instructions per
//! layer for the calibration, and 0.2% of the total because the calls between layers
//! change register allocation in the kernels inlined into `run` (measured on the shipped
//! models: at most 0.05% on the Cortex-M4 and M3, 0.15% for KWS on the Cortex-M0 with
//! its eight low registers; mostly the profiled build is the faster one). Every report
//! prints the difference.

use crate::emulate::{Emulation, Run, Sections, INSTRUCTIONS_PER_SECOND};
use anyhow::{bail, Context as _};
use kiln_codegen::ir::cost::macs;
use kiln_codegen::plan::Reuse;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Instructions per layer allowed between the sum of the layers and the build without
/// hooks, besides the timer's rounding (see [`tolerance`]).
pub const PER_LAYER_TOLERANCE: u64 = 16;

/// Arguments of `kiln bench`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file (.tflite or .onnx) with one int8 input and one int8 output.
    model: PathBuf,
    /// QEMU machine: mps2-an386 (Cortex-M4F), mps2-an385 (Cortex-M3), microbit
    /// (Cortex-M0, 16 KiB RAM).
    #[arg(long, default_value = "mps2-an386")]
    machine: String,
    /// Another runtime's figures to compare with: a JSON object such as
    /// {"name": "TFLM+CMSIS-NN", "instructions": 7700000, "arena": 22824,
    /// "flash_beyond_model": 84382} (see models/README.md).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print the report as Markdown tables.
    #[arg(long)]
    markdown: bool,
    /// Input sample (.npy; the first sample is used). Default: the model folder's
    /// golden/input_0.npy, whose golden output is also checked.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Seconds each QEMU run may take.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Firmware build folder (default: the system temp folder's kiln-emulate/, shared
    /// with `kiln emulate`).
    #[arg(long)]
    target_dir: Option<PathBuf>,
}

/// Another runtime's figures for the same model and machine (`--compare FILE.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// What was measured, e.g. "TFLM+CMSIS-NN".
    pub name: String,
    /// The machine it was measured on, if given (a warning names a different one).
    pub machine: Option<String>,
    /// Instructions per inference.
    pub instructions: Option<u64>,
    /// Arena (tensor memory) bytes.
    pub arena: Option<u64>,
    /// Flash bytes of the firmware beyond the model's weights (or flatbuffer).
    pub flash_beyond_model: Option<u64>,
}

/// The fields a `--compare` file may have.
const REFERENCE_FIELDS: [&str; 7] = [
    "name",
    "machine",
    "note",
    "source",
    "instructions",
    "arena",
    "flash_beyond_model",
];

impl Reference {
    /// Parses a `--compare` file: a JSON object with `name` (a string), at least one of
    /// `instructions`, `arena`, `flash_beyond_model` (positive integers), and optionally
    /// `machine`, `note` and `source` (strings). Other fields are refused, so that a
    /// misspelt figure is not silently left out.
    pub fn parse(text: &str) -> Result<Reference, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(fields) = value else {
            return Err("a JSON object {\"name\": ..., \"instructions\": ...} expected".into());
        };
        if let Some(k) = fields
            .keys()
            .find(|k| !REFERENCE_FIELDS.contains(&k.as_str()))
        {
            return Err(format!(
                "unknown field '{k}' (known: {})",
                REFERENCE_FIELDS.join(", ")
            ));
        }
        let string = |key: &str| -> Result<Option<String>, String> {
            match fields.get(key) {
                None => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(v) => Err(format!("'{key}' must be a non-empty string, not {v}")),
            }
        };
        let count = |key: &str| -> Result<Option<u64>, String> {
            match fields.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n > 0 => Ok(Some(n)),
                    _ => Err(format!("'{key}' must be a positive integer, not {v}")),
                },
            }
        };
        string("note")?;
        string("source")?;
        let reference = Reference {
            name: string("name")?.ok_or("'name' is missing (e.g. \"TFLM+CMSIS-NN\")")?,
            machine: string("machine")?,
            instructions: count("instructions")?,
            arena: count("arena")?,
            flash_beyond_model: count("flash_beyond_model")?,
        };
        if reference.instructions.is_none()
            && reference.arena.is_none()
            && reference.flash_beyond_model.is_none()
        {
            return Err(
                "no figure to compare: give instructions, arena or flash_beyond_model".into(),
            );
        }
        Ok(reference)
    }
}

/// One layer: a node of the planned graph, in execution order.
#[derive(Debug, Clone)]
struct Layer {
    node: usize,
    op: &'static str,
    name: String,
    /// Shapes of the operands that are not constants.
    inputs: Vec<Vec<usize>>,
    output: Vec<usize>,
    macs: u64,
    /// None: the node runs no code of its own (an alias, or computed inside a later
    /// node, which then counts its instructions).
    instructions: Option<u64>,
    /// The later node that computes this one (banded execution), if any.
    within: Option<usize>,
    /// MACs that `instructions` cover: this node's and those computed within it.
    counted_macs: u64,
}

/// What the profiled firmware printed about sample 0.
#[derive(Debug, Default)]
struct Profile {
    calibration_calls: u64,
    calibration_ticks: u64,
    start: u32,
    end: u32,
    dropped: u64,
    /// (node, timer value) per hook call.
    stamps: Vec<(usize, u32)>,
}

/// The model's figures the firmware printed.
#[derive(Debug, Default)]
struct ModelInfo {
    weights: u64,
    macs: u64,
    scratch: u64,
    /// Per-channel requantization tables in flash.
    tables: u64,
    /// Stack the inference of sample 0 took (the firmware paints and scans it).
    stack: Option<u64>,
}

/// The allowed difference between the layers' sum and the `total` instructions of the
/// build without hooks: two timer ticks (each total is rounded to one), plus
/// [`PER_LAYER_TOLERANCE`] per hook call, plus 0.2% of the total (see the module docs).
pub fn tolerance(instructions_per_tick: f64, layers: usize, total: u64) -> u64 {
    (2.0 * instructions_per_tick).ceil() as u64 + PER_LAYER_TOLERANCE * layers as u64 + total / 500
}

/// The whole measurement.
struct Report {
    model: String,
    machine: &'static str,
    core: &'static str,
    instructions_per_tick: f64,
    hook_overhead: f64,
    layers: Vec<Layer>,
    /// From the last hook to the return of `run`.
    after_layers: u64,
    /// Instructions per inference of the build without hooks.
    total: u64,
    /// The same inference in the profiled build (hooks included).
    profiled_total: u64,
    macs: u64,
    arena: u64,
    scratch: u64,
    /// Per-channel requantization tables in flash (model data, not runtime).
    tables: u64,
    /// Measured stack of one inference, if the firmware printed it.
    stack: Option<u64>,
    weights: u64,
    /// The firmware without hooks.
    sections: Sections,
    /// The same firmware without the model call (`empty`).
    empty: Sections,
    outputs_match: Option<bool>,
    reference: Option<Reference>,
}

impl Report {
    fn layers_sum(&self) -> u64 {
        self.layers.iter().filter_map(|l| l.instructions).sum()
    }

    fn hooks(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| l.instructions.is_some())
            .count()
    }

    /// Layers plus the return from `run`, minus the build without hooks.
    fn difference(&self) -> i64 {
        (self.layers_sum() + self.after_layers) as i64 - self.total as i64
    }

    fn tolerance(&self) -> u64 {
        tolerance(self.instructions_per_tick, self.hooks(), self.total)
    }

    /// `.text` + `.rodata` + `.data`: the flash of the issue's TFLM figures.
    fn flash(s: &Sections) -> u64 {
        s.text + s.rodata + s.data
    }

    /// The firmware's flash (vector table aside) minus the weights.
    fn flash_beyond_weights(&self) -> u64 {
        Self::flash(&self.sections).saturating_sub(self.weights)
    }

    /// What the model adds to the firmware beyond its weights: kernels, `run` and the
    /// parameter tables (the firmware without the model call subtracted).
    fn model_code_flash(&self) -> u64 {
        Self::flash(&self.sections)
            .saturating_sub(Self::flash(&self.empty))
            .saturating_sub(self.weights)
    }

    /// The runtime alone: kernels, `run` and their `.rodata` (lookup tables), i.e. the
    /// model's code without its per-channel parameter tables.
    fn runtime_flash(&self) -> u64 {
        self.model_code_flash().saturating_sub(self.tables)
    }

    fn per_mac(instructions: u64, macs: u64) -> Option<f64> {
        (macs > 0).then(|| instructions as f64 / macs as f64)
    }

    /// Summary rows: label, kiln's value, the reference's value, kiln / reference.
    fn summary(&self) -> Vec<[String; 4]> {
        let r = self.reference.as_ref();
        let row = |label: &str, ours: u64, theirs: Option<u64>| {
            [
                label.to_string(),
                group(ours),
                theirs.map_or("-".into(), group),
                theirs.map_or("-".into(), |t| format!("{:.2}", ours as f64 / t as f64)),
            ]
        };
        let per_mac = |n: Option<u64>| {
            n.and_then(|n| Self::per_mac(n, self.macs))
                .map_or("-".into(), |v| format!("{v:.2}"))
        };
        let theirs_instructions = r.and_then(|r| r.instructions);
        let mut rows = vec![
            row(
                "instructions per inference",
                self.total,
                theirs_instructions,
            ),
            [
                "instructions per MAC".into(),
                per_mac(Some(self.total)),
                per_mac(theirs_instructions),
                theirs_instructions.map_or("-".into(), |t| {
                    format!("{:.2}", self.total as f64 / t as f64)
                }),
            ],
            row("MACs", self.macs, None),
            row("arena bytes", self.arena, r.and_then(|r| r.arena)),
            row("flash bytes", Self::flash(&self.sections), None),
            row(
                "flash beyond the weights",
                self.flash_beyond_weights(),
                r.and_then(|r| r.flash_beyond_model),
            ),
            row("  runtime (kernels + run)", self.runtime_flash(), None),
            row("  parameter tables", self.tables, None),
            row(
                "  test harness (I/O, samples)",
                Self::flash(&self.empty),
                None,
            ),
            row("weight bytes", self.weights, None),
            row("RAM bytes (static)", self.sections.ram(), None),
        ];
        if let Some(stack) = self.stack {
            rows.push(row("stack bytes (measured)", stack, None));
            rows.push(row("arena + stack", self.arena + stack, None));
        }
        rows
    }

    fn shapes(l: &Layer) -> String {
        let dims = |s: &[usize]| {
            let d: Vec<String> = s.iter().map(|d| d.to_string()).collect();
            format!("[{}]", d.join(","))
        };
        let inputs: Vec<String> = l.inputs.iter().map(|s| dims(s)).collect();
        format!("{} -> {}", inputs.join(" "), dims(&l.output))
    }

    /// Per-layer rows: node, op, shapes, MACs, instructions, per MAC, share of the total.
    fn layer_rows(&self) -> Vec<[String; 7]> {
        let sum = self.layers_sum().max(1);
        self.layers
            .iter()
            .map(|l| {
                let (n, per, share) = match (l.instructions, l.within) {
                    (Some(n), _) => (
                        group(n),
                        Self::per_mac(n, l.counted_macs).map_or("-".into(), |v| format!("{v:.2}")),
                        format!("{:.1}%", 100.0 * n as f64 / sum as f64),
                    ),
                    (None, Some(w)) => (format!("in node {w}"), "-".into(), "-".into()),
                    (None, None) => ("-".into(), "-".into(), "-".into()),
                };
                [
                    l.node.to_string(),
                    l.op.to_string(),
                    Self::shapes(l),
                    group(l.macs),
                    n,
                    per,
                    share,
                ]
            })
            .collect()
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = vec![
            format!(
                "instructions counted under -icount shift=0: one timer tick = {} instructions; per layer exact to one tick",
                self.instructions_per_tick
            ),
            format!(
                "per layer: the build with hooks, {:.1} instructions of hook per layer subtracted; {} after the last layer (return from run)",
                self.hook_overhead, self.after_layers
            ),
            format!(
                "layers + return = {}, build without hooks = {} (difference {:+}, tolerance {}); with hooks: {}",
                group(self.layers_sum() + self.after_layers),
                group(self.total),
                self.difference(),
                self.tolerance(),
                group(self.profiled_total)
            ),
            format!(
                "flash = .text {} + .rodata {} + .data {} (and a {} B vector table); beyond the weights: the runtime (kernels, run and their .rodata: the firmware without the model call subtracted, less the weights and tables), the per-channel parameter tables (multiplier and shift per output channel; TFLM computes them into its arena at init) and the test harness (the firmware without the model call: start-up, semihosting output, the sample and expected output)",
                self.sections.text,
                self.sections.rodata,
                self.sections.data,
                self.sections.vectors,
            ),
            format!(
                "RAM = .data + .bss (the arena, which holds the kernels' scratch: up to {} B in one layer); stack = what the firmware's paint-and-scan found the inference of sample 0 to take below main's frame",
                group(self.scratch)
            ),
            "MACs: multiply-accumulates of the convolutions and dense layers, plus one per output element of the other ops (pooling: one per window element)".into(),
        ];
        if self.layers.iter().any(|l| l.instructions.is_none()) {
            notes.push(
                "-: no code of its own (an alias of its input); in node N: computed band by band inside that later layer, whose count and instructions per MAC cover both"
                    .into(),
            );
        }
        if let Some(m) = self.reference.as_ref().and_then(|r| r.machine.as_ref()) {
            if m != self.machine {
                notes.push(format!(
                    "warning: the reference was measured on {m}, not {}",
                    self.machine
                ));
            }
        }
        match self.outputs_match {
            Some(true) => notes.push("output of sample 0 matches the expected output".into()),
            Some(false) => {
                notes.push("FAIL: the output of sample 0 differs from the expected output".into())
            }
            None => {}
        }
        notes
    }

    fn title(&self) -> String {
        format!(
            "{} on {} ({}), sample 0",
            self.model, self.machine, self.core
        )
    }

    fn text(&self) -> String {
        let mut s = format!("kiln bench: {}\n\n", self.title());
        let header = [
            "node",
            "op",
            "input -> output",
            "MACs",
            "instructions",
            "instr/MAC",
            "share",
        ]
        .map(String::from);
        let rows = self.layer_rows();
        let widths: Vec<usize> = (0..7)
            .map(|c| {
                rows.iter()
                    .chain(std::iter::once(&header))
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for r in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                let w = widths[c];
                if c == 1 || c == 2 {
                    let _ = write!(line, "{cell:<w$}  ");
                } else {
                    let _ = write!(line, "{cell:>w$}  ");
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s.push('\n');
        let reference = self.reference.as_ref().map(|r| r.name.as_str());
        let header = [
            String::new(),
            "kiln".into(),
            reference.unwrap_or("").into(),
            reference.map_or(String::new(), |r| format!("kiln / {r}")),
        ];
        let rows = self.summary();
        let widths: Vec<usize> = (0..4)
            .map(|c| {
                rows.iter()
                    .chain(std::iter::once(&header))
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let columns = if reference.is_some() { 4 } else { 2 };
        for r in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate().take(columns) {
                let w = widths[c];
                if c == 0 {
                    let _ = write!(line, "{cell:<w$}  ");
                } else {
                    let _ = write!(line, "{cell:>w$}  ");
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s.push('\n');
        for n in self.notes() {
            let _ = writeln!(s, "{n}");
        }
        s
    }

    fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title());
        let reference = self.reference.as_ref().map(|r| r.name.as_str());
        match reference {
            Some(r) => {
                let _ = writeln!(s, "| | kiln | {r} | kiln / {r} |\n|---|---:|---:|---:|");
                for row in self.summary() {
                    let _ = writeln!(s, "| {} |", row.join(" | "));
                }
            }
            None => {
                s.push_str("| | kiln |\n|---|---:|\n");
                for row in self.summary() {
                    let _ = writeln!(s, "| {} | {} |", row[0], row[1]);
                }
            }
        }
        s.push_str("\n| node | op | input → output | MACs | instructions | instructions/MAC | share |\n|---:|---|---|---:|---:|---:|---:|\n");
        for row in self.layer_rows() {
            let _ = writeln!(s, "| {} |", row.join(" | ").replace(" -> ", " → "));
        }
        s.push('\n');
        for n in self.notes() {
            let _ = writeln!(s, "- {n}");
        }
        s
    }

    fn json(&self) -> Value {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| {
                json!({
                    "node": l.node,
                    "op": l.op,
                    "name": l.name,
                    "inputs": l.inputs,
                    "output": l.output,
                    "macs": l.macs,
                    "instructions": l.instructions,
                    "computed_in": l.within,
                    "counted_macs": l.counted_macs,
                    "instructions_per_mac": l.instructions.and_then(|n| Self::per_mac(n, l.counted_macs)),
                })
            })
            .collect();
        let compare = self.reference.as_ref().map(|r| {
            let ratio = |ours: u64, theirs: Option<u64>| theirs.map(|t| ours as f64 / t as f64);
            json!({
                "name": r.name,
                "machine": r.machine,
                "instructions": r.instructions,
                "arena": r.arena,
                "flash_beyond_model": r.flash_beyond_model,
                "ratios": {
                    "instructions": ratio(self.total, r.instructions),
                    "arena": ratio(self.arena, r.arena),
                    "flash_beyond_model": ratio(self.flash_beyond_weights(), r.flash_beyond_model),
                },
            })
        });
        json!({
            "model": self.model,
            "machine": self.machine,
            "core": self.core,
            "instructions_per_tick": self.instructions_per_tick,
            "hook_overhead": self.hook_overhead,
            "layers": layers,
            "after_layers": self.after_layers,
            "total": {
                "instructions": self.total,
                "layers_sum": self.layers_sum(),
                "difference": self.difference(),
                "tolerance": self.tolerance(),
                "profiled_instructions": self.profiled_total,
                "macs": self.macs,
                "instructions_per_mac": Self::per_mac(self.total, self.macs),
                "arena": self.arena,
                "scratch": self.scratch,
                "weights": self.weights,
                "flash": Self::flash(&self.sections),
                "flash_beyond_weights": self.flash_beyond_weights(),
                "model_code_flash": self.model_code_flash(),
                "runtime_flash": self.runtime_flash(),
                "parameter_table_flash": self.tables,
                "harness_flash": Self::flash(&self.empty),
                "stack": self.stack,
                "vector_table": self.sections.vectors,
                "ram": self.sections.ram(),
            },
            "outputs_match": self.outputs_match,
            "compare": compare,
        })
    }
}

/// `n` with thousands separated by commas.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Parses the profile lines and the model line the firmware printed.
fn parse_printed(printed: &str) -> anyhow::Result<(Option<Profile>, ModelInfo)> {
    let mut profile: Option<Profile> = None;
    let mut calibration = None;
    let mut info = ModelInfo::default();
    let number = |s: &str| -> anyhow::Result<u64> {
        s.parse()
            .with_context(|| format!("the firmware printed '{s}' for a number"))
    };
    for line in printed.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["model", "weight-bytes", w, "macs", m, "scratch-bytes", s, "table-bytes", t] => {
                info = ModelInfo {
                    weights: number(w)?,
                    macs: number(m)?,
                    scratch: number(s)?,
                    tables: number(t)?,
                    stack: info.stack,
                };
            }
            ["stack", "run-bytes", n] => info.stack = Some(number(n)?),
            ["profile-calibration", "calls", c, "ticks", t] => {
                calibration = Some((number(c)?, number(t)?));
            }
            ["profile", "start", a, "end", b, "layers", _, "dropped", d] => {
                profile = Some(Profile {
                    start: number(a)? as u32,
                    end: number(b)? as u32,
                    dropped: number(d)?,
                    ..Profile::default()
                });
            }
            ["layer", node, "stamp", t] => {
                let p = profile
                    .as_mut()
                    .context("the firmware printed a layer before its profile line")?;
                p.stamps.push((number(node)? as usize, number(t)? as u32));
            }
            _ => {}
        }
    }
    if let (Some(p), Some((calls, ticks))) = (profile.as_mut(), calibration) {
        p.calibration_calls = calls;
        p.calibration_ticks = ticks;
    }
    Ok((profile, info))
}

/// Per-layer instructions of the profiled run: each layer's ticks since the previous
/// stamp, less the hook's calibrated cost. Returns the layers in plan order, the
/// instructions after the last stamp and the hook's cost per call.
fn layers(
    emulation: &Emulation,
    run: &Run,
    profile: &Profile,
    mask: u32,
) -> anyhow::Result<(Vec<Layer>, u64, f64)> {
    let (graph, plan) = (&emulation.planned.graph, &emulation.planned.plan);
    if profile.dropped > 0 {
        bail!(
            "the model has more layers than the firmware records ({} stamps dropped)",
            profile.dropped
        );
    }
    if profile.calibration_calls == 0 {
        bail!("the profiling firmware printed no hook calibration");
    }
    let hook =
        run.instructions(profile.calibration_ticks) as f64 / profile.calibration_calls as f64;
    let mut measured = vec![None; graph.nodes.len()];
    let mut previous = profile.start;
    // Stamps must come in plan order, one per node at most.
    let mut position = 0;
    for &(node, stamp) in &profile.stamps {
        let Some(at) = plan.order[position..].iter().position(|n| n.0 == node) else {
            bail!("the firmware stamped node {node} out of the plan's order: was it built by another kiln?");
        };
        position += at + 1;
        let ticks = u64::from(previous.wrapping_sub(stamp) & mask);
        previous = stamp;
        let n = run.instructions(ticks) as f64 - hook;
        measured[node] = Some(n.round().max(0.0) as u64);
    }
    let after = run.instructions(u64::from(previous.wrapping_sub(profile.end) & mask));
    let after = after.saturating_sub(run.instructions(run.overhead));
    let mut layers: Vec<Layer> = plan
        .order
        .iter()
        .map(|&id| {
            let node = &graph.nodes[id.0];
            let macs = macs(graph, node);
            Layer {
                node: id.0,
                op: node.op.name(),
                name: node.name.clone(),
                inputs: node
                    .inputs
                    .iter()
                    .filter(|&&t| graph.tensor(t).data.is_none())
                    .map(|&t| graph.info(t).shape.clone())
                    .collect(),
                output: graph.info(node.outputs[0]).shape.clone(),
                macs,
                instructions: measured[id.0],
                within: None,
                counted_macs: macs,
            }
        })
        .collect();
    // A node with code of its own but no stamp ran inside the next stamped one.
    let mut pending: Vec<usize> = Vec::new();
    for i in 0..layers.len() {
        if layers[i].instructions.is_some() {
            for p in pending.drain(..) {
                let (macs, node) = (layers[p].macs, layers[i].node);
                layers[i].counted_macs += macs;
                layers[p].within = Some(node);
            }
        } else if plan.reuse[layers[i].node] != Reuse::Alias {
            pending.push(i);
        }
    }
    Ok((layers, after, hook))
}

/// Builds and runs both firmwares and reports.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let reference = match &args.compare {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            Some(Reference::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let mut emulation = Emulation::prepare(
        &args.model,
        &args.machine,
        args.target_dir.as_deref(),
        false,
    )?;
    let samples = emulation.samples(args.input.as_deref(), None)?;
    emulation.tools()?;
    let timeout = Duration::from_secs(args.timeout);
    let plain = emulation.build(&samples, Some(1), &[])?;
    let plain_run = emulation.run(&plain, timeout)?;
    let profiled = emulation.build(&samples, Some(1), &["profile"])?;
    let profiled_run = emulation.run(&profiled, timeout)?;
    let empty = emulation.build(&samples, Some(1), &["empty"])?.sections;
    drop(samples);
    if plain_run.hz == 0 || profiled_run.hz == 0 {
        bail!("the firmware reported no timer");
    }
    let (profile, _) = parse_printed(&profiled_run.printed)?;
    let profile = profile.context("the profiling firmware printed no per-layer stamps")?;
    let (_, info) = parse_printed(&plain_run.printed)?;
    // The counter's bits: TIMER0 is 32-bit, SysTick 24-bit.
    let mask = if emulation.machine.timer == "SysTick" {
        0x00FF_FFFF
    } else {
        u32::MAX
    };
    let (layers, after_layers, hook_overhead) = layers(&emulation, &profiled_run, &profile, mask)?;
    let first = |run: &Run| run.per_inference().first().copied().unwrap_or(0);
    let outputs_match = (plain_run.compared && profiled_run.compared).then(|| {
        plain_run.mismatches.is_empty()
            && profiled_run.mismatches.is_empty()
            && plain_run.outputs == profiled_run.outputs
    });
    let macs = if info.macs > 0 {
        info.macs
    } else {
        kiln_codegen::ir::cost::total_macs(&emulation.planned.graph)
    };
    let report = Report {
        model: args.model.display().to_string(),
        machine: emulation.machine.name,
        core: emulation.machine.core,
        instructions_per_tick: INSTRUCTIONS_PER_SECOND as f64 / plain_run.hz as f64,
        hook_overhead,
        layers,
        after_layers,
        total: first(&plain_run),
        profiled_total: first(&profiled_run),
        macs,
        arena: emulation.planned.plan.arena_bytes as u64,
        scratch: info.scratch,
        tables: info.tables,
        stack: info.stack,
        weights: info.weights,
        sections: plain.sections,
        empty,
        outputs_match,
        reference,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else if args.markdown {
        print!("{}", report.markdown());
    } else {
        print!("{}", report.text());
    }
    Ok(if outputs_match == Some(false) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_files_are_checked_field_by_field() {
        let r = Reference::parse(
            r#"{"name": "TFLM+CMSIS-NN", "machine": "mps2-an386", "instructions": 7700000,
                "arena": 22824, "flash_beyond_model": 84382, "note": "measured"}"#,
        )
        .unwrap();
        assert_eq!(r.name, "TFLM+CMSIS-NN");
        assert_eq!(r.instructions, Some(7_700_000));
        assert_eq!(r.arena, Some(22824));
        assert_eq!(r.flash_beyond_model, Some(84382));
        for (text, error) in [
            ("", "not JSON"),
            ("[1]", "a JSON object"),
            (r#"{"instructions": 1}"#, "'name' is missing"),
            (r#"{"name": "x"}"#, "no figure to compare"),
            (r#"{"name": "x", "instrs": 5}"#, "unknown field 'instrs'"),
            (
                r#"{"name": "x", "arena": -3}"#,
                "'arena' must be a positive integer",
            ),
            (
                r#"{"name": "x", "arena": 1.5}"#,
                "'arena' must be a positive integer",
            ),
            (
                r#"{"name": 7, "arena": 1}"#,
                "'name' must be a non-empty string",
            ),
        ] {
            let e = Reference::parse(text).unwrap_err();
            assert!(e.contains(error), "{text}: {e}");
        }
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(38_383_200), "38,383,200");
    }

    #[test]
    fn the_firmware_output_is_parsed_and_malformed_lines_are_errors() {
        let printed = "timer-hz 25000000 timer-overhead 0\n\
            model weight-bytes 24368 macs 2656768 scratch-bytes 640 table-bytes 4704\n\
            stack run-bytes 940\n\
            profile-calibration calls 256 ticks 96\n\
            sample 0 ticks 100 output 1 2\n\
            profile start 1000 end 900 layers 2 dropped 0\n\
            layer 0 stamp 960\n\
            layer 3 stamp 901\n";
        let (p, info) = parse_printed(printed).unwrap();
        let p = p.unwrap();
        assert_eq!(
            (
                info.weights,
                info.macs,
                info.scratch,
                info.tables,
                info.stack
            ),
            (24368, 2656768, 640, 4704, Some(940))
        );
        assert!(parse_printed("stack run-bytes many\n").is_err());
        assert_eq!((p.calibration_calls, p.calibration_ticks), (256, 96));
        assert_eq!((p.start, p.end, p.dropped), (1000, 900, 0));
        assert_eq!(p.stamps, vec![(0, 960), (3, 901)]);
        assert!(parse_printed("layer 0 stamp 5\n").is_err());
        assert!(parse_printed("profile start x end 1 layers 0 dropped 0\n").is_err());
    }

    #[test]
    fn tolerance_is_two_ticks_plus_a_margin_per_layer_and_0_2_percent() {
        assert_eq!(tolerance(40.0, 0, 499), 80);
        assert_eq!(tolerance(40.0, 10, 0), 80 + 10 * PER_LAYER_TOLERANCE);
        assert_eq!(
            tolerance(62.5, 1, 2_000_000),
            125 + PER_LAYER_TOLERANCE + 4000
        );
    }
}
