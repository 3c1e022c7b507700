//! Kernel-level bit-exactness against TFLM's own reference kernels.
//!
//! `tflm_golden/tflm_cases.txt` was produced by `tflm_golden/gen.cc`, which calls TFLM's
//! (commit 90b983c, double rounding) `QuantizeMultiplier`, `MultiplyByQuantizedMultiplier`,
//! int8 `Softmax`, `Logistic`, `Tanh`, `AddFunc`, `Mul`, `QuantizedMeanOrSum`,
//! `AffineQuantize`, `ConvPerChannel` and `AveragePool` on random parameters. Each line is
//! one case: a tag, the parameters, the inputs and TFLM's outputs.

use kiln_runtime::activation::{ActivationRange, FusedActivation};
use kiln_runtime::kernels::reference::*;
use kiln_runtime::padding::Padding;
use kiln_runtime::quant::*;

#[test]
fn matches_tflm_reference_kernels() {
    let text = include_str!("tflm_golden/tflm_cases.txt");
    let mut fails = std::collections::BTreeMap::<String, usize>::new();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split(' ').collect();
        let tag = t[0];
        let f = |i: usize| t[i].parse::<f32>().unwrap();
        let d = |i: usize| t[i].parse::<f64>().unwrap();
        let n = |i: usize| t[i].parse::<i32>().unwrap();
        let ok: bool = match tag {
            "QM" => {
                let q = quantize_multiplier(d(1)).unwrap();
                q.multiplier == n(2) && q.shift == n(3)
            }
            "MBQM" => multiply_by_quantized_multiplier(n(1), n(2), n(3)) == n(4),
            "SM" => {
                let depth = n(3) as usize;
                let inp: Vec<i8> = (0..depth).map(|i| n(4 + i) as i8).collect();
                let exp: Vec<i8> = (0..depth).map(|i| n(4 + depth + i) as i8).collect();
                let p = softmax::SoftmaxParams::prepare(
                    f(1),
                    TensorQuant::new(f(2), 0),
                    TensorQuant::new(1.0 / 256.0, -128),
                )
                .unwrap();
                let mut out = vec![0i8; depth];
                softmax::softmax_i8(&p, depth, &inp, &mut out);
                out == exp
            }
            "LG" | "TH" => {
                let p =
                    logistic::SigmoidInputParams::prepare(TensorQuant::new(f(1), n(2))).unwrap();
                let inp: Vec<i8> = (0..256).map(|i| (i - 128) as i8).collect();
                let exp: Vec<i8> = (0..256).map(|i| n(3 + i) as i8).collect();
                let mut out = vec![0i8; 256];
                if tag == "LG" {
                    logistic::logistic_i8(&p, &inp, &mut out)
                } else {
                    tanh::tanh_i8(&p, &inp, &mut out)
                }
                out == exp
            }
            "AD" | "MU" => {
                let q1 = TensorQuant::new(f(1), n(2));
                let q2 = TensorQuant::new(f(3), n(4));
                let qo = TensorQuant::new(f(5), n(6));
                let mut good = true;
                let a = add::AddParams::prepare(q1, q2, qo, FusedActivation::None);
                let m = mul::MulParams::prepare(q1, q2, qo, FusedActivation::None).unwrap();
                for k in 0..20 {
                    let (x, y, o) = (n(7 + 3 * k) as i8, n(8 + 3 * k) as i8, n(9 + 3 * k) as i8);
                    let got = if tag == "AD" {
                        a.unwrap().add_one(x, y)
                    } else {
                        m.mul_one(x, y)
                    };
                    good &= got == o;
                }
                good
            }
            "ME" => {
                let (h, w, c) = (n(1) as usize, n(2) as usize, n(3) as usize);
                let p = mean::MeanParams::new(&[1, h, w, c], &[1, 2]).unwrap();
                let q = mean::MeanQuant::prepare(
                    TensorQuant::new(f(4), n(5)),
                    TensorQuant::new(f(6), n(7)),
                    &p,
                )
                .unwrap();
                let inp: Vec<i8> = (0..h * w * c).map(|i| n(8 + i) as i8).collect();
                let exp: Vec<i8> = (0..c).map(|i| n(8 + h * w * c + i) as i8).collect();
                let mut out = vec![0i8; c];
                mean::mean_i8(&p, &q, &inp, &mut out);
                out == exp
            }
            "AQ" => {
                let p = quantize::QuantizeParams::prepare(TensorQuant::new(f(1), n(2))).unwrap();
                p.quantize_one(f(3)) == n(4) as i8
            }
            "CV" => {
                let (h, w, ci, co) = (n(1) as usize, n(2) as usize, n(3) as usize, n(4) as usize);
                let iq = TensorQuant::new(f(5), n(6));
                let oq = TensorQuant::new(f(7), n(8));
                let mut i = 9;
                let fs: Vec<f32> = (0..co).map(|k| f(i + k)).collect();
                i += co;
                let mut take = |len: usize| {
                    let v: Vec<i32> = (0..len).map(|k| n(i + k)).collect();
                    i += len;
                    v
                };
                let inp: Vec<i8> = take(h * w * ci).iter().map(|&v| v as i8).collect();
                let fil: Vec<i8> = take(co * 9 * ci).iter().map(|&v| v as i8).collect();
                let bias = take(co);
                let exp: Vec<i8> = take(h * w * co).iter().map(|&v| v as i8).collect();
                let pexp: Vec<i8> = take(h * w * ci).iter().map(|&v| v as i8).collect();
                let p = conv_2d::Conv2dParams::new(
                    [1, h, w, ci],
                    [co, 3, 3, ci],
                    [1, 1],
                    [1, 1],
                    Padding::Same,
                )
                .unwrap();
                let mut st = vec![QuantizedMultiplier::ZERO; co];
                let q = conv_2d::ConvQuant::prepare(iq, &fs, oq, FusedActivation::None, &mut st)
                    .unwrap();
                let mut out = vec![0i8; h * w * co];
                conv_2d::conv_2d_i8(&p, &q, &inp, &fil, Some(&bias), &mut out);
                let pp = average_pool_2d::Pool2dParams::new(
                    [1, h, w, ci],
                    [3, 3],
                    [1, 1],
                    Padding::Same,
                )
                .unwrap();
                let mut pout = vec![0i8; h * w * ci];
                average_pool_2d::average_pool_2d_i8(&pp, ActivationRange::FULL_I8, &inp, &mut pout);
                out == exp && pout == pexp
            }
            _ => panic!("unknown case tag {tag}"),
        };
        *counts.entry(tag.to_string()).or_default() += 1;
        if !ok {
            *fails.entry(tag.to_string()).or_default() += 1;
            if fails[tag] <= 2 {
                eprintln!("FAIL {line}");
            }
        }
    }
    eprintln!("cases per kernel: {counts:?}");
    assert!(counts.len() == 10, "{counts:?}");
    assert!(fails.is_empty(), "{fails:?}");
}
