//! Runtime parameter values as Rust constant expressions.
//!
//! Every kiln-runtime params struct derives `Debug` and has only public fields, so its
//! `Debug` form (`Conv2dParams { batches: 1, .. }`) is already a Rust struct literal once
//! the runtime's types are in scope. Generated code builds each kernel's params as a
//! `const` from that text; the end-to-end tests compile every generated crate, so any
//! drift between the two shows up there.

use std::fmt::Debug;

/// `value` as a Rust expression, valid where the runtime's types are imported.
pub fn literal(value: &impl Debug) -> String {
    let text = format!("{value:?}");
    // f32::MAX and friends print in exponent form, which Rust accepts; infinities and
    // NaN never occur in params (constructors reject non-finite scales).
    debug_assert!(!text.contains("inf") && !text.contains("NaN"), "{text}");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_runtime::activation::ActivationRange;

    #[test]
    fn debug_form_is_a_struct_literal() {
        let r = ActivationRange {
            min: -128,
            max: 127,
        };
        assert_eq!(literal(&r), "ActivationRange { min: -128, max: 127 }");
        assert_eq!(literal(&[1usize, 2]), "[1, 2]");
        assert_eq!(literal(&0.5f32), "0.5");
        assert_eq!(literal(&1e-7f32), "1e-7");
    }
}
