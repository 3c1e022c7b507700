//! Kernels never panic: slices whose lengths do not match the params, and params no
//! constructor would produce, leave the output untouched. (The release-build proof that
//! no panic path is even linked in is `runtime/no-panic-check/check.sh`.)

use kiln_runtime::activation::{ActivationRange, ActivationRangeF32};
use kiln_runtime::kernels::reference::*;
use kiln_runtime::padding::{Padding, Window2d};
use kiln_runtime::quant::{ChannelMultipliers, QuantizedMultiplier, TensorQuant};
use kiln_runtime::shape::Broadcast;

const S: i8 = 99;
const SF: f32 = 99.0;
const NONE: ActivationRangeF32 = ActivationRangeF32::NONE;
const FULL: ActivationRange = ActivationRange::FULL_I8;

/// Calls `kernel` on an output of `len` sentinels and asserts none was overwritten.
fn untouched_i8(len: usize, kernel: impl FnOnce(&mut [i8])) {
    let mut out = vec![S; len];
    kernel(&mut out);
    assert!(out.iter().all(|&v| v == S), "kernel wrote {out:?}");
}

fn untouched_f32(len: usize, kernel: impl FnOnce(&mut [f32])) {
    let mut out = vec![SF; len];
    kernel(&mut out);
    assert!(out.iter().all(|&v| v == SF), "kernel wrote {out:?}");
}

fn q() -> TensorQuant {
    TensorQuant::new(0.1, 0)
}

#[test]
fn elementwise_length_mismatch() {
    let x = [1i8, 2, 3];
    let xf = [1.0f32, 2.0, 3.0];
    let relu = relu::ReluParams::prepare(q(), q()).unwrap();
    let relu6 = relu6::Relu6Params::prepare(q()).unwrap();
    let sig = logistic::prepare_logistic(q(), TensorQuant::new(1.0 / 256.0, -128)).unwrap();
    let req = quantize::RequantizeParams::prepare(q(), q()).unwrap();
    let quant = quantize::QuantizeParams::prepare(q()).unwrap();
    let deq = dequantize::DequantizeParams::prepare(q()).unwrap();
    for len in [2, 4] {
        untouched_i8(len, |y| relu::relu_i8(&relu, &x, y));
        untouched_i8(len, |y| relu6::relu6_i8(&relu6, &x, y));
        untouched_i8(len, |y| logistic::logistic_i8(&sig, &x, y));
        untouched_i8(len, |y| tanh::tanh_i8(&sig, &x, y));
        untouched_i8(len, |y| quantize::requantize_i8(&req, &x, y));
        untouched_i8(len, |y| quantize::quantize_f32_to_i8(&quant, &xf, y));
        untouched_f32(len, |y| dequantize::dequantize_i8_to_f32(&deq, &x, y));
        untouched_f32(len, |y| relu::relu_f32(&xf, y));
        untouched_f32(len, |y| relu6::relu6_f32(&xf, y));
        untouched_f32(len, |y| logistic::logistic_f32(&xf, y));
        untouched_f32(len, |y| tanh::tanh_f32(&xf, y));
    }
}

#[test]
fn broadcast_length_mismatch() {
    let plan = Broadcast::new(&[2, 3], &[3]).unwrap();
    assert!(plan.accepts(6, 3, 6));
    assert!(!plan.accepts(6, 2, 6) && !plan.accepts(5, 3, 6) && !plan.accepts(6, 3, 7));
    let add = add::AddParams::prepare(q(), q(), q(), Default::default()).unwrap();
    let mul = mul::MulParams::prepare(q(), q(), q(), Default::default()).unwrap();
    let (a, b) = ([1i8; 6], [1i8; 3]);
    untouched_i8(6, |y| add::add_i8(&add, &plan, &a, &b[..2], y));
    untouched_i8(5, |y| mul::mul_i8(&mul, &plan, &a, &b, y));
    untouched_f32(6, |y| add::add_f32(NONE, &plan, &[1.0; 5], &[1.0; 3], y));
    untouched_f32(6, |y| mul::mul_f32(NONE, &plan, &[1.0; 6], &[1.0; 4], y));
    // In place: the broadcast operand cannot be the one overwritten.
    untouched_i8(3, |y| add::add_i8_in_place(&add, &plan, y, &a, true));
    untouched_i8(3, |y| mul::mul_i8_in_place(&mul, &plan, y, &a, false));
    untouched_f32(6, |y| {
        add::add_f32_in_place(NONE, &plan, y, &[1.0; 6], true)
    });
}

