//! Linear layers with f32 register tiles on weights stored in panels: the path of `Linear`
//! and of the fused GEGLU projection on CPUs with AVX-512F, and (the AVX2 twin, [`tile256`]:
//! the same 14 × 32 tile as sub-tiles of 6 rows × 16 columns over the panel chunk in L1) on
//! AVX2 + FMA. Portable builds keep the weights row-major and `matmul` runs them through the
//! `gemm` crate.
//!
//! y (rows × out) [+]= x (rows × in) · Wᵀ, W (out × in).
//!
//! - W is re-laid out once, when the weights are bound ([`pack_panels`]), into panels of
//!   [`NR`] = 32 output features, (in × 32) each: the transpose the register tile reads with
//!   two vector loads per input feature. Same bytes as W (plus padding to 32 features), same
//!   dtype: 16-bit and 8-bit panels are widened to f32 where they are read — in registers
//!   by a task of one row tile, and once per panel chunk into an L1 buffer (32 KiB) that every
//!   row tile reads by a task of more; 8-bit panels' sums are multiplied by their 32 features'
//!   scales ([`crate::quant`]) as the tile stores them.
//! - x is read in place: the 14 × 32 register tile (28 accumulators) broadcasts from [`MR`] =
//!   14 row pointers, folded into the multiply-adds as memory operands.
//! - Tasks are blocks of at most [`MC`] rows × runs of panels, at least two per thread, so even
//!   32 rows (the UNet's 4×4 level at batch 2) spread over every thread; a run is narrow
//!   enough that the task's block of y stays in L2 ([`Y_BLOCK`] bytes). Products of at most
//!   [`ONE_BLOCK`] rows are one row block, so their (large) weights stream once.
//! - Within a task: chunks of at most [`KC`] input features outside, panels inside, rows
//!   innermost, so a panel chunk (≤ 32 KiB) stays in L1 while every row passes over it and the
//!   chunk of x rows stays in L2 for all the panels; chunks accumulate in y. The bias and a
//!   residual are added as the first chunk's sums are stored: no separate pass over y.
//! - Before its k loop the tile prefetches its rows of y into L1 (and of the residual):
//!   the executor's outputs are recycled buffers no cache holds, and 14 rows of stores that
//!   each miss stalled the epilogue. Inside the k loop it prefetches each row's next line of
//!   x every 16 inputs, so the 14 rows' line crossings do not miss L1 together; and each row
//!   tile fetches its share of the next panel chunk into L2, so weights streamed from memory
//!   arrive before they are used.
//! - The GEGLU projection (W = [value; gate], 2n × in) computes each task's value and gate
//!   columns with their biases into an L2-sized scratch block ([`GEGLU_BLOCK`]) with the same tile,
//!   then writes value · gelu(gate) from there: the (rows × 2n) projection never goes to
//!   memory whole.
//!
//! Why panels at binding: packing W per call (the `gemm` crate's way) cost as much as the
//! product at 128 rows, and the `gemm` crate ran the UNet's small-row products well below this
//! tile; `prism bench --only linear_128_5120_1280,linear_128_5120_1280_gemm` compares the two
//! (numbers in `docs/performance.md`).
//!
//! [`MC`]: crate::tuning::Tuning::linear_task_rows
//! [`ONE_BLOCK`]: crate::tuning::Tuning::linear_one_block_rows
//! [`KC`]: crate::tuning::Tuning::linear_kc
//! [`Y_BLOCK`]: crate::tuning::Tuning::linear_y_block_bytes

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::conv::ConvWeights;
use crate::tuning::tuning;
use crate::{simd, SendPtr};
use rayon::prelude::*;

/// Output features per panel (two vectors of 16).
pub const NR: usize = 32;
/// Rows of the plain register tile.
pub(crate) const MR: usize = 14;
// Rows per task, the one-block row limit, the input chunk and the y block per task are
// tunables (crate::tuning): `Tuning::linear_task_rows`, `linear_one_block_rows`, `linear_kc`,
// `linear_y_block_bytes`.
/// Most rows a task of this kernel takes (the tunable task rows and one-block rows may not
/// exceed it): sizes [`GEGLU_BLOCK`].
pub(crate) const ONE_BLOCK_MAX: usize = 40 * MR;
/// Value panels per GEGLU scratch block.
const GB: usize = 4;
/// Floats of the scratch block each running GEGLU task takes: up to `ONE_BLOCK_MAX` rows of
/// GB value and GB gate panels. A tunable kept `const`: `prism-runtime`'s memory plan reads
/// it to size this scratch.
pub const GEGLU_BLOCK: usize = ONE_BLOCK_MAX * 2 * GB * NR;

