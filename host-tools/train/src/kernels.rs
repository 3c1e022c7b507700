//! f32 kernels of the training executor, forward and backward, NHWC.
//!
//! Convolutions are im2col + GEMM (matrixmultiply), one GEMM and one rayon task per
//! [`CHUNK`] samples. Weight
//! gradients are summed over fixed chunks of [`CHUNK`] samples in parallel and the
//! partial sums added in chunk order, so results depend on neither scheduling nor the
//! thread count. Forward semantics are kiln's (TFLite's): SAME padding puts the extra
//! row/column at the end, padded positions are skipped by pooling, AVERAGE_POOL_2D
//! divides by the in-bounds count.

use kiln_codegen::ir::Padding;
use rayon::prelude::*;

/// Samples per weight-gradient partial sum (fixed: determinism across thread counts).
pub const CHUNK: usize = 4;

/// `c[m, n] = a[m, k] * b[k, n] + beta * c`, with row/column strides for `a` and `b`
/// (so transposes cost nothing) and `c` row-major.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: &mut [f32],
    beta: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |r: usize, c: usize, rs: usize, cs: usize| (r - 1) * rs + (c - 1) * cs + 1;
    assert!(c.len() >= m * n, "gemm: output too small");
    if k == 0 {
        c[..m * n].iter_mut().for_each(|v| *v *= beta);
        return;
    }
    assert!(a.len() >= last(m, k, rsa, csa), "gemm: a too small");
    assert!(b.len() >= last(k, n, rsb, csb), "gemm: b too small");
    // SAFETY: the asserts above keep every element matrixmultiply addresses (at most
    // (rows-1)*rs + (cols-1)*cs) inside the slices; `c` is borrowed mutably and so
    // does not alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Geometry of a windowed op (convolution or pooling).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Batch.
    pub n: usize,
    /// Input height, width, channels.
    pub ih: usize,
    /// Input width.
    pub iw: usize,
    /// Input channels.
    pub c: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Output channels.
    pub oc: usize,
    /// Window height and width.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Strides.
    pub sh: usize,
    /// Stride along the width.
    pub sw: usize,
    /// Dilations.
    pub dh: usize,
    /// Dilation along the width.
    pub dw: usize,
    /// Padding before the first row.
    pub pt: usize,
    /// Padding before the first column.
    pub pl: usize,
}

impl Window {
    /// The geometry from input/output NHWC shapes, window, stride, dilation, padding.
    pub fn new(
        x: &[usize],
        y: &[usize],
        k: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
        p: Padding,
    ) -> Window {
        let before = |axis: usize, input: usize, out: usize| match p {
            Padding::Valid => 0,
            Padding::Same => {
                let eff = (k[axis] - 1) * d[axis] + 1;
                ((out - 1) * s[axis] + eff).saturating_sub(input) / 2
            }
            Padding::Explicit { .. } => p.explicit(axis).map_or(0, |e| e.0),
        };
        Window {
            n: x[0],
            ih: x[1],
            iw: x[2],
            c: x[3],
            oh: y[1],
            ow: y[2],
            oc: y[3],
            kh: k[0],
            kw: k[1],
            sh: s[0],
            sw: s[1],
            dh: d[0],
            dw: d[1],
            pt: before(0, x[1], y[1]),
            pl: before(1, x[2], y[2]),
        }
    }

    fn in_size(&self) -> usize {
        self.ih * self.iw * self.c
    }

    fn out_size(&self) -> usize {
        self.oh * self.ow * self.oc
    }

    /// Input row/column of output `o` and window tap `t` along an axis, if in bounds.
    #[inline]
    fn at(o: usize, t: usize, s: usize, d: usize, pad: usize, size: usize) -> Option<usize> {
        (o * s + t * d).checked_sub(pad).filter(|&i| i < size)
    }

    #[inline]
    fn row(&self, oy: usize, ky: usize) -> Option<usize> {
        Self::at(oy, ky, self.sh, self.dh, self.pt, self.ih)
    }

    #[inline]
    fn col(&self, ox: usize, kx: usize) -> Option<usize> {
        Self::at(ox, kx, self.sw, self.dw, self.pl, self.iw)
    }

    /// The first input column of output column `ox`'s window when its `kw` columns are
    /// one contiguous run of the input row (dilation 1, no padding on either side), so
    /// a kernel row is one run of `kw * c` values.
    #[inline]
    fn contiguous_cols(&self, ox: usize) -> Option<usize> {
        match (self.col(ox, 0), self.col(ox, self.kw.saturating_sub(1))) {
            (Some(first), Some(last)) if last == first + self.kw - 1 => Some(first),
            _ => None,
        }
    }
}

/// The first input column of each output column's window where it is one contiguous
/// run ([`Window::contiguous_cols`]), worked out once per chunk of samples rather than
/// per row.
fn contiguous_starts(w: &Window) -> Vec<Option<usize>> {
    (0..w.ow).map(|ox| w.contiguous_cols(ox)).collect()
}

/// im2col of one sample: row `oy * ow + ox` of `cols` is the window of output
/// `(oy, ox)`, kernel row by kernel row (zeros where it hangs over the edge). Walks
/// kernel row by kernel row, so each input row is located once for a whole output row.
fn im2col(w: &Window, starts: &[Option<usize>], x: &[f32], cols: &mut [f32]) {
    let c = w.c;
    let run = w.kw * c;
    let k = w.kh * run;
    for (oy, out_row) in cols.chunks_exact_mut(w.ow * k).take(w.oh).enumerate() {
        for ky in 0..w.kh {
            let Some(iy) = w.row(oy, ky) else {
                for row in out_row.chunks_exact_mut(k) {
                    row[ky * run..][..run].fill(0.0);
                }
                continue;
            };
            let xr = &x[iy * w.iw * c..][..w.iw * c];
            for (ox, (row, start)) in out_row.chunks_exact_mut(k).zip(starts).enumerate() {
                let dst = &mut row[ky * run..][..run];
                if let Some(ix) = start {
                    copy(dst, &xr[ix * c..][..run]);
                    continue;
                }
                for (kx, dst) in dst.chunks_exact_mut(c).enumerate() {
                    match w.col(ox, kx) {
                        Some(ix) => copy(dst, &xr[ix * c..][..c]),
                        None => dst.fill(0.0),
                    }
                }
            }
        }
    }
}

