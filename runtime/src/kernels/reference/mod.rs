//! Plain-loop reference kernels, one module per op, each with int8 (TFLM bit-exact) and
//! f32 variants and a params struct built at compile time.

pub mod add;
pub mod average_pool_2d;
pub mod clip;
pub mod concatenation;
pub mod conv_2d;
pub mod depthwise_conv_2d;
pub mod dequantize;
pub mod div;
pub mod fully_connected;
pub mod leaky_relu;
pub mod logistic;
pub mod max_pool_2d;
pub mod mean;
pub mod mul;
pub mod pad;
pub mod quantize;
pub mod relu;
pub mod relu6;
pub mod softmax;
pub mod sub;
pub mod tanh;
pub mod transpose;
pub mod transpose_conv_2d;

#[cfg(test)]
pub(crate) mod test_util;
