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
//!   place block by block (each block's results held back until no later block reads
//!   the input pixels they replace), a conv fused with the residual ADD, and a whole
//!   banded residual block, all through the same loop nest.
//! - **depthwise** ([`depthwise_conv_2d`]): four channels at a time with
//!   `SXTB16`/`SMLABB`/`SMLATT`; 3x3 filters stage three padded input rows per channel
//!   group (rolled from row to row, so also in place) and run nine unrolled taps.
//! - **fully connected** ([`fully_connected`]): two weight rows per input load with
//!   `SMLAD`; **pooling** ([`pool_2d`]): average sums in 16-bit lanes, max with
//!   `SSUB8`/`SEL` on four channels at once.
//!
//! Requantization uses a 32-bit form of TFLM's double rounding (see `requant`), checked
//! per channel against the accumulator bounds, with the reference arithmetic as the
//! fallback. The compiler prepares each conv's requantization words (bias, multiplier,
//! shifts, output zero point) at compile time and keeps them in flash
//! (`ChannelMultipliers::Prepared`, 20 bytes per output channel); given any other
//! multiplier table the kernels build the same words in scratch. The conv + residual
//! ADD kernels take ADD parameters within the 32-bit form's bounds (all that
//! `AddParams::prepare` makes; `conv_2d::conv_2d_add_supported`) and write nothing for
//! others, which the compiler gives the reference kernels. The instructions live in [`simd`]: through `asm!` when the build target
//! has the DSP extension (`cfg(kiln_dsp)`, decided by `runtime/build.rs` from the
//! target, `-C target-cpu` and `-C target-feature`: thumbv7em always, M33 with `+dsp`;
//! a build-script cfg rather than a cargo feature or `cfg(target_feature = "dsp")`,
//! which stable Rust does not expose for Arm), a portable Rust function with the same
//! results elsewhere. So the host's property tests run the very loops the firmware
//! runs, against the reference kernels, on random shapes, strides, paddings,
//! dilations, channel counts and multipliers; the `asm!` blocks themselves are checked
//! by the emulated golden runs (`kiln emulate`, `tests/generated_crates.rs`).
//!
//! Kernels keep the reference signatures; the ones that need scratch memory take a
//! `&mut [u32]` the caller sizes with their `*_scratch_words` function. kiln's planner
//! reserves it in the arena for the layer's one step (`PlanOptions::dsp_scratch`), so it
//! overlaps dead tensors and `ARENA_BYTES` includes it (TFLM's arena likewise holds
//! CMSIS-NN's scratch buffers); `run` keeps nothing on its stack but its frames. What
//! the scratch holds, per conv with `k = filter_h * filter_w * filter_input_depth`
//! rounded up to `kp`, a multiple of 8:
//!
//! - four packed im2col columns, `8 * kp` bytes (16-bit values);
//! - the prepared requantization of each output channel, 20 bytes per channel, unless
//!   it comes from flash (always in compiled models);
//! - `kp` bytes to gather a column in, only when the input channels are not a multiple
//!   of 4; a zero-padded copy of the filter (`out_c * kp` bytes) only when `kp > k`;
//! - in place: a 1x1 conv's chunk of 16 input pixels, a same-size conv's
//!   `max(pad_top * width + pad_left, 4)` held-back output pixels (each written over its
//!   input pixel once the next block has gathered its columns and no later block
//!   reads it); conv + ADD: one output row and the ADD's two 256-entry tables (2 KB); a
//!   banded block: both convs' scratch and the rows of its first conv one output row
//!   reads; a 3x3 depthwise conv: three padded input rows of a channel group.
//!
//! `kiln compile models/MODEL/model.tflite --target cortex-m4` prints each step's
//! scratch (`scratch@off`) and the live bytes. KWS: 368 B for its first conv, 1,536 B
//! for each in-place 1x1 conv (512 + 1,024), 112 B for each depthwise; the peak is
//! 8,000 + 1,536 = 9,536 B. ResNet-8: the peak is its second block's in-place 3x3 conv,
//! 16,384 (x, which the shortcut reads after) + 8,192 + 2,848 (2,304 columns, 17
//! held-back pixels of 32 channels) = 27,424 B, then the shortcut's conv + ADD at 27,264
//! B. With the channels prepared in scratch and two held-back rows (commit 81fcec8) the
//! peaks were 10,816 / 28,544 B; before this accounting the scratch was one stack array
//! besides the arena: 5,952 / 7,328 B. Preconditions are the reference's, plus a
//! large enough scratch and an input offset in `[-128, 128]`; when they fail nothing is
//! written.
//!
//! ## Measured (emulated Cortex-M4, QEMU `mps2-an386`, `-icount shift=0`)
//!
//! | model | reference kernels (start of issue 8) | DSP kernels | TFLM + CMSIS-NN | runtime flash | arena (scratch included) |
//! |---|---|---|---|---|---|
//! | kws_ref_model | 38,383,200 | 4,571,240 (0.59x) | 7,700,000 | 15,448 B | 9,536 B (TFLM 22,824) |
//! | pretrainedResnet_quant | 107,866,560 | 16,782,800 (0.56x) | 29,860,000 | 16,292 B | 27,424 B (TFLM 55,000) |
//!
//! Instructions per inference, runtime flash (kernels, `run` and their `.rodata` in the
//! QEMU firmware; the prepared channel tables, 7,680 / 6,720 B, count as parameter
//! tables) and arena from `kiln bench models/MODEL/model.tflite` (sample 0 bit-exact;
//! the emulation tests check all 20 golden samples), at commit b4839d9 (`kiln compile ...
//! --target cortex-m4` measures 15,722 / 16,004 B of `.text` for `run` and the kernels
//! in a probe binary, which the compiler inlines differently). The reference column is the
//! first measurement of issue 8 (reference kernels, the planner of that time); the
//! Cortex-M3 (`mps2-an385`, no DSP extension: reference and plain in-place kernels)
//! takes 21,484,040 and 89,868,560 instructions with today's plans.

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
