//! TFLite SAME / VALID padding and the 2-D sliding-window geometry shared by
//! conv_2d, depthwise_conv_2d, average_pool_2d and max_pool_2d.
//!
//! Mirrors TFLM's `ComputePaddingHeightWidth` (tensorflow/lite/kernels/padding.h):
//! output sizes first, then the top/left padding from the total padding
//! (the odd pixel goes to the bottom/right).

use crate::error::{Error, Result};

/// TFLite padding scheme of a windowed op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Output size `ceil(in / stride)`; zeros (or the zero point) around the input.
    Same,
    /// Only windows fully inside the input: `(in + stride - effective_filter) / stride`.
    Valid,
}

/// `(filter - 1) * dilation + 1`: the extent a dilated filter covers.
pub fn effective_filter_size(filter: usize, dilation: usize) -> usize {
    (filter.saturating_sub(1)) * dilation + 1
}

/// TFLM's `ComputeOutSize`: output length along one axis. Errors on zero stride,
/// dilation or filter, and when no output position remains.
pub fn compute_out_size(
    padding: Padding,
    image: usize,
    filter: usize,
    stride: usize,
    dilation: usize,
) -> Result<usize> {
    if filter == 0 || stride == 0 || dilation == 0 {
        return Err(Error::InvalidWindow);
    }
    let eff = effective_filter_size(filter, dilation);
    let out = match padding {
        Padding::Same => image.div_ceil(stride),
        Padding::Valid => {
            if image + stride < eff {
                return Err(Error::InvalidWindow);
            }
            (image + stride - eff) / stride
        }
    };
    if out == 0 {
        return Err(Error::InvalidWindow);
    }
    Ok(out)
}

/// TFLM's `ComputePaddingWithOffset`: `(before, offset)` where the total padding is
/// `2 * before + offset`; `before` is what the kernels subtract, `offset` is the extra
/// pixel that lands after the input.
pub fn compute_padding_with_offset(
    stride: usize,
    dilation: usize,
    in_size: usize,
    filter: usize,
    out_size: usize,
) -> (usize, usize) {
    let eff = effective_filter_size(filter, dilation);
    let needed = (out_size.saturating_sub(1)) * stride + eff;
    let total = needed.saturating_sub(in_size);
    (total / 2, total % 2)
}

/// Geometry of a 2-D sliding window over an NHWC input: everything a windowed kernel
/// needs besides the tensors. Indices are `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window2d {
    /// Input spatial size `[h, w]`.
    pub input: [usize; 2],
    /// Filter (or pooling window) size `[h, w]`.
    pub filter: [usize; 2],
    /// Stride `[h, w]`, at least 1.
    pub stride: [usize; 2],
    /// Dilation `[h, w]`, at least 1 (always 1 for pooling).
    pub dilation: [usize; 2],
    /// Padding before the input `[top, left]` (TFLM's `padding_values.height/width`).
    pub pad: [usize; 2],
    /// Output spatial size `[h, w]`.
    pub output: [usize; 2],
}

impl Window2d {
    /// Window geometry from a TFLite padding scheme, computed like TFLM's Prepare.
    pub fn new(
        input: [usize; 2],
        filter: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        padding: Padding,
    ) -> Result<Self> {
        let mut output = [0; 2];
        let mut pad = [0; 2];
        for i in 0..2 {
            output[i] = compute_out_size(padding, input[i], filter[i], stride[i], dilation[i])?;
            pad[i] =
                compute_padding_with_offset(stride[i], dilation[i], input[i], filter[i], output[i])
                    .0;
        }
        Ok(Self {
            input,
            filter,
            stride,
            dilation,
            pad,
            output,
        })
    }

    /// Window geometry with explicit top/left padding and output size (e.g. ONNX `pads`).
    /// Every output window must overlap the input.
    pub fn explicit(
        input: [usize; 2],
        filter: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        pad: [usize; 2],
        output: [usize; 2],
    ) -> Result<Self> {
        for i in 0..2 {
            if filter[i] == 0 || stride[i] == 0 || dilation[i] == 0 || output[i] == 0 {
                return Err(Error::InvalidWindow);
            }
            // The first and last windows must touch the input.
            let eff = effective_filter_size(filter[i], dilation[i]);
            if pad[i] >= eff || (output[i] - 1) * stride[i] >= pad[i] + input[i] {
                return Err(Error::InvalidWindow);
            }
        }
        Ok(Self {
            input,
            filter,
            stride,
            dilation,
            pad,
            output,
        })
    }

    /// Input row/column of the window origin for output position `out` along axis `axis`
    /// (0: height, 1: width); negative when it lies in the padding. Wraps instead of
    /// overflowing; an axis above 1 counts as stride 0, padding 0.
    #[inline]
    pub fn origin(&self, axis: usize, out: usize) -> isize {
        let stride = self.stride.get(axis).copied().unwrap_or(0);
        let pad = self.pad.get(axis).copied().unwrap_or(0);
        (out.wrapping_mul(stride) as isize).wrapping_sub(pad as isize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_and_valid_sizes() {
        assert_eq!(compute_out_size(Padding::Same, 5, 3, 2, 1).unwrap(), 3);
        assert_eq!(compute_out_size(Padding::Valid, 5, 3, 2, 1).unwrap(), 2);
        assert_eq!(compute_out_size(Padding::Valid, 7, 3, 1, 2).unwrap(), 3);
        assert!(compute_out_size(Padding::Valid, 2, 5, 1, 1).is_err());
        assert!(compute_out_size(Padding::Same, 2, 5, 0, 1).is_err());
    }

    #[test]
    fn same_padding_puts_odd_pixel_after() {
        // in 4, filter 3, stride 2 -> out 2, total pad = (1*2 + 3) - 4 = 1 -> before 0.
        let w = Window2d::new([4, 4], [3, 3], [2, 2], [1, 1], Padding::Same).unwrap();
        assert_eq!(w.output, [2, 2]);
        assert_eq!(w.pad, [0, 0]);
        // in 5, filter 3, stride 1 -> total 2 -> before 1.
        let w = Window2d::new([5, 6], [3, 3], [1, 1], [1, 1], Padding::Same).unwrap();
        assert_eq!(w.pad, [1, 1]);
        // dilation 2: effective 5 -> total 4 -> before 2.
        let w = Window2d::new([5, 5], [3, 3], [1, 1], [2, 2], Padding::Same).unwrap();
        assert_eq!(w.pad, [2, 2]);
        assert_eq!(w.origin(0, 0), -2);
    }

    #[test]
    fn explicit_checks() {
        assert!(Window2d::explicit([4, 4], [3, 3], [1, 1], [1, 1], [1, 1], [4, 4]).is_ok());
        assert!(Window2d::explicit([4, 4], [3, 3], [1, 1], [1, 1], [3, 0], [4, 4]).is_err());
    }
}
