//! Post-training quantization end to end: the float ResNet-8 (CIFAR-10) calibrated on
//! its golden inputs against its float self and against the shipped int8 model, and
//! every float single-op model against its float outputs.

use kiln_codegen::compile::{optimize_and_plan, CompileOptions};
use kiln_codegen::exec::{check, Executor, TensorData};
use kiln_codegen::import::tflite;
use kiln_codegen::ir::Graph;
use kiln_codegen::quantize::{self, data, quantize_input, Calibration, QuantizeOptions, Sample};
use kiln_tests::{models_dir, Golden};
use std::time::Instant;

/// Dequantized (or float) values of a graph output.
fn real(graph: &Graph, output: usize, data: &TensorData) -> Vec<f32> {
    let info = graph.info(graph.outputs[output]);
    match (data, info.scale_zero_point()) {
        (TensorData::I8(v), Some((s, z))) => {
            v.iter().map(|&q| s * (i32::from(q) - z) as f32).collect()
        }
        (TensorData::F32(v), _) => v.clone(),
        _ => panic!("unexpected output type"),
    }
}

/// First output of `graph` on each sample (float samples, quantized for int8 inputs).
fn outputs(graph: &Graph, samples: &[Sample]) -> Vec<Vec<f32>> {
    let exec = Executor::new(graph).unwrap();
    samples
        .iter()
        .map(|s| {
            let q: Vec<TensorData> = (0..s.len())
                .map(|i| quantize_input(graph, i, &s[i]))
                .collect();
            real(graph, 0, &exec.run(&q).unwrap()[0])
        })
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// (top-1 agreement, mean |a - b|) over samples.
fn agreement(a: &[Vec<f32>], b: &[Vec<f32>]) -> (usize, f64) {
    let agree = a
        .iter()
        .zip(b)
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    let (sum, n) = a
        .iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y))
        .fold((0.0, 0), |(s, n), (x, y)| {
            (s + f64::from((x - y).abs()), n + 1)
        });
    (agree, sum / n as f64)
}

#[test]
fn resnet8_quantized_agrees_with_float_and_the_shipped_int8_model() {
    let dir = models_dir();
    let float = tflite::load(&dir.join("pretrainedResnet/model.tflite")).unwrap();
    let shipped = tflite::load(&dir.join("pretrainedResnet_quant/model.tflite")).unwrap();
    let input = dir.join("pretrainedResnet/golden/input_0.npy");
    let samples = data::load_for_graph(&[input], &float, &data::DataOptions::default()).unwrap();
    assert_eq!(samples.len(), 20);
    let float_out = outputs(&float, &samples);
    let shipped_out = outputs(&shipped, &samples);
    let (shipped_vs_float, shipped_diff) = agreement(&shipped_out, &float_out);
    println!("shipped int8 vs float: top-1 {shipped_vs_float}/20 (mean |diff| {shipped_diff:.5})");
    let shipped_plan =
        optimize_and_plan(shipped.clone(), &CompileOptions::default(), "shipped").unwrap();

    for calibration in [
        Calibration::MinMax,
        Calibration::Percentile(99.99),
        Calibration::Mse,
    ] {
        let options = QuantizeOptions {
            calibration,
            ..Default::default()
        };
        let start = Instant::now();
        let int8 = quantize::quantize(&float, &samples, &options).unwrap();
        let took = start.elapsed();
        assert!(check(&int8).unwrap().is_empty());
        // Same structure and tensor ids as the float graph, int8 in and out, with the
        // shipped model's input parameters (raw pixels [0, 255]: scale 1, zero point -128).
        assert_eq!(
            (int8.nodes.len(), int8.tensors.len()),
            (float.nodes.len(), float.tensors.len())
        );
        let (s, z) = int8.info(int8.inputs[0]).scale_zero_point().unwrap();
        assert!((s - 1.0).abs() < 0.01 && z == -128, "{s} {z}");
        assert_eq!(
            int8.info(int8.outputs[0]).scale_zero_point(),
            Some((1.0 / 256.0, -128))
        );

        let report = quantize::report(&float, &int8, &samples).unwrap();
        let ours = outputs(&int8, &samples);
        let (vs_float, diff_float) = agreement(&ours, &float_out);
        let (vs_shipped, diff_shipped) = agreement(&ours, &shipped_out);
        println!("{calibration} (quantized in {took:.2?}):\n{report}");
        println!(
            "{calibration}: top-1 vs float {vs_float}/20 (mean |diff| {diff_float:.5}), \
             vs shipped int8 {vs_shipped}/20 (mean |diff| {diff_shipped:.5})"
        );
        assert_eq!(report.top1_agreement(), Some(vs_float as f64 / 20.0));
        assert!(
            vs_float >= 19,
            "{calibration}: top-1 agreement with float {vs_float}/20"
        );
        assert!(
            vs_shipped >= 18,
            "{calibration}: top-1 agreement with shipped {vs_shipped}/20"
        );
        assert!(diff_float < 0.02, "{calibration}: {diff_float}");
        assert!(diff_shipped < 0.03, "{calibration}: {diff_shipped}");
        assert!(report.outputs[0].sqnr_db > 20.0, "{report}");
        // Activation scales next to the shipped model's (same nodes in the same order;
        // it was calibrated on CIFAR-10 images, ours on the uniform golden inputs).
        let ratios: Vec<String> = int8
            .nodes
            .iter()
            .zip(&shipped.nodes)
            .map(|(a, b)| {
                let (sa, _) = int8.info(a.outputs[0]).scale_zero_point().unwrap();
                let (sb, _) = shipped.info(b.outputs[0]).scale_zero_point().unwrap();
                assert_eq!(a.op.name(), b.op.name());
                assert!((0.25..4.0).contains(&(sa / sb)), "{}: {sa} vs {sb}", a.name);
                format!("{:.2}", sa / sb)
            })
            .collect();
        println!(
            "{calibration}: output scale / shipped scale per node: {}",
            ratios.join(" ")
        );

        // Compiles through the same path as the shipped model: the same fusions, the
        // same arena, and the optimized graph computes the same integers.
        let planned = optimize_and_plan(int8.clone(), &CompileOptions::default(), "ours").unwrap();
        assert_eq!(planned.passes, shipped_plan.passes, "{calibration}");
        assert_eq!(planned.plan.arena_bytes, shipped_plan.plan.arena_bytes);
        assert_eq!(outputs(&planned.graph, &samples), ours);
    }
}

