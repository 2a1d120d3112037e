//! Group norm (optionally fused with SiLU) and layer norm.
//!
//! Statistics: each run of up to [`norm_stat_chunk`] elements is summed in f32 lanes twice
//! while it sits in L1 (once for a shift, once for Σ(x − shift) and Σ(x − shift)²), and the
//! runs are combined in f64 (Chan et al.'s pairwise update), in a fixed order. Groups span up
//! to millions of elements, so both the statistics and the normalization are split within a
//! group across threads.
//!
//! [`norm_stat_chunk`]: crate::tuning::Tuning::norm_stat_chunk

use crate::elementwise::silu_fast;
use crate::simd::{self, simd_fn, Level};
use crate::tuning::tuning;
use rayon::prelude::*;

/// Count, mean and sum of squared deviations of a run.
#[derive(Clone, Copy, Debug)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    const EMPTY: Moments = Moments {
        n: 0.0,
        mean: 0.0,
        m2: 0.0,
    };

    #[inline(always)]
    fn merge(self, o: Moments) -> Moments {
        if o.n == 0.0 {
            return self;
        }
        if self.n == 0.0 {
            return o;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        Moments {
            n,
            mean: self.mean + d * (o.n / n),
            m2: self.m2 + o.m2 + d * d * (self.n * o.n / n),
        }
    }

    /// Population variance.
    #[inline(always)]
    fn var(self) -> f64 {
        if self.n == 0.0 {
            0.0
        } else {
            (self.m2 / self.n).max(0.0)
        }
    }
}

/// f32 lanes per accumulator (a few vector registers at every level).
const LANES: usize = 32;

#[inline(always)]
fn lane_sum(acc: &[f32; LANES]) -> f64 {
    acc.iter().map(|&v| v as f64).sum()
}

/// Moments of a short run (meant for ≤ [`norm_stat_chunk`] elements: f32 partial sums).
///
/// [`norm_stat_chunk`]: crate::tuning::Tuning::norm_stat_chunk
#[inline(always)]
fn moments_inl(x: &[f32]) -> Moments {
    if x.is_empty() {
        return Moments::EMPTY;
    }
    let n = x.len() as f64;
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    let mut acc = [0f32; LANES];
    for c in chunks.clone() {
        let c: &[f32; LANES] = c.try_into().unwrap();
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    let s = lane_sum(&acc) + rest.iter().map(|&v| v as f64).sum::<f64>();
    let shift = (s / n) as f32;
    let (mut d1, mut d2) = ([0f32; LANES], [0f32; LANES]);
    for c in chunks {
        let c: &[f32; LANES] = c.try_into().unwrap();
        for l in 0..LANES {
            let d = c[l] - shift;
            d1[l] += d;
            d2[l] += d * d;
        }
    }
    let (mut s1, mut s2) = (lane_sum(&d1), lane_sum(&d2));
    for &v in rest {
        let d = (v - shift) as f64;
        s1 += d;
        s2 += d * d;
    }
    Moments {
        n,
        mean: shift as f64 + s1 / n,
        m2: (s2 - s1 * s1 / n).max(0.0),
    }
}

simd_fn!(fn moments[](x: &[f32]) -> Moments {
    moments_inl(x)
});

/// Moments of any length: runs of `stat_chunk` elements merged in order.
#[inline(always)]
fn moments_long(x: &[f32], stat_chunk: usize) -> Moments {
    // A plain loop, not `fold`: a closure would be compiled outside the `simd_fn!` body.
    let mut m = Moments::EMPTY;
    for c in x.chunks(stat_chunk) {
        m = m.merge(moments_inl(c));
    }
    m
}

simd_fn!(fn normalize_chunk[](
    start: usize,
    x: &[f32],
    y: &mut [f32],
    spatial: usize,
    ab: &[(f32, f32)],
    fuse_silu: bool,
) {
    // x, y cover elements start.. of the whole tensor; channel ch spans ch·spatial.. .
    let len = x.len().min(y.len());
    let mut pos = 0;
    while pos < len {
        let ch = (start + pos) / spatial;
        let end = ((ch + 1) * spatial - start).min(len);
        let (a, b) = ab[ch];
        let (xs, ys) = (&x[pos..end], &mut y[pos..end]);
        if fuse_silu {
            for (o, &v) in ys.iter_mut().zip(xs) {
                *o = silu_fast(v * a + b);
            }
        } else {
            for (o, &v) in ys.iter_mut().zip(xs) {
                *o = v * a + b;
            }
        }
        pos = end;
    }
});

/// Group norm over x (n, c, spatial...) with `groups` groups and per-channel affine.
/// Statistics are combined in f64 (groups span up to millions of elements).
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f32],
    n: usize,
    c: usize,
    spatial: usize,
    groups: usize,
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
    fuse_silu: bool,
    y: &mut [f32],
) {
    group_norm_at(
        simd::level(),
        x,
        n,
        c,
        spatial,
        groups,
        eps,
        gamma,
        beta,
        fuse_silu,
        y,
    );
}

