//! Scaled-dot-product attention, three ways. q (B, Lq, H·D), k and v (B, Lk, Hkv·D) →
//! out (B, Lq, H·D); heads are read in place through strides. Query head h reads key/value
//! head h / (H / Hkv) (grouped-query attention); k and v may hold more rows per batch item
//! than Lk (`kv_rows`: a KV cache's capacity, of which Lk are filled); causal attention lets
//! query i see keys j ≤ i + (Lk − Lq) (the queries are the last Lq positions, as in a decode
//! step); an optional additive bias (`AttnBias`) is added to the scaled scores.
//!
//! - [`attention_naive`]: materialize each head's Lq×Lk scores, softmax them in place (the
//!   normalized probabilities are written), multiply by V. The reference.
//! - [`attention_fused_softmax`] (Chen et al. §3.2.1, "partially fused softmax"): the scores are
//!   written once; a first pass reads each row for its max and sum of exponentials; a second
//!   pass folds exponentiation and normalization into the product with V, a cache-sized row
//!   tile at a time, so normalized probabilities never reach memory.
//! - [`attention_flash`]: tiles of queries × keys with an online softmax; extra memory is a few
//!   tiles per thread, independent of L².

use crate::matmul::{matmul, matmul_ptr, MatRef, Par};
use crate::tuning::tuning;
use crate::{simd, SendPtr};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct AttnGeom {
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub lq: usize,
    pub lk: usize,
    pub scale: f32,
    pub causal: bool,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Rows per batch item of k and v (≥ lk).
    pub kv_rows: usize,
}

/// An additive attention bias: element (b, h, i, j) at `b·b_stride + h·h_stride +
/// i·row_stride + j` (a stride of 0 broadcasts that axis: a padding mask has row_stride 0),
/// j < lk.
#[derive(Clone, Copy, Debug)]
pub struct AttnBias<'a> {
    pub data: &'a [f32],
    pub b_stride: usize,
    pub h_stride: usize,
    pub row_stride: usize,
}

impl AttnBias<'_> {
    /// Row i of head (b, h): `lk` entries.
    fn row(&self, b: usize, h: usize, i: usize, lk: usize) -> &[f32] {
        &self.data[b * self.b_stride + h * self.h_stride + i * self.row_stride..][..lk]
    }
}

