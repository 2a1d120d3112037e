//! Linear layers with 8-bit weights *and* 8-bit activations (W8A8) on AVX-512 VNNI
//! (`vpdpbusd`: 64 u8 × s8 multiply-adds into 16 i32 sums per instruction): the
//! dynamically-quantized variant of `--weights-dtype int8`, measured beside the f32-activation
//! path (`prism bench --only linearw8a8_M_K_N,linearint8_M_K_N`); the executor does not use it.
//!
//! - Weights: [`crate::quant::quantize_i8`]'s integers and per-feature scales, packed once into
//!   panels of 32 features × groups of 4 inputs (`[panel][k/4][feature][4]`, 128 bytes per
//!   group: two vector loads), with each feature's integer sum kept for the zero-point
//!   correction.
//! - Activations: each row quantized symmetrically when the product runs (s = max|x| / 127,
//!   q = round(x / s)) and stored as u8 with a zero point of 128 (`vpdpbusd` takes unsigned
//!   activations): Σ (q + 128)·w = Σ q·w + 128·Σ w, and the second term is subtracted.
//! - A 14-row × 32-feature register tile of i32 sums (28 accumulators) per panel; y = (sums −
//!   128·colsum) · s_row · s_feature + bias.
//!
//! `reference::linear` on the dequantized activations and weights is what the test compares.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::SendPtr;
use rayon::prelude::*;

const NR: usize = 32;
const MR: usize = 14;

/// Whether this CPU runs the kernel (AVX-512F + VNNI, and `PRISM_SIMD` allows AVX-512).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::level() == crate::simd::Level::Avx512
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Weights packed for the tile (see the module docs).
pub struct PackedW8 {
    q: Vec<i8>,
    colsum: Vec<i32>,
    scale: Vec<f32>,
    out: usize,
    inf: usize,
}

impl PackedW8 {
    /// From row-major integers (out × inf) and one scale per row.
    pub fn new(q: &[i8], scale: &[f32], out: usize, inf: usize) -> Self {
        assert!(inf > 0, "w8a8 needs at least one input feature");
        assert_eq!(q.len(), out * inf, "w8a8 weight length");
        assert_eq!(scale.len(), out, "w8a8 scale length");
        let (k4, panels) = (inf.div_ceil(4), out.div_ceil(NR));
        let mut wq = vec![0i8; panels * k4 * NR * 4];
        wq.par_chunks_mut(k4 * NR * 4)
            .enumerate()
            .for_each(|(p, panel)| {
                for j in 0..NR.min(out - p * NR) {
                    let row = &q[(p * NR + j) * inf..(p * NR + j + 1) * inf];
                    for (k, &v) in row.iter().enumerate() {
                        panel[((k / 4) * NR + j) * 4 + k % 4] = v;
                    }
                }
            });
        let mut colsum = vec![0i32; panels * NR];
        for (f, s) in colsum.iter_mut().enumerate().take(out) {
            *s = q[f * inf..(f + 1) * inf].iter().map(|&v| v as i32).sum();
        }
        let mut sc = scale.to_vec();
        sc.resize(panels * NR, 0.0);
        Self {
            q: wq,
            colsum,
            scale: sc,
            out,
            inf,
        }
    }
}

/// Each row of x (rows × inf) as u8 (q + 128, zero-padded to whole groups of 4) and its scale:
/// [`crate::quant::quantize_row`]'s symmetric rows, shifted to the zero point.
pub fn quantize_rows(x: &[f32], rows: usize, inf: usize) -> (Vec<u8>, Vec<f32>) {
    assert!(inf > 0, "w8a8 needs at least one input feature");
    assert_eq!(x.len(), rows * inf, "w8a8 input length");
    let k4 = inf.div_ceil(4) * 4;
    let mut xq = vec![128u8; rows * k4];
    let mut sx = vec![0f32; rows];
    xq.par_chunks_mut(k4)
        .zip(x.par_chunks(inf))
        .zip(sx.par_iter_mut())
        .for_each(|((d, row), s)| {
            *s = crate::quant::quantize_row(row, d, |v| (v as i32 + 128) as u8);
        });
    (xq, sx)
}

