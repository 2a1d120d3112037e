//! Activations, broadcasting arithmetic, layout copies, resampling and embeddings.

use crate::simd::{self, erf_approx, exp_approx, simd_fn, Level};
use crate::tuning::tuning;
use prism_core::ActKind;
use rayon::prelude::*;

// The scalar forms below are the definitions (libm/std functions); the kernels run the `*_fast`
// forms, which vectorize inside `simd_fn!` bodies and match them to about 1e−7.

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

/// silu(v) = v·σ(v), vectorizable.
#[inline(always)]
pub fn silu_fast(v: f32) -> f32 {
    v / (1.0 + exp_approx(-v))
}

/// Exact (erf) GELU, vectorizable.
#[inline(always)]
pub fn gelu_fast(v: f32) -> f32 {
    0.5 * v * (1.0 + erf_approx(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// Tanh GELU, vectorizable: ½·v·(1 + tanh z) = v·σ(2z).
#[inline(always)]
pub fn gelu_tanh_fast(v: f32) -> f32 {
    const C2: f32 = 2.0 * 0.797_884_6; // 2·sqrt(2/π)
    v / (1.0 + exp_approx(-C2 * (v + 0.044715 * v * v * v)))
}

/// Quick GELU v·σ(1.702·v), vectorizable.
#[inline(always)]
pub fn quick_gelu_fast(v: f32) -> f32 {
    v / (1.0 + exp_approx(-1.702 * v))
}

/// ELU (α = 1), vectorizable: v for v > 0, eᵛ − 1 otherwise (`exp_approx` of min(v, 0)).
#[inline(always)]
pub fn elu_fast(v: f32) -> f32 {
    let e = exp_approx(v.min(0.0)) - 1.0;
    if v > 0.0 {
        v
    } else {
        e
    }
}

simd_fn!(fn act_chunk[](kind: ActKind, x: &[f32], y: &mut [f32]) {
    let y = &mut y[..x.len()];
    match kind {
        ActKind::Silu => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = silu_fast(v);
            }
        }
        ActKind::Gelu => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = gelu_fast(v);
            }
        }
        ActKind::GeluTanh => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = gelu_tanh_fast(v);
            }
        }
        ActKind::QuickGelu => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = quick_gelu_fast(v);
            }
        }
        ActKind::Elu => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = elu_fast(v);
            }
        }
    }
});

pub fn activation(kind: ActKind, x: &[f32], y: &mut [f32]) {
    activation_at(simd::level(), kind, x, y);
}

/// [`activation`] at a given instruction-set level (lowered to what the CPU has): for tests.
pub fn activation_at(lvl: Level, kind: ActKind, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    let chunk = tuning().par_chunk;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(yc, xc)| act_chunk(lvl, kind, xc, yc));
}

simd_fn!(fn map_chunk[F: Fn(f32) -> f32](x: &[f32], y: &mut [f32], f: &F) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = f(v);
    }
});

/// y[i] = f(x[i]), in parallel chunks.
pub fn map(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    assert_eq!(x.len(), y.len());
    let lvl = simd::level();
    let chunk = tuning().par_chunk;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(yc, xc)| map_chunk(lvl, xc, yc, &f));
}

simd_fn!(fn geglu_rows[](x: &[f32], n: usize, y: &mut [f32]) {
    for (yr, xr) in y.chunks_exact_mut(n).zip(x.chunks_exact(2 * n)) {
        let (a, g) = xr.split_at(n);
        for ((o, &av), &gv) in yr.iter_mut().zip(a).zip(g) {
            *o = av * gelu_fast(gv);
        }
    }
});

simd_fn!(fn geglu_pair[](a: &[f32], g: &[f32], y: &mut [f32]) {
    for ((o, &av), &gv) in y.iter_mut().zip(a).zip(g) {
        *o = av * gelu_fast(gv);
    }
});

/// y = a · gelu(g), element-wise (one row of a fused GEGLU projection).
pub fn geglu_row(a: &[f32], g: &[f32], y: &mut [f32]) {
    geglu_pair(simd::level(), a, g, y);
}

/// GEGLU over rows of 2n: y = x[:n] · gelu(x[n:]).
pub fn geglu(x: &[f32], n: usize, y: &mut [f32]) {
    geglu_at(simd::level(), x, n, y);
}

