//! `kiln run MODEL --input X.npy`: runs a model on the host with kiln's kernels, prints
//! the results (top-5 for classifiers, raw int8 next to dequantized values), and can
//! save outputs, compare them with expected ones, or dump every intermediate tensor.

use anyhow::{bail, Context};
use kiln_codegen::exec::{compare, Executor, TensorData};
use kiln_codegen::ir::{DType, Graph, TensorId, TensorInfo};
use kiln_codegen::npy;
use kiln_runtime::kernels::reference::quantize::{quantize_f32_to_i8, QuantizeParams};
use kiln_runtime::quant::TensorQuant;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `kiln run`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file: .tflite, .onnx, or a kiln-train model file (.toml) with
    /// --weights (built directly from the model file and its trained weights).
    model: PathBuf,
    /// Input .npy, one per model input, in order. Its shape is the model input's shape,
    /// or that shape with a leading sample axis [N, ...] to run N samples. float32 data
    /// for an int8 input is quantized with the input's scale and zero point.
    #[arg(long, required = true)]
    input: Vec<PathBuf>,
    /// Write the model's first output to this .npy ([N, ...] when N samples ran).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Compare the first output with this .npy (same layout as --output): exact for
    /// integers, within 1e-5 + 1e-4 x |expected| for floats. Exit status 2 on a mismatch.
    #[arg(long)]
    expect: Option<PathBuf>,
    /// Write every intermediate tensor of the first sample as .npy into this folder,
    /// named `<node index>_<op>_<node name>.npy`, plus `index.txt` with their
    /// shapes and quantization.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// How many classes to list for a classifier output.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Print at most this many samples' results.
    #[arg(long, default_value_t = 3)]
    show: usize,
    #[command(flatten)]
    quantizing: crate::quantize::Quantizing,
}

