//! int8 kernels for Arm cores with the DSP extension (Cortex-M4, M7, M33, ...), each
//! bit-exact with its twin in [`reference`](crate::kernels::reference).
//!
//! They process two output pixels and two output channels at a time with packed 16-bit
//! arithmetic (`SMLAD`: two multiply-accumulates per instruction; `SXTB16`/`SXTAB16`:
//! four int8 values unpacked, offset included, in two), and requantize with a 32-bit
//! form of TFLM's rounding (see `requant`). The arithmetic lives in [`simd`]: one
//! instruction each through `asm!` when the build target has the DSP extension
//! (`cfg(kiln_dsp)`, decided by `runtime/build.rs`), a portable Rust function with the
//! same results elsewhere. So the host's property tests run the very loops the
//! firmware runs, against the reference kernels, on random shapes, strides, paddings,
//! dilations, channel counts and multipliers.
//!
//! Kernels keep the reference signatures; the ones that need scratch memory (im2col
//! columns) take a `&mut [u32]` the caller sizes with their `*_scratch_words` function —
//! kiln's emitter does it at compile time. Preconditions are the reference's, plus a
//! large enough scratch and an input offset in `[-128, 128]`; when they fail nothing is
//! written.

mod add;
pub mod conv_2d;
pub mod depthwise_conv_2d;
pub mod fully_connected;
mod gemm;
pub mod pool_2d;
mod requant;
pub mod simd;

#[cfg(test)]
pub(crate) mod test_util;
