//! Operators and their attributes.

/// Activation fused into an operator's output clamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Activation {
    /// No clamp beyond the output type's range.
    #[default]
    None,
    /// Clamp to `[0, inf)`.
    Relu,
    /// Clamp to `[-1, 1]`.
    ReluN1To1,
    /// Clamp to `[0, 6]`.
    Relu6,
}

/// How a windowed operator pads its input (TFLite semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Output size `ceil(in / stride)`; the padding is split with the extra row/column
    /// at the end.
    Same,
    /// No padding; output size `ceil((in - effective_filter + 1) / stride)`.
    Valid,
    /// Explicit zero-point (int8) or zero (f32) padding on each side, as left by folding
    /// a PAD into the op. Padded positions contribute nothing to a convolution.
    Explicit {
        /// Rows before the input.
        top: usize,
        /// Rows after the input.
        bottom: usize,
        /// Columns before the input.
        left: usize,
        /// Columns after the input.
        right: usize,
    },
}

impl Padding {
    /// `(before, after)` padding along `axis` (0 = height, 1 = width) for explicit
    /// padding, `None` for SAME and VALID.
    pub fn explicit(&self, axis: usize) -> Option<(usize, usize)> {
        match (self, axis) {
            (Padding::Explicit { top, bottom, .. }, 0) => Some((*top, *bottom)),
            (Padding::Explicit { left, right, .. }, _) => Some((*left, *right)),
            _ => None,
        }
    }
}

/// A residual ADD fused into a convolution (see `passes::fuse_residual`): the conv's
/// result, which no longer has a tensor, is added element by element to a skip operand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResidualAdd {
    /// Scale and zero point the conv result had as a tensor (int8 only).
    pub conv_quant: Option<(f32, i32)>,
    /// The conv result was the ADD's first operand (else its second).
    pub conv_is_first: bool,
    /// The ADD's fused activation.
    pub activation: Activation,
}

/// Attributes of [`Op::Conv2d`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv2dAttrs {
    /// Stride as (height, width).
    pub stride: [usize; 2],
    /// Dilation as (height, width).
    pub dilation: [usize; 2],
    /// Padding mode.
    pub padding: Padding,
    /// Fused activation.
    pub activation: Activation,
    /// A residual ADD fused into the epilogue; the skip tensor is then the fourth
    /// operand (after a bias, which fusion requires).
    pub residual: Option<ResidualAdd>,
}

/// Attributes of [`Op::DepthwiseConv2d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DepthwiseConv2dAttrs {
    /// Stride as (height, width).
    pub stride: [usize; 2],
    /// Dilation as (height, width).
    pub dilation: [usize; 2],
    /// Padding mode.
    pub padding: Padding,
    /// Output channels per input channel.
    pub depth_multiplier: usize,
    /// Fused activation.
    pub activation: Activation,
}

/// Attributes of [`Op::AveragePool2d`] and [`Op::MaxPool2d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool2dAttrs {
    /// Window as (height, width).
    pub filter: [usize; 2],
    /// Stride as (height, width).
    pub stride: [usize; 2],
    /// Padding mode.
    pub padding: Padding,
    /// Fused activation.
    pub activation: Activation,
}

/// Attributes of [`Op::TransposeConv2d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransposeConv2dAttrs {
    /// Stride as (height, width): input pixel `i` scatters to output rows from
    /// `i * stride - pad_before`.
    pub stride: [usize; 2],
    /// Dilation of the filter as (height, width).
    pub dilation: [usize; 2],
    /// Padding removed from the full ("VALID") transposed-conv output. SAME/VALID follow
    /// TFLite's TRANSPOSE_CONV; `Explicit` gives `top`/`left` (ONNX `pads` begin values),
    /// while `bottom`/`right` are implied by the output tensor's shape.
    pub padding: Padding,
    /// Fused activation.
    pub activation: Activation,
}

