//! Skinny products: y (rows × out) [+]= x (rows × in) · Wᵀ for a few rows (at most
//! [`MAX_ROWS`]), the linear layers of a decode step. They are memory-bound: every weight is
//! read once per step and used `rows` times, so the kernel's one job is to stream W at the
//! memory's rate. The register-tile kernels built for many rows (`linear512`, `gemm`) reach
//! about half of it at one or two rows.
//!
//! - W is read where it is stored, in its dtype (f32, or bf16 / f16 / int8 widened in
//!   registers, so 16-bit weights halve the traffic and 8-bit ones quarter it; an 8-bit
//!   feature's sums are multiplied by its scale as the task finishes it), row-major (`Layout::RowMajor`) or in `linear512`'s
//!   panels of 32 output features (`Layout::Panels`).
//! - Tasks are contiguous runs of output features (groups of 4 rows of W, or whole panels),
//!   several per thread: each task streams one contiguous stretch of W.
//! - Row-major, AVX-512: 4 output features × up to 4 rows of x in 16 accumulators, one vector
//!   load of each of the 4 weight rows per 16 inputs; AVX2: the same 4 features over 8-wide
//!   vectors, x rows two at a time (16 registers). Panels, AVX-512: the 32 features of a panel
//!   as two vectors, two inputs per iteration into two accumulator sets, so FMA latency never
//!   limits the stream; AVX2: as four vectors, x rows two at a time.
//! - Bias and residual are added per task as its columns are finished.
//!
//! `reference::linear` is the plain f64 version the tests compare against.

use crate::conv::ConvWeights;
#[cfg(target_arch = "x86_64")]
use crate::linear512::{load16, load8};
use crate::linear512::{panels_len, raw, BF16, F16, F32, I8, NR};
use crate::simd::{self, Level};
use crate::SendPtr;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Most rows the skinny kernel takes; more rows go to the register-tile kernels.
pub const MAX_ROWS: usize = 4;

/// How W is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// (out × in), row-major.
    RowMajor,
    /// `linear512` panels of [`NR`] output features (see `linear512::pack_panels`).
    Panels,
}

/// Element `i` of W widened to f32 (8-bit: the integer, unscaled).
#[inline(always)]
pub(crate) unsafe fn get<const DT: u8>(w: *const u8, i: usize) -> f32 {
    match DT {
        F32 => *(w as *const f32).add(i),
        BF16 => f32::from_bits((*(w as *const u16).add(i) as u32) << 16),
        F16 => half::f16::from_bits(*(w as *const u16).add(i)).to_f32(),
        _ => *(w as *const i8).add(i) as f32,
    }
}

/// y = x · Wᵀ (+ bias) (+ residual) for `rows` ≤ [`MAX_ROWS`] rows, at this CPU's level.
#[allow(clippy::too_many_arguments)]
pub fn gemv(
    x: &[f32],
    w: &ConvWeights,
    layout: Layout,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    rows: usize,
    inf: usize,
    out: usize,
    y: &mut [f32],
) {
    gemv_at(
        simd::level(),
        x,
        w,
        layout,
        bias,
        residual,
        rows,
        inf,
        out,
        y,
    )
}

