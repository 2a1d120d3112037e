//! Activations, broadcasting arithmetic, layout copies, resampling and embeddings.

use crate::PAR_CHUNK;
use prism_core::ActKind;
use rayon::prelude::*;

#[inline]
pub fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

#[inline]
pub fn gelu(v: f32) -> f32 {
    0.5 * v * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline]
pub fn gelu_tanh(v: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/π)
    0.5 * v * (1.0 + (C * (v + 0.044715 * v * v * v)).tanh())
}

#[inline]
pub fn quick_gelu(v: f32) -> f32 {
    v / (1.0 + (-1.702 * v).exp())
}

pub fn activation(kind: ActKind, x: &[f32], y: &mut [f32]) {
    let f: fn(f32) -> f32 = match kind {
        ActKind::Silu => silu,
        ActKind::Gelu => gelu,
        ActKind::GeluTanh => gelu_tanh,
        ActKind::QuickGelu => quick_gelu,
    };
    map(x, y, f);
}

/// y[i] = f(x[i]), in parallel chunks.
pub fn map(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    assert_eq!(x.len(), y.len());
    y.par_chunks_mut(PAR_CHUNK)
        .zip(x.par_chunks(PAR_CHUNK))
        .for_each(|(yc, xc)| {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = f(v);
            }
        });
}

/// GEGLU over rows of 2n: y = x[:n] · gelu(x[n:]).
pub fn geglu(x: &[f32], n: usize, y: &mut [f32]) {
    assert_eq!(x.len(), 2 * y.len());
    let rows_per_task = (PAR_CHUNK / n).max(1);
    y.par_chunks_mut(n * rows_per_task)
        .zip(x.par_chunks(2 * n * rows_per_task))
        .for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_exact_mut(n).zip(xc.chunks_exact(2 * n)) {
                let (a, g) = xr.split_at(n);
                for j in 0..n {
                    yr[j] = a[j] * gelu(g[j]);
                }
            }
        });
}

/// y = a ∘ b with b broadcast to a's shape (trailing alignment, size-1 axes repeat).
pub fn broadcast_binary(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    y: &mut [f32],
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    assert_eq!(a.len(), y.len());
    if a_shape.ends_with(b_shape) || b.len() == a.len() {
        // b repeats whole: y[i] = f(a[i], b[i mod |b|]).
        let bl = b.len();
        if bl == 0 {
            return;
        }
        let chunk = (PAR_CHUNK / bl).max(1) * bl;
        y.par_chunks_mut(chunk)
            .zip(a.par_chunks(chunk))
            .for_each(|(yc, ac)| {
                for (yr, ar) in yc.chunks_mut(bl).zip(ac.chunks(bl)) {
                    for ((o, &x), &z) in yr.iter_mut().zip(ar).zip(b) {
                        *o = f(x, z);
                    }
                }
            });
        return;
    }
    // General case: strides of b over a's axes (0 where broadcast).
    let nd = a_shape.len();
    let mut bs = vec![0usize; nd];
    let off = nd - b_shape.len();
    let mut stride = 1;
    for i in (0..b_shape.len()).rev() {
        if b_shape[i] != 1 {
            bs[off + i] = stride;
        }
        stride *= b_shape[i];
    }
    let inner = a_shape[nd - 1];
    let inner_stride = bs[nd - 1];
    y.par_chunks_mut(inner)
        .zip(a.par_chunks(inner))
        .enumerate()
        .for_each(|(row, (yr, ar))| {
            // Decompose the row index over the outer axes.
            let mut rem = row;
            let mut bo = 0;
            for ax in (0..nd - 1).rev() {
                let i = rem % a_shape[ax];
                rem /= a_shape[ax];
                bo += i * bs[ax];
            }
            for (j, (o, &x)) in yr.iter_mut().zip(ar).enumerate() {
                *o = f(x, b[bo + j * inner_stride]);
            }
        });
}

