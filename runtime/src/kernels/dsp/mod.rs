//! int8 kernels for Arm cores with the DSP extension (Cortex-M4, M7, M33, ...), each
//! bit-exact with its twin in [`reference`](crate::kernels::reference).
//!
//! - **conv** ([`conv_2d`]): four output pixels at a time are unpacked once into 16-bit
//!   columns (im2col; a 1x1 conv packs its four input pixels straight from the input),
//!   the filter length padded to a multiple of 8; then [`simd::conv_block4`] runs the
//!   whole channel loop as one `asm!` block: per filter word one `LDR`, two `SXTB16`
//!   and two `LDM`s of column words for eight `SMLAD`s (16 MACs, each unpacked operand
//!   reused four times), then requantization, clamp and the four strided stores of the
//!   channel. Variants run a 1x1 conv in place in chunks of pixels, a same-size conv in
//!   place row by row, a conv fused with the residual ADD, and a whole banded residual
//!   block, all through the same loop nest.
//! - **depthwise** ([`depthwise_conv_2d`]): four channels at a time with
//!   `SXTB16`/`SMLABB`/`SMLATT`; 3x3 filters stage three padded input rows per channel
//!   group (rolled from row to row, so also in place) and run nine unrolled taps.
//! - **fully connected** ([`fully_connected`]): two weight rows per input load with
//!   `SMLAD`; **pooling** ([`pool_2d`]): average sums in 16-bit lanes, max with
//!   `SSUB8`/`SEL` on four channels at once.
//!
//! Requantization uses a 32-bit form of TFLM's double rounding (see `requant`), checked
//! per channel against the accumulator bounds, with the reference arithmetic as the
//! fallback. The instructions live in [`simd`]: through `asm!` when the build target
//! has the DSP extension (`cfg(kiln_dsp)`, decided by `runtime/build.rs` from the
//! target, `-C target-cpu` and `-C target-feature`: thumbv7em always, M33 with `+dsp`;
//! a build-script cfg rather than a cargo feature or `cfg(target_feature = "dsp")`,
//! which stable Rust does not expose for Arm), a portable Rust function with the same
//! results elsewhere. So the host's property tests run the very loops the firmware
//! runs, against the reference kernels, on random shapes, strides, paddings,
//! dilations, channel counts and multipliers; the `asm!` blocks themselves are checked
//! by the emulated golden runs (`kiln emulate`, `tests/generated_crates.rs`).
//!
//! Kernels keep the reference signatures; the ones that need scratch memory (im2col
//! columns, staged rows, requantization tables) take a `&mut [u32]` the caller sizes
//! with their `*_scratch_words` function — kiln's emitter does it at compile time and
//! `run` holds it on its stack (`SCRATCH_BYTES` in the generated module: 5,952 B for
//! KWS, 7,328 B for ResNet-8). Preconditions are the reference's, plus a large enough
//! scratch and an input offset in `[-128, 128]`; when they fail nothing is written.
//!
//! ## Measured (emulated Cortex-M4, QEMU `mps2-an386`, `-icount shift=0`)
//!
//! | model | reference kernels (start of issue 8) | DSP kernels | TFLM + CMSIS-NN | run + kernels `.text` |
//! |---|---|---|---|---|
//! | kws_ref_model | 38,383,200 | 4,571,000 (0.59x) | 7,700,000 | 15,476 B |
//! | pretrainedResnet_quant | 107,866,560 | 16,772,080 (0.56x) | 29,860,000 | 15,592 B |
//!
//! Instructions per inference from `kiln emulate models/MODEL/model.tflite --machine
//! mps2-an386` (all 20 golden samples bit-exact; `kiln bench` prints the same total and
//! the per-layer split), `.text` from `kiln compile models/MODEL/model.tflite --target
//! cortex-m4` ("code bytes"), at commit c073507. The reference column is the first
//! measurement of issue 8 (reference kernels, the planner of that time); the Cortex-M3
//! (`mps2-an385`, no DSP extension: reference and plain in-place kernels) takes
//! 20,547,960 and 91,047,560 instructions with today's plans.

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
