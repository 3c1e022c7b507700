//! How close an int8 graph is to its float original: per-tensor SQNR, output error and
//! top-1 agreement, from running both graphs on the same samples.

use super::{quantize_input, QuantizeError, Sample};
use crate::exec::{Executor, TensorData};
use crate::ir::{Graph, Op, TensorId, TensorInfo};
use crate::passes::single_private_use;
use std::fmt;

/// One activation tensor of the int8 graph next to its float twin.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRow {
    /// Index of the int8 node producing the tensor; `None` for a graph input.
    pub node: Option<usize>,
    /// Operator name (`input` for graph inputs).
    pub op: &'static str,
    /// The clamp op (`relu`, `relu6`, `clip`) that reads this tensor alone and whose
    /// range the quantizer gave it (TFLite fuses such a clamp into the producer):
    /// the float values are compared after that clamp.
    pub clamped_by: Option<&'static str>,
    /// Tensor name.
    pub name: String,
    /// The tensor (the same id in both graphs).
    pub tensor: TensorId,
    /// Smallest float value seen (after `clamped_by`).
    pub float_min: f32,
    /// Largest float value seen.
    pub float_max: f32,
    /// int8 scale.
    pub scale: f32,
    /// int8 zero point.
    pub zero_point: i32,
    /// Signal-to-quantization-noise ratio in dB: `10 log10(Σ f² / Σ (f - dq)²)` over
    /// every element of every sample (`inf` when identical). The noise accumulates
    /// through the int8 graph, as on the device.
    pub sqnr_db: f64,
}

/// One graph output of the int8 graph next to the float output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRow {
    /// Graph output index.
    pub index: usize,
    /// Tensor name.
    pub name: String,
    /// SQNR of the dequantized output, in dB.
    pub sqnr_db: f64,
    /// Mean `|float - dequantized int8|` over all elements and samples.
    pub mean_abs_diff: f64,
    /// Largest `|float - dequantized int8|`.
    pub max_abs_diff: f64,
    /// For outputs whose last axis has 2 or more classes: rows whose arg-max class is
    /// the same in both graphs, and rows compared.
    pub top1: Option<(usize, usize)>,
}

/// Per-layer and output comparison of a float graph and its int8 quantization.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantReport {
    /// Samples both graphs ran.
    pub samples: usize,
    /// Graph inputs, then each int8 node's result that has a float twin, in node order.
    pub layers: Vec<LayerRow>,
    /// Every graph output.
    pub outputs: Vec<OutputRow>,
}

impl QuantReport {
    /// Fraction of rows whose top-1 class agrees, over every classifier output.
    pub fn top1_agreement(&self) -> Option<f64> {
        let (agree, of) = self
            .outputs
            .iter()
            .filter_map(|o| o.top1)
            .fold((0, 0), |(a, n), (x, y)| (a + x, n + y));
        (of > 0).then(|| agree as f64 / of as f64)
    }
}

#[derive(Default, Clone)]
struct Acc {
    signal: f64,
    noise: f64,
    abs: f64,
    max_abs: f64,
    count: u64,
    min: f32,
    max: f32,
    agree: usize,
    rows: usize,
}

impl Acc {
    fn new() -> Self {
        Acc {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            ..Default::default()
        }
    }

    fn add(&mut self, float: &[f32], quant: &[f32]) {
        for (&f, &q) in float.iter().zip(quant) {
            let d = f64::from(f) - f64::from(q);
            self.signal += f64::from(f) * f64::from(f);
            self.noise += d * d;
            self.abs += d.abs();
            self.max_abs = self.max_abs.max(d.abs());
            self.min = self.min.min(f);
            self.max = self.max.max(f);
        }
        self.count += float.len() as u64;
    }

    fn sqnr(&self) -> f64 {
        if self.noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.noise).log10()
        }
    }
}