/// y (rows × out) = dequantized(x rows) · dequantized(W)ᵀ [+ bias], x quantized per row here.
pub fn linear(x: &[f32], w: &PackedW8, bias: Option<&[f32]>, rows: usize, y: &mut [f32]) {
    assert!(available(), "w8a8 needs AVX-512 VNNI");
    let (inf, out) = (w.inf, w.out);
    assert_eq!(x.len(), rows * inf, "w8a8 input length");
    assert_eq!(y.len(), rows * out, "w8a8 output length");
    if let Some(b) = bias {
        assert_eq!(b.len(), out, "w8a8 bias length");
    }
    if rows == 0 || out == 0 {
        return;
    }
    let (xq, sx) = quantize_rows(x, rows, inf);
    let k4 = inf.div_ceil(4);
    let yp = SendPtr(y.as_mut_ptr());
    let tiles = rows.div_ceil(MR);
    let panels = out.div_ceil(NR);
    // Tasks: one row tile × one panel where rows are few; with many row tiles, a tile × every
    // panel (thousands of tiny tasks cost more than they spread).
    let per_task = if tiles >= 8 * rayon::current_num_threads() {
        panels
    } else {
        1
    };
    (0..tiles * panels / per_task)
        .into_par_iter()
        .for_each(|t| {
            for u in t * per_task..(t + 1) * per_task {
                let (ti, p) = (u / panels, u % panels);
                let r0 = ti * MR;
                let nrows = MR.min(rows - r0);
                let ncols = NR.min(out - p * NR);
                // SAFETY: rows r0..r0+nrows and columns 32p..32p+ncols of y belong to this task;
                // the panel holds k4 groups of 128 bytes; each x row holds k4·4 bytes.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    tile(
                        k4,
                        &xq[r0 * k4 * 4..],
                        &sx[r0..r0 + nrows],
                        &w.q[p * k4 * NR * 4..],
                        &w.colsum[p * NR..],
                        &w.scale[p * NR..],
                        bias.map(|b| &b[p * NR..p * NR + ncols]),
                        yp.get().add(r0 * out + p * NR),
                        out,
                        nrows,
                        ncols,
                    )
                };
            }
        });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    k4: usize,
    xq: &[u8],
    sx: &[f32],
    wq: &[i8],
    colsum: &[i32],
    sw: &[f32],
    bias: Option<&[f32]>,
    y: *mut f32,
    y_rs: usize,
    nrows: usize,
    ncols: usize,
) {
    let mut lo = [_mm512_setzero_si512(); MR];
    let mut hi = [_mm512_setzero_si512(); MR];
    // Rows past nrows repeat row 0 (computed, not stored).
    let rows: [*const u8; MR] =
        std::array::from_fn(|i| xq.as_ptr().add((if i < nrows { i } else { 0 }) * k4 * 4));
    let wp = wq.as_ptr();
    for t in 0..k4 {
        let w0 = _mm512_loadu_si512(wp.add(t * NR * 4) as *const _);
        let w1 = _mm512_loadu_si512(wp.add(t * NR * 4 + 64) as *const _);
        for i in 0..MR {
            let a = _mm512_set1_epi32((rows[i].add(4 * t) as *const i32).read_unaligned());
            lo[i] = _mm512_dpbusd_epi32(lo[i], a, w0);
            hi[i] = _mm512_dpbusd_epi32(hi[i], a, w1);
        }
    }
    let m0: u16 = if ncols >= 16 {
        0xffff
    } else {
        ((1u32 << ncols) - 1) as u16
    };
    let m1: u16 = if ncols >= 32 {
        0xffff
    } else if ncols > 16 {
        ((1u32 << (ncols - 16)) - 1) as u16
    } else {
        0
    };
    let c128 = _mm512_set1_epi32(128);
    let z0 = _mm512_mullo_epi32(_mm512_loadu_si512(colsum.as_ptr() as *const _), c128);
    let z1 = _mm512_mullo_epi32(
        _mm512_loadu_si512(colsum.as_ptr().add(16) as *const _),
        c128,
    );
    let (s0, s1) = (
        _mm512_loadu_ps(sw.as_ptr()),
        _mm512_loadu_ps(sw.as_ptr().add(16)),
    );
    let (b0, b1) = match bias {
        Some(b) => (
            _mm512_maskz_loadu_ps(m0, b.as_ptr()),
            _mm512_maskz_loadu_ps(m1, b.as_ptr().add(16)),
        ),
        None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
    };
    for i in 0..nrows {
        let r = _mm512_set1_ps(sx[i]);
        let v0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(lo[i], z0));
        let v1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(hi[i], z1));
        let v0 = _mm512_fmadd_ps(v0, _mm512_mul_ps(r, s0), b0);
        let v1 = _mm512_fmadd_ps(v1, _mm512_mul_ps(r, s1), b1);
        let p = y.add(i * y_rs);
        _mm512_mask_storeu_ps(p, m0, v0);
        _mm512_mask_storeu_ps(p.add(16), m1, v1);
    }
}
