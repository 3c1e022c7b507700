//! Kernels, grouped by implementation. `reference` holds the plain-loop kernels that
//! define correctness; optimized variants (Cortex-M DSP, ...) will sit beside it with the
//! same signatures and be property-tested against it.

pub mod in_place;
pub mod reference;
