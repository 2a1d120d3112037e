//! 2-D convolution as im2col + GEMM, in row bands so the column buffer stays bounded
//! ([`conv_col_budget`](crate::tuning::Tuning::conv_col_budget)); 1×1 stride-1 convolutions
//! as plain products; small planes as one product over the whole batch.

use super::wino_product::{product, Product, GROUP, ROWS};
use super::{Conv2dGeom, ConvWeights};
use crate::matmul::{matmul, MatRef, Par};
use crate::scratch::Scratch;
use crate::tuning::tuning;
use rayon::prelude::*;

/// Whether [`conv2d_im2col`] builds one column matrix for all images (small planes: below
/// [`conv_batched_plane`](crate::tuning::Tuning::conv_batched_plane) output pixels, columns
/// within [`conv_col_budget`](crate::tuning::Tuning::conv_col_budget)).
pub(super) fn batched_columns(g: &Conv2dGeom) -> bool {
    let t = tuning();
    let (ho, wo) = g.out_hw();
    let kk = g.cin * g.kh * g.kw;
    !g.is_pointwise()
        && g.n > 1
        && ho * wo < t.conv_batched_plane
        && kk * g.n * ho * wo <= t.conv_col_budget
}

/// The scratch buffers (floats) [`conv2d_im2col`] takes, in order.
pub(super) fn im2col_requests(g: &Conv2dGeom) -> Vec<usize> {
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
    let band_rows = (tuning().conv_col_budget / (kk * wo).max(1)).clamp(1, ho);
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
        // GEMM runs far better than n products of ho·wo columns, then added into y image by
        // image.
        let ncol = hw_out;
        let mut col = Scratch::take(kk * g.n * ncol);
        let mut z = Scratch::take(g.cout * g.n * ncol);
        for b in 0..g.n {
            let xs = &x[b * g.cin * g.h * g.w..(b + 1) * g.cin * g.h * g.w];
            // Image b's columns, in place: rows g.n·ncol apart, starting at column b·ncol.
            im2col_band(g, xs, 0, ho, &mut col[b * ncol..], g.n * ncol);
        }
        // Blocks of output channels, two per thread, each a single-threaded product: every
        // thread streams only its rows of the weights (faster than the gemm crate's own
        // threading of this product at 4×4 and 8×8).
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
    let band_rows = (tuning().conv_col_budget / (kk * wo).max(1)).clamp(1, ho);
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

/// Terms of narrow weights widened at a time by [`conv2d_im2col_narrow`]: [`ROWS`] rows of
/// them are 24 KiB of f32, in L1 while every column group is multiplied by them.
const NARROW_KC: usize = 512;

/// [`conv2d_im2col_res`] on narrow weights (bf16, f16, int8) where the columns are batched
/// ([`batched_columns`]: small planes, several images), without widening the whole weight
/// first: each task widens [`ROWS`] rows × [`NARROW_KC`] terms of its output channels into
/// an L1 buffer and multiplies them into every group of 32 columns ([`product`]), so the
/// weight is read once, in its dtype. Widening the whole weight (the way other narrow im2col
/// layers run) wrote and read back a 4-byte copy — 118 MB for a 2560 → 1280 layer, which
/// made `--weights-dtype bf16` UNet steps at 32² latents 5% slower than f32. The column
/// buffer's rows are padded to whole groups (zeros).
pub(super) fn conv2d_im2col_narrow(
    g: &Conv2dGeom,
    x: &[f32],
    w: ConvWeights,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
) {
    assert!(
        batched_columns(g),
        "conv2d_im2col_narrow: {g:?} is not batched"
    );
    let (ho, wo) = g.out_hw();
    let kk = g.cin * g.kh * g.kw;
    assert_eq!(x.len(), g.n * g.cin * g.h * g.w, "conv2d input length");
    assert_eq!(w.len(), g.cout * kk, "conv2d weight length");
    assert_eq!(y.len(), g.out_len(), "conv2d output length");
    if let Some(r) = residual {
        assert_eq!(r.len(), y.len(), "conv2d residual length");
    }
    let ncol = ho * wo;
    let nc = g.n * ncol;
    let ncp = nc.next_multiple_of(GROUP);
    let mut col = Scratch::take(kk * ncp);
    for row in col[..kk * ncp].chunks_exact_mut(ncp) {
        row[nc..].fill(0.0);
    }
    for b in 0..g.n {
        let xs = &x[b * g.cin * g.h * g.w..(b + 1) * g.cin * g.h * g.w];
        im2col_band(g, xs, 0, ho, &mut col[b * ncol..], ncp);
    }
    let mut z = Scratch::take(g.cout * ncp);
    // Blocks of output channels, whole row blocks, four per thread.
    let mb = g
        .cout
        .div_ceil(4 * rayon::current_num_threads().max(1))
        .next_multiple_of(ROWS);
    let col = &col;
    z[..g.cout * ncp]
        .par_chunks_mut(mb * ncp)
        .enumerate()
        .for_each_init(
            || vec![0f32; ROWS * NARROW_KC],
            |wide, (i, zc)| {
                let (r0, rows_t) = (i * mb, zc.len() / ncp);
                for k0 in (0..kk).step_by(NARROW_KC) {
                    let kc = NARROW_KC.min(kk - k0);
                    for rb in (0..rows_t).step_by(ROWS) {
                        let rows = ROWS.min(rows_t - rb);
                        for r in 0..rows {
                            w.widen_into((r0 + rb + r) * kk + k0, &mut wide[r * kc..(r + 1) * kc]);
                        }
                        for c0 in (0..ncp).step_by(GROUP) {
                            let p = Product {
                                u: wide,
                                ustride: kc,
                                rows,
                                k: kc,
                                v: &col[k0 * ncp + c0..],
                                vstride: ncp,
                                mstride: ncp,
                                accumulate: k0 > 0,
                            };
                            product(p, &mut zc[rb * ncp + c0..]);
                        }
                    }
                }
            },
        );
    let z = &z;
    y.par_chunks_mut(ncol).enumerate().for_each(|(i, plane)| {
        let (b, co) = (i / g.cout, i % g.cout);
        let src = &z[co * ncp + b * ncol..][..ncol];
        let bv = bias.map_or(0.0, |b| b[co]);
        match residual {
            Some(r) => {
                let rs = &r[i * ncol..(i + 1) * ncol];
                for ((v, s), r) in plane.iter_mut().zip(src).zip(rs) {
                    *v = bv + r + s;
                }
            }
            None => {
                for (v, s) in plane.iter_mut().zip(src) {
                    *v = bv + s;
                }
            }
        }
    });
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
