//! FULLY_CONNECTED: `output[b, o] = sum_d input[b, d] * weights[o, d] + bias[o]`, weights
//! `[out, in]`, any number of batch rows (`keep_num_dims` only changes the output shape,
//! which is the caller's business).
//!
//! int8 has TFLM's two paths:
//! * per-tensor weights (`FullyConnected`): multiplier from
//!   `QuantizeMultiplier((f64)(in_scale * w_scale as f32) / (f64)out_scale)`: note the
//!   product is taken in **f32** first (`GetQuantizedConvolutionMultipler`); a weight
//!   zero point is honoured.
//! * per-channel weights (`FullyConnectedPerChannel`, chosen by TFLM when the weights
//!   carry more than one scale): `(f64)in * (f64)w[o] / (f64)out` per output row, no
//!   weight zero point.
//!
//! Overflow: products are below `2^16` in magnitude (`255 * 255` with a weight offset),
//! so the `i32` accumulator is exact for up to `2^15` inputs per row plus the bias.

use crate::activation::{ActivationRange, ActivationRangeF32, FusedActivation};
use crate::error::{Error, Result};
use crate::quant::{
    check_scale, conv_channel_multipliers, quantize_multiplier, ChannelMultipliers,
    QuantizedMultiplier, TensorQuant,
};
use crate::unchecked::get;

/// Shapes of one FULLY_CONNECTED call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullyConnectedParams {
    /// Number of input rows (product of all output dims but the last).
    pub batches: usize,
    /// Inputs per row (weights dimension 1).
    pub accum_depth: usize,
    /// Outputs per row (weights dimension 0).
    pub output_depth: usize,
}

impl FullyConnectedParams {
    /// Params from the row count, the weights shape `[out, in]`.
    pub fn new(batches: usize, weights_shape: [usize; 2]) -> Result<Self> {
        let [output_depth, accum_depth] = weights_shape;
        if batches == 0 || accum_depth == 0 || output_depth == 0 {
            return Err(Error::ShapeMismatch);
        }
        Ok(Self {
            batches,
            accum_depth,
            output_depth,
        })
    }

    /// Params from an input shape whose element count is a multiple of the weights'
    /// input depth (TFLite flattens the leading dims into batches).
    pub fn from_input_len(input_len: usize, weights_shape: [usize; 2]) -> Result<Self> {
        let depth = weights_shape[1];
        if depth == 0 || !input_len.is_multiple_of(depth) {
            return Err(Error::ShapeMismatch);
        }
        Self::new(input_len / depth, weights_shape)
    }

    /// Number of input elements.
    pub fn input_len(&self) -> usize {
        self.batches * self.accum_depth
    }

    /// Number of weight elements.
    pub fn weights_len(&self) -> usize {
        self.output_depth * self.accum_depth
    }

    /// Number of output elements.
    pub fn output_len(&self) -> usize {
        self.batches * self.output_depth
    }
}

/// int8 quantization of a FULLY_CONNECTED op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullyConnectedQuant<'a> {
    /// `-input_zero_point`.
    pub input_offset: i32,
    /// `-weights_zero_point` (0 for per-channel weights).
    pub weights_offset: i32,
    /// `output_zero_point`.
    pub output_offset: i32,
    /// One multiplier, or one per output row.
    pub multipliers: ChannelMultipliers<'a>,
    /// Fused-activation clamp.
    pub activation: ActivationRange,
}

impl<'a> FullyConnectedQuant<'a> {
    /// Per-tensor weights: TFLM's `CalculateOpDataFullyConnected` non-per-channel path.
    pub fn prepare_per_tensor(
        input: TensorQuant,
        weights: TensorQuant,
        output: TensorQuant,
        activation: FusedActivation,
    ) -> Result<Self> {
        let input = input.validate()?;
        let output = output.validate()?;
        let weights = weights.validate()?;
        // f32 product first, exactly like TFLM.
        let product = input.scale * weights.scale;
        check_scale(product)?;
        let m = quantize_multiplier(f64::from(product) / f64::from(output.scale))?;
        Ok(Self {
            input_offset: -input.zero_point,
            weights_offset: -weights.zero_point,
            output_offset: output.zero_point,
            multipliers: ChannelMultipliers::PerTensor(m),
            activation: activation.range_i8(output.scale, output.zero_point)?,
        })
    }

