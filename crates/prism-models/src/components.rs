//! A model component with its weights, runnable on its own (what `forward` runs and what
//! pipelines are made of): the text encoder, the UNet (2D or 3D), one half of the VAE. Each
//! checks its inputs, builds its graph for their shapes and runs it.

use crate::autoencoders::kl::{self as vae, VaeConfig};
use crate::diffusion::unet2d::{self as unet, UNetConfig};
use crate::diffusion::unet3d::{self, UNet3DConfig};
use crate::pipelines::Progress;
use crate::source::{Component, ModelSource};
use crate::text::clip::{self, ClipConfig};
use crate::text::tokenizer::ClipTokenizer;
use prism_core::{Error, Result, Tensor};
use prism_runtime::{Executor, Observer, Weights};
use std::time::{Duration, Instant};

/// How to load a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Weight file variant, e.g. `fp16` for `*.fp16.safetensors`.
    pub variant: Option<String>,
    /// Run all but the last k text-encoder layers (diffusers' `clip_skip`).
    pub clip_skip: usize,
    /// Seed of the random weights of a preset.
    pub weight_seed: u64,
    /// How weight matrices are kept in memory (computation is f32 either way).
    pub weights_dtype: prism_runtime::WeightDType,
    /// The backend the weights are laid out for (None: the CPU backend).
    pub backend: Option<std::sync::Arc<dyn prism_runtime::Backend>>,
}

impl LoadOptions {
    /// The layout of `graph`'s parameters on the backend these options name.
    pub fn layout(&self, graph: &prism_core::Graph) -> Vec<prism_runtime::WeightLayout> {
        match &self.backend {
            Some(b) => b.weight_layout(graph, self.weights_dtype),
            None => prism_runtime::cpu::weight_layout(graph, self.weights_dtype),
        }
    }
}

/// A text encoder with its weights.
pub struct TextEncoder {
    pub cfg: ClipConfig,
    pub weights: Weights,
    pub clip_skip: usize,
}

impl TextEncoder {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let cfg = ClipConfig::from_cfg(&src.config(Component::TEXT_ENCODER)?)?;
        let g = clip::build(&cfg, 1, cfg.max_position_embeddings, opts.clip_skip)?;
        let weights = src.weights(&g, Component::TEXT_ENCODER, opts)?;
        Ok(Self {
            cfg,
            weights,
            clip_skip: opts.clip_skip,
        })
    }

    /// `input_ids` (B, L), integer ids → `last_hidden_state`, `pooler_output`.
    pub fn run(
        &self,
        exec: &Executor,
        obs: &mut dyn Observer,
        ids: Tensor,
    ) -> Result<std::collections::HashMap<String, Tensor>> {
        let s = ids.shape().to_vec();
        if s.len() != 2 || s[1] > self.cfg.max_position_embeddings {
            return Err(Error::input(
                "input_ids",
                format!(
                    "shape {s:?}; expected (batch, length ≤ {})",
                    self.cfg.max_position_embeddings
                ),
            ));
        }
        let g = clip::build(&self.cfg, s[0], s[1], self.clip_skip)?;
        exec.run_stage(
            obs,
            "text_encoder",
            0,
            &g,
            &self.weights,
            vec![("input_ids".into(), ids)],
        )
    }

    /// Text embeddings for a request: negative (unconditional) first, then the prompt, as
    /// diffusers concatenates (the prompt alone without guidance, `guidance` ≤ 1); reports
    /// the time through `progress`.
    pub(crate) fn encode_prompts(
        &self,
        tokenizer: &ClipTokenizer,
        exec: &Executor,
        (prompt, negative, guidance): (&str, &str, f32),
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Duration)> {
        let t0 = Instant::now();
        let prompts: Vec<&str> = if guidance > 1.0 {
            vec![negative, prompt]
        } else {
            vec![prompt]
        };
        let mut data = Vec::new();
        for p in &prompts {
            data.extend(tokenizer.encode(p)?.into_iter().map(i64::from));
        }
        let ids = Tensor::from_ids(vec![prompts.len(), tokenizer.max_length()], data)?;
        let ctx = self
            .run(exec, obs, ids)?
            .remove("last_hidden_state")
            .expect("text encoder output");
        let text_time = t0.elapsed();
        progress(Progress::TextEncoded(text_time));
        Ok((ctx, text_time))
    }
}