/// Copies `src` into `dst` (same length) in fixed-size blocks: im2col's runs are a
/// few to a few dozen values, too short for a `memcpy` call to pay off, and a plain
/// element loop is turned into exactly such a call by the optimizer (a third of
/// im2col's time went to them). Blocks of 8 and 4 and an unrolled tail of at most 3
/// leave no loop to recognise.
#[inline(always)]
fn copy(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        d.copy_from_slice(s);
    }
    let (mut d, mut s) = (d.into_remainder(), s.remainder());
    if d.len() >= 4 && s.len() >= 4 {
        d[..4].copy_from_slice(&s[..4]);
        d = &mut d[4..];
        s = &s[4..];
    }
    if let (Some(d0), Some(s0)) = (d.first_mut(), s.first()) {
        *d0 = *s0;
    }
    if let (Some(d1), Some(s1)) = (d.get_mut(1), s.get(1)) {
        *d1 = *s1;
    }
    if let (Some(d2), Some(s2)) = (d.get_mut(2), s.get(2)) {
        *d2 = *s2;
    }
}

thread_local! {
    /// Each worker thread's scratch matrix (im2col columns, input-gradient columns):
    /// grown when a bigger one is needed, never shrunk or cleared, so a step allocates
    /// and zeroes nothing. Every user overwrites all of what it asks for.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch of at least `len` values (contents arbitrary).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        // A nested call on the same thread (a kernel waiting inside another's
        // parallel loop may run it): a buffer of its own.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// The adjoint of [`im2col`]: adds each window row of `cols` back into `dx`, output
/// position by output position (so every element gets its contributions in the same
/// order as one output at a time), kernel rows in order.
fn col2im(w: &Window, starts: &[Option<usize>], cols: &[f32], dx: &mut [f32]) {
    let c = w.c;
    let run = w.kw * c;
    let k = w.kh * run;
    for oy in 0..w.oh {
        for (ox, start) in starts.iter().enumerate() {
            let row = &cols[(oy * w.ow + ox) * k..][..k];
            for ky in 0..w.kh {
                let Some(iy) = w.row(oy, ky) else { continue };
                let src = &row[ky * run..][..run];
                let dr = &mut dx[iy * w.iw * c..][..w.iw * c];
                if let Some(ix) = start {
                    add_into(&mut dr[ix * c..][..run], src);
                    continue;
                }
                for (kx, src) in src.chunks_exact(c).enumerate() {
                    let Some(ix) = w.col(ox, kx) else { continue };
                    add_into(&mut dr[ix * c..][..c], src);
                }
            }
        }
    }
}

/// `dst += src`, elementwise (same length).
#[inline(always)]
fn add_into(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
}

fn add_bias(y: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        y.chunks_mut(b.len())
            .for_each(|r| r.iter_mut().zip(b).for_each(|(v, b)| *v += b));
    }
}

/// im2col of every sample of `x` (whole samples, one after another) into `cols`: the
/// `[rows, k]` matrix of every output position's window (`rows` = samples x `oh * ow`),
/// whose row and column strides it returns, so one GEMM covers the lot. Position-major
/// (one window after another) in general; patch-major (one tap for every position,
/// [`im2col_patch_major`]) for single-channel inputs, whose windows are runs of only
/// `kw` values.
fn im2col_samples(w: &Window, x: &[f32], cols: &mut [f32]) -> (usize, usize) {
    let k = w.kh * w.kw * w.c;
    if w.c == 1 {
        im2col_patch_major(w, x, cols);
        let rows = cols.len() / k.max(1);
        return (1, rows);
    }
    let starts = contiguous_starts(w);
    for (xn, cn) in x
        .chunks_exact(w.in_size())
        .zip(cols.chunks_exact_mut(w.oh * w.ow * k))
    {
        im2col(w, &starts, xn, cn);
    }
    (k, 1)
}

/// im2col of single-channel samples into patch-major order: row `ky * kw + kx` of
/// `cols` holds that tap's input for every output position of every sample, so each
/// output row's part is one copy of up to `ow` values (with stride 1) instead of `ow`
/// copies of `kw` values.
fn im2col_patch_major(w: &Window, x: &[f32], cols: &mut [f32]) {
    let p = w.oh * w.ow;
    let rows = cols.len() / (w.kh * w.kw).max(1);
    for ky in 0..w.kh {
        for kx in 0..w.kw {
            let tap = &mut cols[(ky * w.kw + kx) * rows..][..rows];
            // Output columns whose input column is in bounds: one range, as the
            // input column grows with the output column.
            let inside = |ox: &usize| w.col(*ox, kx).is_some();
            let (first, last) = ((0..w.ow).find(inside), (0..w.ow).rev().find(inside));
            for (xn, tn) in x.chunks_exact(w.in_size()).zip(tap.chunks_exact_mut(p)) {
                for (oy, dst) in tn.chunks_exact_mut(w.ow).enumerate() {
                    let (Some(iy), Some(a), Some(b)) = (w.row(oy, ky), first, last) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let xr = &xn[iy * w.iw..][..w.iw];
                    dst[..a].fill(0.0);
                    dst[b + 1..].fill(0.0);
                    let ix0 = w.col(a, kx).unwrap_or(0);
                    if w.sw == 1 {
                        dst[a..=b].copy_from_slice(&xr[ix0..][..b + 1 - a]);
                    } else {
                        for (t, v) in dst[a..=b].iter_mut().enumerate() {
                            *v = xr[ix0 + t * w.sw];
                        }
                    }
                }
            }
        }
    }
}

