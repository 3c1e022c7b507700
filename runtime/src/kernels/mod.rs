//! Kernels, grouped by implementation. `reference` holds the plain-loop kernels that
//! define correctness; `dsp` holds the optimized variants for Arm cores with the DSP
//! extension, with the same signatures (plus scratch where they need it), each
//! property-tested against its reference twin.

pub mod dsp;
pub mod in_place;
pub mod reference;