/// The clamp `(op, lo, hi)` that reads `id` alone in the int8 graph and shares its
/// quantization (the quantizer's `Rule::Clamp`).
fn folded_clamp(int8: &Graph, id: TensorId) -> Option<(&'static str, f32, f32)> {
    let reader = single_private_use(int8, id)?;
    let node = &int8.nodes[reader.0];
    let (lo, hi) = match node.op {
        Op::Relu => (0.0, f32::INFINITY),
        Op::Relu6 => (0.0, 6.0),
        Op::Clip { min, max } => (min, max),
        _ => return None,
    };
    let q = &int8.info(id).quant;
    (q.is_some() && *q == int8.info(node.outputs[0]).quant).then_some((node.op.name(), lo, hi))
}

/// Real values of an executor result.
fn real(info: &TensorInfo, data: &TensorData) -> Vec<f32> {
    match (data, info.scale_zero_point()) {
        (TensorData::I8(v), Some((s, z))) => v
            .iter()
            .map(|&q| super::params::dequantize(q, s, z))
            .collect(),
        (TensorData::F32(v), _) => v.clone(),
        (d, _) => d.to_f64().into_iter().map(|x| x as f32).collect(),
    }
}

/// Index of the first largest value in each row of `classes` values.
fn argmax_rows(values: &[f32], classes: usize) -> Vec<usize> {
    values
        .chunks_exact(classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0
        })
        .collect()
}

/// Runs `float` and its quantization `int8` (same tensor ids, see
/// [`super::quantize_with`]) on `samples` (float values for the float graph's inputs;
/// the int8 graph gets them quantized) and compares every tensor both have.
pub fn report(
    float: &Graph,
    int8: &Graph,
    samples: &[Sample],
) -> Result<QuantReport, QuantizeError> {
    if samples.is_empty() {
        return Err(QuantizeError::Calibration(
            "no samples to compare on".into(),
        ));
    }
    // The quantizer splits fused residuals out of an optimized graph; the same split
    // gives their conv results the same new ids here, so they are compared too.
    let float = &*super::transform::unfuse_residuals(float);
    let fexec = Executor::new(float)?;
    let qexec = Executor::new(int8)?;
    let twin = |id: TensorId| id.0 < float.tensors.len() && float.tensors[id.0].data.is_none();
    let clamps: Vec<Option<(&'static str, f32, f32)>> = int8
        .nodes
        .iter()
        .map(|n| folded_clamp(int8, n.outputs[0]))
        .collect();
    let mut inputs: Vec<Acc> = vec![Acc::new(); int8.inputs.len()];
    let mut layers: Vec<Acc> = vec![Acc::new(); int8.nodes.len()];
    let mut outputs: Vec<Acc> = vec![Acc::new(); int8.outputs.len()];
    for (s, sample) in samples.iter().enumerate() {
        let mut values: Vec<Option<Vec<f32>>> = vec![None; float.tensors.len()];
        for (id, v) in float.inputs.iter().zip(sample) {
            values[id.0] = v.as_f32().map(<[f32]>::to_vec);
        }
        let fouts = fexec
            .run_observed(sample, &mut |_, node, result| {
                values[node.outputs[0].0] = result.as_f32().map(<[f32]>::to_vec);
            })
            .map_err(|e| QuantizeError::Calibration(format!("sample {s}: {e}")))?;
        let qin: Vec<TensorData> = sample
            .iter()
            .enumerate()
            .map(|(i, v)| quantize_input(int8, i, v))
            .collect();
        for (i, (id, v)) in int8.inputs.iter().zip(&qin).enumerate() {
            if let Some(f) = values.get(id.0).and_then(Option::as_ref) {
                inputs[i].add(f, &real(int8.info(*id), v));
            }
        }
        let qouts = qexec
            .run_observed(&qin, &mut |i, node, result| {
                let id = node.outputs[0];
                if let Some(f) = twin(id).then(|| values[id.0].as_ref()).flatten() {
                    let q = real(int8.info(id), result);
                    match clamps[i] {
                        Some((_, lo, hi)) => {
                            let f: Vec<f32> = f.iter().map(|v| v.max(lo).min(hi)).collect();
                            layers[i].add(&f, &q);
                        }
                        None => layers[i].add(f, &q),
                    }
                }
            })
            .map_err(|e| QuantizeError::Calibration(format!("sample {s}: {e}")))?;
        for (j, (f, q)) in fouts.iter().zip(&qouts).enumerate() {
            let info = int8.info(int8.outputs[j]);
            let (f, q) = (real(float.info(float.outputs[j]), f), real(info, q));
            outputs[j].add(&f, &q);
            let classes = info.shape.last().copied().unwrap_or(0);
            if classes >= 2 && info.shape.len() <= 2 {
                let (a, b) = (argmax_rows(&f, classes), argmax_rows(&q, classes));
                outputs[j].agree += a.iter().zip(&b).filter(|(x, y)| x == y).count();
                outputs[j].rows += a.len();
            }
        }
    }
    let row = |node: Option<usize>, op: &'static str, id: TensorId, a: &Acc| {
        let clamped_by = node.and_then(|i| clamps[i]).map(|c| c.0);
        let (scale, zero_point) = int8.info(id).scale_zero_point().unwrap_or((1.0, 0));
        LayerRow {
            node,
            op,
            clamped_by,
            name: int8.tensor(id).name.clone(),
            tensor: id,
            float_min: a.min,
            float_max: a.max,
            scale,
            zero_point,
            sqnr_db: a.sqnr(),
        }
    };
    let mut rows: Vec<LayerRow> = int8
        .inputs
        .iter()
        .zip(&inputs)
        .filter(|(_, a)| a.count > 0)
        .map(|(id, a)| row(None, "input", *id, a))
        .collect();
    rows.extend(
        int8.nodes
            .iter()
            .zip(&layers)
            .enumerate()
            .filter(|(_, (_, a))| a.count > 0)
            .map(|(i, (n, a))| row(Some(i), n.op.name(), n.outputs[0], a)),
    );
    let outputs = outputs
        .iter()
        .enumerate()
        .map(|(j, a)| OutputRow {
            index: j,
            name: int8.tensor(int8.outputs[j]).name.clone(),
            sqnr_db: a.sqnr(),
            mean_abs_diff: if a.count > 0 {
                a.abs / a.count as f64
            } else {
                0.0
            },
            max_abs_diff: a.max_abs,
            top1: (a.rows > 0).then_some((a.agree, a.rows)),
        })
        .collect();
    Ok(QuantReport {
        samples: samples.len(),
        layers: rows,
        outputs,
    })
}

