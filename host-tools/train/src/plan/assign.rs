//! Arena offsets: greedy first fit over buffers with lifetimes, and the lower bound.

/// A block of the arena alive from step `first` to step `last`, inclusive.
#[derive(Debug, Clone, Copy)]
pub(super) struct Buffer {
    pub(super) first: usize,
    pub(super) last: usize,
    pub(super) len: usize,
}

/// Most elements alive at one step.
pub(super) fn lower_bound(buffers: &[Buffer], steps: usize) -> usize {
    let mut delta = vec![0isize; steps + 2];
    for b in buffers {
        delta[b.first] += b.len as isize;
        delta[b.last + 1] -= b.len as isize;
    }
    let mut live = 0isize;
    let mut most = 0;
    for d in delta {
        live += d;
        most = most.max(live);
    }
    most.max(0) as usize
}

/// Offsets of `buffers` (elements): greedy first fit, largest first, and largest
/// `len * lifetime` first; the smaller arena wins.
pub(super) fn place(buffers: &[Buffer]) -> Vec<usize> {
    let by_len = first_fit(buffers, |b| (b.len, 0));
    let by_area = first_fit(buffers, |b| (b.len * (b.last - b.first + 1), b.len));
    let top = |offsets: &[usize]| {
        buffers
            .iter()
            .zip(offsets)
            .map(|(b, o)| o + b.len)
            .max()
            .unwrap_or(0)
    };
    if top(&by_area) < top(&by_len) {
        by_area
    } else {
        by_len
    }
}

/// Places buffers in decreasing `key` order, each at the lowest offset that overlaps no
/// placed buffer alive at a common step.
fn first_fit(buffers: &[Buffer], key: impl Fn(&Buffer) -> (usize, usize)) -> Vec<usize> {
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(key(&buffers[i])), buffers[i].first, i));
    let mut offsets = vec![0; buffers.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(buffers.len());
    let mut taken: Vec<(usize, usize)> = Vec::new();
    for i in order {
        let b = buffers[i];
        taken.clear();
        taken.extend(
            placed
                .iter()
                .filter(|&&j| buffers[j].first <= b.last && b.first <= buffers[j].last)
                .map(|&j| (offsets[j], offsets[j] + buffers[j].len)),
        );
        taken.sort_unstable();
        let mut at = 0;
        for &(start, end) in &taken {
            if start >= at + b.len {
                break;
            }
            at = at.max(end);
        }
        offsets[i] = at;
        placed.push(i);
    }
    offsets
}