/// [`group_norm`] at a given instruction-set level (lowered to what the CPU has): for tests.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_at(
    lvl: Level,
    x: &[f32],
    n: usize,
    c: usize,
    spatial: usize,
    groups: usize,
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
    fuse_silu: bool,
    y: &mut [f32],
) {
    assert_eq!(x.len(), n * c * spatial);
    assert_eq!(y.len(), x.len());
    let cpg = c / groups;
    let glen = cpg * spatial;
    if glen == 0 {
        return;
    }
    // Statistics: one task per run of every group, merged per group in order.
    let stat_chunk = tuning().norm_stat_chunk;
    let per = glen.div_ceil(stat_chunk);
    let ng = n * groups;
    let parts: Vec<Moments> = (0..ng * per)
        .into_par_iter()
        .map(|k| {
            let (g, j) = (k / per, k % per);
            let lo = g * glen + j * stat_chunk;
            let hi = (g * glen + glen).min(lo + stat_chunk);
            moments(lvl, &x[lo..hi])
        })
        .collect();
    // Per channel (over the batch): y = x·a + b.
    let mut ab = Vec::with_capacity(n * c);
    for (bg, ps) in parts.chunks(per).enumerate() {
        let m = ps.iter().fold(Moments::EMPTY, |m, &p| m.merge(p));
        let rstd = 1.0 / (m.var() + eps as f64).sqrt();
        let g = bg % groups;
        for ch in g * cpg..(g + 1) * cpg {
            let a = gamma[ch] as f64 * rstd;
            ab.push((a as f32, (beta[ch] as f64 - m.mean * a) as f32));
        }
    }
    let ab = &ab;
    let chunk = tuning().par_chunk;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .enumerate()
        .for_each(|(t, (yc, xc))| normalize_chunk(lvl, t * chunk, xc, yc, spatial, ab, fuse_silu));
}

simd_fn!(fn layer_norm_rows[](
    x: &[f32],
    d: usize,
    stat_chunk: usize,
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
) {
    let (gamma, beta) = (&gamma[..d], &beta[..d]);
    for (yr, xr) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let m = moments_long(xr, stat_chunk);
        let rstd = (1.0 / (m.var() + eps as f64).sqrt()) as f32;
        let mean = m.mean as f32;
        for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
            *o = (v - mean) * rstd * g + b;
        }
    }
});

/// Layer norm over rows of length `d`.
pub fn layer_norm(x: &[f32], d: usize, eps: f32, gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    layer_norm_at(simd::level(), x, d, eps, gamma, beta, y);
}

/// [`layer_norm`] at a given instruction-set level (lowered to what the CPU has): for tests.
pub fn layer_norm_at(
    lvl: Level,
    x: &[f32],
    d: usize,
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
) {
    assert_eq!(x.len() % d, 0);
    assert_eq!(y.len(), x.len());
    let t = tuning();
    let rows_per_task = (t.par_chunk / d).max(1);
    let stat_chunk = t.norm_stat_chunk;
    y.par_chunks_mut(d * rows_per_task)
        .zip(x.par_chunks(d * rows_per_task))
        .for_each(|(yc, xc)| layer_norm_rows(lvl, xc, d, stat_chunk, eps, gamma, beta, yc));
}