#[test]
fn windowed_ops_length_mismatch() {
    let conv =
        conv_2d::Conv2dParams::new([1, 4, 4, 2], [3, 3, 3, 2], [1, 1], [1, 1], Padding::Same)
            .unwrap();
    let cq = conv_2d::ConvQuant::prepare(q(), &[0.1], q(), Default::default(), &mut []).unwrap();
    let (x, w) = (vec![1i8; 32], vec![1i8; 54]);
    let (xf, wf) = (vec![1.0f32; 32], vec![1.0f32; 54]);
    let out = conv.output_len();
    untouched_i8(out, |y| {
        conv_2d::conv_2d_i8(&conv, &cq, &x[1..], &w, None, y)
    });
    untouched_i8(out, |y| {
        conv_2d::conv_2d_i8(&conv, &cq, &x, &w[1..], None, y)
    });
    untouched_i8(out - 1, |y| {
        conv_2d::conv_2d_i8(&conv, &cq, &x, &w, None, y)
    });
    untouched_i8(out, |y| {
        conv_2d::conv_2d_i8(&conv, &cq, &x, &w, Some(&[0, 0]), y)
    });
    untouched_f32(out, |y| {
        conv_2d::conv_2d_f32(&conv, NONE, &xf, &wf, Some(&[0.0; 4]), y)
    });
    // A per-channel table shorter than the output depth.
    let short = [QuantizedMultiplier::ZERO; 2];
    let cq_short = conv_2d::ConvQuant {
        multipliers: ChannelMultipliers::PerChannel(&short),
        ..cq
    };
    untouched_i8(out, |y| {
        conv_2d::conv_2d_i8(&conv, &cq_short, &x, &w, None, y)
    });

    let dw = depthwise_conv_2d::DepthwiseConv2dParams::new(
        [1, 4, 4, 2],
        [1, 3, 3, 4],
        2,
        [1, 1],
        [1, 1],
        Padding::Same,
    )
    .unwrap();
    let (dwx, dww) = (vec![1i8; 32], vec![1i8; 36]);
    let out = dw.output_len();
    untouched_i8(out, |y| {
        depthwise_conv_2d::depthwise_conv_2d_i8(&dw, &cq, &dwx, &dww[1..], None, y)
    });
    untouched_i8(out, |y| {
        depthwise_conv_2d::depthwise_conv_2d_i8(&dw, &cq_short, &dwx, &dww, None, y)
    });
    untouched_f32(out + 1, |y| {
        depthwise_conv_2d::depthwise_conv_2d_f32(&dw, NONE, &[1.0; 32], &[1.0; 36], None, y)
    });

    let fc = fully_connected::FullyConnectedParams::new(2, [3, 4]).unwrap();
    let fq =
        fully_connected::FullyConnectedQuant::prepare_per_tensor(q(), q(), q(), Default::default())
            .unwrap();
    untouched_i8(6, |y| {
        fully_connected::fully_connected_i8(&fc, &fq, &[1; 7], &[1; 12], None, y)
    });
    untouched_i8(6, |y| {
        fully_connected::fully_connected_i8(&fc, &fq, &[1; 8], &[1; 12], Some(&[1; 2]), y)
    });
    untouched_f32(5, |y| {
        fully_connected::fully_connected_f32(&fc, NONE, &[1.0; 8], &[1.0; 12], None, y)
    });

    let pool =
        average_pool_2d::Pool2dParams::new([1, 4, 4, 2], [2, 2], [2, 2], Padding::Valid).unwrap();
    untouched_i8(8, |y| {
        average_pool_2d::average_pool_2d_i8(&pool, FULL, &[1; 31], y)
    });
    untouched_i8(7, |y| max_pool_2d::max_pool_2d_i8(&pool, FULL, &[1; 32], y));
    untouched_f32(9, |y| {
        average_pool_2d::average_pool_2d_f32(&pool, NONE, &[1.0; 32], y)
    });
    untouched_f32(8, |y| {
        max_pool_2d::max_pool_2d_f32(&pool, NONE, &[1.0; 33], y)
    });
}

