//! Janus-Pro's image generation path (transformers `JanusForConditionalGeneration`,
//! `generation_mode="image"`), as graphs: the Llama language model over the prompt (prefill)
//! and then one image token per step (decode), both ending in the generation head; and the VQ
//! decoder (`JanusVQVAE.decode`: L2-normalized codebook lookup, conv decoder) that turns the
//! token grid into pixels. The understanding path (SigLIP encoder, aligner, LM head) is not
//! built and its weights are not loaded.
//!
//! Parameter names equal the checkpoint's keys (`model.language_model.layers.0...`,
//! `model.generation_head.vision_head.weight`, `model.vqmodel.decoder.up.0.block.0.conv1...`).
//! The prefill and decode graphs declare one parameter table (see `GraphBuilder::declare`), so
//! one set of loaded weights serves both.

use crate::config::{Cfg, MAX_BLOCKS, MAX_CHANNELS, MAX_LAYERS, MAX_TABLE};
use crate::nn::blocks::{from_tokens, join, nchw, to_tokens, NOPAD, SAME3};
use crate::text::llama::{self, LlamaConfig};
use prism_core::{
    ActKind, AttentionKind, AttentionSpec, DType, Error, Graph, GraphBuilder, Result, ValueId,
};

/// The language model's weights in the checkpoint.
pub const LM_PREFIX: &str = "model.language_model";
/// GroupNorm groups of every norm in the VQ model (fixed in transformers).
pub const VQ_GROUPS: usize = 32;

/// `vq_config` (transformers `JanusVQVAEConfig`): the parts image generation uses.
#[derive(Clone, Debug, PartialEq)]
pub struct VqConfig {
    /// Codebook vector width.
    pub embed_dim: usize,
    /// Codebook size: image tokens.
    pub num_embeddings: usize,
    pub latent_channels: usize,
    pub base_channels: usize,
    pub channel_multiplier: Vec<usize>,
    pub num_res_blocks: usize,
    pub out_channels: usize,
    /// Width of the generation aligner's and head's hidden layers.
    pub projection_dim: usize,
    /// Width of the hidden state the generation head reads (the language model's).
    pub image_token_embed_dim: usize,
    /// Linear layers of the generation aligner.
    pub num_hidden_layers: usize,
    pub hidden_act: ActKind,
}

impl VqConfig {
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let act = c.str_or("hidden_act", "gelu")?;
        let hidden_act = match act.as_str() {
            "gelu" => ActKind::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" => ActKind::GeluTanh,
            "silu" => ActKind::Silu,
            _ => {
                return Err(c.err(format!(
                    "`hidden_act` {act:?}: prism runs gelu, gelu_pytorch_tanh and silu"
                )))
            }
        };
        let base_channels = c.usize_in("base_channels", 128, 1, MAX_CHANNELS)?;
        let channel_multiplier = if c.has("channel_multiplier") {
            c.usize_list("channel_multiplier")?
        } else {
            vec![1, 1, 2, 2, 4]
        };
        if channel_multiplier.is_empty() || channel_multiplier.len() > MAX_BLOCKS {
            return Err(c.err(format!(
                "`channel_multiplier` has {} levels; 1 to {MAX_BLOCKS} are supported",
                channel_multiplier.len()
            )));
        }
        c.check_entries("channel_multiplier", &channel_multiplier, 1, 1 << 10)?;
        for m in &channel_multiplier {
            let ch = base_channels * m;
            if ch % VQ_GROUPS != 0 {
                return Err(c.err(format!(
                    "`base_channels` {base_channels} × multiplier {m} = {ch} channels do not split into the VQ model's {VQ_GROUPS} GroupNorm groups"
                )));
            }
        }
        Ok(Self {
            embed_dim: c.usize_in("embed_dim", 8, 1, MAX_CHANNELS)?,
            num_embeddings: c.usize_in("num_embeddings", 16384, 1, MAX_TABLE)?,
            latent_channels: c.usize_in("latent_channels", 256, 1, MAX_CHANNELS)?,
            base_channels,
            channel_multiplier,
            num_res_blocks: c.usize_in("num_res_blocks", 2, 1, MAX_LAYERS)?,
            out_channels: c.usize_in("out_channels", 3, 3, 3)?,
            projection_dim: c.usize_in("projection_dim", 2048, 1, MAX_CHANNELS)?,
            image_token_embed_dim: c.usize_in("image_token_embed_dim", 2048, 1, MAX_CHANNELS)?,
            num_hidden_layers: c.usize_in("num_hidden_layers", 2, 1, MAX_LAYERS)?,
            hidden_act,
        })
    }

    /// Pixels per token along a side: 2^(levels − 1).
    pub fn upscale(&self) -> usize {
        1 << (self.channel_multiplier.len() - 1)
    }
}

