//! Group norm (optionally fused with SiLU) and layer norm.

use crate::elementwise::silu;
use rayon::prelude::*;

/// Group norm over x (n, c, spatial...) with `groups` groups and per-channel affine.
/// Statistics are accumulated in f64 (groups span up to millions of elements).
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
    assert_eq!(x.len(), n * c * spatial);
    assert_eq!(y.len(), x.len());
    let cpg = c / groups;
    let glen = cpg * spatial;
    y.par_chunks_mut(glen)
        .zip(x.par_chunks(glen))
        .enumerate()
        .for_each(|(i, (yg, xg))| {
            let g = i % groups;
            let mut sum = 0f64;
            for &v in xg {
                sum += v as f64;
            }
            let mean = sum / glen as f64;
            let mut var = 0f64;
            for &v in xg {
                let d = v as f64 - mean;
                var += d * d;
            }
            let rstd = 1.0 / (var / glen as f64 + eps as f64).sqrt();
            for ci in 0..cpg {
                let ch = g * cpg + ci;
                let a = (gamma[ch] as f64 * rstd) as f32;
                let b = (beta[ch] as f64 - mean * rstd * gamma[ch] as f64) as f32;
                let (xs, ys) = (
                    &xg[ci * spatial..(ci + 1) * spatial],
                    &mut yg[ci * spatial..(ci + 1) * spatial],
                );
                if fuse_silu {
                    for (o, &v) in ys.iter_mut().zip(xs) {
                        *o = silu(v * a + b);
                    }
                } else {
                    for (o, &v) in ys.iter_mut().zip(xs) {
                        *o = v * a + b;
                    }
                }
            }
        });
}

/// Layer norm over rows of length `d`.
pub fn layer_norm(x: &[f32], d: usize, eps: f32, gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    assert_eq!(x.len() % d, 0);
    assert_eq!(y.len(), x.len());
    let rows_per_task = (crate::PAR_CHUNK / d).max(1);
    y.par_chunks_mut(d * rows_per_task)
        .zip(x.par_chunks(d * rows_per_task))
        .for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_exact_mut(d).zip(xc.chunks_exact(d)) {
                let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                let var = xr
                    .iter()
                    .map(|&v| {
                        let t = v as f64 - mean;
                        t * t
                    })
                    .sum::<f64>()
                    / d as f64;
                let rstd = 1.0 / (var + eps as f64).sqrt();
                for j in 0..d {
                    yr[j] = ((xr[j] as f64 - mean) * rstd) as f32 * gamma[j] + beta[j];
                }
            }
        });
}
