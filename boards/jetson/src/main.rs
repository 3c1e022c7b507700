//! kiln-jetson: runs a model compiled with `kiln compile MODEL --target cuda --out DIR`
//! on the GPU of a Jetson (or any NVIDIA GPU) and prints its classes, optionally checks
//! the outputs bit for bit against reference outputs, and measures the latency
//! distribution over many runs.
//!
//! ```text
//! kiln-jetson DIR [--input X.npy ...] [--images FOLDER] [--expect Y.npy] [--runs N]
//!             [--warmup N] [--no-graph] [--arch sm_87] [--top K] [--pixel-scale F] [--json]
//! ```
//!
//! - `DIR`: the generated crate (or its `src/`): `model.manifest`, `model.cu`,
//!   `model.weights.bin`. The kernels are compiled with NVRTC when it loads.
//! - `--input X.npy`: one per graph input, int8 (as is), float32 (quantized with the
//!   input's scale and zero point) or uint8 (pixels, see `--pixel-scale`); shape the
//!   input's or `[S, ...]` for S samples. `--images FOLDER`: binary PGM/PPM images
//!   (`P5`/`P6`) of the input's height, width and channels, sorted by name; each pixel
//!   `p` is the real value `p * pixel-scale` (default 1/255), quantized like float input.
//!   Without either, the model runs on zeros (latency only).
//! - Samples run in batches of the model's batch (the last one padded).
//! - `--expect Y.npy`: reference values of the first output `[S, ...]`, int8 (any
//!   differing byte is a mismatch) or float32 (a value more than 1e-5 relative off, with
//!   an absolute floor of 1e-8 near 0, is); any mismatch gives exit status 2.
//! - Classes: the top `--top` values of the first output (int8 dequantized, float32 as
//!   is) for the first ten samples.
//! - Latency: `--warmup` (default 20) then `--runs` (default 200) timed `run`s of one
//!   batch including the host-device copies, reported as p50/p99/mean and samples/s;
//!   the device allocation count and free device memory are read before and after.
//!
//! Exit status: 0 ok, 1 error (no GPU, no driver, bad files: one line on stderr), 2 mismatch.

mod npy;

use kiln_cuda::{LoadOptions, Port, Session};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

struct Args {
    dir: PathBuf,
    inputs: Vec<PathBuf>,
    images: Option<PathBuf>,
    expect: Option<PathBuf>,
    runs: usize,
    warmup: usize,
    graph: bool,
    arch: Option<String>,
    top: usize,
    pixel_scale: f32,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        dir: PathBuf::new(),
        inputs: Vec::new(),
        images: None,
        expect: None,
        runs: 200,
        warmup: 20,
        graph: true,
        arch: None,
        top: 3,
        pixel_scale: 1.0 / 255.0,
        json: false,
    };
    let mut dir = None;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--input" => a.inputs.push(value("--input")?.into()),
            "--images" => a.images = Some(value("--images")?.into()),
            "--expect" => a.expect = Some(value("--expect")?.into()),
            "--runs" => a.runs = value("--runs")?.parse().map_err(|_| "--runs: a number")?,
            "--warmup" => a.warmup = value("--warmup")?.parse().map_err(|_| "--warmup: a number")?,
            "--arch" => a.arch = Some(value("--arch")?),
            "--top" => a.top = value("--top")?.parse().map_err(|_| "--top: a number")?,
            "--pixel-scale" => {
                a.pixel_scale = value("--pixel-scale")?.parse().map_err(|_| "--pixel-scale: a number")?
            }
            "--no-graph" => a.graph = false,
            "--json" => a.json = true,
            "-h" | "--help" => {
                return Err("usage: kiln-jetson DIR [--input X.npy ...] [--images FOLDER] [--expect Y.npy] [--runs N] [--warmup N] [--no-graph] [--arch sm_87] [--top K] [--pixel-scale F] [--json]".into())
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s => dir = Some(PathBuf::from(s)),
        }
    }
    a.dir = dir.ok_or("missing the model folder (see --help)")?;
    a.runs = a.runs.max(1);
    Ok(a)
}

/// Quantizes a real value for an int8 port (round half away from zero, saturate).
fn quantize(x: f32, port: &Port) -> u8 {
    let (scale, zp) = port.quant.unwrap_or((1.0, 0));
    let q = (x / scale).round() as i64 + i64::from(zp);
    q.clamp(-128, 127) as i8 as u8
}

