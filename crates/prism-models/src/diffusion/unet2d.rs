//! `UNet2DConditionModel` as Stable Diffusion 1.x / 2.x use it.

use crate::config::{Cfg, MAX_CHANNELS, MAX_LAYERS, MAX_SAMPLE_SIZE};
use crate::nn::blocks::{self, join, SAME3};
use prism_core::{ActKind, DType, Error, Graph, GraphBuilder, Result, ValueId};
use serde_json::{json, Value};

#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub cross_attention_dim: usize,
    /// Heads per down block (diffusers' `attention_head_dim` when `num_attention_heads` is unset).
    pub heads: Vec<usize>,
    pub transformer_layers: Vec<usize>,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    pub norm_num_groups: usize,
    pub norm_eps: f32,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
    pub downsample_padding: usize,
    pub sample_size: usize,
}

const DOWN_TYPES: [&str; 2] = ["CrossAttnDownBlock2D", "DownBlock2D"];
const UP_TYPES: [&str; 2] = ["CrossAttnUpBlock2D", "UpBlock2D"];

impl UNetConfig {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let class = c.str_or("_class_name", "UNet2DConditionModel")?;
        if class != "UNet2DConditionModel" {
            return Err(c.err(format!(
                "`_class_name` {class:?} is not UNet2DConditionModel"
            )));
        }
        // Values prism does not implement: each must be absent, null or the default.
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
        let layers = c.per_block("layers_per_block", nb, Some(2))?;
        // `nb` >= 1 (block_channels), so `layers[0]` exists.
        if layers.iter().any(|&l| l != layers[0]) {
            return Err(c.err(format!(
                "per-block `layers_per_block` lists are not supported, got {layers:?}"
            )));
        }
        c.check_range("layers_per_block", layers[0], 1, MAX_LAYERS)?;
        // diffusers: num_attention_heads = num_attention_heads or attention_head_dim.
        let heads_key = if c.has("num_attention_heads") {
            "num_attention_heads"
        } else {
            "attention_head_dim"
        };
        let heads = c.per_block(
            heads_key,
            nb,
            (heads_key == "attention_head_dim").then_some(8),
        )?;
        let tl_key = "transformer_layers_per_block";
        let transformer_layers = c.per_block(tl_key, nb, Some(1))?;
        let cross_attention_dim = match c.v.get("cross_attention_dim") {
            Some(Value::Array(_)) => {
                return Err(c.err("per-block `cross_attention_dim` lists are not supported"))
            }
            _ => c.usize_in("cross_attention_dim", 1280, 1, MAX_CHANNELS)?,
        };
        let norm_num_groups = c.usize_in("norm_num_groups", 32, 1, MAX_CHANNELS)?;
        for (i, &ch) in block_out_channels.iter().enumerate() {
            let ch_key = format!("`block_out_channels`[{i}]");
            c.check_divides("norm_num_groups", norm_num_groups, &ch_key, ch)?;
            let hk = entry_key(c, heads_key, i);
            c.check_range(&hk, heads[i], 1, MAX_CHANNELS)?;
            // Transformer2D uses `ch / heads` channels per head.
            c.check_divides(&hk, heads[i], &ch_key, ch)?;
            c.check_range(
                &entry_key(c, tl_key, i),
                transformer_layers[i],
                1,
                MAX_LAYERS,
            )?;
        }
        Ok(Self {
            in_channels: c.usize_in("in_channels", 4, 1, MAX_CHANNELS)?,
            out_channels: c.usize_in("out_channels", 4, 1, MAX_CHANNELS)?,
            layers_per_block: layers[0],
            block_out_channels,
            down_block_types,
            up_block_types,
            cross_attention_dim,
            heads,
            transformer_layers,
            use_linear_projection: c.bool_or("use_linear_projection", false)?,
            upcast_attention: c.bool_or("upcast_attention", false)?,
            norm_num_groups,
            norm_eps: c.f32_at_least("norm_eps", 1e-5, 0.0)?,
            flip_sin_to_cos: c.bool_or("flip_sin_to_cos", true)?,
            freq_shift: c.f32_finite("freq_shift", 0.0)?,
            // 1 pads every side; 0 is diffusers' asymmetric (0, 1, 0, 1) pad.
            downsample_padding: c.usize_in("downsample_padding", 1, 0, 1)?,
            sample_size: c.usize_in("sample_size", 64, 1, MAX_SAMPLE_SIZE)?,
        })
    }

    /// Spatial downscale of the latent through the UNet (2 per downsampling block).
    /// `from_cfg` guarantees 1..=MAX_BLOCKS blocks; the shift is clamped regardless.
    pub fn downscale(&self) -> usize {
        let shift = self.block_out_channels.len().saturating_sub(1);
        1usize << shift.min(usize::BITS as usize - 1)
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

/// Build the UNet graph for `batch` latents of `h`×`w` and `text_len` context tokens.
/// Inputs: `sample` (B, C, h, w), `timestep` (B,), `encoder_hidden_states` (B, L, D).
/// Output: `sample`.
pub fn build(cfg: &UNetConfig, batch: usize, h: usize, w: usize, text_len: usize) -> Result<Graph> {
    cfg.check_lengths()?;
    let mut b = GraphBuilder::new("unet");
    let sample = b.input("sample", &[batch, cfg.in_channels, h, w], DType::F32);
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

    let tp = b.timestep_proj("time_proj", t, ch0, cfg.flip_sin_to_cos, cfg.freq_shift)?;
    let e = b.linear("time_embedding.linear_1", tp, temb_dim, true)?;
    let e = blocks::silu(&mut b, "time_embedding.act", e);
    let emb = b.linear("time_embedding.linear_2", e, temb_dim, true)?;
    // Every ResnetBlock2D applies SiLU to the embedding before its projection; compute it once.
    let temb = blocks::silu(&mut b, "time_embedding.resnet_act", emb);

    let mut x = b.conv2d("conv_in", sample, ch0, 3, 1, SAME3, true)?;
    let mut skips: Vec<ValueId> = vec![x];
    for (i, kind) in cfg.down_block_types.iter().enumerate() {
        let p = format!("down_blocks.{i}");
        let cout = cfg.block_out_channels[i];
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
            if kind == "CrossAttnDownBlock2D" {
                x = blocks::transformer2d(
                    &mut b,
                    &join(&p, &format!("attentions.{j}")),
                    x,
                    ctx,
                    cfg.heads[i],
                    cfg.transformer_layers[i],
                    groups,
                    cfg.use_linear_projection,
                )?;
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

    x = blocks::resnet(
        &mut b,
        "mid_block.resnets.0",
        x,
        top,
        Some(temb),
        groups,
        eps,
    )?;
    x = blocks::transformer2d(
        &mut b,
        "mid_block.attentions.0",
        x,
        ctx,
        cfg.heads[nb - 1],
        cfg.transformer_layers[nb - 1],
        groups,
        cfg.use_linear_projection,
    )?;
    x = blocks::resnet(
        &mut b,
        "mid_block.resnets.1",
        x,
        top,
        Some(temb),
        groups,
        eps,
    )?;

    for (i, kind) in cfg.up_block_types.iter().enumerate() {
        let p = format!("up_blocks.{i}");
        let rev = nb - 1 - i;
        let cout = cfg.block_out_channels[rev];
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
            if kind == "CrossAttnUpBlock2D" {
                x = blocks::transformer2d(
                    &mut b,
                    &join(&p, &format!("attentions.{j}")),
                    x,
                    ctx,
                    cfg.heads[rev],
                    cfg.transformer_layers[rev],
                    groups,
                    cfg.use_linear_projection,
                )?;
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
    b.output("sample", out);
    b.finish()
}