    /// Per-channel weights (more than one scale): one multiplier per output row written
    /// into `storage` (length = number of scales). Weights must be symmetric.
    /// With exactly one scale this falls back to [`Self::prepare_per_tensor`], as TFLM does.
    pub fn prepare_per_channel(
        input: TensorQuant,
        weights_scales: &[f32],
        output: TensorQuant,
        activation: FusedActivation,
        storage: &'a mut [QuantizedMultiplier],
    ) -> Result<Self> {
        if let [single] = weights_scales {
            return Self::prepare_per_tensor(
                input,
                TensorQuant::new(*single, 0),
                output,
                activation,
            );
        }
        let input = input.validate()?;
        let output = output.validate()?;
        conv_channel_multipliers(input.scale, weights_scales, output.scale, storage)?;
        Ok(Self {
            input_offset: -input.zero_point,
            weights_offset: 0,
            output_offset: output.zero_point,
            multipliers: ChannelMultipliers::PerChannel(storage),
            activation: activation.range_i8(output.scale, output.zero_point)?,
        })
    }
}

/// Whether the slices have the lengths `p` describes (overflow-checked) and the bias, if
/// any, one entry per output.
fn lens_match<T, B>(
    p: &FullyConnectedParams,
    input: &[T],
    weights: &[T],
    bias: Option<&[B]>,
    output: &[T],
) -> bool {
    let (b, d, od) = (p.batches, p.accum_depth, p.output_depth);
    b.checked_mul(d) == Some(input.len())
        && od.checked_mul(d) == Some(weights.len())
        && b.checked_mul(od) == Some(output.len())
        && bias.is_none_or(|bias| bias.len() == od)
}

/// int8 FULLY_CONNECTED, bit-exact with TFLM's `FullyConnected` / `FullyConnectedPerChannel`.
///
/// Preconditions: slice lengths equal `p.input_len()`, `p.weights_len()`,
/// `p.output_len()`; `bias` (if any) and `q.multipliers` cover `p.output_depth`;
/// otherwise nothing is written.
#[allow(unsafe_code)]
pub fn fully_connected_i8(
    p: &FullyConnectedParams,
    q: &FullyConnectedQuant<'_>,
    input: &[i8],
    weights: &[i8],
    bias: Option<&[i32]>,
    output: &mut [i8],
) {
    if !lens_match(p, input, weights, bias, output) || !q.multipliers.covers(p.output_depth) {
        return;
    }
    let d = p.accum_depth;
    let mut outputs = output.iter_mut();
    for b in 0..p.batches {
        for o in 0..p.output_depth {
            let mut acc = 0i32;
            for k in 0..d {
                // SAFETY: b < batches, o < output_depth, k < accum_depth: the indices are
                // below batches * accum_depth == input.len() and output_depth *
                // accum_depth == weights.len() (lens_match).
                let (x, f) = unsafe { (get(input, b * d + k), get(weights, o * d + k)) };
                let prod = (i32::from(f) + q.weights_offset) * (i32::from(x) + q.input_offset);
                acc = acc.wrapping_add(prod);
            }
            if let Some(bias) = bias {
                // SAFETY: o < output_depth == bias.len() (lens_match).
                acc = acc.wrapping_add(unsafe { get(bias, o) });
            }
            let scaled = q
                .multipliers
                .get(o)
                .apply(acc)
                .wrapping_add(q.output_offset);
            // The loops visit exactly output.len() positions, so this never ends early.
            if let Some(slot) = outputs.next() {
                *slot = q.activation.clamp_i8(scaled);
            }
        }
    }
}

