//! The reference evaluator: every [`Op`] as plain loops in f64, written to be read rather
//! than to be fast. The executor's kernels are tested against it op by op (the
//! op-conformance test) and whole graphs can be run with it ([`run_graph`]).
//!
//! Rules kept on purpose: no unsafe, no threads, no blocking or reordering tricks; every
//! input is widened to f64, every output rounded to f32 once at the end; the `match` over
//! [`Op`] in [`eval_node`] lists every variant (no wildcard), so adding an op fails to
//! compile until its reference exists here. Shapes are re-derived from the inputs and
//! checked against the graph's, so a wrong shape rule in the builder shows up as an error.

use crate::{ActKind, AttentionSpec, Conv2dSpec, DType, Error, Graph, Node, Op, Result, Tensor};

/// Reference state: cache slots as the executor's state holds them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RefState {
    /// Cache slot `s` (B, capacity, C), f32; None until first written.
    pub caches: Vec<Option<Tensor>>,
    /// Tokens already cached: the run's position offset.
    pub len: usize,
}

impl RefState {
    pub fn new() -> Self {
        Self::default()
    }
}

// ---------------------------------------------------------------------------------------
// Scalar functions
// ---------------------------------------------------------------------------------------

/// The error function in f64 (std has none). |x| < 3: the series
/// erf(x) = 2/√π · e^(−x²) · Σₙ 2ⁿ·x^(2n+1) / (1·3·5···(2n+1)), whose terms are all positive
/// (no cancellation); |x| ≥ 3: 1 − erfc(x) with erfc from its continued fraction
/// erfc(x) = e^(−x²)/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + 2/(x + …))))). Accurate to a few
/// units in the last place.
pub fn erf(x: f64) -> f64 {
    if x < 0.0 {
        return -erf(-x);
    }
    if x < 3.0 {
        let two_x2 = 2.0 * x * x;
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        while term > sum * 1e-18 && n < 1000.0 {
            n += 1.0;
            term *= two_x2 / (2.0 * n + 1.0);
            sum += term;
        }
        2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * sum
    } else {
        1.0 - erfc_large(x)
    }
}

/// erfc(x) for x ≥ 3 by the continued fraction, evaluated backward from a fixed depth.
fn erfc_large(x: f64) -> f64 {
    let mut t = x;
    for n in (1..=200).rev() {
        t = x + (f64::from(n) / 2.0) / t;
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / t
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Exact GELU: 0.5·x·(1 + erf(x/√2)).
fn gelu_exact(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2))
}

