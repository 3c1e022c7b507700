//! Scales and zero points from real ranges, and float → int8/int32 conversion, as
//! TFLite's converter computes them.

/// Smallest int8 value.
const QMIN: f64 = -128.0;
/// Largest int8 value.
const QMAX: f64 = 127.0;
/// Largest magnitude of a symmetric (narrow-range) int8 weight.
const WEIGHT_MAX: f64 = 127.0;

/// Asymmetric int8 `(scale, zero_point)` for the real range `[lo, hi]`, widened to
/// include 0 so that 0 (padding, ReLU) is exact: gemmlowp/TFLite's
/// `ChooseQuantizationParams`, whose zero point is taken from whichever end has the
/// smaller rounding error, then rounded ("nudged") to an integer in `[-128, 127]`. An
/// empty range (all zeros) gets scale 1 and zero point 0.
pub fn asymmetric(lo: f32, hi: f32) -> (f32, i32) {
    let rmin = f64::from(lo.min(0.0));
    let rmax = f64::from(hi.max(0.0));
    let span = rmax - rmin;
    if !span.is_finite() || span <= f64::from(f32::MIN_POSITIVE) {
        return (1.0, 0);
    }
    let scale = (rmax - rmin) / (QMAX - QMIN);
    let from_min = QMIN - rmin / scale;
    let from_max = QMAX - rmax / scale;
    let from_min_error = QMIN.abs() + (rmin / scale).abs();
    let from_max_error = QMAX.abs() + (rmax / scale).abs();
    let zero_point = if from_min_error < from_max_error {
        from_min
    } else {
        from_max
    };
    let nudged = zero_point.round().clamp(QMIN, QMAX) as i32;
    (scale as f32, nudged)
}

/// Symmetric narrow-range int8 scale (`max|w| / 127`) of weights whose largest
/// magnitude is `max_abs`; 1.0 for an all-zero channel (any scale represents it).
pub fn symmetric_scale(max_abs: f32) -> f32 {
    if max_abs > 0.0 && max_abs.is_finite() {
        (f64::from(max_abs) / WEIGHT_MAX) as f32
    } else {
        1.0
    }
}

/// `round(x / scale) + zero_point`, rounding half away from zero, saturated to int8.
pub fn quantize_i8(x: f32, scale: f32, zero_point: i32) -> i8 {
    let q = (f64::from(x) / f64::from(scale)).round() + f64::from(zero_point);
    q.clamp(QMIN, QMAX) as i8
}

/// A symmetric weight: `round(x / scale)` saturated to `[-127, 127]`.
pub fn quantize_weight(x: f32, scale: f32) -> i8 {
    (f64::from(x) / f64::from(scale))
        .round()
        .clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8
}

/// An int32 bias: `round(x / scale)`, saturated (callers widen the weight scale first
/// so it never saturates, see [`bias_fits`]).
pub fn quantize_bias(x: f32, scale: f32) -> i32 {
    (f64::from(x) / f64::from(scale))
        .round()
        .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}

/// True when `x / scale` fits in int32.
pub fn bias_fits(x: f32, scale: f32) -> bool {
    (f64::from(x) / f64::from(scale)).abs() < f64::from(i32::MAX)
}

/// `scale * (q - zero_point)`.
pub fn dequantize(q: i8, scale: f32, zero_point: i32) -> f32 {
    scale * (i32::from(q) - zero_point) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asymmetric_matches_tflite_examples() {
        // [0, 255] raw pixels: the shipped ResNet-8's input quantization.
        assert_eq!(asymmetric(0.0, 255.0), (1.0, -128));
        // Symmetric-ish range: zero point from the end with less rounding error.
        let (s, z) = asymmetric(-1.0, 1.0);
        assert!((s - 2.0 / 255.0).abs() < 1e-9);
        // Both ends give -0.5; the max end has the smaller error and rounds away from 0.
        assert_eq!(z, -1);
        // The range always includes 0.
        let (s, z) = asymmetric(2.0, 4.0);
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(z, -128);
        let (s, z) = asymmetric(-4.0, -2.0);
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(z, 127);
        // Degenerate ranges.
        assert_eq!(asymmetric(0.0, 0.0), (1.0, 0));
        assert!(asymmetric(f32::NAN, 1.0).0.is_finite());
    }

    #[test]
    fn zero_is_exact_after_nudging() {
        for (lo, hi) in [(-0.3, 5.1), (-7.7, 0.2), (-1.234, 9.87), (-100.0, 3.0)] {
            let (s, z) = asymmetric(lo, hi);
            assert_eq!(dequantize(quantize_i8(0.0, s, z), s, z), 0.0);
            // Both ends stay representable within one step.
            assert!(dequantize(-128, s, z) <= lo + s && dequantize(127, s, z) >= hi - s);
        }
    }

    #[test]
    fn weights_and_biases() {
        assert_eq!(symmetric_scale(127.0), 1.0);
        assert_eq!(symmetric_scale(0.0), 1.0);
        assert_eq!(quantize_weight(-200.0, 1.0), -127);
        assert_eq!(quantize_weight(2.5, 1.0), 3);
        assert_eq!(quantize_bias(1e12, 1.0), i32::MAX);
        assert!(!bias_fits(3e9, 1.0) && bias_fits(2e9, 1.0));
        assert_eq!(quantize_i8(1000.0, 1.0, 0), 127);
    }
}
