//! Flash attention with AVX-512 micro-kernels, and their AVX2 + FMA twins: the `flash`
//! variant on CPUs with either (`attention::attention_flash` falls back to GEMM-crate tiles
//! elsewhere).
//!
//! Everything is vectorized over **query rows**, 32 at a time (two zmm registers), so the head
//! dimension is only ever a broadcast: no lanes are wasted on D = 40, 80 or 160, and the
//! softmax needs no horizontal reductions.
//!
//! - Per (batch, head) K and V are first copied into contiguous panels (Lk' = Lk rounded up
//!   to [`KB`], zero keys past Lk): V as (Lk' × D), K as blocks of [`KB`] keys stored (D ×
//!   KB), so a score tile's key broadcasts come from consecutive addresses. O(L·D) extra
//!   memory, like the inputs.
//! - Each task takes [`BQ`] query rows, scaled by the softmax scale and transposed into groups
//!   of 32 rows, (D × 32) each. For every tile of [`BK`] keys and every group:
//!   - scores Sᵀ (keys × 32 rows) with a 12-key × 32-row register tile (24 accumulators; per
//!     head-dim step two query loads and twelve key broadcasts);
//!   - online softmax down the key axis, one vector op per 16 rows: running max m and sum l,
//!     the output rescaled by 2^(m_old − m_new) (the queries carry log2 e, so scores are in
//!     base-2 units and every exponential is an exp2 of a number ≤ 0, 11 vector ops instead
//!     of 15); the tile's row maxima come out of the score tiles' registers, so the softmax
//!     reads the scores once (unless masking changed them);
//!   - Oᵀ (D × 32 rows) += Vᵀ · P with a (≤ 12)-dim × 32-row register tile, the head dimension
//!     split into near-equal blocks (40 = 4 × 10).
//! - The group's scores (BK × 32 floats, 15 KiB) stay in L1 beside the keys they are made
//!   from (19 KiB at D = 40); the tile's values come from L2. Larger key tiles leave too
//!   little of a 48 KiB L1 for the keys.
//! - AVX2 (8 lanes, 16 registers): the same groups, layouts and tiles, each micro-kernel run
//!   as sub-tiles over 16 of the group's 32 rows (two ymm registers): scores 6 keys × 16 rows
//!   (12 accumulators), P · V (≤ 6)-dim × 16 rows, the softmax 8 rows per vector op, with
//!   the exponential's 2^n made from exponent bits.
//!
//! [`BQ`]: crate::tuning::Tuning::flash512_bq
//! [`BK`]: crate::tuning::Tuning::flash512_bk

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::attention::AttnGeom;
use crate::scratch::Scratch;
use crate::tuning::tuning;
use crate::{simd, SendPtr};
use rayon::prelude::*;

// Query rows per task and keys per tile (a multiple of [`KB`]) are tunables:
// `Tuning::flash512_bq` and `Tuning::flash512_bk` (crate::tuning).

/// Query rows per group (two 16-lane vectors).
pub(crate) const G: usize = 32;
/// Keys per score register tile.
pub(crate) const KB: usize = 12;
/// Largest head-dimension block of the P · V register tile (AVX-512; AVX2 takes [`JB2`]).
const JB: usize = 12;
/// Largest head-dimension block of the AVX2 P · V sub-tile.
const JB2: usize = 6;
/// Keys per AVX2 score sub-tile (half of [`KB`]).
const KB2: usize = KB / 2;

/// Whether this CPU runs these kernels (AVX-512F, or AVX2 + FMA).
pub fn available() -> bool {
    matches!(simd::level(), simd::Level::Avx512 | simd::Level::Avx2)
}

fn lk_pad(g: &AttnGeom) -> usize {
    g.lk.div_ceil(KB) * KB
}

/// The pooled scratch buffers (floats): the packed keys and values.
pub fn pooled_floats(g: &AttnGeom) -> [usize; 2] {
    let n = g.batch * g.heads * lk_pad(g) * g.head_dim;
    [n, n]
}

/// Each thread's tiles (floats): transposed queries, scores, output, row statistics, the
/// score tile's row maxima.
pub fn tile_floats(g: &AttnGeom) -> usize {
    let (bq, bk) = (tuning().flash512_bq, tuning().flash512_bk);
    2 * bq * g.head_dim + bk * G + 2 * bq + G
}