/// Whether this CPU runs these kernels (bound weights are packed only then).
pub fn available() -> bool {
    matches!(
        crate::simd::level(),
        crate::simd::Level::Avx512 | crate::simd::Level::Avx2
    )
}

/// Elements of W (out × inf) laid out in panels: `out` rounded up to [`NR`].
pub fn panels_len(out: usize, inf: usize) -> usize {
    out.div_ceil(NR) * NR * inf
}

/// W (out × inf, row-major) into panels: element (j, k) at `(j / 32)·inf·32 + k·32 + j % 32`,
/// zero past `out`.
pub fn pack_panels<T: Copy + Default + Send + Sync>(w: &[T], out: usize, inf: usize) -> Vec<T> {
    assert_eq!(w.len(), out * inf, "linear weight length");
    let mut dst = vec![T::default(); panels_len(out, inf)];
    if inf == 0 {
        return dst;
    }
    dst.par_chunks_mut(inf * NR)
        .enumerate()
        .for_each(|(p, panel)| {
            // Blocks of 16 input features, so reads and writes both stay in a few lines.
            for k0 in (0..inf).step_by(16) {
                let k1 = (k0 + 16).min(inf);
                for j in 0..NR.min(out - p * NR) {
                    let row = &w[(p * NR + j) * inf..];
                    for k in k0..k1 {
                        panel[k * NR + j] = row[k];
                    }
                }
            }
        });
    dst
}

/// The inverse of [`pack_panels`]: W (out × inf) row-major.
pub fn unpack_panels<T: Copy + Send + Sync>(panels: &[T], out: usize, inf: usize, w: &mut [T]) {
    assert_eq!(panels.len(), panels_len(out, inf), "panel length");
    assert_eq!(w.len(), out * inf, "linear weight length");
    if inf == 0 {
        return;
    }
    w.par_chunks_mut(inf).enumerate().for_each(|(j, row)| {
        let panel = &panels[(j / NR) * inf * NR..];
        for (k, v) in row.iter_mut().enumerate() {
            *v = panel[k * NR + j % NR];
        }
    });
}

/// Whether [`linear_geglu`] takes a projection to 2n features (n a whole number of panels).
pub fn geglu_fits(n: usize) -> bool {
    n % NR == 0
}

/// What the tile does with its sums.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Epilogue {
    /// The first input chunk: y = sums [+ bias (32 floats, null: none)] [+ residual (laid out
    /// as y, null: none)].
    First { bias: *const f32, res: *const f32 },
    /// Later chunks: y += sums.
    Add,
}

/// dtype codes of the panels, for the const-generic tiles.
pub(crate) const F32: u8 = 0;
pub(crate) const BF16: u8 = 1;
pub(crate) const F16: u8 = 2;
pub(crate) const I8: u8 = 3;

/// Bytes per element of a dtype code.
pub(crate) fn esize(dt: u8) -> usize {
    match dt {
        F32 => 4,
        I8 => 1,
        _ => 2,
    }
}