fn short(name: &str, n: usize) -> String {
    if name.chars().count() <= n {
        name.to_string()
    } else {
        let tail: String = name
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}

impl fmt::Display for QuantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>5} {:<18} {:<40} {:>24} {:>12} {:>5} {:>8}",
            "node", "op", "tensor", "float range", "scale", "zp", "SQNR dB"
        )?;
        for r in &self.layers {
            let node = r.node.map_or_else(|| "-".to_string(), |n| n.to_string());
            let range = format!("[{:.4}, {:.4}]", r.float_min, r.float_max);
            let op = match r.clamped_by {
                Some(c) => format!("{}+{c}", r.op),
                None => r.op.to_string(),
            };
            writeln!(
                f,
                "{node:>5} {op:<18} {:<40} {range:>24} {:>12.6e} {:>5} {:>8.2}",
                short(&r.name, 40),
                r.scale,
                r.zero_point,
                r.sqnr_db
            )?;
        }
        for o in &self.outputs {
            write!(
                f,
                "output {} '{}': SQNR {:.2} dB, mean |float - int8| {:.6}, max {:.6}",
                o.index,
                short(&o.name, 40),
                o.sqnr_db,
                o.mean_abs_diff,
                o.max_abs_diff
            )?;
            if let Some((agree, of)) = o.top1 {
                write!(
                    f,
                    ", top-1 agreement {agree}/{of} ({:.2}%)",
                    100.0 * agree as f64 / of as f64
                )?;
            }
            writeln!(f)?;
        }
        write!(f, "{} sample(s)", self.samples)
    }
}