/// [`geglu`] at a given instruction-set level (lowered to what the CPU has): for tests.
pub fn geglu_at(lvl: Level, x: &[f32], n: usize, y: &mut [f32]) {
    assert_eq!(x.len(), 2 * y.len());
    if n == 0 {
        return;
    }
    let rows_per_task = (tuning().par_chunk / n).max(1);
    y.par_chunks_mut(n * rows_per_task)
        .zip(x.par_chunks(2 * n * rows_per_task))
        .for_each(|(yc, xc)| geglu_rows(lvl, xc, n, yc));
}

simd_fn!(fn zip_chunk[F: Fn(f32, f32) -> f32](a: &[f32], b: &[f32], y: &mut [f32], f: &F) {
    for ((o, &p), &q) in y.iter_mut().zip(a).zip(b) {
        *o = f(p, q);
    }
});

simd_fn!(fn repeat_chunk[F: Fn(f32, f32) -> f32](a: &[f32], b: &[f32], y: &mut [f32], f: &F) {
    for (yr, ar) in y.chunks_mut(b.len()).zip(a.chunks(b.len())) {
        for ((o, &p), &q) in yr.iter_mut().zip(ar).zip(b) {
            *o = f(p, q);
        }
    }
});

simd_fn!(fn const_chunk[F: Fn(f32, f32) -> f32](a: &[f32], q: f32, y: &mut [f32], f: &F) {
    for (o, &p) in y.iter_mut().zip(a) {
        *o = f(p, q);
    }
});

/// y = a ∘ b with b broadcast to a's shape (trailing alignment, size-1 axes repeat).
pub fn broadcast_binary(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    y: &mut [f32],
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    broadcast_binary_at(simd::level(), a, a_shape, b, b_shape, y, f);
}

