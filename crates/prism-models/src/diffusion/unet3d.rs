//! `UNet3DConditionModel` (diffusers): the ModelScope text-to-video UNet, a Make-A-Video-style
//! pseudo-3D UNet. Spatial layers run on frames as a batch (B·F, C, H, W), exactly as in the
//! image UNet; after every ResNet a temporal convolution layer (four GroupNorm → SiLU → (k,1,1)
//! Conv3d sub-layers, residual) mixes neighbouring frames, and after every spatial transformer a
//! temporal transformer attends across frames at each spatial position (query length F, batch
//! B·H·W). An input temporal transformer (`transformer_in`) follows `conv_in`.
//!
//! Layouts: the main activation is (B·F, C, H, W), frame-major inside each batch item, as
//! diffusers' `sample.permute(0, 2, 1, 3, 4).reshape(B·F, C, H, W)`. Temporal layers view it as
//! (B, F, C, H·W) and permute to (B, C, F, H·W) (temporal conv) or (B·H·W, F, C) (temporal
//! attention). The time embedding and the text embedding are repeated per frame
//! (`repeat_interleave(F)`) as diffusers does.

use crate::config::{Cfg, MAX_CHANNELS, MAX_LAYERS, MAX_SAMPLE_SIZE};
use crate::nn::blocks::{self, join, SAME3};
use prism_core::{ActKind, AttentionKind, DType, Error, Graph, GraphBuilder, Result, ValueId};
use serde_json::json;

pub const CLASS_NAME: &str = "UNet3DConditionModel";

#[derive(Clone, Debug, PartialEq)]
pub struct UNet3DConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub cross_attention_dim: usize,
    /// Per down block: the per-head width of its spatial and temporal transformers (diffusers
    /// passes `attention_head_dim` as the blocks' `num_attention_heads`, and the blocks build
    /// their transformers with `channels // n` heads of width `n`).
    pub head_dim: Vec<usize>,
    /// `transformer_in` has 8 heads of width `attention_head_dim` (the first entry when it is
    /// a list — diffusers passes the raw config value; a list is rejected there, so here too).
    pub transformer_in_heads: usize,
    pub transformer_in_head_dim: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f32,
    pub downsample_padding: usize,
    pub sample_size: usize,
}

const DOWN_TYPES: [&str; 2] = ["CrossAttnDownBlock3D", "DownBlock3D"];
const UP_TYPES: [&str; 2] = ["CrossAttnUpBlock3D", "UpBlock3D"];

/// GroupNorm eps of `TemporalConvLayer` (torch's default) and of the transformers' norms.
const TEMP_CONV_EPS: f32 = 1e-5;
const TRANSFORMER_NORM_EPS: f32 = 1e-6;
const LAYER_NORM_EPS: f32 = 1e-5;

