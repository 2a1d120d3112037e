//! 2-D convolution as im2col + GEMM, in row bands so the column buffer stays bounded.

use crate::matmul::{matmul, MatRef, Par};
use rayon::prelude::*;

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

/// Scratch floats [`conv2d_im2col`] allocates for one call (its column buffer).
pub fn im2col_workspace_floats(g: &Conv2dGeom) -> usize {
    if g.is_pointwise() {
        return 0;
    }
    let (ho, wo) = g.out_hw();
    let kk = g.cin * g.kh * g.kw;
    let band_rows = (COL_BUDGET / (kk * wo).max(1)).clamp(1, ho);
    kk * band_rows * wo
}

/// y = conv2d(x, w) + bias. x: (n, cin, h, w); y: (n, cout, ho, wo).
pub fn conv2d_im2col(g: &Conv2dGeom, x: &[f32], wt: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
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
    let band_rows = (COL_BUDGET / (kk * wo).max(1)).clamp(1, ho);
    let mut col = vec![0f32; kk * band_rows * wo];
    for b in 0..g.n {
        let xs = &x[b * g.cin * g.h * g.w..(b + 1) * g.cin * g.h * g.w];
        let ys = &mut y[b * g.cout * hw_out..(b + 1) * g.cout * hw_out];
        let mut r0 = 0;
        while r0 < ho {
            let rows = band_rows.min(ho - r0);
            let ncol = rows * wo;
            im2col_band(g, xs, r0, rows, &mut col[..kk * ncol]);
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

/// Fill col (cin·kh·kw × rows·wo) for output rows r0..r0+rows of one image.
fn im2col_band(g: &Conv2dGeom, x: &[f32], r0: usize, rows: usize, col: &mut [f32]) {
    let (_, wo) = g.out_hw();
    let ncol = rows * wo;
    let (h, w, s) = (g.h as isize, g.w as isize, g.stride as isize);
    let (pt, pl) = (g.pad[0] as isize, g.pad[2] as isize);
    col.par_chunks_mut(g.kh * g.kw * ncol)
        .enumerate()
        .for_each(|(ci, cblock)| {
            let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let row = &mut cblock[(ki * g.kw + kj) * ncol..(ki * g.kw + kj + 1) * ncol];
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
