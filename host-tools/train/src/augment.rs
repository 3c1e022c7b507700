//! On-the-fly data augmentation of training batches: random translation with zero fill,
//! optional horizontal flip, additive Gaussian noise.
//!
//! Each sample's random numbers come from [`Rng::keyed`] on the seed, the epoch and the
//! sample's slot in the epoch, so augmentation is deterministic, independent of the
//! thread count and of the order samples are processed in, and needs no state in a
//! checkpoint. The stored dataset is never changed and evaluation never augments.

use crate::rng::Rng;
use rayon::prelude::*;
use std::fmt;

/// Which augmentations to apply to training samples; the default applies none.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augment {
    /// Shift by up to this many pixels in each direction (uniform in `-shift..=shift`
    /// for rows and columns independently), filling with zeros.
    pub shift: usize,
    /// Mirror left-right with probability 1/2 (off by default: digits must not be
    /// flipped).
    pub flip: bool,
    /// Standard deviation of the noise added to every value (0: none).
    pub noise: f32,
}

impl Augment {
    /// Parses a comma-separated list: `shift=K` (pixels), `noise=SIGMA`, `flip`; `none`
    /// or an empty string for no augmentation. Example: `shift=2,noise=0.05`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut a = Augment::default();
        let text = text.trim();
        if text.is_empty() || text == "none" {
            return Ok(a);
        }
        for item in text.split(',').map(str::trim) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            match (key, value) {
                ("flip", None) => a.flip = true,
                ("shift", Some(v)) => {
                    a.shift = v.parse().map_err(|_| {
                        format!("augmentation shift={v}: expected a whole number of pixels")
                    })?
                }
                ("noise", Some(v)) => {
                    a.noise = v
                        .parse()
                        .ok()
                        .filter(|s: &f32| s.is_finite() && *s >= 0.0)
                        .ok_or_else(|| {
                            format!("augmentation noise={v}: expected a standard deviation >= 0")
                        })?
                }
                _ => {
                    return Err(format!(
                    "unknown augmentation '{item}' (expected shift=K, noise=SIGMA, flip or none)"
                ))
                }
            }
        }
        Ok(a)
    }

    /// True when nothing is applied.
    pub fn is_none(&self) -> bool {
        self.shift == 0 && !self.flip && self.noise == 0.0
    }

    /// Checks that the augmentation fits samples of shape `sample`: shifts and flips
    /// need images `[height, width, channels]`.
    pub fn check(&self, sample: &[usize]) -> Result<(), String> {
        if (self.shift > 0 || self.flip) && sample.len() != 3 {
            return Err(format!(
                "augmentation {self} shifts or flips images, the model input {sample:?} is not [height, width, channels]"
            ));
        }
        Ok(())
    }

    /// Augments a batch in place: `x` holds samples of shape `sample` (checked by
    /// [`Augment::check`]) that sit at slots `first_slot..` of `epoch`; `seed` is the
    /// training seed.
    pub fn apply_batch(
        &self,
        x: &mut [f32],
        sample: &[usize],
        seed: u64,
        epoch: usize,
        first_slot: usize,
    ) {
        if self.is_none() {
            return;
        }
        let len: usize = sample.iter().product();
        x.par_chunks_mut(len.max(1))
            .enumerate()
            .for_each_init(Vec::new, |scratch, (b, s)| {
                let mut rng = Rng::keyed(
                    seed,
                    &[AUGMENT_STREAM, epoch as u64, (first_slot + b) as u64],
                );
                self.apply(s, sample, &mut rng, scratch);
            });
    }

    /// Augments one sample in place with random numbers from `rng`; `scratch` is
    /// reused working memory.
    pub fn apply(&self, s: &mut [f32], sample: &[usize], rng: &mut Rng, scratch: &mut Vec<f32>) {
        if let [h, w, c] = *sample {
            if self.flip && rng.next_u64() & 1 == 1 {
                for row in s.chunks_exact_mut(w * c) {
                    for x in 0..w / 2 {
                        for ch in 0..c {
                            row.swap(x * c + ch, (w - 1 - x) * c + ch);
                        }
                    }
                }
            }
            if self.shift > 0 {
                let span = 2 * self.shift + 1;
                let dy = rng.below(span) as isize - self.shift as isize;
                let dx = rng.below(span) as isize - self.shift as isize;
                if dy != 0 || dx != 0 {
                    scratch.clear();
                    scratch.extend_from_slice(s);
                    for y in 0..h as isize {
                        for x in 0..w as isize {
                            let (sy, sx) = (y - dy, x - dx);
                            let out = &mut s[(y as usize * w + x as usize) * c..][..c];
                            if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                                out.copy_from_slice(
                                    &scratch[(sy as usize * w + sx as usize) * c..][..c],
                                );
                            } else {
                                out.fill(0.0);
                            }
                        }
                    }
                }
            }
        }
        if self.noise > 0.0 {
            for v in s.iter_mut() {
                *v += self.noise * rng.normal();
            }
        }
    }
}

