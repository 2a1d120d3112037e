//! 2-D convolution as im2col + GEMM, in row bands so the column buffer stays bounded
//! ([`conv_col_budget`](crate::tuning::Tuning::conv_col_budget)); 1×1 stride-1 convolutions
//! as plain products; small planes as one product over the whole batch.

use super::Conv2dGeom;
use crate::matmul::{matmul, MatRef, Par};
use crate::scratch::Scratch;
use crate::tuning::tuning;
use rayon::prelude::*;

/// Whether [`conv2d_im2col`] builds one column matrix for all images (small planes: below
/// [`conv_batched_plane`](crate::tuning::Tuning::conv_batched_plane) output pixels, columns
/// within [`conv_col_budget`](crate::tuning::Tuning::conv_col_budget)).
fn batched_columns(g: &Conv2dGeom) -> bool {
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