/// CONV_2D forward: `x` NHWC, `filter` OHWI, optional bias. One rayon task and one
/// GEMM per [`CHUNK`] samples (small convolutions are too small a GEMM one sample at a
/// time); each output element is one dot product over `k`, so chunking does not change
/// any result.
pub fn conv2d(w: &Window, x: &[f32], filter: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let k = w.kh * w.kw * w.c;
    let p = w.oh * w.ow;
    y.par_chunks_mut(CHUNK * w.out_size())
        .zip(x.par_chunks(CHUNK * w.in_size()))
        .for_each(|(yc, xc)| {
            let rows = p * (xc.len() / w.in_size().max(1));
            with_scratch(rows * k, |cols| {
                let strides = im2col_samples(w, xc, cols);
                gemm(rows, k, w.oc, cols, strides, filter, (1, k), yc, 0.0);
            });
            add_bias(yc, bias);
        });
}

/// CONV_2D input gradient: `dx = col2im(dy * filter)`, one GEMM per [`CHUNK`] samples.
pub fn conv2d_grad_input(w: &Window, dy: &[f32], filter: &[f32], dx: &mut [f32]) {
    let k = w.kh * w.kw * w.c;
    let p = w.oh * w.ow;
    dx.par_chunks_mut(CHUNK * w.in_size())
        .zip(dy.par_chunks(CHUNK * w.out_size()))
        .for_each(|(dxc, dyc)| {
            let rows = p * (dyc.len() / w.out_size().max(1));
            with_scratch(rows * k, |cols| {
                gemm(rows, w.oc, k, dyc, (w.oc, 1), filter, (k, 1), cols, 0.0);
                dxc.fill(0.0);
                let starts = contiguous_starts(w);
                for (dxn, cn) in dxc
                    .chunks_exact_mut(w.in_size())
                    .zip(cols.chunks_exact(p * k))
                {
                    col2im(w, &starts, cn, dxn);
                }
            });
        });
}

/// Sums `f(sample i, partial)` over fixed chunks of the batch, in chunk order.
fn chunked_sum(n: usize, len: usize, out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    chunk_sums(n, len, out, |start, count, part| {
        for i in start..start + count {
            f(i, part);
        }
    });
}

/// `out` = the sum of `f(first sample, samples, partial)` over fixed chunks of
/// [`CHUNK`] samples, each into a zeroed partial, the partials added in chunk order
/// (so the result does not depend on the thread count).
fn chunk_sums(n: usize, len: usize, out: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    let starts: Vec<usize> = (0..n).step_by(CHUNK).collect();
    let partials: Vec<Vec<f32>> = starts
        .par_iter()
        .map(|&s| {
            let mut part = vec![0.0; len];
            f(s, CHUNK.min(n - s), &mut part);
            part
        })
        .collect();
    out.fill(0.0);
    for part in partials {
        out.iter_mut().zip(&part).for_each(|(o, p)| *o += p);
    }
}

/// CONV_2D filter gradient: `dfilter = sum_n dy_n^T * im2col(x_n)`, each chunk of
/// [`CHUNK`] samples as one GEMM over all their output positions, the chunks' partial
/// sums added in chunk order.
pub fn conv2d_grad_filter(w: &Window, x: &[f32], dy: &[f32], dfilter: &mut [f32]) {
    let k = w.kh * w.kw * w.c;
    let p = w.oh * w.ow;
    chunk_sums(w.n, w.oc * k, dfilter, |s, n, part| {
        with_scratch(n * p * k, |cols| {
            let strides = im2col_samples(w, &x[s * w.in_size()..][..n * w.in_size()], cols);
            let dyc = &dy[s * w.out_size()..][..n * w.out_size()];
            gemm(w.oc, n * p, k, dyc, (1, w.oc), cols, strides, part, 0.0);
        });
    });
}

/// `acc[j] += a[j] * b[j]`, elementwise (same lengths): a loop the compiler
/// vectorizes.
#[inline(always)]
fn mac(acc: &mut [f32], a: &[f32], b: &[f32]) {
    acc.iter_mut()
        .zip(a.iter().zip(b))
        .for_each(|(s, (a, b))| *s += a * b);
}

/// One depthwise tap: `acc[c * m + j] += xs[c] * ws[c * m + j]` for channel
/// multiplier `m`; the usual `m == 1` as one vectorized [`mac`] (same products, same
/// order).
#[inline(always)]
fn depthwise_mac(acc: &mut [f32], xs: &[f32], ws: &[f32], m: usize) {
    if m == 1 {
        mac(acc, xs, ws);
        return;
    }
    for (ci, xv) in xs.iter().enumerate() {
        for j in ci * m..(ci + 1) * m {
            acc[j] += xv * ws[j];
        }
    }
}

/// DEPTHWISE_CONV_2D forward: filter `[1, KH, KW, C*M]`, output channel `c*M + m`.
pub fn depthwise(w: &Window, x: &[f32], filter: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let m = w.oc / w.c;
    y.par_chunks_mut(w.out_size())
        .zip(x.par_chunks(w.in_size()))
        .for_each(|(yn, xn)| {
            for oy in 0..w.oh {
                for ox in 0..w.ow {
                    let acc = &mut yn[(oy * w.ow + ox) * w.oc..][..w.oc];
                    match bias {
                        Some(b) => acc.copy_from_slice(b),
                        None => acc.fill(0.0),
                    }
                    for ky in 0..w.kh {
                        let Some(iy) = w.row(oy, ky) else { continue };
                        for kx in 0..w.kw {
                            let Some(ix) = w.col(ox, kx) else { continue };
                            let xs = &xn[(iy * w.iw + ix) * w.c..][..w.c];
                            let fs = &filter[(ky * w.kw + kx) * w.oc..][..w.oc];
                            depthwise_mac(acc, xs, fs, m);
                        }
                    }
                }
            }
        });
}