/// Copy the key/value head query head h of batch b reads, of x (B, kv_rows, Hkv·D), into
/// (Lk' × D) panels, zero rows past Lk.
fn pack_heads(g: &AttnGeom, x: &[f32], dst: &mut [f32]) {
    let (d, lkp) = (g.head_dim, lk_pad(g));
    dst.par_chunks_mut(lkp * d)
        .enumerate()
        .for_each(|(bh, panel)| {
            let (b, h) = (bh / g.heads, bh % g.heads);
            let (base, stride) = (g.kv_off(b, h, 0), g.kvd());
            for (c, row) in panel.chunks_exact_mut(d).enumerate() {
                if c < g.lk {
                    row.copy_from_slice(&x[base + c * stride..][..d]);
                } else {
                    row.fill(0.0);
                }
            }
        });
}

/// Copy the key head query head h of batch b reads into panels of [`KB`]-key blocks, each (D × KB):
/// element j of key c0 + c at block offset j·KB + c, zero keys past Lk. The score tile then
/// broadcasts its twelve keys from consecutive addresses.
fn pack_keys(g: &AttnGeom, x: &[f32], dst: &mut [f32]) {
    let (d, lkp) = (g.head_dim, lk_pad(g));
    dst.par_chunks_mut(lkp * d)
        .enumerate()
        .for_each(|(bh, panel)| {
            let (b, h) = (bh / g.heads, bh % g.heads);
            let (base, stride) = (g.kv_off(b, h, 0), g.kvd());
            for (blk, block) in panel.chunks_exact_mut(KB * d).enumerate() {
                for c in 0..KB {
                    let key = blk * KB + c;
                    if key < g.lk {
                        let src = &x[base + key * stride..][..d];
                        for (j, &v) in src.iter().enumerate() {
                            block[j * KB + c] = v;
                        }
                    } else {
                        for j in 0..d {
                            block[j * KB + c] = 0.0;
                        }
                    }
                }
            }
        });
}

/// Flash attention (see the module docs) at this CPU's level ([`available`]).
pub fn attention(g: &AttnGeom, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    attention_at(simd::level(), g, q, k, v, out)
}