simd_fn!(fn rms_norm_rows[](x: &[f32], d: usize, eps: f32, gamma: &[f32], y: &mut [f32]) {
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        // Sum of squares in eight f32 partial sums (vectorizable); torch sums in f32 too.
        let mut acc = [0f32; 8];
        let mut chunks = xr.chunks_exact(8);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v * v;
            }
        }
        let mut ss: f32 = acc.iter().sum();
        for &v in chunks.remainder() {
            ss += v * v;
        }
        let inv = 1.0 / (ss / d as f32 + eps).sqrt();
        for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(gamma) {
            *o = v * inv * g;
        }
    }
});

/// L2 normalization over rows of `d`: y = x / max(‖x‖₂, eps) (torch's `F.normalize`). Plain
/// code: it runs once per VQ decode over a few thousand short rows.
pub fn l2_normalize(x: &[f32], d: usize, eps: f32, y: &mut [f32]) {
    assert_eq!(x.len() % d, 0);
    assert_eq!(y.len(), x.len());
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(yr, xr)| {
            let ss: f64 = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let inv = 1.0 / (ss.sqrt() as f32).max(eps);
            for (o, &v) in yr.iter_mut().zip(xr) {
                *o = v * inv;
            }
        });
}

/// RMS norm over rows of `d`: y = x / sqrt(mean(x²) + eps) · gamma (Llama's `LlamaRMSNorm`,
/// T5's `T5LayerNorm`).
pub fn rms_norm(x: &[f32], d: usize, eps: f32, gamma: &[f32], y: &mut [f32]) {
    rms_norm_at(simd::level(), x, d, eps, gamma, y);
}

/// [`rms_norm`] at a given instruction-set level (lowered to what the CPU has): for tests.
pub fn rms_norm_at(lvl: Level, x: &[f32], d: usize, eps: f32, gamma: &[f32], y: &mut [f32]) {
    assert_eq!(x.len() % d, 0);
    assert_eq!(y.len(), x.len());
    assert_eq!(gamma.len(), d);
    let rows_per_task = (tuning().par_chunk / d).max(1);
    y.par_chunks_mut(d * rows_per_task)
        .zip(x.par_chunks(d * rows_per_task))
        .for_each(|(yc, xc)| rms_norm_rows(lvl, xc, d, eps, gamma, yc));
}

/// Global response normalization (ConvNeXt-V2) of channels-last x (b, l, c): per image,
/// g[ch] = ‖x[:, ch]‖₂ over the l positions, n = g / (mean(g) + 1e-6), then
/// y = gamma · (x · n) + beta + x. The sums of squares run in f64 (one pass over the rows,
/// channels contiguous); the rows are then written in parallel.
pub fn global_response_norm(
    x: &[f32],
    [b, l, c]: [usize; 3],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
) {
    assert_eq!(x.len(), b * l * c);
    assert_eq!(y.len(), x.len());
    assert!(gamma.len() == c && beta.len() == c);
    let rows_per_task = (tuning().par_chunk / c.max(1)).max(1);
    for (xb, yb) in x.chunks_exact(l * c).zip(y.chunks_exact_mut(l * c)) {
        let ss = xb
            .par_chunks(c * rows_per_task)
            .map(|rows| {
                let mut acc = vec![0f64; c];
                for r in rows.chunks_exact(c) {
                    for (a, &v) in acc.iter_mut().zip(r) {
                        *a += f64::from(v) * f64::from(v);
                    }
                }
                acc
            })
            .reduce(
                || vec![0f64; c],
                |mut a, bb| {
                    a.iter_mut().zip(&bb).for_each(|(a, b)| *a += b);
                    a
                },
            );
        let g: Vec<f64> = ss.iter().map(|s| s.sqrt()).collect();
        let mean = g.iter().sum::<f64>() / c as f64;
        // gamma · x · n + x + beta = x · (1 + gamma·n) + beta
        let scale: Vec<f32> = g
            .iter()
            .zip(gamma)
            .map(|(g, &ga)| 1.0 + ga * (g / (mean + 1e-6)) as f32)
            .collect();
        yb.par_chunks_mut(c * rows_per_task)
            .zip(xb.par_chunks(c * rows_per_task))
            .for_each(|(yr, xr)| {
                for (yrow, xrow) in yr.chunks_exact_mut(c).zip(xr.chunks_exact(c)) {
                    for (((o, &v), &s), &be) in yrow.iter_mut().zip(xrow).zip(&scale).zip(beta) {
                        *o = v * s + be;
                    }
                }
            });
    }
}
