//! kiln-cuda: runs a model compiled with `kiln compile MODEL --target cuda` on an NVIDIA
//! GPU through `cudarc`, with the static memory plan of the microcontroller targets.
//!
//! [`Session::load`] does everything that allocates or compiles, once: it opens the
//! CUDA driver (dynamically: this crate builds and runs where no CUDA is installed, and
//! then returns [`Error::NoDriver`] instead of panicking), compiles the generated CUDA C
//! with NVRTC for the device's architecture, uploads the weights, and allocates the one
//! device arena the manifest sizes (activations of every sample, inputs, outputs).
//! [`Session::run`] then copies the inputs into the arena, launches the kernels in plan
//! order (or replays them as one CUDA Graph captured at load), and copies the outputs
//! back; it allocates nothing on the device, which [`Session::device_allocations`]
//! counts (every device allocation goes through one function that counts it).
//!
//! ```no_run
//! let dir = std::path::Path::new("kws-cuda/src");
//! let mut session = kiln_cuda::Session::from_dir(dir, &kiln_cuda::LoadOptions::default())?;
//! let input = vec![0u8; session.manifest().inputs[0].bytes * session.manifest().batch];
//! let mut output = vec![0u8; session.manifest().outputs[0].bytes * session.manifest().batch];
//! session.run(&[&input], &mut [&mut output])?;
//! # Ok::<(), kiln_cuda::Error>(())
//! ```

pub mod manifest;

pub use manifest::{DType, Manifest, Port};

use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream, DevicePtr,
    DriverError, LaunchConfig, PushKernelArg,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Environment variable naming a `libnvrtc.so*` file to load before the default search
/// (e.g. the copy in the `nvidia-cuda-nvrtc` pip wheel).
pub const NVRTC_ENV: &str = "KILN_NVRTC";

/// Everything that can go wrong, each naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No CUDA driver library (`libcuda.so`) could be loaded: no NVIDIA driver here.
    #[error(
        "no CUDA driver: libcuda could not be loaded (is an NVIDIA GPU with its driver installed?)"
    )]
    NoDriver,
    /// No NVRTC library could be loaded.
    #[error("no NVRTC: libnvrtc could not be loaded; install the CUDA toolkit or the `nvidia-cuda-nvrtc` wheel and set {NVRTC_ENV} to its libnvrtc.so")]
    NoNvrtc,
    /// A driver call failed.
    #[error("CUDA driver: {what}: {source}")]
    Driver {
        /// What kiln-cuda was doing.
        what: String,
        /// The driver's error.
        source: DriverError,
    },
    /// NVRTC rejected the generated source.
    #[error("NVRTC compiling {name} for {arch}: {log}")]
    Nvrtc {
        /// The source's name.
        name: String,
        /// The target architecture (`sm_87`, ...).
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// The manifest is malformed.
    #[error("manifest line {line}: {message}")]
    Manifest {
        /// 1-based line (0: the manifest as a whole).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The weights blob does not match the manifest.
    #[error("weights: {0}")]
    Weights(String),
    /// An input or output buffer has the wrong size or count.
    #[error("{kind} {index} '{name}': {message}")]
    Port {
        /// `input` or `output`.
        kind: &'static str,
        /// Index of the port.
        index: usize,
        /// Its tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Reading a model file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Settings of [`Session::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// CUDA device ordinal.
    pub device: usize,
    /// NVRTC architecture such as `sm_87` or `compute_87`; `None`: the device's compute
    /// capability. The device's own `sm_` architecture is loaded as a CUBIN, any other
    /// as PTX that the driver compiles for the device (it must not be newer).
    pub arch: Option<String>,
    /// Capture the kernel sequence once as a CUDA Graph and replay it in `run`.
    pub cuda_graph: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: 0,
            arch: None,
            cuda_graph: true,
        }
    }
}

fn driver(what: impl Into<String>) -> impl FnOnce(DriverError) -> Error {
    let what = what.into();
    move |source| Error::Driver { what, source }
}