impl AttnGeom {
    /// Multi-head attention over contiguous k and v (kv_heads = heads, kv_rows = lk).
    pub fn new(
        batch: usize,
        heads: usize,
        head_dim: usize,
        lq: usize,
        lk: usize,
        scale: f32,
        causal: bool,
    ) -> Self {
        Self {
            batch,
            heads,
            head_dim,
            lq,
            lk,
            scale,
            causal,
            kv_heads: heads,
            kv_rows: lk,
        }
    }
    fn hd(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Width of a k / v row.
    pub fn kvd(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    /// Offset of key `key` of the key/value head query head h reads, batch b.
    pub(crate) fn kv_off(&self, b: usize, h: usize, key: usize) -> usize {
        let group = self.heads / self.kv_heads;
        (b * self.kv_rows + key) * self.kvd() + (h / group) * self.head_dim
    }
    /// Keys before the first query's position: Lk − Lq when causal (the queries are the last
    /// Lq positions), else 0.
    pub(crate) fn causal_offset(&self) -> usize {
        if self.causal {
            self.lk.saturating_sub(self.lq)
        } else {
            0
        }
    }
    fn check(&self, q: &[f32], k: &[f32], v: &[f32], out: &[f32]) {
        let hd = self.hd();
        assert!(
            self.kv_heads > 0 && self.heads % self.kv_heads == 0,
            "attention heads {} not a multiple of kv heads {}",
            self.heads,
            self.kv_heads
        );
        assert!(self.kv_rows >= self.lk, "attention kv rows below lk");
        assert_eq!(q.len(), self.batch * self.lq * hd, "attention q length");
        let kv = self.batch * self.kv_rows * self.kvd();
        assert_eq!(k.len(), kv, "attention k length");
        assert_eq!(v.len(), kv, "attention v length");
        assert_eq!(out.len(), self.batch * self.lq * hd, "attention out length");
        assert!(self.scale > 0.0, "attention scale must be positive");
    }
    /// Query rows [r0, r0+rows) of head (b, h) as a strided view.
    fn q_rows<'a>(&self, q: &'a [f32], b: usize, h: usize, r0: usize, rows: usize) -> MatRef<'a> {
        let off = (b * self.lq + r0) * self.hd() + h * self.head_dim;
        MatRef {
            data: &q[off..],
            rows,
            cols: self.head_dim,
            rs: self.hd(),
            cs: 1,
        }
    }
    /// Keys [c0, c0+cols) of head (b, h), transposed: (D × cols).
    fn k_t<'a>(&self, k: &'a [f32], b: usize, h: usize, c0: usize, cols: usize) -> MatRef<'a> {
        MatRef {
            data: &k[self.kv_off(b, h, c0)..],
            rows: self.head_dim,
            cols,
            rs: 1,
            cs: self.kvd(),
        }
    }
    /// Values [c0, c0+cols) of head (b, h): (cols × D).
    fn v_rows<'a>(&self, v: &'a [f32], b: usize, h: usize, c0: usize, cols: usize) -> MatRef<'a> {
        MatRef {
            data: &v[self.kv_off(b, h, c0)..],
            rows: cols,
            cols: self.head_dim,
            rs: self.kvd(),
            cs: 1,
        }
    }
    /// Keys a query row may see (causal masking: keys up to the row's position).
    pub(crate) fn valid(&self, row: usize) -> usize {
        if self.causal {
            (row + 1 + self.causal_offset()).min(self.lk)
        } else {
            self.lk
        }
    }
}

/// Which attention kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionImpl {
    Naive,
    FusedSoftmax,
    Flash,
}

impl AttentionImpl {
    pub const NAMES: [&'static str; 3] = ["naive", "fused-softmax", "flash"];
    pub fn name(self) -> &'static str {
        match self {
            AttentionImpl::Naive => "naive",
            AttentionImpl::FusedSoftmax => "fused-softmax",
            AttentionImpl::Flash => "flash",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "naive" => Some(Self::Naive),
            "fused-softmax" => Some(Self::FusedSoftmax),
            "flash" => Some(Self::Flash),
            _ => None,
        }
    }
    /// The fastest kernel for a shape, as measured by `prism bench` on AVX-512 CPUs: flash
    /// wherever there are enough keys to tile; naive for short sequences (thresholds:
    /// [`Tuning::attn_flash_min_keys`](crate::tuning::Tuning::attn_flash_min_keys) and
    /// [`attn_flash_min_queries`](crate::tuning::Tuning::attn_flash_min_queries)).
    pub fn auto(g: &AttnGeom) -> Self {
        let t = tuning();
        if g.lk >= t.attn_flash_min_keys && g.lq >= t.attn_flash_min_queries {
            AttentionImpl::Flash
        } else {
            AttentionImpl::Naive
        }
    }
}

/// Run `imp` (flash with a bias runs the GEMM-tiled flash kernel: the AVX-512 / AVX2 one takes
/// no bias).
pub fn attention(
    imp: AttentionImpl,
    g: &AttnGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    attention_biased(imp, g, q, k, v, None, out)
}

/// [`attention`] with an optional additive bias.
pub fn attention_biased(
    imp: AttentionImpl,
    g: &AttnGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<AttnBias>,
    out: &mut [f32],
) {
    match (imp, bias) {
        (AttentionImpl::Naive, _) => attention_naive(g, q, k, v, bias, out),
        (AttentionImpl::FusedSoftmax, _) => attention_fused_softmax(g, q, k, v, bias, out),
        (AttentionImpl::Flash, None) => attention_flash(g, q, k, v, out),
        (AttentionImpl::Flash, Some(_)) => attention_flash_gemm(g, q, k, v, bias, out),
    }
}