/// `encoder_hidden_states` for a denoiser: (batch, length, cross_dim).
fn check_context(ctx: &Tensor, batch: usize, cross_dim: usize) -> Result<()> {
    let c = ctx.shape();
    if c.len() != 3 || c[0] != batch || c[2] != cross_dim {
        return Err(Error::input(
            "encoder_hidden_states",
            format!("shape {c:?}; expected ({batch}, length, {cross_dim})"),
        ));
    }
    Ok(())
}

/// A denoiser graph's named inputs: `sample`, `timestep`, `encoder_hidden_states`.
pub fn denoiser_inputs(sample: Tensor, timestep: Tensor, ctx: Tensor) -> Vec<(String, Tensor)> {
    vec![
        ("sample".into(), sample),
        ("timestep".into(), timestep),
        ("encoder_hidden_states".into(), ctx),
    ]
}

/// Run a denoiser graph once as stage `unet`; its `sample` output.
fn run_denoiser_once(
    exec: &Executor,
    obs: &mut dyn Observer,
    g: &prism_core::Graph,
    weights: &Weights,
    (sample, timestep, ctx): (Tensor, Tensor, Tensor),
) -> Result<Tensor> {
    let inputs = denoiser_inputs(sample, timestep, ctx);
    let mut out = exec.run_stage(obs, "unet", 0, g, weights, inputs)?;
    Ok(out.remove("sample").expect("unet graph output"))
}

/// A timestep given as a scalar, (1,) or one per batch item → (batch,).
/// Integer timesteps are converted to f32, as torch does.
pub fn batch_timestep(t: Tensor, batch: usize) -> Result<Tensor> {
    let t = t.into_f32();
    match t.shape() {
        [] | [1] => Tensor::new(vec![batch], vec![t.data()[0]; batch]),
        [n] if *n == batch => Ok(t),
        s => Err(Error::input(
            "timestep",
            format!("shape {s:?}; expected a scalar or ({batch},)"),
        )),
    }
}

pub struct Unet {
    pub cfg: UNetConfig,
    pub weights: Weights,
    /// Run [`Unet::run`]'s graph as one that repeats, as the denoising loop does (with
    /// `KernelChoice::keep_filters`, its filters are kept): for callers that run it many
    /// times, such as benchmarks of a generation's steps.
    pub repeats: bool,
}

impl Unet {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let cfg = UNetConfig::from_cfg(&src.config(Component::UNET)?)?;
        let d = cfg.downscale();
        let g = unet::build(&cfg, 1, d, d, 1)?;
        let weights = src.weights(&g, Component::UNET, opts)?;
        Ok(Self {
            cfg,
            weights,
            repeats: false,
        })
    }

    /// sample (B, C, h, w), timestep (B,), encoder_hidden_states (B, L, D) → sample.
    pub fn run(
        &self,
        exec: &Executor,
        obs: &mut dyn Observer,
        sample: Tensor,
        timestep: Tensor,
        ctx: Tensor,
    ) -> Result<Tensor> {
        let s = sample.shape().to_vec();
        if s.len() != 4 || s[1] != self.cfg.in_channels {
            return Err(Error::input(
                "sample",
                format!(
                    "shape {s:?}; expected (batch, {}, height, width)",
                    self.cfg.in_channels
                ),
            ));
        }
        check_context(&ctx, s[0], self.cfg.cross_attention_dim)?;
        let timestep = batch_timestep(timestep, s[0])?;
        let mut g = unet::build(&self.cfg, s[0], s[2], s[3], ctx.shape()[1])?;
        g.repeats = self.repeats;
        run_denoiser_once(exec, obs, &g, &self.weights, (sample, timestep, ctx))
    }
}

