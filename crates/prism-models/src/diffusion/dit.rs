//! Diffusion transformers: diffusers' `PixArtTransformer2DModel` (adaLN-single, cross attention
//! to T5 captions; PixArt-α/Σ) and `DiTTransformer2DModel` (adaLN-zero, class-conditional).
//! Both patchify the latent (a stride-p convolution) and add fixed 2D sin-cos positions (a graph
//! input, [`sincos_pos_embed`]), run `BasicTransformerBlock`s with gated residuals over the patch
//! tokens, and unpatchify; with learned sigma the output has twice the latent channels.

use crate::config::{Cfg, MAX_CHANNELS, MAX_LAYERS, MAX_SAMPLE_SIZE, MAX_TABLE};
use crate::nn::blocks::{self, join};
use prism_core::{
    ActKind, AttentionKind, DType, Error, Graph, GraphBuilder, Result, Tensor, ValueId,
};
use serde_json::json;

/// Which conditioning a transformer takes.
#[derive(Clone, Debug, PartialEq)]
pub enum Conditioning {
    /// PixArt: adaLN-single from the timestep (and, with `additional`, resolution and aspect
    /// ratio), cross attention to captions of `caption_channels` projected to the width.
    Caption {
        caption_channels: usize,
        cross_attention_dim: usize,
        additional: bool,
    },
    /// DiT: adaLN-zero from the timestep and a class label (`num_classes` + 1 rows: the last
    /// is the unconditional class).
    Class { num_classes: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct DitConfig {
    pub heads: usize,
    pub head_dim: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_layers: usize,
    pub sample_size: usize,
    pub patch_size: usize,
    pub attention_bias: bool,
    pub norm_elementwise_affine: bool,
    pub norm_eps: f32,
    /// Scale of the sin-cos positions (`interpolation_scale`; PixArt's default
    /// max(sample_size / 64, 1), DiT's 1).
    pub interpolation_scale: f32,
    pub cond: Conditioning,
}

/// `PixArtTransformer2DModel` fields (and the legacy `Transformer2DModel` ones, accepted at
/// their defaults).
const PIXART_FIELDS: &[&str] = &[
    "num_attention_heads",
    "attention_head_dim",
    "in_channels",
    "out_channels",
    "num_layers",
    "dropout",
    "norm_num_groups",
    "cross_attention_dim",
    "attention_bias",
    "sample_size",
    "patch_size",
    "activation_fn",
    "num_embeds_ada_norm",
    "upcast_attention",
    "norm_type",
    "norm_elementwise_affine",
    "norm_eps",
    "interpolation_scale",
    "use_additional_conditions",
    "caption_channels",
    "attention_type",
    // legacy Transformer2DModel
    "num_vector_embeds",
    "use_linear_projection",
    "only_cross_attention",
    "double_self_attention",
];

impl DitConfig {
    pub fn inner(&self) -> usize {
        self.heads * self.head_dim
    }

    /// `PixArtTransformer2DModel`, or a legacy `Transformer2DModel` config with
    /// `norm_type: ada_norm_single` (diffusers remaps those to PixArt; ada_norm_zero ones to DiT).
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let class = c.str_or("_class_name", "PixArtTransformer2DModel")?;
        let norm = c.str_or("norm_type", "")?;
        match (class.as_str(), norm.as_str()) {
            ("DiTTransformer2DModel", _) | ("Transformer2DModel", "ada_norm_zero") => {
                return Self::dit_from_cfg(c)
            }
            ("PixArtTransformer2DModel", _) | ("Transformer2DModel", "ada_norm_single") => {}
            ("Transformer2DModel", n) => {
                return Err(c.err(format!(
                    "`Transformer2DModel` with norm_type {n:?}: prism runs the ada_norm_single (PixArt) and ada_norm_zero (DiT) forms"
                )))
            }
            (other, _) => {
                return Err(c.err(format!(
                    "`_class_name` {other:?} is not PixArtTransformer2DModel or DiTTransformer2DModel"
                )))
            }
        }
        c.only_keys("PixArtTransformer2DModel", PIXART_FIELDS)?;
        c.expect("norm_type", &[json!("ada_norm_single")])?;
        c.expect("num_vector_embeds", &[])?;
        for key in [
            "use_linear_projection",
            "only_cross_attention",
            "double_self_attention",
        ] {
            c.expect(key, &[json!(false)])?;
        }
        let (sample_size, patch, heads, head_dim) = Self::common(c, 128)?;
        let inner = heads * head_dim;
        let cross = c.usize_in("cross_attention_dim", inner, 1, MAX_CHANNELS)?;
        if cross != inner {
            return Err(c.err(format!(
                "`cross_attention_dim` = {cross} differs from the width {inner} (heads × head dim) the caption projection maps to"
            )));
        }
        let caption_channels = c.usize_req("caption_channels")?;
        let additional = match c.v.get("use_additional_conditions") {
            Some(serde_json::Value::Bool(b)) => *b,
            // diffusers: on for the 1024 model (sample_size 128), off otherwise.
            _ => sample_size == 128,
        };
        if additional && inner % 3 != 0 {
            return Err(c.err(format!(
                "`use_additional_conditions` needs a width divisible by 3 (resolution and aspect-ratio embeddings of width/3), got {inner}"
            )));
        }
        let interp = match c.v.get("interpolation_scale") {
            Some(v) if !v.is_null() => c.f32_positive("interpolation_scale", 1.0)?,
            _ => ((sample_size / 64).max(1)) as f32,
        };
        let cfg = Self {
            heads,
            head_dim,
            in_channels: c.usize_in("in_channels", 4, 1, MAX_CHANNELS)?,
            out_channels: c.usize_in("out_channels", 8, 1, MAX_CHANNELS)?,
            num_layers: c.usize_in("num_layers", 28, 1, MAX_LAYERS)?,
            sample_size,
            patch_size: patch,
            attention_bias: c.bool_or("attention_bias", true)?,
            norm_elementwise_affine: c.bool_or("norm_elementwise_affine", false)?,
            norm_eps: c.f32_at_least("norm_eps", 1e-6, 0.0)?,
            interpolation_scale: interp,
            cond: Conditioning::Caption {
                caption_channels,
                cross_attention_dim: cross,
                additional,
            },
        };
        Ok(cfg)
    }

    fn dit_from_cfg(c: &Cfg) -> Result<Self> {
        c.only_keys("DiTTransformer2DModel", PIXART_FIELDS)?;
        c.expect("norm_type", &[json!("ada_norm_zero")])?;
        for key in [
            "caption_channels",
            "cross_attention_dim",
            "num_vector_embeds",
        ] {
            c.expect(key, &[])?;
        }
        let (sample_size, patch, heads, head_dim) = Self::common(c, 32)?;
        let in_channels = c.usize_in("in_channels", 4, 1, MAX_CHANNELS)?;
        Ok(Self {
            heads,
            head_dim,
            in_channels,
            out_channels: c.usize_in("out_channels", in_channels, 1, MAX_CHANNELS)?,
            num_layers: c.usize_in("num_layers", 28, 1, MAX_LAYERS)?,
            sample_size,
            patch_size: patch,
            attention_bias: c.bool_or("attention_bias", true)?,
            norm_elementwise_affine: c.bool_or("norm_elementwise_affine", false)?,
            norm_eps: c.f32_at_least("norm_eps", 1e-5, 0.0)?,
            interpolation_scale: 1.0,
            cond: Conditioning::Class {
                num_classes: c.usize_in("num_embeds_ada_norm", 1000, 1, MAX_TABLE)?,
            },
        })
    }

    /// The fields PixArt and DiT read alike: (sample_size, patch, heads, head_dim).
    fn common(c: &Cfg, default_sample: usize) -> Result<(usize, usize, usize, usize)> {
        c.expect("activation_fn", &[json!("gelu-approximate")])?;
        c.expect("upcast_attention", &[json!(false)])?;
        c.expect("attention_type", &[json!("default")])?;
        let p = c.f64_or("dropout", 0.0)?;
        if !(0.0..1.0).contains(&p) {
            return Err(c.err(format!("`dropout` = {p} is not a probability below 1")));
        }
        let sample_size = c.usize_in("sample_size", default_sample, 1, MAX_SAMPLE_SIZE)?;
        let patch = c.usize_in("patch_size", 2, 1, MAX_SAMPLE_SIZE)?;
        let heads = c.usize_in("num_attention_heads", 16, 1, MAX_CHANNELS)?;
        let head_dim = c.usize_in("attention_head_dim", 72, 1, MAX_CHANNELS)?;
        if (heads * head_dim) % 2 != 0 {
            return Err(c.err(format!(
                "the width {} (heads × head dim) must be even for 2D sin-cos positions",
                heads * head_dim
            )));
        }
        let _ = c.usize_or("norm_num_groups", 32)?;
        let _ = c.usize_or("num_embeds_ada_norm", 1000)?;
        Ok((sample_size, patch, heads, head_dim))
    }

    /// Check a latent's size against the patch size: one line naming it.
    pub fn check_latent(&self, h: usize, w: usize) -> Result<()> {
        let p = self.patch_size;
        if h == 0 || w == 0 || h % p != 0 || w % p != 0 {
            return Err(Error::invalid(format!(
                "latent {h}x{w} does not split into {p}x{p} patches (patch_size {p})"
            )));
        }
        if matches!(self.cond, Conditioning::Class { .. }) && h != w {
            return Err(Error::invalid(format!(
                "latent {h}x{w}: DiT unpatchifies a square grid (as diffusers does)"
            )));
        }
        Ok(())
    }

    /// The positions of a (h/p × w/p) patch grid, (1, L, width): diffusers' `PatchEmbed`
    /// (base size sample_size / p, this config's interpolation scale).
    pub fn pos_embed(&self, h: usize, w: usize) -> Result<Tensor> {
        let p = self.patch_size;
        sincos_pos_embed(
            self.inner(),
            (h / p, w / p),
            self.sample_size / p,
            self.interpolation_scale,
        )
    }
}

/// diffusers' `get_2d_sincos_pos_embed(D, (gh, gw), base_size, interpolation_scale)` as a
/// (1, gh·gw, D) tensor: token (r, c) gets [sincos(x_c), sincos(y_r)], each half
/// [sin(pos·ω), cos(pos·ω)] with ω_k = 10000^(−k/(D/4)) (float64, as torch on the CPU), the
/// coordinates arange(n) / (n / base_size) / scale in float32.
pub fn sincos_pos_embed(
    d: usize,
    (gh, gw): (usize, usize),
    base: usize,
    scale: f32,
) -> Result<Tensor> {
    if d % 4 != 0 {
        return Err(Error::invalid(format!(
            "2D sin-cos positions need a width divisible by 4, got {d}"
        )));
    }
    let coords = |n: usize| -> Vec<f64> {
        let step = (n as f64 / base as f64) as f32;
        (0..n).map(|i| f64::from(i as f32 / step / scale)).collect()
    };
    let (ys, xs) = (coords(gh), coords(gw));
    let q = d / 4;
    let omega: Vec<f64> = (0..q)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / q as f64))
        .collect();
    let mut out = Vec::with_capacity(gh * gw * d);
    for y in &ys {
        for x in &xs {
            for pos in [x, y] {
                out.extend(omega.iter().map(|o| (pos * o).sin() as f32));
                out.extend(omega.iter().map(|o| (pos * o).cos() as f32));
            }
        }
    }
    Tensor::new(vec![1, gh * gw, d], out)
}