/// DEPTHWISE_CONV_2D input gradient.
pub fn depthwise_grad_input(w: &Window, dy: &[f32], filter: &[f32], dx: &mut [f32]) {
    let m = w.oc / w.c;
    dx.par_chunks_mut(w.in_size())
        .zip(dy.par_chunks(w.out_size()))
        .for_each(|(dxn, dyn_)| {
            dxn.fill(0.0);
            for oy in 0..w.oh {
                for ox in 0..w.ow {
                    let g = &dyn_[(oy * w.ow + ox) * w.oc..][..w.oc];
                    for ky in 0..w.kh {
                        let Some(iy) = w.row(oy, ky) else { continue };
                        for kx in 0..w.kw {
                            let Some(ix) = w.col(ox, kx) else { continue };
                            let fs = &filter[(ky * w.kw + kx) * w.oc..][..w.oc];
                            let xs = &mut dxn[(iy * w.iw + ix) * w.c..][..w.c];
                            if m == 1 {
                                mac(xs, g, fs);
                                continue;
                            }
                            for (ci, xv) in xs.iter_mut().enumerate() {
                                for j in ci * m..(ci + 1) * m {
                                    *xv += g[j] * fs[j];
                                }
                            }
                        }
                    }
                }
            }
        });
}

/// DEPTHWISE_CONV_2D filter gradient.
pub fn depthwise_grad_filter(w: &Window, x: &[f32], dy: &[f32], dfilter: &mut [f32]) {
    let m = w.oc / w.c;
    chunked_sum(w.n, w.kh * w.kw * w.oc, dfilter, |i, part| {
        let xn = &x[i * w.in_size()..][..w.in_size()];
        let dyn_ = &dy[i * w.out_size()..][..w.out_size()];
        for oy in 0..w.oh {
            for ox in 0..w.ow {
                let g = &dyn_[(oy * w.ow + ox) * w.oc..][..w.oc];
                for ky in 0..w.kh {
                    let Some(iy) = w.row(oy, ky) else { continue };
                    for kx in 0..w.kw {
                        let Some(ix) = w.col(ox, kx) else { continue };
                        let xs = &xn[(iy * w.iw + ix) * w.c..][..w.c];
                        let fs = &mut part[(ky * w.kw + kx) * w.oc..][..w.oc];
                        depthwise_mac(fs, xs, g, m);
                    }
                }
            }
        }
    });
}

/// Rows per FULLY_CONNECTED task.
const FC_ROWS: usize = 16;

/// FULLY_CONNECTED forward: `y[N, O] = x[N, I] * W[O, I]^T + b`.
pub fn fc(x: &[f32], weights: &[f32], bias: Option<&[f32]>, y: &mut [f32], o: usize) {
    let i = weights.len() / o;
    y.par_chunks_mut(FC_ROWS * o)
        .zip(x.par_chunks(FC_ROWS * i))
        .for_each(|(yc, xc)| {
            let rows = yc.len() / o;
            gemm(rows, i, o, xc, (i, 1), weights, (1, i), yc, 0.0);
            add_bias(yc, bias);
        });
}

/// FULLY_CONNECTED input gradient: `dx[N, I] = dy[N, O] * W[O, I]`.
pub fn fc_grad_input(dy: &[f32], weights: &[f32], dx: &mut [f32], o: usize) {
    let i = weights.len() / o;
    dx.par_chunks_mut(FC_ROWS * i)
        .zip(dy.par_chunks(FC_ROWS * o))
        .for_each(|(dxc, dyc)| {
            let rows = dyc.len() / o;
            gemm(rows, o, i, dyc, (o, 1), weights, (i, 1), dxc, 0.0);
        });
}

/// FULLY_CONNECTED weight gradient: `dW[O, I] = dy^T * x`.
pub fn fc_grad_weights(x: &[f32], dy: &[f32], dw: &mut [f32], o: usize) {
    let i = dw.len() / o;
    let n = dy.len() / o;
    dw.par_chunks_mut(FC_ROWS * i)
        .enumerate()
        .for_each(|(c, dwc)| {
            let rows = dwc.len() / i;
            let dyc = &dy[c * FC_ROWS..];
            gemm(rows, n, i, dyc, (1, o), x, (i, 1), dwc, 0.0);
        });
}

/// Sum over every axis but the last: the gradient of a bias.
pub fn bias_grad(dy: &[f32], db: &mut [f32]) {
    db.fill(0.0);
    for row in dy.chunks(db.len()) {
        db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
    }
}

/// MAX_POOL_2D forward (padded positions never win).
pub fn max_pool(w: &Window, x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(w.out_size())
        .zip(x.par_chunks(w.in_size()))
        .for_each(|(yn, xn)| {
            for oy in 0..w.oh {
                for ox in 0..w.ow {
                    let out = &mut yn[(oy * w.ow + ox) * w.c..][..w.c];
                    out.fill(f32::NEG_INFINITY);
                    for ky in 0..w.kh {
                        let Some(iy) = w.row(oy, ky) else { continue };
                        for kx in 0..w.kw {
                            let Some(ix) = w.col(ox, kx) else { continue };
                            let xs = &xn[(iy * w.iw + ix) * w.c..][..w.c];
                            out.iter_mut().zip(xs).for_each(|(o, v)| *o = o.max(*v));
                        }
                    }
                }
            }
        });
}