/// Tasks of a product over `rows` and `panels`: `rb` blocks of at most [`MC`] rows (one block
/// up to [`ONE_BLOCK`] rows) × `cb` runs of panels, at least two tasks per thread where the
/// shape allows, and runs narrow enough that a task's block of y ([`Y_BLOCK`] bytes) stays in
/// L2 between input chunks.
///
/// [`MC`]: crate::tuning::Tuning::linear_task_rows
/// [`ONE_BLOCK`]: crate::tuning::Tuning::linear_one_block_rows
/// [`Y_BLOCK`]: crate::tuning::Tuning::linear_y_block_bytes
fn split(rows: usize, panels: usize) -> (usize, usize) {
    let t = tuning();
    let (mc, one_block, y_block) = (
        t.linear_task_rows,
        t.linear_one_block_rows,
        t.linear_y_block_bytes,
    );
    let threads = rayon::current_num_threads().max(1);
    let want = 2 * threads;
    let (rb, block_rows) = if rows <= one_block {
        (1, rows)
    } else {
        (rows.div_ceil(mc), mc)
    };
    let fit = (block_rows * panels * NR * 4).div_ceil(y_block);
    let mut cb = want.div_ceil(rb).max(fit).clamp(1, panels);
    // A whole number of tasks per thread where the panels allow: 7 equal tasks on 2 threads
    // take as long as 8.
    while (rb * cb) % threads != 0 && cb < panels {
        cb += 1;
    }
    (rb, cb)
}

/// Chunks of the input axis: near-equal, at most `kc` ([`KC`]) each.
///
/// [`KC`]: crate::tuning::Tuning::linear_kc
fn chunk(inf: usize, kc: usize) -> usize {
    inf.div_ceil(inf.div_ceil(kc))
}

/// Range `i` of `n` near-equal runs of `len` items, in whole multiples of `unit`.
fn run(len: usize, n: usize, i: usize, unit: usize) -> (usize, usize) {
    let units = len.div_ceil(unit);
    let (a, b) = (units * i / n, units * (i + 1) / n);
    ((a * unit).min(len), (b * unit).min(len))
}

/// One task's block: y[r0..r1, panels p0..p1] (y pointing at row r0, row stride `y_rs`, panel
/// p at column `col(p)`) = x[r0..r1] · W panels [+ bias[32p..]] [+ residual, laid out as the
/// whole y]. Input chunks of [`KC`] outside, panels inside, rows innermost: a chunk of x rows
/// stays in L2 for all the panels and a panel chunk in L1 for all the rows.
///
/// [`KC`]: crate::tuning::Tuning::linear_kc
#[allow(clippy::too_many_arguments)]
fn block(
    lvl: crate::simd::Level,
    x: &[f32],
    inf: usize,
    (r0, r1): (usize, usize),
    w: (usize, u8, usize),
    (p0, p1): (usize, usize),
    y: SendPtr,
    y_rs: usize,
    col: impl Fn(usize) -> (usize, usize),
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) {
    let (wb, dt, sb) = w;
    let kc_max = tuning().linear_kc;
    // Narrow panels over more than one row tile: each panel chunk is widened to f32 once, into
    // an L1-sized buffer the f32 tile then reads for every row tile (8-bit chunks keep their
    // integer values; the scales still apply to the sums), instead of every row tile widening
    // it again.
    let mut wide = (dt != F32 && r1 - r0 > MR).then(|| crate::scratch::Scratch::take(kc_max * NR));
    let mut k0 = 0;
    while k0 < inf {
        let kc = chunk(inf, kc_max).min(inf - k0);
        for p in p0..p1 {
            let (c0, nc) = col(p);
            let b = (p * inf + k0) * NR;
            let (tb, tdt, tb0) = match wide.as_mut() {
                Some(buf) => {
                    // SAFETY: the panel holds kc × 32 elements from b; buf holds kc_max × 32.
                    unsafe { widen_chunk(lvl, dt, wb as *const u8, b, &mut buf[..kc * NR]) };
                    (buf.as_ptr() as *const u8, F32, 0)
                }
                None => (wb as *const u8, dt, b),
            };
            // The panel chunk after this one (the next panel's, or the first panel's of the
            // next input chunk), as a byte range, fetched into L2 a share per row tile while
            // this one is in use: where the weights come from memory, the next panel's first
            // tile no longer waits for them.
            let next = if p + 1 < p1 {
                Some((p + 1, k0, kc))
            } else if k0 + kc < inf {
                Some((p0, k0 + kc, chunk(inf, kc_max).min(inf - k0 - kc)))
            } else {
                None
            };
            let esz = esize(dt);
            let (start, len) = next.map_or((0, 0), |(np, nk, nkc)| {
                ((np * inf + nk) * NR * esz, nkc * NR * esz)
            });
            let tiles = (r1 - r0).div_ceil(MR);
            for (ti, row) in (r0..r1).step_by(MR).enumerate() {
                let s0 = start + len * ti / tiles;
                let s1 = start + len * (ti + 1) / tiles;
                for off in (s0 & !63..s1).step_by(64) {
                    simd::prefetch_l2((wb as *const u8).wrapping_add(off));
                }
                let nrows = MR.min(r1 - row);
                let ep = if k0 == 0 {
                    Epilogue::First {
                        bias: bias.map_or(std::ptr::null(), |v| v[p * NR..].as_ptr()),
                        res: residual.map_or(std::ptr::null(), |v| v[row * y_rs + c0..].as_ptr()),
                    }
                } else {
                    Epilogue::Add
                };
                // Rows past the block repeat its first row (computed, not stored).
                let a: [*const f32; MR] = std::array::from_fn(|i| {
                    x[(row + if i < nrows { i } else { 0 }) * inf + k0..].as_ptr()
                });
                // SAFETY: each of the 14 rows has kc floats from k0; the panel holds kc × 32
                // elements from b; the bias has the columns' floats and the residual y's
                // layout; the caller owns rows r0..r1 × columns col(p) of y for p0..p1 and no
                // other task writes them.
                unsafe {
                    let c = y.get().add((row - r0) * y_rs + c0);
                    // 8-bit panels: the panel's 32 scales, applied to the sums.
                    let sc = if sb == 0 {
                        std::ptr::null()
                    } else {
                        (sb as *const f32).add(p * NR)
                    };
                    let t = (kc, &a, tb, tb0, c, y_rs, nrows, nc, ep, sc);
                    if lvl == crate::simd::Level::Avx512 {
                        match tdt {
                            F32 => tile::<F32>(t),
                            BF16 => tile::<BF16>(t),
                            F16 => tile::<F16>(t),
                            _ => tile::<I8>(t),
                        }
                    } else {
                        match tdt {
                            F32 => tile256::<F32>(t),
                            BF16 => tile256::<BF16>(t),
                            F16 => tile256::<F16>(t),
                            _ => tile256::<I8>(t),
                        }
                    }
                }
            }
        }
        k0 += kc;
    }
}

