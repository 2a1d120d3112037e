//! 2-D convolution (NCHW input, weight (cout, cin, kh, kw)): the public API. Geometry, the
//! kernel choice ([`ConvImpl`]), the entry points and the scratch sizes the memory plan reads
//! are here; the kernels are in submodules:
//!
//! - `im2col`: im2col + GEMM, in row bands so the column buffer stays bounded; 1×1
//!   convolutions as plain products; small planes as one product over the whole batch.
//! - `winograd`: Winograd F(2×2, 3×3) and F(4×4, 3×3) for 3×3 stride-1 layers: the transform
//!   matrices, the filter transform and two drivers — chunked (input transform, α² products
//!   by the `gemm` crate, output transform, each over a chunk of tiles in scratch) and fused
//!   (a group of 32 tiles through all three stages in one thread's cache, for layers whose
//!   transformed filters fit the shared cache).
//! - `wino_product`: the fused driver's register-tiled products (AVX-512, AVX2+FMA, plain).
//! - `winograd_simd`: the transforms' lane kernels, compiled for AVX-512, AVX2+FMA and portable
//!   code; input patches of tiles along a row come in by contiguous loads and permutes, the
//!   others (and filter taps) by AVX-512 gathers.

pub mod conv3d;
pub mod depthwise;
mod im2col;
mod wino_product;
mod winograd;
mod winograd_simd;

pub use im2col::{conv2d_im2col, conv2d_im2col_res, im2col_workspace_floats};

use crate::scratch::Scratch;
use crate::tuning::tuning;
pub use winograd::WinogradDriver;
use winograd::{
    filter_transform, fused_thread_floats, runs_fused, wino_chunk, winograd, Filters, T23, T43,
};

/// A convolution's (or Linear layer's) weights as stored: f32, 16-bit, or 8-bit integers with
/// a scale per output feature (widened to f32 as the kernel reads them).
#[derive(Clone, Copy)]
pub enum ConvWeights<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
    F16(&'a [half::f16]),
    /// Symmetric 8-bit weights ([`crate::quant::quantize_i8`]): element = `q · scale[f]`, f
    /// its output feature (row of W). `inf` elements per feature; `panels`: laid out in
    /// `linear512` panels of 32 features (then `scale` is padded with zeros to whole panels).
    I8 {
        q: &'a [i8],
        scale: &'a [f32],
        inf: usize,
        panels: bool,
    },
}

