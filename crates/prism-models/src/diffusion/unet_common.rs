//! What `UNet2DConditionModel` ([`super::unet2d`]) and `UNet3DConditionModel`
//! ([`super::unet3d`]) share: the config keys both read, and the skeleton of the graph — time
//! embedding, `conv_in`, down blocks collecting skip connections, the mid block, up blocks
//! consuming them, `conv_norm_out` → SiLU → `conv_out`.
//!
//! Each UNet supplies only what differs: how it reads a few shared keys (`SharedKeys`), its
//! per-block attention keys (`AttentionKeys`), and the layers it adds at each resolution
//! (`UNetLayers`: the image UNet's spatial transformers; the video UNet's temporal
//! convolutions, spatial + temporal transformers and `transformer_in`).

use crate::config::{Cfg, MAX_CHANNELS, MAX_LAYERS, MAX_SAMPLE_SIZE};
use crate::nn::blocks::{self, join, SAME3};
use prism_core::{ActKind, Error, GraphBuilder, Result, ValueId};
use serde_json::Value;

/// The config keys both UNets read. Each UNet's config embeds one and derefs to it, so
/// `cfg.in_channels`, `cfg.block_out_channels`, `cfg.downscale()` read the same on either.
#[derive(Clone, Debug, PartialEq)]
pub struct UNetCommonConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// One entry per down block (up blocks use them in reverse).
    pub block_out_channels: Vec<usize>,
    /// ResNets per down block; up blocks have one more (they also consume the downsampler's
    /// skip).
    pub layers_per_block: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f32,
    /// 1 pads every side; 0 is diffusers' asymmetric (0, 1, 0, 1) pad.
    pub downsample_padding: usize,
    pub sample_size: usize,
}

/// The two block types of each direction of one UNet class: with cross attention
/// (`attentions.{j}` after every ResNet) or without.
pub(crate) struct BlockTypes {
    pub cross_attn_down: &'static str,
    pub down: &'static str,
    pub cross_attn_up: &'static str,
    pub up: &'static str,
}

/// How one UNet class reads the shared keys where the two differ (as diffusers' classes do).
pub(crate) struct SharedKeys {
    pub class_name: &'static str,
    pub block_types: BlockTypes,
    /// Rejects keys whose value prism does not implement; runs right after the class check.
    pub reject_unsupported: fn(&Cfg) -> Result<()>,
    /// `layers_per_block` may be a per-block list with equal entries (UNet2DConditionModel
    /// takes a list; prism builds one depth), not only an int (UNet3DConditionModel passes it
    /// straight to its blocks).
    pub equal_layer_lists: bool,
    /// A per-block `cross_attention_dim` list gets an error saying lists are unsupported
    /// (UNet2DConditionModel takes one); otherwise it fails as a non-integer.
    pub explain_cross_attention_dim_lists: bool,
    pub default_cross_attention_dim: usize,
    /// `norm_num_groups` = null is an error (prism needs group norms) rather than the default
    /// 32.
    pub reject_null_norm_groups: bool,
    pub default_sample_size: usize,
}

/// The per-block attention keys of one UNet class (head counts or head widths), read by
/// [`UNetCommonConfig::from_cfg`] between the block lists and the group count.
pub(crate) trait AttentionKeys: Sized {
    /// Read for `nb` blocks, right after the block types.
    fn read(c: &Cfg, nb: usize) -> Result<Self>;
    /// Check block `i`'s entries against its `ch` channels (named `ch_key` in errors), right
    /// after its group count is checked against them.
    fn check_block(&self, c: &Cfg, i: usize, ch_key: &str, ch: usize) -> Result<()>;
}

