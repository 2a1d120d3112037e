//! MAGVIT-v2's token mixers besides convolution and softmax attention: squeeze-excitation
//! with attention pooling, learned memory keys/values, second-order Taylor linear attention,
//! GateLoop's gated linear recurrence and the token shift. Their references are the f64
//! loops of `prism_core::reference`, which the op-conformance test compares them with.

use rayon::prelude::*;

/// The six tensors of a squeeze-excitation: to_k (C) and its bias (1); W₁ (hidden, C), b₁;
/// W₂ (C, hidden), b₂.
pub struct SqueezeExciteWeights<'a> {
    pub to_k: &'a [f32],
    pub to_k_bias: f32,
    pub w1: &'a [f32],
    pub b1: &'a [f32],
    pub w2: &'a [f32],
    pub b2: &'a [f32],
}

/// Squeeze-excitation of x (n, c, t, h, w) into y (same shape): per frame, softmax pooling
/// weights from to_k, the pooled vector, the gate sigmoid(W₂·leaky(W₁·s + b₁) + b₂), y = g·x.
pub fn squeeze_excite(
    x: &[f32],
    [n, c, t, h, w]: [usize; 5],
    p: &SqueezeExciteWeights,
    y: &mut [f32],
) {
    let hw = h * w;
    assert_eq!(x.len(), n * c * t * hw);
    assert_eq!(y.len(), x.len());
    let hidden = p.b1.len();
    assert_eq!(p.w1.len(), hidden * c);
    assert_eq!(p.w2.len(), c * hidden);
    // Pass 1: each frame's gates (frames in parallel, x read-only).
    let gates: Vec<Vec<f32>> = (0..n * t)
        .into_par_iter()
        .map(|frame| {
            let (b, f) = (frame / t, frame % t);
            let plane = |ch: usize| &x[((b * c + ch) * t + f) * hw..][..hw];
            let mut logits = vec![p.to_k_bias; hw];
            for ch in 0..c {
                let wk = p.to_k[ch];
                for (l, &v) in logits.iter_mut().zip(plane(ch)) {
                    *l += wk * v;
                }
            }
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut z = 0.0f64;
            for l in logits.iter_mut() {
                *l = (*l - max).exp();
                z += f64::from(*l);
            }
            let inv = (1.0 / z) as f32;
            let pooled: Vec<f32> = (0..c)
                .map(|ch| {
                    let s: f32 = plane(ch).iter().zip(&logits).map(|(a, e)| a * e).sum();
                    s * inv
                })
                .collect();
            let hid: Vec<f32> = (0..hidden)
                .map(|j| {
                    let row = &p.w1[j * c..(j + 1) * c];
                    let v = p.b1[j] + row.iter().zip(&pooled).map(|(a, b)| a * b).sum::<f32>();
                    if v >= 0.0 {
                        v
                    } else {
                        0.1 * v
                    }
                })
                .collect();
            (0..c)
                .map(|ch| {
                    let row = &p.w2[ch * hidden..(ch + 1) * hidden];
                    let v = p.b2[ch] + row.iter().zip(&hid).map(|(a, b)| a * b).sum::<f32>();
                    1.0 / (1.0 + (-v).exp())
                })
                .collect()
        })
        .collect();
    // Pass 2: scale every (b, ch, f) plane by its gate.
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(i, (yp, xp))| {
            let (f, ch, b) = (i % t, (i / t) % c, i / (t * c));
            let g = gates[b * t + f][ch];
            for (o, &v) in yp.iter_mut().zip(xp) {
                *o = g * v;
            }
        });
}

/// Memory rows before x (b, l, heads·d): y (b, m + l, heads·d), row r < m of batch item i
/// from `table[index, h, r, :]` of table (2, heads, m, d).
pub fn memory_kv(
    x: &[f32],
    [b, l, hd]: [usize; 3],
    table: &[f32],
    [heads, m, d]: [usize; 3],
    index: usize,
    y: &mut [f32],
) {
    assert_eq!(heads * d, hd);
    assert_eq!(table.len(), 2 * heads * m * d);
    assert_eq!(y.len(), b * (m + l) * hd);
    y.par_chunks_mut((m + l) * hd)
        .zip(x.par_chunks(l * hd))
        .for_each(|(yb, xb)| {
            let (mem, rest) = yb.split_at_mut(m * hd);
            for (r, row) in mem.chunks_exact_mut(hd).enumerate() {
                for (h, dst) in row.chunks_exact_mut(d).enumerate() {
                    dst.copy_from_slice(&table[((index * heads + h) * m + r) * d..][..d]);
                }
            }
            rest.copy_from_slice(xb);
        });
}

