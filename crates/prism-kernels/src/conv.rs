//! 2-D convolution as im2col + GEMM, in row bands so the column buffer stays bounded.

use crate::matmul::{matmul, matmul_ptr, MatRef, Par};
use crate::scratch::Scratch;
use crate::SendPtr;
use rayon::prelude::*;

/// A convolution's weights as stored: f32, or 16-bit (widened to f32 as the kernel reads
/// them).
#[derive(Clone, Copy)]
pub enum ConvWeights<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
    F16(&'a [half::f16]),
}

impl ConvWeights<'_> {
    pub fn len(&self) -> usize {
        match self {
            ConvWeights::F32(v) => v.len(),
            ConvWeights::Bf16(v) => v.len(),
            ConvWeights::F16(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Elements `range` widened to f32 into `dst` (same length).
    pub fn widen_into(&self, start: usize, dst: &mut [f32]) {
        let end = start + dst.len();
        match self {
            ConvWeights::F32(v) => dst.copy_from_slice(&v[start..end]),
            ConvWeights::Bf16(v) => {
                for (d, s) in dst.iter_mut().zip(&v[start..end]) {
                    *d = s.to_f32();
                }
            }
            ConvWeights::F16(v) => {
                for (d, s) in dst.iter_mut().zip(&v[start..end]) {
                    *d = s.to_f32();
                }
            }
        }
    }
}

/// Geometry of one conv2d call (NCHW input, weight (cout, cin, kh, kw)).
#[derive(Clone, Copy, Debug)]
pub struct Conv2dGeom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    /// top, bottom, left, right
    pub pad: [usize; 4],
}

impl Conv2dGeom {
    /// A 3×3, stride-1 convolution padded by 1 on every side (output the input's size): the
    /// layers Winograd runs.
    pub fn same3x3(n: usize, cin: usize, h: usize, w: usize, cout: usize) -> Self {
        Self {
            n,
            cin,
            h,
            w,
            cout,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: [1; 4],
        }
    }
    pub fn out_hw(&self) -> (usize, usize) {
        let ho = (self.h + self.pad[0] + self.pad[1] - self.kh) / self.stride + 1;
        let wo = (self.w + self.pad[2] + self.pad[3] - self.kw) / self.stride + 1;
        (ho, wo)
    }
    pub fn out_len(&self) -> usize {
        let (ho, wo) = self.out_hw();
        self.n * self.cout * ho * wo
    }
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == [0; 4]
    }
}

/// Column buffer budget per band (floats): 16 Mi floats = 64 MiB.
const COL_BUDGET: usize = 16 << 20;

/// Output planes below this many pixels run as one product over the whole batch.
const BATCHED_PLANE: usize = 256;

/// Whether [`conv2d_im2col`] builds one column matrix for all images (small planes).
fn batched_columns(g: &Conv2dGeom) -> bool {
    let (ho, wo) = g.out_hw();
    let kk = g.cin * g.kh * g.kw;
    !g.is_pointwise() && g.n > 1 && ho * wo < BATCHED_PLANE && kk * g.n * ho * wo <= COL_BUDGET
}

/// The scratch buffers (floats) [`conv2d_im2col`] takes, in order.
fn im2col_requests(g: &Conv2dGeom) -> Vec<usize> {
    let (ho, wo) = g.out_hw();
    let kk = g.cin * g.kh * g.kw;
    if g.is_pointwise() {
        vec![]
    } else if batched_columns(g) {
        vec![kk * g.n * ho * wo, g.cout * g.n * ho * wo]
    } else {
        vec![im2col_workspace_floats(g)]
    }
}

/// Scratch floats [`conv2d_im2col`] allocates for one call (its column buffer).
pub fn im2col_workspace_floats(g: &Conv2dGeom) -> usize {
    if g.is_pointwise() {
        return 0;
    }
    if batched_columns(g) {
        return im2col_requests(g).iter().sum();
    }
    let (ho, wo) = g.out_hw();
    let kk = g.cin * g.kh * g.kw;
    let band_rows = (COL_BUDGET / (kk * wo).max(1)).clamp(1, ho);
    kk * band_rows * wo
}

/// y = conv2d(x, w) + bias. x: (n, cin, h, w); y: (n, cout, ho, wo).
pub fn conv2d_im2col(g: &Conv2dGeom, x: &[f32], wt: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    conv2d_im2col_res(g, x, wt, bias, None, y)
}