/// [`attention`] with the micro-kernels of a given level (Avx512 or Avx2, lowered to what
/// this CPU has): for tests.
pub fn attention_at(
    lvl: simd::Level,
    g: &AttnGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    let lvl = simd::supported(lvl);
    assert!(
        matches!(lvl, simd::Level::Avx512 | simd::Level::Avx2),
        "flash512 runs the AVX-512 or AVX2 micro-kernels, not {lvl:?}"
    );
    let wide = lvl == simd::Level::Avx512;
    let (d, hd, lkp) = (g.head_dim, g.heads * g.head_dim, lk_pad(g));
    let [kn, vn] = pooled_floats(g);
    let mut kp = Scratch::take(kn);
    pack_keys(g, k, &mut kp);
    let mut vp = Scratch::take(vn);
    pack_heads(g, v, &mut vp);
    let (kp, vp) = (&kp[..], &vp[..]);
    // Head-dimension blocks of the P · V tile: near-equal, at most JB (JB2 on AVX2).
    let nblk = d.div_ceil(if wide { JB } else { JB2 });
    let jblocks: Vec<(usize, usize)> = (0..nblk)
        .map(|i| {
            let (base, extra) = (d / nblk, d % nblk);
            let start = i * base + i.min(extra);
            (start, base + usize::from(i < extra))
        })
        .collect();
    let jblocks = &jblocks;
    let (bq, bk) = (tuning().flash512_bq, tuning().flash512_bk);
    let blocks = g.lq.div_ceil(bq);
    let outp = SendPtr(out.as_mut_ptr());
    (0..g.batch * g.heads * blocks)
        .into_par_iter()
        .for_each_init(
            || {
                // Cache-line aligned (Scratch), so no vector load or store of the tiles
                // splits across two lines.
                (
                    Scratch::take(bq * d),
                    Scratch::take(bk * G),
                    Scratch::take(bq * d),
                    Scratch::take(2 * bq),
                    [0f32; G],
                )
            },
            |(qt, st, ot, ml, tmax), t| {
                let (bh, blk) = (t / blocks, t % blocks);
                let (b, h) = (bh / g.heads, bh % g.heads);
                let r0 = blk * bq;
                let rows = bq.min(g.lq - r0);
                let groups = rows.div_ceil(G);
                let qscale = g.scale * std::f32::consts::LOG2_E;
                // qt[grp][j][r] = scale · log2 e · q[b, r0 + grp·G + r, h·D + j], zero past
                // `rows`: scores in base-2 units, so the softmax exponentiates with exp2.
                for grp in 0..groups {
                    let dst = &mut qt[grp * d * G..(grp + 1) * d * G];
                    for r in 0..G {
                        let i = grp * G + r;
                        if i < rows {
                            let src = &q[(b * g.lq + r0 + i) * hd + h * d..][..d];
                            for (j, &y) in src.iter().enumerate() {
                                dst[j * G + r] = y * qscale;
                            }
                        } else {
                            for j in 0..d {
                                dst[j * G + r] = 0.0;
                            }
                        }
                    }
                }
                ot[..groups * d * G].fill(0.0);
                let (m, l) = ml.split_at_mut(bq);
                m.fill(f32::NEG_INFINITY);
                l.fill(0.0);
                let off = g.causal_offset();
                let kmax = g.valid(r0 + rows - 1);
                let kpanel = &kp[bh * lkp * d..(bh + 1) * lkp * d];
                let vpanel = &vp[bh * lkp * d..(bh + 1) * lkp * d];
                let mut c0 = 0;
                while c0 < kmax {
                    let cols = bk.min(kmax - c0);
                    let cols_p = cols.div_ceil(KB) * KB;
                    for grp in 0..groups {
                        let row0 = r0 + grp * G;
                        if g.causal && c0 > row0 + G - 1 + off {
                            continue; // no row of the group sees these keys
                        }
                        let qg = &qt[grp * d * G..(grp + 1) * d * G];
                        let og = &mut ot[grp * d * G..(grp + 1) * d * G];
                        tmax.fill(f32::NEG_INFINITY);
                        for kb in (0..cols_p).step_by(KB) {
                            // SAFETY: qg is (d × G); key rows c0+kb..+KB exist in the panel
                            // (c0 + cols_p ≤ lkp); st holds bk ≥ cols_p rows of G; tmax G.
                            unsafe {
                                let args = (
                                    d,
                                    qg.as_ptr(),
                                    kpanel.as_ptr().add((c0 + kb) * d),
                                    st.as_mut_ptr().add(kb * G),
                                    tmax.as_mut_ptr(),
                                );
                                if wide {
                                    scores_tile(args)
                                } else {
                                    scores_tile256(args)
                                }
                            };
                        }
                        // Keys a row may not see (past Lk, or causal) get −∞. Rows past
                        // `rows` (padding) see every key, so no row is wholly masked on its
                        // first tile.
                        let min_valid = g.valid(row0);
                        let masked = c0 + cols_p > min_valid;
                        if masked {
                            // Per row, only the keys it may not see: the padding keys past Lk
                            // (every row) and, causal, those past the row; no test of every
                            // (key, row) pair of the tile.
                            for r in 0..G {
                                let i = grp * G + r;
                                let valid = if i < rows { g.valid(r0 + i) } else { g.lk };
                                for c in valid.saturating_sub(c0).min(cols_p)..cols_p {
                                    st[c * G + r] = f32::NEG_INFINITY;
                                }
                            }
                        }
                        // SAFETY: st holds cols_p rows of G; m, l have G entries from
                        // grp·G; og is (d × G).
                        unsafe {
                            let args = (
                                cols_p,
                                st.as_mut_ptr(),
                                (!masked).then_some(tmax.as_ptr()),
                                m.as_mut_ptr().add(grp * G),
                                l.as_mut_ptr().add(grp * G),
                                og.as_mut_ptr(),
                                d,
                            );
                            if wide {
                                softmax_tile(args)
                            } else {
                                softmax_tile256(args)
                            }
                        };
                        for &(j0, w) in jblocks {
                            // SAFETY: st holds cols_p rows of G; value rows c0..c0+cols_p
                            // exist in the panel; og rows j0..j0+w exist (j0 + w ≤ d).
                            unsafe {
                                let args = (
                                    w,
                                    cols_p,
                                    st.as_ptr(),
                                    vpanel.as_ptr().add(c0 * d + j0),
                                    d,
                                    og.as_mut_ptr().add(j0 * G),
                                );
                                if wide {
                                    pv_tile(args)
                                } else {
                                    pv_tile256(args)
                                }
                            };
                        }
                    }
                    c0 += cols;
                }
                for (i, &li) in l[..rows].iter().enumerate() {
                    let (grp, r) = (i / G, i % G);
                    let inv = 1.0 / li;
                    let og = &ot[grp * d * G..];
                    // SAFETY: this task alone writes row r0+i, head h, of batch b (in bounds).
                    unsafe {
                        let dst = outp.get().add((b * g.lq + r0 + i) * hd + h * d);
                        for j in 0..d {
                            *dst.add(j) = og[j * G + r] * inv;
                        }
                    }
                }
            },
        );
}

