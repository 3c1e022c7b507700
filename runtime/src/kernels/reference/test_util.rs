//! Test helpers: a tiny deterministic RNG and float <-> int8 conversions.

use crate::quant::TensorQuant;

/// Linear congruential generator: deterministic, dependency-free test data.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(
            seed.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        )
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next_u32() as f32 / (1u64 << 31) as f32)
    }
    pub fn int8(&mut self) -> i8 {
        self.next_u32() as u8 as i8
    }
    pub fn range_i32(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next_u32() % (hi - lo + 1) as u32) as i32
    }
}

pub fn quantize_one(x: f32, q: TensorQuant) -> i8 {
    ((x / q.scale).round() as i32 + q.zero_point).clamp(-128, 127) as i8
}

pub fn quantize_all<const N: usize>(x: &[f32], q: TensorQuant) -> [i8; N] {
    core::array::from_fn(|i| quantize_one(x[i], q))
}

pub fn dequantize_all<const N: usize>(x: &[i8], q: TensorQuant) -> [f32; N] {
    core::array::from_fn(|i| q.scale * (i32::from(x[i]) - q.zero_point) as f32)
}

/// Asserts every int8 output is within `tol` steps of the float result quantized.
pub fn assert_close_i8(got: &[i8], want_f: &[f32], q: TensorQuant, tol: i32) {
    assert_eq!(got.len(), want_f.len());
    for (i, (&g, &f)) in got.iter().zip(want_f).enumerate() {
        let w = quantize_one(f, q);
        assert!(
            (i32::from(g) - i32::from(w)).abs() <= tol,
            "element {i}: int8 {g} vs float-quantized {w} (float {f})"
        );
    }
}