/// Per-sample bytes of one input from a `.npy` file.
fn samples_from_npy(path: &Path, port: &Port, pixel_scale: f32) -> Result<Vec<Vec<u8>>, String> {
    let a = npy::read(path)?;
    let per: usize = port.shape.iter().product::<usize>().max(1);
    let bytes: Vec<u8> = match (&a.data, port.dtype) {
        (npy::Data::I8(v), kiln_cuda::DType::I8) => v.iter().map(|&x| x as u8).collect(),
        (npy::Data::F32(v), kiln_cuda::DType::I8) => v.iter().map(|&x| quantize(x, port)).collect(),
        (npy::Data::U8(v), kiln_cuda::DType::I8) => v
            .iter()
            .map(|&p| quantize(f32::from(p) * pixel_scale, port))
            .collect(),
        (npy::Data::F32(v), kiln_cuda::DType::F32) => {
            v.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
        _ => {
            return Err(format!(
                "{}: element type does not fit input '{}'",
                path.display(),
                port.name
            ))
        }
    };
    let elements = bytes.len() / port.dtype.size();
    if elements == 0 || !elements.is_multiple_of(per) {
        return Err(format!(
            "{}: shape {:?} does not hold samples of input '{}' {:?}",
            path.display(),
            a.shape,
            port.name,
            port.shape
        ));
    }
    Ok(bytes.chunks(port.bytes).map(<[u8]>::to_vec).collect())
}

/// Per-sample bytes from a folder of binary PGM/PPM images.
fn samples_from_images(dir: &Path, port: &Port, pixel_scale: f32) -> Result<Vec<Vec<u8>>, String> {
    let (h, w, c) = match port.shape.as_slice() {
        [1, h, w, c] => (*h, *w, *c),
        [h, w, c] => (*h, *w, *c),
        other => return Err(format!("input '{}' {other:?} is not an image", port.name)),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("ppm" | "pgm" | "pnm")
            )
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no .ppm/.pgm images", dir.display()));
    }
    files
        .iter()
        .map(|f| {
            let name = f.display();
            let bytes = std::fs::read(f).map_err(|e| format!("{name}: {e}"))?;
            // Header: magic, width, height, maxval, separated by whitespace (comments skipped).
            let mut fields = Vec::new();
            let mut i = 0;
            while fields.len() < 4 && i < bytes.len() {
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'#') {
                    if bytes[i] == b'#' {
                        while i < bytes.len() && bytes[i] != b'\n' {
                            i += 1;
                        }
                    }
                    i += 1;
                }
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                fields.push(String::from_utf8_lossy(&bytes[start..i]).into_owned());
            }
            let channels = match fields.first().map(String::as_str) {
                Some("P5") => 1,
                Some("P6") => 3,
                _ => return Err(format!("{name}: not a binary PGM/PPM (P5/P6)")),
            };
            let num = |k: usize| fields.get(k).and_then(|s| s.parse::<usize>().ok());
            let (iw, ih, maxval) = (num(1), num(2), num(3));
            if (iw, ih, Some(channels)) != (Some(w), Some(h), Some(c)) || maxval != Some(255) {
                return Err(format!(
                    "{name}: {:?}x{:?}x{channels} (maxval {:?}), the model wants {w}x{h}x{c} with maxval 255",
                    iw, ih, maxval
                ));
            }
            let pixels = bytes
                .get(i + 1..i + 1 + h * w * c)
                .ok_or_else(|| format!("{name}: truncated pixels"))?;
            Ok(pixels.iter().map(|&p| quantize(f32::from(p) * pixel_scale, port)).collect())
        })
        .collect()
}

/// The real values of one sample of an output: int8 dequantized with the port's scale
/// and zero point (1 and 0 without), float32 as is, int32 converted.
fn real_values(port: &Port, bytes: &[u8]) -> Vec<f32> {
    match port.dtype {
        kiln_cuda::DType::I8 => {
            let (scale, zp) = port.quant.unwrap_or((1.0, 0));
            bytes
                .iter()
                .map(|&b| scale * (f32::from(b as i8) - zp as f32))
                .collect()
        }
        kiln_cuda::DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        kiln_cuda::DType::I32 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
    }
}

/// Relative tolerance of float32 outputs against `--expect` (issue 7: f32 models within
/// 1e-5 of the CPU); below [`F32_FLOOR`] in magnitude the difference is judged against
/// the floor instead.
const F32_REL: f32 = 1e-5;
/// See [`F32_REL`].
const F32_FLOOR: f32 = 1e-3;

/// Whether the float `got` is within [`F32_REL`] of `want` (NaN only matches NaN).
fn close(got: f32, want: f32) -> bool {
    let tolerance = F32_REL * want.abs().max(F32_FLOOR);
    got.to_bits() == want.to_bits()
        || (got.is_nan() && want.is_nan())
        || (got - want).abs() <= tolerance
}