/// φ(x) = [1, x, x⊗x/√2] (1 + d + d² features) of the d values `x`, into `out`.
fn taylor_features(x: &[f32], scale: f32, out: &mut [f32]) {
    let d = x.len();
    out[0] = 1.0;
    for (o, &v) in out[1..=d].iter_mut().zip(x) {
        *o = v * scale;
    }
    let r = std::f32::consts::FRAC_1_SQRT_2;
    for i in 0..d {
        let xi = x[i] * scale * r;
        for j in 0..d {
            out[1 + d + i * d + j] = xi * x[j] * scale;
        }
    }
}

/// Second-order Taylor linear attention of q, k, v (b, l, heads·d) into y (same shape): per
/// head, with the feature map φ, the state S = Σ φ(k)⊗v (F × d, F = 1 + d + d²) and z = Σ φ(k),
/// y = φ(scale·q)·S / max(φ(scale·q)·z, 1e-5) — the same as Σ (1 + s + s²/2)·v / Σ (1 + s +
/// s²/2), s = scale·q·k, in O(l·F·d) instead of O(l²·d).
pub fn linear_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    [b, l, heads, d]: [usize; 4],
    scale: f32,
    y: &mut [f32],
) {
    let hd = heads * d;
    assert_eq!(q.len(), b * l * hd);
    assert_eq!(k.len(), q.len());
    assert_eq!(v.len(), q.len());
    assert_eq!(y.len(), q.len());
    let f = 1 + d + d * d;
    y.par_chunks_mut(l * hd).enumerate().for_each(|(bi, yb)| {
        let (mut state, mut z, mut phi) = (vec![0f32; f * d], vec![0f32; f], vec![0f32; f]);
        for h in 0..heads {
            state.fill(0.0);
            z.fill(0.0);
            for j in 0..l {
                let at = (bi * l + j) * hd + h * d;
                taylor_features(&k[at..at + d], 1.0, &mut phi);
                let vj = &v[at..at + d];
                for (e, &p) in phi.iter().enumerate() {
                    z[e] += p;
                    for (s, &vv) in state[e * d..(e + 1) * d].iter_mut().zip(vj) {
                        *s += p * vv;
                    }
                }
            }
            for i in 0..l {
                let at = (bi * l + i) * hd + h * d;
                taylor_features(&q[at..at + d], scale, &mut phi);
                let den: f32 = phi.iter().zip(&z).map(|(a, b)| a * b).sum();
                let out = &mut yb[i * hd + h * d..][..d];
                out.fill(0.0);
                for (e, &p) in phi.iter().enumerate() {
                    for (o, &s) in out.iter_mut().zip(&state[e * d..(e + 1) * d]) {
                        *o += p * s;
                    }
                }
                let inv = 1.0 / den.max(1e-5);
                for o in out.iter_mut() {
                    *o *= inv;
                }
            }
        }
    });
}

/// GateLoop over x (n, t, 3c) = [q | kv | a] into y (n, t, c): h = sigmoid(a)·h + kv, y = q·h.
pub fn gate_loop(x: &[f32], [n, t, c]: [usize; 3], y: &mut [f32]) {
    assert_eq!(x.len(), n * t * 3 * c);
    assert_eq!(y.len(), n * t * c);
    y.par_chunks_mut(t * c)
        .zip(x.par_chunks(t * 3 * c))
        .for_each(|(yn, xn)| {
            let mut h = vec![0f32; c];
            for (yr, xr) in yn.chunks_exact_mut(c).zip(xn.chunks_exact(3 * c)) {
                let (q, rest) = xr.split_at(c);
                let (kv, a) = rest.split_at(c);
                for ch in 0..c {
                    let g = 1.0 / (1.0 + (-a[ch]).exp());
                    h[ch] = g * h[ch] + kv[ch];
                    yr[ch] = q[ch] * h[ch];
                }
            }
        });
}

/// Token shift of x (n, t, c) into y: channels c/2.. one step later in time, zeros at t = 0.
pub fn token_shift(x: &[f32], [n, t, c]: [usize; 3], y: &mut [f32]) {
    assert_eq!(x.len(), n * t * c);
    assert_eq!(y.len(), x.len());
    let half = c / 2;
    y.par_chunks_mut(t * c)
        .zip(x.par_chunks(t * c))
        .for_each(|(yn, xn)| {
            for f in 0..t {
                let row = &mut yn[f * c..(f + 1) * c];
                row[..half].copy_from_slice(&xn[f * c..f * c + half]);
                if f == 0 {
                    row[half..].fill(0.0);
                } else {
                    row[half..].copy_from_slice(&xn[(f - 1) * c + half..f * c]);
                }
            }
        });
}
