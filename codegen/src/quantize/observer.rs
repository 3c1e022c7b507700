//! Per-tensor statistics gathered during calibration, and the clipping range each
//! calibration method picks from them.
//!
//! One [`Observer`] per activation tensor keeps the exact minimum and maximum, the
//! number of exact zeros, and a [`Histogram`] whose bins are aligned to multiples of a
//! power-of-two width. The histogram grows in one pass: when new values fall outside
//! its span and it would need more than [`MAX_BINS`] bins, pairs of bins merge (the
//! width doubles), so it never needs a second run over the calibration data and always
//! keeps between `MAX_BINS / 2` and `MAX_BINS` bins over the observed range.

use std::fmt;

/// Most bins a histogram keeps; merging halves the count when it would be exceeded.
pub const MAX_BINS: usize = 4096;

/// Default percentile of [`Calibration::Percentile`].
pub const DEFAULT_PERCENTILE: f32 = 99.99;

/// How the clipping range of an activation is chosen from its calibration statistics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Calibration {
    /// The observed minimum and maximum: nothing is clipped (TFLite's converter).
    #[default]
    MinMax,
    /// Clips both tails: the range runs from the `100 - p` to the `p` percentile of
    /// the observed values (`p` in `(50, 100]`), so `Percentile(99.99)` clips 0.01% on
    /// each side. Outliers no longer widen the quantization step.
    Percentile(f32),
    /// The range minimizing the expected squared quantization error (rounding inside
    /// the range plus clipping outside it) over the histogram.
    Mse,
}

impl Calibration {
    /// The method named on the command line (`minmax`, `percentile`, `mse`);
    /// `percentile` defaults to [`DEFAULT_PERCENTILE`] and is only allowed with
    /// `percentile`.
    pub fn parse(method: &str, percentile: Option<f32>) -> Result<Self, String> {
        let c = match (method, percentile) {
            ("minmax", None) => Calibration::MinMax,
            ("mse", None) => Calibration::Mse,
            ("percentile", p) => Calibration::Percentile(p.unwrap_or(DEFAULT_PERCENTILE)),
            ("minmax" | "mse", Some(_)) => {
                return Err(format!(
                    "a percentile is only used by --method percentile, not {method}"
                ))
            }
            (other, _) => {
                return Err(format!(
                    "unknown calibration method '{other}', expected minmax, percentile or mse"
                ))
            }
        };
        c.check()?;
        Ok(c)
    }

    /// Checks the method's parameter.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Calibration::Percentile(p) if !(*p > 50.0 && *p <= 100.0) => Err(format!(
                "percentile {p} is outside (50, 100] (e.g. 99.99 keeps all but 0.01% per tail)"
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Calibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Calibration::MinMax => write!(f, "minmax"),
            Calibration::Percentile(p) => write!(f, "percentile {p}"),
            Calibration::Mse => write!(f, "mse"),
        }
    }
}

/// Counts of values in bins `[k * width, (k + 1) * width)` for `k` from `first` on,
/// `width` a power of two.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    width: f64,
    first: i64,
    bins: Vec<u64>,
}

impl Histogram {
    fn empty() -> Self {
        Histogram {
            width: 0.0,
            first: 0,
            bins: Vec::new(),
        }
    }

    /// Width of every bin.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// The counts, lowest bin first.
    pub fn bins(&self) -> &[u64] {
        &self.bins
    }

    /// Lower edge of bin `k` (`k == bins().len()` gives the upper edge of the last).
    pub fn edge(&self, k: usize) -> f64 {
        (self.first + k as i64) as f64 * self.width
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        self.bins.iter().sum()
    }

    /// Adds `values`, all finite, whose minimum and maximum are `lo` and `hi`.
    fn add(&mut self, values: &[f32], lo: f64, hi: f64) {
        if self.bins.is_empty() {
            // The smallest power-of-two width that spans [lo, hi] in MAX_BINS - 2 bins.
            let span = (hi - lo).max(lo.abs().max(hi.abs()) * 1e-6);
            let exp = if span > 0.0 {
                (span / (MAX_BINS - 2) as f64).log2().ceil() as i32
            } else {
                -40
            };
            self.width = pow2(exp.clamp(-1060, 1000));
            self.first = (lo / self.width).floor() as i64;
            self.bins = vec![0];
        }
        self.cover(lo, hi);
        let (w, first) = (self.width, self.first);
        let last = self.bins.len() - 1;
        for &v in values {
            let k = ((f64::from(v) / w).floor() as i64 - first).clamp(0, last as i64);
            self.bins[k as usize] += 1;
        }
    }