fn activation(kind: ActKind, x: f64) -> f64 {
    match kind {
        ActKind::Silu => x * sigmoid(x),
        ActKind::Gelu => gelu_exact(x),
        ActKind::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        ActKind::QuickGelu => x * sigmoid(1.702 * x),
        ActKind::Elu => {
            if x > 0.0 {
                x
            } else {
                x.exp_m1()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Index helpers
// ---------------------------------------------------------------------------------------

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// The multi-index of flat position `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
    idx
}

fn f32_tensor(shape: Vec<usize>, y: Vec<f64>) -> Result<Tensor> {
    Tensor::new(shape, y.into_iter().map(|v| v as f32).collect())
}

// ---------------------------------------------------------------------------------------
// Node evaluation
// ---------------------------------------------------------------------------------------

/// Is the value an integer (id) value in the graph?
fn int_value(g: &Graph, v: usize) -> bool {
    g.values[v].dtype.is_int()
}

/// The arguments agree with the graph: count, shapes and dtypes of inputs and parameters.
fn check_args(g: &Graph, node: &Node, inputs: &[&Tensor], params: &[&Tensor]) -> Result<()> {
    let path = node.path.as_str();
    if inputs.len() != node.inputs.len() {
        return Err(Error::shape(
            path,
            format!(
                "{} takes {} inputs, got {}",
                node.op.name(),
                node.inputs.len(),
                inputs.len()
            ),
        ));
    }
    for (k, (&v, t)) in node.inputs.iter().zip(inputs).enumerate() {
        let info = &g.values[v];
        if t.shape() != info.shape.as_slice() {
            return Err(Error::shape(
                path,
                format!(
                    "input {k} is {:?}, the graph says {:?}",
                    t.shape(),
                    info.shape
                ),
            ));
        }
        let ok = if int_value(g, v) {
            t.ids().is_some()
        } else {
            t.dtype() == DType::F32
        };
        if !ok {
            return Err(Error::shape(
                path,
                format!(
                    "input {k} holds {}, the graph says {}",
                    t.dtype().name(),
                    info.dtype.name()
                ),
            ));
        }
    }
    let pids = node.op.params();
    if params.len() != pids.len() {
        return Err(Error::shape(
            path,
            format!(
                "{} takes {} parameters, got {}",
                node.op.name(),
                pids.len(),
                params.len()
            ),
        ));
    }
    for (&p, t) in pids.iter().zip(params) {
        let info = &g.params[p];
        if t.shape() != info.shape.as_slice() || t.dtype() != DType::F32 {
            return Err(Error::shape(
                path,
                format!(
                    "parameter {} is {} {:?}, expected f32 {:?}",
                    info.name,
                    t.dtype().name(),
                    t.shape(),
                    info.shape
                ),
            ));
        }
    }
    Ok(())
}

/// Evaluate node `i` of `g`.
///
/// `inputs` are the node's input tensors in order (for attention over cache views, the whole
/// caches (B, capacity, C), with `kv_len` their live length); `params` its parameters in
/// [`Op::params`] order. Returns the output (f32, or ids for a reshape of ids) of the value's
/// shape; for [`Op::CacheWrite`] the whole updated cache, also stored in `state`; for
/// [`Op::CacheView`] the state's cache.
pub fn eval_node(
    g: &Graph,
    i: usize,
    inputs: &[&Tensor],
    params: &[&Tensor],
    state: &mut RefState,
    kv_len: Option<usize>,
) -> Result<Tensor> {
    let node = g
        .nodes
        .get(i)
        .ok_or_else(|| Error::invalid(format!("graph {}: no node {i}", g.name)))?;
    check_args(g, node, inputs, params)?;
    let path = node.path.as_str();
    let out_shape = g.values[node.output].shape.clone();
    let (shape, y) = match &node.op {
        Op::Input { name } => {
            return Err(Error::invalid(format!(
                "{path}: graph input '{name}' is bound by name, not evaluated"
            )))
        }
        Op::Conv2d(c) => {
            let r = c.residual.then(|| inputs[1]);
            conv2d(path, c, inputs[0], params[0], params.get(1).copied(), r)?
        }
        Op::Conv3d(c) => conv3d(path, c, inputs[0], params[0], params.get(1).copied())?,
        Op::Linear { residual, .. } => {
            let r = residual.then(|| inputs[1]);
            linear(path, inputs[0], params[0], params.get(1).copied(), r)?
        }
        Op::LinearGeglu { .. } => linear_geglu(path, inputs[0], params[0], params[1])?,
        Op::Attention(spec) => attention(path, spec, inputs, kv_len)?,
        Op::GroupNorm {
            groups, eps, silu, ..
        } => group_norm(path, inputs[0], *groups, *eps, params[0], params[1], *silu)?,
        Op::LayerNorm { eps, weight, bias } => {
            let mut p = params.iter().copied();
            let w = weight.and_then(|_| p.next());
            let b = bias.and_then(|_| p.next());
            layer_norm(path, inputs[0], *eps, w, b)?
        }
        Op::RmsNorm { eps, .. } => rms_norm(path, inputs[0], *eps, params.first().copied())?,
        Op::GlobalResponseNorm { .. } => {
            global_response_norm(path, inputs[0], params[0], params[1])?
        }
        Op::DepthwiseConv2d { k, pad, .. } => {
            depthwise_conv2d(path, inputs[0], params[0], params.get(1).copied(), *k, *pad)?
        }
        Op::ConvTranspose2d { cin, cout, k, .. } => conv_transpose2d(
            path,
            inputs[0],
            params[0],
            params.get(1).copied(),
            [*cin, *cout, *k],
        )?,
        Op::L2Normalize { eps } => l2_normalize(path, inputs[0], *eps)?,
        Op::Activation(kind) => {
            let y = inputs[0].to_f64().into_iter().map(|v| activation(*kind, v));
            (inputs[0].shape().to_vec(), y.collect())
        }
        Op::Geglu => geglu(path, inputs[0])?,
        Op::Add => broadcast(path, inputs[0], inputs[1], |a, b| a + b)?,
        Op::Mul => broadcast(path, inputs[0], inputs[1], |a, b| a * b)?,
        Op::Scale { factor } => {
            let f = f64::from(*factor);
            let y = inputs[0].to_f64().into_iter().map(|v| v * f);
            (inputs[0].shape().to_vec(), y.collect())
        }
        Op::Clamp { min, max } => {
            let (lo, hi) = (f64::from(*min), f64::from(*max));
            // Written out so that NaN passes through, as torch.clamp does.
            let clamp = |v: f64| {
                if v < lo {
                    lo
                } else if v > hi {
                    hi
                } else {
                    v
                }
            };
            let y = inputs[0].to_f64().into_iter().map(clamp);
            (inputs[0].shape().to_vec(), y.collect())
        }
        Op::Concat { axis } => concat(path, inputs, *axis)?,
        Op::Slice { axis, start, len } => slice(path, inputs[0], *axis, *start, *len)?,
        Op::Permute { perm } => permute(path, inputs[0], perm)?,
        Op::Reshape => {
            let x = inputs[0];
            if numel(x.shape()) != numel(&out_shape) {
                return Err(Error::shape(
                    path,
                    format!("cannot view {:?} as {out_shape:?}", x.shape()),
                ));
            }
            // Same data, new shape; ids stay ids.
            return match x.ids() {
                Some(ids) => Tensor::from_ids(out_shape, ids.to_vec()),
                None => Tensor::new(out_shape, x.data().to_vec()),
            };
        }
        Op::UpsampleNearest { h, w } => upsample_nearest(path, inputs[0], *h, *w)?,
        Op::TimestepProj {
            dim,
            flip_sin_to_cos,
            downscale_freq_shift,
        } => timestep_proj(
            path,
            inputs[0],
            *dim,
            *flip_sin_to_cos,
            *downscale_freq_shift,
        )?,
        Op::TokenEmbedding { .. } => token_embedding(path, inputs[0], params[0])?,
        Op::LfqCodes { bits, scale } => {
            let ids = inputs[0]
                .ids()
                .ok_or_else(|| Error::shape(path, "LFQ codes want integer ids"))?;
            let mut y = Vec::with_capacity(ids.len() * bits);
            for &id in ids {
                if id < 0 || (id as u64) >> bits != 0 {
                    return Err(Error::input(
                        path,
                        format!("id {id} is not a {bits}-bit code"),
                    ));
                }
                for b in (0..*bits).rev() {
                    let on = (id as u64 >> b) & 1 == 1;
                    y.push(if on {
                        f64::from(*scale)
                    } else {
                        -f64::from(*scale)
                    });
                }
            }
            let mut shape = inputs[0].shape().to_vec();
            *shape.last_mut().expect("ids have an axis") *= bits;
            (shape, y)
        }
        Op::PositionEmbedding { .. } => position_embedding(path, inputs[0], params[0], state.len)?,
        Op::Rope {
            heads,
            head_dim,
            theta,
        } => rope(path, inputs[0], *heads, *head_dim, *theta, state.len)?,
        Op::CacheWrite { slot } => {
            let cache = cache_write(path, inputs[0], &out_shape, *slot, state)?;
            return Ok(cache);
        }
        Op::CacheView { slot } => {
            let cache = state
                .caches
                .get(*slot)
                .and_then(Option::as_ref)
                .ok_or_else(|| {
                    Error::shape(
                        path,
                        format!("cache slot {slot} is empty: nothing wrote it"),
                    )
                })?;
            if cache.shape() != out_shape.as_slice() {
                return Err(Error::shape(
                    path,
                    format!(
                        "cache slot {slot} is {:?}, the view is {out_shape:?}",
                        cache.shape()
                    ),
                ));
            }
            return Ok(cache.clone());
        }
        Op::GatherEos { eos_id } => gather_eos(path, inputs[0], inputs[1], *eos_id)?,
        Op::SqueezeExcite { .. } => squeeze_excite(path, inputs[0], params)?,
        Op::MemoryKv { index, .. } => memory_kv(path, inputs[0], params[0], *index)?,
        Op::LinearAttention {
            heads,
            head_dim,
            scale,
        } => linear_attention(path, inputs, *heads, *head_dim, *scale)?,
        Op::GateLoop => gate_loop(path, inputs[0])?,
        Op::TokenShift => token_shift(path, inputs[0])?,
        Op::ZeroPad { axis, before } => {
            let s = inputs[0].shape();
            if *axis >= s.len() {
                return Err(Error::shape(path, format!("zero pad axis {axis} of {s:?}")));
            }
            let inner: usize = s[axis + 1..].iter().product();
            let (len, xd) = (s[*axis], inputs[0].to_f64());
            let mut y = Vec::new();
            for chunk in xd.chunks(len * inner) {
                y.extend(std::iter::repeat_n(0.0, before * inner));
                y.extend_from_slice(chunk);
            }
            let mut shape = s.to_vec();
            shape[*axis] += before;
            (shape, y)
        }
    };
    if shape != out_shape {
        return Err(Error::shape(
            path,
            format!(
                "{} computes {shape:?}, the graph says {out_shape:?}",
                node.op.name()
            ),
        ));
    }
    f32_tensor(shape, y)
}

type Out = (Vec<usize>, Vec<f64>);

/// Direct 3-D convolution, f64: zero padding, strides, temporal dilation.
fn conv3d(
    path: &str,
    c: &crate::op::Conv3dSpec,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<Out> {
    let s = x.shape();
    let [kt, kh, kw] = c.k;
    let [n, cin, t, h, wd] = *s else {
        return Err(Error::shape(path, format!("conv3d over {s:?}")));
    };
    if cin != c.cin || w.numel() != c.cout * cin * kt * kh * kw {
        return Err(Error::shape(
            path,
            format!("conv3d weight {:?} over {s:?}", w.shape()),
        ));
    }
    let p = c.pad;
    let span = c.dilation_t * (kt - 1) + 1;
    let (tp, hp, wp) = (t + p[0] + p[1], h + p[2] + p[3], wd + p[4] + p[5]);
    if tp < span || hp < kh || wp < kw {
        return Err(Error::shape(path, "kernel larger than the padded input"));
    }
    let (to, ho, wo) = (
        (tp - span) / c.stride[0] + 1,
        (hp - kh) / c.stride[1] + 1,
        (wp - kw) / c.stride[2] + 1,
    );
    let (xd, wt) = (x.to_f64(), w.to_f64());
    let bd = b.map(Tensor::to_f64);
    let mut y = vec![0.0; n * c.cout * to * ho * wo];
    // A padded coordinate → the input's, or None for a zero; replicate clamps to the edge.
    let at = |v: usize, pad: usize, len: usize| match c.replicate {
        true => Some(v.saturating_sub(pad).min(len - 1)),
        false => v.checked_sub(pad).filter(|&i| i < len),
    };
    // Time: with `front_zeros` the front padding frames are zeros even when replicating.
    let at_t = |v: usize| match c.front_zeros && v < p[0] {
        true => None,
        false => at(v, p[0], t),
    };
    for bi in 0..n {
        for o in 0..c.cout {
            for ot in 0..to {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = bd.as_ref().map_or(0.0, |bd| bd[o]);
                        for ci in 0..cin {
                            for a in 0..kt {
                                let Some(it) = at_t(ot * c.stride[0] + a * c.dilation_t) else {
                                    continue;
                                };
                                for bb in 0..kh {
                                    let Some(iy) = at(oy * c.stride[1] + bb, p[2], h) else {
                                        continue;
                                    };
                                    for cc in 0..kw {
                                        let Some(ix) = at(ox * c.stride[2] + cc, p[4], wd) else {
                                            continue;
                                        };
                                        acc += xd[(((bi * cin + ci) * t + it) * h + iy) * wd + ix]
                                            * wt[(((o * cin + ci) * kt + a) * kh + bb) * kw + cc];
                                    }
                                }
                            }
                        }
                        y[(((bi * c.cout + o) * to + ot) * ho + oy) * wo + ox] = acc;
                    }
                }
            }
        }
    }
    Ok((vec![n, c.cout, to, ho, wo], y))
}

fn conv2d(
    path: &str,
    c: &Conv2dSpec,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    r: Option<&Tensor>,
) -> Result<Out> {
    let s = x.shape();
    if s.len() != 4 || s[1] != c.cin || c.stride == 0 {
        return Err(Error::shape(
            path,
            format!("conv2d of {} input channels over {s:?}", c.cin),
        ));
    }
    // The weight as flat (cout, cin, kh, kw) data (temporal weights are (cout, cin, k, 1, 1)).
    if w.numel() != c.cout * c.cin * c.kh * c.kw {
        return Err(Error::shape(
            path,
            format!(
                "conv2d weight {:?} is not ({}, {}, {}, {})",
                w.shape(),
                c.cout,
                c.cin,
                c.kh,
                c.kw
            ),
        ));
    }
    let (n, cin, h, wd) = (s[0], s[1], s[2], s[3]);
    let [pt, pb, pl, pr] = c.pad;
    let (hp, wp) = (h + pt + pb, wd + pl + pr);
    if hp < c.kh || wp < c.kw {
        return Err(Error::shape(path, "kernel larger than the padded input"));
    }
    let ho = (hp - c.kh) / c.stride + 1;
    let wo = (wp - c.kw) / c.stride + 1;
    let shape = vec![n, c.cout, ho, wo];
    let xd = x.to_f64();
    let wt = w.to_f64();
    let bd = b.map(Tensor::to_f64);
    let rd = match r {
        Some(r) if r.shape() != shape.as_slice() => {
            return Err(Error::shape(
                path,
                format!("residual {:?} is not the output's {shape:?}", r.shape()),
            ))
        }
        Some(r) => Some(r.to_f64()),
        None => None,
    };
    let mut y = vec![0.0; numel(&shape)];
    for ni in 0..n {
        for co in 0..c.cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut sum = bd.as_ref().map_or(0.0, |b| b[co]);
                    for ci in 0..cin {
                        for ky in 0..c.kh {
                            for kx in 0..c.kw {
                                // Position in the padded input; outside the input is zero.
                                let py = oy * c.stride + ky;
                                let px = ox * c.stride + kx;
                                if py < pt || py >= pt + h || px < pl || px >= pl + wd {
                                    continue;
                                }
                                let (iy, ix) = (py - pt, px - pl);
                                let xv = xd[((ni * cin + ci) * h + iy) * wd + ix];
                                let wv = wt[((co * cin + ci) * c.kh + ky) * c.kw + kx];
                                sum += xv * wv;
                            }
                        }
                    }
                    let o = ((ni * c.cout + co) * ho + oy) * wo + ox;
                    if let Some(rd) = &rd {
                        sum += rd[o];
                    }
                    y[o] = sum;
                }
            }
        }
    }
    Ok((shape, y))
}

