//! `kiln`: the command line of the kiln toolchain.
//!
//! Each subcommand lives in its own module; errors surface here as one line with
//! context and a non-zero exit status.

mod bench;
mod check;
mod compile;
mod emulate;
mod eval;
mod flash;
mod inspect;
mod model;
mod quantize;
mod run;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Ahead-of-time compiler and tools for neural networks on microcontrollers.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Size of a named symbolic input dimension of an ONNX model, such as the dynamic
    /// batch `N` of `kiln train --export-onnx` or PyTorch's dynamic_axes (repeatable).
    #[arg(long = "dim", value_name = "NAME=SIZE", global = true)]
    dims: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Import a model and list every operator kiln cannot run (runs nothing).
    Check(check::Args),
    /// Run a model on the host with kiln's kernels.
    Run(run::Args),
    /// Compile a model into a no_std Rust crate with a static memory plan.
    Compile(compile::Args),
    /// Quantize a float model to int8 on calibration data and report how close each
    /// layer stays to float (--report: per-layer SQNR, output error, top-1 agreement).
    Quantize(quantize::Args),
    /// Show a model's memory plan step by step, and draw it (--plot plan.svg).
    Inspect(inspect::Args),
    /// Classification accuracy on a labelled dataset (IDX or npy); with --quantize int8,
    /// the float and the int8 accuracy side by side.
    Eval(eval::Args),
    /// Build QEMU firmware with the model, run it on an emulated Cortex-M and report
    /// outputs, pass/fail, instructions per inference, flash and RAM.
    Emulate(emulate::Args),
    /// Instructions per layer and per inference on an emulated Cortex-M (QEMU), with
    /// arena, flash and RAM; --compare FILE.json puts another runtime's figures beside.
    Bench(bench::Args),
    /// Build a board's firmware with the model, flash it with probe-rs and stream its
    /// defmt log (--dry-run: only check it fits and print the memory map).
    Flash(flash::Args),
    /// Train a model described by a model file (TOML) on IDX, npy or CSV data
    /// (optionally augmented); writes weights (safetensors), a resumable checkpoint
    /// (--resume), the model file and a training curve, and reports float and
    /// (--quantize int8) kiln int8 test accuracy.
    Train(train::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = model::set_dims(&cli.dims) {
        eprintln!("error: {}", one_line(&e));
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Check(args) => check::main(args),
        Command::Run(args) => run::main(args),
        Command::Compile(args) => compile::main(args),
        Command::Inspect(args) => inspect::main(args),
        Command::Quantize(args) => quantize::main(args),
        Command::Eval(args) => eval::main(args),
        Command::Emulate(args) => emulate::main(args),
        Command::Bench(args) => bench::main(args),
        Command::Flash(args) => flash::main(args),
        Command::Train(args) => train::main(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes the message already quotes
/// (kiln's typed errors include their source's text).
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}