/// Token ids and sampling defaults of image generation (`generation_config.json`, else the
/// tokenizer's special tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationDefaults {
    pub bos_token_id: usize,
    pub pad_token_id: usize,
    /// `<begin_of_image>`: kept, with BOS, in the unconditional row.
    pub boi_token_id: usize,
    pub guidance: f32,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub do_sample: bool,
}

/// A Janus model's configuration (transformers `JanusConfig`), as image generation reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct JanusConfig {
    pub text: LlamaConfig,
    pub vq: VqConfig,
    /// `<image_placeholder>`: marks image positions in understanding prompts; checked to be
    /// in the vocabulary.
    pub image_token_id: usize,
    /// Token grid side (`vision_config.image_size / patch_size`).
    pub grid: usize,
    /// Tokens per image (grid²).
    pub num_image_tokens: usize,
    pub generation: Option<GenerationDefaults>,
}

impl JanusConfig {
    /// From `config.json` (and `generation_config.json` when given).
    pub fn from_cfg(c: &Cfg, generation: Option<&Cfg>) -> Result<Self> {
        let model_type = c.str_or("model_type", "janus")?;
        if model_type != "janus" {
            return Err(c.err(format!(
                "`model_type` {model_type:?}: expected \"janus\" (JanusForConditionalGeneration)"
            )));
        }
        let text_cfg = c.sub("text_config")?;
        let tt = text_cfg.str_or("model_type", "llama")?;
        if tt != "llama" {
            return Err(text_cfg.err(format!(
                "`model_type` {tt:?}: Janus' language model must be a Llama"
            )));
        }
        let text = LlamaConfig::from_cfg(&text_cfg)?;
        let vq_cfg = c.sub("vq_config")?;
        let vq = VqConfig::from_cfg(&vq_cfg)?;
        let vision = c.sub("vision_config")?;
        let image_size = vision.usize_in("image_size", 384, 1, 1 << 16)?;
        let patch_size = vision.usize_in("patch_size", 16, 1, 1 << 16)?;
        vision.check_divides("patch_size", patch_size, "image_size", image_size)?;
        let grid = image_size / patch_size;
        let num_image_tokens = vision.usize_in("num_image_tokens", grid * grid, 1, MAX_TABLE)?;
        if num_image_tokens != grid * grid {
            return Err(vision.err(format!(
                "`num_image_tokens` {num_image_tokens} is not (image_size / patch_size)² = {}: the VQ decoder reads a {grid}×{grid} token grid",
                grid * grid
            )));
        }
        let image_token_id = c.usize_in("image_token_id", 100581, 0, MAX_TABLE)?;
        if image_token_id >= text.vocab_size {
            return Err(c.err(format!(
                "`image_token_id` {image_token_id} is outside the language model's vocabulary of {} (text_config.vocab_size)",
                text.vocab_size
            )));
        }
        let d = text.hidden_size;
        if vq.image_token_embed_dim != d {
            return Err(vq_cfg.err(format!(
                "`image_token_embed_dim` {} does not match the language model's hidden_size {d}: the generation head reads its hidden states",
                vq.image_token_embed_dim
            )));
        }
        if vq.projection_dim != d {
            return Err(vq_cfg.err(format!(
                "`projection_dim` {} does not match the language model's hidden_size {d}: the generation aligner feeds image tokens into it",
                vq.projection_dim
            )));
        }
        let generation = generation
            .map(|g| GenerationDefaults::from_cfg(g, text.vocab_size))
            .transpose()?;
        Ok(Self {
            text,
            vq,
            image_token_id,
            grid,
            num_image_tokens,
            generation,
        })
    }

    /// Output image side in pixels.
    pub fn image_size(&self) -> usize {
        self.grid * self.vq.upscale()
    }

    /// Parameters of what image generation runs: language model, generation embeddings,
    /// aligner and head, VQ codebook and decoder.
    pub fn param_count(&self) -> Result<usize> {
        let lm = lm_graph(self, LmStep::ImageToken, 1, 1)?.param_count();
        let vq = vq_decoder_graph(self, 1)?.param_count();
        Ok(lm + vq)
    }
}

