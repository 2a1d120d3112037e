//! Text-to-image: tokenizer → CLIP text encoder → guided denoising over the UNet with a
//! scheduler → VAE decoder → pixels. Host code that runs graphs step by step.

use crate::clip::{self, ClipConfig};
use crate::config::Cfg;
use crate::image::{to_rgb8, RgbImage};
use crate::schedulers::{self, GaussianNoise, Scheduler};
use crate::source::{Component, ModelSource};
use crate::tokenizer::ClipTokenizer;
use crate::unet::{self, UNetConfig};
use crate::vae::{self, VaeConfig};
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
}

/// A text encoder with its weights.
pub struct TextEncoder {
    pub cfg: ClipConfig,
    pub weights: Weights,
    pub clip_skip: usize,
}

impl TextEncoder {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let cfg = ClipConfig::from_cfg(&src.config(Component::TextEncoder)?)?;
        let g = clip::build(&cfg, 1, cfg.max_position_embeddings, opts.clip_skip)?;
        let weights = src.weights(
            &g,
            Component::TextEncoder,
            opts.variant.as_deref(),
            opts.weight_seed,
            opts.weights_dtype,
        )?;
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

/// A timestep given as a scalar, (1,) or one per batch item → (batch,).
/// Integer timesteps are converted to f32, as torch does.
pub(crate) fn batch_timestep(t: Tensor, batch: usize) -> Result<Tensor> {
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
        let cfg = UNetConfig::from_cfg(&src.config(Component::Unet)?)?;
        let d = cfg.downscale();
        let g = unet::build(&cfg, 1, d, d, 1)?;
        let weights = src.weights(
            &g,
            Component::Unet,
            opts.variant.as_deref(),
            opts.weight_seed,
            opts.weights_dtype,
        )?;
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
        let c = ctx.shape().to_vec();
        if c.len() != 3 || c[0] != s[0] || c[2] != self.cfg.cross_attention_dim {
            return Err(Error::input(
                "encoder_hidden_states",
                format!(
                    "shape {c:?}; expected ({}, length, {})",
                    s[0], self.cfg.cross_attention_dim
                ),
            ));
        }
        let timestep = batch_timestep(timestep, s[0])?;
        let mut g = unet::build(&self.cfg, s[0], s[2], s[3], c[1])?;
        g.repeats = self.repeats;
        let mut out = exec.run_stage(
            obs,
            "unet",
            0,
            &g,
            &self.weights,
            vec![
                ("sample".into(), sample),
                ("timestep".into(), timestep),
                ("encoder_hidden_states".into(), ctx),
            ],
        )?;
        Ok(out.remove("sample").expect("unet graph output"))
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
        let cfg = VaeConfig::from_cfg(&src.config(Component::Vae)?)?;
        let g = if decoder {
            vae::build_decoder(&cfg, 1, 1, 1)?
        } else {
            let f = cfg.downscale();
            vae::build_encoder(&cfg, 1, f, f)?
        };
        let weights = src.weights(
            &g,
            Component::Vae,
            opts.variant.as_deref(),
            opts.weight_seed,
            opts.weights_dtype,
        )?;
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

/// A Stable Diffusion text-to-image pipeline.
pub struct StableDiffusion {
    pub label: String,
    pub random_weights: bool,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: TextEncoder,
    pub unet: Unet,
    pub vae: VaePart,
    pub scheduler_cfg: Cfg,
}

/// One text-to-image request.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance: f32,
    pub scheduler: Option<String>,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    /// Initial noise (1, C, H/f, W/f), before scaling by the scheduler's initial sigma.
    pub latents: Option<Tensor>,
}

/// Progress of a generation, reported as it happens.
pub enum Progress {
    TextEncoded(Duration),
    Step {
        index: usize,
        total: usize,
        time: Duration,
    },
    Decoded(Duration),
}

pub struct Generated {
    pub image: RgbImage,
    pub final_latents: Tensor,
    pub prompt_embeds: Tensor,
    pub scheduler: &'static str,
    pub text_time: Duration,
    pub step_times: Vec<Duration>,
    pub decode_time: Duration,
}

impl Generated {
    /// From the three stages' results: (embeddings, text time), (final latents, step times,
    /// scheduler), (image, decode time).
    fn new(
        (prompt_embeds, text_time): (Tensor, Duration),
        (final_latents, step_times, scheduler): (Tensor, Vec<Duration>, &'static str),
        (image, decode_time): (RgbImage, Duration),
    ) -> Self {
        Self {
            image,
            final_latents,
            prompt_embeds,
            scheduler,
            text_time,
            step_times,
            decode_time,
        }
    }
}

/// Check image size flags against a model's VAE downscale factor (reads only its config).
pub fn check_image_size(
    src: &ModelSource,
    width: Option<usize>,
    height: Option<usize>,
) -> Result<()> {
    let f = VaeConfig::from_cfg(&src.config(Component::Vae)?)?.downscale();
    for (flag, v) in [("--width", width), ("--height", height)] {
        if let Some(v) = v {
            check_multiple(flag, v, f)?;
        }
    }
    Ok(())
}

/// The image size a model was trained at (UNet sample size × VAE downscale), from configs.
pub fn native_size(src: &ModelSource) -> Result<usize> {
    let unet = UNetConfig::from_cfg(&src.config(Component::Unet)?)?;
    let vae = VaeConfig::from_cfg(&src.config(Component::Vae)?)?;
    Ok(unet.sample_size * vae.downscale())
}

fn check_multiple(flag: &str, v: usize, f: usize) -> Result<()> {
    if v == 0 || v % f != 0 {
        return Err(Error::invalid(format!(
            "{flag} {v}: must be a positive multiple of {f} (the VAE's downscale factor)"
        )));
    }
    Ok(())
}

impl StableDiffusion {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let tokenizer = src.tokenizer()?;
        let text_encoder = TextEncoder::load(src, opts)?;
        let unet = Unet::load(src, opts)?;
        let vae = VaePart::load(src, opts, true)?;
        let scheduler_cfg = src.config(Component::Scheduler)?;
        if text_encoder.cfg.hidden_size != unet.cfg.cross_attention_dim {
            return Err(Error::invalid(format!(
                "{}: text encoder width {} differs from the UNet's cross_attention_dim {}",
                src.label(),
                text_encoder.cfg.hidden_size,
                unet.cfg.cross_attention_dim
            )));
        }
        Ok(Self {
            label: src.label(),
            random_weights: src.is_random(),
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_cfg,
        })
    }