/// y (rows × out) = x · Wᵀ [+ bias (out)] [+ residual (rows × out)], W in panels
/// ([`pack_panels`]) of f32, bf16 or f16.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    x: &[f32],
    w: &ConvWeights,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    rows: usize,
    inf: usize,
    out: usize,
    y: &mut [f32],
) {
    linear_at(
        crate::simd::level(),
        x,
        w,
        bias,
        residual,
        rows,
        inf,
        out,
        y,
    )
}

/// [`linear`] with the tile of a given level (Avx512 or Avx2, lowered to what this CPU has):
/// for tests.
#[allow(clippy::too_many_arguments)]
pub fn linear_at(
    lvl: crate::simd::Level,
    x: &[f32],
    w: &ConvWeights,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    rows: usize,
    inf: usize,
    out: usize,
    y: &mut [f32],
) {
    assert!(available(), "linear512 needs AVX2 or AVX-512F");
    let lvl = crate::simd::supported(lvl);
    assert!(
        matches!(lvl, crate::simd::Level::Avx512 | crate::simd::Level::Avx2),
        "linear512 runs the AVX-512 or AVX2 tile, not {lvl:?}"
    );
    assert_eq!(x.len(), rows * inf, "linear input length");
    assert_eq!(w.len(), panels_len(out, inf), "linear weight panels length");
    assert_eq!(y.len(), rows * out, "linear output length");
    if let Some(b) = bias {
        assert_eq!(b.len(), out, "linear bias length");
    }
    if let Some(r) = residual {
        assert_eq!(r.len(), rows * out, "linear residual length");
    }
    if rows == 0 || out == 0 {
        return;
    }
    if inf == 0 {
        for (i, v) in y.iter_mut().enumerate() {
            *v = bias.map_or(0.0, |b| b[i % out]) + residual.map_or(0.0, |r| r[i]);
        }
        return;
    }
    // A bias padded to whole panels, so the tile reads 32 floats for the last one too.
    let padded;
    let bias = match bias {
        Some(b) if out % NR != 0 => {
            padded = [b, &vec![0.0; NR - out % NR][..]].concat();
            Some(&padded[..])
        }
        b => b,
    };
    let panels = out.div_ceil(NR);
    let (wb, dt, sb) = raw(w);
    let (wb, sb) = (wb as usize, sb as usize);
    let (rb, cb) = split(rows, panels);
    let yp = SendPtr(y.as_mut_ptr());
    (0..rb * cb).into_par_iter().for_each(|t| {
        let rr = run(rows, rb, t / cb, MR);
        let pp = run(panels, cb, t % cb, 1);
        // SAFETY (of the offset): row rr.0 is in y.
        let yb = SendPtr(unsafe { yp.get().add(rr.0 * out) });
        let col = |p: usize| (p * NR, NR.min(out - p * NR));
        block(
            lvl,
            x,
            inf,
            rr,
            (wb, dt, sb),
            pp,
            yb,
            out,
            col,
            bias,
            residual,
        );
    });
}

