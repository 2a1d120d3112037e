//! Flash attention with AVX-512 micro-kernels: the `flash` variant on CPUs with AVX-512F
//! (`attention::attention_flash` falls back to GEMM-crate tiles elsewhere).
//!
//! Per (batch, head) the keys are first transposed into (D × 32) panels of 32 keys (zero past
//! Lk): O(L·D) extra memory, like the inputs themselves. Then each task takes [`BQ`] query
//! rows (scaled by the softmax scale, transposed in groups of [`R`] rows, zero-padded) and
//! walks the keys [`BK`] at a time:
//!
//! - scores S = Q · Kᵀ with an R × 32 register tile (16 zmm accumulators; per head-dim step two
//!   key loads and R query broadcasts);
//! - online softmax on each row of S in place (running max m, sum l; the output row is
//!   rescaled by exp(m_old − m_new) when the max moves);
//! - O += P · V with an R × (up to 48) register tile over the head dimension (the last vector
//!   masked), from V copied per head into rows padded to whole vectors (read in place from
//!   (B, Lk, H·D), 1280-byte strided rows kept the loads waiting on memory).
//!
//! The tile of scores (BQ × BK floats, 256 KiB) stays in L2. 256 × 256 measured fastest of
//! BQ 64–512 × BK 128–512 on `attention_b2h8_4096_d40` (0.25 s against 0.28–0.31 s at
//! BQ = 64, which streams every key and value 4× as often per FLOP).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::attention::AttnGeom;
use crate::scratch::Scratch;
use crate::{simd, SendPtr};
use rayon::prelude::*;

/// Query rows per task.
pub const BQ: usize = 256;
/// Keys per step of the P · V product (32 rows of V stay in L1 across the row groups).
const KCH: usize = 32;
/// Keys per step.
pub const BK: usize = 256;
/// Rows of the register tiles.
const R: usize = 8;
/// Keys per score register tile.
const NK: usize = 32;

/// Whether this CPU runs the AVX-512 kernel.
pub fn available() -> bool {
    simd::level() == simd::Level::Avx512
}

fn lk_pad(g: &AttnGeom) -> usize {
    g.lk.div_ceil(NK) * NK
}

fn d_pad(g: &AttnGeom) -> usize {
    g.head_dim.div_ceil(16) * 16
}

/// The pooled scratch buffers (floats): the transposed keys and the padded values.
pub fn pooled_floats(g: &AttnGeom) -> [usize; 2] {
    [
        g.batch * g.heads * g.head_dim * lk_pad(g),
        g.batch * g.heads * g.lk * d_pad(g),
    ]
}

/// Each thread's tiles (floats): scaled queries, scores, output, row statistics.
pub fn tile_floats(g: &AttnGeom) -> usize {
    BQ * (g.head_dim + BK + d_pad(g) + 2)
}

