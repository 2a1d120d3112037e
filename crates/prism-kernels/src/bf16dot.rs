//! Linear layers on bf16 weights with AVX-512 BF16 dot products (`vdpbf16ps`): the path of
//! `--weights-dtype bf16` on CPUs that have them and run them fast (see [`pays`]).
//!
//! y (rows × out) += x (rows × in) · Wᵀ with W (out × in) stored as bf16 bits. Activations are
//! rounded to bf16 (round to nearest even) as they are packed; every product of a bf16 pair
//! is accumulated in f32. One `vdpbf16ps` does 32 multiply-adds, twice an f32 FMA's 16, and
//! the weights are read in 16 bits without being widened first.
//!
//! - W is packed per call into panels of [`NR`] = 32 output features: for each pair of input
//!   features t, 32 words (W[j][2t], W[j][2t+1]), zero past `out` and past `in`.
//! - Each task takes [`MC`] rows of x, converts them into panels of [`MR`] = 14 rows (for each
//!   pair t, 14 words), and runs a 14 × 32 register tile (28 accumulators) over every W panel.
//!
//! [`MC`]: crate::tuning::Tuning::bf16_task_rows

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rayon::prelude::*;

/// Rows of the register tile.
pub(crate) const MR: usize = 14;
/// Output features of the register tile (two vectors of 16).
const NR: usize = 32;
// Rows of x per task: a tunable, `Tuning::bf16_task_rows` (crate::tuning).

/// Whether this CPU has AVX-512F and AVX-512 BF16 (and `PRISM_SIMD` does not lower the level).
pub fn available() -> bool {
    crate::simd::level() == crate::simd::Level::Avx512 && crate::simd::has_avx512_bf16()
}

/// Whether the executor should use this path for bf16 weights: AVX-512 BF16 is present and a
/// 1 ms measurement at first use finds `vdpbf16ps` at least 1.2× the multiply-adds per second
/// of f32 FMAs. On some CPUs it is not (on Sapphire / Emerald Rapids Xeons `vdpbf16ps` runs
/// at half the rate of `vfmadd231ps`), and bf16 weights are widened to f32 instead.
/// `PRISM_BF16_DOT=on|off` overrides.
pub fn pays() -> bool {
    use std::sync::OnceLock;
    static PAYS: OnceLock<bool> = OnceLock::new();
    *PAYS.get_or_init(|| {
        if !available() {
            return false;
        }
        match std::env::var("PRISM_BF16_DOT").as_deref() {
            Ok("on") => return true,
            Ok("off") => return false,
            _ => {}
        }
        let (dot, fma) = throughput();
        dot >= 1.2 * fma
    })
}

/// Whether a product of `rows` rows on bf16 weights takes this path: where it [`pays`], from
/// [`bf16_dot_min_rows`](crate::tuning::Tuning::bf16_dot_min_rows) rows (fewer rows run the
/// `linear512` panel tile); at any row count with `PRISM_BF16_DOT=on`.
pub fn chosen(rows: usize) -> bool {
    use std::sync::OnceLock;
    static FORCED: OnceLock<bool> = OnceLock::new();
    pays()
        && (*FORCED.get_or_init(|| std::env::var("PRISM_BF16_DOT").as_deref() == Ok("on"))
            || rows >= crate::tuning::tuning().bf16_dot_min_rows)
}

/// Multiply-adds per second of `vdpbf16ps` and of `vfmadd231ps` on this core (best of 3).
pub fn throughput() -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        let best = |f: &dyn Fn() -> f64| (0..3).map(|_| f()).fold(0.0, f64::max);
        // SAFETY: available() guarantees AVX-512F and BF16.
        let dot = best(&|| unsafe { rate_dot(50_000) });
        let fma = best(&|| unsafe { rate_fma(50_000) });
        return (dot, fma);
    }
    (0.0, 0.0)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn rate_dot(iters: usize) -> f64 {
    let mut acc = [_mm512_setzero_ps(); 16];
    let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3f80_3f80));
    let t = std::time::Instant::now();
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbf16_ps(*v, a, a);
        }
    }
    let dt = t.elapsed().as_secs_f64();
    std::hint::black_box(acc);
    (iters * 16 * 32) as f64 / dt
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rate_fma(iters: usize) -> f64 {
    let mut acc = [_mm512_setzero_ps(); 16];
    let a = _mm512_set1_ps(1.0);
    let t = std::time::Instant::now();
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(a, a, *v);
        }
    }
    let dt = t.elapsed().as_secs_f64();
    std::hint::black_box(acc);
    (iters * 16 * 16) as f64 / dt
}