impl GenerationDefaults {
    fn from_cfg(g: &Cfg, vocab: usize) -> Result<Self> {
        let id = |key: &str, v: Option<usize>| -> Result<usize> {
            let v = v.ok_or_else(|| g.err(format!("no `{key}`")))?;
            if v >= vocab {
                return Err(g.err(format!("`{key}` {v} is outside the vocabulary of {vocab}")));
            }
            Ok(v)
        };
        let opt_usize = |key: &str| -> Result<Option<usize>> {
            g.has(key)
                .then(|| g.usize_in(key, 0, 0, MAX_TABLE))
                .transpose()
        };
        let boi =
            g.v.get("generation_kwargs")
                .and_then(|k| k.get("boi_token_id"))
                .and_then(|v| v.as_u64())
                .map(|v| v as usize);
        Ok(Self {
            bos_token_id: id("bos_token_id", opt_usize("bos_token_id")?)?,
            pad_token_id: id("pad_token_id", opt_usize("pad_token_id")?)?,
            boi_token_id: id("generation_kwargs.boi_token_id", boi)?,
            guidance: g.f32_finite("guidance_scale", 5.0)?,
            temperature: g
                .has("temperature")
                .then(|| g.f32_finite("temperature", 1.0))
                .transpose()?,
            top_k: opt_usize("top_k")?,
            top_p: g
                .has("top_p")
                .then(|| g.f32_finite("top_p", 1.0))
                .transpose()?,
            do_sample: g.bool_or("do_sample", false)?,
        })
    }
}

/// What a language-model graph takes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LmStep {
    /// Prefill: `input_ids` (B, len) prompt tokens through the text embedding.
    Prompt(usize),
    /// Decode: `image_ids` (B, 1), the last sampled image token, through the generation
    /// embedding and aligner.
    ImageToken,
}

/// Every parameter the language-model graphs use, in one order (both graphs declare it so
/// their tables match).
fn lm_params(cfg: &JanusConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let (t, vq) = (&cfg.text, &cfg.vq);
    let (d, p) = (t.hidden_size, vq.projection_dim);
    let mut v = vec![
        (
            format!("{LM_PREFIX}.embed_tokens.weight"),
            vec![t.vocab_size, d],
        ),
        (
            "model.generation_embeddings.weight".into(),
            vec![vq.num_embeddings, vq.embed_dim],
        ),
        (
            "model.generation_aligner.fc1.weight".into(),
            vec![p, vq.embed_dim],
        ),
        ("model.generation_aligner.fc1.bias".into(), vec![p]),
    ];
    for i in 0..vq.num_hidden_layers - 1 {
        let n = format!("model.generation_aligner.hidden_layers.{i}");
        v.push((format!("{n}.weight"), vec![p, p]));
        v.push((format!("{n}.bias"), vec![p]));
    }
    v.extend(llama::decoder_params(t, LM_PREFIX)?);
    v.extend([
        (
            "model.generation_head.proj_out.weight".into(),
            vec![p, vq.image_token_embed_dim],
        ),
        ("model.generation_head.proj_out.bias".into(), vec![p]),
        (
            "model.generation_head.vision_head.weight".into(),
            vec![vq.num_embeddings, p],
        ),
        (
            "model.generation_head.vision_head.bias".into(),
            vec![vq.num_embeddings],
        ),
    ]);
    Ok(v)
}

/// The language model for one step with caches of `capacity` positions, ending in the
/// generation head on the last position: out `logits` (B, 1, codebook).
pub fn lm_graph(cfg: &JanusConfig, step: LmStep, batch: usize, capacity: usize) -> Result<Graph> {
    let (t, vq) = (&cfg.text, &cfg.vq);
    let mut b = GraphBuilder::new(match step {
        LmStep::Prompt(_) => "janus-prefill",
        LmStep::ImageToken => "janus-decode",
    });
    for (name, shape) in lm_params(cfg)? {
        b.declare(name, shape)?;
    }
    let x = match step {
        LmStep::Prompt(len) => {
            let ids = b.input("input_ids", &[batch, len], DType::I64);
            b.token_embedding(
                &format!("{LM_PREFIX}.embed_tokens"),
                ids,
                t.vocab_size,
                t.hidden_size,
            )?
        }
        LmStep::ImageToken => {
            let ids = b.input("image_ids", &[batch, 1], DType::I64);
            let e = b.token_embedding(
                "model.generation_embeddings",
                ids,
                vq.num_embeddings,
                vq.embed_dim,
            )?;
            let mut h = b.linear("model.generation_aligner.fc1", e, vq.projection_dim, true)?;
            for i in 0..vq.num_hidden_layers - 1 {
                let p = format!("model.generation_aligner.hidden_layers.{i}");
                h = b.act(&format!("{p}.act"), h, vq.hidden_act);
                h = b.linear(&p, h, vq.projection_dim, true)?;
            }
            h
        }
    };
    let h = llama::decoder(&mut b, t, LM_PREFIX, x, capacity, true)?;
    let h = b.linear("model.generation_head.proj_out", h, vq.projection_dim, true)?;
    let h = b.act("model.generation_head.act", h, vq.hidden_act);
    let logits = b.linear(
        "model.generation_head.vision_head",
        h,
        vq.num_embeddings,
        true,
    )?;
    b.output("logits", logits);
    b.finish()
}