impl ConvWeights<'_> {
    pub fn len(&self) -> usize {
        match self {
            ConvWeights::F32(v) => v.len(),
            ConvWeights::Bf16(v) => v.len(),
            ConvWeights::F16(v) => v.len(),
            ConvWeights::I8 { q, .. } => q.len(),
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
            ConvWeights::Bf16(_) | ConvWeights::F16(_) if crate::linear512::available() => {
                let (base, dt, _) = crate::linear512::raw(self);
                assert!(end <= self.len(), "widen_into: {end} past {}", self.len());
                // SAFETY: the level is this CPU's (available() checked it); elements
                // start..end are in the slice.
                unsafe { crate::linear512::widen_chunk(crate::simd::level(), dt, base, start, dst) }
            }
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
            &ConvWeights::I8 {
                q,
                scale,
                inf,
                panels,
            } => crate::quant::widen_i8(q, scale, inf, panels, start, dst),
        }
    }
    /// The whole weight widened to f32 into `dst` (same length), in pieces shared by the
    /// pool's threads.
    pub fn widen_par(&self, dst: &mut [f32]) {
        use rayon::prelude::*;
        const PIECE: usize = 1 << 16;
        assert_eq!(dst.len(), self.len(), "widened weight length");
        dst.par_chunks_mut(PIECE)
            .enumerate()
            .for_each(|(i, d)| self.widen_into(i * PIECE, d));
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
    /// out (or in, for a layer the fused driver runs, such as a VAE's 128 → 3 `conv_out`:
    /// 85 → 33 ms at 512², AVX-512): F(4×4, 3×3) where there are enough 4×4 output tiles to amortize the filter
    /// transform (≥ 64), else F(2×2, 3×3) where there are ≥ 128 2×2 tiles, else im2col. Both
    /// Winograd errors against an f64 direct convolution stay within the model tolerance
    /// (`tests/kernels.rs` checks SD's channel counts). The thresholds are the crossovers
    /// measured with `prism bench` (the `conv_wino*` fields of [`crate::tuning::Tuning`]).
    pub fn auto(g: &Conv2dGeom) -> Self {
        Self::auto_for(g, false)
    }

    /// [`ConvImpl::auto`] where `filters_kept` says whether the layer's Winograd filters are
    /// transformed once and kept ([`winograd_filters`], for a graph that runs many times on
    /// the same weights). Without the per-call filter transform, F(2×2, 3×3) pays from 32
    /// 2×2 tiles instead of 128.
    pub fn auto_for(g: &Conv2dGeom, filters_kept: bool) -> Self {
        let t = tuning();
        let (ho, wo) = g.out_hw();
        let tiles4 = g.n * ho.div_ceil(4) * wo.div_ceil(4);
        let tiles2 = g.n * ho.div_ceil(2) * wo.div_ceil(2);
        // Few output channels are no obstacle where the layer runs fused: its products are
        // a short row block each, not a `gemm` call per transform point.
        let wide = g.cin >= t.conv_wino_min_channels
            && (g.cout >= t.conv_wino_min_channels || runs_fused(6, g));
        let min2 = if filters_kept {
            t.conv_wino2_min_tiles_kept
        } else {
            t.conv_wino2_min_tiles
        };
        if wide && ConvImpl::Winograd4.supports(g) && tiles4 >= t.conv_wino4_min_tiles {
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

/// [`conv2d_res`] on weights as stored. Winograd widens narrow filters one output channel at
/// a time inside its filter transform; im2col widens them in L1-sized blocks on batched small
/// planes ([`im2col::conv2d_im2col_narrow`]) and the whole weight into scratch elsewhere.
pub fn conv2d_stored(
    imp: ConvImpl,
    g: &Conv2dGeom,
    x: &[f32],
    w: ConvWeights,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
) -> ConvImpl {
    if imp.is_winograd(g) {
        let f = Filters::Raw(w);
        run_winograd(imp, g, x, f, bias, residual, y, WinogradDriver::Auto);
        return imp;
    }
    match w {
        ConvWeights::F32(w) => conv2d_im2col_res(g, x, w, bias, residual, y),
        _ if im2col::batched_columns(g) => im2col::conv2d_im2col_narrow(g, x, w, bias, residual, y),
        _ => {
            let mut wide = Scratch::take(w.len());
            w.widen_par(&mut wide);
            conv2d_im2col_res(g, x, &wide, bias, residual, y)
        }
    }
    ConvImpl::Im2col
}

/// Winograd kernel `imp` (one that runs `g`) on filters `f` with driver `driver`: the one
/// place the kernel picks its transform sizes.
#[allow(clippy::too_many_arguments)]
fn run_winograd(
    imp: ConvImpl,
    g: &Conv2dGeom,
    x: &[f32],
    f: Filters,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
    driver: WinogradDriver,
) {
    match imp {
        ConvImpl::Winograd2 => winograd::<2, 4, T23>(g, x, f, bias, residual, y, driver),
        _ => winograd::<4, 6, T43>(g, x, f, bias, residual, y, driver),
    }
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
/// large share of a wide layer's time) is skipped.
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
    run_winograd(imp, g, x, f, bias, residual, y, WinogradDriver::Auto);
}

/// [`conv2d_stored`] with Winograd kernel `imp` (which must run `g`) on the driver `driver`
/// rather than the one [`WinogradDriver::Auto`] picks: for tests and benchmarks that hold
/// the drivers to each other.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_winograd_driver(
    imp: ConvImpl,
    g: &Conv2dGeom,
    x: &[f32],
    w: ConvWeights,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
    driver: WinogradDriver,
) {
    assert!(
        imp.is_winograd(g),
        "conv2d_winograd_driver: {} does not run {g:?}",
        imp.name()
    );
    run_winograd(imp, g, x, Filters::Raw(w), bias, residual, y, driver);
}

/// Scratch floats a kernel allocates for one call on the current rayon pool.
pub fn workspace_floats(imp: ConvImpl, g: &Conv2dGeom) -> usize {
    scratch_requests(imp, g, rayon::current_num_threads())
        .iter()
        .sum()
}

/// The scratch buffers (floats) a kernel takes from the pool, in the order it takes them,
/// when it runs on `threads` threads.
pub fn scratch_requests(imp: ConvImpl, g: &Conv2dGeom, threads: usize) -> Vec<usize> {
    scratch_requests_for(imp, g, false, threads)
}

/// [`scratch_requests`], where `filters_kept` says the Winograd filters come transformed
/// ([`conv2d_winograd_kept`]): no scratch for them.
pub fn scratch_requests_for(
    imp: ConvImpl,
    g: &Conv2dGeom,
    filters_kept: bool,
    threads: usize,
) -> Vec<usize> {
    let wino = |a: usize, m: usize| {
        let mut r = vec![a * a * g.cout * g.cin];
        if runs_fused(a, g) {
            r.push(threads.max(1) * fused_thread_floats(a, g));
        } else {
            let chunk = wino_chunk(a, m, g);
            r.extend([a * a * g.cin * chunk, a * a * g.cout * chunk]);
        }
        if filters_kept {
            r.remove(0);
        }
        r
    };
    match imp {
        ConvImpl::Winograd2 if imp.supports(g) => wino(4, 2),
        ConvImpl::Winograd4 if imp.supports(g) => wino(6, 4),
        _ => im2col::im2col_requests(g),
    }
}