/// Flash attention (see the module docs). The CPU must have AVX-512F ([`available`]).
pub fn attention(g: &AttnGeom, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    assert!(available(), "flash512 needs AVX-512F");
    let (d, hd, lkp) = (g.head_dim, g.heads * g.head_dim, lk_pad(g));
    let dp = d_pad(g);
    // Kᵀ per (batch, head) in panels of 32 keys: kt[bh][c / 32][j][c % 32] = k[b, c, h·D + j],
    // zero past Lk. (One (D × Lk) matrix per head would put the rows a tile reads 16 KiB
    // apart at Lk = 4096, all in one L1 set.)
    let [kt_len, vp_len] = pooled_floats(g);
    let mut kt = Scratch::take(kt_len);
    kt.par_chunks_mut(d * lkp)
        .enumerate()
        .for_each(|(bh, panels)| {
            let (b, h) = (bh / g.heads, bh % g.heads);
            panels.fill(0.0);
            for c in 0..g.lk {
                let src = &k[(b * g.lk + c) * hd + h * d..][..d];
                let panel = &mut panels[(c / NK) * d * NK..];
                for (j, &x) in src.iter().enumerate() {
                    panel[j * NK + c % NK] = x;
                }
            }
        });
    let kt = &kt[..];
    // V per (batch, head), rows padded to whole vectors: vp[bh][c][j], zero for j ≥ D.
    let mut vp = Scratch::take(vp_len);
    vp.par_chunks_mut(g.lk * dp)
        .enumerate()
        .for_each(|(bh, panel)| {
            let (b, h) = (bh / g.heads, bh % g.heads);
            for (c, row) in panel.chunks_exact_mut(dp).enumerate() {
                row[..d].copy_from_slice(&v[(b * g.lk + c) * hd + h * d..][..d]);
                row[d..].fill(0.0);
            }
        });
    let vp = &vp[..];
    let blocks = g.lq.div_ceil(BQ);
    let outp = SendPtr(out.as_mut_ptr());
    (0..g.batch * g.heads * blocks)
        .into_par_iter()
        .for_each_init(
            || {
                (
                    vec![0f32; BQ * d],
                    vec![0f32; BQ * BK],
                    vec![0f32; BQ * dp],
                    vec![0f32; 2 * BQ],
                )
            },
            |(qs, s, o, ml), t| {
                let (bh, blk) = (t / blocks, t % blocks);
                let (b, h) = (bh / g.heads, bh % g.heads);
                let r0 = blk * BQ;
                let rows = BQ.min(g.lq - r0);
                let rows_p = rows.div_ceil(R) * R;
                // Scaled queries in groups of R rows, each group (D × R): qs[i / R][j][i % R];
                // zero rows past `rows`.
                for i in 0..rows_p {
                    let grp = &mut qs[(i / R) * d * R..];
                    if i < rows {
                        let src = &q[(b * g.lq + r0 + i) * hd + h * d..][..d];
                        for (j, &y) in src.iter().enumerate() {
                            grp[j * R + i % R] = y * g.scale;
                        }
                    } else {
                        for j in 0..d {
                            grp[j * R + i % R] = 0.0;
                        }
                    }
                }
                o[..rows_p * dp].fill(0.0);
                let (m, l) = ml.split_at_mut(BQ);
                m.fill(f32::NEG_INFINITY);
                l.fill(0.0);
                let kmax = if g.causal {
                    (r0 + rows).min(g.lk)
                } else {
                    g.lk
                };
                let panel = &kt[bh * d * lkp..(bh + 1) * d * lkp];
                let vbase = &vp[bh * g.lk * dp..(bh + 1) * g.lk * dp];
                let mut c0 = 0;
                while c0 < kmax {
                    let cols = BK.min(kmax - c0);
                    let cols_p = cols.div_ceil(NK) * NK;
                    // S = Qs · Kᵀ over the padded key range, a key panel (in L1) at a time.
                    for j0 in (0..cols_p).step_by(NK) {
                        for i0 in (0..rows_p).step_by(R) {
                            // SAFETY: query group i0 / R (d × R floats) and key panel
                            // (c0 + j0) / 32 (d × 32 floats) exist (rows_p ≤ BQ, c0 + cols_p ≤
                            // lkp; c0 and j0 are multiples of 32); S rows hold BK ≥ cols_p.
                            unsafe {
                                scores_tile(
                                    d,
                                    qs.as_ptr().add(i0 * d),
                                    panel.as_ptr().add((c0 + j0) * d),
                                    s.as_mut_ptr().add(i0 * BK + j0),
                                    BK,
                                )
                            };
                        }
                    }
                    // Online softmax, row by row.
                    for i in 0..rows_p {
                        let row = &mut s[i * BK..i * BK + cols];
                        let valid = if i < rows {
                            g.valid(r0 + i).saturating_sub(c0).min(cols)
                        } else {
                            cols
                        };
                        let (live, dead) = row.split_at_mut(valid);
                        dead.fill(0.0);
                        if valid == 0 {
                            continue;
                        }
                        let m_new = m[i].max(simd::max(live));
                        let alpha = (m[i] - m_new).exp(); // 0 on the first tile (m = −∞)
                        let sum = simd::exp_sum(live, 1.0, m_new);
                        l[i] = l[i] * alpha + sum;
                        m[i] = m_new;
                        if alpha != 1.0 {
                            simd::scale(&mut o[i * dp..(i + 1) * dp], alpha);
                        }
                    }
                    // O += P · V, [`KCH`] keys (their V rows in L1) at a time.
                    for k0 in (0..cols).step_by(KCH) {
                        let kn = KCH.min(cols - k0);
                        for i0 in (0..rows_p).step_by(R) {
                            let mut j0 = 0;
                            while j0 < d {
                                let w = (d - j0).min(48);
                                // SAFETY: P rows i0..i0+R hold columns k0..k0+kn (< cols),
                                // padded V rows c0+k0..+kn hold dp ≥ j0 + w floats, as do O
                                // rows.
                                unsafe {
                                    pv_tile(
                                        kn,
                                        s.as_ptr().add(i0 * BK + k0),
                                        BK,
                                        vbase.as_ptr().add((c0 + k0) * dp + j0),
                                        dp,
                                        o.as_mut_ptr().add(i0 * dp + j0),
                                        dp,
                                        w,
                                    )
                                };
                                j0 += w;
                            }
                        }
                    }
                    c0 += cols;
                }
                for i in 0..rows {
                    let inv = 1.0 / l[i];
                    // SAFETY: this task alone writes row r0+i, head h, of batch b (in bounds).
                    unsafe {
                        let dst = outp.get().add((b * g.lq + r0 + i) * hd + h * d);
                        for j in 0..d {
                            *dst.add(j) = o[i * dp + j] * inv;
                        }
                    }
                }
            },
        );
}