/// [`conv2d_im2col`] plus a residual of y's shape, folded into the output's initial value.
pub fn conv2d_im2col_res(
    g: &Conv2dGeom,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
) {
    let (ho, wo) = g.out_hw();
    let kk = g.cin * g.kh * g.kw;
    assert_eq!(x.len(), g.n * g.cin * g.h * g.w, "conv2d input length");
    assert_eq!(wt.len(), g.cout * kk, "conv2d weight length");
    assert_eq!(y.len(), g.out_len(), "conv2d output length");
    let hw_out = ho * wo;
    // Start from the bias (or zero) and accumulate the product into it.
    for img in y.chunks_exact_mut(g.cout * hw_out) {
        for (co, plane) in img.chunks_exact_mut(hw_out).enumerate() {
            plane.fill(bias.map_or(0.0, |b| b[co]));
        }
    }
    if let Some(r) = residual {
        assert_eq!(r.len(), y.len(), "conv2d residual length");
        crate::add_assign(y, r);
    }
    let wmat = MatRef::row_major(wt, g.cout, kk);
    if g.is_pointwise() {
        for b in 0..g.n {
            let xs = &x[b * g.cin * g.h * g.w..(b + 1) * g.cin * g.h * g.w];
            let ys = &mut y[b * g.cout * hw_out..(b + 1) * g.cout * hw_out];
            matmul(
                ys,
                hw_out,
                wmat,
                MatRef::row_major(xs, g.cin, hw_out),
                true,
                Par::Pool,
            );
        }
        return;
    }
    if batched_columns(g) {
        // Small planes: one product over every image's columns (N = n·ho·wo), which the
        // GEMM runs far better than n products of ho·wo columns (1280 → 1280 at 8×8, batch
        // 2: 209 against 169 GFLOP/s), then added into y image by image.
        let ncol = hw_out;
        let mut col = Scratch::take(kk * g.n * ncol);
        let mut z = Scratch::take(g.cout * g.n * ncol);
        for b in 0..g.n {
            let xs = &x[b * g.cin * g.h * g.w..(b + 1) * g.cin * g.h * g.w];
            // Image b's columns, in place: rows g.n·ncol apart, starting at column b·ncol.
            im2col_band(g, xs, 0, ho, &mut col[b * ncol..], g.n * ncol);
        }
        // Blocks of output channels, two per thread, each a single-threaded product: every
        // thread streams only its rows of the weights. The gemm crate's own threading of
        // this product was 9–28% slower at 4×4 and 8×8 (1280 → 1280 at 8×8, batch 2: 15.2
        // against 13.9 ms; at 4×4 8.9 against 6.6 ms; in one process, alternating).
        let nc = g.n * ncol;
        let mb = g
            .cout
            .div_ceil(2 * rayon::current_num_threads().max(1))
            .max(1);
        z[..g.cout * nc]
            .par_chunks_mut(mb * nc)
            .enumerate()
            .for_each(|(i, zc)| {
                let (r0, rows) = (i * mb, zc.len() / nc);
                matmul(
                    zc,
                    nc,
                    MatRef::row_major(&wt[r0 * kk..(r0 + rows) * kk], rows, kk),
                    MatRef::row_major(&col, kk, nc),
                    false,
                    Par::Seq,
                );
            });
        for (b, img) in y.chunks_exact_mut(g.cout * hw_out).enumerate() {
            for (co, plane) in img.chunks_exact_mut(hw_out).enumerate() {
                let src = &z[co * g.n * ncol + b * ncol..][..ncol];
                for (v, s) in plane.iter_mut().zip(src) {
                    *v += s;
                }
            }
        }
        return;
    }
    let band_rows = (COL_BUDGET / (kk * wo).max(1)).clamp(1, ho);
    let mut col = Scratch::take(kk * band_rows * wo);
    for b in 0..g.n {
        let xs = &x[b * g.cin * g.h * g.w..(b + 1) * g.cin * g.h * g.w];
        let ys = &mut y[b * g.cout * hw_out..(b + 1) * g.cout * hw_out];
        let mut r0 = 0;
        while r0 < ho {
            let rows = band_rows.min(ho - r0);
            let ncol = rows * wo;
            im2col_band(g, xs, r0, rows, &mut col[..kk * ncol], ncol);
            matmul(
                &mut ys[r0 * wo..],
                hw_out,
                wmat,
                MatRef::row_major(&col[..kk * ncol], kk, ncol),
                true,
                Par::Pool,
            );
            r0 += rows;
        }
    }
}

/// Fill col (cin·kh·kw rows of rows·wo columns, rows `col_rs` apart) for output rows
/// r0..r0+rows of one image.
fn im2col_band(g: &Conv2dGeom, x: &[f32], r0: usize, rows: usize, col: &mut [f32], col_rs: usize) {
    let (_, wo) = g.out_hw();
    let ncol = rows * wo;
    let (h, w, s) = (g.h as isize, g.w as isize, g.stride as isize);
    let (pt, pl) = (g.pad[0] as isize, g.pad[2] as isize);
    col.par_chunks_mut(g.kh * g.kw * col_rs)
        .enumerate()
        .for_each(|(ci, cblock)| {
            let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let row = &mut cblock[(ki * g.kw + kj) * col_rs..][..ncol];
                    for r in 0..rows {
                        let iy = (r0 + r) as isize * s + ki as isize - pt;
                        let dst = &mut row[r * wo..(r + 1) * wo];
                        if iy < 0 || iy >= h {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                        if s == 1 {
                            // Contiguous run with zero borders.
                            let off = kj as isize - pl; // ix = ox + off
                            let lo = (-off).clamp(0, wo as isize) as usize;
                            let hi = (w - off).clamp(0, wo as isize) as usize;
                            dst[..lo].fill(0.0);
                            if hi > lo {
                                let start = (lo as isize + off) as usize;
                                dst[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                            }
                            if hi < wo {
                                dst[hi.max(lo)..].fill(0.0);
                            }
                        } else {
                            for (ox, d) in dst.iter_mut().enumerate() {
                                let ix = ox as isize * s + kj as isize - pl;
                                *d = if ix < 0 || ix >= w {
                                    0.0
                                } else {
                                    src[ix as usize]
                                };
                            }
                        }
                    }
                }
            }
        });
}