/// A score tile's arguments: head dimension d, the group's queries q (d × G), a packed key
/// block k (d × KB), the scores s (KB × G) and the row maxima mx (G).
type ScoreArgs = (usize, *const f32, *const f32, *mut f32, *mut f32);
/// A softmax tile's arguments: keys, scores s (keys × G), the tile's row maxima (None: read
/// them from s), running max m and sum l (G each), output o (d × G), d.
type SoftmaxArgs = (
    usize,
    *mut f32,
    Option<*const f32>,
    *mut f32,
    *mut f32,
    *mut f32,
    usize,
);
/// A P · V tile's arguments: w head dimensions, keys, p (keys × G), v (w columns of value
/// rows `v_rs` apart), v_rs, o (w × G).
type PvArgs = (usize, usize, *const f32, *const f32, usize, *mut f32);

/// Sᵀ[KB × G] = K[KB × d] · Qᵀ[d × G]: k a packed key block (d × KB), q (d × G), s (KB × G);
/// the row maxima of the tile are folded into mx (G).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores_tile((d, q, k, s, mx): ScoreArgs) {
    let mut lo = [_mm512_setzero_ps(); KB];
    let mut hi = [_mm512_setzero_ps(); KB];
    let mut q = q;
    for j in 0..d {
        let q0 = _mm512_loadu_ps(q);
        let q1 = _mm512_loadu_ps(q.add(16));
        for c in 0..KB {
            let kv = _mm512_set1_ps(*k.add(j * KB + c));
            lo[c] = _mm512_fmadd_ps(kv, q0, lo[c]);
            hi[c] = _mm512_fmadd_ps(kv, q1, hi[c]);
        }
        q = q.add(G);
    }
    for c in 0..KB {
        _mm512_storeu_ps(s.add(c * G), lo[c]);
        _mm512_storeu_ps(s.add(c * G + 16), hi[c]);
    }
    // The tile's maximum per row, folded into mx (a balanced tree, no serial chain).
    let mut w = KB;
    while w > 1 {
        let half = w / 2;
        for c in 0..half {
            lo[c] = _mm512_max_ps(lo[c], lo[w - 1 - c]);
            hi[c] = _mm512_max_ps(hi[c], hi[w - 1 - c]);
        }
        w -= half;
    }
    _mm512_storeu_ps(mx, _mm512_max_ps(_mm512_loadu_ps(mx), lo[0]));
    _mm512_storeu_ps(
        mx.add(16),
        _mm512_max_ps(_mm512_loadu_ps(mx.add(16)), hi[0]),
    );
}

/// Online softmax of a tile of scores (keys × G rows) in place: per row, the running max m
/// and sum l are updated, the probabilities written over the scores, and the output rows
/// (o: d × G) rescaled by 2^(m_old − m_new) (scores in base-2 units). `tile_max` (G entries)
/// holds the tile's row maxima from [`scores_tile`], or None where masking changed the scores
/// since.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_tile((keys, s, tile_max, m, l, o, d): SoftmaxArgs) {
    for half in 0..2 {
        let off = half * 16;
        let mx = match tile_max {
            Some(t) => _mm512_loadu_ps(t.add(off)),
            None => {
                // Four chains, so the loop is not bound by the latency of one.
                let mut acc = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
                for c in 0..keys {
                    acc[c % 4] = _mm512_max_ps(acc[c % 4], _mm512_loadu_ps(s.add(c * G + off)));
                }
                _mm512_max_ps(_mm512_max_ps(acc[0], acc[1]), _mm512_max_ps(acc[2], acc[3]))
            }
        };
        let m_old = _mm512_loadu_ps(m.add(off));
        let m_new = _mm512_max_ps(m_old, mx);
        // 2^(−∞ − m) is 0 on the first tile, where l and O are 0.
        let alpha = simd::x86::exp2_nonpos512(_mm512_sub_ps(m_old, m_new));
        let mut sum = _mm512_setzero_ps();
        for c in 0..keys {
            let p = s.add(c * G + off);
            let e = simd::x86::exp2_nonpos512(_mm512_sub_ps(_mm512_loadu_ps(p), m_new));
            _mm512_storeu_ps(p, e);
            sum = _mm512_add_ps(sum, e);
        }
        _mm512_storeu_ps(m.add(off), m_new);
        _mm512_storeu_ps(
            l.add(off),
            _mm512_fmadd_ps(_mm512_loadu_ps(l.add(off)), alpha, sum),
        );
        for j in 0..d {
            let p = o.add(j * G + off);
            _mm512_storeu_ps(p, _mm512_mul_ps(_mm512_loadu_ps(p), alpha));
        }
    }
}

