//! The in-place kernels give exactly the out-of-place kernels' results: random params,
//! data and shapes, including a broadcast `other` operand on either side of ADD and MUL.

use kiln_runtime::activation::FusedActivation;
use kiln_runtime::kernels::reference::add::{
    add_f32, add_f32_in_place, add_i8, add_i8_in_place, AddParams,
};
use kiln_runtime::kernels::reference::logistic::{
    logistic_f32, logistic_f32_in_place, logistic_i8, logistic_i8_in_place, prepare_logistic,
};
use kiln_runtime::kernels::reference::mul::{
    mul_f32, mul_f32_in_place, mul_i8, mul_i8_in_place, MulParams,
};
use kiln_runtime::kernels::reference::quantize::{
    requantize_i8, requantize_i8_in_place, RequantizeParams,
};
use kiln_runtime::kernels::reference::relu::{
    relu_f32, relu_f32_in_place, relu_i8, relu_i8_in_place, ReluParams,
};
use kiln_runtime::kernels::reference::relu6::{
    relu6_f32, relu6_f32_in_place, relu6_i8, relu6_i8_in_place, Relu6Params,
};
use kiln_runtime::kernels::reference::tanh::{
    prepare_tanh, tanh_f32, tanh_f32_in_place, tanh_i8, tanh_i8_in_place,
};
use kiln_runtime::quant::TensorQuant;
use kiln_runtime::shape::Broadcast;
use proptest::prelude::*;

/// An output shape (the in-place operand's) and a shape broadcastable to it: each
/// aligned dim kept or set to 1, leading dims dropped, or one leading 1 added.
fn shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(1usize..5, 0..=4).prop_flat_map(|out| {
        let r = out.len();
        (
            Just(out),
            prop::collection::vec(any::<bool>(), r),
            0..=r + 1,
        )
            .prop_map(move |(out, keep, rank)| {
                let mut other: Vec<usize> = out
                    .iter()
                    .zip(&keep)
                    .map(|(&d, &k)| if k { d } else { 1 })
                    .collect();
                if rank > r {
                    other.insert(0, 1);
                } else {
                    other.drain(..r - rank);
                }
                (out, other)
            })
    })
}

fn quant() -> impl Strategy<Value = TensorQuant> {
    (0.001f32..1.0, -128i32..128).prop_map(|(s, z)| TensorQuant::new(s, z))
}

fn activation() -> impl Strategy<Value = FusedActivation> {
    prop_oneof![
        Just(FusedActivation::None),
        Just(FusedActivation::Relu),
        Just(FusedActivation::Relu6),
        Just(FusedActivation::ReluN1To1),
    ]
}

fn data_i8(len: usize, seed: u64) -> Vec<i8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8 as i8
        })
        .collect()
}

