//! MAX_POOL_2D over NHWC: the largest in-bounds element of each window, then the
//! activation clamp. int8 follows TFLM's `reference_integer_ops::MaxPool` (no
//! requantization; use [`pool_activation_range_i8`] for the clamp). Padded positions
//! never contribute, so no overflow is possible.

use crate::activation::{ActivationRange, ActivationRangeF32};
pub use crate::kernels::reference::average_pool_2d::{pool_activation_range_i8, Pool2dParams};
use crate::unchecked::get;

/// int8 MAX_POOL_2D, bit-exact with TFLM. Preconditions: `input.len() ==
/// p.input_len()`, `output.len() == p.output_len()`; otherwise nothing is written.
#[allow(unsafe_code)]
pub fn max_pool_2d_i8(
    p: &Pool2dParams,
    activation: ActivationRange,
    input: &[i8],
    output: &mut [i8],
) {
    if !p.lens_match(input.len(), output.len()) {
        return;
    }
    let mut outputs = output.iter_mut();
    p.for_each_window(|window| {
        let mut max = i8::MIN;
        // SAFETY: the window lies inside the input, so i < input.len() (lens_match).
        window.for_each_index(|i| max = max.max(unsafe { get(input, i) }));
        // for_each_window visits exactly output.len() windows.
        if let Some(slot) = outputs.next() {
            *slot = activation.clamp_i8(i32::from(max));
        }
    });
}

/// f32 MAX_POOL_2D as TFLM's float reference (starts from the lowest float). Same
/// preconditions as [`max_pool_2d_i8`].
#[allow(unsafe_code)]
pub fn max_pool_2d_f32(
    p: &Pool2dParams,
    activation: ActivationRangeF32,
    input: &[f32],
    output: &mut [f32],
) {
    if !p.lens_match(input.len(), output.len()) {
        return;
    }
    let mut outputs = output.iter_mut();
    p.for_each_window(|window| {
        let mut max = f32::MIN;
        window.for_each_index(|i| {
            // SAFETY: as in max_pool_2d_i8.
            let x = unsafe { get(input, i) };
            if x > max {
                max = x;
            }
        });
        if let Some(slot) = outputs.next() {
            *slot = activation.apply(max);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::FusedActivation;
    use crate::padding::Padding;
    use crate::quant::TensorQuant;

    #[test]
    fn max_with_padding_and_relu() {
        let p = Pool2dParams::new([1, 3, 3, 1], [2, 2], [2, 2], Padding::Same).unwrap();
        let input: [i8; 9] = [-9, -8, -7, -6, -5, -4, -3, -2, -1];
        let mut out = [0i8; 4];
        max_pool_2d_i8(&p, ActivationRange::FULL_I8, &input, &mut out);
        assert_eq!(out, [-5, -4, -2, -1]);
        let q = TensorQuant::new(0.5, -3);
        let relu = pool_activation_range_i8(q, q, FusedActivation::Relu).unwrap();
        max_pool_2d_i8(&p, relu, &input, &mut out);
        assert_eq!(out, [-3, -3, -2, -1]);
        let inf: [f32; 9] = core::array::from_fn(|i| i as f32 - 9.0);
        let mut outf = [0.0; 4];
        max_pool_2d_f32(&p, FusedActivation::Relu.range_f32(), &inf, &mut outf);
        assert_eq!(outf, [0.0; 4]);
    }
}