/// [`gemv`] at a given instruction-set level (lowered to what the CPU has): for tests.
#[allow(clippy::too_many_arguments)]
pub fn gemv_at(
    lvl: Level,
    x: &[f32],
    w: &ConvWeights,
    layout: Layout,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    rows: usize,
    inf: usize,
    out: usize,
    y: &mut [f32],
) {
    assert!(
        (1..=MAX_ROWS).contains(&rows),
        "gemv takes 1 to {MAX_ROWS} rows"
    );
    assert_eq!(x.len(), rows * inf, "gemv input length");
    assert_eq!(y.len(), rows * out, "gemv output length");
    let want = match layout {
        Layout::RowMajor => out * inf,
        Layout::Panels => panels_len(out, inf),
    };
    assert_eq!(w.len(), want, "gemv weight length");
    if let Some(b) = bias {
        assert_eq!(b.len(), out, "gemv bias length");
    }
    if let Some(r) = residual {
        assert_eq!(r.len(), rows * out, "gemv residual length");
    }
    if out == 0 {
        return;
    }
    let lvl = simd::supported(lvl);
    let unit = match layout {
        Layout::RowMajor => 4,
        Layout::Panels => NR,
    };
    let units = out.div_ceil(unit);
    let tasks = (rayon::current_num_threads() * 8).clamp(1, units);
    let per = units.div_ceil(tasks);
    let (wp, dt, sp) = raw(w);
    let (wp, xp, sp) = (wp as usize, x.as_ptr() as usize, sp as usize);
    let yp = SendPtr(y.as_mut_ptr());
    (0..units.div_ceil(per)).into_par_iter().for_each(|t| {
        let o0 = t * per * unit;
        let o1 = ((t + 1) * per * unit).min(out);
        // SAFETY: each task writes columns o0..o1 of every row of y, disjoint from the other
        // tasks' columns; x, W, y were checked for length above.
        unsafe {
            columns(
                lvl,
                layout,
                dt,
                xp as *const f32,
                wp as *const u8,
                rows,
                inf,
                out,
                o0,
                o1,
                yp.get(),
            );
            // 8-bit weights: each feature's sums times its scale.
            let scale = (sp != 0).then(|| std::slice::from_raw_parts(sp as *const f32, o1));
            for r in 0..rows {
                for o in o0..o1 {
                    let v = yp.get().add(r * out + o);
                    if let Some(s) = scale {
                        *v *= s[o];
                    }
                    *v += bias.map_or(0.0, |b| b[o]) + residual.map_or(0.0, |s| s[r * out + o]);
                }
            }
        }
    });
}

