//! `UNet2DConditionModel` as Stable Diffusion 1.x / 2.x use it: the shared UNet skeleton
//! ([`super::unet_common`]) with a spatial transformer (`attentions.{j}`) after every ResNet
//! of a cross-attention block and of the mid block.

use super::unet_common::{
    self, AttentionKeys, BlockTypes, SharedKeys, UNetCommonConfig, UNetLayers,
};
use crate::config::{Cfg, MAX_CHANNELS, MAX_LAYERS};
use crate::nn::blocks::{self, join};
use prism_core::{DType, Error, Graph, GraphBuilder, Result, ValueId};
use serde_json::{json, Value};
use std::ops::{Deref, DerefMut};

#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    /// The keys the 3D UNet reads too (channels, block types, layers, norms, sizes); the
    /// config derefs to them.
    pub common: UNetCommonConfig,
    /// Heads per down block (diffusers' `attention_head_dim` when `num_attention_heads` is unset).
    pub heads: Vec<usize>,
    pub transformer_layers: Vec<usize>,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
}

impl Deref for UNetConfig {
    type Target = UNetCommonConfig;
    fn deref(&self) -> &UNetCommonConfig {
        &self.common
    }
}

impl DerefMut for UNetConfig {
    fn deref_mut(&mut self) -> &mut UNetCommonConfig {
        &mut self.common
    }
}

const KEYS: SharedKeys = SharedKeys {
    class_name: "UNet2DConditionModel",
    block_types: BlockTypes {
        cross_attn_down: "CrossAttnDownBlock2D",
        down: "DownBlock2D",
        cross_attn_up: "CrossAttnUpBlock2D",
        up: "UpBlock2D",
    },
    reject_unsupported,
    equal_layer_lists: true,
    explain_cross_attention_dim_lists: true,
    default_cross_attention_dim: 1280,
    reject_null_norm_groups: false,
    default_sample_size: 64,
};

/// Values prism does not implement: each must be absent, null or the default.
fn reject_unsupported(c: &Cfg) -> Result<()> {
    c.expect("act_fn", &[json!("silu")])?;
    c.expect("center_input_sample", &[json!(false)])?;
    c.expect("dual_cross_attention", &[json!(false)])?;
    c.expect(
        "only_cross_attention",
        &[json!(false), json!([false, false, false, false])],
    )?;
    c.expect("class_embed_type", &[])?;
    c.expect("addition_embed_type", &[])?;
    c.expect("num_class_embeds", &[])?;
    c.expect("encoder_hid_dim", &[])?;
    c.expect("encoder_hid_dim_type", &[])?;
    c.expect("time_cond_proj_dim", &[])?;
    c.expect("timestep_post_act", &[])?;
    c.expect("time_embedding_type", &[json!("positional")])?;
    c.expect("time_embedding_dim", &[])?;
    c.expect("time_embedding_act_fn", &[])?;
    c.expect("projection_class_embeddings_input_dim", &[])?;
    c.expect("resnet_time_scale_shift", &[json!("default")])?;
    c.expect("resnet_skip_time_act", &[json!(false)])?;
    c.expect("resnet_out_scale_factor", &[json!(1.0), json!(1)])?;
    c.expect("mid_block_type", &[json!("UNetMidBlock2DCrossAttn")])?;
    c.expect("mid_block_only_cross_attention", &[])?;
    c.expect("mid_block_scale_factor", &[json!(1), json!(1.0)])?;
    c.expect("conv_in_kernel", &[json!(3)])?;
    c.expect("conv_out_kernel", &[json!(3)])?;
    c.expect("attention_type", &[json!("default")])?;
    c.expect("cross_attention_norm", &[])?;
    c.expect("class_embeddings_concat", &[json!(false)])?;
    c.expect("addition_time_embed_dim", &[])?;
    c.expect("reverse_transformer_layers_per_block", &[])?;
    c.expect("dropout", &[json!(0.0), json!(0)])?;
    Ok(())
}

/// Heads and transformer depth per block, and the key the heads came from.
struct Heads {
    key: &'static str,
    heads: Vec<usize>,
    transformer_layers: Vec<usize>,
}

const TRANSFORMER_LAYERS_KEY: &str = "transformer_layers_per_block";

impl AttentionKeys for Heads {
    fn read(c: &Cfg, nb: usize) -> Result<Self> {
        // diffusers: num_attention_heads = num_attention_heads or attention_head_dim.
        let key = if c.has("num_attention_heads") {
            "num_attention_heads"
        } else {
            "attention_head_dim"
        };
        let heads = c.per_block(key, nb, (key == "attention_head_dim").then_some(8))?;
        let transformer_layers = c.per_block(TRANSFORMER_LAYERS_KEY, nb, Some(1))?;
        Ok(Self {
            key,
            heads,
            transformer_layers,
        })
    }