/// Fused GEGLU projection: y (rows × n) = h[:, :n] · gelu(h[:, n:]) with h = x · Wᵀ + b, W
/// (2n × inf) in panels, b (2n); n a multiple of [`NR`] ([`geglu_fits`]). Each task computes
/// its block of h (value and gate panels side by side) into an L2-sized scratch block and
/// writes the gated product from there: h never goes to memory whole.
pub fn linear_geglu(
    x: &[f32],
    w: &ConvWeights,
    b: &[f32],
    rows: usize,
    inf: usize,
    n: usize,
    y: &mut [f32],
) {
    assert!(available(), "linear512 needs AVX2 or AVX-512F");
    assert!(geglu_fits(n), "GEGLU width {n} is not a multiple of {NR}");
    assert_eq!(x.len(), rows * inf, "GEGLU input length");
    assert_eq!(
        w.len(),
        panels_len(2 * n, inf),
        "GEGLU weight panels length"
    );
    assert_eq!(b.len(), 2 * n, "GEGLU bias length");
    assert_eq!(y.len(), rows * n, "GEGLU output length");
    if rows == 0 || n == 0 {
        return;
    }
    let panels = n / NR;
    let (wb, dt, sb) = raw(w);
    let (wb, sb) = (wb as usize, sb as usize);
    // Value panels 0..panels, gate panels panels..2·panels; a task takes a run of value
    // panels and their gates, in groups of at most GB value panels per scratch block.
    let (rb, cb) = split(rows, panels);
    let yp = SendPtr(y.as_mut_ptr());
    (0..rb * cb).into_par_iter().for_each(|t| {
        let (r0, r1) = run(rows, rb, t / cb, MR);
        let (p0, p1) = run(panels, cb, t % cb, 1);
        let mut h = crate::scratch::Scratch::take(GEGLU_BLOCK);
        let hp = SendPtr(h.as_mut_ptr());
        for g0 in (p0..p1).step_by(GB) {
            let g1 = (g0 + GB).min(p1);
            let wide = (g1 - g0) * NR;
            let h_rs = 2 * wide;
            // h block columns: the group's value panels, then their gates (panel p's bias
            // is b[32p..] for both: gate panel panels + q has bias n + 32q).
            let value = |p: usize| ((p - g0) * NR, NR);
            let gate = |p: usize| (wide + (p - panels - g0) * NR, NR);
            let wv = (wb, dt, sb);
            block(
                crate::simd::level(),
                x,
                inf,
                (r0, r1),
                wv,
                (g0, g1),
                hp,
                h_rs,
                value,
                Some(b),
                None,
            );
            let gates = (panels + g0, panels + g1);
            block(
                crate::simd::level(),
                x,
                inf,
                (r0, r1),
                wv,
                gates,
                hp,
                h_rs,
                gate,
                Some(b),
                None,
            );
            for r in 0..r1 - r0 {
                let hr = &h[r * h_rs..(r + 1) * h_rs];
                // SAFETY: row r0 + r, columns g0·32..g1·32 of y belong to this task alone.
                let yr = unsafe {
                    std::slice::from_raw_parts_mut(yp.get().add((r0 + r) * n + g0 * NR), wide)
                };
                crate::elementwise::geglu_row(&hr[..wide], &hr[wide..], yr);
            }
        }
    });
}