/// The VAE, with the weights of one half (encoder or decoder).
pub struct VaePart {
    pub cfg: VaeConfig,
    pub weights: Weights,
    pub decoder: bool,
}

impl VaePart {
    pub fn load(src: &ModelSource, opts: &LoadOptions, decoder: bool) -> Result<Self> {
        let cfg = VaeConfig::from_cfg(&src.config(Component::VAE)?)?;
        let g = if decoder {
            vae::build_decoder(&cfg, 1, 1, 1)?
        } else {
            let f = cfg.downscale();
            vae::build_encoder(&cfg, 1, f, f)?
        };
        let weights = src.weights(&g, Component::VAE, opts)?;
        Ok(Self {
            cfg,
            weights,
            decoder,
        })
    }

    /// Decoder: `latent_sample` → `sample`; encoder: `sample` → `latent_mean`, `latent_logvar`.
    pub fn run(
        &self,
        exec: &Executor,
        obs: &mut dyn Observer,
        x: Tensor,
    ) -> Result<std::collections::HashMap<String, Tensor>> {
        let s = x.shape().to_vec();
        let (name, ch) = if self.decoder {
            ("latent_sample", self.cfg.latent_channels)
        } else {
            ("sample", self.cfg.in_channels)
        };
        if s.len() != 4 || s[1] != ch {
            return Err(Error::input(
                name,
                format!("shape {s:?}; expected (batch, {ch}, height, width)"),
            ));
        }
        let f = self.cfg.downscale();
        if !self.decoder && (s[2] % f != 0 || s[3] % f != 0) {
            return Err(Error::input(
                name,
                format!(
                    "height and width {}x{} must be multiples of {f}",
                    s[2], s[3]
                ),
            ));
        }
        let g = if self.decoder {
            vae::build_decoder(&self.cfg, s[0], s[2], s[3])?
        } else {
            vae::build_encoder(&self.cfg, s[0], s[2], s[3])?
        };
        let stage = if self.decoder {
            "vae_decoder"
        } else {
            "vae_encoder"
        };
        exec.run_stage(obs, stage, 0, &g, &self.weights, vec![(name.into(), x)])
    }
}

/// A 3D UNet with its weights.
pub struct Unet3d {
    pub cfg: UNet3DConfig,
    pub weights: Weights,
}

impl Unet3d {
    pub fn load(
        src: &ModelSource,
        variant: Option<&str>,
        weight_seed: u64,
        dtype: prism_runtime::WeightDType,
    ) -> Result<Self> {
        let cfg = UNet3DConfig::from_cfg(&src.config(Component::UNET)?)?;
        let d = cfg.downscale();
        let g = unet3d::build(&cfg, 1, 1, d, d, 1)?;
        let opts = LoadOptions {
            variant: variant.map(str::to_string),
            weight_seed,
            weights_dtype: dtype,
            ..LoadOptions::default()
        };
        let weights = src.weights(&g, Component::UNET, &opts)?;
        Ok(Self { cfg, weights })
    }

    /// sample (B, C, F, h, w), timestep (B,) (or a scalar / (1,), broadcast), and
    /// encoder_hidden_states (B, L, D) → sample (B, C, F, h, w).
    pub fn run(
        &self,
        exec: &Executor,
        obs: &mut dyn Observer,
        sample: Tensor,
        timestep: Tensor,
        ctx: Tensor,
    ) -> Result<Tensor> {
        let s = sample.shape().to_vec();
        if s.len() != 5 || s[1] != self.cfg.in_channels {
            return Err(Error::input(
                "sample",
                format!(
                    "shape {s:?}; expected (batch, {}, frames, height, width)",
                    self.cfg.in_channels
                ),
            ));
        }
        check_context(&ctx, s[0], self.cfg.cross_attention_dim)?;
        let timestep = batch_timestep(timestep, s[0])?;
        let g = unet3d::build(&self.cfg, s[0], s[2], s[3], s[4], ctx.shape()[1])?;
        run_denoiser_once(exec, obs, &g, &self.weights, (sample, timestep, ctx))
    }
}