    /// Extends (and, past MAX_BINS, coarsens) the bins so they cover `[lo, hi]`.
    fn cover(&mut self, lo: f64, hi: f64) {
        loop {
            let (a, b) = ((lo / self.width).floor(), (hi / self.width).floor());
            let last = (self.first + self.bins.len() as i64 - 1) as f64;
            let (new_first, new_last) = (a.min(self.first as f64), b.max(last));
            let needed = new_last - new_first + 1.0;
            if needed <= MAX_BINS as f64 {
                let (new_first, new_last) = (new_first as i64, new_last as i64);
                let mut bins = vec![0u64; (new_last - new_first + 1) as usize];
                let offset = (self.first - new_first) as usize;
                bins[offset..offset + self.bins.len()].copy_from_slice(&self.bins);
                self.bins = bins;
                self.first = new_first;
                return;
            }
            let k = (needed / MAX_BINS as f64).log2().ceil().clamp(1.0, 62.0) as u32;
            self.coarsen(k);
        }
    }

    /// Merges groups of `2^k` neighbouring bins (the width grows by `2^k`).
    fn coarsen(&mut self, k: u32) {
        let first = self.first >> k;
        let last = (self.first + self.bins.len() as i64 - 1) >> k;
        let mut bins = vec![0u64; (last - first + 1) as usize];
        for (i, &c) in self.bins.iter().enumerate() {
            bins[(((self.first + i as i64) >> k) - first) as usize] += c;
        }
        self.bins = bins;
        self.first = first;
        self.width *= pow2(k as i32);
    }

    /// The value below which a fraction `q` of the counts lies, interpolated linearly
    /// inside its bin.
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.total() as f64;
        let target = q.clamp(0.0, 1.0) * total;
        let mut below = 0.0;
        for (k, &c) in self.bins.iter().enumerate() {
            let c = c as f64;
            if c > 0.0 && below + c >= target {
                return self.edge(k) + self.width * ((target - below) / c).clamp(0.0, 1.0);
            }
            below += c;
        }
        self.edge(self.bins.len())
    }
}

/// `2^e` for `e` in the f64 exponent range.
fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

/// Statistics of one tensor over every calibration sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Observer {
    min: f32,
    max: f32,
    count: u64,
    zeros: u64,
    non_finite: u64,
    histogram: Histogram,
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new()
    }
}

impl Observer {
    /// An observer that has seen nothing.
    pub fn new() -> Self {
        Observer {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
            zeros: 0,
            non_finite: 0,
            histogram: Histogram::empty(),
        }
    }

    /// Records the values of one run (NaN and infinities are only counted).
    pub fn observe(&mut self, values: &[f32]) {
        let mut finite_count = 0usize;
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in values {
            if v.is_finite() {
                finite_count += 1;
                lo = lo.min(v);
                hi = hi.max(v);
                if v == 0.0 {
                    self.zeros += 1;
                }
            }
        }
        self.non_finite += (values.len() - finite_count) as u64;
        if finite_count == 0 {
            return;
        }
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        self.count += finite_count as u64;
        if finite_count == values.len() {
            self.histogram.add(values, f64::from(lo), f64::from(hi));
        } else {
            let finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
            self.histogram.add(&finite, f64::from(lo), f64::from(hi));
        }
    }

    /// Smallest finite value seen (`inf` before any).
    pub fn min(&self) -> f32 {
        self.min
    }

    /// Largest finite value seen (`-inf` before any).
    pub fn max(&self) -> f32 {
        self.max
    }

