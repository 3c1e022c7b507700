//! Offset assignment. Two strategies, the smaller arena wins:
//!
//! - greedy by size, first fit (the idea of TFLM's greedy planner): buffers are placed
//!   largest first, each at the lowest offset where it overlaps no already placed
//!   buffer that is live at some common step;
//! - bottom and top: when no step has more than two buffers live (chains), buffers that
//!   meet form a forest, so two colours suffice; one colour goes to offset 0, the other
//!   ends at the lower bound. Two buffers that meet are live at a common step, so their
//!   sizes add up to at most the lower bound: the arena is exactly the lower bound,
//!   which greedy by size can miss (a chain of sizes 48, 48, 48, 64).

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

/// The offset of every buffer and the arena size, the better of the two strategies.
/// `lower_bound` is the largest total size of buffers live at one step. Offsets are sums
/// and differences of sizes and the bound, so they keep the alignment of the sizes.
pub(super) fn assign(buffers: &[Buffer], lower_bound: usize) -> (Vec<usize>, usize) {
    let greedy = first_fit(buffers);
    match bottom_and_top(buffers, lower_bound) {
        Some(two) if two.1 < greedy.1 => two,
        _ => greedy,
    }
}

/// Greedy by size, first fit.
fn first_fit(buffers: &[Buffer]) -> (Vec<usize>, usize) {
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

/// Two-colour placement of buffers of which at most two meet at any step; `None` when
/// three buffers meet somewhere.
fn bottom_and_top(buffers: &[Buffer], lower_bound: usize) -> Option<(Vec<usize>, usize)> {
    let mut by_start: Vec<usize> = (0..buffers.len())
        .filter(|&i| buffers[i].size > 0)
        .collect();
    by_start.sort_by_key(|&i| (buffers[i].first, i));
    let mut top = vec![false; buffers.len()];
    let mut offsets = vec![0; buffers.len()];
    let mut arena = 0;
    for (k, &i) in by_start.iter().enumerate() {
        let b = &buffers[i];
        // Earlier buffers still live when `b` starts: with at most two buffers per step,
        // at most one, and it is the only earlier buffer `b` meets.
        let mut live = by_start[..k]
            .iter()
            .filter(|&&j| buffers[j].last >= b.first);
        let partner = live.next();
        if live.next().is_some() {
            return None;
        }
        top[i] = partner.is_some_and(|&j| !top[j]);
        offsets[i] = if top[i] {
            lower_bound.checked_sub(b.size)?
        } else {
            0
        };
        arena = arena.max(offsets[i] + b.size);
    }
    Some((offsets, arena))
}
