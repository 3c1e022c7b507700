//! TANH.
//!
//! int8 follows TFLM's `reference_integer_ops::Tanh`: the same input rescaling as
//! LOGISTIC ([`SigmoidInputParams`]), gemmlowp's Q4.27 `tanh`, and a shift to Q0.7 with
//! **no output zero point** (TFLM's kernel assumes scale 1/128, zero point 0 and its
//! Prepare does not check either).

use crate::error::Result;
use crate::fixed_point;
pub use crate::kernels::reference::logistic::SigmoidInputParams;
use crate::kernels::reference::logistic::{Rescaled, INPUT_INTEGER_BITS};
use crate::quant::{rounding_divide_by_pot, TensorQuant};

/// int8 TANH params: TFLM's Prepare (output quantization is not consulted).
pub fn prepare_tanh(input: TensorQuant) -> Result<SigmoidInputParams> {
    SigmoidInputParams::prepare(input)
}

#[inline]
fn tanh_i8_one(p: &SigmoidInputParams, x: i8) -> i8 {
    match p.rescale(x) {
        Rescaled::Low => i8::MIN,
        Rescaled::High => i8::MAX,
        Rescaled::Q4(q4) => {
            let q0 = fixed_point::tanh(q4, INPUT_INTEGER_BITS);
            rounding_divide_by_pot(q0, 31 - 7).clamp(-128, 127) as i8
        }
    }
}

/// int8 TANH, bit-exact with TFLM. Precondition: `input.len() == output.len()`;
/// otherwise nothing is written.
pub fn tanh_i8(p: &SigmoidInputParams, input: &[i8], output: &mut [i8]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = tanh_i8_one(p, x);
    }
}

/// In-place int8 TANH: overwrites `data` with [`tanh_i8`] of it.
pub fn tanh_i8_in_place(p: &SigmoidInputParams, data: &mut [i8]) {
    for v in data.iter_mut() {
        *v = tanh_i8_one(p, *v);
    }
}

/// f32 TANH (`tanhf`). Precondition: `input.len() == output.len()`; otherwise nothing
/// is written.
pub fn tanh_f32(input: &[f32], output: &mut [f32]) {
    if input.len() != output.len() {
        return;
    }
    for (&x, o) in input.iter().zip(output.iter_mut()) {
        *o = libm::tanhf(x);
    }
}

/// In-place f32 TANH: overwrites `data` with [`tanh_f32`] of it.
pub fn tanh_f32_in_place(data: &mut [f32]) {
    for v in data.iter_mut() {
        *v = libm::tanhf(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::test_util::{assert_close_i8, dequantize_all};

    #[test]
    fn known_outputs() {
        let p = prepare_tanh(TensorQuant::new(0.1, 0)).unwrap();
        let mut out = [0i8; 3];
        tanh_i8(&p, &[0, 127, -128], &mut out);
        assert_eq!(out, [0, 127, -128]);
    }

    #[test]
    fn int8_tracks_f32_all_inputs() {
        let in_q = TensorQuant::new(0.03, 12);
        let out_q = TensorQuant::new(1.0 / 128.0, 0);
        let p = prepare_tanh(in_q).unwrap();
        let input: [i8; 256] = core::array::from_fn(|i| (i as i32 - 128) as i8);
        let mut out8 = [0i8; 256];
        tanh_i8(&p, &input, &mut out8);
        let mut outf = [0.0f32; 256];
        tanh_f32(&dequantize_all::<256>(&input, in_q), &mut outf);
        assert_close_i8(&out8, &outf, out_q, 1);
    }
}