/// [`broadcast_binary`] at a given instruction-set level (lowered to what the CPU has): for
/// tests.
pub fn broadcast_binary_at(
    lvl: Level,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    y: &mut [f32],
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    assert_eq!(a.len(), y.len());
    if a.is_empty() {
        return;
    }
    let par_chunk = tuning().par_chunk;
    if b.len() == a.len() {
        // Same size: y[i] = f(a[i], b[i]).
        y.par_chunks_mut(par_chunk)
            .zip(a.par_chunks(par_chunk))
            .zip(b.par_chunks(par_chunk))
            .for_each(|((yc, ac), bc)| zip_chunk(lvl, ac, bc, yc, &f));
        return;
    }
    if b.is_empty() {
        return;
    }
    if a_shape.ends_with(b_shape) {
        // b repeats whole: y[i] = f(a[i], b[i mod |b|]).
        let bl = b.len();
        let chunk = (par_chunk / bl).max(1) * bl;
        y.par_chunks_mut(chunk)
            .zip(a.par_chunks(chunk))
            .for_each(|(yc, ac)| repeat_chunk(lvl, ac, b, yc, &f));
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
    // The longest run of trailing axes over which b is either constant (all strides 0) or
    // laid out like a (contiguous): rows of `run` elements then need one b offset each.
    let mut run = 1;
    let mut k = nd;
    let mut konst = None;
    while k > 0 {
        let ax = k - 1;
        if a_shape[ax] != 1 {
            let c = *konst.get_or_insert(bs[ax] == 0);
            if (c && bs[ax] != 0) || (!c && bs[ax] != run) {
                break;
            }
            run *= a_shape[ax];
        }
        k -= 1;
    }
    let konst = konst.unwrap_or(true);
    let rows_per_task = (par_chunk / run).max(1);
    let outer = &a_shape[..k];
    y.par_chunks_mut(run * rows_per_task)
        .zip(a.par_chunks(run * rows_per_task))
        .enumerate()
        .for_each(|(t, (yc, ac))| {
            for (i, (yr, ar)) in yc.chunks_mut(run).zip(ac.chunks(run)).enumerate() {
                // Decompose the row index over the outer axes.
                let mut rem = t * rows_per_task + i;
                let mut bo = 0;
                for ax in (0..outer.len()).rev() {
                    let j = rem % outer[ax];
                    rem /= outer[ax];
                    bo += j * bs[ax];
                }
                if konst {
                    const_chunk(lvl, ar, b[bo], yr, &f);
                } else {
                    zip_chunk(lvl, ar, &b[bo..bo + run], yr, &f);
                }
            }
        });
}

/// Concatenate along `axis`: every input has shape `shapes[i]`, equal except on `axis`. The
/// copies are cut into pieces of at most [`par_chunk`](crate::tuning::Tuning::par_chunk)
/// floats that every thread shares (the UNet's skip concatenations are a few runs of
/// megabytes each).
pub fn concat(xs: &[&[f32]], shapes: &[&[usize]], axis: usize, y: &mut [f32]) {
    let par_chunk = tuning().par_chunk;
    let outer: usize = shapes[0][..axis].iter().product();
    let inner: usize = shapes[0][axis + 1..].iter().product();
    let total: usize = shapes.iter().map(|s| s[axis]).sum::<usize>() * inner;
    assert!(y.len() >= outer * total, "concat output length");
    // (source piece, offset in y): disjoint ranges of y.
    let mut pieces: Vec<(&[f32], usize)> = Vec::new();
    let mut col = 0;
    for (x, s) in xs.iter().zip(shapes) {
        let run = s[axis] * inner;
        assert!(x.len() >= outer * run, "concat input length");
        for o in 0..outer {
            for start in (0..run).step_by(par_chunk) {
                let len = par_chunk.min(run - start);
                pieces.push((&x[o * run + start..][..len], o * total + col + start));
            }
        }
        col += run;
    }
    let yp = crate::SendPtr(y.as_mut_ptr());
    pieces.par_iter().for_each(|&(src, off)| {
        // SAFETY: off + src.len() ≤ outer·total ≤ y.len() (asserted above), and the pieces'
        // ranges of y are disjoint, so no two tasks write the same floats.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), yp.get().add(off), src.len()) };
    });
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
    if ho == 0 || wo == 0 {
        return;
    }
    let cols: Vec<usize> = (0..wo).map(|j| (j * w / wo).min(w - 1)).collect();
    y.par_chunks_mut(ho * wo).enumerate().for_each(|(p, yp)| {
        let xp = &x[p * h * w..(p + 1) * h * w];
        let mut prev = usize::MAX;
        for i in 0..ho {
            let si = (i * h / ho).min(h - 1);
            let (done, rest) = yp.split_at_mut(i * wo);
            let row = &mut rest[..wo];
            if si == prev {
                // The same source row as the row above (every other row at ×2): a copy.
                row.copy_from_slice(&done[(i - 1) * wo..]);
                continue;
            }
            prev = si;
            let src = &xp[si * w..(si + 1) * w];
            if wo == 2 * w {
                for (pair, &v) in row.chunks_exact_mut(2).zip(src) {
                    pair[0] = v;
                    pair[1] = v;
                }
            } else {
                for (o, &c) in row.iter_mut().zip(&cols) {
                    *o = src[c];
                }
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

/// Rotary position embedding (transformers' `rotate_half` form): x (B, L, H·D) at positions
/// `offset..offset + L` → y. Per head, the pair (x[i], x[i + D/2]) is rotated by the angle
/// p·θ^(−2i/D), computed in f32 as transformers' `LlamaRotaryEmbedding` does (f32 inverse
/// frequencies times the f32 position), its cosine and sine rounded to f32.
pub fn rope(
    x: &[f32],
    (batch, len, heads, head_dim): (usize, usize, usize, usize),
    theta: f32,
    offset: usize,
    y: &mut [f32],
) {
    let half = head_dim / 2;
    assert_eq!(x.len(), batch * len * heads * head_dim);
    assert_eq!(y.len(), x.len());
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    // cos and sin per (position, i): (L, D/2) each.
    let mut cs = vec![(0f32, 0f32); len * half];
    for (l, row) in cs.chunks_mut(half.max(1)).enumerate().take(len) {
        let p = (offset + l) as f32;
        for (c, &f) in row.iter_mut().zip(&inv_freq) {
            let a = f64::from(p * f);
            *c = (a.cos() as f32, a.sin() as f32);
        }
    }
    let row_len = heads * head_dim;
    y.par_chunks_mut(row_len)
        .zip(x.par_chunks(row_len))
        .enumerate()
        .for_each(|(r, (yr, xr))| {
            let l = r % len;
            let cs = &cs[l * half..(l + 1) * half];
            for (yh, xh) in yr.chunks_exact_mut(head_dim).zip(xr.chunks_exact(head_dim)) {
                let (x1, x2) = xh.split_at(half);
                let (y1, y2) = yh.split_at_mut(half);
                for i in 0..half {
                    let (c, s) = cs[i];
                    y1[i] = x1[i] * c - x2[i] * s;
                    y2[i] = x2[i] * c + x1[i] * s;
                }
            }
        });
}