/// Whether the CUDA driver library can be loaded here (no GPU access is attempted).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda; nothing is called through it.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Loads `$KILN_NVRTC` (if set) globally so cudarc's by-name lookup finds it, then
/// says whether NVRTC is available.
pub fn nvrtc_present() -> bool {
    if let Some(path) = std::env::var_os(NVRTC_ENV) {
        preload(Path::new(&path));
    }
    // SAFETY: only tries to dlopen libnvrtc.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// dlopens `path` with RTLD_GLOBAL and keeps it loaded: a later dlopen by soname
/// (what cudarc does) then returns this copy. Failures are left to the by-name search.
fn preload(path: &Path) {
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        // SAFETY: loading NVRTC runs no initialisers with preconditions.
        if let Ok(lib) = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) } {
            std::mem::forget(lib);
        }
    }
}

/// Options every generated source is compiled with (besides the architecture).
/// `--fmad=false`: no fused multiply-adds, so every float product and sum rounds on its
/// own, like kiln's CPU f32 kernels (and the g++ emulation, `-ffp-contract=off`); the
/// int8 kernels are unaffected. Division and square roots stay IEEE (NVRTC's defaults).
pub const NVRTC_OPTIONS: &[&str] = &["-default-device", "--fmad=false"];

/// Compiles CUDA C `source` to PTX for `arch` (e.g. `sm_87`) with NVRTC and
/// [`NVRTC_OPTIONS`]; `name` labels errors. Needs only libnvrtc, no GPU.
pub fn compile_ptx(source: &str, name: &str, arch: &str) -> Result<String, Error> {
    let program = NvrtcProgram::compile(source, name, arch)?;
    let ptx = program.output(
        cudarc::nvrtc::sys::nvrtcGetPTXSize,
        cudarc::nvrtc::sys::nvrtcGetPTX,
    )?;
    Ok(String::from_utf8_lossy(ptx.strip_suffix(&[0]).unwrap_or(&ptx)).into_owned())
}

/// Compiles CUDA C `source` to a CUBIN (device code, an ELF file) for the real
/// architecture `arch` (`sm_87`, `sm_90`, ...) with NVRTC and [`NVRTC_OPTIONS`]. Unlike
/// PTX, which the driver compiles again at load and refuses when the NVRTC is newer
/// than the driver, a CUBIN of the device's architecture loads as it is (within the
/// driver's CUDA major version). Needs only libnvrtc, no GPU.
pub fn compile_cubin(source: &str, name: &str, arch: &str) -> Result<Vec<u8>, Error> {
    if !arch.starts_with("sm_") {
        return Err(Error::Nvrtc {
            name: name.to_string(),
            arch: arch.to_string(),
            log: "a CUBIN needs a real architecture (sm_XY), not a virtual one".into(),
        });
    }
    NvrtcProgram::compile(source, name, arch)?.output(
        cudarc::nvrtc::sys::nvrtcGetCUBINSize,
        cudarc::nvrtc::sys::nvrtcGetCUBIN,
    )
}

/// A compiled NVRTC program (destroyed on drop), with the name and architecture its
/// errors report.
struct NvrtcProgram {
    program: cudarc::nvrtc::sys::nvrtcProgram,
    name: String,
    arch: String,
}

type NvrtcSize =
    unsafe fn(cudarc::nvrtc::sys::nvrtcProgram, *mut usize) -> cudarc::nvrtc::sys::nvrtcResult;
type NvrtcCopy = unsafe fn(
    cudarc::nvrtc::sys::nvrtcProgram,
    *mut std::ffi::c_char,
) -> cudarc::nvrtc::sys::nvrtcResult;