/// Which convolution kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvImpl {
    Im2col,
    /// Winograd F(2×2, 3×3): 4×4 input tiles, 16 products per 4 outputs (2.25× fewer).
    Winograd2,
    /// Winograd F(4×4, 3×3): 6×6 input tiles, 36 products per 16 outputs (4× fewer).
    Winograd4,
}

impl ConvImpl {
    pub const NAMES: [&'static str; 3] = ["im2col", "winograd2", "winograd4"];
    pub fn name(self) -> &'static str {
        match self {
            ConvImpl::Im2col => "im2col",
            ConvImpl::Winograd2 => "winograd2",
            ConvImpl::Winograd4 => "winograd4",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "im2col" => Some(Self::Im2col),
            "winograd2" => Some(Self::Winograd2),
            "winograd4" => Some(Self::Winograd4),
            _ => None,
        }
    }
    /// Can this kernel run the convolution? (Winograd: 3×3, stride 1.)
    pub fn supports(self, g: &Conv2dGeom) -> bool {
        match self {
            ConvImpl::Im2col => true,
            ConvImpl::Winograd2 | ConvImpl::Winograd4 => g.kh == 3 && g.kw == 3 && g.stride == 1,
        }
    }
    /// The automatic choice for 3×3 stride-1 convolutions with at least 32 channels in and
    /// out: F(4×4, 3×3) where there are enough 4×4 output tiles to amortize the filter
    /// transform (≥ 64), else F(2×2, 3×3) where there are ≥ 128 2×2 tiles, else im2col. Both
    /// Winograd errors against an f64 direct convolution stay within the model tolerance
    /// (`tests/kernels.rs` checks SD's channel counts). Crossovers measured with `prism bench`
    /// on conv3x3_{640,1280}_{8,12,16,32}_b{1,2}: at 1280 channels, 16², batch 2 (the SD UNet's
    /// third level at 512²) F(2×2) takes 59 ms against 77 ms for im2col and 78 ms for
    /// F(4×4); at 12² and 8² im2col wins.
    pub fn auto(g: &Conv2dGeom) -> Self {
        Self::auto_for(g, false)
    }

    /// [`ConvImpl::auto`] where `filters_kept` says whether the layer's Winograd filters are
    /// transformed once and kept ([`winograd_filters`], for a graph that runs many times on
    /// the same weights). Without the per-call filter transform, F(2×2, 3×3) pays from 32
    /// 2×2 tiles: at 1280 channels, 8², batch 2 (the UNet's third level at 256²) it took
    /// 9.3 ms against 16.6 ms for im2col (2560 → 1280: 16 against 33 ms); at 4² (8 tiles)
    /// im2col stays faster, 5.5 against 8.3 ms.
    pub fn auto_for(g: &Conv2dGeom, filters_kept: bool) -> Self {
        let (ho, wo) = g.out_hw();
        let tiles4 = g.n * ho.div_ceil(4) * wo.div_ceil(4);
        let tiles2 = g.n * ho.div_ceil(2) * wo.div_ceil(2);
        let wide = g.cin >= 32 && g.cout >= 32;
        let min2 = if filters_kept { 32 } else { 128 };
        if wide && ConvImpl::Winograd4.supports(g) && tiles4 >= 64 {
            ConvImpl::Winograd4
        } else if wide && ConvImpl::Winograd2.supports(g) && tiles2 >= min2 {
            ConvImpl::Winograd2
        } else {
            ConvImpl::Im2col
        }
    }

    /// Whether this is a Winograd kernel that runs `g` (and so has filters to transform).
    pub fn is_winograd(self, g: &Conv2dGeom) -> bool {
        self != ConvImpl::Im2col && self.supports(g)
    }
}

