//! Random cases for the DSP kernels' property tests: data, offsets, clamps, biases and
//! multipliers, mostly in the ranges real models use and sometimes at the extremes
//! (huge biases, any multiplier and shift) so the exact fallback paths run too.

use crate::activation::ActivationRange;
use crate::quant::QuantizedMultiplier;
use proptest::prelude::*;

/// `n` random int8 values.
pub fn bytes(n: usize) -> impl Strategy<Value = Vec<i8>> {
    proptest::collection::vec(any::<i8>(), n)
}

/// A clamp range: full, ReLU-like or arbitrary (possibly empty, which every kernel
/// treats alike).
pub fn activation() -> impl Strategy<Value = ActivationRange> {
    prop_oneof![
        Just(ActivationRange::FULL_I8),
        (-128i32..=127).prop_map(|min| ActivationRange { min, max: 127 }),
        (-128i32..=127, -128i32..=127).prop_map(|(a, b)| ActivationRange {
            min: a.min(b),
            max: a.max(b)
        }),
    ]
}

/// One multiplier: usually what `quantize_multiplier` makes of a scale below one,
/// sometimes any multiplier with any shift TFLM allows.
pub fn multiplier() -> impl Strategy<Value = QuantizedMultiplier> {
    prop_oneof![
        8 => ((1i32 << 30)..i32::MAX, -14i32..=1)
            .prop_map(|(multiplier, shift)| QuantizedMultiplier { multiplier, shift }),
        1 => (any::<i32>(), -31i32..=30)
            .prop_map(|(multiplier, shift)| QuantizedMultiplier { multiplier, shift }),
    ]
}

/// `channels` multipliers and whether to use them per channel (else the first one for
/// every channel).
pub fn arb_multipliers(channels: usize) -> impl Strategy<Value = (Vec<QuantizedMultiplier>, bool)> {
    (
        proptest::collection::vec(multiplier(), channels.max(1)),
        any::<bool>(),
    )
}

/// A bias entry: small as in real models, sometimes anything.
pub fn bias_value() -> impl Strategy<Value = i32> {
    prop_oneof![9 => -100_000i32..100_000, 1 => any::<i32>()]
}

/// Quantization and data of a conv-like call.
#[derive(Debug, Clone)]
pub struct Case {
    /// Minus the input zero point (an int8 value).
    pub input_offset: i32,
    /// The output zero point.
    pub output_offset: i32,
    /// The fused-activation clamp.
    pub activation: ActivationRange,
    /// Input data.
    pub input: Vec<i8>,
    /// Filter or weights data.
    pub filter: Vec<i8>,
    /// One bias per output channel, or none.
    pub bias: Option<Vec<i32>>,
}

impl Case {
    /// A case with the given element counts and `channels` biases.
    pub fn arb(
        input_len: usize,
        filter_len: usize,
        channels: usize,
        _k: usize,
    ) -> impl Strategy<Value = Case> {
        (
            -127i32..=128,
            -128i32..=127,
            activation(),
            bytes(input_len),
            bytes(filter_len),
            proptest::option::weighted(0.8, proptest::collection::vec(bias_value(), channels)),
        )
            .prop_map(
                |(input_offset, output_offset, activation, input, filter, bias)| Case {
                    input_offset,
                    output_offset,
                    activation,
                    input,
                    filter,
                    bias,
                },
            )
    }
}