/// MAX_POOL_2D gradient: each window's `dy` goes to its first maximum. The window is
/// scanned once for all channels (the running maximum of each channel side by side, so
/// the compare-and-select runs across channels), the same first maximum per channel
/// as a scan channel by channel.
pub fn max_pool_grad(w: &Window, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(w.in_size())
        .zip(x.par_chunks(w.in_size()))
        .zip(dy.par_chunks(w.out_size()))
        .for_each(|((dxn, xn), dyn_)| {
            dxn.fill(0.0);
            let mut best = vec![f32::NEG_INFINITY; w.c];
            let mut at = vec![usize::MAX; w.c];
            for oy in 0..w.oh {
                for ox in 0..w.ow {
                    best.fill(f32::NEG_INFINITY);
                    at.fill(usize::MAX);
                    for ky in 0..w.kh {
                        let Some(iy) = w.row(oy, ky) else { continue };
                        for kx in 0..w.kw {
                            let Some(ix) = w.col(ox, kx) else { continue };
                            let base = (iy * w.iw + ix) * w.c;
                            let xs = &xn[base..][..w.c];
                            for (ch, ((b, a), &v)) in
                                best.iter_mut().zip(at.iter_mut()).zip(xs).enumerate()
                            {
                                if v > *b || *a == usize::MAX {
                                    *b = v;
                                    *a = base + ch;
                                }
                            }
                        }
                    }
                    let dys = &dyn_[(oy * w.ow + ox) * w.c..][..w.c];
                    for (&a, &d) in at.iter().zip(dys) {
                        if let Some(g) = dxn.get_mut(a) {
                            *g += d;
                        }
                    }
                }
            }
        });
}

fn in_bounds(w: &Window, oy: usize, ox: usize) -> usize {
    let rows = (0..w.kh).filter(|&k| w.row(oy, k).is_some()).count();
    let cols = (0..w.kw).filter(|&k| w.col(ox, k).is_some()).count();
    rows * cols
}

/// AVERAGE_POOL_2D forward: mean of each window's in-bounds elements.
pub fn avg_pool(w: &Window, x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(w.out_size())
        .zip(x.par_chunks(w.in_size()))
        .for_each(|(yn, xn)| {
            for oy in 0..w.oh {
                for ox in 0..w.ow {
                    let out = &mut yn[(oy * w.ow + ox) * w.c..][..w.c];
                    out.fill(0.0);
                    for ky in 0..w.kh {
                        let Some(iy) = w.row(oy, ky) else { continue };
                        for kx in 0..w.kw {
                            let Some(ix) = w.col(ox, kx) else { continue };
                            let xs = &xn[(iy * w.iw + ix) * w.c..][..w.c];
                            out.iter_mut().zip(xs).for_each(|(o, v)| *o += v);
                        }
                    }
                    let count = in_bounds(w, oy, ox).max(1) as f32;
                    out.iter_mut().for_each(|o| *o /= count);
                }
            }
        });
}

/// AVERAGE_POOL_2D gradient.
pub fn avg_pool_grad(w: &Window, dy: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(w.in_size())
        .zip(dy.par_chunks(w.out_size()))
        .for_each(|(dxn, dyn_)| {
            dxn.fill(0.0);
            for oy in 0..w.oh {
                for ox in 0..w.ow {
                    let count = in_bounds(w, oy, ox).max(1) as f32;
                    let g = &dyn_[(oy * w.ow + ox) * w.c..][..w.c];
                    for ky in 0..w.kh {
                        let Some(iy) = w.row(oy, ky) else { continue };
                        for kx in 0..w.kw {
                            let Some(ix) = w.col(ox, kx) else { continue };
                            let d = &mut dxn[(iy * w.iw + ix) * w.c..][..w.c];
                            d.iter_mut().zip(g).for_each(|(d, g)| *d += g / count);
                        }
                    }
                }
            }
        });
}

/// For every element of `big` (row-major), the index of the element of `small` it
/// maps to under NumPy broadcasting (`small` right-aligned, size-1 axes repeated) or,
/// for a reduction, with `reduced` axes dropped.
pub fn index_map(big: &[usize], small_strides: &[usize]) -> Vec<usize> {
    let len: usize = big.iter().product();
    let mut out = Vec::with_capacity(len);
    let mut idx = vec![0usize; big.len()];
    let mut at = 0usize;
    for _ in 0..len {
        out.push(at);
        for a in (0..big.len()).rev() {
            idx[a] += 1;
            at += small_strides[a];
            if idx[a] < big[a] {
                break;
            }
            at -= small_strides[a] * idx[a];
            idx[a] = 0;
        }
    }
    out
}

/// Whether `small` broadcast to `big` is `small`'s values repeated end to end: its
/// shape (padded with leading 1s) is 1s and then the trailing axes of `big`.
pub fn repeats(big: &[usize], small: &[usize]) -> bool {
    let Some(pad) = big.len().checked_sub(small.len()) else {
        return false;
    };
    let first = small.iter().position(|&d| d != 1).unwrap_or(small.len());
    small[first..] == big[pad + first..]
}

/// `(outer, reduced, inner)` sizes when `axes` are one contiguous run of `shape`'s
/// axes (such as H and W of NHWC), so a reduction over them needs no index map.
pub fn contiguous_axes(shape: &[usize], axes: &[usize]) -> Option<(usize, usize, usize)> {
    let (&lo, &hi) = (axes.iter().min()?, axes.iter().max()?);
    if hi >= shape.len() || (lo..=hi).any(|a| !axes.contains(&a)) {
        return None;
    }
    let size = |r: std::ops::Range<usize>| shape[r].iter().product::<usize>();
    Some((size(0..lo), size(lo..hi + 1), size(hi + 1..shape.len())))
}

/// Strides of `small` seen in `big`'s rank with broadcasting (0 on broadcast axes).
pub fn broadcast_strides(big: &[usize], small: &[usize]) -> Vec<usize> {
    let pad = big.len() - small.len();
    let mut strides = vec![0; big.len()];
    let mut s = 1;
    for a in (0..small.len()).rev() {
        strides[a + pad] = if small[a] == 1 && big[a + pad] != 1 {
            0
        } else {
            s
        };
        s *= small[a];
    }
    strides
}