fn data_f32(len: usize, seed: u64) -> Vec<f32> {
    data_i8(len, seed)
        .into_iter()
        .map(|v| f32::from(v) / 16.0)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `out_of_place(plan, a, b, out)` and `in_place(plan, inout, other, first)` for the
/// in-place operand first and second; returns (expected, got) pairs.
fn both_orders<T: Copy + Default>(
    shape: &[usize],
    other_shape: &[usize],
    inout: &[T],
    other: &[T],
    out_of_place: impl Fn(&Broadcast, &[T], &[T], &mut [T]),
    in_place: impl Fn(&Broadcast, &mut [T], &[T], bool),
) -> Vec<(Vec<T>, Vec<T>)> {
    let mut results = Vec::new();
    for first in [true, false] {
        let plan = if first {
            Broadcast::new(shape, other_shape).unwrap()
        } else {
            Broadcast::new(other_shape, shape).unwrap()
        };
        assert_eq!(plan.output_len(), inout.len());
        let (a, b) = if first {
            (inout, other)
        } else {
            (other, inout)
        };
        assert!(plan.accepts(a.len(), b.len(), inout.len()));
        let mut expected = vec![T::default(); inout.len()];
        out_of_place(&plan, a, b, &mut expected);
        let mut got = inout.to_vec();
        in_place(&plan, &mut got, other, first);
        results.push((expected, got));
    }
    results
}

proptest! {
    #[test]
    fn add_i8_in_place_matches(
        (shape, other_shape) in shapes(),
        q1 in quant(), q2 in quant(), qo in (0.002f32..2.0, -128i32..128),
        act in activation(), seed in any::<u64>(),
    ) {
        let qo = TensorQuant::new(qo.0, qo.1);
        let n: usize = shape.iter().product();
        let m: usize = other_shape.iter().product();
        let (inout, other) = (data_i8(n, seed), data_i8(m, !seed));
        // Params are not symmetric: the in-place operand's quantization goes with its side.
        for first in [true, false] {
            let p = if first {
                AddParams::prepare(q1, q2, qo, act).unwrap()
            } else {
                AddParams::prepare(q2, q1, qo, act).unwrap()
            };
            let runs = both_orders(
                &shape, &other_shape, &inout, &other,
                |plan, a, b, out| add_i8(&p, plan, a, b, out),
                |plan, x, o, f| add_i8_in_place(&p, plan, x, o, f),
            );
            for (expected, got) in runs {
                prop_assert_eq!(expected, got);
            }
        }
    }

    #[test]
    fn mul_i8_in_place_matches(
        (shape, other_shape) in shapes(),
        q1 in quant(), q2 in quant(), qo in (0.0005f32..2.0, -128i32..128),
        act in activation(), seed in any::<u64>(),
    ) {
        let p = MulParams::prepare(q1, q2, TensorQuant::new(qo.0, qo.1), act).unwrap();
        let n: usize = shape.iter().product();
        let m: usize = other_shape.iter().product();
        let (inout, other) = (data_i8(n, seed), data_i8(m, !seed));
        let runs = both_orders(
            &shape, &other_shape, &inout, &other,
            |plan, a, b, out| mul_i8(&p, plan, a, b, out),
            |plan, x, o, f| mul_i8_in_place(&p, plan, x, o, f),
        );
        for (expected, got) in runs {
            prop_assert_eq!(expected, got);
        }
    }

    #[test]
    fn add_and_mul_f32_in_place_match(
        (shape, other_shape) in shapes(), act in activation(), seed in any::<u64>(),
    ) {
        let r = act.range_f32();
        let n: usize = shape.iter().product();
        let m: usize = other_shape.iter().product();
        let (inout, other) = (data_f32(n, seed), data_f32(m, !seed));
        let adds = both_orders(
            &shape, &other_shape, &inout, &other,
            |plan, a, b, out| add_f32(r, plan, a, b, out),
            |plan, x, o, f| add_f32_in_place(r, plan, x, o, f),
        );
        let muls = both_orders(
            &shape, &other_shape, &inout, &other,
            |plan, a, b, out| mul_f32(r, plan, a, b, out),
            |plan, x, o, f| mul_f32_in_place(r, plan, x, o, f),
        );
        for (expected, got) in adds.into_iter().chain(muls) {
            prop_assert_eq!(bits(&expected), bits(&got));
        }
    }

    #[test]
    fn unary_i8_in_place_matches(
        qi in quant(), qo in quant(), data in prop::collection::vec(any::<i8>(), 0..300),
    ) {
        fn check(data: &[i8], out_of_place: impl Fn(&[i8], &mut [i8]), in_place: impl Fn(&mut [i8])) {
            let mut expected = vec![0i8; data.len()];
            out_of_place(data, &mut expected);
            let mut got = data.to_vec();
            in_place(&mut got);
            assert_eq!(expected, got);
        }
        let relu = ReluParams::prepare(qi, qo).unwrap();
        check(&data, |x, y| relu_i8(&relu, x, y), |x| relu_i8_in_place(&relu, x));
        let relu6 = Relu6Params::prepare(qi).unwrap();
        check(&data, |x, y| relu6_i8(&relu6, x, y), |x| relu6_i8_in_place(&relu6, x));
        let logistic = prepare_logistic(qi, TensorQuant::new(1.0 / 256.0, -128)).unwrap();
        check(&data, |x, y| logistic_i8(&logistic, x, y), |x| logistic_i8_in_place(&logistic, x));
        let tanh = prepare_tanh(qi).unwrap();
        check(&data, |x, y| tanh_i8(&tanh, x, y), |x| tanh_i8_in_place(&tanh, x));
        let requantize = RequantizeParams::prepare(qi, qo).unwrap();
        check(
            &data,
            |x, y| requantize_i8(&requantize, x, y),
            |x| requantize_i8_in_place(&requantize, x),
        );
    }

    #[test]
    fn unary_f32_in_place_matches(
        data in prop::collection::vec(
            prop_oneof![-40.0f32..40.0, prop::num::f32::ANY], 0..300),
    ) {
        fn check(data: &[f32], out_of_place: fn(&[f32], &mut [f32]), in_place: fn(&mut [f32])) {
            let mut expected = vec![0.0f32; data.len()];
            out_of_place(data, &mut expected);
            let mut got = data.to_vec();
            in_place(&mut got);
            assert_eq!(bits(&expected), bits(&got));
        }
        check(&data, relu_f32, relu_f32_in_place);
        check(&data, relu6_f32, relu6_f32_in_place);
        check(&data, logistic_f32, logistic_f32_in_place);
        check(&data, tanh_f32, tanh_f32_in_place);
    }
}

#[test]
fn broadcast_operand_on_either_side() {
    // inout [2, 3], other [3]: 2 rows of inout against one broadcast row.
    let plan_first = Broadcast::new(&[2, 3], &[3]).unwrap();
    let plan_second = Broadcast::new(&[3], &[2, 3]).unwrap();
    let r = FusedActivation::None.range_f32();
    let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    add_f32_in_place(r, &plan_first, &mut x, &[10.0, 20.0, 30.0], true);
    assert_eq!(x, [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    mul_f32_in_place(r, &plan_second, &mut x, &[10.0, 20.0, 30.0], false);
    assert_eq!(x, [10.0, 40.0, 90.0, 40.0, 100.0, 180.0]);
    // The wrong side for this plan: lengths do not match, nothing is written.
    let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    add_f32_in_place(r, &plan_first, &mut x, &[10.0, 20.0, 30.0], false);
    assert_eq!(x, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}