impl NvrtcProgram {
    /// Creates and compiles the program; a failed compile returns NVRTC's log.
    fn compile(source: &str, name: &str, arch: &str) -> Result<NvrtcProgram, Error> {
        use cudarc::nvrtc::result;
        if !nvrtc_present() {
            return Err(Error::NoNvrtc);
        }
        let fail = |log: String| Error::Nvrtc {
            name: name.to_string(),
            arch: arch.to_string(),
            log,
        };
        if arch.contains('\0') {
            return Err(fail("the architecture contains a NUL byte".into()));
        }
        let c_source = std::ffi::CString::new(source)
            .map_err(|_| fail("the source contains a NUL byte".into()))?;
        let c_name = std::ffi::CString::new(name)
            .map_err(|_| fail("the name contains a NUL byte".into()))?;
        let program = result::create_program(&c_source, Some(&c_name))
            .map_err(|e| fail(format!("creating the program: {e:?}")))?;
        let program = NvrtcProgram {
            program,
            name: name.to_string(),
            arch: arch.to_string(),
        };
        let options: Vec<String> = std::iter::once(format!("--gpu-architecture={arch}"))
            .chain(NVRTC_OPTIONS.iter().map(|o| o.to_string()))
            .collect();
        // SAFETY: `program` was created above and is destroyed only by its drop.
        if let Err(e) = unsafe { result::compile_program(program.program, &options) } {
            // SAFETY: as above.
            let log = unsafe { result::get_program_log(program.program) }
                .ok()
                .map(|raw| {
                    let bytes: Vec<u8> = raw.iter().map(|&c| c as u8).collect();
                    let text = bytes.strip_suffix(&[0]).unwrap_or(&bytes);
                    String::from_utf8_lossy(text).trim().to_string()
                })
                .filter(|log| !log.is_empty())
                .unwrap_or_else(|| format!("{e:?} (no log)"));
            return Err(fail(log));
        }
        Ok(program)
    }

    /// One of the program's outputs (PTX or CUBIN), through its size and copy functions.
    fn output(&self, size: NvrtcSize, copy: NvrtcCopy) -> Result<Vec<u8>, Error> {
        let fail = |what: &str, e: cudarc::nvrtc::sys::nvrtcResult| Error::Nvrtc {
            name: self.name.clone(),
            arch: self.arch.clone(),
            log: format!("{what}: {e:?}"),
        };
        let mut len = 0usize;
        // SAFETY: the program compiled; `len` is a valid out-pointer.
        let r = unsafe { size(self.program, &mut len) };
        if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(fail("reading the output size", r));
        }
        let mut out = vec![0u8; len];
        // SAFETY: `out` holds the `len` bytes NVRTC said it writes.
        let r = unsafe { copy(self.program, out.as_mut_ptr().cast()) };
        if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(fail("copying the output", r));
        }
        Ok(out)
    }
}

impl Drop for NvrtcProgram {
    fn drop(&mut self) {
        // SAFETY: created by `create_program`, destroyed only here.
        let _ = unsafe { cudarc::nvrtc::result::destroy_program(self.program) };
    }
}

/// A loaded model: the compiled kernels, the weights and the arena on the device.
pub struct Session {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    functions: Vec<(CudaFunction, LaunchConfig)>,
    _weights: CudaSlice<u8>,
    arena: CudaSlice<u8>,
    weights_ptr: u64,
    arena_ptr: u64,
    graph: Option<CudaGraph>,
    manifest: Manifest,
    device_allocations: usize,
    arch: String,
    /// Host buffer laid out like one port's arena region (samples at their strides), so
    /// each port moves in one copy per run.
    staging: Vec<u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("model", &self.manifest.model)
            .field("batch", &self.manifest.batch)
            .field("arch", &self.arch)
            .field("device_allocations", &self.device_allocations)
            .finish()
    }
}

/// Reads `model.manifest`, `model.cu` and `model.weights.bin` from `dir` (a generated
/// crate's `src/` folder, or the crate folder itself).
pub fn read_dir(dir: &Path) -> Result<(Manifest, String, Vec<u8>), Error> {
    let dir: PathBuf = if dir.join("model.manifest").exists() {
        dir.to_path_buf()
    } else {
        dir.join("src")
    };
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let manifest_bytes = read("model.manifest")?;
    let manifest = Manifest::parse(&String::from_utf8_lossy(&manifest_bytes))?;
    let source = String::from_utf8_lossy(&read("model.cu")?).into_owned();
    Ok((manifest, source, read("model.weights.bin")?))
}

impl Session {
    /// Loads the compiled model in `dir` (see [`read_dir`]).
    pub fn from_dir(dir: &Path, options: &LoadOptions) -> Result<Session, Error> {
        let (manifest, source, weights) = read_dir(dir)?;
        Session::load(manifest, &source, &weights, options)
    }