/// `dst.len()` elements of narrow weights (dtype code `dt`) from element `i` of `base`, as
/// f32 (8-bit: the integers, unscaled), at level `lvl` (AVX-512 or AVX2).
///
/// # Safety
/// `base` holds `i + dst.len()` elements of dtype `dt`; `lvl` is supported by this CPU.
pub(crate) unsafe fn widen_chunk(
    lvl: crate::simd::Level,
    dt: u8,
    base: *const u8,
    i: usize,
    dst: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn wide16<const DT: u8>(base: *const u8, i: usize, dst: &mut [f32]) {
            let n16 = dst.len() / 16 * 16;
            for j in (0..n16).step_by(16) {
                _mm512_storeu_ps(dst.as_mut_ptr().add(j), load16::<DT>(base, i + j));
            }
            for (j, d) in dst.iter_mut().enumerate().skip(n16) {
                *d = crate::gemv::get::<DT>(base, i + j);
            }
        }
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn wide8<const DT: u8>(base: *const u8, i: usize, dst: &mut [f32]) {
            let n8 = dst.len() / 8 * 8;
            for j in (0..n8).step_by(8) {
                _mm256_storeu_ps(dst.as_mut_ptr().add(j), load8::<DT>(base, i + j));
            }
            for (j, d) in dst.iter_mut().enumerate().skip(n8) {
                *d = crate::gemv::get::<DT>(base, i + j);
            }
        }
        match (lvl == crate::simd::Level::Avx512, dt) {
            (true, BF16) => wide16::<BF16>(base, i, dst),
            (true, F16) => wide16::<F16>(base, i, dst),
            (true, I8) => wide16::<I8>(base, i, dst),
            (false, BF16) => wide8::<BF16>(base, i, dst),
            (false, F16) => wide8::<F16>(base, i, dst),
            (false, I8) => wide8::<I8>(base, i, dst),
            _ => unreachable!("f32 panels are read in place"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (lvl, dt, base, i, dst);
        unreachable!("linear512 runs only where available() says AVX2 or AVX-512F is present")
    }
}

/// The weights' base address, dtype code, and (8-bit weights) the features' scales; null
/// otherwise.
pub(crate) fn raw(w: &ConvWeights) -> (*const u8, u8, *const f32) {
    let none = std::ptr::null();
    match w {
        ConvWeights::F32(v) => (v.as_ptr() as *const u8, F32, none),
        ConvWeights::Bf16(v) => (v.as_ptr() as *const u8, BF16, none),
        ConvWeights::F16(v) => (v.as_ptr() as *const u8, F16, none),
        ConvWeights::I8 { q, scale, .. } => (q.as_ptr() as *const u8, I8, scale.as_ptr()),
    }
}

/// 16 elements (of panels, or of row-major weights: `gemv` reads both) from element index
/// `i`, widened to f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn load16<const DT: u8>(base: *const u8, i: usize) -> __m512 {
    match DT {
        F32 => _mm512_loadu_ps((base as *const f32).add(i)),
        BF16 => {
            let h = _mm256_loadu_si256((base as *const u16).add(i) as *const __m256i);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
        F16 => _mm512_cvtph_ps(_mm256_loadu_si256(
            (base as *const u16).add(i) as *const __m256i
        )),
        _ => _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
            (base as *const i8).add(i) as *const __m128i,
        ))),
    }
}

/// A tile's arguments: input features kc, the 14 row pointers, the panels' base and the
/// chunk's first element, y (its first element and row stride), the rows and columns to
/// store, the epilogue, and the 32 columns' scales (8-bit panels; null otherwise).
type TileArgs<'a> = (
    usize,
    &'a [*const f32; MR],
    *const u8,
    usize,
    *mut f32,
    usize,
    usize,
    usize,
    Epilogue,
    *const f32,
);

fn mask(n: usize) -> u16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as u16
    }
}