/// Values of the output `got` (all samples of `port`) that differ from the reference
/// `want`: int8 exactly, float32 by more than [`F32_REL`]; an error when the reference
/// has another element type or length.
fn count_mismatches(want: &npy::Data, port: &Port, got: &[u8]) -> Result<usize, String> {
    match (want, port.dtype) {
        (npy::Data::I8(w), kiln_cuda::DType::I8) if w.len() == got.len() => {
            Ok(w.iter().zip(got).filter(|(&a, &b)| a as u8 != b).count())
        }
        (npy::Data::F32(w), kiln_cuda::DType::F32) if w.len() * 4 == got.len() => {
            let g = got
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            Ok(w.iter().zip(g).filter(|&(&w, g)| !close(g, w)).count())
        }
        _ => Err(format!(
            "the reference must be {} with {} values, like the first output",
            match port.dtype {
                kiln_cuda::DType::F32 => "float32",
                _ => "int8",
            },
            got.len() / port.dtype.size()
        )),
    }
}

/// One batch of every input: samples `start..start + batch` of each input's list, the
/// last sample repeated where the list ends (a partial last batch).
fn batch_inputs(per_input: &[Vec<Vec<u8>>], start: usize, batch: usize) -> Vec<Vec<u8>> {
    per_input
        .iter()
        .map(|list| {
            (0..batch)
                .flat_map(|k| list[(start + k).min(list.len() - 1)].iter().copied())
                .collect()
        })
        .collect()
}