impl UNetCommonConfig {
    /// The shared keys, and the UNet class's attention keys `A`, in this order: class,
    /// unsupported values, block lists, `A`, groups (with `A` per block), then the scalars.
    /// Every value the skeleton indexes, divides by or puts into a shape is checked here, with
    /// an error naming its key; [`build_skeleton`] relies on these invariants.
    pub(crate) fn from_cfg<A: AttentionKeys>(c: &Cfg, keys: &SharedKeys) -> Result<(Self, A)> {
        let class = c.str_or("_class_name", keys.class_name)?;
        if class != keys.class_name {
            return Err(c.err(format!(
                "`_class_name` {class:?} is not {}",
                keys.class_name
            )));
        }
        (keys.reject_unsupported)(c)?;

        let block_out_channels = c.block_channels("block_out_channels")?;
        let nb = block_out_channels.len();
        let down_block_types = c.block_types("down_block_types", nb, "block_out_channels")?;
        let up_block_types = c.block_types("up_block_types", nb, "block_out_channels")?;
        let t = &keys.block_types;
        let (down, up) = ([t.cross_attn_down, t.down], [t.cross_attn_up, t.up]);
        for (key, types, allowed) in [
            ("down_block_types", &down_block_types, down),
            ("up_block_types", &up_block_types, up),
        ] {
            if let Some(t) = types.iter().find(|t| !allowed.contains(&t.as_str())) {
                return Err(c.err(format!(
                    "unsupported `{key}` entry {t:?} (prism supports {})",
                    allowed.join(", ")
                )));
            }
        }
        let attention = A::read(c, nb)?;
        let norm_num_groups = match c.v.get("norm_num_groups") {
            Some(Value::Null) if keys.reject_null_norm_groups => {
                return Err(c.err("unsupported `norm_num_groups` = null (prism needs group norms)"))
            }
            _ => c.usize_in("norm_num_groups", 32, 1, MAX_CHANNELS)?,
        };
        for (i, &ch) in block_out_channels.iter().enumerate() {
            let ch_key = format!("`block_out_channels`[{i}]");
            c.check_divides("norm_num_groups", norm_num_groups, &ch_key, ch)?;
            attention.check_block(c, i, &ch_key, ch)?;
        }
        let in_channels = c.usize_in("in_channels", 4, 1, MAX_CHANNELS)?;
        let out_channels = c.usize_in("out_channels", 4, 1, MAX_CHANNELS)?;
        let layers_per_block = read_layers_per_block(c, nb, keys.equal_layer_lists)?;
        let cross_attention_dim = match c.v.get("cross_attention_dim") {
            Some(Value::Array(_)) if keys.explain_cross_attention_dim_lists => {
                return Err(c.err("per-block `cross_attention_dim` lists are not supported"))
            }
            _ => c.usize_in(
                "cross_attention_dim",
                keys.default_cross_attention_dim,
                1,
                MAX_CHANNELS,
            )?,
        };
        let norm_eps = c.f32_at_least("norm_eps", 1e-5, 0.0)?;
        let downsample_padding = c.usize_in("downsample_padding", 1, 0, 1)?;
        let sample_size =
            c.usize_in("sample_size", keys.default_sample_size, 1, MAX_SAMPLE_SIZE)?;
        let common = Self {
            in_channels,
            out_channels,
            block_out_channels,
            layers_per_block,
            down_block_types,
            up_block_types,
            cross_attention_dim,
            norm_num_groups,
            norm_eps,
            downsample_padding,
            sample_size,
        };
        Ok((common, attention))
    }

    /// Spatial downscale of the latent through the UNet (2 per downsampling block).
    /// `from_cfg` guarantees 1..=MAX_BLOCKS blocks; the shift is clamped regardless.
    pub fn downscale(&self) -> usize {
        let shift = self.block_out_channels.len().saturating_sub(1);
        1usize << shift.min(usize::BITS as usize - 1)
    }
}

/// `layers_per_block`: an int (default 2), or with `equal_lists` also a per-block list whose
/// entries are all equal; in `1..=MAX_LAYERS`.
fn read_layers_per_block(c: &Cfg, nb: usize, equal_lists: bool) -> Result<usize> {
    if !equal_lists {
        return c.usize_in("layers_per_block", 2, 1, MAX_LAYERS);
    }
    let layers = c.per_block("layers_per_block", nb, Some(2))?;
    // `nb` >= 1 (block_channels), so `layers[0]` exists.
    if layers.iter().any(|&l| l != layers[0]) {
        return Err(c.err(format!(
            "per-block `layers_per_block` lists are not supported, got {layers:?}"
        )));
    }
    c.check_range("layers_per_block", layers[0], 1, MAX_LAYERS)?;
    Ok(layers[0])
}

/// diffusers `Timesteps` (sinusoidal, `ch0` features) → `TimestepEmbedding` (linear → SiLU
/// → linear, 4·ch0 features), then the SiLU every ResnetBlock2D applies to the embedding
/// before its projection, computed once: t (B,) → (B, 4·ch0).
pub(crate) fn time_embedding(
    b: &mut GraphBuilder,
    t: ValueId,
    ch0: usize,
    flip_sin_to_cos: bool,
    freq_shift: f32,
) -> Result<ValueId> {
    let temb_dim = ch0 * 4;
    let tp = b.timestep_proj("time_proj", t, ch0, flip_sin_to_cos, freq_shift)?;
    let e = b.linear("time_embedding.linear_1", tp, temb_dim, true)?;
    let e = blocks::silu(b, "time_embedding.act", e);
    let emb = b.linear("time_embedding.linear_2", e, temb_dim, true)?;
    Ok(blocks::silu(b, "time_embedding.resnet_act", emb))
}

/// The layers one UNet class adds to the shared skeleton. Every method takes and returns the
/// main activation (N, C, H, W) — for the video UNet N = B·F, frames in the batch axis.
pub(crate) trait UNetLayers {
    /// After `conv_in` (the video UNet's `transformer_in`).
    fn after_conv_in(&self, _b: &mut GraphBuilder, x: ValueId) -> Result<ValueId> {
        Ok(x)
    }

