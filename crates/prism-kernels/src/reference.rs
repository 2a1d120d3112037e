//! Plain reference implementations, written for clarity and computed in f64. Tests hold the
//! fast kernels to these on fresh random inputs.

use crate::attention::AttnGeom;
use crate::conv::Conv2dGeom;

/// Direct convolution, f64 accumulation.
pub fn conv2d(g: &Conv2dGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
    let (ho, wo) = g.out_hw();
    let mut y = vec![0f64; g.out_len()];
    for n in 0..g.n {
        for co in 0..g.cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = bias.map_or(0.0, |b| b[co] as f64);
                    for ci in 0..g.cin {
                        for ki in 0..g.kh {
                            for kj in 0..g.kw {
                                let iy = (oy * g.stride + ki) as isize - g.pad[0] as isize;
                                let ix = (ox * g.stride + kj) as isize - g.pad[2] as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((n * g.cin + ci) * g.h + iy as usize) * g.w + ix as usize];
                                let wv = w[((co * g.cin + ci) * g.kh + ki) * g.kw + kj];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((n * g.cout + co) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    y
}

/// Attention with explicit scores and softmax per head, f64.
pub fn attention(g: &AttnGeom, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f64> {
    attention_biased(g, q, k, v, None)
}

/// [`attention`] with grouped key/value heads, `kv_rows` rows per batch item, causal
/// offset Lk − Lq, and an optional bias (B, H, Lq, Lk) added to the scaled scores.
pub fn attention_biased(
    g: &AttnGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f64> {
    let hd = g.heads * g.head_dim;
    let kvd = g.kv_heads * g.head_dim;
    let group = g.heads / g.kv_heads;
    let mut out = vec![0f64; g.batch * g.lq * hd];
    for b in 0..g.batch {
        for h in 0..g.heads {
            let kh = h / group;
            for i in 0..g.lq {
                let valid = if g.causal {
                    i + 1 + (g.lk - g.lq)
                } else {
                    g.lk
                };
                let mut s = vec![0f64; valid];
                for (j, sj) in s.iter_mut().enumerate() {
                    let mut acc = 0f64;
                    for d in 0..g.head_dim {
                        acc += q[(b * g.lq + i) * hd + h * g.head_dim + d] as f64
                            * k[(b * g.kv_rows + j) * kvd + kh * g.head_dim + d] as f64;
                    }
                    *sj = acc * g.scale as f64;
                    if let Some(bias) = bias {
                        *sj += bias[((b * g.heads + h) * g.lq + i) * g.lk + j] as f64;
                    }
                }
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for d in 0..g.head_dim {
                    let mut acc = 0f64;
                    for (j, sj) in s.iter().enumerate() {
                        acc += (sj - m).exp() / z
                            * v[(b * g.kv_rows + j) * kvd + kh * g.head_dim + d] as f64;
                    }
                    out[(b * g.lq + i) * hd + h * g.head_dim + d] = acc;
                }
            }
        }
    }
    out
}

/// Plain linear layer: y (rows × out) = x · Wᵀ (+ bias) (+ residual), W (out × inf) row-major.
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    rows: usize,
    inf: usize,
    out: usize,
) -> Vec<f64> {
    (0..rows * out)
        .map(|o| {
            let (i, j) = (o / out, o % out);
            let s: f64 = (0..inf)
                .map(|k| x[i * inf + k] as f64 * w[j * inf + k] as f64)
                .sum();
            s + bias.map_or(0.0, |b| b[j] as f64) + residual.map_or(0.0, |r| r[o] as f64)
        })
        .collect()
}

/// Plain matrix product of row-major a (m×k) and b (k×n).
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = a[i * k + p] as f64;
            for j in 0..n {
                c[i * n + j] += av * b[p * n + j] as f64;
            }
        }
    }
    c
}

/// Group norm, two-pass, f64.
pub fn group_norm(
    x: &[f32],
    n: usize,
    c: usize,
    spatial: usize,
    groups: usize,
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
) -> Vec<f64> {
    let cpg = c / groups;
    let mut y = vec![0f64; x.len()];
    for b in 0..n {
        for g in 0..groups {
            let lo = (b * c + g * cpg) * spatial;
            let hi = lo + cpg * spatial;
            let xs = &x[lo..hi];
            let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / xs.len() as f64;
            let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
            for i in lo..hi {
                let ch = (i / spatial) % c;
                y[i] = (x[i] as f64 - mean) / (var + eps as f64).sqrt() * gamma[ch] as f64
                    + beta[ch] as f64;
            }
        }
    }
    y
}

/// Depthwise convolution, stride 1, `pad` zeros around, f64: x (n, c, h, w), weight (c, 1, k, k).
pub fn depthwise_conv2d(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    weight: &[f32],
    bias: Option<&[f32]>,
    k: usize,
    pad: usize,
) -> Vec<f64> {
    let (ho, wo) = (h + 2 * pad - k + 1, w + 2 * pad - k + 1);
    let mut y = vec![0f64; n * c * ho * wo];
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = bias.map_or(0.0, |bs| bs[ch] as f64);
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy + ky) as isize - pad as isize;
                            let ix = (ox + kx) as isize - pad as isize;
                            if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                continue;
                            }
                            acc += x[((b * c + ch) * h + iy as usize) * w + ix as usize] as f64
                                * weight[(ch * k + ky) * k + kx] as f64;
                        }
                    }
                    y[((b * c + ch) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    y
}

/// Transposed convolution, stride = kernel = k, no padding, f64: weight (cin, cout, k, k).
pub fn conv_transpose2d(
    x: &[f32],
    [n, cin, h, w]: [usize; 4],
    weight: &[f32],
    bias: Option<&[f32]>,
    cout: usize,
    k: usize,
) -> Vec<f64> {
    let (ho, wo) = (h * k, w * k);
    let mut y = vec![0f64; n * cout * ho * wo];
    for b in 0..n {
        for o in 0..cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = bias.map_or(0.0, |bs| bs[o] as f64);
                    for ci in 0..cin {
                        acc += x[((b * cin + ci) * h + oy / k) * w + ox / k] as f64
                            * weight[((ci * cout + o) * k + oy % k) * k + ox % k] as f64;
                    }
                    y[((b * cout + o) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    y
}

/// Global response normalization over channels-last (b, l, c), f64, as diffusers writes it.
pub fn global_response_norm(
    x: &[f32],
    [b, l, c]: [usize; 3],
    gamma: &[f32],
    beta: &[f32],
) -> Vec<f64> {
    let mut y = vec![0f64; x.len()];
    for bi in 0..b {
        let xs = &x[bi * l * c..(bi + 1) * l * c];
        let g: Vec<f64> = (0..c)
            .map(|ch| {
                (0..l)
                    .map(|i| (xs[i * c + ch] as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let mean = g.iter().sum::<f64>() / c as f64;
        for i in 0..l {
            for ch in 0..c {
                let v = xs[i * c + ch] as f64;
                y[bi * l * c + i * c + ch] =
                    gamma[ch] as f64 * (v * g[ch] / (mean + 1e-6)) + beta[ch] as f64 + v;
            }
        }
    }
    y
}

/// Direct 3-D convolution, f64, zero padding (front, back, top, bottom, left, right).
pub fn conv3d(
    g: &crate::conv::conv3d::Conv3dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f64> {
    let [kt, kh, kw] = g.k;
    let [to, ho, wo] = g.out_thw();
    let p = g.pad;
    let at = |v: usize, pad: usize, len: usize| match g.replicate {
        true => Some(v.saturating_sub(pad).min(len - 1)),
        false => v.checked_sub(pad).filter(|&i| i < len),
    };
    let mut y = vec![0f64; g.n * g.cout * to * ho * wo];
    for b in 0..g.n {
        for o in 0..g.cout {
            for ot in 0..to {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = bias.map_or(0.0, |bs| bs[o] as f64);
                        for c in 0..g.cin {
                            for a in 0..kt {
                                let tt = ot * g.stride[0] + a * g.dilation_t;
                                if g.front_zeros && tt < p[0] {
                                    continue;
                                }
                                let Some(it) = at(tt, p[0], g.t) else {
                                    continue;
                                };
                                for i in 0..kh {
                                    let Some(iy) = at(oy * g.stride[1] + i, p[2], g.h) else {
                                        continue;
                                    };
                                    for j in 0..kw {
                                        let Some(ix) = at(ox * g.stride[2] + j, p[4], g.w) else {
                                            continue;
                                        };
                                        acc += x
                                            [(((b * g.cin + c) * g.t + it) * g.h + iy) * g.w + ix]
                                            as f64
                                            * w[(((o * g.cin + c) * kt + a) * kh + i) * kw + j]
                                                as f64;
                                    }
                                }
                            }
                        }
                        y[(((b * g.cout + o) * to + ot) * ho + oy) * wo + ox] = acc;
                    }
                }
            }
        }
    }
    y
}