/// y = conv2d(x, w) + bias with the chosen kernel (falls back to im2col where the kernel
/// does not apply).
pub fn conv2d(
    imp: ConvImpl,
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> ConvImpl {
    conv2d_res(imp, g, x, w, bias, None, y)
}

/// [`conv2d`] plus a residual of y's shape added to the output (a fused residual add).
pub fn conv2d_res(
    imp: ConvImpl,
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
) -> ConvImpl {
    conv2d_stored(imp, g, x, ConvWeights::F32(w), bias, residual, y)
}

/// [`conv2d_res`] on weights as stored. Winograd widens 16-bit filters one output channel at
/// a time inside its filter transform; im2col widens the whole weight into scratch first.
pub fn conv2d_stored(
    imp: ConvImpl,
    g: &Conv2dGeom,
    x: &[f32],
    w: ConvWeights,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
) -> ConvImpl {
    let f = Filters::Raw(w);
    match imp {
        ConvImpl::Winograd2 if imp.supports(g) => winograd::<2, 4, T23>(g, x, f, bias, residual, y),
        ConvImpl::Winograd4 if imp.supports(g) => winograd::<4, 6, T43>(g, x, f, bias, residual, y),
        _ => {
            match w {
                ConvWeights::F32(w) => conv2d_im2col_res(g, x, w, bias, residual, y),
                _ => {
                    let mut wide = Scratch::take(w.len());
                    w.widen_into(0, &mut wide);
                    conv2d_im2col_res(g, x, &wide, bias, residual, y)
                }
            }
            return ConvImpl::Im2col;
        }
    }
    imp
}

/// Floats of a layer's transformed Winograd filters: α² · cout · cin (α = 4 for F(2×2, 3×3),
/// 6 for F(4×4, 3×3)); 0 for im2col.
pub fn winograd_filter_floats(imp: ConvImpl, g: &Conv2dGeom) -> usize {
    match imp {
        ConvImpl::Winograd2 if imp.supports(g) => 16 * g.cout * g.cin,
        ConvImpl::Winograd4 if imp.supports(g) => 36 * g.cout * g.cin,
        _ => 0,
    }
}

/// `imp` is a Winograd kernel that runs `g`, and `u` holds its transformed filters' floats.
fn check_filters(what: &str, imp: ConvImpl, g: &Conv2dGeom, u: &[f32]) {
    assert!(
        imp.is_winograd(g),
        "{what}: {} does not run {g:?}",
        imp.name()
    );
    assert_eq!(
        u.len(),
        winograd_filter_floats(imp, g),
        "{what}: winograd filter length"
    );
}

/// Transform a layer's 3×3 filters for Winograd kernel `imp` into `u`
/// ([`winograd_filter_floats`] long), for [`conv2d_winograd_kept`] to reuse call after call.
pub fn winograd_filters(imp: ConvImpl, g: &Conv2dGeom, w: ConvWeights, u: &mut [f32]) {
    check_filters("winograd_filters", imp, g, u);
    assert_eq!(w.len(), g.cout * g.cin * 9, "winograd weight length");
    match imp {
        ConvImpl::Winograd2 => filter_transform::<2, 4, T23>(g.cin, g.cout, w, u),
        _ => filter_transform::<4, 6, T43>(g.cin, g.cout, w, u),
    }
}

/// [`conv2d_stored`] with Winograd kernel `imp` on filters transformed beforehand by
/// [`winograd_filters`]: the per-call filter transform (α² · cout · cin floats written, a
/// third of a 1280-channel layer's time at 16²) is skipped.
pub fn conv2d_winograd_kept(
    imp: ConvImpl,
    g: &Conv2dGeom,
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
) {
    check_filters("conv2d_winograd_kept", imp, g, u);
    let f = Filters::Kept(u);
    match imp {
        ConvImpl::Winograd2 => winograd::<2, 4, T23>(g, x, f, bias, residual, y),
        _ => winograd::<4, 6, T43>(g, x, f, bias, residual, y),
    }
}

/// Scratch floats a kernel allocates for one call.
pub fn workspace_floats(imp: ConvImpl, g: &Conv2dGeom) -> usize {
    scratch_requests(imp, g).iter().sum()
}

/// The scratch buffers (floats) a kernel takes from the pool, in the order it takes them.
pub fn scratch_requests(imp: ConvImpl, g: &Conv2dGeom) -> Vec<usize> {
    scratch_requests_for(imp, g, false)
}

/// [`scratch_requests`], where `filters_kept` says the Winograd filters come transformed
/// ([`conv2d_winograd_kept`]): no scratch for them.
pub fn scratch_requests_for(imp: ConvImpl, g: &Conv2dGeom, filters_kept: bool) -> Vec<usize> {
    let wino = |a: usize, m: usize| {
        let chunk = wino_chunk(a, m, g);
        let mut r = vec![
            a * a * g.cout * g.cin,
            a * a * g.cin * chunk,
            a * a * g.cout * chunk,
        ];
        if filters_kept {
            r.remove(0);
        }
        r
    };
    match imp {
        ConvImpl::Winograd2 if imp.supports(g) => wino(4, 2),
        ConvImpl::Winograd4 if imp.supports(g) => wino(6, 4),
        _ => im2col_requests(g),
    }
}

/// Winograd F(M×M, 3×3) transforms over A = M + 2: input Bᵀ (A×A), filter G (A×3), output
/// Aᵀ (M×A).
struct Winograd<const M: usize, const A: usize> {
    bt: [[f32; A]; A],
    g: [[f32; 3]; A],
    at: [[f32; A]; M],
}

const F23: Winograd<2, 4> = Winograd {
    bt: [
        [1.0, 0.0, -1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, -1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, -1.0],
    ],
    g: [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ],
    at: [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]],
};