impl UNet3DConfig {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let class = c.str_or("_class_name", CLASS_NAME)?;
        if class != CLASS_NAME {
            return Err(c.err(format!("`_class_name` {class:?} is not {CLASS_NAME}")));
        }
        c.expect("act_fn", &[json!("silu")])?;
        // diffusers raises NotImplementedError for num_attention_heads.
        c.expect("num_attention_heads", &[])?;
        c.expect("time_cond_proj_dim", &[])?;
        c.expect("mid_block_scale_factor", &[json!(1), json!(1.0)])?;
        // Every value the builder indexes, divides by or puts into a shape is checked here,
        // with an error naming its key; `build` relies on these invariants.
        let block_out_channels = c.block_channels("block_out_channels")?;
        let nb = block_out_channels.len();
        let down_block_types = c.block_types("down_block_types", nb, "block_out_channels")?;
        let up_block_types = c.block_types("up_block_types", nb, "block_out_channels")?;
        for (key, types, allowed) in [
            ("down_block_types", &down_block_types, &DOWN_TYPES),
            ("up_block_types", &up_block_types, &UP_TYPES),
        ] {
            if let Some(t) = types.iter().find(|t| !allowed.contains(&t.as_str())) {
                return Err(c.err(format!(
                    "unsupported `{key}` entry {t:?} (prism supports {})",
                    allowed.join(", ")
                )));
            }
        }
        if c.v.get("attention_head_dim").is_some_and(|v| v.is_array()) {
            // transformer_in takes attention_head_dim as its head width; diffusers fails on a
            // list there, so no loadable checkpoint has one.
            return Err(c.err(
                "per-block `attention_head_dim` lists are not supported (transformer_in needs one width)",
            ));
        }
        let head_dim = c.per_block("attention_head_dim", nb, Some(64))?;
        let norm_num_groups = match c.v.get("norm_num_groups") {
            Some(serde_json::Value::Null) => {
                return Err(c.err("unsupported `norm_num_groups` = null (prism needs group norms)"))
            }
            _ => c.usize_in("norm_num_groups", 32, 1, MAX_CHANNELS)?,
        };
        for (i, &ch) in block_out_channels.iter().enumerate() {
            let ch_key = format!("`block_out_channels`[{i}]");
            c.check_divides("norm_num_groups", norm_num_groups, &ch_key, ch)?;
            c.check_range("attention_head_dim", head_dim[i], 1, MAX_CHANNELS)?;
            // The transformers use `ch / attention_head_dim` heads of that width.
            c.check_divides("attention_head_dim", head_dim[i], &ch_key, ch)?;
        }
        Ok(Self {
            in_channels: c.usize_in("in_channels", 4, 1, MAX_CHANNELS)?,
            out_channels: c.usize_in("out_channels", 4, 1, MAX_CHANNELS)?,
            layers_per_block: c.usize_in("layers_per_block", 2, 1, MAX_LAYERS)?,
            transformer_in_heads: 8,
            // `nb` >= 1 (block_channels), so `head_dim[0]` exists.
            transformer_in_head_dim: head_dim[0],
            block_out_channels,
            down_block_types,
            up_block_types,
            cross_attention_dim: c.usize_in("cross_attention_dim", 1024, 1, MAX_CHANNELS)?,
            head_dim,
            norm_num_groups,
            norm_eps: c.f32_at_least("norm_eps", 1e-5, 0.0)?,
            // 1 pads every side; 0 is diffusers' asymmetric (0, 1, 0, 1) pad.
            downsample_padding: c.usize_in("downsample_padding", 1, 0, 1)?,
            sample_size: c.usize_in("sample_size", 32, 1, MAX_SAMPLE_SIZE)?,
        })
    }

    /// Spatial downscale of the latent through the UNet (2 per downsampling block).
    /// `from_cfg` guarantees 1..=MAX_BLOCKS blocks; the shift is clamped regardless.
    pub fn downscale(&self) -> usize {
        let shift = self.block_out_channels.len().saturating_sub(1);
        1usize << shift.min(usize::BITS as usize - 1)
    }

    /// The invariants `build` indexes and divides by (one entry per block in every per-block
    /// list, at least one block, nonzero head widths), for configs not made by `from_cfg`.
    fn check_lengths(&self) -> Result<()> {
        let nb = self.block_out_channels.len();
        let ok = nb > 0
            && self.down_block_types.len() == nb
            && self.up_block_types.len() == nb
            && self.head_dim.len() == nb
            && self.head_dim.iter().all(|&d| d > 0);
        if !ok {
            return Err(Error::invalid(format!(
                "unet3d config: {nb} blocks, but {} down block types, {} up block types and \
                 head widths {:?}",
                self.down_block_types.len(),
                self.up_block_types.len(),
                self.head_dim
            )));
        }
        Ok(())
    }
}

/// Does this config describe a `UNet3DConditionModel`? (reads `_class_name` only)
pub fn is_unet3d_config(c: &Cfg) -> bool {
    c.v.get("_class_name").and_then(|v| v.as_str()) == Some(CLASS_NAME)
}

/// Repeat every batch row of x (B, ...) `frames` times: (B·F, ...), as
/// `repeat_interleave(frames, dim=0)`.
fn repeat_interleave(b: &mut GraphBuilder, p: &str, x: ValueId, frames: usize) -> Result<ValueId> {
    let s = b.shape(x).to_vec();
    if s.is_empty() || frames == 0 {
        return Err(Error::shape(
            p,
            format!("repeat {s:?} {frames} times per batch row"),
        ));
    }
    if frames == 1 {
        return Ok(x);
    }
    let rest: usize = s[1..].iter().product();
    let v = b.reshape(p, x, &[s[0], 1, rest])?;
    let reps = vec![v; frames];
    let r = b.concat(p, &reps, 1)?;
    let mut out = s.clone();
    out[0] *= frames;
    b.reshape(p, r, &out)
}