/// Oᵀ[w × G] += Vᵀ[w × keys] · P[keys × G], w ≤ JB: value rows `v_rs` apart (w columns
/// from v), p (keys × G), o (w × G).
#[cfg(target_arch = "x86_64")]
unsafe fn pv_tile((w, keys, p, v, v_rs, o): PvArgs) {
    macro_rules! dispatch {
        ($($n:literal)*) => {
            match w {
                $($n => pv_tile_n::<$n>(keys, p, v, v_rs, o),)*
                _ => unreachable!("head-dimension blocks are 1..=JB wide"),
            }
        };
    }
    dispatch!(1 2 3 4 5 6 7 8 9 10 11 12)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pv_tile_n<const W: usize>(
    keys: usize,
    p: *const f32,
    v: *const f32,
    v_rs: usize,
    o: *mut f32,
) {
    let mut lo = [_mm512_setzero_ps(); W];
    let mut hi = [_mm512_setzero_ps(); W];
    for j in 0..W {
        lo[j] = _mm512_loadu_ps(o.add(j * G));
        hi[j] = _mm512_loadu_ps(o.add(j * G + 16));
    }
    let (mut p, mut v) = (p, v);
    for _ in 0..keys {
        let p0 = _mm512_loadu_ps(p);
        let p1 = _mm512_loadu_ps(p.add(16));
        for j in 0..W {
            let vv = _mm512_set1_ps(*v.add(j));
            lo[j] = _mm512_fmadd_ps(vv, p0, lo[j]);
            hi[j] = _mm512_fmadd_ps(vv, p1, hi[j]);
        }
        p = p.add(G);
        v = v.add(v_rs);
    }
    for j in 0..W {
        _mm512_storeu_ps(o.add(j * G), lo[j]);
        _mm512_storeu_ps(o.add(j * G + 16), hi[j]);
    }
}

/// The AVX2 twin of [`scores_tile`]: four sub-tiles of [`KB2`] keys × 16 rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_tile256((d, q, k, s, mx): ScoreArgs) {
    for half in 0..2 {
        let r0 = half * 16;
        let mut rmax = [_mm256_set1_ps(f32::NEG_INFINITY); 2];
        for c0 in [0, KB2] {
            let mut acc = [[_mm256_setzero_ps(); 2]; KB2];
            let mut qp = q.add(r0);
            for j in 0..d {
                let q0 = _mm256_loadu_ps(qp);
                let q1 = _mm256_loadu_ps(qp.add(8));
                let kj = k.add(j * KB + c0);
                for (c, a) in acc.iter_mut().enumerate() {
                    let kv = _mm256_broadcast_ss(&*kj.add(c));
                    a[0] = _mm256_fmadd_ps(kv, q0, a[0]);
                    a[1] = _mm256_fmadd_ps(kv, q1, a[1]);
                }
                qp = qp.add(G);
            }
            for (c, a) in acc.iter().enumerate() {
                let row = s.add((c0 + c) * G + r0);
                _mm256_storeu_ps(row, a[0]);
                _mm256_storeu_ps(row.add(8), a[1]);
                rmax[0] = _mm256_max_ps(rmax[0], a[0]);
                rmax[1] = _mm256_max_ps(rmax[1], a[1]);
            }
        }
        for (i, r) in rmax.iter().enumerate() {
            let p = mx.add(r0 + 8 * i);
            _mm256_storeu_ps(p, _mm256_max_ps(_mm256_loadu_ps(p), *r));
        }
    }
}

