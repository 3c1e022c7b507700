//! int8 FULLY_CONNECTED for DSP cores, bit-exact with [`reference::fully_connected`]:
//! two weight rows at a time against one input row, four values per step; input and
//! weight words are unpacked with `SXTAB16` (their zero points folded in) so each input
//! half feeds two `SMLAD`s. No scratch.
//!
//! Preconditions are the reference's plus input and weight offsets in `[-128, 128]`
//! (every int8 zero point); otherwise nothing is written.
//!
//! [`reference::fully_connected`]: crate::kernels::reference::fully_connected

use super::requant::{apply, channel, fits};
use super::simd::{smlad, splat16, sxtab16, sxtab16_ror8, word};
use crate::kernels::reference::fully_connected::{FullyConnectedParams, FullyConnectedQuant};
use crate::unchecked::set;

/// Largest `|(weight + weight_offset) * (input + input_offset)|`: 256 * 256.
const PRODUCT: u32 = 256 * 256;

/// The dot products of input row `x` with weight rows `w0` and `w1` (all `k` long),
/// offsets included: `offsets` holds the input offset in both halves, `woffsets` the
/// weight offset.
#[inline(always)]
fn dot_1x2(x: &[i8], w0: &[i8], w1: &[i8], offsets: (u32, i32), woffsets: (u32, i32)) -> [i32; 2] {
    let (xs, xt) = x.as_chunks::<4>();
    let (w0s, w0t) = w0.as_chunks::<4>();
    let (w1s, w1t) = w1.as_chunks::<4>();
    let (mut a0, mut a1) = (0i32, 0i32);
    for ((x, w0), w1) in xs.iter().zip(w0s).zip(w1s) {
        let x = word(*x);
        let (xe, xo) = (sxtab16(offsets.0, x), sxtab16_ror8(offsets.0, x));
        let w0 = word(*w0);
        a0 = smlad(xe, sxtab16(woffsets.0, w0), a0);
        a0 = smlad(xo, sxtab16_ror8(woffsets.0, w0), a0);
        let w1 = word(*w1);
        a1 = smlad(xe, sxtab16(woffsets.0, w1), a1);
        a1 = smlad(xo, sxtab16_ror8(woffsets.0, w1), a1);
    }
    for ((&x, &w0), &w1) in xt.iter().zip(w0t).zip(w1t) {
        let x = i32::from(x) + offsets.1;
        a0 = a0.wrapping_add((i32::from(w0) + woffsets.1) * x);
        a1 = a1.wrapping_add((i32::from(w1) + woffsets.1) * x);
    }
    [a0, a1]
}

/// int8 FULLY_CONNECTED: [`reference::fully_connected::fully_connected_i8`]'s result.
///
/// [`reference::fully_connected::fully_connected_i8`]: crate::kernels::reference::fully_connected::fully_connected_i8
#[allow(unsafe_code)]
pub fn fully_connected_i8(
    p: &FullyConnectedParams,
    q: &FullyConnectedQuant<'_>,
    input: &[i8],
    weights: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
) {
    let (rows, d, od) = (p.batches, p.accum_depth, p.output_depth);
    if rows.checked_mul(d) != Some(input.len())
        || od.checked_mul(d) != Some(weights.len())
        || rows.checked_mul(od) != Some(output.len())
        || bias.is_some_and(|b| b.len() != od)
        || !q.multipliers.covers(od)
        || !(-128..=128).contains(&q.input_offset)
        || !(-128..=128).contains(&q.weights_offset)
    {
        return;
    }
    let bias_of = |o: usize| bias.and_then(|b| b.get(o)).copied().unwrap_or(0);
    let offset = q.output_offset;
    let fast = (0..od).all(|o| fits(bias_of(o), q.multipliers.get(o), offset, d, PRODUCT));
    // Adds the bias, requantizes and clamps output `o`'s sum.
    let finish = |acc: i32, o: usize| -> i8 {
        let (b, m) = (bias_of(o), q.multipliers.get(o));
        let scaled = if fast {
            apply(&channel(b, m, offset), acc.wrapping_add(b))
        } else {
            m.apply(acc.wrapping_add(b)).wrapping_add(offset)
        };
        q.activation.clamp_i8(scaled)
    };
    let offsets = (splat16(q.input_offset), q.input_offset);
    let woffsets = (splat16(q.weights_offset), q.weights_offset);
    for b in 0..rows {
        let x = input.get(b * d..b * d + d).unwrap_or(&[]);
        let mut o = 0;
        while o < od {
            let w0 = weights.get(o * d..o * d + d).unwrap_or(&[]);
            // An odd last row is paired with itself and stored once.
            let w1 = weights.get(o * d + d..o * d + 2 * d).unwrap_or(w0);
            let acc = dot_1x2(x, w0, w1, offsets, woffsets);
            // SAFETY: b < rows and o < od, so b * od + o < rows * od == output.len().
            unsafe { set(output, b * od + o, finish(acc[0], o)) };
            if o + 1 < od {
                // SAFETY: as above, with o + 1 < od.
                unsafe { set(output, b * od + o + 1, finish(acc[1], o + 1)) };
            }
            o += 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dsp::test_util::{arb_multipliers, Case};
    use crate::kernels::reference::fully_connected as reference;
    use crate::quant::ChannelMultipliers;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn matches_the_reference(
            (p, case, (multipliers, per_channel), weights_offset) in (1usize..4, 1usize..40, 1usize..12)
                .prop_flat_map(|(rows, depth, outputs)| {
                    let p = FullyConnectedParams::new(rows, [outputs, depth]).unwrap();
                    (
                        Just(p),
                        Case::arb(p.input_len(), p.weights_len(), outputs, depth),
                        arb_multipliers(outputs),
                        prop_oneof![Just(0), -128i32..=128],
                    )
                })
        ) {
            let q = FullyConnectedQuant {
                input_offset: case.input_offset,
                weights_offset,
                output_offset: case.output_offset,
                multipliers: if per_channel {
                    ChannelMultipliers::PerChannel(&multipliers)
                } else {
                    ChannelMultipliers::PerTensor(multipliers[0])
                },
                activation: case.activation,
            };
            let bias = case.bias.as_deref();
            let mut want = vec![0i8; p.output_len()];
            let mut got = vec![0i8; p.output_len()];
            reference::fully_connected_i8(&p, &q, &case.input, &case.filter, bias, &mut want);
            fully_connected_i8(&p, &q, &case.input, &case.filter, bias, &mut got);
            prop_assert_eq!(got, want);
        }
    }
}