/// The (B·F, C, H, W) shape of x, checked to be 4-D with B·F a multiple of `frames` > 0 (so
/// `B·F / frames` is the batch).
fn frames_layout(
    b: &GraphBuilder,
    p: &str,
    x: ValueId,
    frames: usize,
) -> Result<(usize, usize, usize, usize)> {
    let s = b.shape(x);
    if s.len() != 4 || frames == 0 || s[0] % frames != 0 {
        return Err(Error::shape(
            p,
            format!("wants (B·F, C, H, W) with F = {frames} frames, got {s:?}"),
        ));
    }
    Ok((s[0], s[1], s[2], s[3]))
}

/// diffusers `TemporalConvLayer` on x (B·F, C, H, W): four GroupNorm → SiLU → Conv3d (3,1,1)
/// sub-layers on the (B, C, F, H·W) view, plus the input.
pub fn temporal_conv(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    frames: usize,
    groups: usize,
) -> Result<ValueId> {
    let (bf, c, h, w) = frames_layout(b, p, x, frames)?;
    let batch = bf / frames;
    let v = b.reshape(&join(p, "to_temporal"), x, &[batch, frames, c, h * w])?;
    let identity = b.permute(&join(p, "to_temporal"), v, &[0, 2, 1, 3])?;
    let mut t = identity;
    for (i, conv) in [(1, 2), (2, 3), (3, 3), (4, 3)] {
        let n = b.group_norm(&format!("{p}.conv{i}.0"), t, groups, TEMP_CONV_EPS, false)?;
        let n = b.act(&format!("{p}.conv{i}.0"), n, ActKind::Silu);
        t = b.conv_temporal(&format!("{p}.conv{i}.{conv}"), n, c, 3)?;
    }
    let sum = b.add(&join(p, "residual"), identity, t)?;
    let back = b.permute(&join(p, "from_temporal"), sum, &[0, 2, 1, 3])?;
    b.reshape(&join(p, "from_temporal"), back, &[bf, c, h, w])
}

/// diffusers `TransformerTemporalModel` on x (B·F, C, H, W): GroupNorm over (B, C, F, H, W),
/// proj_in, `BasicTransformerBlock`s whose attn1 and attn2 are both self attention across the
/// F frames of each spatial position (double_self_attention), GEGLU feed-forward, proj_out,
/// plus the input.
pub fn transformer_temporal(
    b: &mut GraphBuilder,
    p: &str,
    x: ValueId,
    frames: usize,
    heads: usize,
    head_dim: usize,
    layers: usize,
    groups: usize,
) -> Result<ValueId> {
    let (bf, c, h, w) = frames_layout(b, p, x, frames)?;
    let batch = bf / frames;
    let inner = heads * head_dim;
    let v = b.reshape(&join(p, "to_temporal"), x, &[batch, frames, c, h, w])?;
    let v = b.permute(&join(p, "to_temporal"), v, &[0, 2, 1, 3, 4])?;
    let n = b.group_norm(&join(p, "norm"), v, groups, TRANSFORMER_NORM_EPS, false)?;
    // (B, C, F, H, W) → (B, H, W, F, C) → (B·H·W, F, C)
    let t = b.permute(&join(p, "to_tokens"), n, &[0, 3, 4, 2, 1])?;
    let t = b.reshape(&join(p, "to_tokens"), t, &[batch * h * w, frames, c])?;
    let mut t = b.linear(&join(p, "proj_in"), t, inner, true)?;
    for i in 0..layers {
        let bp = join(p, &format!("transformer_blocks.{i}"));
        for (norm, attn) in [("norm1", "attn1"), ("norm2", "attn2")] {
            let n = b.layer_norm(&join(&bp, norm), t, LAYER_NORM_EPS)?;
            let a = blocks::attention(
                b,
                &join(&bp, attn),
                n,
                None,
                heads,
                head_dim,
                false,
                AttentionKind::Temporal,
            )?;
            t = b.add(&join(&bp, &format!("{attn}.residual")), a, t)?;
        }
        let n3 = b.layer_norm(&join(&bp, "norm3"), t, LAYER_NORM_EPS)?;
        let f = b.linear(&join(&bp, "ff.net.0.proj"), n3, inner * 4 * 2, true)?;
        let f = b.geglu(&join(&bp, "ff.net.0"), f)?;
        let f = b.linear(&join(&bp, "ff.net.2"), f, inner, true)?;
        t = b.add(&join(&bp, "ff.residual"), f, t)?;
    }
    let t = b.linear(&join(p, "proj_out"), t, c, true)?;
    // (B·H·W, F, C) → (B, H, W, F, C) → (B, F, C, H, W) → (B·F, C, H, W)
    let t = b.reshape(&join(p, "from_tokens"), t, &[batch, h, w, frames, c])?;
    let t = b.permute(&join(p, "from_tokens"), t, &[0, 3, 4, 1, 2])?;
    let t = b.reshape(&join(p, "from_tokens"), t, &[bf, c, h, w])?;
    b.add(&join(p, "residual"), t, x)
}

