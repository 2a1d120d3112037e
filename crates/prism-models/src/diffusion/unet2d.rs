//! `UNet2DConditionModel` as Stable Diffusion 1.x / 2.x use it.

use crate::config::Cfg;
use crate::nn::blocks::{self, join, SAME3};
use prism_core::{ActKind, DType, Graph, GraphBuilder, Result, ValueId};
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
            return Err(c.err(format!("_class_name {class} is not UNet2DConditionModel")));
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

        let block_out_channels = c.usize_list("block_out_channels")?;
        let nb = block_out_channels.len();
        let down_block_types = c.str_list("down_block_types")?;
        let up_block_types = c.str_list("up_block_types")?;
        if down_block_types.len() != nb || up_block_types.len() != nb {
            return Err(c.err(format!(
                "block_out_channels has {nb} entries but down_block_types {} and up_block_types {}",
                down_block_types.len(),
                up_block_types.len()
            )));
        }
        for t in &down_block_types {
            if !DOWN_TYPES.contains(&t.as_str()) {
                return Err(c.err(format!(
                    "unsupported down block type {t} (prism supports {})",
                    DOWN_TYPES.join(", ")
                )));
            }
        }
        for t in &up_block_types {
            if !UP_TYPES.contains(&t.as_str()) {
                return Err(c.err(format!(
                    "unsupported up block type {t} (prism supports {})",
                    UP_TYPES.join(", ")
                )));
            }
        }
        let layers = c.per_block("layers_per_block", nb, Some(2))?;
        if layers.iter().any(|&l| l != layers[0]) {
            return Err(c.err("per-block layers_per_block lists are not supported"));
        }
        // diffusers: num_attention_heads = num_attention_heads or attention_head_dim.
        let heads = if c.has("num_attention_heads") {
            c.per_block("num_attention_heads", nb, None)?
        } else {
            c.per_block("attention_head_dim", nb, Some(8))?
        };
        let transformer_layers = c.per_block("transformer_layers_per_block", nb, Some(1))?;
        let cross_attention_dim = match c.v.get("cross_attention_dim") {
            Some(Value::Array(_)) => {
                return Err(c.err("per-block cross_attention_dim lists are not supported"))
            }
            _ => c.usize_or("cross_attention_dim", 1280)?,
        };
        let norm_num_groups = c.usize_or("norm_num_groups", 32)?;
        for (i, &ch) in block_out_channels.iter().enumerate() {
            if norm_num_groups == 0 || ch % norm_num_groups != 0 {
                return Err(c.err(format!(
                    "block_out_channels[{i}] = {ch} is not divisible by norm_num_groups = {norm_num_groups}"
                )));
            }
            if heads[i] == 0 || ch % heads[i] != 0 {
                return Err(c.err(format!(
                    "block_out_channels[{i}] = {ch} is not divisible by its {} attention heads",
                    heads[i]
                )));
            }
        }
        Ok(Self {
            in_channels: c.usize_or("in_channels", 4)?,
            out_channels: c.usize_or("out_channels", 4)?,
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
            norm_eps: c.f64_or("norm_eps", 1e-5)? as f32,
            flip_sin_to_cos: c.bool_or("flip_sin_to_cos", true)?,
            freq_shift: c.f64_or("freq_shift", 0.0)? as f32,
            downsample_padding: c.usize_or("downsample_padding", 1)?,
            sample_size: c.usize_or("sample_size", 64)?,
        })
    }

    /// Spatial downscale of the latent through the UNet (2 per downsampling block).
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// Build the UNet graph for `batch` latents of `h`×`w` and `text_len` context tokens.
/// Inputs: `sample` (B, C, h, w), `timestep` (B,), `encoder_hidden_states` (B, L, D).
/// Output: `sample`.
pub fn build(cfg: &UNetConfig, batch: usize, h: usize, w: usize, text_len: usize) -> Result<Graph> {
    let mut b = GraphBuilder::new("unet");
    let sample = b.input("sample", &[batch, cfg.in_channels, h, w], DType::F32);
    let t = b.input("timestep", &[batch], DType::F32);
    let ctx = b.input(
        "encoder_hidden_states",
        &[batch, text_len, cfg.cross_attention_dim],
        DType::F32,
    );
    let ch0 = cfg.block_out_channels[0];
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
    let nb = cfg.block_out_channels.len();
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

    let top = *cfg.block_out_channels.last().unwrap();
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
            let skip = skips.pop().expect("one skip per up-block layer");
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
            let next = b
                .shape(*skips.last().expect("skips remain below the top block"))
                .to_vec();
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