/// The AVX2 twin of [`softmax_tile`]: 8 rows per vector op.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_tile256((keys, s, tile_max, m, l, o, d): SoftmaxArgs) {
    for part in 0..G / 8 {
        let off = part * 8;
        let mx = match tile_max {
            Some(t) => _mm256_loadu_ps(t.add(off)),
            None => {
                let mut acc = [_mm256_set1_ps(f32::NEG_INFINITY); 4];
                for c in 0..keys {
                    acc[c % 4] = _mm256_max_ps(acc[c % 4], _mm256_loadu_ps(s.add(c * G + off)));
                }
                _mm256_max_ps(_mm256_max_ps(acc[0], acc[1]), _mm256_max_ps(acc[2], acc[3]))
            }
        };
        let m_old = _mm256_loadu_ps(m.add(off));
        let m_new = _mm256_max_ps(m_old, mx);
        let alpha = simd::x86::exp2_nonpos256(_mm256_sub_ps(m_old, m_new));
        let mut sum = [_mm256_setzero_ps(); 2];
        for c in 0..keys {
            let p = s.add(c * G + off);
            let e = simd::x86::exp2_nonpos256(_mm256_sub_ps(_mm256_loadu_ps(p), m_new));
            _mm256_storeu_ps(p, e);
            sum[c % 2] = _mm256_add_ps(sum[c % 2], e);
        }
        _mm256_storeu_ps(m.add(off), m_new);
        _mm256_storeu_ps(
            l.add(off),
            _mm256_fmadd_ps(
                _mm256_loadu_ps(l.add(off)),
                alpha,
                _mm256_add_ps(sum[0], sum[1]),
            ),
        );
        for j in 0..d {
            let p = o.add(j * G + off);
            _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), alpha));
        }
    }
}

/// The AVX2 twin of [`pv_tile`], w ≤ [`JB2`]: two sub-tiles of w dims × 16 rows.
#[cfg(target_arch = "x86_64")]
unsafe fn pv_tile256((w, keys, p, v, v_rs, o): PvArgs) {
    macro_rules! dispatch {
        ($($n:literal)*) => {
            match w {
                $($n => for half in 0..2 {
                    pv_sub256::<$n>(keys, p.add(half * 16), v, v_rs, o.add(half * 16))
                },)*
                _ => unreachable!("AVX2 head-dimension blocks are 1..=JB2 wide"),
            }
        };
    }
    dispatch!(1 2 3 4 5 6)
}

/// Oᵀ[W × 16] += Vᵀ[W × keys] · P[keys × 16]: p and o at the sub-tile's first row (rows G
/// apart).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pv_sub256<const W: usize>(
    keys: usize,
    p: *const f32,
    v: *const f32,
    v_rs: usize,
    o: *mut f32,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; W];
    for (j, a) in acc.iter_mut().enumerate() {
        a[0] = _mm256_loadu_ps(o.add(j * G));
        a[1] = _mm256_loadu_ps(o.add(j * G + 8));
    }
    let (mut p, mut v) = (p, v);
    for _ in 0..keys {
        let p0 = _mm256_loadu_ps(p);
        let p1 = _mm256_loadu_ps(p.add(8));
        for (j, a) in acc.iter_mut().enumerate() {
            let vv = _mm256_broadcast_ss(&*v.add(j));
            a[0] = _mm256_fmadd_ps(vv, p0, a[0]);
            a[1] = _mm256_fmadd_ps(vv, p1, a[1]);
        }
        p = p.add(G);
        v = v.add(v_rs);
    }
    for (j, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(o.add(j * G), a[0]);
        _mm256_storeu_ps(o.add(j * G + 8), a[1]);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn scores_tile(_: ScoreArgs) {
    unreachable!("flash512 runs only where available() says AVX-512F or AVX2 is present")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn softmax_tile(_: SoftmaxArgs) {
    unreachable!("flash512 runs only where available() says AVX-512F or AVX2 is present")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pv_tile(_: PvArgs) {
    unreachable!("flash512 runs only where available() says AVX-512F or AVX2 is present")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn scores_tile256(_: ScoreArgs) {
    unreachable!("flash512 runs only where available() says AVX-512F or AVX2 is present")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn softmax_tile256(_: SoftmaxArgs) {
    unreachable!("flash512 runs only where available() says AVX-512F or AVX2 is present")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pv_tile256(_: PvArgs) {
    unreachable!("flash512 runs only where available() says AVX-512F or AVX2 is present")
}
