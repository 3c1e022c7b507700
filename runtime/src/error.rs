//! The one error type of the runtime: returned by params constructors when the
//! numbers a host compiler hands in cannot describe a valid kernel call.
//!
//! Kernels themselves never return errors (nor panic): once a params struct exists, the
//! call is valid as long as the slice lengths match the shapes it was built from, and a
//! kernel given other lengths returns without writing anything.

use core::fmt;

/// Why a params constructor refused its arguments. Small and `Copy` so it costs
/// nothing on a device; the host side wraps it with node and tensor context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A scale is zero, negative, NaN or infinite where a positive finite one is needed.
    InvalidScale,
    /// A real multiplier is outside the range the chosen fixed-point form accepts
    /// (TFLM aborts with `TFLITE_CHECK` in the same situation).
    MultiplierOutOfRange,
    /// A zero point is outside the int8 range.
    InvalidZeroPoint,
    /// A shape has a zero-sized or inconsistent dimension, or the shapes of a call disagree.
    ShapeMismatch,
    /// More dimensions than [`crate::shape::MAX_DIMS`].
    TooManyDims,
    /// An axis index is out of range for the tensor's rank.
    InvalidAxis,
    /// Stride, dilation or filter size of zero, or padding that leaves no output.
    InvalidWindow,
    /// Quantization parameters that TFLM requires to be equal (or fixed) are not,
    /// e.g. concatenation inputs with different scales, softmax output not 1/256, -128.
    QuantizationMismatch,
    /// A caller-provided slice (for per-channel multipliers) has the wrong length.
    BufferLength,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Error::InvalidScale => "scale must be positive and finite",
            Error::MultiplierOutOfRange => "real multiplier out of range for fixed-point form",
            Error::InvalidZeroPoint => "zero point outside int8 range",
            Error::ShapeMismatch => "shapes are empty or do not match",
            Error::TooManyDims => "too many dimensions",
            Error::InvalidAxis => "axis out of range",
            Error::InvalidWindow => "invalid stride, dilation, filter size or padding",
            Error::QuantizationMismatch => "quantization parameters not supported by the kernel",
            Error::BufferLength => "caller-provided buffer has the wrong length",
        };
        f.write_str(s)
    }
}

/// Result alias used by every params constructor.
pub type Result<T> = core::result::Result<T, Error>;