    /// Opens the device, compiles `source` with NVRTC, uploads `weights`, allocates the
    /// arena and (optionally) captures the CUDA Graph. The only place that allocates.
    pub fn load(
        manifest: Manifest,
        source: &str,
        weights: &[u8],
        options: &LoadOptions,
    ) -> Result<Session, Error> {
        if weights.len() != manifest.weight_bytes {
            return Err(Error::Weights(format!(
                "{} bytes, the manifest says {}",
                weights.len(),
                manifest.weight_bytes
            )));
        }
        if !driver_present() {
            return Err(Error::NoDriver);
        }
        let ctx = CudaContext::new(options.device)
            .map_err(driver(format!("opening device {}", options.device)))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("reading the compute capability"))?;
        let native = format!("sm_{major}{minor}");
        let arch = options.arch.clone().unwrap_or_else(|| native.clone());
        // A CUBIN for the device's own architecture (whichever NVRTC made it); PTX, which
        // the driver compiles for the device, for any other architecture asked for.
        let image = if arch == native {
            cudarc::nvrtc::Ptx::from_binary(compile_cubin(source, &manifest.model, &arch)?)
        } else {
            cudarc::nvrtc::Ptx::from_src(compile_ptx(source, &manifest.model, &arch)?)
        };
        let module = ctx.load_module(image).map_err(driver(format!(
            "loading the module compiled for {arch} on a {native} device"
        )))?;
        let functions = manifest
            .kernels
            .iter()
            .map(|k| {
                let f = module
                    .load_function(&k.name)
                    .map_err(driver(format!("finding kernel {}", k.name)))?;
                let cfg = LaunchConfig {
                    grid_dim: (k.grid, 1, 1),
                    block_dim: (k.block, 1, 1),
                    shared_mem_bytes: 0,
                };
                Ok((f, cfg))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // One stream of our own (the legacy default stream cannot be captured). Event
        // tracking off: kernels take raw pointers, and `run` must record nothing.
        // SAFETY: this session uses a single stream, so no cross-stream sync is needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver("creating a stream"))?;
        let mut device_allocations = 0;
        let weights_dev = alloc_upload(&stream, weights, &mut device_allocations)?;
        let arena = alloc_zeroed(&stream, manifest.arena_bytes, &mut device_allocations)?;
        let weights_ptr = {
            let (p, _sync) = weights_dev.device_ptr(&stream);
            p
        };
        let arena_ptr = {
            let (p, _sync) = arena.device_ptr(&stream);
            p
        };
        let mut session = Session {
            ctx,
            stream,
            _module: module,
            functions,
            _weights: weights_dev,
            arena,
            weights_ptr,
            arena_ptr,
            graph: None,
            manifest,
            device_allocations,
            arch,
            staging: Vec::new(),
        };
        let largest = session
            .manifest
            .inputs
            .iter()
            .chain(&session.manifest.outputs)
            .map(|p| p.stride * session.manifest.batch)
            .max()
            .unwrap_or(0);
        session.staging = vec![0; largest];
        if options.cuda_graph {
            session
                .stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(driver("starting the CUDA Graph capture"))?;
            let launched = session.launch_all();
            let graph = session
                .stream
                .end_capture(sys::CUgraphInstantiate_flags(0))
                .map_err(driver("ending the CUDA Graph capture"))?;
            launched?;
            session.graph = graph;
        }
        session
            .stream
            .synchronize()
            .map_err(driver("finishing the load"))?;
        Ok(session)
    }

    fn launch_all(&self) -> Result<(), Error> {
        for ((f, cfg), k) in self.functions.iter().zip(&self.manifest.kernels) {
            let mut b = self.stream.launch_builder(f);
            b.arg(&self.weights_ptr);
            b.arg(&self.arena_ptr);
            // SAFETY: every kernel takes (const uint8* W, uint8* A) and addresses only
            // inside the weights and arena sizes the manifest was generated with.
            unsafe { b.launch(*cfg) }.map_err(driver(format!("launching {}", k.name)))?;
        }
        Ok(())
    }

    /// Runs all `batch` samples: `inputs[i]` holds every sample of input `i` back to
    /// back (`batch * bytes`), `outputs[j]` receives every sample of output `j`.
    /// Allocates nothing on the device; waits for the GPU before returning.
    pub fn run(&mut self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) -> Result<(), Error> {
        let batch = self.manifest.batch;
        check_ports(
            "input",
            &self.manifest.inputs,
            inputs.iter().map(|x| x.len()),
            batch,
        )?;
        check_ports(
            "output",
            &self.manifest.outputs,
            outputs.iter().map(|x| x.len()),
            batch,
        )?;
        for (x, p) in inputs.iter().zip(&self.manifest.inputs) {
            let region = p.stride * batch;
            for n in 0..batch {
                self.staging[n * p.stride..n * p.stride + p.bytes]
                    .copy_from_slice(&x[n * p.bytes..(n + 1) * p.bytes]);
            }
            let mut view = self.arena.slice_mut(p.offset..p.offset + region);
            self.stream
                .memcpy_htod(&self.staging[..region], &mut view)
                .map_err(driver(format!("copying input '{}'", p.name)))?;
        }
        match &self.graph {
            Some(g) => g.launch().map_err(driver("replaying the CUDA Graph"))?,
            None => self.launch_all()?,
        }
        for (y, p) in outputs.iter_mut().zip(&self.manifest.outputs) {
            let region = p.stride * batch;
            let view = self.arena.slice(p.offset..p.offset + region);
            self.stream
                .memcpy_dtoh(&view, &mut self.staging[..region])
                .map_err(driver(format!("copying output '{}'", p.name)))?;
            // The copy must have landed before the staging buffer is read.
            self.stream
                .synchronize()
                .map_err(driver("waiting for the kernels"))?;
            for n in 0..batch {
                y[n * p.bytes..(n + 1) * p.bytes]
                    .copy_from_slice(&self.staging[n * p.stride..n * p.stride + p.bytes]);
            }
        }
        self.stream
            .synchronize()
            .map_err(driver("waiting for the kernels"))
    }

    /// Launches the kernels (or the graph) without copying inputs or outputs and waits:
    /// the device time of one batch, for benchmarks.
    pub fn run_kernels_only(&mut self) -> Result<(), Error> {
        match &self.graph {
            Some(g) => g.launch().map_err(driver("replaying the CUDA Graph"))?,
            None => self.launch_all()?,
        }
        self.stream
            .synchronize()
            .map_err(driver("waiting for the kernels"))
    }

    /// Device allocations this session has made: 2 after `load` (weights, arena), and
    /// still 2 after any number of `run`s.
    pub fn device_allocations(&self) -> usize {
        self.device_allocations
    }

    /// Free device memory in bytes (the driver's count, e.g. to check it does not move
    /// across runs).
    pub fn device_free_bytes(&self) -> Result<usize, Error> {
        self.ctx
            .mem_get_info()
            .map(|(free, _)| free)
            .map_err(driver("reading free memory"))
    }

    /// The device's name.
    pub fn device_name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "unknown device".into())
    }

    /// The NVRTC architecture the kernels were compiled for.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Whether `run` replays a CUDA Graph.
    pub fn uses_cuda_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// The model's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

