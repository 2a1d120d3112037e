//! `AutoencoderKL`: the encoder (pixels → Gaussian over latents) and the decoder.

use crate::config::{Cfg, MAX_CHANNELS, MAX_LAYERS};
use crate::nn::blocks::{self, join, NOPAD, SAME3};
use prism_core::{ActKind, DType, Error, Graph, GraphBuilder, Result, ValueId};
use serde_json::json;

#[derive(Clone, Debug, PartialEq)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f32,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

impl VaeConfig {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let class = c.str_or("_class_name", "AutoencoderKL")?;
        if class != "AutoencoderKL" {
            let hint = if class == "VQModel" {
                ": a VQ model (aMUSEd's vqvae/), where a KL VAE is expected"
            } else {
                ""
            };
            return Err(c.err(format!(
                "`_class_name` {class:?} is not AutoencoderKL{hint}"
            )));
        }
        c.expect("shift_factor", &[json!(0.0), json!(0)])?;
        c.expect("latents_mean", &[])?;
        c.expect("latents_std", &[])?;
        Self::body_from_cfg(c, 4)
    }

    /// The encoder / decoder fields `AutoencoderKL` and `VQModel` share (`latent_channels`
    /// defaults to `default_latent`).
    pub(crate) fn body_from_cfg(c: &Cfg, default_latent: usize) -> Result<Self> {
        c.expect("act_fn", &[json!("silu")])?;
        // Every value the builders index, divide by or put into a shape is checked here,
        // with an error naming its key; the builders rely on these invariants.
        let block_out_channels = c.block_channels("block_out_channels")?;
        let n = block_out_channels.len();
        for (key, want) in [
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ] {
            let types = c.block_types(key, n, "block_out_channels")?;
            if let Some(t) = types.iter().find(|t| *t != want) {
                return Err(c.err(format!(
                    "unsupported `{key}` entry {t:?} (prism supports {want})"
                )));
            }
        }
        let norm_num_groups = c.usize_in("norm_num_groups", 32, 1, MAX_CHANNELS)?;
        for (i, &ch) in block_out_channels.iter().enumerate() {
            let ch_key = format!("`block_out_channels`[{i}]");
            c.check_divides("norm_num_groups", norm_num_groups, &ch_key, ch)?;
        }
        Ok(Self {
            in_channels: c.usize_in("in_channels", 3, 1, MAX_CHANNELS)?,
            out_channels: c.usize_in("out_channels", 3, 1, MAX_CHANNELS)?,
            latent_channels: c.usize_in("latent_channels", default_latent, 1, MAX_CHANNELS)?,
            block_out_channels,
            layers_per_block: c.usize_in("layers_per_block", 1, 1, MAX_LAYERS)?,
            norm_num_groups,
            // Latents are divided by it.
            scaling_factor: c.f32_positive("scaling_factor", 0.18215)?,
            use_quant_conv: c.bool_or("use_quant_conv", true)?,
            use_post_quant_conv: c.bool_or("use_post_quant_conv", true)?,
            mid_block_add_attention: c.bool_or("mid_block_add_attention", true)?,
        })
    }

    /// Pixels per latent pixel along each axis.
    /// `from_cfg` guarantees 1..=MAX_BLOCKS blocks; the shift is clamped regardless.
    pub fn downscale(&self) -> usize {
        let shift = self.block_out_channels.len().saturating_sub(1);
        1usize << shift.min(usize::BITS as usize - 1)
    }

    /// The first and last block widths (the builders' only fixed indices), or an error for a
    /// config with no blocks (impossible from `from_cfg`).
    fn ends(&self) -> Result<(usize, usize)> {
        match (
            self.block_out_channels.first(),
            self.block_out_channels.last(),
        ) {
            (Some(&a), Some(&b)) => Ok((a, b)),
            _ => Err(Error::invalid("vae config: block_out_channels is empty")),
        }
    }
}

const EPS: f32 = 1e-6;

fn mid_block(b: &mut GraphBuilder, p: &str, x: ValueId, cfg: &VaeConfig) -> Result<ValueId> {
    let c = b.shape(x)[1];
    let g = cfg.norm_num_groups;
    let mut x = blocks::resnet(b, &join(p, "resnets.0"), x, c, None, g, EPS)?;
    if cfg.mid_block_add_attention {
        x = blocks::vae_attention(b, &join(p, "attentions.0"), x, g)?;
    }
    blocks::resnet(b, &join(p, "resnets.1"), x, c, None, g, EPS)
}