/// f32 → bf16 bits, rounding to nearest even (the `half` crate's conversion, as the weights
/// are stored).
pub fn to_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// bf16 bits → f32.
pub fn from_bf16(h: u16) -> f32 {
    half::bf16::from_bits(h).to_f32()
}

/// W packed for the register tile: wp[p][t][j] = pair (W[32p + j][2t], W[32p + j][2t + 1]),
/// zero past `out` and `inf`. The same bytes as W (plus padding).
pub struct PackedWeights {
    wp: Vec<u32>,
    kp: usize,
    out: usize,
    inf: usize,
}

/// Pack W (out × inf, bf16 bits, row-major).
pub fn pack_weights(w: &[u16], out: usize, inf: usize) -> PackedWeights {
    assert_eq!(w.len(), out * inf, "bf16 linear weight length");
    let kp = inf.div_ceil(2);
    let panels = out.div_ceil(NR);
    let mut wp = vec![0u32; panels * kp * NR];
    if kp > 0 {
        wp.par_chunks_mut(kp * NR)
            .enumerate()
            .for_each(|(p, panel)| {
                for j in 0..NR.min(out - p * NR) {
                    let row = &w[(p * NR + j) * inf..(p * NR + j + 1) * inf];
                    for (t, pair) in row.chunks(2).enumerate() {
                        let hi = pair.get(1).map_or(0, |&v| v as u32);
                        panel[t * NR + j] = pair[0] as u32 | (hi << 16);
                    }
                }
            });
    }
    PackedWeights { wp, kp, out, inf }
}

/// Pack W held in `linear512` panels (element (j, k) of panel p at `k·32 + j`, bf16): each
/// panel's rows k = 2t and 2t + 1 interleaved into pairs.
pub fn pack_panels(w: &[half::bf16], out: usize, inf: usize) -> PackedWeights {
    assert_eq!(
        w.len(),
        crate::linear512::panels_len(out, inf),
        "bf16 linear panels length"
    );
    let kp = inf.div_ceil(2);
    let panels = out.div_ceil(NR);
    let mut wp = vec![0u32; panels * kp * NR];
    if kp > 0 {
        wp.par_chunks_mut(kp * NR)
            .zip(w.par_chunks(inf * NR))
            .for_each(|(dst, src)| {
                for (t, d) in dst.chunks_exact_mut(NR).enumerate() {
                    let lo = &src[2 * t * NR..(2 * t + 1) * NR];
                    let hi = src.get((2 * t + 1) * NR..(2 * t + 2) * NR);
                    for (j, v) in d.iter_mut().enumerate() {
                        let h = hi.map_or(0, |h| h[j].to_bits() as u32);
                        *v = lo[j].to_bits() as u32 | (h << 16);
                    }
                }
            });
    }
    PackedWeights { wp, kp, out, inf }
}

/// y += x · Wᵀ (see the module docs); W is (out × inf) bf16 bits, row-major.
pub fn linear_acc(x: &[f32], w: &[u16], rows: usize, inf: usize, out: usize, y: &mut [f32]) {
    linear_acc_packed(x, &pack_weights(w, out, inf), rows, y)
}

/// Convert a row of f32 into bf16 pairs (round to nearest even): words[t] = (x[2t], x[2t+1]).
fn row_to_pairs(x: &[f32], words: &mut [u32]) {
    // SAFETY: available() (checked by the callers) guarantees AVX-512F and BF16.
    #[cfg(target_arch = "x86_64")]
    let done = unsafe { row_to_pairs_avx512(x, words) };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (t, pair) in x[2 * done..].chunks(2).enumerate() {
        let hi = pair.get(1).map_or(0, |&v| to_bf16(v) as u32);
        words[done + t] = to_bf16(pair[0]) as u32 | (hi << 16);
    }
}