/// S[R × 32] = Q · Kᵀ for a query group q (d × R) and a key panel kt (d × 32); S rows
/// `s_rs` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores_tile(d: usize, q: *const f32, kt: *const f32, s: *mut f32, s_rs: usize) {
    let mut lo = [_mm512_setzero_ps(); R];
    let mut hi = [_mm512_setzero_ps(); R];
    let (mut q, mut kt) = (q, kt);
    for _ in 0..d {
        let k0 = _mm512_loadu_ps(kt);
        let k1 = _mm512_loadu_ps(kt.add(16));
        for r in 0..R {
            let qv = _mm512_set1_ps(*q.add(r));
            lo[r] = _mm512_fmadd_ps(qv, k0, lo[r]);
            hi[r] = _mm512_fmadd_ps(qv, k1, hi[r]);
        }
        q = q.add(R);
        kt = kt.add(NK);
    }
    for r in 0..R {
        _mm512_storeu_ps(s.add(r * s_rs), lo[r]);
        _mm512_storeu_ps(s.add(r * s_rs + 16), hi[r]);
    }
}

/// O[R × w] += P[R × cols] · V[cols × w], w ≤ 48 (P rows `p_rs` apart, V rows `v_rs`, O
/// rows `o_rs`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_tile(
    cols: usize,
    p: *const f32,
    p_rs: usize,
    v: *const f32,
    v_rs: usize,
    o: *mut f32,
    o_rs: usize,
    w: usize,
) {
    let mask = |lo: usize| -> __mmask16 {
        if w >= lo + 16 {
            0xffff
        } else if w > lo {
            ((1u32 << (w - lo)) - 1) as u16
        } else {
            0
        }
    };
    let (m0, m1, m2) = (mask(0), mask(16), mask(32));
    let mut a0 = [_mm512_setzero_ps(); R];
    let mut a1 = [_mm512_setzero_ps(); R];
    let mut a2 = [_mm512_setzero_ps(); R];
    for r in 0..R {
        a0[r] = _mm512_maskz_loadu_ps(m0, o.add(r * o_rs));
        a1[r] = _mm512_maskz_loadu_ps(m1, o.add(r * o_rs + 16));
        a2[r] = _mm512_maskz_loadu_ps(m2, o.add(r * o_rs + 32));
    }
    for c in 0..cols {
        let vr = v.add(c * v_rs);
        let v0 = _mm512_maskz_loadu_ps(m0, vr);
        let v1 = _mm512_maskz_loadu_ps(m1, vr.add(16));
        let v2 = _mm512_maskz_loadu_ps(m2, vr.add(32));
        for r in 0..R {
            let pv = _mm512_set1_ps(*p.add(r * p_rs + c));
            a0[r] = _mm512_fmadd_ps(pv, v0, a0[r]);
            a1[r] = _mm512_fmadd_ps(pv, v1, a1[r]);
            a2[r] = _mm512_fmadd_ps(pv, v2, a2[r]);
        }
    }
    for r in 0..R {
        _mm512_mask_storeu_ps(o.add(r * o_rs), m0, a0[r]);
        _mm512_mask_storeu_ps(o.add(r * o_rs + 16), m1, a1[r]);
        _mm512_mask_storeu_ps(o.add(r * o_rs + 32), m2, a2[r]);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn scores_tile(_: usize, _: *const f32, _: *const f32, _: *mut f32, _: usize) {
    unreachable!("flash512 runs only where available() says AVX-512F is present")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_tile(
    _: usize,
    _: *const f32,
    _: usize,
    _: *const f32,
    _: usize,
    _: *mut f32,
    _: usize,
    _: usize,
) {
    unreachable!("flash512 runs only where available() says AVX-512F is present")
}
