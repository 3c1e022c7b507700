//! The in-place conv kernels (`kernels::in_place`) give exactly the out-of-place
//! reference kernels' results: random shapes, filters, dilations, paddings (any split of
//! a "same" padding between top/left and bottom/right), groups, batches, quantization
//! and data; f32 compared bit for bit. Params the in-place kernels cannot run must leave
//! `inout` untouched.

use kiln_runtime::activation::{ActivationRangeF32, FusedActivation};
use kiln_runtime::kernels::in_place::block::{block_ring_len, conv_block_i8_in_place};
use kiln_runtime::kernels::in_place::conv_2d::{
    conv_2d_f32_in_place, conv_2d_i8_in_place, conv_2d_in_place_scratch,
};
use kiln_runtime::kernels::in_place::depthwise_conv_2d::{
    depthwise_conv_2d_f32_in_place, depthwise_conv_2d_i8_in_place, depthwise_in_place_scratch,
};
use kiln_runtime::kernels::reference::add::AddParams;
use kiln_runtime::kernels::reference::conv_2d::{
    conv_2d_f32, conv_2d_i8, conv_2d_i8_add, Conv2dParams, ConvQuant, ResidualAdd,
};
use kiln_runtime::kernels::reference::depthwise_conv_2d::{
    depthwise_conv_2d_f32, depthwise_conv_2d_i8, DepthwiseConv2dParams,
};
use kiln_runtime::padding::{effective_filter_size, Window2d};
use kiln_runtime::quant::{QuantizedMultiplier, TensorQuant};
use proptest::prelude::*;

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

/// A stride-1 window whose output is as large as its input: `[h, w]`, filter, dilation,
/// and the share `top` (0..=1 of the total padding) placed above / left.
fn same_window() -> impl Strategy<Value = Window2d> {
    (
        1usize..7,
        1usize..7,
        1usize..4,
        1usize..4,
        1usize..3,
        1usize..3,
        any::<(u8, u8)>(),
    )
        .prop_map(|(h, w, fh, fw, dh, dw, (sy, sx))| {
            let (eh, ew) = (effective_filter_size(fh, dh), effective_filter_size(fw, dw));
            let pad = [usize::from(sy) % eh, usize::from(sx) % ew];
            Window2d::explicit([h, w], [fh, fw], [1, 1], [dh, dw], pad, [h, w]).unwrap()
        })
}

fn quant() -> impl Strategy<Value = TensorQuant> {
    (0.002f32..0.5, -128i32..128).prop_map(|(s, z)| TensorQuant::new(s, z))
}

fn activation() -> impl Strategy<Value = FusedActivation> {
    prop_oneof![
        Just(FusedActivation::None),
        Just(FusedActivation::Relu),
        Just(FusedActivation::Relu6),
    ]
}