/// The encoder from `encoder.conv_in` to `encoder.conv_out` (`out` channels): shared by the
/// KL VAE (2·latent, mean and log-variance) and the VQ model (latent).
pub(crate) fn encoder_body(
    b: &mut GraphBuilder,
    cfg: &VaeConfig,
    x: ValueId,
    out: usize,
) -> Result<ValueId> {
    let (ch0, _) = cfg.ends()?;
    let g = cfg.norm_num_groups;
    let n = cfg.block_out_channels.len();
    let mut x = b.conv2d("encoder.conv_in", x, ch0, 3, 1, SAME3, true)?;
    for (i, &cout) in cfg.block_out_channels.iter().enumerate() {
        let p = format!("encoder.down_blocks.{i}");
        for j in 0..cfg.layers_per_block {
            x = blocks::resnet(b, &join(&p, &format!("resnets.{j}")), x, cout, None, g, EPS)?;
        }
        if i + 1 < n {
            x = blocks::downsample(b, &join(&p, "downsamplers.0"), x, 0)?;
        }
    }
    x = mid_block(b, "encoder.mid_block", x, cfg)?;
    let x = b.group_norm("encoder.conv_norm_out", x, g, EPS, false)?;
    let x = b.act("encoder.conv_norm_out", x, ActKind::Silu);
    b.conv2d("encoder.conv_out", x, out, 3, 1, SAME3, true)
}

/// Encoder: `sample` (B, 3, H, W) in [-1, 1] → `latent_mean`, `latent_logvar`
/// (B, latent, H/f, W/f), after quant_conv, logvar clamped to [-30, 20] as diffusers does.
pub fn build_encoder(cfg: &VaeConfig, batch: usize, h: usize, w: usize) -> Result<Graph> {
    let mut b = GraphBuilder::new("vae_encoder");
    let x = b.input("sample", &[batch, cfg.in_channels, h, w], DType::F32);
    let lc = cfg.latent_channels;
    let mut x = encoder_body(&mut b, cfg, x, 2 * lc)?;
    if cfg.use_quant_conv {
        x = b.conv2d("quant_conv", x, 2 * lc, 1, 1, NOPAD, true)?;
    }
    let mean = b.slice("latent_dist.mean", x, 1, 0, lc)?;
    let logvar = b.slice("latent_dist.logvar", x, 1, lc, lc)?;
    let logvar = b.clamp("latent_dist.logvar", logvar, -30.0, 20.0);
    b.output("latent_mean", mean);
    b.output("latent_logvar", logvar);
    b.finish()
}

/// The decoder from `decoder.conv_in` (latent channels in) to `decoder.conv_out`: shared by
/// the KL VAE and the VQ model.
pub(crate) fn decoder_body(b: &mut GraphBuilder, cfg: &VaeConfig, x: ValueId) -> Result<ValueId> {
    let (_, top) = cfg.ends()?;
    let g = cfg.norm_num_groups;
    let n = cfg.block_out_channels.len();
    let mut x = b.conv2d("decoder.conv_in", x, top, 3, 1, SAME3, true)?;
    x = mid_block(b, "decoder.mid_block", x, cfg)?;
    for i in 0..n {
        let p = format!("decoder.up_blocks.{i}");
        let cout = cfg.block_out_channels[n - 1 - i];
        for j in 0..=cfg.layers_per_block {
            x = blocks::resnet(b, &join(&p, &format!("resnets.{j}")), x, cout, None, g, EPS)?;
        }
        if i + 1 < n {
            x = blocks::upsample(b, &join(&p, "upsamplers.0"), x, None)?;
        }
    }
    let x = b.group_norm("decoder.conv_norm_out", x, g, EPS, false)?;
    let x = b.act("decoder.conv_norm_out", x, ActKind::Silu);
    b.conv2d("decoder.conv_out", x, cfg.out_channels, 3, 1, SAME3, true)
}

/// Decoder: `latent_sample` (B, latent, h, w), as `vae.decode` takes it (post_quant_conv +
/// decoder; no scaling factor) → `sample` (B, 3, h·f, w·f).
pub fn build_decoder(cfg: &VaeConfig, batch: usize, h: usize, w: usize) -> Result<Graph> {
    let mut b = GraphBuilder::new("vae_decoder");
    let z = b.input(
        "latent_sample",
        &[batch, cfg.latent_channels, h, w],
        DType::F32,
    );
    let mut x = z;
    if cfg.use_post_quant_conv {
        x = b.conv2d("post_quant_conv", x, cfg.latent_channels, 1, 1, NOPAD, true)?;
    }
    let out = decoder_body(&mut b, cfg, x)?;
    b.output("sample", out);
    b.finish()
}