/// The graph for a (batch, in_channels, h, w) latent. Inputs `hidden_states`, `timestep` (B,),
/// `pos_embed` (1, L, width); PixArt adds `encoder_hidden_states` (B, text_len, caption),
/// `encoder_attention_bias` (B, 1, 1, text_len) (0 or −10000, diffusers' form of the mask) and
/// with additional conditions `resolution` (B, 2), `aspect_ratio` (B, 1); DiT adds
/// `class_labels` (B,) int64. Output `sample` (B, out_channels, h, w).
pub fn build(cfg: &DitConfig, batch: usize, h: usize, w: usize, text_len: usize) -> Result<Graph> {
    cfg.check_latent(h, w)?;
    let mut b = GraphBuilder::new("transformer");
    let d = cfg.inner();
    let p = cfg.patch_size;
    let (gh, gw) = (h / p, w / p);
    let x = b.input("hidden_states", &[batch, cfg.in_channels, h, w], DType::F32);
    let t = b.input("timestep", &[batch], DType::F32);
    let pos = b.input("pos_embed", &[1, gh * gw, d], DType::F32);
    let x = b.conv2d("pos_embed.proj", x, d, p, p, [0; 4], true)?;
    let x = blocks::to_tokens(&mut b, "pos_embed.flatten", x)?;
    let mut x = b.add("pos_embed.add", x, pos)?;
    let ln = |b: &mut GraphBuilder, path: &str, x: ValueId, eps: f32| {
        let aff = cfg.norm_elementwise_affine;
        b.layer_norm_affine(path, x, eps, aff, aff)
    };
    let ff = |b: &mut GraphBuilder, path: &str, x: ValueId| -> Result<ValueId> {
        let f = b.linear(&join(path, "net.0.proj"), x, 4 * d, true)?;
        let f = b.act(&join(path, "net.0"), f, ActKind::GeluTanh);
        b.linear(&join(path, "net.2"), f, d, true)
    };
    let rows = |b: &mut GraphBuilder, path: &str, v: ValueId, k: usize| -> Result<ValueId> {
        b.slice(path, v, 1, k, 1)
    };
    let out = match &cfg.cond {
        Conditioning::Caption {
            caption_channels,
            additional,
            ..
        } => {
            let ctx = b.input(
                "encoder_hidden_states",
                &[batch, text_len, *caption_channels],
                DType::F32,
            );
            let mask = b.input(
                "encoder_attention_bias",
                &[batch, 1, 1, text_len],
                DType::F32,
            );
            // adaLN-single: the timestep (+ size conditions) embedded once, 6·D per block.
            let mut e =
                timestep_embedding(&mut b, "adaln_single.emb.timestep_embedder", t, d, 0.0)?;
            if *additional {
                let res = b.input("resolution", &[batch, 2], DType::F32);
                let ar = b.input("aspect_ratio", &[batch, 1], DType::F32);
                let res = b.reshape("adaln_single.emb.resolution", res, &[batch * 2])?;
                let r = timestep_embedding(
                    &mut b,
                    "adaln_single.emb.resolution_embedder",
                    res,
                    d / 3,
                    0.0,
                )?;
                let r = b.reshape("adaln_single.emb.resolution", r, &[batch, 2 * (d / 3)])?;
                let ar = b.reshape("adaln_single.emb.aspect_ratio", ar, &[batch])?;
                let a = timestep_embedding(
                    &mut b,
                    "adaln_single.emb.aspect_ratio_embedder",
                    ar,
                    d / 3,
                    0.0,
                )?;
                let sizes = b.concat("adaln_single.emb.sizes", &[r, a], 1)?;
                e = b.add("adaln_single.emb.add", e, sizes)?;
            }
            let s = b.act("adaln_single.silu", e, ActKind::Silu);
            let t6 = b.linear("adaln_single.linear", s, 6 * d, true)?;
            let t6 = b.reshape("adaln_single.chunks", t6, &[batch, 6, d])?;
            // Captions → width: linear, GELU (tanh), linear.
            let c = b.linear("caption_projection.linear_1", ctx, d, true)?;
            let c = b.act("caption_projection.act_1", c, ActKind::GeluTanh);
            let ctx = b.linear("caption_projection.linear_2", c, d, true)?;
            for i in 0..cfg.num_layers {
                let q = format!("transformer_blocks.{i}");
                let ss =
                    b.add_table(&join(&q, "scale_shift"), t6, &join(&q, "scale_shift_table"))?;
                let [shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp] =
                    six_chunks(&mut b, &q, ss)?;
                let n = ln(&mut b, &join(&q, "norm1"), x, cfg.norm_eps)?;
                let n =
                    blocks::modulate(&mut b, &join(&q, "norm1.modulate"), n, scale_msa, shift_msa)?;
                let a = self_attention(&mut b, &join(&q, "attn1"), n, cfg)?;
                let a = b.mul(&join(&q, "attn1.gate"), a, gate_msa)?;
                x = b.add(&join(&q, "attn1.residual"), a, x)?;
                let a = cross_attention(&mut b, &join(&q, "attn2"), x, ctx, mask, cfg)?;
                x = b.add(&join(&q, "attn2.residual"), a, x)?;
                let n = ln(&mut b, &join(&q, "norm2"), x, cfg.norm_eps)?;
                let n =
                    blocks::modulate(&mut b, &join(&q, "norm2.modulate"), n, scale_mlp, shift_mlp)?;
                let f = ff(&mut b, &join(&q, "ff"), n)?;
                let f = b.mul(&join(&q, "ff.gate"), f, gate_mlp)?;
                x = b.add(&join(&q, "ff.residual"), f, x)?;
            }
            // Output: (shift, scale) = scale_shift_table (2, D) + the embedded timestep.
            let e = b.reshape("out.embedded_timestep", e, &[batch, 1, d])?;
            let e2 = b.concat("out.embedded_timestep.rows", &[e, e], 1)?;
            let ss = b.add_table("out.scale_shift", e2, "scale_shift_table")?;
            let shift = rows(&mut b, "out.shift", ss, 0)?;
            let scale = rows(&mut b, "out.scale", ss, 1)?;
            let n = b.layer_norm_affine("norm_out", x, 1e-6, false, false)?;
            let n = blocks::modulate(&mut b, "norm_out.modulate", n, scale, shift)?;
            b.linear("proj_out", n, p * p * cfg.out_channels, true)?
        }
        Conditioning::Class { num_classes } => {
            let labels = b.input("class_labels", &[batch], DType::I64);
            for i in 0..cfg.num_layers {
                let q = format!("transformer_blocks.{i}");
                // Every block embeds timestep and class itself (its own tables).
                let cond =
                    class_conditioning(&mut b, &join(&q, "norm1.emb"), t, labels, d, *num_classes)?;
                let s = b.act(&join(&q, "norm1.silu"), cond, ActKind::Silu);
                let e = b.linear(&join(&q, "norm1.linear"), s, 6 * d, true)?;
                let e = b.reshape(&join(&q, "norm1.chunks"), e, &[batch, 6, d])?;
                let [shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp] =
                    six_chunks(&mut b, &q, e)?;
                // AdaLayerNormZero's norm: no affine, eps 1e-6.
                let n = b.layer_norm_affine(&join(&q, "norm1.norm"), x, 1e-6, false, false)?;
                let n =
                    blocks::modulate(&mut b, &join(&q, "norm1.modulate"), n, scale_msa, shift_msa)?;
                let a = self_attention(&mut b, &join(&q, "attn1"), n, cfg)?;
                let a = b.mul(&join(&q, "attn1.gate"), a, gate_msa)?;
                x = b.add(&join(&q, "attn1.residual"), a, x)?;
                let n = ln(&mut b, &join(&q, "norm3"), x, cfg.norm_eps)?;
                let n =
                    blocks::modulate(&mut b, &join(&q, "norm3.modulate"), n, scale_mlp, shift_mlp)?;
                let f = ff(&mut b, &join(&q, "ff"), n)?;
                let f = b.mul(&join(&q, "ff.gate"), f, gate_mlp)?;
                x = b.add(&join(&q, "ff.residual"), f, x)?;
            }
            // diffusers embeds timestep and class again for the output, with block 0's embedder.
            b.reuse_params("transformer_blocks.0.norm1.emb.");
            let cond = class_conditioning(
                &mut b,
                "transformer_blocks.0.norm1.emb",
                t,
                labels,
                d,
                *num_classes,
            )?;
            let s = b.act("proj_out_1.silu", cond, ActKind::Silu);
            let e = b.linear("proj_out_1", s, 2 * d, true)?;
            let e = b.reshape("proj_out_1.chunks", e, &[batch, 2, d])?;
            let shift = rows(&mut b, "out.shift", e, 0)?;
            let scale = rows(&mut b, "out.scale", e, 1)?;
            let n = b.layer_norm_affine("norm_out", x, 1e-6, false, false)?;
            let n = blocks::modulate(&mut b, "norm_out.modulate", n, scale, shift)?;
            b.linear("proj_out_2", n, p * p * cfg.out_channels, true)?
        }
    };
    // Unpatchify: (B, gh·gw, p·p·C) → (B, C, gh·p, gw·p).
    let c = cfg.out_channels;
    let y = b.reshape("unpatchify", out, &[batch, gh, gw, p, p, c])?;
    let y = b.permute("unpatchify", y, &[0, 5, 1, 3, 2, 4])?;
    let y = b.reshape("unpatchify", y, &[batch, c, h, w])?;
    b.output("sample", y);
    b.finish()
}