/// y = x·Wᵀ + b [+ r] over the last axis.
fn linear(
    path: &str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    r: Option<&Tensor>,
) -> Result<Out> {
    let (out, inf) = (w.shape()[0], w.shape()[1]);
    let s = x.shape();
    if s.last() != Some(&inf) {
        return Err(Error::shape(
            path,
            format!("linear with weight {:?} over {s:?}", w.shape()),
        ));
    }
    let rows = numel(s) / inf;
    let mut shape = s.to_vec();
    *shape.last_mut().expect("checked above") = out;
    let (xd, wt) = (x.to_f64(), w.to_f64());
    let bd = b.map(Tensor::to_f64);
    let rd = match r {
        Some(r) if r.shape() != shape.as_slice() => {
            return Err(Error::shape(
                path,
                format!("residual {:?} is not the output's {shape:?}", r.shape()),
            ))
        }
        Some(r) => Some(r.to_f64()),
        None => None,
    };
    let mut y = vec![0.0; rows * out];
    for row in 0..rows {
        for o in 0..out {
            let mut sum = bd.as_ref().map_or(0.0, |b| b[o]);
            for k in 0..inf {
                sum += xd[row * inf + k] * wt[o * inf + k];
            }
            if let Some(rd) = &rd {
                sum += rd[row * out + o];
            }
            y[row * out + o] = sum;
        }
    }
    Ok((shape, y))
}

/// h = x·Wᵀ + b, y = h[..., :n] · gelu(h[..., n:]).
fn linear_geglu(path: &str, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Out> {
    let (h_shape, h) = linear(path, x, w, Some(b), None)?;
    let out2 = w.shape()[0];
    if out2 % 2 != 0 {
        return Err(Error::shape(
            path,
            format!("linear_geglu weight {:?}: rows must be 2n", w.shape()),
        ));
    }
    Ok(geglu_rows(&h_shape, &h))
}

fn geglu(path: &str, x: &Tensor) -> Result<Out> {
    let s = x.shape();
    match s.last() {
        Some(&d) if d % 2 == 0 => Ok(geglu_rows(s, &x.to_f64())),
        _ => Err(Error::shape(
            path,
            format!("geglu wants an even last axis, got {s:?}"),
        )),
    }
}

/// (..., 2n) → x[..., :n] · gelu(x[..., n:]); the last axis of `shape` is even.
fn geglu_rows(shape: &[usize], x: &[f64]) -> Out {
    let d2 = *shape.last().expect("geglu over a vector");
    let n = d2 / 2;
    let rows = numel(shape) / d2;
    let mut y = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            y[r * n + j] = x[r * d2 + j] * gelu_exact(x[r * d2 + n + j]);
        }
    }
    let mut out = shape.to_vec();
    *out.last_mut().expect("non-empty") = n;
    (out, y)
}