#[test]
fn shape_ops_length_mismatch() {
    let sm =
        softmax::SoftmaxParams::prepare(1.0, q(), TensorQuant::new(1.0 / 256.0, -128)).unwrap();
    untouched_i8(6, |y| softmax::softmax_i8(&sm, 4, &[1; 6], y));
    untouched_i8(6, |y| softmax::softmax_i8(&sm, 0, &[1; 6], y));
    untouched_f32(4, |y| softmax::softmax_f32(1.0, 2, &[1.0; 6], y));

    let mean = mean::MeanParams::new(&[2, 3, 4], &[1]).unwrap();
    let mq = mean::MeanQuant::prepare(q(), q(), &mean).unwrap();
    untouched_i8(8, |y| mean::mean_i8(&mean, &mq, &[1; 23], y));
    untouched_f32(9, |y| mean::mean_f32(&mean, &[1.0; 24], y));

    let pad = pad::PadParams::new(&[2, 2], &[(1, 1), (0, 1)]).unwrap();
    untouched_i8(12, |y| pad::pad_i8(&pad, &[1; 3], 0, y));
    untouched_f32(11, |y| pad::pad_f32(&pad, &[1.0; 4], 0.0, y));

    let cat = concatenation::ConcatenationParams::new(&[2, 3], 1).unwrap();
    untouched_i8(6, |y| {
        concatenation::concatenation_i8(&cat, &[&[1; 2], &[1; 3]], y)
    });
    untouched_i8(6, |y| {
        concatenation::concatenation_i8(&cat, &[&[1; 2], &[1; 2]], y)
    });
    untouched_f32(7, |y| {
        concatenation::concatenation_f32(&cat, &[&[1.0; 2], &[1.0; 4]], y)
    });
}

#[test]
fn params_no_constructor_makes() {
    // Struct literals with public fields: zero or overflowing sizes must not panic.
    let window = Window2d {
        input: [usize::MAX, 2],
        filter: [1, 1],
        stride: [usize::MAX, 1],
        dilation: [usize::MAX, 1],
        pad: [usize::MAX, 0],
        output: [2, 2],
    };
    let conv = conv_2d::Conv2dParams {
        batches: 1,
        input_depth: 2,
        filter_input_depth: 0,
        output_depth: 2,
        window,
    };
    let cq = conv_2d::ConvQuant::prepare(q(), &[0.1], q(), Default::default(), &mut []).unwrap();
    untouched_i8(8, |y| {
        conv_2d::conv_2d_i8(&conv, &cq, &[1; 8], &[1; 4], None, y)
    });
    let conv = conv_2d::Conv2dParams {
        filter_input_depth: 2,
        output_depth: 3,
        input_depth: 4,
        ..conv
    };
    untouched_f32(12, |y| {
        conv_2d::conv_2d_f32(&conv, NONE, &[1.0; 16], &[1.0; 6], None, y)
    });
    let dw = depthwise_conv_2d::DepthwiseConv2dParams {
        batches: 2,
        input_depth: usize::MAX,
        depth_multiplier: 2,
        window,
    };
    untouched_i8(4, |y| {
        depthwise_conv_2d::depthwise_conv_2d_i8(&dw, &cq, &[1; 4], &[1; 4], None, y)
    });
    let fc = fully_connected::FullyConnectedParams {
        batches: usize::MAX,
        accum_depth: 2,
        output_depth: 2,
    };
    untouched_f32(2, |y| {
        fully_connected::fully_connected_f32(&fc, NONE, &[1.0; 2], &[1.0; 4], None, y)
    });
    let pool = average_pool_2d::Pool2dParams {
        batches: 1,
        depth: 1,
        window,
    };
    untouched_i8(4, |y| {
        average_pool_2d::average_pool_2d_i8(&pool, FULL, &[1; 4], y)
    });
    let cat = concatenation::ConcatenationParams {
        outer_size: 0,
        inner_size: 3,
        axis_size: 2,
    };
    untouched_i8(6, |y| concatenation::concatenation_i8(&cat, &[&[1; 6]], y));

    // A window whose origin arithmetic wraps still only reads inside the input.
    let wrapped = Window2d {
        input: [2, 2],
        filter: [3, 3],
        stride: [usize::MAX / 2, 1],
        dilation: [usize::MAX / 2, 1],
        pad: [1, 1],
        output: [2, 2],
    };
    let conv = conv_2d::Conv2dParams {
        batches: 1,
        input_depth: 1,
        filter_input_depth: 1,
        output_depth: 1,
        window: wrapped,
    };
    let mut y = [0.0f32; 4];
    conv_2d::conv_2d_f32(&conv, NONE, &[1.0; 4], &[1.0; 9], None, &mut y);
    let pool = average_pool_2d::Pool2dParams {
        batches: 1,
        depth: 1,
        window: wrapped,
    };
    max_pool_2d::max_pool_2d_f32(&pool, NONE, &[1.0; 4], &mut y);

    // Host-side constructors reject overflowing shapes instead of wrapping.
    assert!(kiln_runtime::shape::Shape::new(&[usize::MAX, 2]).is_err());
    assert!(Broadcast::new(&[1 << 40, 1], &[1, 1 << 40]).is_err());
    assert!(pad::PadParams::new(&[2], &[(usize::MAX, 1)]).is_err());
}