const F43: Winograd<4, 6> = Winograd {
    bt: [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ],
    g: [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ],
    at: [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ],
};

/// A Winograd transform known at compile time: the transform kernels take it as a type, so
/// their matrices are constants after inlining (zero terms vanish, ±1 terms become adds),
/// where a reference argument left runtime loads and zero tests in every lane loop.
trait Transform<const M: usize, const A: usize> {
    const T: Winograd<M, A>;
}
struct T23;
impl Transform<2, 4> for T23 {
    const T: Winograd<2, 4> = F23;
}
struct T43;
impl Transform<4, 6> for T43 {
    const T: Winograd<4, 6> = F43;
}

/// Scratch budget of the transformed input and output tiles per chunk (floats).
const WINO_BUDGET: usize = 16 << 20;

fn wino_chunk(a: usize, m: usize, g: &Conv2dGeom) -> usize {
    let (ho, wo) = g.out_hw();
    let tiles = g.n * ho.div_ceil(m) * wo.div_ceil(m);
    let per_tile = a * a * (g.cin + g.cout);
    (WINO_BUDGET / per_tile.max(1)).clamp(1, tiles)
}

/// Tiles (or filters) transformed together, one f32 lane each: an AVX-512 register.
const LANES: usize = 16;
type Lane = [f32; LANES];

/// a·b + c: one fused multiply-add where the caller's code is compiled with FMA (`FMA`
/// true), a multiply and an add elsewhere (the portable build has no FMA instruction, and
/// `mul_add` would call the C library).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// mat_l · x · mat_rᵀ on LANES independent R2×C2 matrices at once. The matrices are
/// constants, so after inlining the zero terms vanish and the rest are vector FMAs.
#[inline(always)]
fn sandwich<const FMA: bool, const R: usize, const K1: usize, const K2: usize, const C: usize>(
    ml: &[[f32; K1]; R],
    x: &[[Lane; K2]; K1],
    mr: &[[f32; K2]; C],
) -> [[Lane; C]; R] {
    let mut tmp = [[[0f32; LANES]; K2]; R];
    for r in 0..R {
        for k1 in 0..K1 {
            let c = ml[r][k1];
            if c != 0.0 {
                for k2 in 0..K2 {
                    for l in 0..LANES {
                        tmp[r][k2][l] = madd::<FMA>(c, x[k1][k2][l], tmp[r][k2][l]);
                    }
                }
            }
        }
    }
    let mut out = [[[0f32; LANES]; C]; R];
    for r in 0..R {
        for c in 0..C {
            for k2 in 0..K2 {
                let co = mr[c][k2];
                if co != 0.0 {
                    for l in 0..LANES {
                        out[r][c][l] = madd::<FMA>(co, tmp[r][k2][l], out[r][c][l]);
                    }
                }
            }
        }
    }
    out
}

/// Define `$name::<M, A, W>(args) -> ret`, W the [`Transform`], compiled for AVX-512, AVX2+FMA
/// and portable code, picked at run time (the lane loops vectorize to the widest available
/// registers). The body sees `const FMA: bool`: whether its variant fuses multiply-adds.
macro_rules! simd_variants {
    ($name:ident<$($cg:ident),*; $tp:ident: $tb:ident>($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        #[inline(always)]
        fn $name<$(const $cg: usize,)* $tp: $tb<$($cg),*>>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,fma")]
                unsafe fn avx512<$(const $cg: usize,)* $tp: $tb<$($cg),*>>($($arg: $ty),*) -> $ret {
                    const FMA: bool = true;
                    $body
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<$(const $cg: usize,)* $tp: $tb<$($cg),*>>($($arg: $ty),*) -> $ret {
                    const FMA: bool = true;
                    $body
                }
                match crate::simd::level() {
                    // SAFETY: the level was detected at run time.
                    crate::simd::Level::Avx512 => return unsafe { avx512::<$($cg,)* $tp>($($arg),*) },
                    // SAFETY: as above.
                    crate::simd::Level::Avx2 => return unsafe { avx2::<$($cg,)* $tp>($($arg),*) },
                    crate::simd::Level::Portable => {}
                }
            }
            const FMA: bool = false;
            $body
        }
    };
}

/// Store the first `n` floats of a lane at `dst` (a whole-register store when the lane is
/// full).
///
/// # Safety
/// `dst` must be valid for `n` writes.
#[inline(always)]
unsafe fn store_lane(dst: *mut f32, lane: &Lane, n: usize) {
    if n == LANES {
        std::ptr::write_unaligned(dst as *mut Lane, *lane);
    } else {
        std::ptr::copy_nonoverlapping(lane.as_ptr(), dst, n);
    }
}

/// Where a tile starts in its image plane: (image, first input row, first input column,
/// wholly inside the plane so no zero padding applies).
type TileStart = (usize, isize, isize, bool);

