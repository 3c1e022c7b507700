//! The matrix-multiply core of the DSP convolution kernels: four input columns (four
//! output pixels) unpacked once to 16 bits with the input offset added, then every
//! filter row multiplied with all four, so each filter word is loaded and unpacked once
//! per four pixels and each unpacked half feeds four SMLADs ([`smlad_4x1`]).
//!
//! A column of `k` values `v0, v1, ...` is split into groups of four, each stored as the
//! two words `[v0, v2]` and `[v1, v3]` (the order `SXTB16` and `SXTB16 ROR #8` unpack a
//! filter word in); the `k % 4` tail values are stored one per word. The four columns are
//! interleaved: group `g` is the eight words `[c0 even, c0 odd, c1 even, c1 odd, ...]`
//! and tail value `t` the four words `[c0, c1, c2, c3]`, so one pointer walks all four.

use super::simd::{pack16, smlad_4x1, sxtab16, sxtab16_ror8, word};

/// Columns processed together.
pub(crate) const COLUMNS: usize = 4;

/// Words of scratch four interleaved packed columns of `k` values take.
pub const fn columns_words(k: usize) -> usize {
    k / 4 * 8 + k % 4 * 4
}

/// Writes column `which` (0..4) of an interleaved block, value by value or four bytes
/// at a time, in column order. Pushing more values than the column holds drops the
/// excess (never panics).
pub(crate) struct Column<'a> {
    words: &'a mut [u32],
    /// Words that hold groups of four (`8 * (k / 4)`).
    main: usize,
    /// The first word of the current group (or tail row).
    at: usize,
    /// The column's slot (0..4).
    which: usize,
    /// Values of the current group already held in `a` and `b` (0..4).
    lane: usize,
    a: u32,
    b: u32,
    /// The input offset in both halves.
    offset: u32,
    offset_value: i32,
}

impl<'a> Column<'a> {
    /// A writer of column `which` (0..4) of `k` values into `words` (at least
    /// [`columns_words`]`(k)` long); every int8 value pushed gets `offset` added.
    #[inline]
    pub(crate) fn new(words: &'a mut [u32], k: usize, offset: i32, which: usize) -> Self {
        Self {
            words,
            main: k / 4 * 8,
            at: 0,
            which: which % COLUMNS,
            lane: 0,
            a: 0,
            b: 0,
            offset: pack16(offset, offset),
            offset_value: offset,
        }
    }

    /// Appends one value (already offset).
    #[inline]
    fn push(&mut self, v: i32) {
        if self.at >= self.main {
            if let Some(w) = self.words.get_mut(self.at + self.which) {
                *w = v as u32;
            }
            self.at += COLUMNS;
            return;
        }
        let half = v as u32 & 0xFFFF;
        match self.lane {
            0 => self.a = half,
            1 => self.b = half,
            2 => self.a |= half << 16,
            _ => {
                self.b |= half << 16;
                let at = self.at + 2 * self.which;
                if let Some([wa, wb]) = self.words.get_mut(at..at + 2) {
                    *wa = self.a;
                    *wb = self.b;
                }
                self.at += 2 * COLUMNS;
            }
        }
        self.lane = (self.lane + 1) & 3;
    }

    /// Appends int8 values (each plus the offset).
    #[inline]
    pub(crate) fn push_bytes(&mut self, src: &[i8]) {
        let mut rest = src;
        while self.lane != 0 {
            let Some((&x, tail)) = rest.split_first() else {
                return;
            };
            self.push(i32::from(x) + self.offset_value);
            rest = tail;
        }
        // Whole groups: one word in, two words out.
        let room = self.main.saturating_sub(self.at) / (2 * COLUMNS);
        let (quads, _) = rest.as_chunks::<4>();
        let n = quads.len().min(room);
        if let (Some(quads), Some(out)) = (quads.get(..n), self.words.get_mut(self.at..)) {
            let (out, _) = out.as_chunks_mut::<{ 2 * COLUMNS }>();
            let which = 2 * self.which;
            for (q, o) in quads.iter().zip(out) {
                let w = word(*q);
                if let Some([a, b]) = o.get_mut(which..which + 2) {
                    *a = sxtab16(self.offset, w);
                    *b = sxtab16_ror8(self.offset, w);
                }
            }
            self.at += 2 * COLUMNS * n;
            rest = rest.get(4 * n..).unwrap_or(&[]);
        }
        for &x in rest {
            self.push(i32::from(x) + self.offset_value);
        }
    }