/// The six (B, 1, D) rows of an adaptive norm's (B, 6, D) modulation: shift, scale and gate of
/// the attention, then of the feed-forward.
fn six_chunks(b: &mut GraphBuilder, p: &str, e: ValueId) -> Result<[ValueId; 6]> {
    let names = [
        "shift_msa",
        "scale_msa",
        "gate_msa",
        "shift_mlp",
        "scale_mlp",
        "gate_mlp",
    ];
    let mut out = [e; 6];
    for (k, name) in names.into_iter().enumerate() {
        out[k] = b.slice(&join(p, name), e, 1, k, 1)?;
    }
    Ok(out)
}

/// diffusers' `Timesteps(256, flip_sin_to_cos=True, shift)` then `TimestepEmbedding(256 → dim)`.
fn timestep_embedding(
    b: &mut GraphBuilder,
    p: &str,
    t: ValueId,
    dim: usize,
    shift: f32,
) -> Result<ValueId> {
    let f = b.timestep_proj(&join(p, "time_proj"), t, 256, true, shift)?;
    let e = b.linear(&join(p, "linear_1"), f, dim, true)?;
    let e = b.act(&join(p, "act"), e, ActKind::Silu);
    b.linear(&join(p, "linear_2"), e, dim, true)
}

/// `CombinedTimestepLabelEmbeddings`: timestep embedding (shift 1) + the class's row.
fn class_conditioning(
    b: &mut GraphBuilder,
    p: &str,
    t: ValueId,
    labels: ValueId,
    d: usize,
    classes: usize,
) -> Result<ValueId> {
    let f = b.timestep_proj(&join(p, "time_proj"), t, 256, true, 1.0)?;
    let e = b.linear(&join(p, "timestep_embedder.linear_1"), f, d, true)?;
    let e = b.act(&join(p, "timestep_embedder.act"), e, ActKind::Silu);
    let e = b.linear(&join(p, "timestep_embedder.linear_2"), e, d, true)?;
    let c = b.token_embedding(
        &join(p, "class_embedder.embedding_table"),
        labels,
        classes + 1,
        d,
    )?;
    b.add(&join(p, "add"), e, c)
}