/// Runs the model on every sample and reports.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let graph = args.quantizing.load(&args.model)?;
    if args.input.len() != graph.inputs.len() {
        bail!(
            "{}: the model has {} input(s), {} --input file(s) given",
            args.model.display(),
            graph.inputs.len(),
            args.input.len()
        );
    }
    let exec = Executor::new(&graph).with_context(|| args.model.display().to_string())?;
    let batches: Vec<Batch> = args
        .input
        .iter()
        .zip(&graph.inputs)
        .map(|(path, id)| Batch::load(path, graph.info(*id)))
        .collect::<anyhow::Result<_>>()?;
    let samples = batches[0].samples;
    if let Some(b) = batches.iter().find(|b| b.samples != samples) {
        bail!(
            "{}: {} samples, the first input has {samples}",
            b.path.display(),
            b.samples
        );
    }

    let mut first_outputs = Vec::new();
    for s in 0..samples {
        let inputs: Vec<TensorData> = batches.iter().map(|b| b.sample(s)).collect();
        let outputs = match args.dump.as_deref() {
            Some(dir) if s == 0 => dump_run(&exec, &graph, &inputs, dir)?,
            _ => exec.run(&inputs)?,
        };
        if s < args.show {
            print_sample(&graph, s, samples, &outputs, args.top);
        }
        first_outputs.push(
            outputs
                .into_iter()
                .next()
                .context("the model has no outputs")?,
        );
    }
    if samples > args.show {
        println!(
            "({} more samples not shown; --show N prints more)",
            samples - args.show
        );
    }

    let out_info = graph.info(graph.outputs[0]);
    let stacked = stack(&first_outputs);
    let stacked_shape = batch_shape(&out_info.shape, samples, batches[0].batched);
    if let Some(path) = &args.output {
        npy::write(path, &stacked_shape, &stacked)?;
        println!(
            "wrote {} {:?} to {}",
            stacked.dtype().name(),
            stacked_shape,
            path.display()
        );
    }
    if let Some(path) = &args.expect {
        let want = npy::read(path)?;
        if want.data.len() != stacked.len() || want.data.dtype() != stacked.dtype() {
            bail!(
                "{}: {} x {}, the model produced {} x {}",
                path.display(),
                want.data.len(),
                want.data.dtype().name(),
                stacked.len(),
                stacked.dtype().name()
            );
        }
        let per = out_info.num_elements();
        let mut differing = 0;
        for s in 0..samples {
            let (got, exp) = (stacked.slice(s * per, per), want.data.slice(s * per, per));
            if let Some(diff) = compare(&got, &exp) {
                differing += 1;
                println!("sample {s}: {diff}");
            }
        }
        let exact = if stacked.dtype() == DType::F32 {
            "within tolerance"
        } else {
            "bit-exact"
        };
        println!(
            "{exact}: {}/{samples} samples match {}",
            samples - differing,
            path.display()
        );
        if differing > 0 {
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One `--input` file, split into samples.
struct Batch {
    path: PathBuf,
    data: TensorData,
    samples: usize,
    per_sample: usize,
    /// The file had a leading sample axis.
    batched: bool,
}

impl Batch {
    fn load(path: &Path, info: &TensorInfo) -> anyhow::Result<Batch> {
        let array = npy::read(path)?;
        let per_sample = info.num_elements();
        let batched = if array.shape == info.shape {
            false
        } else if array.shape.len() == info.shape.len() + 1 && array.shape[1..] == info.shape[..] {
            true
        } else {
            bail!(
                "{}: shape {:?} does not match the model input {:?} (or [N, ...] of it)",
                path.display(),
                array.shape,
                info.shape
            );
        };
        let samples = if batched { array.shape[0] } else { 1 };
        if samples == 0 {
            bail!("{}: holds no samples", path.display());
        }
        let data = convert_input(array.data, info).with_context(|| path.display().to_string())?;
        Ok(Batch {
            path: path.to_path_buf(),
            data,
            samples,
            per_sample,
            batched,
        })
    }

    fn sample(&self, s: usize) -> TensorData {
        self.data.slice(s * self.per_sample, self.per_sample)
    }
}

/// Accepts the input's own dtype, or float32 for an int8 input (quantized with the
/// runtime's QUANTIZE kernel, so exactly as a QUANTIZE node would).
pub(crate) fn convert_input(data: TensorData, info: &TensorInfo) -> anyhow::Result<TensorData> {
    match (&data, info.dtype, info.scale_zero_point()) {
        (d, want, _) if d.dtype() == want => Ok(data),
        (TensorData::F32(v), DType::I8, Some((scale, zp))) => {
            let params = QuantizeParams::prepare(TensorQuant::new(scale, zp))
                .map_err(|e| anyhow::anyhow!("input quantization: {e}"))?;
            let mut q = vec![0i8; v.len()];
            quantize_f32_to_i8(&params, v, &mut q);
            Ok(TensorData::I8(q))
        }
        (d, want, _) => bail!(
            "holds {}, the model input is {}",
            d.dtype().name(),
            want.name()
        ),
    }
}

fn batch_shape(shape: &[usize], samples: usize, batched: bool) -> Vec<usize> {
    if batched {
        std::iter::once(samples)
            .chain(shape.iter().copied())
            .collect()
    } else {
        shape.to_vec()
    }
}

fn stack(parts: &[TensorData]) -> TensorData {
    let mut f = Vec::new();
    let mut i8s = Vec::new();
    let mut i32s = Vec::new();
    let mut i64s = Vec::new();
    for p in parts {
        match p {
            TensorData::F32(v) => f.extend_from_slice(v),
            TensorData::I8(v) => i8s.extend_from_slice(v),
            TensorData::I32(v) => i32s.extend_from_slice(v),
            TensorData::I64(v) => i64s.extend_from_slice(v),
        }
    }
    match parts.first().map(TensorData::dtype) {
        Some(DType::I8) => TensorData::I8(i8s),
        Some(DType::I32) => TensorData::I32(i32s),
        Some(DType::I64) => TensorData::I64(i64s),
        _ => TensorData::F32(f),
    }
}

fn dequantize(info: &TensorInfo, raw: f64) -> Option<f64> {
    info.scale_zero_point()
        .map(|(s, z)| f64::from(s) * (raw - f64::from(z)))
}

pub(crate) fn print_sample(
    graph: &Graph,
    s: usize,
    samples: usize,
    outputs: &[TensorData],
    top: usize,
) {
    for (j, (out, id)) in outputs.iter().zip(&graph.outputs).enumerate() {
        let info = graph.info(*id);
        let label = if samples > 1 {
            format!("sample {s} ")
        } else {
            String::new()
        };
        println!(
            "{label}output {j} '{}' {} {:?}:",
            graph.tensor(*id).name,
            info.dtype.name(),
            info.shape
        );
        let values = out.to_f64();
        let value = |i: usize| match dequantize(info, values[i]) {
            Some(real) => format!("{:>4} (real {real:.6})", values[i]),
            None => format!("{:.6}", values[i]),
        };
        let classes = info.shape.last().copied().unwrap_or(0);
        if is_classifier(info) {
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
            for (rank, &c) in order.iter().take(top).enumerate() {
                println!("  top-{} class {c:>4}: {}", rank + 1, value(c));
            }
        } else {
            for i in 0..values.len().min(16) {
                println!("  [{i}] {}", value(i));
            }
            if values.len() > 16 {
                println!("  ... {} values in all", values.len());
            }
        }
    }
}

/// A `[1, classes]` or `[classes]` output with at least two classes.
fn is_classifier(info: &TensorInfo) -> bool {
    let n = info.num_elements();
    n >= 2 && info.shape.last() == Some(&n)
}

fn dump_run(
    exec: &Executor,
    graph: &Graph,
    inputs: &[TensorData],
    dir: &Path,
) -> anyhow::Result<Vec<TensorData>> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut index = String::from("# file\top\tdtype\tshape\tscale\tzero_point\n");
    let mut record =
        |file: String, op: &str, id: TensorId, data: &TensorData| -> anyhow::Result<()> {
            let info = graph.info(id);
            npy::write(&dir.join(&file), &info.shape, data)?;
            let (scale, zp) = info
                .scale_zero_point()
                .map_or(("-".into(), "-".into()), |(s, z)| {
                    (s.to_string(), z.to_string())
                });
            index.push_str(&format!(
                "{file}\t{op}\t{}\t{:?}\t{scale}\t{zp}\n",
                info.dtype.name(),
                info.shape
            ));
            Ok(())
        };
    for (i, (id, data)) in graph.inputs.iter().zip(inputs).enumerate() {
        record(format!("input_{i}.npy"), "input", *id, data)?;
    }
    let mut failure = None;
    let outputs = exec.run_observed(inputs, &mut |node_index, node, data| {
        let file = format!(
            "{node_index:03}_{}_{}.npy",
            node.op.name(),
            file_safe(&node.name)
        );
        if let Err(e) = record(file, node.op.name(), node.outputs[0], data) {
            failure.get_or_insert(e);
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    std::fs::write(dir.join("index.txt"), index)
        .with_context(|| format!("{}: cannot write index.txt", dir.display()))?;
    println!(
        "dumped {} tensors to {}",
        graph.nodes.len() + inputs.len(),
        dir.display()
    );
    Ok(outputs)
}

/// Keeps letters, digits, `-` and `_`; everything else becomes `_`, at most 80 chars.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect()
}