    /// Number of finite values seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Number of NaN and infinite values seen (calibration refuses them).
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }

    /// The histogram of the finite values.
    pub fn histogram(&self) -> &Histogram {
        &self.histogram
    }

    /// The clipping range `method` picks, inside `[min, max]`; `None` before any value.
    /// The range is not yet widened to include 0 (see `params::asymmetric`).
    pub fn range(&self, method: Calibration) -> Option<(f32, f32)> {
        if self.count == 0 {
            return None;
        }
        let (min, max) = (f64::from(self.min), f64::from(self.max));
        let (lo, hi) = match method {
            Calibration::MinMax => (min, max),
            Calibration::Percentile(p) => {
                let tail = (1.0 - f64::from(p) / 100.0).max(0.0);
                (
                    self.histogram.quantile(tail).clamp(min, max),
                    self.histogram.quantile(1.0 - tail).clamp(min, max),
                )
            }
            Calibration::Mse => self.mse_range(),
        };
        Some((lo as f32, hi as f32))
    }

    /// The `[lo, hi]` (with `lo <= 0 <= hi`, then clamped to the observed range) that
    /// minimizes the expected int8 quantization error over the histogram.
    fn mse_range(&self) -> (f64, f64) {
        let (min, max) = (f64::from(self.min), f64::from(self.max));
        let err = MseModel::new(&self.histogram, self.zeros);
        // Candidate bounds: bin edges strictly between the extreme and 0, and the
        // extreme itself (no clipping). `(value, bin index where clipping starts)`.
        let h = &self.histogram;
        let n = h.bins().len();
        let mut highs: Vec<(f64, usize)> = (0..n)
            .map(|k| (h.edge(k), k))
            .filter(|&(e, _)| e > 0.0 && e < max)
            .collect();
        highs.push((max.max(0.0), n));
        let mut lows: Vec<(f64, usize)> = vec![(min.min(0.0), 0)];
        lows.extend(
            (0..n)
                .map(|k| (h.edge(k), k))
                .filter(|&(e, _)| e < 0.0 && e > min),
        );
        // A coarse grid over both bounds, then coordinate descent at full resolution.
        let coarse = |v: &[(f64, usize)]| -> Vec<usize> {
            let step = v.len().div_ceil(64).max(1);
            let mut idx: Vec<usize> = (0..v.len()).step_by(step).collect();
            if idx.last() != Some(&(v.len() - 1)) {
                idx.push(v.len() - 1);
            }
            idx
        };
        let eval = |l: usize, u: usize| err.error(lows[l], highs[u]);
        let (mut best_l, mut best_u) = (0, highs.len() - 1);
        let mut best = eval(best_l, best_u);
        for &l in &coarse(&lows) {
            for &u in &coarse(&highs) {
                let e = eval(l, u);
                if e < best {
                    (best, best_l, best_u) = (e, l, u);
                }
            }
        }
        for _ in 0..8 {
            let before = (best_l, best_u);
            for u in 0..highs.len() {
                let e = eval(best_l, u);
                if e < best {
                    (best, best_u) = (e, u);
                }
            }
            for l in 0..lows.len() {
                let e = eval(l, best_u);
                if e < best {
                    (best, best_l) = (e, l);
                }
            }
            if (best_l, best_u) == before {
                break;
            }
        }
        (lows[best_l].0.max(min), highs[best_u].0.min(max))
    }
}

/// Prefix sums of a histogram (count, count × centre, count × centre²) so the expected
/// squared error of any clipping range at bin edges costs O(1).
struct MseModel {
    n: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
    zeros: f64,
}

impl MseModel {
    fn new(h: &Histogram, zeros: u64) -> Self {
        let len = h.bins().len();
        let (mut n, mut s1, mut s2) = (vec![0.0; len + 1], vec![0.0; len + 1], vec![0.0; len + 1]);
        for (k, &c) in h.bins().iter().enumerate() {
            let c = c as f64;
            let centre = h.edge(k) + h.width() / 2.0;
            n[k + 1] = n[k] + c;
            s1[k + 1] = s1[k] + c * centre;
            s2[k + 1] = s2[k] + c * centre * centre;
        }
        MseModel {
            n,
            s1,
            s2,
            zeros: zeros as f64,
        }
    }

    /// Sum over bins `[a, b)` of `count × (centre - at)²`.
    fn clip_error(&self, a: usize, b: usize, at: f64) -> f64 {
        let n = self.n[b] - self.n[a];
        let s1 = self.s1[b] - self.s1[a];
        let s2 = self.s2[b] - self.s2[a];
        (s2 - 2.0 * at * s1 + at * at * n).max(0.0)
    }

    /// Expected squared error with bins below `low.1` clipped to `low.0`, bins from
    /// `high.1` on clipped to `high.0`, and uniform rounding noise (`step² / 12`) for
    /// the values in between, except exact zeros, which int8 represents exactly.
    fn error(&self, low: (f64, usize), high: (f64, usize)) -> f64 {
        let len = self.n.len() - 1;
        let step = (high.0 - low.0) / 255.0;
        let inside = (self.n[high.1] - self.n[low.1] - self.zeros).max(0.0);
        self.clip_error(0, low.1, low.0)
            + self.clip_error(high.1, len, high.0)
            + inside * step * step / 12.0
    }
}
