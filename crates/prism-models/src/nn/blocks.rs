//! Building blocks shared by the UNet and VAE builders, named as diffusers names their
//! modules so parameter names equal checkpoint keys.

use prism_core::{ActKind, AttentionKind, AttentionSpec, Error, GraphBuilder, Result, ValueId};

pub fn join(prefix: &str, leaf: &str) -> String {
    if prefix.is_empty() {
        leaf.to_string()
    } else {
        format!("{prefix}.{leaf}")
    }
}

pub const SAME3: [usize; 4] = [1, 1, 1, 1];
pub const NOPAD: [usize; 4] = [0, 0, 0, 0];

/// The (N, C, H, W) shape of x, or a shape error naming `p` when x is not 4-D.
pub fn nchw(b: &GraphBuilder, p: &str, x: ValueId) -> Result<[usize; 4]> {
    match *b.shape(x) {
        [n, c, h, w] => Ok([n, c, h, w]),
        ref s => Err(Error::shape(p, format!("wants NCHW input, got {s:?}"))),
    }
}

/// diffusers `ResnetBlock2D` (time_embedding_norm "default", output_scale_factor 1).
/// `temb` is the already-activated time embedding (B, T) or None (VAE).
pub fn resnet(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    cout: usize,
    temb: Option<ValueId>,
    groups: usize,
    eps: f32,
) -> Result<ValueId> {
    let [_, cin, _, _] = nchw(b, p, x)?;
    let h = b.group_norm(&join(p, "norm1"), x, groups, eps, false)?;
    let h = b.act(&join(p, "nonlinearity"), h, ActKind::Silu);
    let mut h = b.conv2d(&join(p, "conv1"), h, cout, 3, 1, SAME3, true)?;
    if let Some(t) = temb {
        let e = b.linear(&join(p, "time_emb_proj"), t, cout, true)?;
        let n = b.shape(e).first().copied().unwrap_or(0);
        let e = b.reshape(&join(p, "time_emb_proj"), e, &[n, cout, 1, 1])?;
        h = b.add(&join(p, "add_temb"), h, e)?;
    }
    let h = b.group_norm(&join(p, "norm2"), h, groups, eps, false)?;
    let h = b.act(&join(p, "nonlinearity"), h, ActKind::Silu);
    let h = b.conv2d(&join(p, "conv2"), h, cout, 3, 1, SAME3, true)?;
    let skip = if cin != cout {
        b.conv2d(&join(p, "conv_shortcut"), x, cout, 1, 1, NOPAD, true)?
    } else {
        x
    };
    b.add(&join(p, "residual"), skip, h)
}

/// diffusers `Attention` with separate to_q / to_k / to_v and to_out.0, over (B, L, C)
/// tokens. `ctx` None means self attention.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    ctx: Option<ValueId>,
    heads: usize,
    head_dim: usize,
    qkv_bias: bool,
    kind: AttentionKind,
) -> Result<ValueId> {
    attention_with(b, p, x, ctx, heads, head_dim, (qkv_bias, true), kind)
}

/// [`attention`] with the biases of the q/k/v projections and of `to_out.0` chosen
/// (`(qkv, out)`; diffusers' `bias` and `out_bias`).
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    ctx: Option<ValueId>,
    heads: usize,
    head_dim: usize,
    (qkv_bias, out_bias): (bool, bool),
    kind: AttentionKind,
) -> Result<ValueId> {
    let inner = heads * head_dim;
    let c = *b
        .shape(x)
        .last()
        .ok_or_else(|| Error::shape(p, "attention over a scalar"))?;
    let src = ctx.unwrap_or(x);
    let q = b.linear(&join(p, "to_q"), x, inner, qkv_bias)?;
    let k = b.linear(&join(p, "to_k"), src, inner, qkv_bias)?;
    let v = b.linear(&join(p, "to_v"), src, inner, qkv_bias)?;
    let spec = AttentionSpec::mha(kind, heads, head_dim, false);
    let o = b.attention(p, q, k, v, None, spec)?;
    b.linear(&join(p, "to_out.0"), o, c, out_bias)
}

/// NCHW → (B, H·W, C).
pub fn to_tokens(b: &mut GraphBuilder, p: &str, x: ValueId) -> Result<ValueId> {
    let [n, c, h, w] = nchw(b, p, x)?;
    let t = b.permute(p, x, &[0, 2, 3, 1])?;
    b.reshape(p, t, &[n, h * w, c])
}

/// (B, H·W, C) → NCHW.
pub fn from_tokens(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    h: usize,
    w: usize,
) -> Result<ValueId> {
    let (n, c) = match *b.shape(x) {
        [n, _, c] => (n, c),
        ref s => {
            return Err(Error::shape(
                p,
                format!("wants (B, H·W, C) tokens, got {s:?}"),
            ))
        }
    };
    let t = b.reshape(p, x, &[n, h, w, c])?;
    b.permute(p, t, &[0, 3, 1, 2])
}

