//! diffusers' `UVit2DModel`: aMUSEd's masked-token transformer. Token ids (B, h, w) are
//! embedded, run through a convolutional U-ViT down block (ConvNeXt blocks and attention to
//! the text), a stack of transformer layers with adaptive RMS/layer norms conditioned on the
//! pooled text and micro-conditions, an up block, and an MLM head giving logits over the
//! codebook at every position.

use crate::config::{Cfg, MAX_CHANNELS, MAX_LAYERS, MAX_SAMPLE_SIZE, MAX_TABLE};
use crate::nn::blocks::{self, join, NOPAD};
use prism_core::{ActKind, AttentionKind, DType, Error, Graph, GraphBuilder, Result, ValueId};

/// Every `UVit2DModel` config field prism reads or checks.
const FIELDS: &[&str] = &[
    "hidden_size",
    "use_bias",
    "hidden_dropout",
    "cond_embed_dim",
    "micro_cond_encode_dim",
    "micro_cond_embed_dim",
    "encoder_hidden_size",
    "vocab_size",
    "codebook_size",
    "in_channels",
    "block_out_channels",
    "num_res_blocks",
    "downsample",
    "upsample",
    "block_num_heads",
    "num_hidden_layers",
    "num_attention_heads",
    "attention_dropout",
    "intermediate_size",
    "layer_norm_eps",
    "ln_elementwise_affine",
    "sample_size",
];

/// The micro-conditions aMUSEd embeds: width, height, crop top, crop left, aesthetic score.
pub const MICRO_CONDS: usize = 5;

#[derive(Clone, Debug, PartialEq)]
pub struct UVitConfig {
    pub hidden_size: usize,
    pub use_bias: bool,
    pub cond_embed_dim: usize,
    pub micro_cond_encode_dim: usize,
    pub micro_cond_embed_dim: usize,
    pub encoder_hidden_size: usize,
    pub vocab_size: usize,
    pub codebook_size: usize,
    pub in_channels: usize,
    pub block_out_channels: usize,
    pub num_res_blocks: usize,
    pub downsample: bool,
    pub upsample: bool,
    pub block_num_heads: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub layer_norm_eps: f32,
    pub ln_elementwise_affine: bool,
    pub sample_size: usize,
}

