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

use super::unet_common::{
    self, AttentionKeys, BlockTypes, SharedKeys, UNetCommonConfig, UNetLayers,
};
use crate::config::{Cfg, MAX_CHANNELS};
use crate::nn::blocks::{self, join};
use prism_core::{ActKind, AttentionKind, DType, Error, Graph, GraphBuilder, Result, ValueId};
use serde_json::json;
use std::ops::{Deref, DerefMut};

pub const CLASS_NAME: &str = "UNet3DConditionModel";

#[derive(Clone, Debug, PartialEq)]
pub struct UNet3DConfig {
    /// The keys the 2D UNet reads too (channels, block types, layers, norms, sizes); the
    /// config derefs to them.
    pub common: UNetCommonConfig,
    /// Per down block: the per-head width of its spatial and temporal transformers (diffusers
    /// passes `attention_head_dim` as the blocks' `num_attention_heads`, and the blocks build
    /// their transformers with `channels // n` heads of width `n`).
    pub head_dim: Vec<usize>,
    /// `transformer_in` has 8 heads of width `attention_head_dim` (the first entry when it is
    /// a list — diffusers passes the raw config value; a list is rejected there, so here too).
    pub transformer_in_heads: usize,
    pub transformer_in_head_dim: usize,
}

impl Deref for UNet3DConfig {
    type Target = UNetCommonConfig;
    fn deref(&self) -> &UNetCommonConfig {
        &self.common
    }
}

impl DerefMut for UNet3DConfig {
    fn deref_mut(&mut self) -> &mut UNetCommonConfig {
        &mut self.common
    }
}

const KEYS: SharedKeys = SharedKeys {
    class_name: CLASS_NAME,
    block_types: BlockTypes {
        cross_attn_down: "CrossAttnDownBlock3D",
        down: "DownBlock3D",
        cross_attn_up: "CrossAttnUpBlock3D",
        up: "UpBlock3D",
    },
    reject_unsupported,
    equal_layer_lists: false,
    explain_cross_attention_dim_lists: false,
    default_cross_attention_dim: 1024,
    reject_null_norm_groups: true,
    default_sample_size: 32,
};

/// GroupNorm eps of `TemporalConvLayer` (torch's default) and of the transformers' norms.
const TEMP_CONV_EPS: f32 = 1e-5;
const TRANSFORMER_NORM_EPS: f32 = 1e-6;
const LAYER_NORM_EPS: f32 = 1e-5;

/// Values prism does not implement: each must be absent, null or the default.
fn reject_unsupported(c: &Cfg) -> Result<()> {
    c.expect("act_fn", &[json!("silu")])?;
    // diffusers raises NotImplementedError for num_attention_heads.
    c.expect("num_attention_heads", &[])?;
    c.expect("time_cond_proj_dim", &[])?;
    c.expect("mid_block_scale_factor", &[json!(1), json!(1.0)])
}

/// `attention_head_dim` per block: the head width of the block's transformers.
struct HeadDims(Vec<usize>);

impl AttentionKeys for HeadDims {
    fn read(c: &Cfg, nb: usize) -> Result<Self> {
        if c.v.get("attention_head_dim").is_some_and(|v| v.is_array()) {
            // transformer_in takes attention_head_dim as its head width; diffusers fails on a
            // list there, so no loadable checkpoint has one.
            return Err(c.err(
                "per-block `attention_head_dim` lists are not supported (transformer_in needs one width)",
            ));
        }
        Ok(Self(c.per_block("attention_head_dim", nb, Some(64))?))
    }

    fn check_block(&self, c: &Cfg, i: usize, ch_key: &str, ch: usize) -> Result<()> {
        c.check_range("attention_head_dim", self.0[i], 1, MAX_CHANNELS)?;
        // The transformers use `ch / attention_head_dim` heads of that width.
        c.check_divides("attention_head_dim", self.0[i], ch_key, ch)
    }
}

impl UNet3DConfig {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let (common, HeadDims(head_dim)) = UNetCommonConfig::from_cfg(c, &KEYS)?;
        Ok(Self {
            common,
            transformer_in_heads: 8,
            // `nb` >= 1 (block_channels), so `head_dim[0]` exists.
            transformer_in_head_dim: head_dim[0],
            head_dim,
        })
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

/// The video UNet's layers in the skeleton, on the (B·F, C, H, W) activation:
/// `transformer_in` after `conv_in`, `temp_convs.{j}` after every ResNet, and
/// `attentions.{j}` + `temp_attentions.{j}` after the ResNets of cross-attention blocks and
/// the mid block.
struct VideoLayers<'a> {
    cfg: &'a UNet3DConfig,
    /// encoder_hidden_states repeated per frame (B·F, L, D)
    ctx: ValueId,
    frames: usize,
}

impl UNetLayers for VideoLayers<'_> {
    fn after_conv_in(&self, b: &mut GraphBuilder, x: ValueId) -> Result<ValueId> {
        let cfg = self.cfg;
        transformer_temporal(
            b,
            "transformer_in",
            x,
            self.frames,
            cfg.transformer_in_heads,
            cfg.transformer_in_head_dim,
            1,
            cfg.norm_num_groups,
        )
    }

    fn after_resnet(&self, b: &mut GraphBuilder, p: &str, j: usize, x: ValueId) -> Result<ValueId> {
        let p = join(p, &format!("temp_convs.{j}"));
        temporal_conv(b, &p, x, self.frames, self.cfg.norm_num_groups)
    }

    fn attention(
        &self,
        b: &mut GraphBuilder,
        p: &str,
        j: usize,
        level: usize,
        x: ValueId,
    ) -> Result<ValueId> {
        let cfg = self.cfg;
        spatial_and_temporal(
            b,
            p,
            j,
            x,
            self.ctx,
            self.frames,
            cfg.block_out_channels[level],
            cfg.head_dim[level],
            cfg.norm_num_groups,
        )
    }
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
    // At least one block, every per-block list has one entry per block and head widths are
    // nonzero, so the `head_dim` indexing of `VideoLayers` is in range.
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
    let ch0 = cfg.block_out_channels[0];
    let bf = batch * frames;

    // Time: Timesteps(ch0, flip_sin_to_cos=True, shift 0) → TimestepEmbedding, activated for
    // the ResNets, then repeated per frame (elementwise, so the order does not matter).
    let temb = unet_common::time_embedding(&mut b, t, ch0, true, 0.0)?;
    let temb = repeat_interleave(&mut b, "time_embedding.repeat_frames", temb, frames)?;
    let ctx = repeat_interleave(&mut b, "encoder_hidden_states.repeat_frames", ctx, frames)?;

    // (B, C, F, h, w) → (B·F, C, h, w)
    let x = b.permute("to_frames", sample, &[0, 2, 1, 3, 4])?;
    let x = b.reshape("to_frames", x, &[bf, cfg.in_channels, h, w])?;
    let layers = VideoLayers { cfg, ctx, frames };
    let out = unet_common::build_skeleton(&mut b, cfg, &KEYS.block_types, x, temb, &layers)?;
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