/// diffusers `Transformer2DModel` (continuous input) with `BasicTransformerBlock`s.
#[allow(clippy::too_many_arguments)]
pub fn transformer2d(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    ctx: ValueId,
    heads: usize,
    layers: usize,
    groups: usize,
    linear_proj: bool,
) -> Result<ValueId> {
    let [_, c, h, w] = nchw(b, p, x)?;
    if heads == 0 || c % heads != 0 {
        return Err(Error::shape(
            p,
            format!("{c} channels do not split into {heads} attention heads"),
        ));
    }
    let head_dim = c / heads;
    let inner = heads * head_dim;
    let n = b.group_norm(&join(p, "norm"), x, groups, 1e-6, false)?;
    let mut t = if linear_proj {
        let t = to_tokens(b, &join(p, "to_tokens"), n)?;
        b.linear(&join(p, "proj_in"), t, inner, true)?
    } else {
        let t = b.conv2d(&join(p, "proj_in"), n, inner, 1, 1, NOPAD, true)?;
        to_tokens(b, &join(p, "to_tokens"), t)?
    };
    for i in 0..layers {
        let bp = join(p, &format!("transformer_blocks.{i}"));
        let n1 = b.layer_norm(&join(&bp, "norm1"), t, 1e-5)?;
        let a1 = attention(
            b,
            &join(&bp, "attn1"),
            n1,
            None,
            heads,
            head_dim,
            false,
            AttentionKind::SelfAttn,
        )?;
        t = b.add(&join(&bp, "attn1.residual"), a1, t)?;
        let n2 = b.layer_norm(&join(&bp, "norm2"), t, 1e-5)?;
        let a2 = attention(
            b,
            &join(&bp, "attn2"),
            n2,
            Some(ctx),
            heads,
            head_dim,
            false,
            AttentionKind::Cross,
        )?;
        t = b.add(&join(&bp, "attn2.residual"), a2, t)?;
        let n3 = b.layer_norm(&join(&bp, "norm3"), t, 1e-5)?;
        let f = b.linear(&join(&bp, "ff.net.0.proj"), n3, inner * 4 * 2, true)?;
        let f = b.geglu(&join(&bp, "ff.net.0"), f)?;
        let f = b.linear(&join(&bp, "ff.net.2"), f, inner, true)?;
        t = b.add(&join(&bp, "ff.residual"), f, t)?;
    }
    let out = if linear_proj {
        let t = b.linear(&join(p, "proj_out"), t, c, true)?;
        from_tokens(b, &join(p, "from_tokens"), t, h, w)?
    } else {
        let t = from_tokens(b, &join(p, "from_tokens"), t, h, w)?;
        b.conv2d(&join(p, "proj_out"), t, c, 1, 1, NOPAD, true)?
    };
    b.add(&join(p, "residual"), out, x)
}

/// diffusers `Attention` as the VAE's mid block uses it: group norm, one head over the
/// channels, biases on q/k/v, residual connection.
pub fn vae_attention(b: &mut GraphBuilder, p: &str, x: ValueId, groups: usize) -> Result<ValueId> {
    let [_, c, h, w] = nchw(b, p, x)?;
    let n = b.group_norm(&join(p, "group_norm"), x, groups, 1e-6, false)?;
    let t = to_tokens(b, &join(p, "to_tokens"), n)?;
    let a = attention(b, p, t, None, 1, c, true, AttentionKind::SelfAttn)?;
    let o = from_tokens(b, &join(p, "from_tokens"), a, h, w)?;
    b.add(&join(p, "residual"), o, x)
}

/// diffusers `Downsample2D` with a conv: stride 2, `padding` on every side, or (padding 0)
/// the asymmetric (0, 1, 0, 1) pad the VAE encoder uses.
pub fn downsample(b: &mut GraphBuilder, p: &str, x: ValueId, padding: usize) -> Result<ValueId> {
    let [_, c, _, _] = nchw(b, p, x)?;
    let pad = if padding == 0 {
        [0, 1, 0, 1]
    } else {
        [padding; 4]
    };
    b.conv2d(&join(p, "conv"), x, c, 3, 2, pad, true)
}

/// diffusers `Upsample2D` with a conv: nearest resize (×2, or to `size`, the UNet's skip
/// size when the latent is not a multiple of its downscale) then 3×3 conv.
pub fn upsample(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    size: Option<(usize, usize)>,
) -> Result<ValueId> {
    let [_, c, h, w] = nchw(b, p, x)?;
    let (h, w) = size.unwrap_or((h * 2, w * 2));
    let u = b.upsample_nearest(&join(p, "interpolate"), x, h, w)?;
    b.conv2d(&join(p, "conv"), u, c, 3, 1, SAME3, true)
}

/// SiLU as its own node (for the UNet's time embedding path).
pub fn silu(b: &mut GraphBuilder, p: &str, x: ValueId) -> ValueId {
    b.act(p, x, ActKind::Silu)
}

/// x · (1 + scale) + shift (adaptive normalization's modulation), scale and shift broadcast
/// over x's positions: x + x·scale + shift.
pub fn modulate(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    scale: ValueId,
    shift: ValueId,
) -> Result<ValueId> {
    let xs = b.mul(&join(p, "scale"), x, scale)?;
    let y = b.add(&join(p, "plus_scaled"), x, xs)?;
    b.add(&join(p, "shift"), y, shift)
}