/// Add `bias / scale` to raw scores (the kernels scale inside the softmax, so the scaled
/// score gains exactly `bias`).
#[inline]
fn add_bias(row: &mut [f32], bias: &[f32], scale: f32) {
    let inv = 1.0 / scale;
    for (s, &b) in row.iter_mut().zip(bias) {
        *s += b * inv;
    }
}

/// Scratch buffers (floats) a kernel takes from the kernels' pool (which keeps them): the
/// AVX-512 / AVX2 flash kernel's transposed keys and padded values.
pub fn scratch_requests(imp: AttentionImpl, g: &AttnGeom) -> Vec<usize> {
    if imp == AttentionImpl::Flash && crate::flash512::available() {
        crate::flash512::pooled_floats(g).to_vec()
    } else {
        vec![]
    }
}

/// Transient scratch floats a kernel holds at once on `threads` threads (besides
/// [`scratch_requests`]); `biased`: the call has a bias (flash then runs the GEMM tiles).
pub fn workspace_floats(imp: AttentionImpl, g: &AttnGeom, biased: bool, threads: usize) -> usize {
    let tasks = g.batch * g.heads;
    match imp {
        AttentionImpl::Flash if crate::flash512::available() && !biased => {
            threads * crate::flash512::tile_floats(g)
        }
        AttentionImpl::Naive => {
            let concurrent = if tasks >= threads { threads } else { 1 };
            concurrent * g.lq * g.lk
        }
        AttentionImpl::FusedSoftmax => {
            let t = tuning();
            threads * (t.fused_softmax_rows.min(g.lq) * g.lk + t.fused_softmax_tile * g.lk)
        }
        AttentionImpl::Flash => {
            let (bq, bk) = (tuning().flash_gemm_bq, tuning().flash_gemm_bk);
            threads * (bq * bk + bq * g.head_dim + 2 * bq)
        }
    }
}

/// Numerically stable softmax of one row in place (entries past `valid` become 0).
#[inline]
pub fn softmax_row(row: &mut [f32], valid: usize, scale: f32) {
    let (live, dead) = row.split_at_mut(valid);
    let m = simd::max(live) * scale;
    let sum = simd::exp_sum(live, scale, m);
    simd::scale(live, 1.0 / sum);
    dead.fill(0.0);
}

/// Naive attention: materialize each head's Lq×Lk scores, softmax, multiply by V.
pub fn attention_naive(
    g: &AttnGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<AttnBias>,
    out: &mut [f32],
) {
    g.check(q, k, v, out);
    let hd = g.hd();
    let tasks = g.batch * g.heads;
    let threads = rayon::current_num_threads();
    let outp = SendPtr(out.as_mut_ptr());
    let run = |t: usize, par: Par, scores: &mut Vec<f32>| {
        let (b, h) = (t / g.heads, t % g.heads);
        scores.resize(g.lq * g.lk, 0.0);
        matmul(
            scores,
            g.lk,
            g.q_rows(q, b, h, 0, g.lq),
            g.k_t(k, b, h, 0, g.lk),
            false,
            par,
        );
        let softmax = |(i, row): (usize, &mut [f32])| {
            if let Some(bias) = &bias {
                add_bias(row, bias.row(b, h, i, g.lk), g.scale);
            }
            softmax_row(row, g.valid(i), g.scale)
        };
        if par == Par::Pool {
            scores.par_chunks_mut(g.lk).enumerate().for_each(softmax);
        } else {
            scores.chunks_mut(g.lk).enumerate().for_each(softmax);
        }
        // SAFETY: task t writes only rows b·Lq..(b+1)·Lq, columns h·D..(h+1)·D of out (in
        // bounds: lengths checked above); tasks have distinct (b, h), so the regions are
        // disjoint, and out outlives the tasks.
        unsafe {
            let o = outp.get().add(b * g.lq * hd + h * g.head_dim);
            matmul_ptr(
                o,
                hd,
                MatRef::row_major(scores, g.lq, g.lk),
                g.v_rows(v, b, h, 0, g.lk),
                false,
                par,
            )
        };
    };
    if tasks >= threads {
        (0..tasks)
            .into_par_iter()
            .for_each_init(Vec::new, |scores, t| run(t, Par::Seq, scores));
    } else {
        let mut scores = Vec::new();
        for t in 0..tasks {
            run(t, Par::Pool, &mut scores);
        }
    }
}

