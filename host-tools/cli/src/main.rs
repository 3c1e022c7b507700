//! `kiln`: the command line of the kiln toolchain.
//!
//! Each subcommand lives in its own module; errors surface here as one line with
//! context and a non-zero exit status.

mod check;
mod compile;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Ahead-of-time compiler and tools for neural networks on microcontrollers.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import a model and list every operator kiln cannot run (runs nothing).
    Check(check::Args),
    /// Run a model on the host with kiln's kernels.
    Run(run::Args),
    /// Compile a model into a no_std Rust crate with a static memory plan.
    Compile(compile::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check::main(args),
        Command::Run(args) => run::main(args),
        Command::Compile(args) => compile::main(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