/// The whole 32-float chunks of [`row_to_pairs`]; returns the words written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn row_to_pairs_avx512(x: &[f32], words: &mut [u32]) -> usize {
    let chunks = x.len() / 32;
    for c in 0..chunks {
        let lo = _mm512_loadu_ps(x.as_ptr().add(32 * c));
        let hi = _mm512_loadu_ps(x.as_ptr().add(32 * c + 16));
        // Lower 16 bf16 from the second operand, upper 16 from the first.
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(words.as_mut_ptr().add(16 * c) as *mut __m512i, v);
    }
    chunks * 16
}

/// y += x · Wᵀ with W packed by [`pack_weights`].
pub fn linear_acc_packed(x: &[f32], w: &PackedWeights, rows: usize, y: &mut [f32]) {
    assert!(available(), "bf16dot needs AVX-512 BF16");
    let (kp, out, inf) = (w.kp, w.out, w.inf);
    assert_eq!(x.len(), rows * inf, "bf16 linear input length");
    assert_eq!(y.len(), rows * out, "bf16 linear output length");
    if rows == 0 || out == 0 || inf == 0 {
        return;
    }
    let panels = out.div_ceil(NR);
    let wp = &w.wp;
    let yp = crate::SendPtr(y.as_mut_ptr());
    let task_rows = crate::tuning::tuning().bf16_task_rows;
    (0..rows.div_ceil(task_rows)).into_par_iter().for_each_init(
        || (Vec::new(), vec![0u32; kp]),
        |(ap, words): &mut (Vec<u32>, Vec<u32>), blk| {
            let r0 = blk * task_rows;
            let mc = task_rows.min(rows - r0);
            let rpanels = mc.div_ceil(MR);
            ap.clear();
            ap.resize(rpanels * kp * MR, 0);
            // x rows as bf16 pairs: ap[r][t][i] = (x[i][2t], x[i][2t + 1]), zero rows past mc.
            for i in 0..mc {
                row_to_pairs(&x[(r0 + i) * inf..(r0 + i + 1) * inf], words);
                let dst = &mut ap[(i / MR) * kp * MR + i % MR..];
                for (t, &wd) in words.iter().enumerate() {
                    dst[t * MR] = wd;
                }
            }
            for p in 0..panels {
                let col = p * NR;
                let cols = NR.min(out - col);
                for r in 0..rpanels {
                    let row = r0 + r * MR;
                    // SAFETY: the panels hold kp × MR and kp × NR words; rows row..row+n and
                    // columns col..col+cols of y are in bounds, and only this task writes
                    // rows r0..r0+mc.
                    unsafe {
                        kernel(
                            kp,
                            ap.as_ptr().add(r * kp * MR),
                            wp.as_ptr().add(p * kp * NR),
                            yp.get().add(row * out + col),
                            out,
                            MR.min(mc - r * MR),
                            cols,
                        )
                    };
                }
            }
        },
    );
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel(
    kp: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    c_rs: usize,
    rows: usize,
    cols: usize,
) {
    let mut lo = [_mm512_setzero_ps(); MR];
    let mut hi = [_mm512_setzero_ps(); MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kp {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b as *const __m512i));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(16) as *const __m512i));
        for i in 0..MR {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(i) as i32));
            lo[i] = _mm512_dpbf16_ps(lo[i], av, b0);
            hi[i] = _mm512_dpbf16_ps(hi[i], av, b1);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    let m0: __mmask16 = if cols >= 16 {
        0xffff
    } else {
        ((1u32 << cols) - 1) as u16
    };
    let m1: __mmask16 = if cols >= 32 {
        0xffff
    } else if cols > 16 {
        ((1u32 << (cols - 16)) - 1) as u16
    } else {
        0
    };
    for i in 0..rows {
        let p = c.add(i * c_rs);
        let v0 = _mm512_add_ps(lo[i], _mm512_maskz_loadu_ps(m0, p));
        let v1 = _mm512_add_ps(hi[i], _mm512_maskz_loadu_ps(m1, p.add(16)));
        _mm512_mask_storeu_ps(p, m0, v0);
        _mm512_mask_storeu_ps(p.add(16), m1, v1);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(
    _: usize,
    _: *const u32,
    _: *const u32,
    _: *mut f32,
    _: usize,
    _: usize,
    _: usize,
) {
    unreachable!("bf16dot runs only where available() says AVX-512 BF16 is present")
}
