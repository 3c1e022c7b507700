//! The compiler pipeline in one call: imported graph → memory plan → Rust source.

use crate::emit::rust::EmitError;
use crate::import::ImportError;
use crate::ir::Graph;
use crate::plan::{Plan, PlanError, PlanOptions};
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
    /// An NVIDIA GPU (Jetson Orin and desktop cards): CUDA C kernels plus Rust host
    /// code on `kiln-cuda` (see [`crate::emit::cuda`]).
    Cuda,
}

impl Target {
    /// Every target, in the order `--help` lists them.
    pub const ALL: [Target; 8] = [
        Target::Host,
        Target::CortexM0Plus,
        Target::CortexM3,
        Target::CortexM4,
        Target::CortexM7,
        Target::CortexM33,
        Target::Riscv32imac,
        Target::Cuda,
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
            Target::Cuda => "cuda",
        }
    }

    /// Whether the core has the Arm DSP extension (SMLAD, SXTB16, ...): the Cortex-M4,
    /// M7 and M33. The emitter calls `kiln_runtime::kernels::dsp` for these; every other
    /// target keeps the reference kernels.
    pub fn has_dsp(self) -> bool {
        matches!(
            self,
            Target::CortexM4 | Target::CortexM7 | Target::CortexM33
        )
    }

    /// The Rust target triple of a Rust crate for the device, `None` for the host and
    /// for CUDA (whose host code runs on the host or the Jetson's own CPU).
    pub fn triple(self) -> Option<&'static str> {
        match self {
            Target::Host | Target::Cuda => None,
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
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
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
    /// No memory plan fits the graph.
    #[error("{file}: memory plan: {source}")]
    Plan {
        /// The model file.
        file: String,
        /// What the planner refused.
        source: PlanError,
    },
    /// An optimization pass failed (a bug in kiln, reported rather than miscompiled).
    #[error("{file}: {source}")]
    Pass {
        /// The model file.
        file: String,
        /// The pass and what it broke.
        source: crate::passes::PassError,
    },
    /// The graph cannot be expressed as generated code.
    #[error("{file}: {source}")]
    Emit {
        /// The model file.
        file: String,
        /// What the emitter refused.
        source: EmitError,
    },
    /// The graph cannot be expressed as CUDA kernels.
    #[error("{file}: {source}")]
    CudaEmit {
        /// The model file.
        file: String,
        /// What the CUDA emitter refused.
        source: crate::emit::cuda::CudaEmitError,
    },
    /// The model does not fit the board it was compiled for.
    #[error("{file}: {source}")]
    Fit {
        /// The model file.
        file: String,
        /// Which memory overflows, with both figures.
        source: crate::board::FitError,
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
    /// Memory-planner options.
    pub plan: PlanOptions,
}

impl CompileOptions {
    /// The planner's options for this target: [`Self::plan`] with the DSP kernels'
    /// scratch planned in the arena on targets that run them
    /// ([`PlanOptions::dsp_scratch`]).
    pub fn plan_options(&self) -> PlanOptions {
        PlanOptions {
            dsp_scratch: self.plan.dsp_scratch || self.target.has_dsp(),
            ..self.plan.clone()
        }
    }
}

/// A graph after the optimization passes, with its memory plan.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The optimized graph the plan and the generated code refer to.
    pub graph: Graph,
    /// Its memory plan.
    pub plan: Plan,
    /// Rewrites each pass made, in pipeline order.
    pub passes: Vec<(&'static str, usize)>,
}

/// Optimizes `graph` (see [`crate::passes`]) and plans its memory; `file` names the
/// model in errors.
pub fn optimize_and_plan(
    mut graph: Graph,
    options: &CompileOptions,
    file: &str,
) -> Result<Planned, CompileError> {
    let passes = crate::passes::optimize(&mut graph).map_err(|source| CompileError::Pass {
        file: file.to_string(),
        source,
    })?;
    let plan = plan_graph(&graph, options, file)?;
    Ok(Planned {
        graph,
        plan,
        passes,
    })
}

/// Plans `graph`'s memory as it is; `file` names the model in errors.
pub fn plan_graph(
    graph: &Graph,
    options: &CompileOptions,
    file: &str,
) -> Result<Plan, CompileError> {
    crate::plan::plan(graph, &options.plan_options()).map_err(|source| CompileError::Plan {
        file: file.to_string(),
        source,
    })
}