/// Partially fused softmax (see the module docs). A task holds the scores of
/// [`fused_softmax_rows`](crate::tuning::Tuning::fused_softmax_rows) query rows and multiplies
/// [`fused_softmax_tile`](crate::tuning::Tuning::fused_softmax_tile) rows of probabilities by V
/// at a time.
pub fn attention_fused_softmax(
    g: &AttnGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<AttnBias>,
    out: &mut [f32],
) {
    g.check(q, k, v, out);
    let hd = g.hd();
    let (fs_rows, fs_tile) = (tuning().fused_softmax_rows, tuning().fused_softmax_tile);
    let blocks = g.lq.div_ceil(fs_rows);
    let outp = SendPtr(out.as_mut_ptr());
    (0..g.batch * g.heads * blocks)
        .into_par_iter()
        .for_each_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(scores, tile, stats), t| {
                let (bh, blk) = (t / blocks, t % blocks);
                let (b, h) = (bh / g.heads, bh % g.heads);
                let r0 = blk * fs_rows;
                let rows = fs_rows.min(g.lq - r0);
                scores.resize(rows * g.lk, 0.0);
                matmul(
                    scores,
                    g.lk,
                    g.q_rows(q, b, h, r0, rows),
                    g.k_t(k, b, h, 0, g.lk),
                    false,
                    Par::Seq,
                );
                // Pass 1: per-row max and Σ exp, reading the scores only.
                if let Some(bias) = &bias {
                    for (i, row) in scores.chunks_mut(g.lk).enumerate() {
                        add_bias(row, bias.row(b, h, r0 + i, g.lk), g.scale);
                    }
                }
                stats.clear();
                for (i, row) in scores.chunks(g.lk).enumerate() {
                    let live = &row[..g.valid(r0 + i)];
                    let m = simd::max(live) * g.scale;
                    stats.push((m, 1.0 / simd::exp_sum_nostore(live, g.scale, m)));
                }
                // Pass 2: exponentiate and normalize a tile of rows into cache, multiply by V.
                tile.resize(fs_tile * g.lk, 0.0);
                let mut i0 = 0;
                while i0 < rows {
                    let n = fs_tile.min(rows - i0);
                    for i in 0..n {
                        let (m, inv) = stats[i0 + i];
                        let valid = g.valid(r0 + i0 + i);
                        let src = &scores[(i0 + i) * g.lk..(i0 + i) * g.lk + valid];
                        let dst = &mut tile[i * g.lk..(i + 1) * g.lk];
                        simd::exp_into(src, &mut dst[..valid], g.scale, m, inv);
                        dst[valid..].fill(0.0);
                    }
                    // SAFETY: this task alone writes rows r0+i0..r0+i0+n, head h, of batch b.
                    unsafe {
                        let o = outp.get().add((b * g.lq + r0 + i0) * hd + h * g.head_dim);
                        matmul_ptr(
                            o,
                            hd,
                            MatRef::row_major(&tile[..n * g.lk], n, g.lk),
                            g.v_rows(v, b, h, 0, g.lk),
                            false,
                            Par::Seq,
                        );
                    }
                    i0 += n;
                }
            },
        );
}