/// A tile's lines of y (and of the residual), rows `c_rs` apart, are wanted only after its k
/// loop: ask for them before it, so the epilogue's stores do not wait on memory (y is often a
/// recycled buffer no cache holds, its rows kilobytes apart). Prefetches never fault;
/// wrapping_add keeps the address arithmetic defined past a short last row.
#[inline(always)]
fn prefetch_tile_rows(c: *mut f32, c_rs: usize, nrows: usize, ep: Epilogue) {
    let res = match ep {
        Epilogue::First { res, .. } => res,
        Epilogue::Add => std::ptr::null(),
    };
    for i in 0..nrows {
        for off in [0, 16, 31] {
            simd::prefetch_l1((c as *const f32).wrapping_add(i * c_rs + off));
            if !res.is_null() {
                simd::prefetch_l1(res.wrapping_add(i * c_rs + off));
            }
        }
    }
}

/// The 14 × 32 register tile over kc input features: rows from `a`, the panel from element
/// `b` of `base`; writes `nrows` rows and `ncols` columns of c.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const DT: u8>(t: TileArgs) {
    let (kc, a, base, b, c, c_rs, nrows, ncols, ep, sc) = t;
    prefetch_tile_rows(c, c_rs, nrows, ep);
    let mut lo = [_mm512_setzero_ps(); MR];
    let mut hi = [_mm512_setzero_ps(); MR];
    for k0 in (0..kc).step_by(16) {
        // Each row's next line of x, a line ahead of the broadcasts: the 14 rows cross a line
        // together, so without it 14 loads miss L1 at once every 16 inputs.
        for p in a {
            simd::prefetch_l1(p.wrapping_add(k0 + 16));
        }
        for k in k0..(k0 + 16).min(kc) {
            let b0 = load16::<DT>(base, b + k * NR);
            let b1 = load16::<DT>(base, b + k * NR + 16);
            for i in 0..MR {
                let av = _mm512_set1_ps(*a[i].add(k));
                lo[i] = _mm512_fmadd_ps(av, b0, lo[i]);
                hi[i] = _mm512_fmadd_ps(av, b1, hi[i]);
            }
        }
    }
    let (m0, m1) = (mask(ncols), mask(ncols.saturating_sub(16)));
    if !sc.is_null() {
        let (s0, s1) = (_mm512_loadu_ps(sc), _mm512_loadu_ps(sc.add(16)));
        for i in 0..MR {
            lo[i] = _mm512_mul_ps(lo[i], s0);
            hi[i] = _mm512_mul_ps(hi[i], s1);
        }
    }
    let (mut b0, mut b1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    if let Epilogue::First { bias, .. } = ep {
        if !bias.is_null() {
            b0 = _mm512_maskz_loadu_ps(m0, bias);
            b1 = _mm512_maskz_loadu_ps(m1, bias.add(16));
        }
    }
    for i in 0..nrows {
        let p = c.add(i * c_rs);
        let (mut v0, mut v1) = (lo[i], hi[i]);
        match ep {
            Epilogue::Add => {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, p));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, p.add(16)));
            }
            Epilogue::First { res, .. } => {
                v0 = _mm512_add_ps(v0, b0);
                v1 = _mm512_add_ps(v1, b1);
                if !res.is_null() {
                    let r = res.add(i * c_rs);
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, r));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, r.add(16)));
                }
            }
        }
        _mm512_mask_storeu_ps(p, m0, v0);
        _mm512_mask_storeu_ps(p.add(16), m1, v1);
    }
}

/// 8 elements from element index `i`, widened to f32 (the AVX2 twin of [`load16`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn load8<const DT: u8>(base: *const u8, i: usize) -> __m256 {
    match DT {
        F32 => _mm256_loadu_ps((base as *const f32).add(i)),
        BF16 => {
            let h = _mm_loadu_si128((base as *const u16).add(i) as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
        F16 => _mm256_cvtph_ps(_mm_loadu_si128(
            (base as *const u16).add(i) as *const __m128i
        )),
        _ => _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
            (base as *const i8).add(i) as *const __m128i,
        ))),
    }
}

