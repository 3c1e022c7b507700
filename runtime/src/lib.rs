//! # kiln-runtime
//!
//! The `#![cfg_attr(not(test), no_std)]`, allocation-free kernels that kiln's host executor, generated
//! firmware and emulator benchmarks all call. One kernel, one truth: the int8 kernels
//! are bit-exact with TensorFlow Lite Micro's reference kernels (commit 90b983c, built
//! without `TFLITE_SINGLE_ROUNDING`, like its pip package); every op also has an `f32`
//! kernel for training, calibration and debugging.
//!
//! Every op follows the same pattern:
//!
//! 1. At compile time (host), a `prepare`-style constructor turns float scales, zero
//!    points, shapes and attributes into a small `Copy` params struct holding exactly the
//!    integers TFLM's `Prepare` computes (multipliers, shifts, clamp ranges, radii).
//! 2. At run time (device or host), a kernel function takes the params and plain slices
//!    and loops. Kernels never allocate and never panic, whatever their arguments: each
//!    checks its slice lengths against its params once, on entry, and **returns without
//!    writing anything** when they do not match its documented preconditions. After that
//!    check the loops index without bounds checks (see `runtime/no-panic-check/`, which
//!    proves that no kernel links in a panic path on Cortex-M).
//!
//! Elementwise ops also have `*_in_place` variants that overwrite their input with the
//! output (for the memory planner's in-place reuse); they give exactly the results of
//! the out-of-place kernels.
//!
//! Layout is NHWC for activations, OHWI for conv filters, `[1, H, W, C * multiplier]`
//! for depthwise filters and `[out, in]` for fully connected weights.
//!
//! ```
//! use kiln_runtime::activation::FusedActivation;
//! use kiln_runtime::kernels::reference::add::{add_i8, AddParams};
//! use kiln_runtime::quant::TensorQuant;
//! use kiln_runtime::shape::Broadcast;
//!
//! // Host side: int8 ADD of two tensors with different scales, fused ReLU.
//! let params = AddParams::prepare(
//!     TensorQuant::new(0.05, -3),
//!     TensorQuant::new(0.1, 2),
//!     TensorQuant::new(0.12, -10),
//!     FusedActivation::Relu,
//! )
//! .unwrap();
//! let plan = Broadcast::new(&[1, 4], &[1, 4]).unwrap();
//!
//! // Device side: a pure function over slices.
//! let a = [10i8, -20, 30, 127];
//! let b = [-5i8, 5, 0, 127];
//! let mut out = [0i8; 4];
//! add_i8(&params, &plan, &a, &b, &mut out);
//! assert!(out.iter().all(|&v| v >= -10)); // ReLU clamps at the output zero point
//! ```
//!
//! ## Adding an op
//!
//! One snake_case name, reused everywhere: IR variant, shape rule,
//! `kernels/reference/<op>.rs` (params struct + `prepare` + int8 and f32 kernels +
//! tests), optimized variants behind the same signature, emitter, gradient rule.
//!
//! ## Modules
//!
//! - [`quant`]: requantization primitives and TFLM's multiplier computations.
//! - [`fixed_point`]: gemmlowp fixed-point `exp`, `logistic`, `tanh`, reciprocal.
//! - [`activation`]: fused activations and their clamp ranges.
//! - [`padding`]: SAME/VALID padding and 2-D window geometry.
//! - [`shape`]: fixed-capacity shapes and broadcasting.
//! - [`kernels::reference`]: one module per op.
//! - [`kernels::dsp`]: the same int8 kernels for Cortex-M cores with the DSP extension
//!   (SMLAD/SXTB16 through `asm!`, portable twins on the host), bit-exact with the
//!   reference ones.
//! - [`kernels::in_place`]: kernels that write their result over their input.
//! - [`error`]: the `Copy` error enum of params constructors.
#![cfg_attr(not(test), no_std)]
// Unsafe code is limited to `unchecked` (indexing without bounds checks), the kernel
// loops that call it, each with a SAFETY comment that bounds its indices, and the `asm!`
// blocks of `kernels::dsp::simd`, each with a SAFETY comment on what it reads and writes.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod activation;
pub mod error;
pub mod fixed_point;
pub mod kernels;
pub mod padding;
pub mod quant;
pub mod shape;
mod unchecked;

pub use error::{Error, Result};