    fn check_block(&self, c: &Cfg, i: usize, ch_key: &str, ch: usize) -> Result<()> {
        let hk = entry_key(c, self.key, i);
        c.check_range(&hk, self.heads[i], 1, MAX_CHANNELS)?;
        // Transformer2D uses `ch / heads` channels per head.
        c.check_divides(&hk, self.heads[i], ch_key, ch)?;
        c.check_range(
            &entry_key(c, TRANSFORMER_LAYERS_KEY, i),
            self.transformer_layers[i],
            1,
            MAX_LAYERS,
        )
    }
}

impl UNetConfig {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let (common, attention) = UNetCommonConfig::from_cfg::<Heads>(c, &KEYS)?;
        Ok(Self {
            common,
            heads: attention.heads,
            transformer_layers: attention.transformer_layers,
            use_linear_projection: c.bool_or("use_linear_projection", false)?,
            upcast_attention: c.bool_or("upcast_attention", false)?,
            flip_sin_to_cos: c.bool_or("flip_sin_to_cos", true)?,
            freq_shift: c.f32_finite("freq_shift", 0.0)?,
        })
    }

    /// The invariants `build` indexes by (one entry per block in every per-block list, at
    /// least one block, at least one layer), for configs not made by `from_cfg`.
    fn check_lengths(&self) -> Result<()> {
        let nb = self.block_out_channels.len();
        let ok = nb > 0
            && self.down_block_types.len() == nb
            && self.up_block_types.len() == nb
            && self.heads.len() == nb
            && self.transformer_layers.len() == nb;
        if !ok {
            return Err(Error::invalid(format!(
                "unet config: {nb} blocks, but {} down block types, {} up block types, {} head \
                 counts and {} transformer depths",
                self.down_block_types.len(),
                self.up_block_types.len(),
                self.heads.len(),
                self.transformer_layers.len()
            )));
        }
        Ok(())
    }
}

/// How errors name entry `i` of a per-block key: "`key`[i]" for a list, "`key`" for one
/// number that applies to every block.
pub(crate) fn entry_key(c: &Cfg, key: &str, i: usize) -> String {
    if c.v.get(key).is_some_and(Value::is_array) {
        format!("`{key}`[{i}]")
    } else {
        format!("`{key}`")
    }
}

/// The image UNet's layers in the skeleton: `attentions.{j}` only.
struct ImageLayers<'a> {
    cfg: &'a UNetConfig,
    /// encoder_hidden_states (B, L, D)
    ctx: ValueId,
}

impl UNetLayers for ImageLayers<'_> {
    fn attention(
        &self,
        b: &mut GraphBuilder,
        p: &str,
        j: usize,
        level: usize,
        x: ValueId,
    ) -> Result<ValueId> {
        let cfg = self.cfg;
        blocks::transformer2d(
            b,
            &join(p, &format!("attentions.{j}")),
            x,
            self.ctx,
            cfg.heads[level],
            cfg.transformer_layers[level],
            cfg.norm_num_groups,
            cfg.use_linear_projection,
        )
    }
}

/// Build the UNet graph for `batch` latents of `h`×`w` and `text_len` context tokens.
/// Inputs: `sample` (B, C, h, w), `timestep` (B,), `encoder_hidden_states` (B, L, D).
/// Output: `sample`.
pub fn build(cfg: &UNetConfig, batch: usize, h: usize, w: usize, text_len: usize) -> Result<Graph> {
    // At least one block, and every per-block list has one entry per block, so the `heads` /
    // `transformer_layers` indexing of `ImageLayers` is in range.
    cfg.check_lengths()?;
    let mut b = GraphBuilder::new("unet");
    let sample = b.input("sample", &[batch, cfg.in_channels, h, w], DType::F32);
    let t = b.input("timestep", &[batch], DType::F32);
    let ctx = b.input(
        "encoder_hidden_states",
        &[batch, text_len, cfg.cross_attention_dim],
        DType::F32,
    );
    let ch0 = cfg.block_out_channels[0];
    let temb = unet_common::time_embedding(&mut b, t, ch0, cfg.flip_sin_to_cos, cfg.freq_shift)?;
    let layers = ImageLayers { cfg, ctx };
    let out = unet_common::build_skeleton(&mut b, cfg, &KEYS.block_types, sample, temb, &layers)?;
    b.output("sample", out);
    b.finish()
}
