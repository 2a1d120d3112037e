//! Depthwise convolution (groups = channels, ConvNeXt's 3×3 / 7×7 spatial mixing) and the
//! stride = kernel transposed convolution (a U-ViT's 2× upsampler): the two convolutions
//! that are not a dense im2col product.

use crate::matmul::{self, MatRef, Par};
use crate::scratch::Scratch;
use crate::SendPtr;
use rayon::prelude::*;

/// Depthwise convolution of x (n, c, h, w) with weight (c, 1, k, k), stride 1, `pad` zeros on
/// every side, optional bias (c) → y (n, c, h + 2·pad − k + 1, w + 2·pad − k + 1). One task
/// per (image, channel) plane; each output row sums k·k shifted input rows (the inner loop
/// runs along contiguous columns, which the compiler vectorizes); columns whose window
/// crosses the border are clipped per tap.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_conv2d(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    weight: &[f32],
    bias: Option<&[f32]>,
    k: usize,
    pad: usize,
    y: &mut [f32],
) {
    assert!(k > 0 && h + 2 * pad >= k && w + 2 * pad >= k);
    let (ho, wo) = (h + 2 * pad - k + 1, w + 2 * pad - k + 1);
    assert_eq!(x.len(), n * c * h * w);
    assert_eq!(weight.len(), c * k * k);
    assert_eq!(y.len(), n * c * ho * wo);
    y.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(h * w))
        .enumerate()
        .for_each(|(plane, (yp, xp))| {
            let ch = plane % c;
            let wk = &weight[ch * k * k..(ch + 1) * k * k];
            let b = bias.map_or(0.0, |b| b[ch]);
            for (oy, yr) in yp.chunks_exact_mut(wo).enumerate() {
                yr.fill(b);
                for ky in 0..k {
                    // input row oy + ky − pad
                    let iy = oy + ky;
                    if iy < pad || iy - pad >= h {
                        continue;
                    }
                    let xr = &xp[(iy - pad) * w..(iy - pad + 1) * w];
                    for kx in 0..k {
                        let wv = wk[ky * k + kx];
                        // output column ox reads input column ox + kx − pad
                        let lo = pad.saturating_sub(kx);
                        let hi = (w + pad - kx).min(wo);
                        if lo >= hi {
                            continue;
                        }
                        let src = &xr[lo + kx - pad..hi + kx - pad];
                        for (o, &v) in yr[lo..hi].iter_mut().zip(src) {
                            *o += wv * v;
                        }
                    }
                }
            }
        });
}

/// Floats of scratch [`conv_transpose2d`] takes: one image's patch matrix.
pub fn conv_transpose2d_scratch(h: usize, w: usize, cout: usize, k: usize) -> usize {
    h * w * cout * k * k
}

/// Transposed convolution with stride = kernel = k and no padding of x (n, cin, h, w),
/// weight (cin, cout, k, k), optional bias (cout) → y (n, cout, k·h, k·w). The patches do
/// not overlap, so per image it is one product P = Xᵀ·W ((h·w) × cin times cin × (cout·k²),
/// X read in place through strides) and a scatter of P's rows into k×k output patches.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d(
    x: &[f32],
    [n, cin, h, w]: [usize; 4],
    weight: &[f32],
    bias: Option<&[f32]>,
    cout: usize,
    k: usize,
    y: &mut [f32],
) {
    let (hw, ck) = (h * w, cout * k * k);
    assert_eq!(x.len(), n * cin * hw);
    assert_eq!(weight.len(), cin * ck);
    assert_eq!(y.len(), n * ck * hw);
    let mut p = Scratch::take(conv_transpose2d_scratch(h, w, cout, k));
    let (ho, wo) = (h * k, w * k);
    for b in 0..n {
        let xb = &x[b * cin * hw..(b + 1) * cin * hw];
        // Xᵀ: element (pixel, channel) = xb[channel·hw + pixel].
        let a = MatRef::transposed(xb, hw, cin);
        let wm = MatRef::row_major(weight, cin, ck);
        matmul::matmul(&mut p, ck, a, wm, false, Par::Pool);
        let yb = SendPtr(y[b * ck * hw..].as_mut_ptr());
        let p = &p[..];
        (0..cout).into_par_iter().for_each(|o| {
            let bo = bias.map_or(0.0, |bias| bias[o]);
            // SAFETY: task o writes only output plane o of image b (ho·wo floats at
            // o·ho·wo), inside y, which no other task touches.
            let plane =
                unsafe { std::slice::from_raw_parts_mut(yb.get().add(o * ho * wo), ho * wo) };
            for i in 0..h {
                for j in 0..w {
                    let row = &p[(i * w + j) * ck + o * k * k..(i * w + j) * ck + (o + 1) * k * k];
                    for a in 0..k {
                        let dst =
                            &mut plane[(i * k + a) * wo + j * k..(i * k + a) * wo + j * k + k];
                        for (d, &v) in dst.iter_mut().zip(&row[a * k..(a + 1) * k]) {
                            *d = v + bo;
                        }
                    }
                }
            }
        });
    }
}