    /// Appends `n` zeros (padded taps, which contribute nothing).
    #[inline]
    pub(crate) fn push_zeros(&mut self, n: usize) {
        let mut n = n;
        while n > 0 && self.lane != 0 {
            self.push(0);
            n -= 1;
        }
        let groups = (n / 4).min(self.main.saturating_sub(self.at) / (2 * COLUMNS));
        if let Some(out) = self.words.get_mut(self.at..self.at + 2 * COLUMNS * groups) {
            let (out, _) = out.as_chunks_mut::<{ 2 * COLUMNS }>();
            let which = 2 * self.which;
            for o in out {
                if let Some(ab) = o.get_mut(which..which + 2) {
                    ab.fill(0);
                }
            }
            self.at += 2 * COLUMNS * groups;
            n -= 4 * groups;
        }
        for _ in 0..n {
            self.push(0);
        }
    }
}

/// The dot products of the four interleaved columns `cols` ([`columns_words`]`(k)`
/// words) with filter row `f` (`k` int8 values), wrapping like the reference's `i32`
/// sums. Slices shorter than that (never passed by the kernels) give zeros.
#[inline]
pub(crate) fn dot_4x1(cols: &[u32], f: &[i8], k: usize) -> [i32; 4] {
    let (Some((cm, ct)), Some((fm, ft))) = (
        cols.split_at_checked(k / 4 * 8),
        f.split_at_checked(k / 4 * 4),
    ) else {
        return [0; 4];
    };
    let (cm, _) = cm.as_chunks::<8>();
    let (fm, _) = fm.as_chunks::<4>();
    let mut acc = [0i32; 4];
    for (x, w) in cm.iter().zip(fm) {
        acc = smlad_4x1(x, w, acc);
    }
    let (ct, _) = ct.as_chunks::<4>();
    for ((x, &w), _) in ct.iter().zip(ft).zip(0..k % 4) {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a = a.wrapping_add((v as i32).wrapping_mul(i32::from(w)));
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn packed_dot_products_are_plain_dot_products(
            k in 1usize..40,
            seed: u64,
            offset in -128i32..=128,
        ) {
            let mut rng = crate::kernels::reference::test_util::Lcg::new(seed);
            let x: Vec<[i8; 4]> = (0..k).map(|_| core::array::from_fn(|_| rng.int8())).collect();
            let f: Vec<i8> = (0..k).map(|_| rng.int8()).collect();
            let mut cols = vec![0u32; columns_words(k)];
            let mut zero = vec![[false; 4]; k];
            for c in 0..4 {
                let mut w = Column::new(&mut cols, k, offset, c);
                if c == 0 {
                    // In one go.
                    let all: Vec<i8> = x.iter().map(|p| p[0]).collect();
                    w.push_bytes(&all);
                    continue;
                }
                // In ragged pieces, with zeros spliced in.
                let mut i = 0;
                while i < k {
                    let n = (rng.next_u32() as usize % 7).min(k - i);
                    if rng.next_u32().is_multiple_of(3) {
                        w.push_zeros(n);
                        for z in &mut zero[i..i + n] {
                            z[c] = true;
                        }
                    } else {
                        let piece: Vec<i8> = x[i..i + n].iter().map(|p| p[c]).collect();
                        w.push_bytes(&piece);
                    }
                    i += n;
                }
            }
            let got = dot_4x1(&cols, &f, k);
            let want: [i32; 4] = core::array::from_fn(|c| {
                (0..k)
                    .map(|j| {
                        let v = if zero[j][c] { 0 } else { i32::from(x[j][c]) + offset };
                        v * i32::from(f[j])
                    })
                    .sum()
            });
            prop_assert_eq!(got, want);
        }
    }
}
