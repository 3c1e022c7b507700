//! Compiles a generated `model.cu` to a CUBIN file with NVRTC, exactly as
//! `Session::load` does, for looking at the device code without a GPU
//! (`nvdisasm -c model.cubin`; `scripts/gpu/sass-stats.sh` counts instructions per kernel).
//!
//! `cargo run -p kiln-cuda --example cubin -- MODEL.cu ARCH OUT.cubin` (ARCH: `sm_87`,
//! `sm_90`, ...; libnvrtc from `$KILN_NVRTC` or the loader path).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, arch, out] = args.as_slice() else {
        eprintln!("usage: cubin MODEL.cu ARCH OUT.cubin");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(source) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {source}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match kiln_cuda::compile_cubin(&text, source, arch) {
        Ok(cubin) => match std::fs::write(out, cubin) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {out}: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