/// `JanusVQVAEResnetBlock`: GroupNorm-SiLU-conv twice, a 1×1 `nin_shortcut` when the width
/// changes.
fn resnet(b: &mut GraphBuilder, p: &str, x: ValueId, cout: usize) -> Result<ValueId> {
    let [_, cin, _, _] = nchw(b, p, x)?;
    let h = b.group_norm(&join(p, "norm1"), x, VQ_GROUPS, 1e-6, false)?;
    let h = b.act(&join(p, "nonlinearity"), h, ActKind::Silu);
    let h = b.conv2d(&join(p, "conv1"), h, cout, 3, 1, SAME3, true)?;
    let h = b.group_norm(&join(p, "norm2"), h, VQ_GROUPS, 1e-6, false)?;
    let h = b.act(&join(p, "nonlinearity"), h, ActKind::Silu);
    let h = b.conv2d(&join(p, "conv2"), h, cout, 3, 1, SAME3, true)?;
    let skip = if cin != cout {
        b.conv2d(&join(p, "nin_shortcut"), x, cout, 1, 1, NOPAD, true)?
    } else {
        x
    };
    b.add(&join(p, "residual"), skip, h)
}

/// `JanusVQVAEAttnBlock`: GroupNorm, 1×1 q/k/v convs, one head over the channels, 1×1
/// `proj_out`, residual.
fn attn_block(b: &mut GraphBuilder, p: &str, x: ValueId) -> Result<ValueId> {
    let [_, c, h, w] = nchw(b, p, x)?;
    let n = b.group_norm(&join(p, "norm"), x, VQ_GROUPS, 1e-6, false)?;
    let mut qkv = Vec::new();
    for leaf in ["q", "k", "v"] {
        let y = b.conv2d(&join(p, leaf), n, c, 1, 1, NOPAD, true)?;
        qkv.push(to_tokens(b, &join(p, &format!("{leaf}.tokens")), y)?);
    }
    let spec = AttentionSpec::mha(AttentionKind::SelfAttn, 1, c, false);
    let a = b.attention(p, qkv[0], qkv[1], qkv[2], None, spec)?;
    let a = from_tokens(b, &join(p, "from_tokens"), a, h, w)?;
    let o = b.conv2d(&join(p, "proj_out"), a, c, 1, 1, NOPAD, true)?;
    b.add(&join(p, "residual"), x, o)
}

/// `JanusVQVAE.decode`: in `ids` (B, grid²) integers → out `sample` (B, 3, H, W) in [-1, 1].
pub fn vq_decoder_graph(cfg: &JanusConfig, batch: usize) -> Result<Graph> {
    let vq = &cfg.vq;
    let g = cfg.grid;
    let mut b = GraphBuilder::new("janus-vq-decoder");
    let ids = b.input("ids", &[batch, g * g], DType::I64);
    let e = b.token_embedding(
        "model.vqmodel.quantize.embedding",
        ids,
        vq.num_embeddings,
        vq.embed_dim,
    )?;
    let e = b.l2_normalize("model.vqmodel.quantize.normalize", e, 1e-12)?;
    let e = b.reshape("model.vqmodel.quantize", e, &[batch, g, g, vq.embed_dim])?;
    let e = b.permute("model.vqmodel.quantize", e, &[0, 3, 1, 2])?;
    let p = "model.vqmodel.decoder";
    let mut x = b.conv2d(
        "model.vqmodel.post_quant_conv",
        e,
        vq.latent_channels,
        1,
        1,
        NOPAD,
        true,
    )?;
    let levels = vq.channel_multiplier.len();
    let mut ch = vq.base_channels * vq.channel_multiplier[levels - 1];
    x = b.conv2d(&join(p, "conv_in"), x, ch, 3, 1, SAME3, true)?;
    x = resnet(&mut b, &join(p, "mid.block_1"), x, ch)?;
    x = attn_block(&mut b, &join(p, "mid.attn_1"), x)?;
    x = resnet(&mut b, &join(p, "mid.block_2"), x, ch)?;
    for i in 0..levels {
        let out = vq.base_channels * vq.channel_multiplier[levels - 1 - i];
        for j in 0..=vq.num_res_blocks {
            x = resnet(&mut b, &format!("{p}.up.{i}.block.{j}"), x, out)?;
            ch = out;
            if i == 0 {
                x = attn_block(&mut b, &format!("{p}.up.{i}.attn.{j}"), x)?;
            }
        }
        if i != levels - 1 {
            let [_, _, h, w] = nchw(&b, p, x)?;
            let up = format!("{p}.up.{i}.upsample");
            let u = b.upsample_nearest(&join(&up, "interpolate"), x, h * 2, w * 2)?;
            x = b.conv2d(&join(&up, "conv"), u, ch, 3, 1, SAME3, true)?;
        }
    }
    let x = b.group_norm(&join(p, "norm_out"), x, VQ_GROUPS, 1e-6, false)?;
    let x = b.act(&join(p, "nonlinearity"), x, ActKind::Silu);
    let x = b.conv2d(&join(p, "conv_out"), x, vq.out_channels, 3, 1, SAME3, true)?;
    b.output("sample", x);
    b.finish()
}