simd_variants!(filter_lanes<M, A; W: Transform>(src: &[f32], dst: SendPtr, stride: usize) -> () {
    // src: n ≤ LANES filters of 9 taps each; U[p] lane l goes to dst + p·stride + l.
    let n = src.len() / 9;
    let gl = filter_taps(src);
    let t = &W::T;
    let uu = sandwich::<FMA, _, _, _, _>(&t.g, &gl, &t.g);
    let stream = crate::simd::streams_lines(dst.get(), n, stride);
    for (p, lane) in uu.iter().flatten().enumerate() {
        // SAFETY: the caller owns dst + p·stride .. + n for every p; `stream` says each of
        // these is one whole aligned line.
        unsafe {
            if stream {
                crate::simd::stream_line(dst.get().add(p * stride), lane);
            } else {
                store_lane(dst.get().add(p * stride), lane, n);
            }
        }
    }
});

/// The 3×3 taps of n ≤ LANES filters (9 floats each, consecutive), lane l holding filter l's.
#[inline(always)]
fn filter_taps(src: &[f32]) -> [[Lane; 3]; 3] {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() == crate::simd::Level::Avx512 && src.len() == 9 * LANES {
        // SAFETY: AVX-512F was detected; the 16 filters' 144 taps are in src.
        return unsafe { filter_taps_gather(src) };
    }
    let mut gl = [[[0f32; LANES]; 3]; 3];
    for (l, taps) in src.chunks_exact(9).enumerate() {
        for (e, &v) in taps.iter().enumerate() {
            gl[e / 3][e % 3][l] = v;
        }
    }
    gl
}

/// [`filter_taps`] for 16 filters: one gather per tap (stride 9) instead of 144 scalar
/// stores read back as vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn filter_taps_gather(src: &[f32]) -> [[Lane; 3]; 3] {
    use std::arch::x86_64::*;
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(9),
    );
    let mut gl = [[[0f32; LANES]; 3]; 3];
    for (e, lane) in gl.iter_mut().flatten().enumerate() {
        let v = _mm512_i32gather_ps::<4>(idx, src.as_ptr().add(e));
        _mm512_storeu_ps(lane.as_mut_ptr(), v);
    }
    gl
}