/// Strides of the result of reducing `axes` of `shape` (0 on reduced axes).
pub fn reduce_strides(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut s = 1;
    for a in (0..shape.len()).rev() {
        if !axes.contains(&a) {
            strides[a] = s;
            s *= shape[a];
        }
    }
    strides
}

/// `out = f(a, b)` with NumPy broadcasting of `a` and `b` to `out_shape`.
pub fn broadcast(
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    out_shape: &[usize],
    out: &mut [f32],
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    if sa == out_shape && sb == out_shape {
        out.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(o, (x, y))| *o = f(*x, *y));
        return;
    }
    // The usual broadcast, a per-channel vector against a whole tensor, without
    // index maps.
    if sa == out_shape && repeats(out_shape, sb) && !b.is_empty() {
        for (oc, ac) in out.chunks_mut(b.len()).zip(a.chunks(b.len())) {
            for (o, (x, y)) in oc.iter_mut().zip(ac.iter().zip(b)) {
                *o = f(*x, *y);
            }
        }
        return;
    }
    if sb == out_shape && repeats(out_shape, sa) && !a.is_empty() {
        for (oc, bc) in out.chunks_mut(a.len()).zip(b.chunks(a.len())) {
            for (o, (x, y)) in oc.iter_mut().zip(a.iter().zip(bc)) {
                *o = f(*x, *y);
            }
        }
        return;
    }
    let ia = index_map(out_shape, &broadcast_strides(out_shape, sa));
    let ib = index_map(out_shape, &broadcast_strides(out_shape, sb));
    for (k, o) in out.iter_mut().enumerate() {
        *o = f(a[ia[k]], b[ib[k]]);
    }
}

/// CONCATENATION along `axis` of tensors with shapes `shapes`.
pub fn concat(parts: &[(&[f32], &[usize])], axis: usize, out: &mut [f32]) {
    let outer: usize = parts[0].1[..axis].iter().product();
    let mut at = 0;
    for o in 0..outer {
        for (data, shape) in parts {
            let inner: usize = shape[axis..].iter().product();
            out[at..at + inner].copy_from_slice(&data[o * inner..][..inner]);
            at += inner;
        }
    }
}

/// The slice `start..start + out_shape[axis]` of `x` along `axis`.
pub fn slice(
    x: &[f32],
    x_shape: &[usize],
    axis: usize,
    start: usize,
    out: &mut [f32],
    out_shape: &[usize],
) {
    let outer: usize = x_shape[..axis].iter().product();
    let inner: usize = x_shape[axis + 1..].iter().product();
    let row = x_shape[axis] * inner;
    let take = out_shape[axis] * inner;
    for o in 0..outer {
        out[o * take..][..take].copy_from_slice(&x[o * row + start * inner..][..take]);
    }
}

/// Softmax over the last axis of `beta * x`.
pub fn softmax(x: &[f32], classes: usize, beta: f32, y: &mut [f32]) {
    for (xr, yr) in x.chunks(classes).zip(y.chunks_mut(classes)) {
        let max = xr.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        let mut sum = 0.0;
        for (o, v) in yr.iter_mut().zip(xr) {
            *o = ((v - max) * beta).exp();
            sum += *o;
        }
        yr.iter_mut().for_each(|o| *o /= sum);
    }
}

/// Mean over the batch of `-sum(labels * log_softmax(logits))`.
pub fn softmax_cross_entropy(logits: &[f32], labels: &[f32], classes: usize) -> f32 {
    let n = logits.len() / classes;
    let mut total = 0.0f64;
    for (xr, lr) in logits.chunks(classes).zip(labels.chunks(classes)) {
        let max = xr.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        let lse = xr
            .iter()
            .map(|v| ((v - max) as f64).exp())
            .sum::<f64>()
            .ln()
            + max as f64;
        for (v, l) in xr.iter().zip(lr) {
            total -= *l as f64 * (*v as f64 - lse);
        }
    }
    (total / n.max(1) as f64) as f32
}

/// Gradient of [`softmax_cross_entropy`] times `dloss`.
pub fn softmax_cross_entropy_grad(
    logits: &[f32],
    labels: &[f32],
    classes: usize,
    dloss: f32,
    dx: &mut [f32],
) {
    let n = logits.len() / classes;
    let scale = dloss / n.max(1) as f32;
    for ((xr, lr), dr) in logits
        .chunks(classes)
        .zip(labels.chunks(classes))
        .zip(dx.chunks_mut(classes))
    {
        softmax(xr, classes, 1.0, dr);
        let total: f32 = lr.iter().sum();
        for (d, l) in dr.iter_mut().zip(lr) {
            *d = (*d * total - l) * scale;
        }
    }
}

/// Values per parallel task of the elementwise batch-norm and dropout kernels.
const ELEMS: usize = 1 << 14;

/// Batch mean and biased variance per channel (the last axis) of `x` holding `n`
/// samples: `stats[..C]` the means, `stats[C..]` the variances (two passes; per-sample
/// partial sums added in [`CHUNK`] order).
pub fn batch_norm_stats(x: &[f32], n: usize, stats: &mut [f32]) {
    let c = stats.len() / 2;
    let per = x.len() / n.max(1);
    let count = (x.len() / c.max(1)).max(1) as f32;
    let (mean, var) = stats.split_at_mut(c);
    chunked_sum(n, c, mean, |i, part| {
        for row in x[i * per..][..per].chunks(c) {
            part.iter_mut().zip(row).for_each(|(p, v)| *p += v);
        }
    });
    mean.iter_mut().for_each(|m| *m /= count);
    let m: &[f32] = mean;
    chunked_sum(n, c, var, |i, part| {
        for row in x[i * per..][..per].chunks(c) {
            for ((p, v), m) in part.iter_mut().zip(row).zip(m) {
                *p += (v - m) * (v - m);
            }
        }
    });
    var.iter_mut().for_each(|v| *v /= count);
}