impl UVitConfig {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let class = c.str_or("_class_name", "UVit2DModel")?;
        if class != "UVit2DModel" {
            return Err(c.err(format!("`_class_name` {class:?} is not UVit2DModel")));
        }
        c.only_keys("UVit2DModel", FIELDS)?;
        for key in ["hidden_dropout", "attention_dropout"] {
            // Dropout does nothing at inference; any probability in [0, 1) is accepted.
            let p = c.f64_or(key, 0.0)?;
            if !(0.0..1.0).contains(&p) {
                return Err(c.err(format!("`{key}` = {p} is not a probability below 1")));
            }
        }
        let hidden_size = c.usize_in("hidden_size", 1024, 1, MAX_CHANNELS)?;
        let heads = c.usize_in("num_attention_heads", 16, 1, MAX_CHANNELS)?;
        c.check_divides("num_attention_heads", heads, "hidden_size", hidden_size)?;
        let block_out_channels = c.usize_in("block_out_channels", 768, 1, MAX_CHANNELS)?;
        let block_heads = c.usize_in("block_num_heads", 12, 1, MAX_CHANNELS)?;
        c.check_divides(
            "block_num_heads",
            block_heads,
            "block_out_channels",
            block_out_channels,
        )?;
        let codebook_size = c.usize_in("codebook_size", 8192, 1, MAX_TABLE)?;
        let vocab_size = c.usize_in("vocab_size", 8256, 1, MAX_TABLE)?;
        if vocab_size <= codebook_size {
            return Err(c.err(format!(
                "`vocab_size` = {vocab_size} leaves no room for the mask token after `codebook_size` = {codebook_size} codes"
            )));
        }
        let encode = c.usize_in("micro_cond_encode_dim", 256, 1, MAX_CHANNELS)?;
        let embed = c.usize_in("micro_cond_embed_dim", 1280, 1, MAX_CHANNELS)?;
        if embed != MICRO_CONDS * encode {
            return Err(c.err(format!(
                "`micro_cond_embed_dim` = {embed} is not {MICRO_CONDS} micro-conditions × `micro_cond_encode_dim` = {encode}"
            )));
        }
        let downsample = c.bool_or("downsample", false)?;
        let upsample = c.bool_or("upsample", false)?;
        if downsample != upsample {
            // The logits would be on another grid than the tokens they predict.
            return Err(c.err(format!(
                "`downsample` = {downsample} with `upsample` = {upsample}: prism runs UVit2DModel with both or neither"
            )));
        }
        let sample_size = c.usize_in("sample_size", 64, 1, MAX_SAMPLE_SIZE)?;
        Ok(Self {
            hidden_size,
            use_bias: c.bool_or("use_bias", false)?,
            cond_embed_dim: c.usize_in("cond_embed_dim", 768, 1, MAX_CHANNELS)?,
            micro_cond_encode_dim: encode,
            micro_cond_embed_dim: embed,
            encoder_hidden_size: c.usize_in("encoder_hidden_size", 768, 1, MAX_CHANNELS)?,
            vocab_size,
            codebook_size,
            in_channels: c.usize_in("in_channels", 768, 1, MAX_CHANNELS)?,
            block_out_channels,
            num_res_blocks: c.usize_in("num_res_blocks", 3, 0, MAX_LAYERS)?,
            downsample,
            upsample,
            block_num_heads: block_heads,
            num_hidden_layers: c.usize_in("num_hidden_layers", 22, 0, MAX_LAYERS)?,
            num_attention_heads: heads,
            intermediate_size: c.usize_in("intermediate_size", 2816, 1, MAX_CHANNELS)?,
            layer_norm_eps: c.f32_at_least("layer_norm_eps", 1e-6, 0.0)?,
            ln_elementwise_affine: c.bool_or("ln_elementwise_affine", true)?,
            sample_size,
        })
    }

    /// Token grid sides the transformer accepts: with its down/up sampler pair the grid must
    /// be even (the stride-2 downsampler, then the 2× transposed conv, give it back).
    pub fn check_grid(&self, h: usize, w: usize) -> Result<()> {
        if h == 0 || w == 0 {
            return Err(Error::invalid(format!("token grid {h}x{w} is empty")));
        }
        if self.downsample && (h % 2 == 1 || w % 2 == 1) {
            return Err(Error::invalid(format!(
                "token grid {h}x{w}: this transformer halves and doubles the grid, so both sides must be even"
            )));
        }
        Ok(())
    }
}

