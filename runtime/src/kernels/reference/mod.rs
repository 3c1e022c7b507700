//! Plain-loop reference kernels, one module per op, each with int8 (TFLM bit-exact) and
//! f32 variants and a params struct built at compile time.

pub mod add;
pub mod average_pool_2d;
pub mod concatenation;
pub mod conv_2d;
pub mod depthwise_conv_2d;
pub mod dequantize;
pub mod fully_connected;
pub mod logistic;
pub mod max_pool_2d;
pub mod mean;
pub mod mul;
pub mod pad;
pub mod quantize;
pub mod relu;
pub mod relu6;
pub mod softmax;
pub mod tanh;

#[cfg(test)]
pub(crate) mod test_util;