/// f32 FULLY_CONNECTED as TFLM's float reference (sum in input order, then bias, then
/// clamp). Same preconditions as [`fully_connected_i8`].
#[allow(unsafe_code)]
pub fn fully_connected_f32(
    p: &FullyConnectedParams,
    activation: ActivationRangeF32,
    input: &[f32],
    weights: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
    if !lens_match(p, input, weights, bias, output) {
        return;
    }
    let d = p.accum_depth;
    let mut outputs = output.iter_mut();
    for b in 0..p.batches {
        for o in 0..p.output_depth {
            let mut total = 0.0f32;
            for k in 0..d {
                // SAFETY: as in fully_connected_i8.
                let (x, f) = unsafe { (get(input, b * d + k), get(weights, o * d + k)) };
                total += x * f;
            }
            // SAFETY: o < output_depth == bias.len() (lens_match).
            let bias_value = bias.map_or(0.0, |bias| unsafe { get(bias, o) });
            if let Some(slot) = outputs.next() {
                *slot = activation.apply(total + bias_value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::test_util::{
        assert_close_i8, dequantize_all, quantize_all, Lcg,
    };

    #[test]
    fn hand_checked_two_batches() {
        let p = FullyConnectedParams::new(2, [2, 3]).unwrap();
        let q = FullyConnectedQuant::prepare_per_tensor(
            TensorQuant::new(1.0, 1),
            TensorQuant::new(1.0, 0),
            TensorQuant::new(1.0, -2),
            FusedActivation::None,
        )
        .unwrap();
        let input = [2i8, 3, 4, 1, 1, 1]; // minus zp 1: [1,2,3], [0,0,0]
        let weights = [1i8, 1, 1, 1, -1, 2];
        let mut out = [0i8; 4];
        fully_connected_i8(&p, &q, &input, &weights, Some(&[10, -10]), &mut out);
        // row 0: 6+10-2 = 14, (1-2+6)-10-2 = -7; row 1: 8, -12
        assert_eq!(out, [14, -7, 8, -12]);
    }

    #[test]
    fn per_tensor_multiplier_uses_f32_product() {
        let (i, w, o) = (0.1f32, 0.3f32, 0.7f32);
        let q = FullyConnectedQuant::prepare_per_tensor(
            TensorQuant::new(i, 0),
            TensorQuant::new(w, 0),
            TensorQuant::new(o, 0),
            FusedActivation::None,
        )
        .unwrap();
        let expected = quantize_multiplier(f64::from(i * w) / f64::from(o)).unwrap();
        assert_eq!(q.multipliers, ChannelMultipliers::PerTensor(expected));
    }

    #[test]
    fn per_channel_single_scale_is_per_tensor() {
        let q = FullyConnectedQuant::prepare_per_channel(
            TensorQuant::new(0.1, 0),
            &[0.3],
            TensorQuant::new(0.7, 0),
            FusedActivation::None,
            &mut [],
        )
        .unwrap();
        assert!(matches!(q.multipliers, ChannelMultipliers::PerTensor(_)));
    }

    #[test]
    fn int8_tracks_f32_per_channel() {
        let mut rng = Lcg::new(3);
        let p = FullyConnectedParams::new(3, [5, 16]).unwrap();
        let (in_q, out_q) = (TensorQuant::new(0.05, -20), TensorQuant::new(0.1, 5));
        let scales = [0.01f32, 0.02, 0.005, 0.03, 0.012];
        let input_f: [f32; 48] = core::array::from_fn(|_| rng.uniform(-5.0, 5.0));
        let input_q = quantize_all::<48>(&input_f, in_q);
        let w_q: [i8; 80] = core::array::from_fn(|_| rng.int8());
        let w_f: [f32; 80] = core::array::from_fn(|i| f32::from(w_q[i]) * scales[i / 16]);
        let mut out_f = [0.0f32; 15];
        fully_connected_f32(
            &p,
            ActivationRangeF32::NONE,
            &dequantize_all::<48>(&input_q, in_q),
            &w_f,
            None,
            &mut out_f,
        );
        let mut storage = [QuantizedMultiplier::ZERO; 5];
        let q = FullyConnectedQuant::prepare_per_channel(
            in_q,
            &scales,
            out_q,
            FusedActivation::None,
            &mut storage,
        )
        .unwrap();
        let mut out8 = [0i8; 15];
        fully_connected_i8(&p, &q, &input_q, &w_q, None, &mut out8);
        assert_close_i8(&out8, &out_f, out_q, 1);
    }
}