/// Every `models/ops/*_f32_*` model quantized on its golden inputs, compared with float
/// in steps of the int8 output's scale: the output's own rounding is half a step, the
/// inputs' and weights' rounding carried through adds the rest.
#[test]
fn float_single_op_models_quantize_within_their_quantization_steps() {
    let ops = models_dir().join("ops");
    let mut names: Vec<String> = std::fs::read_dir(&ops)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.contains("_f32_") && !n.starts_with("dequantize") && !n.starts_with("quantize")
        })
        .collect();
    names.sort();
    assert!(names.len() >= 20, "{names:?}");
    let mut quantized = 0;
    let mut failures = Vec::new();
    for name in &names {
        let dir = ops.join(name);
        let float = tflite::load(&dir.join("model.tflite")).unwrap();
        let golden = Golden::load(&dir);
        let samples: Vec<Sample> = (0..golden.samples())
            .map(|s| Golden::sample(&golden.inputs, s))
            .collect();
        let int8 = match quantize::quantize(&float, &samples, &QuantizeOptions::default()) {
            Ok(g) => g,
            Err(e) => panic!("{name}: {e}"),
        };
        assert!(check(&int8).unwrap().is_empty(), "{name}");
        // The int8 inputs' real values: the float model run on them leaves out the
        // inputs' rounding, which DIV magnifies without bound near a zero divisor.
        let rounded: Vec<Sample> = samples
            .iter()
            .map(|s| {
                (0..s.len())
                    .map(|i| {
                        let info = int8.info(int8.inputs[i]);
                        let (scale, zp) = info.scale_zero_point().unwrap();
                        let q = quantize_input(&int8, i, &s[i]);
                        let q = q.as_i8().unwrap();
                        TensorData::F32(
                            q.iter()
                                .map(|&v| scale * (i32::from(v) - zp) as f32)
                                .collect(),
                        )
                    })
                    .collect()
            })
            .collect();
        let q = outputs(&int8, &samples);
        let (s_out, z_out) = int8.info(int8.outputs[0]).scale_zero_point().unwrap();
        // Compared with the float result clamped to what the int8 output can represent:
        // with its own calibration data nothing is clipped (beyond the zero point's
        // nudge), except DIV's large quotients (its output scale is capped for TFLM's
        // fixed-point division).
        let (lo, hi) = (s_out * (-128 - z_out) as f32, s_out * (127 - z_out) as f32);
        let stats = |f: &[Vec<f32>]| {
            // A zero divisor (a divisor rounded to its zero point) has no real quotient
            // (the float kernel's clamp turns its infinity into ±f32::MAX; TFLM's int8
            // kernel saturates high).
            let pairs: Vec<(f32, f32)> = f
                .iter()
                .zip(&q)
                .flat_map(|(a, b)| a.iter().copied().zip(b.iter().copied()))
                .filter(|(a, _)| a.abs() < f32::MAX)
                .collect();
            let clipped = pairs
                .iter()
                .filter(|(a, _)| *a < lo - s_out || *a > hi + s_out)
                .count();
            let steps: Vec<f64> = pairs
                .iter()
                .map(|(a, b)| f64::from((a.clamp(lo, hi) - b).abs()) / f64::from(s_out))
                .collect();
            let max = steps.iter().copied().fold(0.0, f64::max);
            let mean = steps.iter().sum::<f64>() / steps.len() as f64;
            (max, mean, clipped, pairs.len())
        };
        let (max, mean, clipped, n) = stats(&outputs(&float, &samples));
        let (dmax, dmean, _, _) = stats(&outputs(&float, &rounded));
        println!(
            "{name:<58} scale {s_out:.6}: max {max:.2} mean {mean:.3} steps, {clipped}/{n} clipped; on int8 inputs: max {dmax:.2} mean {dmean:.3}"
        );
        // Single ops: within 4 steps of float, and within one rounding (plus the
        // weights' rounding) of float on the same int8 inputs. DIV magnifies its inputs'
        // rounding without bound near a zero divisor, so it is held to the second test
        // only; chains of ops carry clipped DIV quotients on, and are held to the mean.
        let chain = name.contains("_chain_");
        let ok = if chain {
            dmean <= 2.0
        } else if name.starts_with("div_") {
            dmax <= 1.0 && mean <= 1.0
        } else {
            clipped == 0 && max <= 4.0 && mean <= 1.0 && dmax <= 1.5
        };
        if !ok {
            failures.push(format!(
                "{name}: max {max:.2} mean {mean:.3} steps, {clipped} clipped; \
                 on int8 inputs max {dmax:.2} mean {dmean:.3}"
            ));
        }
        quantized += 1;
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(quantized, names.len());
}