/// The A×A input patches of n ≤ LANES tiles of input channel `ci` of x (n, cin, h, w), lane
/// l holding tile l's patch, zero outside the plane.
#[inline(always)]
fn patches<const A: usize>(
    x: &[f32],
    (ci, cin, h, w): (usize, usize, usize, usize),
    starts: &[TileStart],
) -> [[Lane; A]; A] {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() == crate::simd::Level::Avx512 && x.len() < i32::MAX as usize {
        // SAFETY: AVX-512F was detected; every lane's index is in x or masked off.
        return unsafe { patches_gather::<A>(x, (ci, cin, h, w), starts) };
    }
    let mut d = [[[0f32; LANES]; A]; A];
    for (l, &(img, iy, ix, inside)) in starts.iter().enumerate() {
        let plane = &x[(img * cin + ci) * h * w..(img * cin + ci + 1) * h * w];
        if inside {
            let base = iy as usize * w + ix as usize;
            for (i, drow) in d.iter_mut().enumerate() {
                let src = &plane[base + i * w..base + i * w + A];
                for (j, &v) in src.iter().enumerate() {
                    drow[j][l] = v;
                }
            }
        } else {
            for (i, drow) in d.iter_mut().enumerate() {
                let yy = iy + i as isize;
                for (j, dl) in drow.iter_mut().enumerate() {
                    let xx = ix + j as isize;
                    dl[l] = if yy >= 0 && xx >= 0 && yy < h as isize && xx < w as isize {
                        plane[yy as usize * w + xx as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
    d
}

/// [`patches`] with AVX-512 gathers: one masked gather per patch element for all lanes, the
/// mask the lanes whose element lies inside the plane. x must have fewer than 2³¹ floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn patches_gather<const A: usize>(
    x: &[f32],
    (ci, cin, h, w): (usize, usize, usize, usize),
    starts: &[TileStart],
) -> [[Lane; A]; A] {
    use std::arch::x86_64::*;
    let mut base = [0i32; LANES];
    let (mut iy, mut ix) = ([0i32; LANES], [0i32; LANES]);
    for (l, &(img, y0, x0, _)) in starts.iter().enumerate() {
        // The patch origin's offset in x (may point before the plane: masked lanes only).
        base[l] = (((img * cin + ci) * h) as isize * w as isize + y0 * w as isize + x0) as i32;
        (iy[l], ix[l]) = (y0 as i32, x0 as i32);
    }
    let live: __mmask16 = ((1u32 << starts.len()) - 1) as __mmask16;
    let base = _mm512_loadu_si512(base.as_ptr() as *const _);
    let (iy, ix) = (
        _mm512_loadu_si512(iy.as_ptr() as *const _),
        _mm512_loadu_si512(ix.as_ptr() as *const _),
    );
    let (hv, wv) = (_mm512_set1_epi32(h as i32), _mm512_set1_epi32(w as i32));
    let zero = _mm512_setzero_si512();
    let mut d = [[[0f32; LANES]; A]; A];
    for (i, drow) in d.iter_mut().enumerate() {
        let yy = _mm512_add_epi32(iy, _mm512_set1_epi32(i as i32));
        let row_ok = _mm512_mask_cmpge_epi32_mask(live, yy, zero) & _mm512_cmplt_epi32_mask(yy, hv);
        let row = _mm512_add_epi32(base, _mm512_set1_epi32((i * w) as i32));
        for (j, dl) in drow.iter_mut().enumerate() {
            let xx = _mm512_add_epi32(ix, _mm512_set1_epi32(j as i32));
            let ok =
                _mm512_mask_cmpge_epi32_mask(row_ok, xx, zero) & _mm512_cmplt_epi32_mask(xx, wv);
            let idx = _mm512_add_epi32(row, _mm512_set1_epi32(j as i32));
            let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), ok, idx, x.as_ptr());
            _mm512_storeu_ps(dl.as_mut_ptr(), v);
        }
    }
    d
}

simd_variants!(input_lanes<M, A; W: Transform>(x: &[f32], chan: (usize, usize, usize, usize), starts: &[TileStart], dst: SendPtr, stride: usize) -> () {
    // Input channel ci's A×A patches of n ≤ LANES tiles of (cin, h, w) images, transformed;
    // V[p] lane l goes to dst + p·stride + l.
    let n = starts.len();
    let d = patches::<A>(x, chan, starts);
    let t = &W::T;
    let vv = sandwich::<FMA, _, _, _, _>(&t.bt, &d, &t.bt);
    for (p, lane) in vv.iter().flatten().enumerate() {
        // SAFETY: the caller owns dst + p·stride .. + n for every p.
        unsafe { store_lane(dst.get().add(p * stride), lane, n) };
    }
});

simd_variants!(output_lanes<M, A; W: Transform>(src: &[f32], stride: usize, starts: &[TileStart], pad: (isize, isize), chan: (usize, usize, usize, usize), bias: f32, residual: Option<&[f32]>, y: SendPtr) -> () {
    // M[p] lanes of n ≤ LANES tiles at src[p·stride ..], inverse-transformed, plus bias and
    // residual, cropped and written to output channel co of (cout, ho, wo) images.
    let (co, cout, ho, wo) = chan;
    let n = starts.len();
    let mut mt = [[[0f32; LANES]; A]; A];
    for (p, lane) in mt.iter_mut().flatten().enumerate() {
        let s = &src[p * stride..p * stride + n];
        if let Ok(full) = <&Lane>::try_from(s) {
            *lane = *full;
        } else {
            lane[..n].copy_from_slice(s);
        }
    }
    let t = &W::T;
    let out = sandwich::<FMA, _, _, _, _>(&t.at, &mt, &t.at);
    for (l, &(img, iy, ix, _)) in starts.iter().enumerate() {
        let (oy, ox) = ((iy + pad.0) as usize, (ix + pad.1) as usize);
        for (i, orow) in out.iter().enumerate().take(ho - oy) {
            let row = ((img * cout + co) * ho + oy + i) * wo + ox;
            for (j, ol) in orow.iter().enumerate().take(wo - ox) {
                let r = residual.map_or(0.0, |r| r[row + j]);
                // SAFETY: the caller owns output channel co.
                unsafe { *y.get().add(row + j) = ol[l] + bias + r };
            }
        }
    }
});

/// A Winograd layer's filters: as stored (transformed on this call) or kept transformed.
enum Filters<'a> {
    Raw(ConvWeights<'a>),
    Kept(&'a [f32]),
}

/// U[p][co][ci] = (G g Gᵀ)[p] into `u` (α² · cout · cin), LANES filters (consecutive ci) at
/// a time, output channels in parallel; 16-bit filters are widened one output channel at a
/// time.
///
/// U is written once and read once by the products, and is far larger than the caches (236
/// MB at 1280 → 1280, F(4×4)). Where u and the rows are 64-byte aligned (cin a multiple of
/// 16, `u` from [`Scratch`]) each lane goes out as one streaming store
/// ([`crate::simd::stream_line`]): with plain stores every line was first read for
/// ownership, α² rows at once, and the transform ran at 6–7 GB/s. With streaming stores and
/// the taps gathered, 2 threads, 640 → 640 took 5.4–5.7 ms against 8.1–9.7 and 1280 → 1280
/// 22 against 35–37 ms (`winograd_filters` alone, alternating builds).
fn filter_transform<const M: usize, const A: usize, W: Transform<M, A>>(
    cin: usize,
    cout: usize,
    wt: ConvWeights,
    u: &mut [f32],
) {
    let up = SendPtr(u.as_mut_ptr());
    (0..cout)
        .into_par_iter()
        .for_each_init(Vec::new, |wide, co| {
            let row = match wt {
                ConvWeights::F32(w) => &w[co * cin * 9..(co + 1) * cin * 9],
                _ => {
                    wide.resize(cin * 9, 0.0);
                    wt.widen_into(co * cin * 9, wide);
                    &wide[..]
                }
            };
            for (blk, src) in row.chunks(LANES * 9).enumerate() {
                // SAFETY: task co writes only row co of each U[p]; u outlives the loop.
                let dst = SendPtr(unsafe { up.get().add(co * cin + blk * LANES) });
                filter_lanes::<M, A, W>(src, dst, cout * cin);
            }
            crate::simd::store_fence();
        });
}

fn winograd<const M: usize, const A: usize, W: Transform<M, A>>(
    g: &Conv2dGeom,
    x: &[f32],
    filters: Filters,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
) {
    let (m, a) = (M, A);
    if let Some(r) = residual {
        assert_eq!(r.len(), y.len(), "winograd residual length");
    }
    let a2 = a * a;
    let (ho, wo) = g.out_hw();
    let (th, tw) = (ho.div_ceil(m), wo.div_ceil(m));
    let tiles_per_img = th * tw;
    let tiles = g.n * tiles_per_img;
    let (cin, cout) = (g.cin, g.cout);
    assert_eq!(x.len(), g.n * cin * g.h * g.w, "winograd input length");
    assert_eq!(y.len(), g.out_len(), "winograd output length");

    let transformed;
    let u: &[f32] = match filters {
        Filters::Kept(u) => u,
        Filters::Raw(wt) => {
            assert_eq!(wt.len(), cout * cin * 9, "winograd weight length");
            let mut u = Scratch::take(a2 * cout * cin);
            filter_transform::<M, A, W>(cin, cout, wt, &mut u);
            transformed = u;
            &transformed
        }
    };

    let chunk = wino_chunk(a, m, g);
    let mut v = Scratch::take(a2 * cin * chunk);
    let mut mm = Scratch::take(a2 * cout * chunk);
    let yp = SendPtr(y.as_mut_ptr());
    let (pt, pl) = (g.pad[0] as isize, g.pad[2] as isize);
    let tile_pos = |tile: usize| {
        let (n, r) = (tile / tiles_per_img, tile % tiles_per_img);
        (n, r / tw, r % tw)
    };
    let mut t0 = 0;
    while t0 < tiles {
        let tc = chunk.min(tiles - t0);
        // Where each tile of the chunk starts in its image plane, and whether it lies wholly
        // inside (no zero padding to apply).
        let starts: Vec<TileStart> = (0..tc)
            .map(|tt| {
                let (img, ty, tx) = tile_pos(t0 + tt);
                let (iy, ix) = ((ty * m) as isize - pt, (tx * m) as isize - pl);
                let inside = iy >= 0
                    && ix >= 0
                    && iy + a as isize <= g.h as isize
                    && ix + a as isize <= g.w as isize;
                (img, iy, ix, inside)
            })
            .collect();
        // V[p][ci][t] = (Bᵀ d B)[p], LANES tiles at a time.
        let vp = SendPtr(v.as_mut_ptr());
        let starts = &starts;
        (0..cin).into_par_iter().for_each(|ci| {
            for (blk, st) in starts.chunks(LANES).enumerate() {
                // The next group's 36 lines of V, each in another row: ask for them now (stores
                // that miss in a burst stall the transform).
                let next = vp.get().wrapping_add(ci * tc + (blk + 1) * LANES);
                for p in 0..a2 {
                    crate::simd::prefetch_l1(next.wrapping_add(p * cin * tc));
                }
                // SAFETY: task ci writes only row ci of each V[p]; v outlives the loop.
                let dst = SendPtr(unsafe { vp.get().add(ci * tc + blk * LANES) });
                input_lanes::<M, A, W>(x, (ci, cin, g.h, g.w), st, dst, cin * tc);
            }
        });
        // M[p] = U[p] · V[p]: α² independent products.
        let mp = SendPtr(mm.as_mut_ptr());
        let v = &v;
        (0..a2).into_par_iter().for_each(|p| {
            // SAFETY: product p writes only M[p] (cout × tc), disjoint from other p.
            unsafe {
                matmul_ptr(
                    mp.get().add(p * cout * tc),
                    tc,
                    MatRef::row_major(&u[p * cout * cin..(p + 1) * cout * cin], cout, cin),
                    MatRef::row_major(&v[p * cin * tc..(p + 1) * cin * tc], cin, tc),
                    false,
                    Par::Seq,
                )
            };
        });
        // Y = Aᵀ M A per tile and output channel, plus bias, cropped at the borders.
        let mm = &mm;
        (0..cout).into_par_iter().for_each(|co| {
            let b = bias.map_or(0.0, |b| b[co]);
            for (blk, st) in starts.chunks(LANES).enumerate() {
                // The next group's lanes of M, one line in each of 36 rows.
                let next = mm.as_ptr().wrapping_add(co * tc + (blk + 1) * LANES);
                for p in 0..a2 {
                    crate::simd::prefetch_l1(next.wrapping_add(p * cout * tc));
                }
                let src = &mm[co * tc + blk * LANES..];
                let chan = (co, cout, ho, wo);
                output_lanes::<M, A, W>(src, cout * tc, st, (pt, pl), chan, b, residual, yp);
            }
        });
        t0 += tc;
    }
}
