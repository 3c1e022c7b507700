//! `kiln run`: placeholder.
/// Arguments of `kiln run`.
#[derive(clap::Args)]
pub struct Args {}
/// Runs.
pub fn main(_args: Args) -> anyhow::Result<std::process::ExitCode> { Ok(std::process::ExitCode::SUCCESS) }
