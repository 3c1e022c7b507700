//! The compiler pipeline in one call: imported graph → memory plan → Rust source.

use crate::emit::rust::EmitError;
use crate::import::ImportError;
use crate::ir::Graph;
use crate::plan::{Location, Plan};
use std::str::FromStr;

/// The device a model is compiled for. It selects the Rust target triple used to build
/// and measure the generated crate (and, later, the kernel variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Target {
    /// The machine running kiln (tests, simulation).
    #[default]
    Host,
    /// Arm Cortex-M0+ (ARMv6-M).
    CortexM0Plus,
    /// Arm Cortex-M3 (ARMv7-M).
    CortexM3,
    /// Arm Cortex-M4F (ARMv7E-M, DSP, single-precision FPU).
    CortexM4,
    /// Arm Cortex-M7F (ARMv7E-M, DSP, FPU).
    CortexM7,
    /// Arm Cortex-M33F (ARMv8-M mainline, DSP, FPU).
    CortexM33,
    /// RISC-V RV32IMAC.
    Riscv32imac,
}

impl Target {
    /// Every target, in the order `--help` lists them.
    pub const ALL: [Target; 7] = [
        Target::Host,
        Target::CortexM0Plus,
        Target::CortexM3,
        Target::CortexM4,
        Target::CortexM7,
        Target::CortexM33,
        Target::Riscv32imac,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Host => "host",
            Target::CortexM0Plus => "cortex-m0plus",
            Target::CortexM3 => "cortex-m3",
            Target::CortexM4 => "cortex-m4",
            Target::CortexM7 => "cortex-m7",
            Target::CortexM33 => "cortex-m33",
            Target::Riscv32imac => "riscv32imac",
        }
    }

    /// The Rust target triple, `None` for the host.
    pub fn triple(self) -> Option<&'static str> {
        match self {
            Target::Host => None,
            Target::CortexM0Plus => Some("thumbv6m-none-eabi"),
            Target::CortexM3 => Some("thumbv7m-none-eabi"),
            Target::CortexM4 | Target::CortexM7 => Some("thumbv7em-none-eabihf"),
            Target::CortexM33 => Some("thumbv8m.main-none-eabihf"),
            Target::Riscv32imac => Some("riscv32imac-unknown-none-elf"),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Target::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
            format!("unknown target '{s}', expected one of {}", names.join(", "))
        })
    }
}

/// Why a model could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The model file could not be imported.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The graph cannot be expressed as generated code.
    #[error("{file}: {source}")]
    Emit {
        /// The model file.
        file: String,
        /// What the emitter refused.
        source: EmitError,
    },
    /// Writing the generated files failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Options of the whole pipeline.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// The device.
    pub target: Target,
}

/// Plans `graph`'s memory; `file` names the model in errors.
pub fn plan_graph(graph: &Graph, _options: &CompileOptions, _file: &str) -> Result<Plan, CompileError> {
    // TEMPORARY until the planner lands: every intermediate tensor gets its own bytes.
    let mut locations = vec![Location::Const; graph.tensors.len()];
    let mut offset = 0;
    for n in &graph.nodes {
        for o in &n.outputs {
            locations[o.0] = Location::Arena(offset);
            offset += graph.info(*o).byte_size().next_multiple_of(16);
        }
    }
    for (i, id) in graph.inputs.iter().enumerate() {
        locations[id.0] = Location::Input(i);
    }
    for (j, id) in graph.outputs.iter().enumerate() {
        locations[id.0] = Location::Output(j);
    }
    Ok(Plan {
        order: (0..graph.nodes.len()).map(crate::ir::NodeId).collect(),
        locations,
        arena_bytes: offset,
        lower_bound_bytes: offset,
        best_order_bound_bytes: offset,
    })
}
