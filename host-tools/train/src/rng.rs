//! A small deterministic random number generator (SplitMix64).
//!
//! Written here instead of depending on `rand` so that a seed gives the same weights,
//! shuffles and check points on every platform and across dependency upgrades.

/// SplitMix64: 64 bits of state, full period, good enough for initialization and
/// shuffling (not for cryptography).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1A4_F87D)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }

    /// The generator's whole state, for a checkpoint; [`Rng::from_state`] continues
    /// the same sequence.
    pub fn state(&self) -> u64 {
        self.0
    }

    /// A generator continuing from a [`Rng::state`].
    pub fn from_state(state: u64) -> Self {
        Rng(state)
    }

    /// A generator for one item of a stream: a pure function of `seed` and `keys` (e.g.
    /// epoch and sample slot), so work keyed this way needs no shared state and gives
    /// the same numbers in any order, on any number of threads, and after a resume.
    pub fn keyed(seed: u64, keys: &[u64]) -> Self {
        let mut state = Rng::new(seed).next_u64();
        for &k in keys {
            state = Rng(state ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64();
        }
        Rng(state)
    }

    /// Approximately standard normal (Irwin-Hall: the sum of 12 uniforms minus 6; mean
    /// 0, variance 1, within ±6). Plain arithmetic, so bit-identical on every platform,
    /// unlike Box-Muller's `ln` and `cos`.
    pub fn normal(&mut self) -> f32 {
        let sum: f64 = (0..12).map(|_| f64::from(self.unit())).sum();
        (sum - 6.0) as f32
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_keyed_streams_differ() {
        let mut a = Rng::new(9);
        a.next_u64();
        let mut b = Rng::from_state(a.state());
        assert_eq!(a.next_u64(), b.next_u64());
        let k = |e, s| Rng::keyed(9, &[e, s]).next_u64();
        assert_eq!(k(1, 2), k(1, 2));
        assert_ne!(k(1, 2), k(2, 1));
        assert_ne!(k(0, 0), Rng::keyed(10, &[0, 0]).next_u64());
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = Rng::new(3);
        let v: Vec<f64> = (0..20000).map(|_| f64::from(r.normal())).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