/// Build the 3D UNet graph for `batch` videos of `frames` latent frames of `h`×`w`, and
/// `text_len` context tokens. Inputs: `sample` (B, C, F, h, w), `timestep` (B,),
/// `encoder_hidden_states` (B, L, D). Output: `sample` (B, C, F, h, w).
pub fn build(
    cfg: &UNet3DConfig,
    batch: usize,
    frames: usize,
    h: usize,
    w: usize,
    text_len: usize,
) -> Result<Graph> {
    if batch == 0 || frames == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(format!(
            "unet3d: batch {batch}, frames {frames}, size {h}x{w}: all must be positive"
        )));
    }
    cfg.check_lengths()?;
    let mut b = GraphBuilder::new("unet");
    let sample = b.input(
        "sample",
        &[batch, cfg.in_channels, frames, h, w],
        DType::F32,
    );
    let t = b.input("timestep", &[batch], DType::F32);
    let ctx = b.input(
        "encoder_hidden_states",
        &[batch, text_len, cfg.cross_attention_dim],
        DType::F32,
    );
    // check_lengths: at least one block, and every per-block list has one entry per block,
    // so the `[i]` / `[rev]` / `[nb - 1]` indexing below is in range.
    let nb = cfg.block_out_channels.len();
    let (ch0, top) = (cfg.block_out_channels[0], cfg.block_out_channels[nb - 1]);
    let temb_dim = ch0 * 4;
    let (groups, eps) = (cfg.norm_num_groups, cfg.norm_eps);
    let bf = batch * frames;

    // Time: Timesteps(ch0, flip_sin_to_cos=True, shift 0) → TimestepEmbedding, then per frame.
    let tp = b.timestep_proj("time_proj", t, ch0, true, 0.0)?;
    let e = b.linear("time_embedding.linear_1", tp, temb_dim, true)?;
    let e = blocks::silu(&mut b, "time_embedding.act", e);
    let emb = b.linear("time_embedding.linear_2", e, temb_dim, true)?;
    // Every ResnetBlock2D applies SiLU to the embedding before its projection; compute it
    // once, then repeat it per frame (elementwise, so the order does not matter).
    let temb = blocks::silu(&mut b, "time_embedding.resnet_act", emb);
    let temb = repeat_interleave(&mut b, "time_embedding.repeat_frames", temb, frames)?;
    let ctx = repeat_interleave(&mut b, "encoder_hidden_states.repeat_frames", ctx, frames)?;

    // (B, C, F, h, w) → (B·F, C, h, w)
    let x = b.permute("to_frames", sample, &[0, 2, 1, 3, 4])?;
    let x = b.reshape("to_frames", x, &[bf, cfg.in_channels, h, w])?;
    let x = b.conv2d("conv_in", x, ch0, 3, 1, SAME3, true)?;
    let mut x = transformer_temporal(
        &mut b,
        "transformer_in",
        x,
        frames,
        cfg.transformer_in_heads,
        cfg.transformer_in_head_dim,
        1,
        groups,
    )?;

    let mut skips: Vec<ValueId> = vec![x];
    for (i, kind) in cfg.down_block_types.iter().enumerate() {
        let p = format!("down_blocks.{i}");
        let cout = cfg.block_out_channels[i];
        let hd = cfg.head_dim[i];
        for j in 0..cfg.layers_per_block {
            x = blocks::resnet(
                &mut b,
                &join(&p, &format!("resnets.{j}")),
                x,
                cout,
                Some(temb),
                groups,
                eps,
            )?;
            x = temporal_conv(
                &mut b,
                &join(&p, &format!("temp_convs.{j}")),
                x,
                frames,
                groups,
            )?;
            if kind == "CrossAttnDownBlock3D" {
                x = spatial_and_temporal(&mut b, &p, j, x, ctx, frames, cout, hd, groups)?;
            }
            skips.push(x);
        }
        if i + 1 < nb {
            x = blocks::downsample(
                &mut b,
                &join(&p, "downsamplers.0"),
                x,
                cfg.downsample_padding,
            )?;
            skips.push(x);
        }
    }

    let hd_top = cfg.head_dim[nb - 1];
    x = blocks::resnet(
        &mut b,
        "mid_block.resnets.0",
        x,
        top,
        Some(temb),
        groups,
        eps,
    )?;
    x = temporal_conv(&mut b, "mid_block.temp_convs.0", x, frames, groups)?;
    x = spatial_and_temporal(&mut b, "mid_block", 0, x, ctx, frames, top, hd_top, groups)?;
    x = blocks::resnet(
        &mut b,
        "mid_block.resnets.1",
        x,
        top,
        Some(temb),
        groups,
        eps,
    )?;
    x = temporal_conv(&mut b, "mid_block.temp_convs.1", x, frames, groups)?;

    for (i, kind) in cfg.up_block_types.iter().enumerate() {
        let p = format!("up_blocks.{i}");
        let rev = nb - 1 - i;
        let cout = cfg.block_out_channels[rev];
        let hd = cfg.head_dim[rev];
        for j in 0..=cfg.layers_per_block {
            // The down path pushed 1 + nb·L + (nb − 1) skips; the up path pops nb·(L + 1).
            let skip = skips
                .pop()
                .ok_or_else(|| Error::invalid(format!("{p}: no skip connection left")))?;
            let cat = b.concat(&join(&p, &format!("resnets.{j}.concat")), &[x, skip], 1)?;
            x = blocks::resnet(
                &mut b,
                &join(&p, &format!("resnets.{j}")),
                cat,
                cout,
                Some(temb),
                groups,
                eps,
            )?;
            x = temporal_conv(
                &mut b,
                &join(&p, &format!("temp_convs.{j}")),
                x,
                frames,
                groups,
            )?;
            if kind == "CrossAttnUpBlock3D" {
                x = spatial_and_temporal(&mut b, &p, j, x, ctx, frames, cout, hd, groups)?;
            }
        }
        if i + 1 < nb {
            // diffusers forwards the next skip's size so odd latent sizes line up.
            let next = skips
                .last()
                .map(|&s| b.shape(s).to_vec())
                .filter(|s| s.len() == 4)
                .ok_or_else(|| Error::invalid(format!("{p}: no skip connection left")))?;
            x = blocks::upsample(
                &mut b,
                &join(&p, "upsamplers.0"),
                x,
                Some((next[2], next[3])),
            )?;
        }
    }
    let x = b.group_norm("conv_norm_out", x, groups, eps, false)?;
    let x = b.act("conv_norm_out", x, ActKind::Silu);
    let out = b.conv2d("conv_out", x, cfg.out_channels, 3, 1, SAME3, true)?;
    // (B·F, C, h, w) → (B, C, F, h, w)
    let out = b.reshape("from_frames", out, &[batch, frames, cfg.out_channels, h, w])?;
    let out = b.permute("from_frames", out, &[0, 2, 1, 3, 4])?;
    b.output("sample", out);
    b.finish()
}

/// `attentions.{j}` (Transformer2DModel with linear projections, `channels / head_dim`
/// heads) then `temp_attentions.{j}` (TransformerTemporalModel, same heads).
#[allow(clippy::too_many_arguments)]
fn spatial_and_temporal(
    b: &mut GraphBuilder,
    p: &str,
    j: usize,
    x: ValueId,
    ctx: ValueId,
    frames: usize,
    channels: usize,
    head_dim: usize,
    groups: usize,
) -> Result<ValueId> {
    if head_dim == 0 || channels % head_dim != 0 {
        return Err(Error::shape(
            p,
            format!("{channels} channels do not split into heads of width {head_dim}"),
        ));
    }
    let heads = channels / head_dim;
    // UNet3DConditionModel never passes use_linear_projection: get_down_block / get_up_block
    // and UNetMidBlock3DCrossAttn default it to True.
    let x = blocks::transformer2d(
        b,
        &join(p, &format!("attentions.{j}")),
        x,
        ctx,
        heads,
        1,
        groups,
        true,
    )?;
    transformer_temporal(
        b,
        &join(p, &format!("temp_attentions.{j}")),
        x,
        frames,
        heads,
        head_dim,
        1,
        groups,
    )
}