/// `1 / sqrt(var + eps)` per channel of batch statistics `[mean; C] ++ [var; C]`.
fn inv_std(stats: &[f32], eps: f32) -> Vec<f32> {
    stats[stats.len() / 2..]
        .iter()
        .map(|v| 1.0 / (v + eps).sqrt())
        .collect()
}

/// Batch norm in training mode: `y = gamma * (x - mean) * inv_std + beta` per channel.
pub fn batch_norm(x: &[f32], stats: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) {
    let c = gamma.len();
    let mean = &stats[..c];
    let a: Vec<f32> = gamma
        .iter()
        .zip(inv_std(stats, eps))
        .map(|(g, s)| g * s)
        .collect();
    y.par_chunks_mut(ELEMS * c)
        .zip(x.par_chunks(ELEMS * c))
        .for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_mut(c).zip(xc.chunks(c)) {
                // Zipped, not indexed: no bounds checks, so the loop vectorizes.
                for (y, (x, (m, (a, b)))) in yr
                    .iter_mut()
                    .zip(xr.iter().zip(mean.iter().zip(a.iter().zip(beta))))
                {
                    *y = (x - m) * a + b;
                }
            }
        });
}

/// Per channel `sum(dy)` (first C values) and `sum(dy * xhat)` (next C), `xhat` the
/// normalized `x`.
fn batch_norm_sums(x: &[f32], stats: &[f32], dy: &[f32], n: usize, eps: f32) -> Vec<f32> {
    let c = stats.len() / 2;
    let (mean, inv) = (&stats[..c], inv_std(stats, eps));
    let per = x.len() / n.max(1);
    let mut sums = vec![0.0; 2 * c];
    chunked_sum(n, 2 * c, &mut sums, |i, part| {
        let (s1, s2) = part.split_at_mut(c);
        for (xr, dr) in x[i * per..][..per]
            .chunks(c)
            .zip(dy[i * per..][..per].chunks(c))
        {
            s1.iter_mut().zip(dr).for_each(|(s, d)| *s += d);
            for (s, (d, (x, (m, v)))) in s2
                .iter_mut()
                .zip(dr.iter().zip(xr.iter().zip(mean.iter().zip(&inv))))
            {
                *s += d * (x - m) * v;
            }
        }
    });
    sums
}

/// Input gradient of [`batch_norm`] through the batch statistics:
/// `dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))` per channel.
pub fn batch_norm_grad_input(
    x: &[f32],
    stats: &[f32],
    gamma: &[f32],
    dy: &[f32],
    n: usize,
    eps: f32,
    dx: &mut [f32],
) {
    let c = gamma.len();
    let count = (x.len() / c.max(1)).max(1) as f32;
    let sums = batch_norm_sums(x, stats, dy, n, eps);
    let (mean, inv) = (&stats[..c], inv_std(stats, eps));
    let (m1, m2): (Vec<f32>, Vec<f32>) = (0..c)
        .map(|ch| (sums[ch] / count, sums[c + ch] / count))
        .unzip();
    dx.par_chunks_mut(ELEMS * c)
        .zip(x.par_chunks(ELEMS * c).zip(dy.par_chunks(ELEMS * c)))
        .for_each(|(dc, (xc, gc))| {
            for ((dr, xr), gr) in dc.chunks_mut(c).zip(xc.chunks(c)).zip(gc.chunks(c)) {
                let per_channel = mean
                    .iter()
                    .zip(inv.iter().zip(gamma.iter().zip(m1.iter().zip(&m2))));
                for ((d, (x, g)), (m, (v, (gm, (a, b))))) in
                    dr.iter_mut().zip(xr.iter().zip(gr)).zip(per_channel)
                {
                    let xhat = (x - m) * v;
                    *d = gm * v * (g - a - xhat * b);
                }
            }
        });
}

/// Gamma gradient of [`batch_norm`]: `sum(dy * xhat)` per channel.
pub fn batch_norm_grad_gamma(
    x: &[f32],
    stats: &[f32],
    dy: &[f32],
    n: usize,
    eps: f32,
    dgamma: &mut [f32],
) {
    let c = dgamma.len();
    dgamma.copy_from_slice(&batch_norm_sums(x, stats, dy, n, eps)[c..]);
}