/// An operator. The doc of each variant lists its operands and results; shapes are NHWC.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `[input NHWC, filter OHWI, bias? (O)] -> [output NHWC]`; with a fused residual,
    /// `[input, filter, bias, skip] -> [skip + conv]`.
    Conv2d(Conv2dAttrs),
    /// `[input NHWC, filter [1, H, W, C*multiplier], bias?] -> [output NHWC]`.
    DepthwiseConv2d(DepthwiseConv2dAttrs),
    /// `[input [.., in], weights [out, in], bias? (out)] -> [output]`. The input is seen as
    /// `[batches, in]`; `keep_num_dims` keeps its leading dims in the output shape.
    FullyConnected {
        /// Fused activation.
        activation: Activation,
        /// Output keeps the input's leading dimensions instead of `[batches, out]`.
        keep_num_dims: bool,
    },
    /// `[input NHWC] -> [output NHWC]`, mean over each window (in-bounds elements only).
    AveragePool2d(Pool2dAttrs),
    /// `[input NHWC] -> [output NHWC]`, maximum over each window.
    MaxPool2d(Pool2dAttrs),
    /// `[a, b] -> [a + b]` with NumPy broadcasting.
    Add {
        /// Fused activation.
        activation: Activation,
    },
    /// `[a, b] -> [a * b]` with NumPy broadcasting.
    Mul {
        /// Fused activation.
        activation: Activation,
    },
    /// `[input] -> [output]`: same data, the output tensor's shape.
    Reshape,
    /// `[input] -> [output]`: softmax over the last axis of `beta * input`.
    Softmax {
        /// Inverse temperature.
        beta: f32,
    },
    /// `[input] -> [output]`: mean over `axes`.
    Mean {
        /// Reduced axes, sorted, without duplicates.
        axes: Vec<usize>,
        /// Reduced axes stay as size-1 dimensions.
        keep_dims: bool,
    },
    /// `[input] -> [output]`: pads each axis with `(before, after)` elements of the
    /// output's zero point (int8) or 0.0 (f32).
    Pad {
        /// One `(before, after)` pair per input axis.
        paddings: Vec<[usize; 2]>,
    },
    /// `[inputs..] -> [output]`: concatenation along `axis`.
    Concatenation {
        /// The axis the inputs are joined on.
        axis: usize,
        /// Fused activation.
        activation: Activation,
    },
    /// `[f32 or int8 input] -> [int8 output]`: quantize or requantize.
    Quantize,
    /// `[int8 input] -> [f32 output]`.
    Dequantize,
    /// `[input] -> [output]`: `1 / (1 + exp(-x))`.
    Logistic,
    /// `[input] -> [output]`: `tanh(x)`.
    Tanh,
    /// `[input] -> [output]`: `max(x, 0)`, requantized for int8.
    Relu,
    /// `[input] -> [output]`: `min(max(x, 0), 6)`, requantized for int8.
    Relu6,
    /// `[a, b] -> [a - b]` with NumPy broadcasting.
    Sub {
        /// Fused activation.
        activation: Activation,
    },
    /// `[a, b] -> [a / b]` with NumPy broadcasting.
    Div {
        /// Fused activation.
        activation: Activation,
    },
    /// `[input] -> [output]`: `x` for `x >= 0`, else `alpha * x`; requantized for int8.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `[input] -> [output]`: `min(max(x, min), max)`, requantized for int8 (ONNX Clip,
    /// and the clamp left by decomposing HardSigmoid/HardSwish).
    Clip {
        /// Lower bound (may be `-inf`).
        min: f32,
        /// Upper bound (may be `inf`).
        max: f32,
    },
    /// `[input] -> [output]`: `output.shape[i] = input.shape[perm[i]]`.
    Transpose {
        /// Output axis `i` is input axis `perm[i]`.
        perm: Vec<usize>,
    },
    /// `[input NHWC, filter OHWI, bias? (O)] -> [output NHWC]`: the gradient of a
    /// convolution with respect to its input (ONNX ConvTranspose, TFLite TRANSPOSE_CONV).
    /// The output shape is the output tensor's.
    TransposeConv2d(TransposeConv2dAttrs),
}

impl Op {
    /// The snake_case name used for this op in every folder of kiln and in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "conv_2d",
            Op::DepthwiseConv2d(_) => "depthwise_conv_2d",
            Op::FullyConnected { .. } => "fully_connected",
            Op::AveragePool2d(_) => "average_pool_2d",
            Op::MaxPool2d(_) => "max_pool_2d",
            Op::Add { .. } => "add",
            Op::Mul { .. } => "mul",
            Op::Reshape => "reshape",
            Op::Softmax { .. } => "softmax",
            Op::Mean { .. } => "mean",
            Op::Pad { .. } => "pad",
            Op::Concatenation { .. } => "concatenation",
            Op::Quantize => "quantize",
            Op::Dequantize => "dequantize",
            Op::Logistic => "logistic",
            Op::Tanh => "tanh",
            Op::Relu => "relu",
            Op::Relu6 => "relu6",
            Op::Sub { .. } => "sub",
            Op::Div { .. } => "div",
            Op::LeakyRelu { .. } => "leaky_relu",
            Op::Clip { .. } => "clip",
            Op::Transpose { .. } => "transpose",
            Op::TransposeConv2d(_) => "transpose_conv_2d",
        }
    }
}