/// Per-channel filter scales (or one) for `channels` output channels.
fn scales(channels: usize, seed: u64, per_channel: bool) -> Vec<f32> {
    let n = if per_channel { channels } else { 1 };
    data_i8(n, seed)
        .into_iter()
        .map(|v| 0.002 + f32::from(v.unsigned_abs()) / 4000.0)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn conv_i8_in_place_matches_reference(
        window in same_window(), batches in 1usize..3, fin in 1usize..5, groups in 1usize..3,
        qi in quant(), qo in quant(), act in activation(), per_channel in any::<bool>(),
        with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let c = fin * groups;
        let p = Conv2dParams::with_window(batches, c, [c, window.filter[0], window.filter[1], fin], window).unwrap();
        let x = data_i8(p.input_len(), seed);
        let f = data_i8(p.filter_len(), !seed);
        let bias: Vec<i32> = data_i8(c, seed ^ 7).into_iter().map(|v| i32::from(v) * 37).collect();
        let bias = with_bias.then_some(bias.as_slice());
        let s = scales(c, seed ^ 3, per_channel);
        let mut storage = vec![QuantizedMultiplier::ZERO; s.len()];
        let q = ConvQuant::prepare(qi, &s, qo, act, &mut storage).unwrap();
        let mut expected = vec![0i8; p.output_len()];
        conv_2d_i8(&p, &q, &x, &f, bias, &mut expected);
        let scratch_len = conv_2d_in_place_scratch(&p).unwrap();
        prop_assert!(scratch_len <= p.input_len());
        let mut got = x.clone();
        let mut scratch = vec![0i8; scratch_len];
        conv_2d_i8_in_place(&p, &q, &f, bias, &mut got, &mut scratch);
        prop_assert_eq!(got, expected);
        // One element short of scratch: refused, nothing written.
        if scratch_len > 0 {
            let mut untouched = x.clone();
            conv_2d_i8_in_place(&p, &q, &f, bias, &mut untouched, &mut scratch[1..]);
            prop_assert_eq!(untouched, x);
        }
    }

    #[test]
    fn conv_f32_in_place_matches_reference(
        window in same_window(), batches in 1usize..3, c in 1usize..5,
        act in activation(), seed in any::<u64>(),
    ) {
        let p = Conv2dParams::with_window(batches, c, [c, window.filter[0], window.filter[1], c], window).unwrap();
        let x = data_f32(p.input_len(), seed);
        let f = data_f32(p.filter_len(), !seed);
        let bias = data_f32(c, seed ^ 5);
        let range = act.range_f32();
        let mut expected = vec![0f32; p.output_len()];
        conv_2d_f32(&p, range, &x, &f, Some(&bias), &mut expected);
        let mut got = x.clone();
        let mut scratch = vec![0f32; conv_2d_in_place_scratch(&p).unwrap()];
        conv_2d_f32_in_place(&p, range, &f, Some(&bias), &mut got, &mut scratch);
        prop_assert_eq!(bits(&got), bits(&expected));
    }

    #[test]
    fn depthwise_i8_in_place_matches_reference(
        window in same_window(), batches in 1usize..3, c in 1usize..6,
        qi in quant(), qo in quant(), act in activation(), per_channel in any::<bool>(),
        with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let p = DepthwiseConv2dParams::with_window(batches, c, [1, window.filter[0], window.filter[1], c], 1, window).unwrap();
        let x = data_i8(p.input_len(), seed);
        let f = data_i8(p.filter_len(), !seed);
        let bias: Vec<i32> = data_i8(c, seed ^ 7).into_iter().map(|v| i32::from(v) * 29).collect();
        let bias = with_bias.then_some(bias.as_slice());
        let s = scales(c, seed ^ 3, per_channel);
        let mut storage = vec![QuantizedMultiplier::ZERO; s.len()];
        let q = ConvQuant::prepare(qi, &s, qo, act, &mut storage).unwrap();
        let mut expected = vec![0i8; p.output_len()];
        depthwise_conv_2d_i8(&p, &q, &x, &f, bias, &mut expected);
        let mut got = x.clone();
        let mut scratch = vec![0i8; depthwise_in_place_scratch(&p).unwrap()];
        depthwise_conv_2d_i8_in_place(&p, &q, &f, bias, &mut got, &mut scratch);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn depthwise_f32_in_place_matches_reference(
        window in same_window(), batches in 1usize..3, c in 1usize..6,
        act in activation(), seed in any::<u64>(),
    ) {
        let p = DepthwiseConv2dParams::with_window(batches, c, [1, window.filter[0], window.filter[1], c], 1, window).unwrap();
        let x = data_f32(p.input_len(), seed);
        let f = data_f32(p.filter_len(), !seed);
        let range = act.range_f32();
        let mut expected = vec![0f32; p.output_len()];
        depthwise_conv_2d_f32(&p, range, &x, &f, None, &mut expected);
        let mut got = x.clone();
        let mut scratch = vec![0f32; depthwise_in_place_scratch(&p).unwrap()];
        depthwise_conv_2d_f32_in_place(&p, range, &f, None, &mut got, &mut scratch);
        prop_assert_eq!(bits(&got), bits(&expected));
    }

    #[test]
    fn block_i8_in_place_matches_two_reference_convs(
        wa in same_window(), wb_filter in (1usize..4, 1usize..4, 1usize..3), wb_pad in any::<(u8, u8)>(),
        batches in 1usize..3, c in 1usize..4, ct in 1usize..4,
        qx in quant(), qt in quant(), qc in quant(), qy in quant(),
        act_a in activation(), act_b in activation(), act_add in activation(),
        conv_is_first in any::<bool>(), seed in any::<u64>(),
    ) {
        let (fh, fw, d) = wb_filter;
        let [h, w] = wa.input;
        let (eh, ew) = (effective_filter_size(fh, d), effective_filter_size(fw, d));
        let wb = Window2d::explicit([h, w], [fh, fw], [1, 1], [d, d],
            [usize::from(wb_pad.0) % eh, usize::from(wb_pad.1) % ew], [h, w]).unwrap();
        let a = Conv2dParams::with_window(batches, c, [ct, wa.filter[0], wa.filter[1], c], wa).unwrap();
        let b = Conv2dParams::with_window(batches, ct, [c, fh, fw, ct], wb).unwrap();
        let x = data_i8(a.input_len(), seed);
        let fa = data_i8(a.filter_len(), !seed);
        let fb = data_i8(b.filter_len(), seed ^ 11);
        let ba: Vec<i32> = data_i8(ct, seed ^ 1).into_iter().map(|v| i32::from(v) * 31).collect();
        let bb: Vec<i32> = data_i8(c, seed ^ 2).into_iter().map(|v| i32::from(v) * 23).collect();
        let (sa, sb) = (scales(ct, seed ^ 4, true), scales(c, seed ^ 6, false));
        let mut storage = vec![QuantizedMultiplier::ZERO; sa.len()];
        let qa = ConvQuant::prepare(qx, &sa, qt, act_a, &mut storage).unwrap();
        let qb = ConvQuant::prepare(qt, &sb, qc, act_b, &mut []).unwrap();
        let add = if conv_is_first {
            AddParams::prepare(qc, qx, qy, act_add)
        } else {
            AddParams::prepare(qx, qc, qy, act_add)
        }.unwrap();
        let r = ResidualAdd { add, conv_is_first };
        let mut t = vec![0i8; a.output_len()];
        conv_2d_i8(&a, &qa, &x, &fa, Some(&ba), &mut t);
        let mut expected = vec![0i8; b.output_len()];
        conv_2d_i8_add(&b, &qb, &r, &t, &fb, Some(&bb), &x, &mut expected);
        let mut got = x.clone();
        match block_ring_len(&a, &b) {
            Some(len) => {
                prop_assert!(len <= a.output_len());
                let mut ring = vec![0i8; len];
                conv_block_i8_in_place(&a, &qa, &fa, Some(&ba), &b, &qb, &r, &fb, Some(&bb), &mut got, &mut ring);
                prop_assert_eq!(got, expected);
            }
            None => {
                // Refused pairs (conv_b reads fewer rows below than conv_a pads above):
                // the kernel writes nothing even with a generous ring.
                let below_b = (fh - 1) * d - b.window.pad[0];
                prop_assert!(below_b < a.window.pad[0]);
                let mut ring = vec![0i8; a.output_len()];
                conv_block_i8_in_place(&a, &qa, &fa, Some(&ba), &b, &qb, &r, &fb, Some(&bb), &mut got, &mut ring);
                prop_assert_eq!(got, x);
            }
        }
    }
}

#[test]
fn strided_or_shape_changing_params_are_refused() {
    let w = Window2d::new(
        [6, 6],
        [3, 3],
        [2, 2],
        [1, 1],
        kiln_runtime::padding::Padding::Same,
    )
    .unwrap();
    let p = Conv2dParams::with_window(1, 2, [2, 3, 3, 2], w).unwrap();
    assert_eq!(conv_2d_in_place_scratch(&p), None);
    let d = DepthwiseConv2dParams::with_window(1, 2, [1, 3, 3, 2], 1, w).unwrap();
    assert_eq!(depthwise_in_place_scratch(&d), None);
    let q = ConvQuant::prepare(
        TensorQuant::new(0.1, 0),
        &[0.1],
        TensorQuant::new(0.1, 0),
        FusedActivation::None,
        &mut [],
    )
    .unwrap();
    let x = data_i8(72, 1);
    let mut got = x.clone();
    conv_2d_i8_in_place(&p, &q, &data_i8(72, 2), None, &mut got, &mut [0; 72]);
    assert_eq!(got, x);
    // Channels change: 2 -> 3 is not in place.
    let same = Window2d::new(
        [6, 6],
        [1, 1],
        [1, 1],
        [1, 1],
        kiln_runtime::padding::Padding::Same,
    )
    .unwrap();
    let p = Conv2dParams::with_window(1, 2, [3, 1, 1, 2], same).unwrap();
    assert_eq!(conv_2d_in_place_scratch(&p), None);
    // A pointwise conv needs a one-pixel ring.
    let p = Conv2dParams::with_window(1, 4, [4, 1, 1, 4], same).unwrap();
    assert_eq!(conv_2d_in_place_scratch(&p), Some(4));
    let _ = ActivationRangeF32::NONE;
}
