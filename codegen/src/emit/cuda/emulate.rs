//! Runs a [`CudaModel`]'s generated source on the CPU: the exact `model.cu`, compiled
//! with the host C++ compiler through [`EMULATION_HEADER`] and [`EMULATION_MAIN`], every
//! block and thread run one after the other. Tests use it to check the kernels'
//! arithmetic against the CPU executor on machines without a GPU.

use super::{CudaModel, EMULATION_HEADER, EMULATION_MAIN};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the emulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EmulateError {
    /// Writing or reading a file in the work folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The C++ compiler could not be started or rejected the source.
    #[error("compiling {path} with `{compiler}` failed: {message}")]
    Compile {
        /// The generated source.
        path: String,
        /// The compiler command.
        compiler: String,
        /// Its error output (or why it did not start).
        message: String,
    },
    /// The emulated run failed.
    #[error("running {path} failed: {message}")]
    Run {
        /// The emulator binary.
        path: String,
        /// Its error output.
        message: String,
    },
    /// An input has the wrong size.
    #[error("input {index}: {message}")]
    Input {
        /// Index of the graph input.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// The C++ compiler: `$CXX`, else `g++`.
pub fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "g++".to_string())
}

/// A compiled emulator of one model, kept in `dir`.
#[derive(Debug)]
pub struct Emulator {
    dir: PathBuf,
    exe: PathBuf,
    model: CudaModel,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EmulateError + '_ {
    move |source| EmulateError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Emulator {
    /// Writes the model's source, the emulation header and driver into `dir` (created
    /// if missing) and compiles them with [`compiler`] (`-O2 -fwrapv -ffp-contract=off`:
    /// no fused multiply-adds, so float sums round like the CPU executor's and like the
    /// GPU's, which `kiln-cuda` compiles with `--fmad=false`).
    pub fn build(model: &CudaModel, dir: &Path) -> Result<Emulator, EmulateError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let files = [
            ("model.cu", model.source.as_bytes()),
            ("kiln_cuda_emu.h", EMULATION_HEADER.as_bytes()),
            ("kiln_cuda_emu_main.cpp", EMULATION_MAIN.as_bytes()),
            ("model.weights.bin", model.weights.as_slice()),
        ];
        for (name, bytes) in files {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(io(&path))?;
        }
        let exe = dir.join("emu");
        let cxx = compiler();
        let main = dir.join("kiln_cuda_emu_main.cpp");
        let output = Command::new(&cxx)
            .args([
                "-O2",
                "-fwrapv",
                "-ffp-contract=off",
                "-std=c++17",
                "-w",
                "-I",
            ])
            .arg(dir)
            .arg("-o")
            .arg(&exe)
            .arg(&main)
            .output()
            .map_err(|e| EmulateError::Compile {
                path: dir.join("model.cu").display().to_string(),
                compiler: cxx.clone(),
                message: e.to_string(),
            })?;
        if !output.status.success() {
            return Err(EmulateError::Compile {
                path: dir.join("model.cu").display().to_string(),
                compiler: cxx,
                message: String::from_utf8_lossy(&output.stderr)
                    .chars()
                    .take(4000)
                    .collect(),
            });
        }
        Ok(Emulator {
            dir: dir.to_path_buf(),
            exe,
            model: model.clone(),
        })
    }

    /// Runs the model on one byte buffer per graph input, each holding all
    /// [`CudaModel::batch`] samples back to back; returns one buffer per output.
    pub fn run(&self, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>, EmulateError> {
        let m = &self.model;
        if inputs.len() != m.inputs.len() {
            return Err(EmulateError::Input {
                index: inputs.len().min(m.inputs.len()),
                message: format!(
                    "{} inputs given, the model has {}",
                    inputs.len(),
                    m.inputs.len()
                ),
            });
        }
        let mut args = vec![self.dir.join("model.weights.bin")];
        for (i, (x, p)) in inputs.iter().zip(&m.inputs).enumerate() {
            if x.len() != p.bytes * m.batch {
                return Err(EmulateError::Input {
                    index: i,
                    message: format!(
                        "{} bytes given, expected {} ({} samples of {})",
                        x.len(),
                        p.bytes * m.batch,
                        m.batch,
                        p.bytes
                    ),
                });
            }
            let path = self.dir.join(format!("input_{i}.bin"));
            std::fs::write(&path, x).map_err(io(&path))?;
            args.push(path);
        }
        let outs: Vec<PathBuf> = (0..m.outputs.len())
            .map(|j| self.dir.join(format!("output_{j}.bin")))
            .collect();
        args.extend(outs.iter().cloned());
        let output =
            Command::new(&self.exe)
                .args(&args)
                .output()
                .map_err(|e| EmulateError::Run {
                    path: self.exe.display().to_string(),
                    message: e.to_string(),
                })?;
        if !output.status.success() {
            return Err(EmulateError::Run {
                path: self.exe.display().to_string(),
                message: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        outs.iter()
            .map(|p| std::fs::read(p).map_err(io(p)))
            .collect()
    }
}