    /// After `{p}.resnets.{j}` (the video UNet's `{p}.temp_convs.{j}`).
    fn after_resnet(
        &self,
        _b: &mut GraphBuilder,
        _p: &str,
        _j: usize,
        x: ValueId,
    ) -> Result<ValueId> {
        Ok(x)
    }

    /// `{p}.attentions.{j}` (and the video UNet's `{p}.temp_attentions.{j}`) after the ResNet
    /// of a cross-attention block or of the mid block. `level` indexes the per-block lists
    /// (down-block order: up block i is level nb − 1 − i, the mid block nb − 1), so x has
    /// `block_out_channels[level]` channels.
    fn attention(
        &self,
        b: &mut GraphBuilder,
        p: &str,
        j: usize,
        level: usize,
        x: ValueId,
    ) -> Result<ValueId>;
}

/// The UNet from `conv_in` to `conv_out`: x (N, in_channels, h, w) and the activated time
/// embedding temb (N, 4·ch0) → (N, out_channels, h, w). `types` says which blocks have
/// attention; `layers` adds the class's own layers.
pub(crate) fn build_skeleton(
    b: &mut GraphBuilder,
    cfg: &UNetCommonConfig,
    types: &BlockTypes,
    x: ValueId,
    temb: ValueId,
    layers: &impl UNetLayers,
) -> Result<ValueId> {
    let nb = cfg.block_out_channels.len();
    if nb == 0 || cfg.down_block_types.len() != nb || cfg.up_block_types.len() != nb {
        return Err(Error::invalid(format!(
            "unet: {nb} blocks, but {} down block types and {} up block types",
            cfg.down_block_types.len(),
            cfg.up_block_types.len()
        )));
    }
    // At least one block, one type per block: the `[i]` / `[rev]` / `[nb - 1]` indexing below
    // is in range.
    let (ch0, top) = (cfg.block_out_channels[0], cfg.block_out_channels[nb - 1]);
    let (groups, eps) = (cfg.norm_num_groups, cfg.norm_eps);
    let resnet = |b: &mut GraphBuilder, p: &str, x: ValueId, cout: usize| {
        blocks::resnet(b, p, x, cout, Some(temb), groups, eps)
    };

    let x = b.conv2d("conv_in", x, ch0, 3, 1, SAME3, true)?;
    let mut x = layers.after_conv_in(b, x)?;

    // Down: block i at block_out_channels[i] channels and 1/2^i of the size (stride-2
    // downsamplers); conv_in's output, every ResNet's (or its attention's) and every
    // downsampler's are skips.
    let mut skips: Vec<ValueId> = vec![x];
    for (i, kind) in cfg.down_block_types.iter().enumerate() {
        let p = format!("down_blocks.{i}");
        let cout = cfg.block_out_channels[i];
        for j in 0..cfg.layers_per_block {
            x = resnet(b, &join(&p, &format!("resnets.{j}")), x, cout)?;
            x = layers.after_resnet(b, &p, j, x)?;
            if kind == types.cross_attn_down {
                x = layers.attention(b, &p, j, i, x)?;
            }
            skips.push(x);
        }
        if i + 1 < nb {
            x = blocks::downsample(b, &join(&p, "downsamplers.0"), x, cfg.downsample_padding)?;
            skips.push(x);
        }
    }

    // Mid: ResNet → attention → ResNet at the top channels and the smallest size.
    x = resnet(b, "mid_block.resnets.0", x, top)?;
    x = layers.after_resnet(b, "mid_block", 0, x)?;
    x = layers.attention(b, "mid_block", 0, nb - 1, x)?;
    x = resnet(b, "mid_block.resnets.1", x, top)?;
    x = layers.after_resnet(b, "mid_block", 1, x)?;

    // Up: block i at block_out_channels[nb − 1 − i]; each ResNet takes (x ‖ latest skip) on
    // the channel axis, so its input has the two widths added.
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
            x = resnet(b, &join(&p, &format!("resnets.{j}")), cat, cout)?;
            x = layers.after_resnet(b, &p, j, x)?;
            if kind == types.cross_attn_up {
                x = layers.attention(b, &p, j, rev, x)?;
            }
        }
        if i + 1 < nb {
            // diffusers forwards the next skip's size so odd latent sizes line up.
            let next = skips
                .last()
                .map(|&s| b.shape(s).to_vec())
                .filter(|s| s.len() == 4)
                .ok_or_else(|| Error::invalid(format!("{p}: no skip connection left")))?;
            x = blocks::upsample(b, &join(&p, "upsamplers.0"), x, Some((next[2], next[3])))?;
        }
    }
    let x = b.group_norm("conv_norm_out", x, groups, eps, false)?;
    let x = b.act("conv_norm_out", x, ActKind::Silu);
    b.conv2d("conv_out", x, cfg.out_channels, 3, 1, SAME3, true)
}