/// The AVX2 twin of [`tile`]: the same 14 rows × 32 columns, as sub-tiles of R rows × 16
/// columns (2R accumulators of 8 lanes; R = 6, 4, 4: every sub-tile keeps at least eight
/// multiply-adds in flight) over the panel chunk, which stays in L1 while the sub-tiles pass
/// over it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile256<const DT: u8>(t: TileArgs) {
    let (kc, a, base, b, c, c_rs, nrows, ncols, ep, sc) = t;
    prefetch_tile_rows(c, c_rs, nrows, ep);
    for half in 0..2 {
        let c0 = half * 16;
        if c0 >= ncols {
            break;
        }
        let n = (ncols - c0).min(16);
        let mut r = 0;
        while r < nrows {
            // 14 rows as 6 + 4 + 4; 7 or 8 left as 4 + 4.
            let rem = nrows - r;
            if rem > 4 && rem != 7 && rem != 8 {
                sub256::<DT, 6>(kc, a, r, base, b + c0, c, c_rs, nrows, c0, n, ep, sc);
                r += 6;
            } else {
                sub256::<DT, 4>(kc, a, r, base, b + c0, c, c_rs, nrows, c0, n, ep, sc);
                r += 4;
            }
        }
    }
}

/// R rows from `r` × 16 columns from `c0` of the tile (rows past `nrows` computed from the
/// repeated first row and not stored; R rows from `r` are within the tile's 14).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn sub256<const DT: u8, const R: usize>(
    kc: usize,
    a: &[*const f32; MR],
    r: usize,
    base: *const u8,
    b: usize,
    c: *mut f32,
    c_rs: usize,
    nrows: usize,
    c0: usize,
    n: usize,
    ep: Epilogue,
    sc: *const f32,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let rows: [*const f32; R] = std::array::from_fn(|i| a[(r + i).min(MR - 1)]);
    for k in 0..kc {
        let w0 = load8::<DT>(base, b + k * NR);
        let w1 = load8::<DT>(base, b + k * NR + 8);
        for (acc, row) in acc.iter_mut().zip(&rows) {
            let av = _mm256_broadcast_ss(&*row.add(k));
            acc[0] = _mm256_fmadd_ps(av, w0, acc[0]);
            acc[1] = _mm256_fmadd_ps(av, w1, acc[1]);
        }
    }
    // The epilogue: whole 16-column halves by vectors, a short last panel's by elements (the
    // same operations in the same order: scale, then bias, then residual, or the sum so far).
    let mut sums = [0f32; 16];
    for (i, acc) in acc.iter().enumerate() {
        let row = r + i;
        if row >= nrows {
            break;
        }
        let p = c.add(row * c_rs + c0);
        if n == 16 {
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if !sc.is_null() {
                v0 = _mm256_mul_ps(v0, _mm256_loadu_ps(sc.add(c0)));
                v1 = _mm256_mul_ps(v1, _mm256_loadu_ps(sc.add(c0 + 8)));
            }
            match ep {
                Epilogue::Add => {
                    v0 = _mm256_add_ps(_mm256_loadu_ps(p), v0);
                    v1 = _mm256_add_ps(_mm256_loadu_ps(p.add(8)), v1);
                }
                Epilogue::First { bias, res } => {
                    if !bias.is_null() {
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias.add(c0)));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias.add(c0 + 8)));
                    }
                    if !res.is_null() {
                        let q = res.add(row * c_rs + c0);
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(q));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(q.add(8)));
                    }
                }
            }
            _mm256_storeu_ps(p, v0);
            _mm256_storeu_ps(p.add(8), v1);
            continue;
        }
        _mm256_storeu_ps(sums.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(sums.as_mut_ptr().add(8), acc[1]);
        for (j, &s) in sums.iter().enumerate().take(n) {
            let s = if sc.is_null() { s } else { s * *sc.add(c0 + j) };
            *p.add(j) = match ep {
                Epilogue::Add => *p.add(j) + s,
                Epilogue::First { bias, res } => {
                    let mut v = s;
                    if !bias.is_null() {
                        v += *bias.add(c0 + j);
                    }
                    if !res.is_null() {
                        v += *res.add(row * c_rs + c0 + j);
                    }
                    v
                }
            };
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile256<const DT: u8>(_: TileArgs) {
    unreachable!("linear512 runs only where available() says AVX2 or AVX-512F is present")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile<const DT: u8>(_: TileArgs) {
    unreachable!("linear512 runs only where available() says AVX-512F is present")
}
