//! 3-D convolution (MAGVIT-v2's causal video convolutions) as a sum of 2-D convolutions: each
//! output frame accumulates, over the kernel's temporal taps, the 2-D convolution of one input
//! frame with that tap's (cout, cin, kh, kw) filter — so the spatial part runs on the 2-D
//! kernels (Winograd for 3×3 stride 1, im2col otherwise). Taps that fall in the zero-padded
//! frames (a causal convolution's front padding) are skipped.

use super::{conv2d_res, Conv2dGeom, ConvImpl};
use crate::scratch::Scratch;

/// Geometry of a 3-D convolution over (n, cin, t, h, w), weight (cout, cin, kt, kh, kw).
#[derive(Clone, Copy, Debug)]
pub struct Conv3dGeom {
    pub n: usize,
    pub cin: usize,
    pub t: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub k: [usize; 3],
    pub stride: [usize; 3],
    pub dilation_t: usize,
    /// Padding: front, back, top, bottom, left, right.
    pub pad: [usize; 6],
    /// Pad with the edge values instead of zeros.
    pub replicate: bool,
    /// With `replicate`, the front frames are still zeros (a replicate pad of a clip that was
    /// first prefixed with zero frames).
    pub front_zeros: bool,
}

impl Conv3dGeom {
    /// Output (frames, height, width).
    pub fn out_thw(&self) -> [usize; 3] {
        let span = self.dilation_t * (self.k[0] - 1) + 1;
        let p = self.pad;
        [
            (self.t + p[0] + p[1] - span) / self.stride[0] + 1,
            (self.h + p[2] + p[3] - self.k[1]) / self.stride[1] + 1,
            (self.w + p[4] + p[5] - self.k[2]) / self.stride[2] + 1,
        ]
    }

    /// The 2-D convolution one (frame, tap) pair runs.
    pub fn frame_geom(&self) -> Conv2dGeom {
        assert_eq!(
            self.stride[1], self.stride[2],
            "3-D convolution with unequal spatial strides"
        );
        Conv2dGeom {
            n: 1,
            cin: self.cin,
            h: self.h,
            w: self.w,
            cout: self.cout,
            kh: self.k[1],
            kw: self.k[2],
            stride: self.stride[1],
            pad: [self.pad[2], self.pad[3], self.pad[4], self.pad[5]],
        }
    }
}

/// Floats of the padded copy a replicate-padded convolution makes (0 for zero padding).
pub fn replicate_floats(g: &Conv3dGeom) -> usize {
    let p = g.pad;
    if g.replicate {
        g.n * g.cin * (g.t + p[0] + p[1]) * (g.h + p[2] + p[3]) * (g.w + p[4] + p[5])
    } else {
        0
    }
}

/// y = conv3d(x, weight) + bias; `imp` picks the 2-D kernel (falls back to im2col where
/// Winograd does not apply). Returns the 2-D kernel that ran. Replicate padding copies the
/// input with its edges repeated, then convolves that unpadded.
pub fn conv3d(
    imp: ConvImpl,
    g: &Conv3dGeom,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> ConvImpl {
    if g.replicate {
        let p = g.pad;
        let (t, h, w) = (g.t + p[0] + p[1], g.h + p[2] + p[3], g.w + p[4] + p[5]);
        let mut padded = Scratch::take(replicate_floats(g));
        let clamp = |v: usize, pad: usize, len: usize| v.saturating_sub(pad).min(len - 1);
        for nc in 0..g.n * g.cin {
            for it in 0..t {
                if g.front_zeros && it < p[0] {
                    padded[(nc * t + it) * h * w..][..h * w].fill(0.0);
                    continue;
                }
                let st = clamp(it, p[0], g.t);
                for iy in 0..h {
                    let sy = clamp(iy, p[2], g.h);
                    let src = &x[((nc * g.t + st) * g.h + sy) * g.w..][..g.w];
                    let dst = &mut padded[((nc * t + it) * h + iy) * w..][..w];
                    for (ix, d) in dst.iter_mut().enumerate() {
                        *d = src[clamp(ix, p[4], g.w)];
                    }
                }
            }
        }
        let inner = Conv3dGeom {
            t,
            h,
            w,
            pad: [0; 6],
            replicate: false,
            front_zeros: false,
            ..*g
        };
        return conv3d(imp, &inner, &padded, weight, bias, y);
    }
    let [kt, kh, kw] = g.k;
    let [to, ho, wo] = g.out_thw();
    let (plane_in, plane_out) = (g.h * g.w, ho * wo);
    assert_eq!(x.len(), g.n * g.cin * g.t * plane_in);
    assert_eq!(weight.len(), g.cout * g.cin * kt * kh * kw);
    assert_eq!(y.len(), g.n * g.cout * to * plane_out);
    let fg = g.frame_geom();
    // Each tap's filter, contiguous (cout, cin, kh, kw).
    let tap_len = g.cout * g.cin * kh * kw;
    let mut taps = Scratch::take(kt * tap_len);
    for o in 0..g.cout {
        for c in 0..g.cin {
            for a in 0..kt {
                let src = &weight[((o * g.cin + c) * kt + a) * kh * kw..][..kh * kw];
                taps[a * tap_len + (o * g.cin + c) * kh * kw..][..kh * kw].copy_from_slice(src);
            }
        }
    }
    let mut frame = Scratch::take(g.cin * plane_in);
    let (mut acc, mut next) = (
        Scratch::take(g.cout * plane_out),
        Scratch::take(g.cout * plane_out),
    );
    let mut ran = ConvImpl::Im2col;
    for b in 0..g.n {
        for ot in 0..to {
            acc.fill(0.0);
            for a in 0..kt {
                let Some(it) = (ot * g.stride[0] + a * g.dilation_t)
                    .checked_sub(g.pad[0])
                    .filter(|&i| i < g.t)
                else {
                    continue;
                };
                for c in 0..g.cin {
                    let src = &x[((b * g.cin + c) * g.t + it) * plane_in..][..plane_in];
                    frame[c * plane_in..(c + 1) * plane_in].copy_from_slice(src);
                }
                ran = conv2d_res(
                    imp,
                    &fg,
                    &frame,
                    &taps[a * tap_len..(a + 1) * tap_len],
                    None,
                    Some(&acc),
                    &mut next,
                );
                std::mem::swap(&mut acc, &mut next);
            }
            for o in 0..g.cout {
                let bo = bias.map_or(0.0, |bs| bs[o]);
                let dst = &mut y[((b * g.cout + o) * to + ot) * plane_out..][..plane_out];
                for (d, &v) in dst.iter_mut().zip(&acc[o * plane_out..(o + 1) * plane_out]) {
                    *d = v + bo;
                }
            }
        }
    }
    ran
}
