//! CONCATENATION along any axis: a pure copy for every element type.
//!
//! TFLM's int8 kernel does not requantize: its Prepare requires every input to have the
//! output's scale and zero point ([`check_quant_i8`]). A graph whose inputs differ must
//! get explicit requantize (QUANTIZE int8->int8) ops first.

use crate::error::{Error, Result};
use crate::quant::TensorQuant;
use crate::shape::{checked_product, Shape};

/// Outer/inner sizes of one CONCATENATION call, from the output shape and axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcatenationParams {
    /// Product of output dims before the axis.
    pub outer_size: usize,
    /// Product of output dims after the axis.
    pub inner_size: usize,
    /// Output size along the axis (sum of the inputs' sizes along it).
    pub axis_size: usize,
}

impl ConcatenationParams {
    /// Params from the output shape and the (possibly negative) axis.
    pub fn new(output_shape: &[usize], axis: i32) -> Result<Self> {
        let shape = Shape::new(output_shape)?;
        let rank = shape.rank() as i32;
        let axis = if axis < 0 { axis + rank } else { axis };
        if axis < 0 || axis >= rank {
            return Err(Error::InvalidAxis);
        }
        let axis = axis as usize;
        let dims = shape.dims();
        Ok(Self {
            outer_size: dims.iter().take(axis).product(),
            inner_size: dims.iter().skip(axis + 1).product(),
            axis_size: dims.get(axis).copied().unwrap_or(1),
        })
    }

    /// Number of output elements.
    pub fn output_len(&self) -> usize {
        self.outer_size * self.axis_size * self.inner_size
    }
}

/// TFLM's int8 Prepare check: every input's scale and zero point equal the output's.
pub fn check_quant_i8(inputs: &[TensorQuant], output: TensorQuant) -> Result<()> {
    for q in inputs {
        if f64::from(q.scale) != f64::from(output.scale) || q.zero_point != output.zero_point {
            return Err(Error::QuantizationMismatch);
        }
    }
    Ok(())
}

/// CONCATENATION for any element type. Each input's size along the axis is inferred
/// from its length (`len / (outer * inner)`). Preconditions: every input length is a
/// multiple of `outer_size * inner_size`, and the lengths sum to `output.len() ==
/// p.output_len()`; otherwise nothing is written.
pub fn concatenation<T: Copy>(p: &ConcatenationParams, inputs: &[&[T]], output: &mut [T]) {
    let outer = p.outer_size;
    let Some(output_len) = checked_product(&[outer, p.axis_size, p.inner_size]) else {
        return;
    };
    // With outer * inner == 0 there is nothing to copy (and no row size to check).
    let Some(chunk) = outer.checked_mul(p.inner_size).filter(|&c| c > 0) else {
        return;
    };
    let mut total = 0usize;
    for input in inputs {
        if input.len().checked_rem(chunk) != Some(0) {
            return;
        }
        total = match total.checked_add(input.len()) {
            Some(t) => t,
            None => return,
        };
    }
    if total != output_len || output.len() != output_len {
        return;
    }
    // Copy row k of every input in turn: `len / outer` elements each. The checks above
    // make every `get` and `split_at_mut_checked` below succeed; their `None` arms only
    // keep panic paths out.
    let mut rest: &mut [T] = output;
    for k in 0..outer {
        for input in inputs {
            let copy = input.len() / outer.max(1);
            let Some(src) = input.get(k * copy..(k + 1) * copy) else {
                return;
            };
            let Some((dst, tail)) = core::mem::take(&mut rest).split_at_mut_checked(copy) else {
                return;
            };
            for (d, s) in dst.iter_mut().zip(src) {
                *d = *s;
            }
            rest = tail;
        }
    }
}

/// int8 CONCATENATION (inputs must share the output quantization, see [`check_quant_i8`]).
pub fn concatenation_i8(p: &ConcatenationParams, inputs: &[&[i8]], output: &mut [i8]) {
    concatenation(p, inputs, output);
}

/// f32 CONCATENATION.
pub fn concatenation_f32(p: &ConcatenationParams, inputs: &[&[f32]], output: &mut [f32]) {
    concatenation(p, inputs, output);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn middle_axis() {
        // [2,1,2] ++ [2,2,2] along axis 1 -> [2,3,2]
        let p = ConcatenationParams::new(&[2, 3, 2], -2).unwrap();
        let a = [1i8, 2, 3, 4];
        let b = [10i8, 11, 12, 13, 20, 21, 22, 23];
        let mut out = [0i8; 12];
        concatenation_i8(&p, &[&a, &b], &mut out);
        assert_eq!(out, [1, 2, 10, 11, 12, 13, 3, 4, 20, 21, 22, 23]);
    }

    #[test]
    fn last_axis_f32_and_quant_check() {
        let p = ConcatenationParams::new(&[2, 3], 1).unwrap();
        let mut out = [0.0f32; 6];
        concatenation_f32(&p, &[&[1.0, 2.0], &[3.0, 4.0, 5.0, 6.0]], &mut out);
        assert_eq!(out, [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
        let q = TensorQuant::new(0.1, 2);
        assert!(check_quant_i8(&[q, q], q).is_ok());
        assert!(check_quant_i8(&[q, TensorQuant::new(0.2, 2)], q).is_err());
        assert!(ConcatenationParams::new(&[2, 3], 2).is_err());
    }
}
