//! Offset assignment: greedy by size, first fit (the idea of TFLM's greedy planner).
//! Buffers are placed largest first, each at the lowest offset where it overlaps no
//! already placed buffer that is live at some common step.

/// A block of arena bytes that must stay intact from step `first` to step `last`
/// (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Buffer {
    pub(super) first: usize,
    pub(super) last: usize,
    pub(super) size: usize,
}

impl Buffer {
    fn meets(&self, other: &Buffer) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// The offset of every buffer and the arena size. Offsets are sums of sizes, so they
/// keep whatever alignment the sizes have.
pub(super) fn first_fit(buffers: &[Buffer]) -> (Vec<usize>, usize) {
    let mut by_size: Vec<usize> = (0..buffers.len()).collect();
    by_size.sort_by_key(|&i| (std::cmp::Reverse(buffers[i].size), buffers[i].first, i));
    let mut offsets = vec![0; buffers.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(buffers.len());
    let mut arena = 0;
    for i in by_size {
        let b = &buffers[i];
        if b.size == 0 {
            continue;
        }
        offsets[i] = lowest_gap(b, placed.iter().map(|&j| (&buffers[j], offsets[j])));
        arena = arena.max(offsets[i] + b.size);
        placed.push(i);
    }
    (offsets, arena)
}

/// The lowest offset where `b` overlaps none of the `placed` (buffer, offset) pairs
/// that share a step with it.
fn lowest_gap<'a>(b: &Buffer, placed: impl Iterator<Item = (&'a Buffer, usize)>) -> usize {
    let mut taken: Vec<(usize, usize)> = placed
        .filter(|(p, _)| p.meets(b))
        .map(|(p, offset)| (offset, offset + p.size))
        .collect();
    taken.sort_unstable();
    let mut candidate = 0;
    for (start, end) in taken {
        if start >= candidate + b.size {
            break;
        }
        candidate = candidate.max(end);
    }
    candidate
}