fn attention(
    path: &str,
    spec: &AttentionSpec,
    inputs: &[&Tensor],
    kv_len: Option<usize>,
) -> Result<Out> {
    let want = if spec.bias { 4 } else { 3 };
    if inputs.len() != want {
        return Err(Error::shape(
            path,
            format!("attention (bias = {}) takes {want} inputs", spec.bias),
        ));
    }
    let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
    let (h, hkv, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    let (qs, ks) = (q.shape(), k.shape());
    let ok = qs.len() == 3
        && ks.len() == 3
        && v.shape() == ks
        && qs[0] == ks[0]
        && h > 0
        && hkv > 0
        && d > 0
        && h % hkv == 0
        && qs[2] == h * d
        && ks[2] == hkv * d;
    if !ok {
        return Err(Error::shape(
            path,
            format!(
                "attention with {h} heads ({hkv} key/value heads) of {d}: q {qs:?}, k {ks:?}, v {:?}",
                v.shape()
            ),
        ));
    }
    let (b, lq, lk_static) = (qs[0], qs[1], ks[1]);
    let lk = kv_len.unwrap_or(lk_static);
    if lk == 0 || lk > lk_static {
        return Err(Error::shape(
            path,
            format!("attention over {lk} live keys of {lk_static}"),
        ));
    }
    if spec.causal && lk < lq {
        return Err(Error::shape(
            path,
            format!("causal attention needs Lq ≤ Lk, got Lq {lq}, Lk {lk}"),
        ));
    }
    let bias = if spec.bias {
        let bt = inputs[3];
        let bs = bt.shape();
        let ok = bs.len() == 4
            && (bs[0] == 1 || bs[0] == b)
            && (bs[1] == 1 || bs[1] == h)
            && (bs[2] == 1 || bs[2] == lq)
            && bs[3] == lk_static;
        if !ok {
            return Err(Error::shape(
                path,
                format!("attention bias {bs:?} for q {qs:?}, k {ks:?}"),
            ));
        }
        Some((bs.to_vec(), bt.to_f64()))
    } else {
        None
    };
    let (qd, kd, vd) = (q.to_f64(), k.to_f64(), v.to_f64());
    let scale = f64::from(spec.scale);
    let group = h / hkv;
    let mut y = vec![0.0; b * lq * h * d];
    for bi in 0..b {
        for hi in 0..h {
            let kvh = hi / group;
            for i in 0..lq {
                // Visible keys: all lk, or j ≤ i + (lk − lq) when causal.
                let visible = if spec.causal { i + (lk - lq) + 1 } else { lk };
                let mut scores = vec![0.0; visible];
                for (j, sj) in scores.iter_mut().enumerate() {
                    let mut dot = 0.0;
                    for di in 0..d {
                        let qv = qd[(bi * lq + i) * h * d + hi * d + di];
                        let kv = kd[(bi * lk_static + j) * hkv * d + kvh * d + di];
                        dot += qv * kv;
                    }
                    let mut s = dot * scale;
                    if let Some((bs, bd)) = &bias {
                        let bb = if bs[0] == 1 { 0 } else { bi };
                        let hb = if bs[1] == 1 { 0 } else { hi };
                        let ib = if bs[2] == 1 { 0 } else { i };
                        s += bd[((bb * bs[1] + hb) * bs[2] + ib) * lk_static + j];
                    }
                    *sj = s;
                }
                let max = scores.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
                let exps: Vec<f64> = scores.iter().map(|&s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for di in 0..d {
                    let mut acc = 0.0;
                    for (j, e) in exps.iter().enumerate() {
                        acc += e * vd[(bi * lk_static + j) * hkv * d + kvh * d + di];
                    }
                    y[(bi * lq + i) * h * d + hi * d + di] = acc / sum;
                }
            }
        }
    }
    Ok((qs.to_vec(), y))
}

fn group_norm(
    path: &str,
    x: &Tensor,
    groups: usize,
    eps: f32,
    w: &Tensor,
    b: &Tensor,
    silu: bool,
) -> Result<Out> {
    let s = x.shape();
    if s.len() < 2 || groups == 0 || s[1] % groups != 0 || w.numel() != s[1] || b.numel() != s[1] {
        return Err(Error::shape(
            path,
            format!("group norm with {groups} groups over {s:?}"),
        ));
    }
    let (n, c) = (s[0], s[1]);
    let spatial: usize = s[2..].iter().product();
    let cg = c / groups;
    let (xd, wd, bd) = (x.to_f64(), w.to_f64(), b.to_f64());
    let eps = f64::from(eps);
    let mut y = vec![0.0; xd.len()];
    for ni in 0..n {
        for gi in 0..groups {
            // Channels gi·cg .. (gi+1)·cg of item ni are contiguous.
            let start = (ni * c + gi * cg) * spatial;
            let len = cg * spatial;
            let xs = &xd[start..start + len];
            let mean = xs.iter().sum::<f64>() / len as f64;
            let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / len as f64;
            let inv = 1.0 / (var + eps).sqrt();
            for (k, &v) in xs.iter().enumerate() {
                let ch = gi * cg + k / spatial;
                let mut o = (v - mean) * inv * wd[ch] + bd[ch];
                if silu {
                    o = activation(ActKind::Silu, o);
                }
                y[start + k] = o;
            }
        }
    }
    Ok((s.to_vec(), y))
}

/// Per-feature scale and shift of a norm: the weight (else 1) and bias (else 0) as f64.
fn affine(d: usize, w: Option<&Tensor>, b: Option<&Tensor>) -> (Vec<f64>, Vec<f64>) {
    (
        w.map_or_else(|| vec![1.0; d], Tensor::to_f64),
        b.map_or_else(|| vec![0.0; d], Tensor::to_f64),
    )
}

fn layer_norm(
    path: &str,
    x: &Tensor,
    eps: f32,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
) -> Result<Out> {
    let s = x.shape();
    let fits = |t: Option<&Tensor>, d: usize| t.is_none_or(|t| t.numel() == d);
    let d = match s.last() {
        Some(&d) if d > 0 && fits(w, d) && fits(b, d) => d,
        _ => {
            return Err(Error::shape(
                path,
                format!(
                    "layer norm with weight {:?} over {s:?}",
                    w.map(|w| w.shape().to_vec())
                ),
            ))
        }
    };
    let xd = x.to_f64();
    let (wd, bd) = affine(d, w, b);
    let eps = f64::from(eps);
    let mut y = vec![0.0; xd.len()];
    for r in 0..xd.len() / d {
        let xs = &xd[r * d..(r + 1) * d];
        let mean = xs.iter().sum::<f64>() / d as f64;
        let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for j in 0..d {
            y[r * d + j] = (xs[j] - mean) * inv * wd[j] + bd[j];
        }
    }
    Ok((s.to_vec(), y))
}

fn rms_norm(path: &str, x: &Tensor, eps: f32, w: Option<&Tensor>) -> Result<Out> {
    let s = x.shape();
    let d = match s.last() {
        Some(&d) if d > 0 && w.is_none_or(|w| w.numel() == d) => d,
        _ => {
            return Err(Error::shape(
                path,
                format!(
                    "rms norm with weight {:?} over {s:?}",
                    w.map(|w| w.shape().to_vec())
                ),
            ))
        }
    };
    let xd = x.to_f64();
    let (wd, _) = affine(d, w, None);
    let eps = f64::from(eps);
    let mut y = vec![0.0; xd.len()];
    for r in 0..xd.len() / d {
        let xs = &xd[r * d..(r + 1) * d];
        let ms = xs.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for j in 0..d {
            y[r * d + j] = xs[j] * inv * wd[j];
        }
    }
    Ok((s.to_vec(), y))
}

/// diffusers' `GlobalResponseNorm` over channels-last (B, L, C), written as it is:
/// g = ‖x[b, :, c]‖₂, n = g / (mean_c g + 1e-6), y = gamma·(x·n) + beta + x.
fn global_response_norm(path: &str, x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Out> {
    let s = x.shape();
    let (bn, l, c) = match *s {
        [bn, l, c] if gamma.numel() == c && beta.numel() == c => (bn, l, c),
        _ => {
            return Err(Error::shape(
                path,
                format!(
                    "global response norm over {s:?} with gamma {:?}",
                    gamma.shape()
                ),
            ))
        }
    };
    let (xd, gd, bd) = (x.to_f64(), gamma.to_f64(), beta.to_f64());
    let mut y = vec![0.0; xd.len()];
    for b in 0..bn {
        let xs = &xd[b * l * c..(b + 1) * l * c];
        let g: Vec<f64> = (0..c)
            .map(|ch| (0..l).map(|i| xs[i * c + ch].powi(2)).sum::<f64>().sqrt())
            .collect();
        let mean = g.iter().sum::<f64>() / c as f64;
        for i in 0..l {
            for ch in 0..c {
                let v = xs[i * c + ch];
                let nx = g[ch] / (mean + 1e-6);
                y[b * l * c + i * c + ch] = gd[ch] * (v * nx) + bd[ch] + v;
            }
        }
    }
    Ok((s.to_vec(), y))
}

/// Depthwise convolution, stride 1, `pad` zeros on every side; weight (C, 1, k, k).
fn depthwise_conv2d(
    path: &str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    k: usize,
    pad: usize,
) -> Result<Out> {
    let s = x.shape();
    let (n, c, h, wd) = match *s {
        [n, c, h, wd] if w.numel() == c * k * k && h + 2 * pad >= k && wd + 2 * pad >= k => {
            (n, c, h, wd)
        }
        _ => {
            return Err(Error::shape(
                path,
                format!(
                    "depthwise conv {k}x{k} with weight {:?} over {s:?}",
                    w.shape()
                ),
            ))
        }
    };
    let (ho, wo) = (h + 2 * pad - k + 1, wd + 2 * pad - k + 1);
    let (xd, wt) = (x.to_f64(), w.to_f64());
    let bd = b.map(Tensor::to_f64);
    let mut y = vec![0.0; n * c * ho * wo];
    for bi in 0..n {
        for ch in 0..c {
            let plane = &xd[(bi * c + ch) * h * wd..(bi * c + ch + 1) * h * wd];
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = bd.as_ref().map_or(0.0, |bd| bd[ch]);
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (
                                (oy + ky) as isize - pad as isize,
                                (ox + kx) as isize - pad as isize,
                            );
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                acc += plane[iy as usize * wd + ix as usize]
                                    * wt[(ch * k + ky) * k + kx];
                            }
                        }
                    }
                    y[((bi * c + ch) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    Ok((vec![n, c, ho, wo], y))
}

/// Transposed convolution with stride = kernel = k, no padding: every input pixel paints its
/// own k×k output patch, y[o, k·i + a, k·j + b] = Σ_c x[c, i, j] · W[c, o, a, b] + bias[o].
fn conv_transpose2d(
    path: &str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    [cin, cout, k]: [usize; 3],
) -> Result<Out> {
    let s = x.shape();
    let (n, h, wd) = match *s {
        [n, c, h, wd] if c == cin && w.numel() == cin * cout * k * k => (n, h, wd),
        _ => {
            return Err(Error::shape(
                path,
                format!("transposed conv with weight {:?} over {s:?}", w.shape()),
            ))
        }
    };
    let (xd, wt) = (x.to_f64(), w.to_f64());
    let bd = b.map(Tensor::to_f64);
    let (ho, wo) = (h * k, wd * k);
    let mut y = vec![0.0; n * cout * ho * wo];
    for bi in 0..n {
        for o in 0..cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let (i, a, j, bb) = (oy / k, oy % k, ox / k, ox % k);
                    let mut acc = bd.as_ref().map_or(0.0, |bd| bd[o]);
                    for ci in 0..cin {
                        acc += xd[((bi * cin + ci) * h + i) * wd + j]
                            * wt[((ci * cout + o) * k + a) * k + bb];
                    }
                    y[((bi * cout + o) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    Ok((vec![n, cout, ho, wo], y))
}

fn l2_normalize(path: &str, x: &Tensor, eps: f32) -> Result<Out> {
    let s = x.shape();
    let d = match s.last() {
        Some(&d) if d > 0 => d,
        _ => return Err(Error::shape(path, format!("l2 normalize over {s:?}"))),
    };
    let xd = x.to_f64();
    let mut y = vec![0.0; xd.len()];
    for r in 0..xd.len() / d {
        let xs = &xd[r * d..(r + 1) * d];
        let norm = xs
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
            .max(f64::from(eps));
        for j in 0..d {
            y[r * d + j] = xs[j] / norm;
        }
    }
    Ok((s.to_vec(), y))
}

/// a ∘ b with b broadcast onto a's shape (trailing alignment; b's dims equal a's or 1).
fn broadcast(path: &str, a: &Tensor, b: &Tensor, f: impl Fn(f64, f64) -> f64) -> Result<Out> {
    let (sa, sb) = (a.shape(), b.shape());
    crate::builder::check_broadcast(path, sa, sb)?;
    let (ad, bd) = (a.to_f64(), b.to_f64());
    let bstr = strides(sb);
    let lead = sa.len() - sb.len();
    let mut y = vec![0.0; ad.len()];
    for (o, yo) in y.iter_mut().enumerate() {
        let idx = unravel(o, sa);
        let mut bi = 0;
        for j in 0..sb.len() {
            if sb[j] != 1 {
                bi += idx[lead + j] * bstr[j];
            }
        }
        *yo = f(ad[o], bd[bi]);
    }
    Ok((sa.to_vec(), y))
}

fn concat(path: &str, xs: &[&Tensor], axis: usize) -> Result<Out> {
    let first = xs
        .first()
        .ok_or_else(|| Error::shape(path, "concat of no inputs"))?
        .shape();
    if axis >= first.len() {
        return Err(Error::shape(
            path,
            format!("concat axis {axis} of {first:?}"),
        ));
    }
    let mut shape = first.to_vec();
    shape[axis] = 0;
    for x in xs {
        let s = x.shape();
        let same = s.len() == first.len() && (0..s.len()).all(|d| d == axis || s[d] == first[d]);
        if !same {
            return Err(Error::shape(
                path,
                format!("concat along {axis}: {first:?} and {s:?}"),
            ));
        }
        shape[axis] += s[axis];
    }
    let outer: usize = first[..axis].iter().product();
    let inner: usize = first[axis + 1..].iter().product();
    let datas: Vec<Vec<f64>> = xs.iter().map(|x| x.to_f64()).collect();
    let mut y = Vec::with_capacity(numel(&shape));
    for o in 0..outer {
        for (x, xd) in xs.iter().zip(&datas) {
            let chunk = x.shape()[axis] * inner;
            y.extend_from_slice(&xd[o * chunk..(o + 1) * chunk]);
        }
    }
    Ok((shape, y))
}

fn slice(path: &str, x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Out> {
    let s = x.shape();
    if axis >= s.len() || start + len > s[axis] {
        return Err(Error::shape(
            path,
            format!("slice {start}..{} of axis {axis} of {s:?}", start + len),
        ));
    }
    let outer: usize = s[..axis].iter().product();
    let inner: usize = s[axis + 1..].iter().product();
    let xd = x.to_f64();
    let mut y = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = (o * s[axis] + start) * inner;
        y.extend_from_slice(&xd[base..base + len * inner]);
    }
    let mut shape = s.to_vec();
    shape[axis] = len;
    Ok((shape, y))
}

/// Output axis i is input axis perm[i].
fn permute(path: &str, x: &Tensor, perm: &[usize]) -> Result<Out> {
    let s = x.shape();
    let mut seen = vec![false; s.len()];
    for &p in perm {
        if p >= s.len() || seen[p] {
            return Err(Error::shape(path, format!("permutation {perm:?} of {s:?}")));
        }
        seen[p] = true;
    }
    if perm.len() != s.len() {
        return Err(Error::shape(path, format!("permutation {perm:?} of {s:?}")));
    }
    let shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let istr = strides(s);
    let xd = x.to_f64();
    let mut y = vec![0.0; xd.len()];
    for (o, yo) in y.iter_mut().enumerate() {
        let idx = unravel(o, &shape);
        let mut src = 0;
        for (i, &p) in perm.iter().enumerate() {
            src += idx[i] * istr[p];
        }
        *yo = xd[src];
    }
    Ok((shape, y))
}

/// Nearest resize of the last two axes; source index ⌊i·in/out⌋.
fn upsample_nearest(path: &str, x: &Tensor, ho: usize, wo: usize) -> Result<Out> {
    let s = x.shape();
    let nd = s.len();
    if nd < 2 || ho == 0 || wo == 0 {
        return Err(Error::shape(
            path,
            format!("upsample of {s:?} to {ho}x{wo}"),
        ));
    }
    let (hi, wi) = (s[nd - 2], s[nd - 1]);
    let planes: usize = s[..nd - 2].iter().product();
    let xd = x.to_f64();
    let mut y = vec![0.0; planes * ho * wo];
    for p in 0..planes {
        for oy in 0..ho {
            let iy = oy * hi / ho;
            for ox in 0..wo {
                let ix = ox * wi / wo;
                y[(p * ho + oy) * wo + ox] = xd[(p * hi + iy) * wi + ix];
            }
        }
    }
    let mut shape = s.to_vec();
    shape[nd - 2] = ho;
    shape[nd - 1] = wo;
    Ok((shape, y))
}

/// diffusers' `get_timestep_embedding` (max period 10000, scale 1).
fn timestep_proj(path: &str, t: &Tensor, dim: usize, flip: bool, shift: f32) -> Result<Out> {
    let s = t.shape();
    if s.len() != 1 {
        return Err(Error::shape(
            path,
            format!("timesteps must be (B,), got {s:?}"),
        ));
    }
    let b = s[0];
    let half = dim / 2;
    let td = t.to_f64();
    let ln_period = 10000f64.ln();
    let mut y = vec![0.0; b * dim];
    for bi in 0..b {
        for k in 0..half {
            let exponent = -ln_period * k as f64 / (half as f64 - f64::from(shift));
            let e = td[bi] * exponent.exp();
            let (first, second) = if flip {
                (e.cos(), e.sin())
            } else {
                (e.sin(), e.cos())
            };
            y[bi * dim + k] = first;
            y[bi * dim + half + k] = second;
        }
        // An odd dim leaves the last column zero (the padding).
    }
    Ok((vec![b, dim], y))
}

fn token_embedding(path: &str, ids: &Tensor, table: &Tensor) -> Result<Out> {
    let idv = ids
        .ids()
        .ok_or_else(|| Error::shape(path, "token embedding wants integer ids"))?;
    let (vocab, d) = (table.shape()[0], table.shape()[1]);
    let tab = table.to_f64();
    let mut y = Vec::with_capacity(idv.len() * d);
    for &id in idv {
        if id < 0 || id as u64 >= vocab as u64 {
            return Err(Error::input(
                "input_ids",
                format!("token id {id} is outside the vocabulary of {vocab}"),
            ));
        }
        let r = id as usize;
        y.extend_from_slice(&tab[r * d..(r + 1) * d]);
    }
    let mut shape = ids.shape().to_vec();
    shape.push(d);
    Ok((shape, y))
}

fn position_embedding(path: &str, x: &Tensor, table: &Tensor, offset: usize) -> Result<Out> {
    let s = x.shape();
    let (p, d) = (table.shape()[0], table.shape()[1]);
    if s.len() != 3 || s[2] != d {
        return Err(Error::shape(
            path,
            format!("position embedding table {:?} over {s:?}", table.shape()),
        ));
    }
    let (b, l) = (s[0], s[1]);
    if offset + l > p {
        return Err(Error::shape(
            path,
            format!(
                "positions {offset}..{} exceed the table's {p} positions",
                offset + l
            ),
        ));
    }
    let (xd, tab) = (x.to_f64(), table.to_f64());
    let mut y = vec![0.0; xd.len()];
    for bi in 0..b {
        for li in 0..l {
            for j in 0..d {
                let o = (bi * l + li) * d + j;
                y[o] = xd[o] + tab[(offset + li) * d + j];
            }
        }
    }
    Ok((s.to_vec(), y))
}

/// HF Llama's rotate_half form at positions offset + l.
fn rope(
    path: &str,
    x: &Tensor,
    heads: usize,
    head_dim: usize,
    theta: f32,
    offset: usize,
) -> Result<Out> {
    let s = x.shape();
    if s.len() != 3 || heads == 0 || head_dim % 2 != 0 || s[2] != heads * head_dim {
        return Err(Error::shape(
            path,
            format!("rope with {heads} heads of {head_dim} over {s:?}"),
        ));
    }
    let (b, l, hd) = (s[0], s[1], s[2]);
    let half = head_dim / 2;
    let theta = f64::from(theta);
    let xd = x.to_f64();
    let mut y = vec![0.0; xd.len()];
    for bi in 0..b {
        for li in 0..l {
            let pos = (offset + li) as f64;
            for h in 0..heads {
                let base = (bi * l + li) * hd + h * head_dim;
                for i in 0..half {
                    let inv_freq = theta.powf(-((2 * i) as f64) / head_dim as f64);
                    let angle = pos * inv_freq;
                    let (sin, cos) = angle.sin_cos();
                    let a = xd[base + i];
                    let c = xd[base + i + half];
                    y[base + i] = a * cos - c * sin;
                    y[base + i + half] = c * cos + a * sin;
                }
            }
        }
    }
    Ok((s.to_vec(), y))
}

/// Write x (B, L, C) into rows [state.len, state.len + L) of cache `slot`; returns the cache.
fn cache_write(
    path: &str,
    x: &Tensor,
    cache_shape: &[usize],
    slot: usize,
    state: &mut RefState,
) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 3 || cache_shape.len() != 3 || s[0] != cache_shape[0] || s[2] != cache_shape[2] {
        return Err(Error::shape(
            path,
            format!("cache write of {s:?} into a cache {cache_shape:?}"),
        ));
    }
    let (b, l, c) = (s[0], s[1], s[2]);
    let cap = cache_shape[1];
    let off = state.len;
    if off + l > cap {
        return Err(Error::shape(
            path,
            format!(
                "cache slot {slot} holds {cap} rows; writing rows {off}..{} overflows it",
                off + l
            ),
        ));
    }
    let mut cache = match state.caches.get(slot).and_then(Option::as_ref) {
        Some(t) if t.shape() != cache_shape => {
            return Err(Error::shape(
                path,
                format!(
                    "cache slot {slot} is {:?}, this write wants {cache_shape:?}",
                    t.shape()
                ),
            ))
        }
        Some(t) => t.clone(),
        None => Tensor::zeros(cache_shape),
    };
    let xd = x.data();
    let cd = cache.data_mut();
    for bi in 0..b {
        for li in 0..l {
            for j in 0..c {
                cd[(bi * cap + off + li) * c + j] = xd[(bi * l + li) * c + j];
            }
        }
    }
    if state.caches.len() <= slot {
        state.caches.resize(slot + 1, None);
    }
    state.caches[slot] = Some(cache.clone());
    Ok(cache)
}

/// Per batch item, the hidden row at the first `eos_id` (or the first largest id).
fn gather_eos(path: &str, hidden: &Tensor, ids: &Tensor, eos_id: Option<u32>) -> Result<Out> {
    let (hs, is) = (hidden.shape(), ids.shape());
    let idv = ids
        .ids()
        .ok_or_else(|| Error::shape(path, "gather_eos wants integer ids"))?;
    if hs.len() != 3 || is.len() != 2 || hs[..2] != is[..] || hs[1] == 0 {
        return Err(Error::shape(
            path,
            format!("gather_eos over {hs:?} by ids {is:?}"),
        ));
    }
    let (b, l, d) = (hs[0], hs[1], hs[2]);
    let hd = hidden.to_f64();
    let mut y = Vec::with_capacity(b * d);
    for bi in 0..b {
        let row = &idv[bi * l..(bi + 1) * l];
        let pos = match eos_id {
            Some(e) => {
                // torch: (ids == eos).int().argmax(), which is 0 when no id matches.
                let mut found = 0;
                for (j, &id) in row.iter().enumerate() {
                    if id == i64::from(e) {
                        found = j;
                        break;
                    }
                }
                found
            }
            None => {
                // torch.argmax: the first position of the maximum.
                let mut best = 0;
                for (j, &id) in row.iter().enumerate() {
                    if id > row[best] {
                        best = j;
                    }
                }
                best
            }
        };
        y.extend_from_slice(&hd[(bi * l + pos) * d..(bi * l + pos + 1) * d]);
    }
    Ok((vec![b, d], y))
}

// ---------------------------------------------------------------------------------------
// Whole graphs
// ---------------------------------------------------------------------------------------

/// Run `g` with the reference: nodes in order, graph inputs bound by name, `params` indexed
/// by [`ParamId`](crate::ParamId). Returns the graph's outputs by name.
///
/// Cache views carry a live length: a [`Op::CacheWrite`] output `state.len + L` (L its rows),
/// a [`Op::CacheView`] `state.len + L` if this run already wrote its slot, else `state.len`;
/// attention over them sees that many keys. After the run `state.len` grows by L (all writes
/// of one graph have the same L; no writes, no change). A failing run leaves `state` as it
/// was.
pub fn run_graph(
    g: &Graph,
    params: &[Tensor],
    inputs: &[(String, Tensor)],
    state: &mut RefState,
) -> Result<Vec<(String, Tensor)>> {
    if params.len() != g.params.len() {
        return Err(Error::invalid(format!(
            "graph {}: {} parameters given, the graph has {}",
            g.name,
            params.len(),
            g.params.len()
        )));
    }
    for (p, t) in g.params.iter().zip(params) {
        if t.shape() != p.shape.as_slice() || t.dtype() != DType::F32 {
            return Err(Error::invalid(format!(
                "graph {}: parameter {} is {} {:?}, expected f32 {:?}",
                g.name,
                p.name,
                t.dtype().name(),
                t.shape(),
                p.shape
            )));
        }
    }
    for (name, _) in inputs {
        if g.input(name).is_none() {
            return Err(Error::input(
                name.as_str(),
                format!("graph {} has no such input", g.name),
            ));
        }
    }

    let mut values: Vec<Option<Tensor>> = vec![None; g.values.len()];
    for (name, v) in &g.inputs {
        let info = &g.values[*v];
        let t = inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| Error::input(name.as_str(), "not given"))?;
        if t.shape() != info.shape.as_slice() {
            return Err(Error::input(
                name.as_str(),
                format!("shape {:?}, the graph wants {:?}", t.shape(), info.shape),
            ));
        }
        let ok = if info.dtype.is_int() {
            t.ids().is_some()
        } else {
            info.dtype == DType::F32 && t.dtype() == DType::F32
        };
        if !ok {
            return Err(Error::input(
                name.as_str(),
                format!(
                    "{} data, the graph wants {}",
                    t.dtype().name(),
                    info.dtype.name()
                ),
            ));
        }
        values[*v] = Some(t.clone());
    }

    // Work on a copy so a failing run leaves the caller's state untouched.
    let mut st = state.clone();
    let mut live: Vec<Option<usize>> = vec![None; g.values.len()];
    // Rows written this run (None: no write yet) and the slots written.
    let mut rows: Option<usize> = None;
    let mut written: Vec<usize> = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        if let Op::Input { .. } = node.op {
            continue;
        }
        let args: Vec<&Tensor> = node
            .inputs
            .iter()
            .map(|&v| {
                values[v].as_ref().ok_or_else(|| {
                    Error::invalid(format!("{}: input value {v} was never computed", node.path))
                })
            })
            .collect::<Result<_>>()?;
        let ps: Vec<&Tensor> = node.op.params().iter().map(|&p| &params[p]).collect();
        let kv_len = match node.op {
            Op::Attention(_) => live[node.inputs[1]],
            _ => None,
        };
        let out = eval_node(g, i, &args, &ps, &mut st, kv_len)?;
        match node.op {
            Op::CacheWrite { slot } => {
                let l = g.values[node.inputs[0]].shape[1];
                if rows.is_some_and(|r| r != l) {
                    return Err(Error::shape(
                        node.path.as_str(),
                        format!(
                            "cache writes of one run must have the same length: {l} vs {}",
                            rows.unwrap_or(0)
                        ),
                    ));
                }
                rows = Some(l);
                written.push(slot);
                live[node.output] = Some(st.len + l);
            }
            Op::CacheView { slot } => {
                let extra = if written.contains(&slot) {
                    rows.unwrap_or(0)
                } else {
                    0
                };
                live[node.output] = Some(st.len + extra);
            }
            _ => {}
        }
        values[node.output] = Some(out);
    }
    st.len += rows.unwrap_or(0);

    let mut outs = Vec::with_capacity(g.outputs.len());
    for (name, v) in &g.outputs {
        let t = values[*v].clone().ok_or_else(|| {
            Error::invalid(format!(
                "graph {}: output {name} was never computed",
                g.name
            ))
        })?;
        outs.push((name.clone(), t));
    }
    *state = st;
    Ok(outs)
}

// ---------------------------------------------------------------------------------------
// MAGVIT-v2's mixers
// ---------------------------------------------------------------------------------------

fn squeeze_excite(path: &str, x: &Tensor, params: &[&Tensor]) -> Result<Out> {
    let s = x.shape().to_vec();
    let &[n, c, t, h, w] = s.as_slice() else {
        return Err(Error::shape(path, format!("squeeze-excitation over {s:?}")));
    };
    let [wk, bk, w1, b1, w2, b2] = [0, 1, 2, 3, 4, 5].map(|i| params[i].to_f64());
    let hidden = b1.len();
    let hw = h * w;
    let xd = x.to_f64();
    let mut y = vec![0.0; xd.len()];
    let at = |b: usize, ch: usize, f: usize| ((b * c + ch) * t + f) * hw;
    for b in 0..n {
        for f in 0..t {
            // attention-pooling weights over the frame's positions
            let logits: Vec<f64> = (0..hw)
                .map(|p| bk[0] + (0..c).map(|ch| wk[ch] * xd[at(b, ch, f) + p]).sum::<f64>())
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let z: f64 = e.iter().sum();
            let pooled: Vec<f64> = (0..c)
                .map(|ch| (0..hw).map(|p| e[p] / z * xd[at(b, ch, f) + p]).sum())
                .collect();
            let hid: Vec<f64> = (0..hidden)
                .map(|j| {
                    let v = b1[j] + (0..c).map(|ch| w1[j * c + ch] * pooled[ch]).sum::<f64>();
                    if v >= 0.0 {
                        v
                    } else {
                        0.1 * v
                    }
                })
                .collect();
            for ch in 0..c {
                let v = b2[ch]
                    + (0..hidden)
                        .map(|j| w2[ch * hidden + j] * hid[j])
                        .sum::<f64>();
                let gate = sigmoid(v);
                for p in 0..hw {
                    y[at(b, ch, f) + p] = gate * xd[at(b, ch, f) + p];
                }
            }
        }
    }
    Ok((s, y))
}

fn memory_kv(path: &str, x: &Tensor, table: &Tensor, index: usize) -> Result<Out> {
    let (s, ts) = (x.shape(), table.shape());
    let (&[b, l, hd], &[2, heads, m, d]) = (s, ts) else {
        return Err(Error::shape(path, format!("memory kv {ts:?} before {s:?}")));
    };
    if heads * d != hd || index > 1 {
        return Err(Error::shape(path, format!("memory kv {ts:?} before {s:?}")));
    }
    let (xd, td) = (x.to_f64(), table.to_f64());
    let mut y = Vec::with_capacity(b * (m + l) * hd);
    for bi in 0..b {
        for row in 0..m {
            for h in 0..heads {
                let base = ((index * heads + h) * m + row) * d;
                y.extend_from_slice(&td[base..base + d]);
            }
        }
        y.extend_from_slice(&xd[bi * l * hd..(bi + 1) * l * hd]);
    }
    Ok((vec![b, m + l, hd], y))
}

/// Taylor linear attention in its quadratic form: a = 1 + s + s²/2 over every key.
fn linear_attention(
    path: &str,
    inputs: &[&Tensor],
    heads: usize,
    d: usize,
    scale: f32,
) -> Result<Out> {
    let s = inputs[0].shape().to_vec();
    let &[b, l, hd] = s.as_slice() else {
        return Err(Error::shape(path, format!("linear attention over {s:?}")));
    };
    if hd != heads * d {
        return Err(Error::shape(path, format!("linear attention over {s:?}")));
    }
    let [q, k, v] = [0, 1, 2].map(|i| inputs[i].to_f64());
    let mut y = vec![0.0; q.len()];
    let sc = f64::from(scale);
    for bi in 0..b {
        for h in 0..heads {
            let row =
                |x: &[f64], i: usize| -> Vec<f64> { x[(bi * l + i) * hd + h * d..][..d].to_vec() };
            for i in 0..l {
                let qi = row(&q, i);
                let mut num = vec![0.0; d];
                let mut den = 0.0;
                for j in 0..l {
                    let kj = row(&k, j);
                    let dot: f64 = qi.iter().zip(&kj).map(|(a, b)| a * b).sum::<f64>() * sc;
                    let a = 1.0 + dot + dot * dot / 2.0;
                    den += a;
                    for (nv, vv) in num.iter_mut().zip(row(&v, j)) {
                        *nv += a * vv;
                    }
                }
                for (e, nv) in num.iter().enumerate() {
                    y[(bi * l + i) * hd + h * d + e] = nv / den.max(1e-5);
                }
            }
        }
    }
    Ok((s, y))
}

fn gate_loop(path: &str, x: &Tensor) -> Result<Out> {
    let s = x.shape();
    let &[n, t, c3] = s else {
        return Err(Error::shape(path, format!("gate loop over {s:?}")));
    };
    let c = c3 / 3;
    let xd = x.to_f64();
    let mut y = vec![0.0; n * t * c];
    for b in 0..n {
        for ch in 0..c {
            let mut h = 0.0;
            for f in 0..t {
                let row = &xd[(b * t + f) * c3..][..c3];
                h = sigmoid(row[2 * c + ch]) * h + row[c + ch];
                y[(b * t + f) * c + ch] = row[ch] * h;
            }
        }
    }
    Ok((vec![n, t, c], y))
}

fn token_shift(path: &str, x: &Tensor) -> Result<Out> {
    let s = x.shape().to_vec();
    let &[n, t, c] = s.as_slice() else {
        return Err(Error::shape(path, format!("token shift over {s:?}")));
    };
    let xd = x.to_f64();
    let mut y = vec![0.0; xd.len()];
    for b in 0..n {
        for f in 0..t {
            for ch in 0..c {
                y[(b * t + f) * c + ch] = if ch < c / 2 {
                    xd[(b * t + f) * c + ch]
                } else if f > 0 {
                    xd[(b * t + f - 1) * c + ch]
                } else {
                    0.0
                };
            }
        }
    }
    Ok((s, y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttentionKind, GraphBuilder};

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), data.to_vec()).unwrap()
    }

    fn close(got: &Tensor, want: &[f64], tol: f64) {
        let g = got.to_f64();
        assert_eq!(g.len(), want.len(), "{g:?} vs {want:?}");
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() <= tol, "{g:?} vs {want:?}");
        }
    }

    /// Run `g` with parameters given in param order, inputs by name; outputs by name.
    fn run(
        g: &Graph,
        params: &[&[f32]],
        inputs: &[(&str, Tensor)],
        state: &mut RefState,
    ) -> Result<Vec<(String, Tensor)>> {
        let ps: Vec<Tensor> = g
            .params
            .iter()
            .zip(params)
            .map(|(p, d)| t(&p.shape, d))
            .collect();
        let ins: Vec<(String, Tensor)> = inputs
            .iter()
            .map(|(n, x)| (n.to_string(), x.clone()))
            .collect();
        run_graph(g, &ps, &ins, state)
    }

    fn out1(r: Vec<(String, Tensor)>) -> Tensor {
        r.into_iter().next().unwrap().1
    }

    fn spec(heads: usize, kv_heads: usize, head_dim: usize, causal: bool) -> AttentionSpec {
        AttentionSpec {
            kind: AttentionKind::SelfAttn,
            heads,
            kv_heads,
            head_dim,
            scale: 1.0,
            causal,
            bias: false,
        }
    }

    /// q, k, v inputs of the given shapes and one attention node over them.
    fn attn_graph(
        qs: &[usize],
        ks: &[usize],
        spec: AttentionSpec,
        bias: Option<&[usize]>,
    ) -> Graph {
        let mut b = GraphBuilder::new("attn");
        let q = b.input("q", qs, DType::F32);
        let k = b.input("k", ks, DType::F32);
        let v = b.input("v", ks, DType::F32);
        let bias = bias.map(|s| b.input("bias", s, DType::F32));
        let y = b.attention("attn", q, k, v, bias, spec).unwrap();
        b.output("y", y);
        b.finish().unwrap()
    }

    #[test]
    fn erf_matches_known_values() {
        let known = [
            (0.0, 0.0),
            (1e-8, 1.1283791670955126e-08),
            (0.001, 0.0011283787909692365),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (2.5, 0.999593047982555),
            (3.0, 0.9999779095030014),
            (3.5, 0.9999992569016276),
            (4.0, 0.9999999845827421),
            (5.0, 0.9999999999984626),
            (6.0, 1.0),
        ];
        for (x, want) in known {
            assert!((erf(x) - want).abs() < 1e-12, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-12, "erf(-{x})");
        }
        // erfc in the tail, relative.
        let tail = [
            (3.0, 2.2090496998585438e-05),
            (4.0, 1.541725790028002e-08),
            (5.0, 1.5374597944280351e-12),
            (6.0, 2.1519736712498916e-17),
        ];
        for (x, want) in tail {
            assert!(((erfc_large(x) - want) / want).abs() < 1e-12, "erfc({x})");
        }
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    fn activations_at_known_points() {
        // gelu(1) = 0.5·(1 + erf(1/√2)), erf(1/√2) = 0.6826894921370859.
        assert!((activation(ActKind::Gelu, 1.0) - 0.8413447460685429).abs() < 1e-12);
        assert!((activation(ActKind::Silu, 1.0) - 0.7310585786300049).abs() < 1e-12);
        assert_eq!(activation(ActKind::GeluTanh, 0.0), 0.0);
        let q = activation(ActKind::QuickGelu, 1.0);
        assert!((q - 1.0 / (1.0 + (-1.702f64).exp())).abs() < 1e-15);
    }

    #[test]
    fn attention_two_keys_by_hand() {
        let g = attn_graph(&[1, 1, 2], &[1, 2, 2], spec(1, 1, 2, false), None);
        let mut st = RefState::new();
        let r = run(
            &g,
            &[],
            &[
                ("q", t(&[1, 1, 2], &[1.0, 0.0])),
                ("k", t(&[1, 2, 2], &[1.0, 0.0, 0.0, 1.0])),
                ("v", t(&[1, 2, 2], &[1.0, 2.0, 3.0, 4.0])),
            ],
            &mut st,
        )
        .unwrap();
        // scores (1, 0): p = (e/(e+1), 1/(e+1)).
        let (p0, p1) = (0.7310585786300049, 0.2689414213699951);
        close(&out1(r), &[p0 + 3.0 * p1, 2.0 * p0 + 4.0 * p1], 1e-6);
    }

    #[test]
    fn attention_bias_masks_and_broadcasts() {
        let mut s = spec(2, 2, 1, false);
        s.bias = true;
        // Bias (1, 1, 1, 2) broadcast over batch 2 and heads 2: key 1 masked out.
        let g = attn_graph(&[2, 1, 2], &[2, 2, 2], s, Some(&[1, 1, 1, 2]));
        let v = t(&[2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let r = run(
            &g,
            &[],
            &[
                ("q", Tensor::zeros(&[2, 1, 2])),
                ("k", Tensor::zeros(&[2, 2, 2])),
                ("v", v),
                ("bias", t(&[1, 1, 1, 2], &[0.0, f32::NEG_INFINITY])),
            ],
            &mut RefState::new(),
        )
        .unwrap();
        close(&out1(r), &[1.0, 2.0, 5.0, 6.0], 0.0);
    }

    #[test]
    fn causal_visibility_is_offset_by_lk_minus_lq() {
        let v = t(&[1, 3, 1], &[1.0, 2.0, 4.0]);
        // Lq = 1 < Lk = 3: the one query is the last position and sees every key.
        let g = attn_graph(&[1, 1, 1], &[1, 3, 1], spec(1, 1, 1, true), None);
        let ins = [
            ("q", Tensor::zeros(&[1, 1, 1])),
            ("k", Tensor::zeros(&[1, 3, 1])),
            ("v", v.clone()),
        ];
        let r = run(&g, &[], &ins, &mut RefState::new()).unwrap();
        close(&out1(r), &[7.0 / 3.0], 1e-6);
        // Lq = 2, Lk = 3: query 0 sees keys 0..=1, query 1 sees 0..=2 (equal scores: means).
        let g = attn_graph(&[1, 2, 1], &[1, 3, 1], spec(1, 1, 1, true), None);
        let ins = [
            ("q", Tensor::zeros(&[1, 2, 1])),
            ("k", Tensor::zeros(&[1, 3, 1])),
            ("v", v),
        ];
        let r = run(&g, &[], &ins, &mut RefState::new()).unwrap();
        close(&out1(r), &[1.5, 7.0 / 3.0], 1e-6);
    }

    #[test]
    fn gqa_heads_read_kv_head_h_over_group() {
        // 4 query heads over 2 kv heads: heads 0, 1 read kv head 0; heads 2, 3 kv head 1.
        let g = attn_graph(&[1, 1, 4], &[1, 2, 2], spec(4, 2, 1, false), None);
        let r = run(
            &g,
            &[],
            &[
                ("q", Tensor::zeros(&[1, 1, 4])),
                ("k", Tensor::zeros(&[1, 2, 2])),
                // key 0: (1, 10), key 1: (3, 30) for kv heads (0, 1).
                ("v", t(&[1, 2, 2], &[1.0, 10.0, 3.0, 30.0])),
            ],
            &mut RefState::new(),
        )
        .unwrap();
        close(&out1(r), &[2.0, 2.0, 20.0, 20.0], 1e-6);
    }

    fn rope_graph(l: usize, heads: usize, head_dim: usize) -> Graph {
        let mut b = GraphBuilder::new("rope");
        let x = b.input("x", &[1, l, heads * head_dim], DType::F32);
        let y = b.rope("rope", x, heads, head_dim, 10000.0).unwrap();
        b.output("y", y);
        b.finish().unwrap()
    }

    #[test]
    fn rope_identity_at_zero_and_rotation_at_one() {
        let g = rope_graph(1, 2, 4);
        let x = t(&[1, 1, 8], &[1.0, -2.0, 3.0, 0.5, 4.0, 5.0, -6.0, 7.0]);
        let r = run(&g, &[], &[("x", x.clone())], &mut RefState::new()).unwrap();
        close(&out1(r), &x.to_f64(), 0.0);

        // Position 1 (the state's offset), head_dim 2: the pair (1, 0) rotates by 1 radian.
        let g = rope_graph(1, 1, 2);
        let mut st = RefState {
            caches: vec![],
            len: 1,
        };
        let r = run(&g, &[], &[("x", t(&[1, 1, 2], &[1.0, 0.0]))], &mut st).unwrap();
        close(&out1(r), &[0.5403023058681398, 0.8414709848078965], 1e-7);
        assert_eq!(st.len, 1, "no cache writes, no advance");

        // Two positions from offset 0: the second row rotates (0, 1) by 1 radian.
        let g = rope_graph(2, 1, 2);
        let r = run(
            &g,
            &[],
            &[("x", t(&[1, 2, 2], &[1.0, 0.0, 0.0, 1.0]))],
            &mut RefState::new(),
        )
        .unwrap();
        close(
            &out1(r),
            &[1.0, 0.0, -0.8414709848078965, 0.5403023058681398],
            1e-7,
        );
    }

    /// Write q-less keys/values into slots 0 and 1 (capacity 4) and attend over them with
    /// zero queries: every output is the mean of the live values.
    fn cache_graph(l: usize) -> Graph {
        let mut b = GraphBuilder::new("decode");
        let x = b.input("x", &[1, l, 1], DType::F32);
        let q = b.input("q", &[1, l, 1], DType::F32);
        let k = b.cache_write("k", x, 0, 4).unwrap();
        let v = b.cache_write("v", x, 1, 4).unwrap();
        let y = b
            .attention("attn", q, k, v, None, spec(1, 1, 1, false))
            .unwrap();
        b.output("y", y);
        b.output("kcache", k);
        b.finish().unwrap()
    }

    #[test]
    fn cache_write_then_view_across_runs() {
        let mut st = RefState::new();
        let g = cache_graph(2);
        let r = run(
            &g,
            &[],
            &[
                ("x", t(&[1, 2, 1], &[1.0, 3.0])),
                ("q", Tensor::zeros(&[1, 2, 1])),
            ],
            &mut st,
        )
        .unwrap();
        close(&r[0].1, &[2.0, 2.0], 1e-6);
        close(&r[1].1, &[1.0, 3.0, 0.0, 0.0], 0.0);
        assert_eq!(st.len, 2);

        let g = cache_graph(1);
        let r = run(
            &g,
            &[],
            &[
                ("x", t(&[1, 1, 1], &[8.0])),
                ("q", Tensor::zeros(&[1, 1, 1])),
            ],
            &mut st,
        )
        .unwrap();
        close(&r[0].1, &[4.0], 1e-6);
        close(&r[1].1, &[1.0, 3.0, 8.0, 0.0], 0.0);
        assert_eq!(st.len, 3);

        // A graph that only views the caches sees state.len keys and leaves len alone.
        let mut b = GraphBuilder::new("view");
        let q = b.input("q", &[1, 1, 1], DType::F32);
        let k = b.cache_view("k", 0, [1, 4, 1]).unwrap();
        let v = b.cache_view("v", 1, [1, 4, 1]).unwrap();
        let y = b
            .attention("attn", q, k, v, None, spec(1, 1, 1, false))
            .unwrap();
        b.output("y", y);
        let gv = b.finish().unwrap();
        let r = run(&gv, &[], &[("q", Tensor::zeros(&[1, 1, 1]))], &mut st).unwrap();
        close(&out1(r), &[4.0], 1e-6);
        assert_eq!(st.len, 3);

        // Two more rows overflow the capacity of 4: an error, and the state is unchanged.
        let before = st.clone();
        let g = cache_graph(2);
        let e = run(
            &g,
            &[],
            &[
                ("x", Tensor::zeros(&[1, 2, 1])),
                ("q", Tensor::zeros(&[1, 2, 1])),
            ],
            &mut st,
        );
        assert!(e.is_err());
        assert_eq!(st, before);

        // A view of a slot never written is an error.
        let r = run(
            &gv,
            &[],
            &[("q", Tensor::zeros(&[1, 1, 1]))],
            &mut RefState::new(),
        );
        assert!(r.is_err());
    }

    #[test]
    fn conv2d_padding_stride_and_temporal() {
        let mut b = GraphBuilder::new("conv");
        let x = b.input("x", &[1, 1, 3, 3], DType::F32);
        let y0 = b.conv2d("c0", x, 1, 2, 1, [0, 0, 0, 0], false).unwrap();
        // Pad top and left by 1, stride 2.
        let y1 = b.conv2d("c1", x, 1, 2, 2, [1, 0, 1, 0], true).unwrap();
        b.output("y0", y0);
        b.output("y1", y1);
        let g = b.finish().unwrap();
        let xs: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let r = run(
            &g,
            &[&[1.0; 4], &[1.0; 4], &[0.5]],
            &[("x", t(&[1, 1, 3, 3], &xs))],
            &mut RefState::new(),
        )
        .unwrap();
        close(&r[0].1, &[12.0, 16.0, 24.0, 28.0], 0.0);
        close(&r[1].1, &[1.5, 5.5, 11.5, 28.5], 0.0);

        let mut b = GraphBuilder::new("temporal");
        let x = b.input("x", &[1, 1, 3, 1], DType::F32);
        let y = b.conv_temporal("t", x, 1, 3).unwrap();
        b.output("y", y);
        let g = b.finish().unwrap();
        let r = run(
            &g,
            &[&[1.0, 10.0, 100.0], &[0.5]],
            &[("x", t(&[1, 1, 3, 1], &[1.0, 2.0, 3.0]))],
            &mut RefState::new(),
        )
        .unwrap();
        close(&out1(r), &[210.5, 321.5, 32.5], 1e-9);
    }

    #[test]
    fn linear_norms_and_elementwise() {
        let mut b = GraphBuilder::new("misc");
        let x = b.input("x", &[2, 2], DType::F32);
        let lin = b.linear("lin", x, 3, true).unwrap();
        let ln = b.layer_norm("ln", x, 0.0).unwrap();
        let rms = b.rms_norm("rms", x, 0.0).unwrap();
        let row = b.input("row", &[2], DType::F32);
        let col = b.input("col", &[2, 1], DType::F32);
        let add = b.add("add", x, row).unwrap();
        let mul = b.mul("mul", x, col).unwrap();
        let tr = b.permute("tr", x, &[1, 0]).unwrap();
        let cat = b.concat("cat", &[x, tr], 1).unwrap();
        let sl = b.slice("sl", cat, 1, 1, 2).unwrap();
        let cl = b.clamp("cl", x, -1.5, 2.5);
        for (n, v) in [
            ("lin", lin),
            ("ln", ln),
            ("rms", rms),
            ("add", add),
            ("mul", mul),
            ("tr", tr),
            ("cat", cat),
            ("sl", sl),
            ("cl", cl),
        ] {
            b.output(n, v);
        }
        let g = b.finish().unwrap();
        let r = run(
            &g,
            &[
                &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
                &[0.0, 10.0, 100.0],
                &[1.0, 2.0],
                &[0.0, 1.0],
                &[1.0, 1.0],
            ],
            &[
                ("x", t(&[2, 2], &[1.0, 3.0, -2.0, 4.0])),
                ("row", t(&[2], &[10.0, 20.0])),
                ("col", t(&[2, 1], &[2.0, -1.0])),
            ],
            &mut RefState::new(),
        )
        .unwrap();
        let get = |n: &str| &r.iter().find(|(k, _)| k == n).unwrap().1;
        close(get("lin"), &[1.0, 13.0, 104.0, -2.0, 14.0, 102.0], 1e-6);
        // Rows (1, 3) and (-2, 4): normalized to (-1, 1) each, then ·(1, 2) + (0, 1).
        close(get("ln"), &[-1.0, 3.0, -1.0, 3.0], 1e-6);
        let (r0, r1) = ((5.0f64).sqrt(), (10.0f64).sqrt());
        close(get("rms"), &[1.0 / r0, 3.0 / r0, -2.0 / r1, 4.0 / r1], 1e-6);
        close(get("add"), &[11.0, 23.0, 8.0, 24.0], 0.0);
        close(get("mul"), &[2.0, 6.0, 2.0, -4.0], 0.0);
        close(get("tr"), &[1.0, -2.0, 3.0, 4.0], 0.0);
        close(get("cat"), &[1.0, 3.0, 1.0, -2.0, -2.0, 4.0, 3.0, 4.0], 0.0);
        close(get("sl"), &[3.0, 1.0, 4.0, 3.0], 0.0);
        close(get("cl"), &[1.0, 2.5, -1.5, 2.5], 0.0);
    }

    #[test]
    fn group_norm_geglu_upsample_timestep() {
        let mut b = GraphBuilder::new("misc2");
        let x = b.input("x", &[1, 2, 1, 2], DType::F32);
        let gn = b.group_norm("gn", x, 1, 0.0, false).unwrap();
        let up = b.upsample_nearest("up", x, 2, 4).unwrap();
        let h = b.input("h", &[1, 2], DType::F32);
        let gg = b.geglu("gg", h).unwrap();
        let ts = b.input("t", &[1], DType::F32);
        let tp = b.timestep_proj("tp", ts, 5, true, 0.0).unwrap();
        for (n, v) in [("gn", gn), ("up", up), ("gg", gg), ("tp", tp)] {
            b.output(n, v);
        }
        let g = b.finish().unwrap();
        let r = run(
            &g,
            &[&[1.0, 2.0], &[0.0, 1.0]],
            &[
                ("x", t(&[1, 2, 1, 2], &[1.0, 2.0, 3.0, 4.0])),
                ("h", t(&[1, 2], &[3.0, 1.0])),
                ("t", t(&[1], &[1.0])),
            ],
            &mut RefState::new(),
        )
        .unwrap();
        let get = |n: &str| &r.iter().find(|(k, _)| k == n).unwrap().1;
        // Mean 2.5, variance 1.25 over all four.
        let s = 1.25f64.sqrt();
        let want = [-1.5 / s, -0.5 / s, 2.0 * 0.5 / s + 1.0, 2.0 * 1.5 / s + 1.0];
        close(get("gn"), &want, 1e-6);
        close(
            get("up"),
            &[
                1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0,
            ],
            0.0,
        );
        close(get("gg"), &[3.0 * 0.8413447460685429], 1e-6);
        // half = 2: frequencies 1 and 10000^(-1/2) = 0.01; flipped: cos first; odd: zero pad.
        let want = [1f64.cos(), 0.01f64.cos(), 1f64.sin(), 0.01f64.sin(), 0.0];
        close(get("tp"), &want, 1e-7);
    }

    #[test]
    fn embeddings_gather_and_reshape_of_ids() {
        let mut b = GraphBuilder::new("text");
        let ids = b.input("input_ids", &[1, 3], DType::I64);
        let e = b.token_embedding("tok", ids, 4, 2).unwrap();
        let p = b.position_embedding("pos", e, 4).unwrap();
        let by_max = b.gather_eos("pool", p, ids, None).unwrap();
        let by_eos = b.gather_eos("pool_eos", p, ids, Some(1)).unwrap();
        let flat = b.reshape("flat", ids, &[3]).unwrap();
        for (n, v) in [("p", p), ("max", by_max), ("eos", by_eos), ("flat", flat)] {
            b.output(n, v);
        }
        let g = b.finish().unwrap();
        let tok: &[f32] = &[0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0];
        let pos: &[f32] = &[0.0, 10.0, 100.0, 1000.0, 0.5, 0.25, 7.0, 7.0];
        let ids = Tensor::from_ids(vec![1, 3], vec![3, 1, 2]).unwrap();
        let r = run(
            &g,
            &[tok, pos],
            &[("input_ids", ids.clone())],
            &mut RefState::new(),
        )
        .unwrap();
        let get = |n: &str| &r.iter().find(|(k, _)| k == n).unwrap().1;
        close(get("p"), &[3.0, 13.0, 101.0, 1001.0, 2.5, 2.25], 0.0);
        close(get("max"), &[3.0, 13.0], 0.0);
        close(get("eos"), &[101.0, 1001.0], 0.0);
        assert_eq!(get("flat").ids(), Some(&[3i64, 1, 2][..]));

        // Positions run from the state's offset; past the table is an error.
        let mut st = RefState {
            caches: vec![],
            len: 1,
        };
        let r = run(&g, &[tok, pos], &[("input_ids", ids.clone())], &mut st).unwrap();
        let get = |n: &str| &r.iter().find(|(k, _)| k == n).unwrap().1;
        close(get("p"), &[103.0, 1003.0, 1.5, 1.25, 9.0, 9.0], 0.0);
        st.len = 2;
        assert!(run(&g, &[tok, pos], &[("input_ids", ids)], &mut st).is_err());

        // An id outside the vocabulary, and f32 data for an id input, are input errors.
        let bad = Tensor::from_ids(vec![1, 3], vec![0, 4, 0]).unwrap();
        let e = run(&g, &[tok, pos], &[("input_ids", bad)], &mut RefState::new()).unwrap_err();
        assert!(matches!(e, Error::Input { .. }), "{e}");
        let e = run(
            &g,
            &[tok, pos],
            &[("input_ids", Tensor::zeros(&[1, 3]))],
            &mut RefState::new(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Input { .. }), "{e}");
    }

    #[test]
    fn eval_node_refuses_inputs_and_wrong_arguments() {
        let g = rope_graph(1, 1, 2);
        let mut st = RefState::new();
        assert!(eval_node(&g, 0, &[], &[], &mut st, None).is_err());
        let wrong = Tensor::zeros(&[1, 2, 2]);
        assert!(eval_node(&g, 1, &[&wrong], &[], &mut st, None).is_err());
        let x = t(&[1, 1, 2], &[1.0, 2.0]);
        let y = eval_node(&g, 1, &[&x], &[], &mut st, None).unwrap();
        close(&y, &[1.0, 2.0], 0.0);
    }
}