/// Elementwise `x * mask` (dropout forward, and its gradient `dy * mask`).
pub fn dropout(x: &[f32], mask: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(ELEMS)
        .zip(x.par_chunks(ELEMS).zip(mask.par_chunks(ELEMS)))
        .for_each(|(yc, (xc, mc))| {
            for ((o, v), m) in yc.iter_mut().zip(xc).zip(mc) {
                *o = v * m;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A random convolution geometry: 1 to 3 channels (1 takes the patch-major im2col),
    /// every padding kind, strides and dilations 1 or 2, 1 to 6 samples (a partial
    /// chunk of [`CHUNK`] included).
    fn geometry(rng: &mut Rng) -> Window {
        let (kh, kw) = (1 + rng.below(3), 1 + rng.below(3));
        let (sh, sw) = (1 + rng.below(2), 1 + rng.below(2));
        let (dh, dw) = (1 + rng.below(2), 1 + rng.below(2));
        let (ih, iw) = (3 + rng.below(6), 3 + rng.below(6));
        let padding = match rng.below(3) {
            0 => Padding::Valid,
            1 => Padding::Same,
            _ => Padding::Explicit {
                top: rng.below(2),
                bottom: rng.below(2),
                left: rng.below(2),
                right: rng.below(2),
            },
        };
        let out = |i: usize, k: usize, s: usize, d: usize, axis: usize| {
            let eff = (k - 1) * d + 1;
            match padding {
                Padding::Valid => (i.saturating_sub(eff)) / s + 1,
                Padding::Same => i.div_ceil(s),
                Padding::Explicit { .. } => {
                    let (a, b) = padding.explicit(axis).unwrap();
                    (i + a + b).saturating_sub(eff) / s + 1
                }
            }
        };
        let (n, c, oc) = (1 + rng.below(6), 1 + rng.below(3), 1 + rng.below(4));
        let (oh, ow) = (out(ih, kh, sh, dh, 0), out(iw, kw, sw, dw, 1));
        Window::new(
            &[n, ih, iw, c],
            &[n, oh, ow, oc],
            [kh, kw],
            [sh, sw],
            [dh, dw],
            padding,
        )
    }

    fn random(rng: &mut Rng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    /// Visits every (sample, output pixel, tap, channel) with its in-bounds input index.
    fn taps(w: &Window, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
        for n in 0..w.n {
            for oy in 0..w.oh {
                for ox in 0..w.ow {
                    for ky in 0..w.kh {
                        for kx in 0..w.kw {
                            let (Some(iy), Some(ix)) = (w.row(oy, ky), w.col(ox, kx)) else {
                                continue;
                            };
                            for ci in 0..w.c {
                                let xi = ((n * w.ih + iy) * w.iw + ix) * w.c + ci;
                                let yi = ((n * w.oh + oy) * w.ow + ox) * w.oc;
                                f(xi, yi, ky, kx, ci);
                            }
                        }
                    }
                }
            }
        }
    }

    fn close(name: &str, got: &[f32], want: &[f64], w: &Window) {
        assert_eq!(got.len(), want.len());
        for (i, (g, e)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(*g) - e).abs() <= 1e-4 * (1.0 + e.abs()),
                "{name} element {i}: {g} vs {e} for {w:?}"
            );
        }
    }

    /// conv2d, conv2d_grad_filter and conv2d_grad_input against direct sums in f64.
    #[test]
    fn convolution_matches_direct_sums() {
        for seed in 1..200 {
            let mut rng = Rng::new(seed);
            let w = geometry(&mut rng);
            let k = w.kh * w.kw * w.c;
            let x = random(&mut rng, w.n * w.in_size());
            let filter = random(&mut rng, w.oc * k);
            let bias = random(&mut rng, w.oc);
            let dy = random(&mut rng, w.n * w.out_size());
            let fi =
                |o: usize, ky: usize, kx: usize, ci: usize| o * k + (ky * w.kw + kx) * w.c + ci;

            let mut want_y: Vec<f64> = (0..w.n * w.oh * w.ow)
                .flat_map(|_| bias.iter().map(|&b| f64::from(b)))
                .collect();
            let mut want_df = vec![0.0f64; filter.len()];
            let mut want_dx = vec![0.0f64; x.len()];
            taps(&w, |xi, yi, ky, kx, ci| {
                for o in 0..w.oc {
                    let f = fi(o, ky, kx, ci);
                    want_y[yi + o] += f64::from(x[xi]) * f64::from(filter[f]);
                    want_df[f] += f64::from(dy[yi + o]) * f64::from(x[xi]);
                    want_dx[xi] += f64::from(dy[yi + o]) * f64::from(filter[f]);
                }
            });

            let mut y = vec![f32::NAN; dy.len()];
            conv2d(&w, &x, &filter, Some(&bias), &mut y);
            close("conv2d", &y, &want_y, &w);
            let mut df = vec![f32::NAN; filter.len()];
            conv2d_grad_filter(&w, &x, &dy, &mut df);
            close("conv2d_grad_filter", &df, &want_df, &w);
            let mut dx = vec![f32::NAN; x.len()];
            conv2d_grad_input(&w, &dy, &filter, &mut dx);
            close("conv2d_grad_input", &dx, &want_dx, &w);
        }
    }

    #[test]
    fn repeats_and_contiguous_axes() {
        assert!(repeats(&[2, 3, 3, 4], &[4]));
        assert!(repeats(&[2, 3, 3, 4], &[1, 1, 3, 4]));
        assert!(repeats(&[2, 3, 3, 4], &[1]));
        assert!(!repeats(&[2, 3, 3, 4], &[3, 1]));
        assert!(!repeats(&[2, 3], &[2, 1]));
        assert!(!repeats(&[4], &[1, 4]));
        assert_eq!(contiguous_axes(&[2, 3, 5, 4], &[1, 2]), Some((2, 15, 4)));
        assert_eq!(contiguous_axes(&[2, 3, 5, 4], &[2, 1]), Some((2, 15, 4)));
        assert_eq!(contiguous_axes(&[2, 3, 5, 4], &[3]), Some((30, 4, 1)));
        assert_eq!(contiguous_axes(&[2, 3, 5, 4], &[1, 3]), None);
        assert_eq!(contiguous_axes(&[2, 3], &[2]), None);
        assert_eq!(contiguous_axes(&[2, 3], &[]), None);
    }

    /// The per-channel fast paths of [`broadcast`] give what the index maps give.
    #[test]
    fn broadcast_matches_index_maps() {
        let big = [2, 3, 2, 4];
        let mut rng = Rng::new(7);
        for small in [&[4][..], &[1, 2, 4], &[1], &[3, 1, 1], &[2, 1, 2, 1]] {
            let n: usize = big.iter().product();
            let a = random(&mut rng, n);
            let b = random(&mut rng, small.iter().product());
            for swap in [false, true] {
                let ((x, sx), (y, sy)) = if swap {
                    ((&b, small), (&a, &big[..]))
                } else {
                    ((&a, &big[..]), (&b, small))
                };
                let mut out = vec![0.0; n];
                broadcast(x, sx, y, sy, &big, &mut out, |p, q| p - 2.0 * q);
                let ix = index_map(&big, &broadcast_strides(&big, sx));
                let iy = index_map(&big, &broadcast_strides(&big, sy));
                for k in 0..n {
                    assert_eq!(
                        out[k],
                        x[ix[k]] - 2.0 * y[iy[k]],
                        "{small:?} swap {swap} at {k}"
                    );
                }
            }
        }
    }
}