    /// Pixels per latent pixel.
    pub fn vae_scale(&self) -> usize {
        self.vae.cfg.downscale()
    }

    /// The image size the model was trained at.
    pub fn default_size(&self) -> usize {
        self.unet.cfg.sample_size * self.vae_scale()
    }

    /// Build the scheduler a request would use (its config, or the override), with timesteps set.
    pub fn scheduler(&self, name: Option<&str>, steps: usize) -> Result<Box<dyn Scheduler>> {
        // As StableDiffusionPipeline.__init__ does for old configs: steps_offset 1, no clipping.
        let mut cfg = self.scheduler_cfg.v.clone();
        if let Some(o) = cfg.as_object_mut() {
            o.insert("steps_offset".into(), 1.into());
            o.insert("clip_sample".into(), false.into());
        }
        let mut s = schedulers::from_config(&cfg, name, &self.scheduler_cfg.file)?;
        s.set_timesteps(steps)?;
        Ok(s)
    }

    /// Check a request before any work: sizes, steps, guidance, latents.
    pub fn validate(&self, req: &GenerateRequest) -> Result<()> {
        let f = self.vae_scale();
        check_multiple("--width", req.width, f)?;
        check_multiple("--height", req.height, f)?;
        if req.steps == 0 {
            return Err(Error::invalid(
                "--steps 0: at least one denoising step is needed",
            ));
        }
        if !req.guidance.is_finite() {
            return Err(Error::invalid(format!(
                "--guidance {}: must be a finite number",
                req.guidance
            )));
        }
        if let Some(l) = &req.latents {
            let want = [1, self.unet.cfg.in_channels, req.height / f, req.width / f];
            if l.shape() != want {
                return Err(Error::input(
                    "latents",
                    format!(
                        "shape {:?}; a {}x{} image needs {want:?} (--width/--height over {f})",
                        l.shape(),
                        req.width,
                        req.height
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn generate(
        &self,
        exec: &Executor,
        req: &GenerateRequest,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<Generated> {
        self.validate(req)?;
        let mut scheduler = self.scheduler(req.scheduler.as_deref(), req.steps)?;
        let text = (&req.prompt[..], &req.negative_prompt[..], req.guidance);
        let (ctx, text_time) =
            self.text_encoder
                .encode_prompts(&self.tokenizer, exec, text, progress, obs)?;
        let (final_latents, step_times) =
            self.denoise_latents(exec, req, &ctx, scheduler.as_mut(), progress, obs)?;
        let decoded = self.decode_latents(exec, req, &final_latents, progress, obs)?;
        let denoised = (final_latents, step_times, scheduler.name());
        Ok(Generated::new((ctx, text_time), denoised, decoded))
    }

    /// [`StableDiffusion::generate`] for a pipeline used once (the CLI): each component's
    /// weights are freed as soon as its stage is done, so the text encoder's weights are gone
    /// while the UNet runs and the UNet's while the VAE decodes (its activations are the
    /// largest of the three at 512×512). Same results as `generate`.
    pub fn generate_once(
        mut self,
        exec: &Executor,
        req: &GenerateRequest,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<Generated> {
        self.validate(req)?;
        let mut scheduler = self.scheduler(req.scheduler.as_deref(), req.steps)?;
        let text = (&req.prompt[..], &req.negative_prompt[..], req.guidance);
        let (ctx, text_time) =
            self.text_encoder
                .encode_prompts(&self.tokenizer, exec, text, progress, obs)?;
        self.text_encoder.weights.release();
        let (final_latents, step_times) =
            self.denoise_latents(exec, req, &ctx, scheduler.as_mut(), progress, obs)?;
        self.unet.weights.release();
        let decoded = self.decode_latents(exec, req, &final_latents, progress, obs)?;
        let denoised = (final_latents, step_times, scheduler.name());
        Ok(Generated::new((ctx, text_time), denoised, decoded))
    }

    /// The scheduler's loop from the initial noise (or the request's latents) to the final
    /// latents (1, C, h, w).
    fn denoise_latents(
        &self,
        exec: &Executor,
        req: &GenerateRequest,
        ctx: &Tensor,
        scheduler: &mut dyn Scheduler,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Vec<Duration>)> {
        let f = self.vae_scale();
        let (lh, lw) = (req.height / f, req.width / f);
        let lc = self.unet.cfg.in_channels;
        let batch = if req.guidance > 1.0 { 2 } else { 1 };
        let mut graph = unet::build(&self.unet.cfg, batch, lh, lw, ctx.shape()[1])?;
        // The denoiser runs once per timestep (`KernelChoice::keep_filters` may keep its filters).
        graph.repeats = true;
        let (latents, step_times) = denoise(
            exec,
            obs,
            &graph,
            &self.unet.weights,
            scheduler,
            &[lc, lh, lw],
            ctx,
            req,
            progress,
        )?;
        Ok((Tensor::new(vec![1, lc, lh, lw], latents)?, step_times))
    }

    /// Final latents → RGB8 pixels through the VAE decoder.
    fn decode_latents(
        &self,
        exec: &Executor,
        req: &GenerateRequest,
        latents: &Tensor,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(RgbImage, Duration)> {
        let td = Instant::now();
        let inv = 1.0 / self.vae.cfg.scaling_factor;
        let z: Vec<f32> = latents.data().iter().map(|v| v * inv).collect();
        let mut dec = self
            .vae
            .run(exec, obs, Tensor::new(latents.shape().to_vec(), z)?)?;
        let sample = dec.remove("sample").expect("decoder output");
        let image = to_rgb8(sample.data(), req.height, req.width);
        let decode_time = td.elapsed();
        progress(Progress::Decoded(decode_time));
        Ok((image, decode_time))
    }
}

/// The guided denoising loop of the image and video pipelines: initial noise (seeded, or
/// `req.latents`) scaled by the scheduler's initial sigma, then per timestep: scale the input,
/// run `graph` on the doubled batch (negative, positive) when guided, combine with the
/// guidance scale, and step. `latent` is one latent's shape without the batch axis. Returns
/// the final latents and the time of each step.
#[allow(clippy::too_many_arguments)]
pub(crate) fn denoise(
    exec: &Executor,
    obs: &mut dyn Observer,
    graph: &prism_core::Graph,
    weights: &Weights,
    scheduler: &mut dyn Scheduler,
    latent: &[usize],
    ctx: &Tensor,
    req: &impl DenoiseRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<f32>, Vec<Duration>)> {
    let n: usize = latent.iter().product();
    let guided = req.guidance() > 1.0;
    let mut latents: Vec<f32> = match req.latents() {
        Some(t) => t.data().to_vec(),
        None => {
            let mut v = vec![0f32; n];
            schedulers::NoiseSource::fill_normal(&mut GaussianNoise::new(req.seed()), &mut v);
            v
        }
    };
    let sigma = scheduler.init_noise_sigma();
    latents.iter_mut().for_each(|v| *v *= sigma);
    let mut noise = GaussianNoise::new(req.seed().wrapping_add(1));
    let batch = if guided { 2 } else { 1 };
    let mut shape = vec![batch];
    shape.extend_from_slice(latent);
    let timesteps = scheduler.timesteps().to_vec();
    let mut step_times = Vec::with_capacity(timesteps.len());
    for (i, &t) in timesteps.iter().enumerate() {
        let ts = Instant::now();
        let mut x = latents.clone();
        scheduler.scale_model_input(&mut x, i);
        let mut input = x.clone();
        if guided {
            input.extend_from_slice(&x);
        }
        let sample = Tensor::new(shape.clone(), input)?;
        let tt = Tensor::new(vec![batch], vec![t as f32; batch])?;
        let mut out = exec.run_stage(
            obs,
            "unet",
            i,
            graph,
            weights,
            vec![
                ("sample".into(), sample),
                ("timestep".into(), tt),
                ("encoder_hidden_states".into(), ctx.clone()),
            ],
        )?;
        let eps = out.remove("sample").expect("unet output").into_data();
        let pred: Vec<f32> = if guided {
            let (u, c) = eps.split_at(n);
            u.iter()
                .zip(c)
                .map(|(u, c)| u + req.guidance() * (c - u))
                .collect()
        } else {
            eps
        };
        latents = scheduler.step(&pred, i, &latents, &mut noise)?;
        let dt = ts.elapsed();
        step_times.push(dt);
        progress(Progress::Step {
            index: i,
            total: timesteps.len(),
            time: dt,
        });
    }
    Ok((latents, step_times))
}

/// What the denoising loop needs of a request.
pub(crate) trait DenoiseRequest {
    fn guidance(&self) -> f32;
    fn seed(&self) -> u64;
    fn latents(&self) -> Option<&Tensor>;
}

impl DenoiseRequest for GenerateRequest {
    fn guidance(&self) -> f32 {
        self.guidance
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn latents(&self) -> Option<&Tensor> {
        self.latents.as_ref()
    }
}

/// One graph of a generation and how many times it runs.
pub struct StageGraph {
    /// `text_encoder`, `unet` or `vae_decoder`.
    pub name: &'static str,
    pub graph: prism_core::Graph,
    pub runs: usize,
}

/// What a text-to-image generation executes, from configs alone (no weights read): the text
/// encoder once (negative and positive prompts together with guidance), the UNet once per step
/// on the doubled batch (guidance > 1), the VAE decoder once.
#[derive(Clone, Debug)]
pub struct GenerationShape {
    pub width: usize,
    pub height: usize,
    pub batch: usize,
    pub steps: usize,
    pub guidance: f32,
    pub clip_skip: usize,
    /// Scheduler override (else the model's).
    pub scheduler: Option<String>,
}

pub fn generation_graphs(src: &ModelSource, s: &GenerationShape) -> Result<Vec<StageGraph>> {
    let clip_cfg = ClipConfig::from_cfg(&src.config(Component::TextEncoder)?)?;
    let unet_cfg = UNetConfig::from_cfg(&src.config(Component::Unet)?)?;
    let vae_cfg = VaeConfig::from_cfg(&src.config(Component::Vae)?)?;
    let f = vae_cfg.downscale();
    check_multiple("--width", s.width, f)?;
    check_multiple("--height", s.height, f)?;
    if s.batch == 0 {
        return Err(Error::invalid("--batch 0: at least one image is needed"));
    }
    let cfg_mult = if s.guidance > 1.0 { 2 } else { 1 };
    let len = clip_cfg.max_position_embeddings;
    // The UNet runs once per scheduler timestep (PNDM takes steps + 1).
    let sched = src.config(Component::Scheduler)?;
    let mut sched_cfg = sched.v.clone();
    if let Some(o) = sched_cfg.as_object_mut() {
        o.insert("steps_offset".into(), 1.into());
    }
    let mut scheduler = schedulers::from_config(&sched_cfg, s.scheduler.as_deref(), &sched.file)?;
    scheduler.set_timesteps(s.steps)?;
    let unet_runs = scheduler.timesteps().len();
    Ok(vec![
        StageGraph {
            name: "text_encoder",
            graph: clip::build(&clip_cfg, s.batch * cfg_mult, len, s.clip_skip)?,
            runs: 1,
        },
        StageGraph {
            name: "unet",
            graph: prism_core::Graph {
                repeats: true,
                ..unet::build(
                    &unet_cfg,
                    s.batch * cfg_mult,
                    s.height / f,
                    s.width / f,
                    len,
                )?
            },
            runs: unet_runs,
        },
        StageGraph {
            name: "vae_decoder",
            graph: vae::build_decoder(&vae_cfg, s.batch, s.height / f, s.width / f)?,
            runs: 1,
        },
    ])
}