/// How `JanusImageProcessor.postprocess` turns the VQ decoder's output into pixels: the
/// inverse of its normalization, `(x · std + mean) / rescale_factor`, clipped to [0, 255] and
/// truncated to 8 bits (torch's `.to(uint8)`).
#[derive(Clone, Debug, PartialEq)]
pub struct Postprocess {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// 1 / `rescale_factor` (255 for 1/255).
    pub scale: f32,
}

impl Default for Postprocess {
    /// Janus' published values: mean and std 0.5, rescale factor 1/255.
    fn default() -> Self {
        Self {
            mean: [0.5; 3],
            std: [0.5; 3],
            scale: 255.0,
        }
    }
}

impl Postprocess {
    /// From a processor config's image-processor fields (`processor_config.json`'s
    /// `image_processor`, or `preprocessor_config.json`).
    pub fn from_cfg(c: &Cfg) -> Result<Self> {
        let d = Self::default();
        let three = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match c.v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(v) => {
                    let a: Vec<f32> = v
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_f64())
                                .map(|x| x as f32)
                                .collect()
                        })
                        .unwrap_or_default();
                    match a[..] {
                        [x, y, z] if [x, y, z].iter().all(|v| v.is_finite()) => Ok([x, y, z]),
                        _ => Err(c.err(format!("`{key}` must be three finite numbers"))),
                    }
                }
            }
        };
        let normalize = c.bool_or("do_normalize", true)?;
        let (mean, std) = if normalize {
            (three("image_mean", d.mean)?, three("image_std", d.std)?)
        } else {
            ([0.0; 3], [1.0; 3])
        };
        if std.contains(&0.0) {
            return Err(c.err("`image_std` has a zero"));
        }
        let factor = c.f64_or("rescale_factor", 1.0 / 255.0)?;
        if !(factor.is_finite() && factor > 0.0) {
            return Err(c.err(format!("`rescale_factor` {factor} must be positive")));
        }
        if !c.bool_or("do_rescale", true)? {
            return Err(
                c.err("`do_rescale` false: the processor would return floats, not 8-bit pixels")
            );
        }
        Ok(Self {
            mean,
            std,
            // In f64, as Python computes 1 / rescale_factor: 255 exactly for 1/255.
            scale: (1.0 / factor) as f32,
        })
    }

    /// (3, h, w) decoder output → 8-bit RGB.
    pub fn pixels(&self, sample: &[f32], h: usize, w: usize) -> crate::image::RgbImage {
        crate::image::planar_to_rgb8(sample, h, w, |c, v| {
            ((v * self.std[c] + self.mean[c]) * self.scale).clamp(0.0, 255.0) as u8
        })
    }
}

/// Check a token grid before the VQ decoder reads it: every id in the codebook.
pub fn check_image_ids(cfg: &JanusConfig, name: &str, ids: &[i64]) -> Result<()> {
    if let Some(&bad) = ids
        .iter()
        .find(|&&v| v < 0 || v as usize >= cfg.vq.num_embeddings)
    {
        return Err(Error::input(
            name,
            format!(
                "image token {bad} is outside the codebook of {} (vq_config.num_embeddings)",
                cfg.vq.num_embeddings
            ),
        ));
    }
    Ok(())
}