/// Concatenate along `axis`: every input has shape `shapes[i]`, equal except on `axis`.
pub fn concat(xs: &[&[f32]], shapes: &[&[usize]], axis: usize, y: &mut [f32]) {
    let outer: usize = shapes[0][..axis].iter().product();
    let inner: usize = shapes[0][axis + 1..].iter().product();
    let total: usize = shapes.iter().map(|s| s[axis]).sum::<usize>() * inner;
    let mut col = 0;
    for (x, s) in xs.iter().zip(shapes) {
        let run = s[axis] * inner;
        for o in 0..outer {
            y[o * total + col..o * total + col + run].copy_from_slice(&x[o * run..(o + 1) * run]);
        }
        col += run;
    }
}

/// y = x[..., start..start+len, ...] along `axis`.
pub fn slice(x: &[f32], shape: &[usize], axis: usize, start: usize, len: usize, y: &mut [f32]) {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let (src_run, dst_run) = (shape[axis] * inner, len * inner);
    for o in 0..outer {
        y[o * dst_run..(o + 1) * dst_run].copy_from_slice(
            &x[o * src_run + start * inner..o * src_run + start * inner + dst_run],
        );
    }
}

/// y = x.permute(perm) made contiguous.
pub fn permute(x: &[f32], shape: &[usize], perm: &[usize], y: &mut [f32]) {
    let nd = shape.len();
    let mut in_strides = vec![1usize; nd];
    for i in (0..nd.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let src_strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    if nd == 0 {
        y.copy_from_slice(x);
        return;
    }
    let inner = out_shape[nd - 1];
    let inner_stride = src_strides[nd - 1];
    y.par_chunks_mut(inner.max(1))
        .enumerate()
        .for_each(|(row, yr)| {
            let mut rem = row;
            let mut off = 0;
            for ax in (0..nd - 1).rev() {
                let i = rem % out_shape[ax];
                rem /= out_shape[ax];
                off += i * src_strides[ax];
            }
            if inner_stride == 1 {
                yr.copy_from_slice(&x[off..off + inner]);
            } else {
                for (j, o) in yr.iter_mut().enumerate() {
                    *o = x[off + j * inner_stride];
                }
            }
        });
}

/// Nearest resize of the last two axes: x (planes, h, w) → (planes, ho, wo), source index
/// ⌊i·h/ho⌋ (torch's `interpolate(mode="nearest")`; ×2 gives ⌊i/2⌋).
pub fn upsample_nearest(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    y: &mut [f32],
) {
    assert_eq!(x.len(), planes * h * w);
    assert_eq!(y.len(), planes * ho * wo);
    let cols: Vec<usize> = (0..wo).map(|j| (j * w / wo).min(w - 1)).collect();
    y.par_chunks_mut(ho * wo).enumerate().for_each(|(p, yp)| {
        let xp = &x[p * h * w..(p + 1) * h * w];
        for i in 0..ho {
            let si = (i * h / ho).min(h - 1);
            let src = &xp[si * w..(si + 1) * w];
            for (o, &c) in yp[i * wo..(i + 1) * wo].iter_mut().zip(&cols) {
                *o = src[c];
            }
        }
    });
}

/// diffusers' `get_timestep_embedding` (max_period 10000, scale 1), computed in f32 as torch
/// does: t (B,) → (B, dim).
pub fn timestep_embedding(t: &[f32], dim: usize, flip_sin_to_cos: bool, shift: f32, y: &mut [f32]) {
    let half = dim / 2;
    let ln = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((ln * i as f32) / (half as f32 - shift)).exp())
        .collect();
    for (b, &tv) in t.iter().enumerate() {
        let row = &mut y[b * dim..(b + 1) * dim];
        row.fill(0.0);
        for i in 0..half {
            let arg = tv * freqs[i];
            let (s, c) = ((arg as f64).sin() as f32, (arg as f64).cos() as f32);
            if flip_sin_to_cos {
                row[i] = c;
                row[half + i] = s;
            } else {
                row[i] = s;
                row[half + i] = c;
            }
        }
    }
}