/// Zeroed buffers for one batch of every output.
fn batch_outputs(outputs: &[Port], batch: usize) -> Vec<Vec<u8>> {
    outputs.iter().map(|p| vec![0u8; p.bytes * batch]).collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<ExitCode, String> {
    let args = parse_args()?;
    let options = LoadOptions {
        arch: args.arch.clone(),
        cuda_graph: args.graph,
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut session = Session::from_dir(&args.dir, &options).map_err(|e| e.to_string())?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let m = session.manifest().clone();
    let batch = m.batch;
    if !args.json {
        println!(
            "{} on {} ({}), batch {batch}, {} kernels{}, arena {} bytes, loaded in {load_ms:.1} ms",
            m.model,
            session.device_name(),
            session.arch(),
            m.kernels.len(),
            if session.uses_cuda_graph() {
                " as one CUDA Graph"
            } else {
                ""
            },
            m.arena_bytes
        );
    }
    // Inputs: per graph input, a list of samples.
    let mut per_input: Vec<Vec<Vec<u8>>> = Vec::new();
    if let Some(dir) = &args.images {
        if m.inputs.len() != 1 {
            return Err("--images needs a model with one input".into());
        }
        per_input.push(samples_from_images(dir, &m.inputs[0], args.pixel_scale)?);
    } else if !args.inputs.is_empty() {
        if args.inputs.len() != m.inputs.len() {
            return Err(format!(
                "{} --input files for {} inputs",
                args.inputs.len(),
                m.inputs.len()
            ));
        }
        for (path, port) in args.inputs.iter().zip(&m.inputs) {
            per_input.push(samples_from_npy(path, port, args.pixel_scale)?);
        }
    } else {
        per_input = m
            .inputs
            .iter()
            .map(|p| vec![vec![0u8; p.bytes]; batch])
            .collect();
    }
    let samples = per_input[0].len();
    if per_input.iter().any(|s| s.len() != samples) {
        return Err("the inputs hold different numbers of samples".into());
    }
    // Run every sample, batch by batch.
    let mut outputs: Vec<Vec<u8>> = m
        .outputs
        .iter()
        .map(|p| Vec::with_capacity(p.bytes * samples))
        .collect();
    let mut start = 0;
    while start < samples {
        let buffers = batch_inputs(&per_input, start, batch);
        let refs: Vec<&[u8]> = buffers.iter().map(Vec::as_slice).collect();
        let mut outs = batch_outputs(&m.outputs, batch);
        let mut out_refs: Vec<&mut [u8]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
        session
            .run(&refs, &mut out_refs)
            .map_err(|e| e.to_string())?;
        let used = batch.min(samples - start);
        for (all, (o, p)) in outputs.iter_mut().zip(outs.iter().zip(&m.outputs)) {
            all.extend_from_slice(&o[..used * p.bytes]);
        }
        start += batch;
    }
    // Classes of the first output, for the first samples.
    let out = &m.outputs[0];
    if !args.json {
        for s in 0..samples.min(10) {
            let row = real_values(out, &outputs[0][s * out.bytes..(s + 1) * out.bytes]);
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let tops: Vec<String> = idx
                .iter()
                .take(args.top)
                .map(|&i| format!("{i} ({:.3})", row[i]))
                .collect();
            println!("sample {s}: {}", tops.join(", "));
        }
    }
    let mut mismatches = 0usize;
    if let Some(path) = &args.expect {
        let e = npy::read(path)?;
        mismatches = count_mismatches(&e.data, out, &outputs[0])
            .map_err(|message| format!("{}: {message}", path.display()))?;
        if !args.json {
            let what = if out.dtype == kiln_cuda::DType::F32 {
                "within 1e-5 relative"
            } else {
                "bit-exact"
            };
            println!(
                "{what} vs {}: {} ({samples} samples, {} differing values)",
                path.display(),
                if mismatches == 0 { "PASS" } else { "FAIL" },
                mismatches
            );
        }
    }
    // Latency of one batch, copies included; then kernels only.
    let buffers = batch_inputs(&per_input, 0, batch);
    let refs: Vec<&[u8]> = buffers.iter().map(Vec::as_slice).collect();
    let mut outs = batch_outputs(&m.outputs, batch);
    let allocs_before = session.device_allocations();
    let free_before = session.device_free_bytes().map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(args.runs);
    for i in 0..args.warmup + args.runs {
        let mut out_refs: Vec<&mut [u8]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
        let t = Instant::now();
        session
            .run(&refs, &mut out_refs)
            .map_err(|e| e.to_string())?;
        if i >= args.warmup {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let mut kernel_times = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let t = Instant::now();
        session.run_kernels_only().map_err(|e| e.to_string())?;
        kernel_times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let allocs_after = session.device_allocations();
    let free_after = session.device_free_bytes().map_err(|e| e.to_string())?;
    times.sort_by(f64::total_cmp);
    kernel_times.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&times, 50.0), percentile(&times, 99.0));
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let kp50 = percentile(&kernel_times, 50.0);
    let throughput = batch as f64 / (p50 / 1e6);
    if args.json {
        println!(
            "{{\"model\": \"{}\", \"device\": \"{}\", \"arch\": \"{}\", \"batch\": {batch}, \"cuda_graph\": {}, \"samples\": {samples}, \"mismatches\": {mismatches}, \"runs\": {}, \"p50_us\": {p50:.1}, \"p99_us\": {p99:.1}, \"mean_us\": {mean:.1}, \"kernels_p50_us\": {kp50:.1}, \"samples_per_s\": {throughput:.0}, \"device_allocations_before_runs\": {allocs_before}, \"device_allocations_after_runs\": {allocs_after}, \"free_bytes_before\": {free_before}, \"free_bytes_after\": {free_after}, \"load_ms\": {load_ms:.1}}}",
            m.model.replace('"', "'"),
            session.device_name().replace('"', "'"),
            session.arch(),
            session.uses_cuda_graph(),
            args.runs
        );
    } else {
        println!(
            "latency of one batch of {batch} over {} runs (after {} warm-up), copies included: p50 {p50:.1} us, p99 {p99:.1} us, mean {mean:.1} us; kernels only p50 {kp50:.1} us; {throughput:.0} samples/s",
            args.runs, args.warmup
        );
        println!(
            "device allocations: {allocs_before} after load, {allocs_after} after {} runs; free device memory {free_before} -> {free_after} bytes",
            args.warmup + 2 * args.runs
        );
    }
    if allocs_after != allocs_before {
        return Err("the session allocated device memory during run".into());
    }
    Ok(if mismatches == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(dtype: kiln_cuda::DType, quant: Option<(f32, i32)>) -> Port {
        Port {
            name: "y".into(),
            dtype,
            shape: vec![3],
            offset: 0,
            stride: 16,
            bytes: 3 * dtype.size(),
            quant,
        }
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn float_outputs_compare_within_1e_5_relative() {
        let p = port(kiln_cuda::DType::F32, None);
        let want = npy::Data::F32(vec![1000.0, 1e-9, -2.0]);
        let close = f32_bytes(&[1000.009, 2e-9, -2.0]);
        assert_eq!(count_mismatches(&want, &p, &close), Ok(0));
        let far = f32_bytes(&[1000.02, 1e-7, f32::NAN]);
        assert_eq!(count_mismatches(&want, &p, &far), Ok(3));
        let int8 = npy::Data::I8(vec![1, 2, 3]);
        assert!(count_mismatches(&int8, &p, &close)
            .unwrap_err()
            .contains("float32"));
    }

    #[test]
    fn int8_outputs_compare_exactly_and_dequantize_for_the_classes() {
        let p = port(kiln_cuda::DType::I8, Some((0.5, -1)));
        let want = npy::Data::I8(vec![-1, 0, 5]);
        assert_eq!(count_mismatches(&want, &p, &[255, 0, 5]), Ok(0));
        assert_eq!(count_mismatches(&want, &p, &[255, 1, 5]), Ok(1));
        assert_eq!(real_values(&p, &[255, 0, 5]), vec![0.0, 0.5, 3.0]);
        let f = port(kiln_cuda::DType::F32, None);
        assert_eq!(
            real_values(&f, &f32_bytes(&[1.5, -2.0, 0.0])),
            vec![1.5, -2.0, 0.0]
        );
    }
}