/// The graph for a (batch, h, w) token grid and `text_len` text tokens. Inputs `input_ids`
/// (B, h, w) int64, `encoder_hidden_states` (B, L, encoder_hidden_size), `pooled_text_emb`
/// (B, cond_embed_dim), `micro_conds` (B, 5); output `logits` (B, codebook_size, h, w).
pub fn build(cfg: &UVitConfig, batch: usize, h: usize, w: usize, text_len: usize) -> Result<Graph> {
    cfg.check_grid(h, w)?;
    let mut b = GraphBuilder::new("transformer");
    let ids = b.input("input_ids", &[batch, h, w], DType::I64);
    let ctx = b.input(
        "encoder_hidden_states",
        &[batch, text_len, cfg.encoder_hidden_size],
        DType::F32,
    );
    let pooled = b.input("pooled_text_emb", &[batch, cfg.cond_embed_dim], DType::F32);
    let micro = b.input("micro_conds", &[batch, MICRO_CONDS], DType::F32);
    let (eps, affine, bias) = (cfg.layer_norm_eps, cfg.ln_elementwise_affine, cfg.use_bias);
    let d = cfg.hidden_size;

    // Text: projected to the hidden width, RMS-normed.
    let ctx = b.linear("encoder_proj", ctx, d, bias)?;
    let ctx = b.rms_norm_affine("encoder_proj_layer_norm", ctx, eps, affine)?;

    // Conditioning: pooled text ++ sinusoidal micro-conditions → TimestepEmbedding.
    let m = b.reshape("micro_conds.flatten", micro, &[batch * MICRO_CONDS])?;
    let m = b.timestep_proj("micro_cond_embeds", m, cfg.micro_cond_encode_dim, true, 0.0)?;
    let m = b.reshape(
        "micro_cond_embeds.reshape",
        m,
        &[batch, cfg.micro_cond_embed_dim],
    )?;
    let cond = b.concat("pooled_text_emb.concat", &[pooled, m], 1)?;
    let cond = b.linear("cond_embed.linear_1", cond, d, bias)?;
    let cond = b.act("cond_embed.act", cond, ActKind::Silu);
    let cond = b.linear("cond_embed.linear_2", cond, d, bias)?;
    // Every consumer of the condition (ConvNeXt modulation, adaptive norms) applies SiLU
    // first: once here.
    let cond_silu = b.act("cond_embed.silu", cond, ActKind::Silu);

    // Token embedding → RMS norm → 1×1 conv to the block width.
    let x = b.token_embedding("embed.embeddings", ids, cfg.vocab_size, cfg.in_channels)?;
    let x = b.rms_norm_affine("embed.layer_norm", x, eps, affine)?;
    let x = b.permute("embed.to_nchw", x, &[0, 3, 1, 2])?;
    let x = b.conv2d("embed.conv", x, cfg.block_out_channels, 1, 1, NOPAD, bias)?;

    let x = uvit_block(&mut b, "down_block", x, cond_silu, ctx, cfg, Sampler::Down)?;

    // The transformer layers over (B, h·w, hidden).
    let [_, _, hh, ww] = blocks::nchw(&b, "project_to_hidden", x)?;
    let t = blocks::to_tokens(&mut b, "project_to_hidden.to_tokens", x)?;
    let t = b.rms_norm_affine("project_to_hidden_norm", t, eps, affine)?;
    let mut t = b.linear("project_to_hidden", t, d, bias)?;
    let heads = cfg.num_attention_heads;
    for i in 0..cfg.num_hidden_layers {
        let p = format!("transformer_layers.{i}");
        let n = ada_norm(&mut b, &join(&p, "norm1"), t, cond_silu, cfg, Norm::Rms)?;
        let a = blocks::attention_with(
            &mut b,
            &join(&p, "attn1"),
            n,
            None,
            heads,
            d / heads,
            (bias, bias),
            AttentionKind::SelfAttn,
        )?;
        t = b.add(&join(&p, "attn1.residual"), a, t)?;
        let n = ada_norm(&mut b, &join(&p, "norm2"), t, cond_silu, cfg, Norm::Rms)?;
        let a = blocks::attention_with(
            &mut b,
            &join(&p, "attn2"),
            n,
            Some(ctx),
            heads,
            d / heads,
            (bias, bias),
            AttentionKind::Cross,
        )?;
        t = b.add(&join(&p, "attn2.residual"), a, t)?;
        let n = ada_norm(&mut b, &join(&p, "norm3"), t, cond_silu, cfg, Norm::Layer)?;
        let f = b.linear(
            &join(&p, "ff.net.0.proj"),
            n,
            2 * cfg.intermediate_size,
            bias,
        )?;
        let f = b.geglu(&join(&p, "ff.net.0"), f)?;
        let f = b.linear(&join(&p, "ff.net.2"), f, d, bias)?;
        t = b.add(&join(&p, "ff.residual"), f, t)?;
    }
    let t = b.rms_norm_affine("project_from_hidden_norm", t, eps, affine)?;
    let t = b.linear("project_from_hidden", t, cfg.block_out_channels, bias)?;
    let x = blocks::from_tokens(&mut b, "project_from_hidden.from_tokens", t, hh, ww)?;

    let x = uvit_block(&mut b, "up_block", x, cond_silu, ctx, cfg, Sampler::Up)?;

    // MLM head: 1×1 conv, RMS norm over channels, 1×1 conv to the codebook.
    let x = b.conv2d("mlm_layer.conv1", x, cfg.in_channels, 1, 1, NOPAD, bias)?;
    let x = channel_rms_norm(&mut b, "mlm_layer.layer_norm", x, cfg)?;
    let logits = b.conv2d("mlm_layer.conv2", x, cfg.codebook_size, 1, 1, NOPAD, bias)?;
    b.output("logits", logits);
    b.finish()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sampler {
    Down,
    Up,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Norm {
    Rms,
    Layer,
}

/// RMS norm over the channels of NCHW x (diffusers permutes to NHWC and back).
fn channel_rms_norm(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    cfg: &UVitConfig,
) -> Result<ValueId> {
    let t = b.permute(&join(p, "to_nhwc"), x, &[0, 2, 3, 1])?;
    let t = b.rms_norm_affine(p, t, cfg.layer_norm_eps, cfg.ln_elementwise_affine)?;
    b.permute(&join(p, "to_nchw"), t, &[0, 3, 1, 2])
}

/// `AdaLayerNormContinuous` over tokens (B, L, D): (scale, shift) = linear(SiLU(cond)), then
/// norm(x) · (1 + scale) + shift, the norm an RMS norm or a layer norm (with a bias when the
/// model has biases).
fn ada_norm(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    cond_silu: ValueId,
    cfg: &UVitConfig,
    norm: Norm,
) -> Result<ValueId> {
    let d = cfg.hidden_size;
    let batch = b.shape(x)[0];
    let e = b.linear(&join(p, "linear"), cond_silu, 2 * d, cfg.use_bias)?;
    let scale = b.slice(&join(p, "scale"), e, 1, 0, d)?;
    let shift = b.slice(&join(p, "shift"), e, 1, d, d)?;
    let scale = b.reshape(&join(p, "scale"), scale, &[batch, 1, d])?;
    let shift = b.reshape(&join(p, "shift"), shift, &[batch, 1, d])?;
    let (eps, affine) = (cfg.layer_norm_eps, cfg.ln_elementwise_affine);
    let n = match norm {
        Norm::Rms => b.rms_norm_affine(&join(p, "norm"), x, eps, affine)?,
        Norm::Layer => {
            b.layer_norm_affine(&join(p, "norm"), x, eps, affine, affine && cfg.use_bias)?
        }
    };
    blocks::modulate(b, &join(p, "modulate"), n, scale, shift)
}

/// `UVitBlock`: an optional RMS-normed 2×2 stride-2 downsampler, `num_res_blocks` pairs of
/// (ConvNeXt block, attention block), an optional RMS-normed 2× transposed-conv upsampler.
fn uvit_block(
    b: &mut GraphBuilder,
    p: &str,
    mut x: ValueId,
    cond_silu: ValueId,
    ctx: ValueId,
    cfg: &UVitConfig,
    sampler: Sampler,
) -> Result<ValueId> {
    let c = cfg.block_out_channels;
    let bias = cfg.use_bias;
    if sampler == Sampler::Down && cfg.downsample {
        let q = join(p, "downsample");
        x = channel_rms_norm(b, &join(&q, "norm"), x, cfg)?;
        // diffusers pads (0, 1, 0, 1) before a padding-0 downsampling conv.
        x = b.conv2d(&join(&q, "conv"), x, c, 2, 2, [0, 1, 0, 1], bias)?;
    }
    for i in 0..cfg.num_res_blocks {
        x = convnext(b, &join(p, &format!("res_blocks.{i}")), x, cond_silu, cfg)?;
        let [_, _, h, w] = blocks::nchw(b, p, x)?;
        let q = join(p, &format!("attention_blocks.{i}"));
        let t = blocks::to_tokens(b, &join(&q, "to_tokens"), x)?;
        let t = skip_ff_block(b, &q, t, ctx, cfg)?;
        x = blocks::from_tokens(b, &join(&q, "from_tokens"), t, h, w)?;
    }
    if sampler == Sampler::Up && cfg.upsample {
        let q = join(p, "upsample");
        x = channel_rms_norm(b, &join(&q, "norm"), x, cfg)?;
        x = b.conv_transpose2d(&join(&q, "conv"), x, c, 2, bias)?;
    }
    Ok(x)
}

/// `ConvNextBlock`: depthwise 3×3 conv, RMS norm, Linear(C → 4C), GELU, global response
/// norm, Linear(4C → C), residual, then modulation by (scale, shift) = linear(SiLU(cond)).
fn convnext(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    cond_silu: ValueId,
    cfg: &UVitConfig,
) -> Result<ValueId> {
    let [n, c, h, w] = blocks::nchw(b, p, x)?;
    let bias = cfg.use_bias;
    let y = b.depthwise_conv2d(&join(p, "depthwise"), x, 3, 1, bias)?;
    let t = blocks::to_tokens(b, &join(p, "to_tokens"), y)?;
    let t = b.rms_norm_affine(
        &join(p, "norm"),
        t,
        cfg.layer_norm_eps,
        cfg.ln_elementwise_affine,
    )?;
    let t = b.linear(&join(p, "channelwise_linear_1"), t, 4 * c, bias)?;
    let t = b.act(&join(p, "channelwise_act"), t, ActKind::Gelu);
    let t = b.global_response_norm(&join(p, "channelwise_norm"), t)?;
    let t = b.linear(&join(p, "channelwise_linear_2"), t, c, bias)?;
    let y = blocks::from_tokens(b, &join(p, "from_tokens"), t, h, w)?;
    let y = b.add(&join(p, "residual"), y, x)?;
    let e = b.linear(&join(p, "cond_embeds_mapper"), cond_silu, 2 * c, bias)?;
    let scale = b.slice(&join(p, "scale"), e, 1, 0, c)?;
    let shift = b.slice(&join(p, "shift"), e, 1, c, c)?;
    let scale = b.reshape(&join(p, "scale"), scale, &[n, c, 1, 1])?;
    let shift = b.reshape(&join(p, "shift"), shift, &[n, c, 1, 1])?;
    blocks::modulate(b, &join(p, "modulate"), y, scale, shift)
}

/// `SkipFFTransformerBlock` over tokens (B, L, C): two RMS-normed attentions, both to the
/// text (mapped to C by Linear(SiLU(·)) when the hidden width differs), with residuals.
fn skip_ff_block(
    b: &mut GraphBuilder,
    p: &str,
    t: ValueId,
    ctx: ValueId,
    cfg: &UVitConfig,
) -> Result<ValueId> {
    let c = cfg.block_out_channels;
    let bias = cfg.use_bias;
    let kv = if cfg.hidden_size != c {
        let s = b.act(&join(p, "kv_mapper.silu"), ctx, ActKind::Silu);
        b.linear(&join(p, "kv_mapper"), s, c, bias)?
    } else {
        ctx
    };
    let heads = cfg.block_num_heads;
    let mut t = t;
    for (norm, attn) in [("norm1", "attn1"), ("norm2", "attn2")] {
        // diffusers builds these RMSNorm(dim, 1e-06): affine, whatever the config says.
        let n = b.rms_norm(&join(p, norm), t, 1e-6)?;
        let a = blocks::attention_with(
            b,
            &join(p, attn),
            n,
            Some(kv),
            heads,
            c / heads,
            (bias, bias),
            AttentionKind::Cross,
        )?;
        t = b.add(&join(p, &format!("{attn}.residual")), a, t)?;
    }
    Ok(t)
}