/// Key that separates augmentation's random stream from other keyed streams.
const AUGMENT_STREAM: u64 = 0xA06;

impl fmt::Display for Augment {
    /// The [`Augment::parse`] syntax (`none` when empty), so it round-trips.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.shift > 0 {
            parts.push(format!("shift={}", self.shift));
        }
        if self.noise > 0.0 {
            parts.push(format!("noise={:?}", self.noise));
        }
        if self.flip {
            parts.push("flip".to_string());
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let a = Augment::parse("shift=2, noise=0.05,flip").unwrap();
        assert_eq!(
            a,
            Augment {
                shift: 2,
                flip: true,
                noise: 0.05
            }
        );
        assert_eq!(Augment::parse(&a.to_string()).unwrap(), a);
        assert!(Augment::parse("none").unwrap().is_none());
        assert!(Augment::parse("").unwrap().is_none());
        for bad in [
            "rotate=3",
            "shift=-1",
            "shift",
            "noise=x",
            "noise=-0.1",
            "flip=1",
        ] {
            let e = Augment::parse(bad).unwrap_err();
            assert!(e.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
        assert!(a.check(&[784]).is_err());
        assert!(Augment::parse("noise=0.1").unwrap().check(&[784]).is_ok());
        assert!(a.check(&[28, 28, 1]).is_ok());
    }

    #[test]
    fn shift_moves_pixels_and_fills_zeros() {
        // A 3x3 image with one channel; shift 1 in some direction.
        let a = Augment {
            shift: 1,
            ..Default::default()
        };
        let image: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut seen_shifted = false;
        for seed in 0..20 {
            let mut s = image.clone();
            a.apply(&mut s, &[3, 3, 1], &mut Rng::new(seed), &mut Vec::new());
            // Every nonzero value keeps its neighbours' relative layout: find the shift.
            let pos = |v: f32| s.iter().position(|&x| x == v);
            if let Some(p) = pos(5.0) {
                let (dy, dx) = (p as isize / 3 - 1, p as isize % 3 - 1);
                for (i, &v) in s.iter().enumerate() {
                    let (sy, sx) = (i as isize / 3 - dy, i as isize % 3 - dx);
                    let want = if (0..3).contains(&sy) && (0..3).contains(&sx) {
                        image[(sy * 3 + sx) as usize]
                    } else {
                        0.0
                    };
                    assert_eq!(v, want, "seed {seed}: {s:?}");
                }
                seen_shifted |= dy != 0 || dx != 0;
            } else {
                panic!("centre pixel lost: {s:?}");
            }
        }
        assert!(seen_shifted);
    }

    #[test]
    fn flip_mirrors_rows_per_channel_and_batches_are_deterministic() {
        let a = Augment {
            flip: true,
            ..Default::default()
        };
        // 1x2 image, 2 channels: pixels (1, 2) and (3, 4).
        let mut flipped = 0;
        for seed in 0..16 {
            let mut s = vec![1.0, 2.0, 3.0, 4.0];
            a.apply(&mut s, &[1, 2, 2], &mut Rng::new(seed), &mut Vec::new());
            if s == [3.0, 4.0, 1.0, 2.0] {
                flipped += 1;
            } else {
                assert_eq!(s, [1.0, 2.0, 3.0, 4.0]);
            }
        }
        assert!((3..=13).contains(&flipped), "{flipped} of 16 flipped");
        // A batch: same seed, epoch and slots give the same result; another epoch not.
        let a = Augment::parse("shift=2,noise=0.1").unwrap();
        let base: Vec<f32> = (0..4 * 64).map(|v| (v % 7) as f32).collect();
        let run = |epoch| {
            let mut x = base.clone();
            a.apply_batch(&mut x, &[8, 8, 1], 5, epoch, 32);
            x
        };
        assert_eq!(run(0), run(0));
        assert_ne!(run(0), run(1));
        assert_ne!(run(0), base);
    }
}