/// Flash attention (see the module docs): AVX-512 or AVX2 micro-kernels ([`crate::flash512`])
/// where the CPU has them, else tiles multiplied through the GEMM crate.
pub fn attention_flash(g: &AttnGeom, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    if crate::flash512::available() {
        g.check(q, k, v, out);
        crate::flash512::attention(g, q, k, v, out);
    } else {
        attention_flash_gemm(g, q, k, v, None, out);
    }
}

/// Flash attention with the tiles multiplied through the GEMM crate (any CPU): tasks of
/// [`flash_gemm_bq`](crate::tuning::Tuning::flash_gemm_bq) queries, tiles of
/// [`flash_gemm_bk`](crate::tuning::Tuning::flash_gemm_bk) keys (the scores tile sized to stay
/// in L2).
pub fn attention_flash_gemm(
    g: &AttnGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<AttnBias>,
    out: &mut [f32],
) {
    g.check(q, k, v, out);
    let hd = g.hd();
    let d = g.head_dim;
    let (fl_bq, fl_bk) = (tuning().flash_gemm_bq, tuning().flash_gemm_bk);
    let blocks = g.lq.div_ceil(fl_bq);
    let outp = SendPtr(out.as_mut_ptr());
    (0..g.batch * g.heads * blocks)
        .into_par_iter()
        .for_each_init(
            || {
                (
                    vec![0f32; fl_bq * fl_bk],
                    vec![0f32; fl_bq * d],
                    vec![0f32; fl_bq],
                    vec![0f32; fl_bq],
                )
            },
            |(s, acc, m, l), t| {
                let (bh, blk) = (t / blocks, t % blocks);
                let (b, h) = (bh / g.heads, bh % g.heads);
                let r0 = blk * fl_bq;
                let rows = fl_bq.min(g.lq - r0);
                let acc = &mut acc[..rows * d];
                acc.fill(0.0);
                m[..rows].fill(f32::NEG_INFINITY);
                l[..rows].fill(0.0);
                let kmax = g.valid(r0 + rows - 1);
                let mut c0 = 0;
                while c0 < kmax {
                    let cols = fl_bk.min(kmax - c0);
                    let st = &mut s[..rows * cols];
                    matmul(
                        st,
                        cols,
                        g.q_rows(q, b, h, r0, rows),
                        g.k_t(k, b, h, c0, cols),
                        false,
                        Par::Seq,
                    );
                    for i in 0..rows {
                        let valid = g.valid(r0 + i).saturating_sub(c0).min(cols);
                        let row = &mut st[i * cols..(i + 1) * cols];
                        if let Some(bias) = &bias {
                            let br = &bias.row(b, h, r0 + i, g.lk)[c0..c0 + cols];
                            add_bias(row, br, g.scale);
                        }
                        if valid == 0 {
                            row.fill(0.0);
                            continue;
                        }
                        let (live, dead) = row.split_at_mut(valid);
                        let m_new = m[i].max(simd::max(live) * g.scale);
                        let alpha = (m[i] - m_new).exp(); // 0 on the first tile (m = −∞)
                        let sum = simd::exp_sum(live, g.scale, m_new);
                        dead.fill(0.0);
                        l[i] = l[i] * alpha + sum;
                        m[i] = m_new;
                        if alpha != 1.0 {
                            simd::scale(&mut acc[i * d..(i + 1) * d], alpha);
                        }
                    }
                    matmul(
                        acc,
                        d,
                        MatRef::row_major(st, rows, cols),
                        g.v_rows(v, b, h, c0, cols),
                        true,
                        Par::Seq,
                    );
                    c0 += cols;
                }
                for i in 0..rows {
                    let inv = 1.0 / l[i];
                    // SAFETY: this task alone writes row r0+i, head h, of batch b (in bounds).
                    unsafe {
                        let o = outp.get().add((b * g.lq + r0 + i) * hd + h * d);
                        for j in 0..d {
                            *o.add(j) = acc[i * d + j] * inv;
                        }
                    }
                }
            },
        );
}