fn check_ports(
    kind: &'static str,
    ports: &[Port],
    lens: impl ExactSizeIterator<Item = usize>,
    batch: usize,
) -> Result<(), Error> {
    if lens.len() != ports.len() {
        return Err(Error::Port {
            kind,
            index: lens.len().min(ports.len()),
            name: String::new(),
            message: format!(
                "{} buffers given, the model has {}",
                lens.len(),
                ports.len()
            ),
        });
    }
    for (index, (len, p)) in lens.zip(ports).enumerate() {
        if len != p.bytes * batch {
            return Err(Error::Port {
                kind,
                index,
                name: p.name.clone(),
                message: format!(
                    "{len} bytes given, expected {} ({batch} samples of {})",
                    p.bytes * batch,
                    p.bytes
                ),
            });
        }
    }
    Ok(())
}

/// The one function that allocates device memory with data (counted).
fn alloc_upload(
    stream: &Arc<CudaStream>,
    data: &[u8],
    count: &mut usize,
) -> Result<CudaSlice<u8>, Error> {
    *count += 1;
    stream
        .clone_htod(data)
        .map_err(driver(format!("uploading {} bytes of weights", data.len())))
}

/// The one function that allocates zeroed device memory (counted).
fn alloc_zeroed(
    stream: &Arc<CudaStream>,
    bytes: usize,
    count: &mut usize,
) -> Result<CudaSlice<u8>, Error> {
    *count += 1;
    stream
        .alloc_zeros::<u8>(bytes)
        .map_err(driver(format!("allocating the {bytes}-byte arena")))
}