fn self_attention(b: &mut GraphBuilder, p: &str, x: ValueId, cfg: &DitConfig) -> Result<ValueId> {
    blocks::attention_with(
        b,
        p,
        x,
        None,
        cfg.heads,
        cfg.head_dim,
        (cfg.attention_bias, true),
        AttentionKind::SelfAttn,
    )
}

/// Cross attention to the projected captions with the padding mask as a bias.
fn cross_attention(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    ctx: ValueId,
    mask: ValueId,
    cfg: &DitConfig,
) -> Result<ValueId> {
    let inner = cfg.inner();
    let bias = cfg.attention_bias;
    let q = b.linear(&join(p, "to_q"), x, inner, bias)?;
    let k = b.linear(&join(p, "to_k"), ctx, inner, bias)?;
    let v = b.linear(&join(p, "to_v"), ctx, inner, bias)?;
    let spec = prism_core::AttentionSpec {
        bias: true,
        ..prism_core::AttentionSpec::mha(AttentionKind::Cross, cfg.heads, cfg.head_dim, false)
    };
    let o = b.attention(p, q, k, v, Some(mask), spec)?;
    b.linear(&join(p, "to_out.0"), o, inner, true)
}

/// diffusers' cross-attention mask as the additive bias the graph takes: (1 − m)·(−10000),
/// shaped (B, 1, 1, L).
pub fn mask_bias(mask: &Tensor) -> Result<Tensor> {
    let &[bn, l] = mask.shape() else {
        return Err(Error::input(
            "encoder_attention_mask",
            format!("shape {:?}; expected (batch, length)", mask.shape()),
        ));
    };
    let vals: Vec<f32> = match mask.ids() {
        Some(ids) => ids.iter().map(|&v| v as f32).collect(),
        None => mask.data().to_vec(),
    };
    if let Some(bad) = vals.iter().find(|&&v| v != 0.0 && v != 1.0) {
        return Err(Error::input(
            "encoder_attention_mask",
            format!("holds {bad}; a mask is 1 (attend) or 0 (padding)"),
        ));
    }
    Tensor::new(
        vec![bn, 1, 1, l],
        vals.iter().map(|&m| (1.0 - m) * -10000.0).collect(),
    )
}
