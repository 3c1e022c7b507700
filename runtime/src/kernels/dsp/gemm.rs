//! The matrix-multiply core of the DSP convolution kernels: four input columns (four
//! output pixels) unpacked once to 16 bits with the input offset added, then every
//! filter row multiplied with all four, so each filter word is loaded and unpacked once
//! per four pixels and each unpacked half feeds four SMLADs ([`smlad_4x1`]).
//!
//! A column of `k` values `v0, v1, ...` is split into groups of four, each stored as the
//! two words `[v0, v2]` and `[v1, v3]` (the order `SXTB16` and `SXTB16 ROR #8` unpack a
//! filter word in); the `k % 4` tail values are stored one per word. The four columns are
//! interleaved: group `g` is the eight words `[c0 even, c1 even, c2 even, c3 even, c0 odd,
//! c1 odd, c2 odd, c3 odd]` and tail value `t` the four words `[c0, c1, c2, c3]`, so one
//! pointer walks all four and each half-group loads with one `LDM`.

use super::simd::{pack16, sxtab16, sxtab16_ror8, word};

/// Columns processed together.
pub(crate) const COLUMNS: usize = 4;

/// Words of scratch four interleaved packed columns of `k` values take.
pub const fn columns_words(k: usize) -> usize {
    k / 4 * 8 + k % 4 * 4
}

/// Writes `src` (whole groups of four int8 values, each plus the offset held in both
/// halves of `offset2`) into column `which` (0..4) of the interleaved block `cols`,
/// from group `first` on; groups past the end of `cols` are dropped.
#[inline]
pub(crate) fn pack_groups(
    cols: &mut [u32],
    which: usize,
    first: usize,
    src: &[[i8; 4]],
    offset2: u32,
) {
    let Some(dst) = cols.get_mut(first.saturating_mul(2 * COLUMNS)..) else {
        return;
    };
    let (dst, _) = dst.as_chunks_mut::<{ 2 * COLUMNS }>();
    let which = which % COLUMNS;
    for (q, group) in src.iter().zip(dst) {
        let w = word(*q);
        let (even, odd) = group.split_at_mut(COLUMNS);
        if let (Some(even), Some(odd)) = (even.get_mut(which), odd.get_mut(which)) {
            *even = sxtab16(offset2, w);
            *odd = sxtab16_ror8(offset2, w);
        }
    }
}

/// Writes all four columns of `cols` from the whole groups of four int8 values in
/// `src` (column `c` from `src[c]`, each value plus the offset held in both halves of
/// `offset2`): a 1x1 conv's four pixels, each word loaded and unpacked once.
#[inline]
pub(crate) fn pack_groups4(cols: &mut [u32], src: [&[[i8; 4]]; COLUMNS], offset2: u32) {
    let (dst, _) = cols.as_chunks_mut::<{ 2 * COLUMNS }>();
    let [s0, s1, s2, s3] = src;
    for ((((g, a), b), c), d) in dst.iter_mut().zip(s0).zip(s1).zip(s2).zip(s3) {
        let w = [word(*a), word(*b), word(*c), word(*d)];
        *g = [
            sxtab16(offset2, w[0]),
            sxtab16(offset2, w[1]),
            sxtab16(offset2, w[2]),
            sxtab16(offset2, w[3]),
            sxtab16_ror8(offset2, w[0]),
            sxtab16_ror8(offset2, w[1]),
            sxtab16_ror8(offset2, w[2]),
            sxtab16_ror8(offset2, w[3]),
        ];
    }
}

/// Zeros groups `first..first + n` of column `which` (padded taps contribute nothing).
#[inline]
pub(crate) fn zero_groups(cols: &mut [u32], which: usize, first: usize, n: usize) {
    let Some(dst) = cols.get_mut(first.saturating_mul(2 * COLUMNS)..) else {
        return;
    };
    let (dst, _) = dst.as_chunks_mut::<{ 2 * COLUMNS }>();
    let which = which % COLUMNS;
    for group in dst.iter_mut().take(n) {
        if let Some(even) = group.get_mut(which) {
            *even = 0;
        }
        if let Some(odd) = group.get_mut(COLUMNS + which) {
            *odd = 0;
        }
    }
}

/// Writes the whole column `which` of `k` values from `src` (`k` int8 values, each plus
/// `offset`): the groups, then the `k % 4` tail values.
#[inline]
pub(crate) fn pack_column(cols: &mut [u32], which: usize, k: usize, src: &[i8], offset: i32) {
    let src = src.get(..k).unwrap_or(src);
    let (groups, tail) = src.as_chunks::<4>();
    pack_groups(cols, which, 0, groups, pack16(offset, offset));
    let Some(dst) = cols.get_mut(k / 4 * 2 * COLUMNS..) else {
        return;
    };
    let (dst, _) = dst.as_chunks_mut::<COLUMNS>();
    for (&x, row) in tail.iter().zip(dst) {
        if let Some(slot) = row.get_mut(which % COLUMNS) {
            *slot = (i32::from(x) + offset) as u32;
        }
    }
}

/// `init` plus the dot products of the four interleaved columns `cols`
/// ([`columns_words`]`(k)` words) with filter row `f` (`k` int8 values), wrapping like
/// the reference's `i32` sums: the groups through [`smlad_4x1_run`], then the tail
/// values. The conv kernel pads `k` to a multiple of 8 and runs the groups only; this
/// pins the layout, tails included.
#[cfg(test)]
pub(crate) fn dot_4x1(cols: &[u32], f: &[i8], k: usize, init: i32) -> [i32; 4] {
    let (main, tail) = cols.split_at(cols.len().min(k / 4 * 8));
    let (fm, ft) = f.get(..k).unwrap_or(f).as_chunks::<4>();
    let mut acc = super::simd::smlad_4x1_run(main.as_chunks::<8>().0, fm, [init; 4]);
    for (x, &w) in tail.as_chunks::<4>().0.iter().zip(ft) {
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
                let column: Vec<i8> = x.iter().map(|p| p[c]).collect();
                if c == 0 || k % 4 != 0 {
                    pack_column(&mut cols, c, k, &column, offset);
                    continue;
                }
                // Group by group, some zeroed.
                let (groups, _) = column.as_chunks::<4>();
                for (g, group) in groups.iter().enumerate() {
                    if rng.next_u32().is_multiple_of(3) {
                        zero_groups(&mut cols, c, g, 1);
                        for z in &mut zero[4 * g..4 * g + 4] {
                            z[c] = true;
                        }
                    } else {
                        pack_groups(&mut cols, c, g, core::slice::from_ref(group), pack16(offset, offset));
                    }
                }
            }
            let got = dot_4x1(&cols, &f, k, 0);
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
