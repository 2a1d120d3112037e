//! diffusers' `VQModel` (aMUSEd's VQ-GAN): the KL VAE's encoder and decoder around a codebook.
//! Decoding looks token ids up in the codebook (an Embedding node) and runs `post_quant_conv`
//! and the decoder; encoding runs the encoder and `quant_conv`, then picks each position's
//! nearest code (on the host: an argmin over squared distances, as `VectorQuantizer` does).

use super::kl::{decoder_body, encoder_body, VaeConfig};
use crate::config::{Cfg, MAX_CHANNELS, MAX_TABLE};
use crate::nn::blocks::NOPAD;
use prism_core::{DType, Error, Graph, GraphBuilder, Result, Tensor};
use serde_json::json;

/// Every `VQModel` config field prism reads or checks.
const FIELDS: &[&str] = &[
    "in_channels",
    "out_channels",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "act_fn",
    "latent_channels",
    "sample_size",
    "num_vq_embeddings",
    "norm_num_groups",
    "vq_embed_dim",
    "scaling_factor",
    "norm_type",
    "mid_block_add_attention",
    "lookup_from_codebook",
    "force_upcast",
];

#[derive(Clone, Debug, PartialEq)]
pub struct VqConfig {
    /// The encoder / decoder body (shared with the KL VAE; `latent_channels` is the VQ's).
    pub body: VaeConfig,
    /// Codebook entries.
    pub num_vq_embeddings: usize,
    /// Codebook vector width (`vq_embed_dim`, else `latent_channels`).
    pub vq_embed_dim: usize,
}

impl VqConfig {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let class = c.str_or("_class_name", "VQModel")?;
        if class != "VQModel" {
            let hint = if class == "AutoencoderKL" {
                ": a KL VAE (Stable Diffusion's), where a VQ model (aMUSEd's vqvae/) is expected"
            } else {
                ""
            };
            return Err(c.err(format!("`_class_name` {class:?} is not VQModel{hint}")));
        }
        c.only_keys("VQModel", FIELDS)?;
        c.expect("norm_type", &[json!("group")])?;
        // `decode(..., force_not_quantize=True)` with ids needs the codebook lookup.
        c.expect("lookup_from_codebook", &[json!(true)])?;
        let body = VaeConfig::body_from_cfg(c, 3)?;
        let num_vq_embeddings = c.usize_in("num_vq_embeddings", 256, 1, MAX_TABLE)?;
        let vq_embed_dim = c.usize_in("vq_embed_dim", body.latent_channels, 1, MAX_CHANNELS)?;
        Ok(Self {
            body,
            num_vq_embeddings,
            vq_embed_dim,
        })
    }

    /// Pixels per token along each axis.
    pub fn downscale(&self) -> usize {
        self.body.downscale()
    }
}

/// Decoder: `ids` (B, h, w) int64 codes → `sample` (B, 3, h·f, w·f), as
/// `vqvae.decode(ids, force_not_quantize=True, shape=...)` with `lookup_from_codebook`:
/// codebook rows, post_quant_conv, decoder (unclipped).
pub fn build_decoder(cfg: &VqConfig, batch: usize, h: usize, w: usize) -> Result<Graph> {
    let mut b = GraphBuilder::new("vqvae_decoder");
    let ids = b.input("ids", &[batch, h, w], DType::I64);
    let e = b.token_embedding(
        "quantize.embedding",
        ids,
        cfg.num_vq_embeddings,
        cfg.vq_embed_dim,
    )?;
    let q = b.permute("quantize.to_nchw", e, &[0, 3, 1, 2])?;
    let lc = cfg.body.latent_channels;
    let x = b.conv2d("post_quant_conv", q, lc, 1, 1, NOPAD, true)?;
    let out = decoder_body(&mut b, &cfg.body, x)?;
    b.output("sample", out);
    b.finish()
}

/// Encoder: `sample` (B, 3, H, W) in [-1, 1] → `latents` (B, vq_embed_dim, H/f, W/f), what
/// `vqvae.encode(sample).latents` gives (encoder + quant_conv), before quantization.
pub fn build_encoder(cfg: &VqConfig, batch: usize, h: usize, w: usize) -> Result<Graph> {
    let mut b = GraphBuilder::new("vqvae_encoder");
    let x = b.input("sample", &[batch, cfg.body.in_channels, h, w], DType::F32);
    let x = encoder_body(&mut b, &cfg.body, x, cfg.body.latent_channels)?;
    let x = b.conv2d("quant_conv", x, cfg.vq_embed_dim, 1, 1, NOPAD, true)?;
    b.output("latents", x);
    b.finish()
}

/// Each position's nearest codebook entry: latents (B, D, h, w), codebook (V, D) → ids
/// (B, h, w), the smallest squared Euclidean distance (ties to the lower index, as torch's
/// argmin), summed in f64.
pub fn nearest_codes(latents: &Tensor, codebook: &[f32], v: usize) -> Result<Tensor> {
    let &[n, d, h, w] = latents.shape() else {
        return Err(Error::input(
            "latents",
            format!("shape {:?}; expected (B, D, h, w)", latents.shape()),
        ));
    };
    if codebook.len() != v * d {
        return Err(Error::invalid(format!(
            "codebook of {} floats is not {v} entries of {d}",
            codebook.len()
        )));
    }
    let x = latents.data();
    let hw = h * w;
    let mut ids = Vec::with_capacity(n * hw);
    for b in 0..n {
        for p in 0..hw {
            let z: Vec<f64> = (0..d).map(|c| f64::from(x[(b * d + c) * hw + p])).collect();
            let (best, _) = codebook.chunks_exact(d).enumerate().fold(
                (0usize, f64::INFINITY),
                |(bi, bd), (i, e)| {
                    let dist: f64 = z
                        .iter()
                        .zip(e)
                        .map(|(a, &b)| (a - f64::from(b)).powi(2))
                        .sum();
                    if dist < bd {
                        (i, dist)
                    } else {
                        (bi, bd)
                    }
                },
            );
            ids.push(best as i64);
        }
    }
    Tensor::from_ids(vec![n, h, w], ids)
}