/// y[r, o0..o1] = x[r] · W[o0..o1]ᵀ.
#[allow(clippy::too_many_arguments)]
unsafe fn columns(
    lvl: Level,
    layout: Layout,
    dt: u8,
    x: *const f32,
    w: *const u8,
    rows: usize,
    inf: usize,
    out: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    macro_rules! by_dt {
        ($f:ident, $($a:expr),*) => {
            match dt {
                F32 => $f::<F32>($($a),*),
                BF16 => $f::<BF16>($($a),*),
                F16 => $f::<F16>($($a),*),
                _ => $f::<I8>($($a),*),
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    match (lvl, layout) {
        (Level::Avx512, Layout::RowMajor) => {
            return by_dt!(rm512, x, w, rows, inf, out, o0, o1, y);
        }
        (Level::Avx512, Layout::Panels) => {
            return by_dt!(panels512, x, w, rows, inf, out, o0, o1, y);
        }
        (Level::Avx2, _) => {
            let mut r = 0;
            while r < rows {
                let n = (rows - r).min(2);
                let (xr, yr) = (x.add(r * inf), y.add(r * out));
                if layout == Layout::RowMajor {
                    by_dt!(rm256, xr, w, n, inf, out, o0, o1, yr);
                } else {
                    by_dt!(panels256, xr, w, n, inf, out, o0, o1, yr);
                }
                r += n;
            }
            return;
        }
        _ => {}
    }
    let _ = lvl;
    by_dt!(portable, x, w, layout, rows, inf, out, o0, o1, y)
}

#[allow(clippy::too_many_arguments)]
unsafe fn portable<const DT: u8>(
    x: *const f32,
    w: *const u8,
    layout: Layout,
    rows: usize,
    inf: usize,
    out: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    for o in o0..o1 {
        for r in 0..rows {
            let mut s = 0.0f32;
            for k in 0..inf {
                let i = match layout {
                    Layout::RowMajor => o * inf + k,
                    Layout::Panels => (o / NR) * inf * NR + k * NR + o % NR,
                };
                s += get::<DT>(w, i) * *x.add(r * inf + k);
            }
            *y.add(r * out + o) = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

/// Row-major W, AVX-512: 4 output features × `rows` (≤ 4) accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn rm512<const DT: u8>(
    x: *const f32,
    w: *const u8,
    rows: usize,
    inf: usize,
    out: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    match rows {
        1 => rm512_r::<DT, 1>(x, w, inf, out, o0, o1, y),
        2 => rm512_r::<DT, 2>(x, w, inf, out, o0, o1, y),
        3 => rm512_r::<DT, 3>(x, w, inf, out, o0, o1, y),
        _ => rm512_r::<DT, 4>(x, w, inf, out, o0, o1, y),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn rm512_r<const DT: u8, const R: usize>(
    x: *const f32,
    w: *const u8,
    inf: usize,
    out: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    let k16 = inf / 16 * 16;
    let mut o = o0;
    while o < o1 {
        let g = (o1 - o).min(4);
        // Rows of W past the group repeat its last row (their sums are not stored).
        let row = |j: usize| (o + j.min(g - 1)) * inf;
        let rw = [row(0), row(1), row(2), row(3)];
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        let mut k = 0;
        while k < k16 {
            let wv = [
                load16::<DT>(w, rw[0] + k),
                load16::<DT>(w, rw[1] + k),
                load16::<DT>(w, rw[2] + k),
                load16::<DT>(w, rw[3] + k),
            ];
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(x.add(r * inf + k));
                for j in 0..4 {
                    a[j] = _mm512_fmadd_ps(wv[j], xv, a[j]);
                }
            }
            k += 16;
        }
        for (r, a) in acc.iter().enumerate() {
            for (j, aj) in a.iter().enumerate().take(g) {
                let mut s = _mm512_reduce_add_ps(*aj);
                for kk in k16..inf {
                    s += get::<DT>(w, rw[j] + kk) * *x.add(r * inf + kk);
                }
                *y.add(r * out + o + j) = s;
            }
        }
        o += g;
    }
}

/// Row-major W, AVX2: 4 output features × `rows` (≤ 2) accumulators of 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn rm256<const DT: u8>(
    x: *const f32,
    w: *const u8,
    rows: usize,
    inf: usize,
    out: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    if rows == 1 {
        rm256_r::<DT, 1>(x, w, inf, out, o0, o1, y)
    } else {
        rm256_r::<DT, 2>(x, w, inf, out, o0, o1, y)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn rm256_r<const DT: u8, const R: usize>(
    x: *const f32,
    w: *const u8,
    inf: usize,
    out: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    let k8 = inf / 8 * 8;
    let mut o = o0;
    while o < o1 {
        let g = (o1 - o).min(4);
        let row = |j: usize| (o + j.min(g - 1)) * inf;
        let rw = [row(0), row(1), row(2), row(3)];
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        let mut k = 0;
        while k < k8 {
            let wv = [
                load8::<DT>(w, rw[0] + k),
                load8::<DT>(w, rw[1] + k),
                load8::<DT>(w, rw[2] + k),
                load8::<DT>(w, rw[3] + k),
            ];
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(x.add(r * inf + k));
                for j in 0..4 {
                    a[j] = _mm256_fmadd_ps(wv[j], xv, a[j]);
                }
            }
            k += 8;
        }
        for (r, a) in acc.iter().enumerate() {
            for (j, aj) in a.iter().enumerate().take(g) {
                let mut s = hsum256(*aj);
                for kk in k8..inf {
                    s += get::<DT>(w, rw[j] + kk) * *x.add(r * inf + kk);
                }
                *y.add(r * out + o + j) = s;
            }
        }
        o += g;
    }
}

/// Panels, AVX-512: a panel's 32 features as two vectors per row, two inputs per iteration.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn panels512<const DT: u8>(
    x: *const f32,
    w: *const u8,
    rows: usize,
    inf: usize,
    out: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    match rows {
        1 => panels512_r::<DT, 1>(x, w, inf, out, o0, o1, y),
        2 => panels512_r::<DT, 2>(x, w, inf, out, o0, o1, y),
        3 => panels512_r::<DT, 3>(x, w, inf, out, o0, o1, y),
        _ => panels512_r::<DT, 4>(x, w, inf, out, o0, o1, y),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn panels512_r<const DT: u8, const R: usize>(
    x: *const f32,
    w: *const u8,
    inf: usize,
    out: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    // o0 is a panel boundary (tasks are whole panels).
    let mut p = o0 / NR;
    while p * NR < o1 {
        let base = p * inf * NR;
        let mut a = [[_mm512_setzero_ps(); 2]; R];
        let mut b = [[_mm512_setzero_ps(); 2]; R];
        let mut k = 0;
        while k + 2 <= inf {
            let i = base + k * NR;
            let (w0, w1) = (load16::<DT>(w, i), load16::<DT>(w, i + 16));
            let (w2, w3) = (load16::<DT>(w, i + NR), load16::<DT>(w, i + NR + 16));
            for r in 0..R {
                let xa = _mm512_set1_ps(*x.add(r * inf + k));
                let xb = _mm512_set1_ps(*x.add(r * inf + k + 1));
                a[r][0] = _mm512_fmadd_ps(w0, xa, a[r][0]);
                a[r][1] = _mm512_fmadd_ps(w1, xa, a[r][1]);
                b[r][0] = _mm512_fmadd_ps(w2, xb, b[r][0]);
                b[r][1] = _mm512_fmadd_ps(w3, xb, b[r][1]);
            }
            k += 2;
        }
        if k < inf {
            let i = base + k * NR;
            let (w0, w1) = (load16::<DT>(w, i), load16::<DT>(w, i + 16));
            for r in 0..R {
                let xa = _mm512_set1_ps(*x.add(r * inf + k));
                a[r][0] = _mm512_fmadd_ps(w0, xa, a[r][0]);
                a[r][1] = _mm512_fmadd_ps(w1, xa, a[r][1]);
            }
        }
        let n = (out - p * NR).min(NR);
        for r in 0..R {
            let mut tmp = [0f32; NR];
            _mm512_storeu_ps(tmp.as_mut_ptr(), _mm512_add_ps(a[r][0], b[r][0]));
            _mm512_storeu_ps(tmp.as_mut_ptr().add(16), _mm512_add_ps(a[r][1], b[r][1]));
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), y.add(r * out + p * NR), n);
        }
        p += 1;
    }
}

/// Panels, AVX2: a panel's 32 features as four 8-lane vectors per row, x rows two at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn panels256<const DT: u8>(
    x: *const f32,
    w: *const u8,
    rows: usize,
    inf: usize,
    out: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    if rows == 1 {
        panels256_r::<DT, 1>(x, w, inf, out, o0, o1, y)
    } else {
        panels256_r::<DT, 2>(x, w, inf, out, o0, o1, y)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn panels256_r<const DT: u8, const R: usize>(
    x: *const f32,
    w: *const u8,
    inf: usize,
    out: usize,
    o0: usize,
    o1: usize,
    y: *mut f32,
) {
    let mut p = o0 / NR;
    while p * NR < o1 {
        let base = p * inf * NR;
        let mut a = [[_mm256_setzero_ps(); 4]; R];
        for k in 0..inf {
            let i = base + k * NR;
            let wv = [
                load8::<DT>(w, i),
                load8::<DT>(w, i + 8),
                load8::<DT>(w, i + 16),
                load8::<DT>(w, i + 24),
            ];
            for r in 0..R {
                let xv = _mm256_broadcast_ss(&*x.add(r * inf + k));
                for j in 0..4 {
                    a[r][j] = _mm256_fmadd_ps(wv[j], xv, a[r][j]);
                }
            }
        }
        let n = (out - p * NR).min(NR);
        for r in 0..R {
            let mut tmp = [0f32; NR];
            for j in 0..4 {
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8 * j), a[r][j]);
            }
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), y.add(r * out + p * NR), n);
        }
        p += 1;
    }
}
