//! Text-to-image: tokenizer → CLIP text encoder → guided denoising over the UNet with a
//! scheduler → VAE decoder → pixels. Host code that runs graphs step by step.

use crate::autoencoders::kl::{self as vae, VaeConfig};
use crate::components::{LoadOptions, TextEncoder, Unet, VaePart};
use crate::config::Cfg;
use crate::diffusion::unet2d::{self as unet, UNetConfig};
use crate::image::{to_rgb8, RgbImage};
use crate::pipelines::common::{run_stages, DiffusionStages, Held};
use crate::pipelines::{
    check_multiple, check_parts, check_request, denoise, scheduler_for, DenoiseRequest, Progress,
    StageGraph,
};
use crate::schedulers::Scheduler;
use crate::source::{Component, ModelSource};
use crate::text::clip::{self, ClipConfig};
use crate::text::tokenizer::ClipTokenizer;
use prism_core::{Error, Result, Tensor};
use prism_runtime::{Executor, Observer};
use std::time::{Duration, Instant};

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
    fn from_stages(s: super::common::Stages<(RgbImage, Duration)>) -> Self {
        Self::new(
            (s.prompt_embeds, s.text_time),
            (s.final_latents, s.step_times, s.scheduler),
            s.decoded,
        )
    }
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
    let f = VaeConfig::from_cfg(&src.config(Component::VAE)?)?.downscale();
    for (flag, v) in [("--width", width), ("--height", height)] {
        if let Some(v) = v {
            check_multiple(flag, v, f)?;
        }
    }
    Ok(())
}

/// The image size a model was trained at (UNet sample size × VAE downscale), from configs.
pub fn native_size(src: &ModelSource) -> Result<usize> {
    let unet = UNetConfig::from_cfg(&src.config(Component::UNET)?)?;
    let vae = VaeConfig::from_cfg(&src.config(Component::VAE)?)?;
    Ok(unet.sample_size * vae.downscale())
}

impl StableDiffusion {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        let tokenizer = src.tokenizer()?;
        let text_encoder = TextEncoder::load(src, opts)?;
        let unet = Unet::load(src, opts)?;
        let vae = VaePart::load(src, opts, true)?;
        let scheduler_cfg = src.config(Component::SCHEDULER)?;
        check_parts(
            &src.label(),
            (text_encoder.cfg.hidden_size, unet.cfg.cross_attention_dim),
            (vae.cfg.latent_channels, unet.cfg.in_channels),
        )?;
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
        scheduler_for(&self.scheduler_cfg, name, steps, true)
    }

    /// Check a request before any work: sizes, steps, guidance, latents.
    pub fn validate(&self, req: &GenerateRequest) -> Result<()> {
        let f = self.vae_scale();
        check_request(req.steps, req.guidance, req.width, req.height, f)?;
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
        run_stages(Held::Kept(self), exec, req, progress, obs).map(Generated::from_stages)
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
        run_stages(Held::Once(&mut self), exec, req, progress, obs).map(Generated::from_stages)
    }

    /// The scheduler's loop from the initial noise (or the request's latents) to the final
    /// latents (1, C, h, w).
    fn run_denoiser(
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
    fn run_decoder(
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

impl DenoiseRequest for GenerateRequest {
    fn guidance(&self) -> f32 {
        self.guidance
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
    fn negative_prompt(&self) -> &str {
        &self.negative_prompt
    }
    fn steps(&self) -> usize {
        self.steps
    }
    fn scheduler(&self) -> Option<&str> {
        self.scheduler.as_deref()
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn latents(&self) -> Option<&Tensor> {
        self.latents.as_ref()
    }
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
    let clip_cfg = ClipConfig::from_cfg(&src.config(Component::TEXT_ENCODER)?)?;
    let unet_cfg = UNetConfig::from_cfg(&src.config(Component::UNET)?)?;
    let vae_cfg = VaeConfig::from_cfg(&src.config(Component::VAE)?)?;
    let f = vae_cfg.downscale();
    check_multiple("--width", s.width, f)?;
    check_multiple("--height", s.height, f)?;
    if s.batch == 0 {
        return Err(Error::invalid("--batch 0: at least one image is needed"));
    }
    let cfg_mult = if s.guidance > 1.0 { 2 } else { 1 };
    let len = clip_cfg.max_position_embeddings;
    // The UNet runs once per scheduler timestep (PNDM takes steps + 1).
    let sched = src.config(Component::SCHEDULER)?;
    let unet_runs = scheduler_for(&sched, s.scheduler.as_deref(), s.steps, true)?
        .timesteps()
        .len();
    Ok(vec![
        StageGraph {
            name: "text_encoder",
            graph: clip::build(&clip_cfg, s.batch * cfg_mult, len, s.clip_skip)?,
            runs: 1,
            key_lens: None,
            weight_dtype: None,
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
            key_lens: None,
            weight_dtype: None,
        },
        StageGraph {
            name: "vae_decoder",
            graph: vae::build_decoder(&vae_cfg, s.batch, s.height / f, s.width / f)?,
            runs: 1,
            key_lens: None,
            weight_dtype: None,
        },
    ])
}

/// The registry entry of the Stable Diffusion text-to-image pipeline.
pub const ENTRY: super::Entry = super::Entry {
    class_name: "StableDiffusionPipeline",
    family: "diffusion (UNet)",
    media: super::MediaKind::Image,
    autoregressive: false,
    default_steps: super::DEFAULT_STEPS,
    default_frames: 0,
    default_guidance: |_| Ok(super::DEFAULT_GUIDANCE),
    open: |src, opts| Ok(Box::new(StableDiffusion::load(src, opts)?)),
    native_size,
    check_size: check_image_size,
    stage_graphs: |src, s| {
        if s.frames.is_some() {
            return Err(Error::invalid(format!(
                "--frames: {} is an image model; frame counts apply to video models (such as t2v)",
                src.label()
            )));
        }
        generation_graphs(
            src,
            &GenerationShape {
                width: s.width,
                height: s.height,
                batch: s.batch,
                steps: s.steps,
                guidance: s.guidance,
                clip_skip: s.clip_skip,
                scheduler: s.scheduler.clone(),
            },
        )
    },
};

impl StableDiffusion {
    /// The image request a generic request asks for (video fields refused by flag).
    pub fn request(&self, r: &super::Request) -> Result<GenerateRequest> {
        if r.frames.is_some() || r.decode_chunk.is_some() {
            return Err(Error::invalid(format!(
                "--frames: {} is an image model; frames apply to video models (such as t2v)",
                self.label
            )));
        }
        let size = self.default_size();
        Ok(GenerateRequest {
            prompt: r.prompt.clone(),
            negative_prompt: r.negative_prompt.clone(),
            steps: r.steps.unwrap_or(super::DEFAULT_STEPS),
            guidance: r.guidance.unwrap_or(super::DEFAULT_GUIDANCE),
            scheduler: r.scheduler.clone(),
            seed: r.seed,
            width: r.width.unwrap_or(size),
            height: r.height.unwrap_or(size),
            latents: r.latents.clone(),
        })
    }
}

impl super::Pipeline for StableDiffusion {
    fn entry(&self) -> &'static super::Entry {
        &ENTRY
    }
    fn label(&self) -> &str {
        &self.label
    }
    fn random_weights(&self) -> bool {
        self.random_weights
    }
    fn components(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("text_encoder", self.text_encoder.weights.param_count()),
            ("unet", self.unet.weights.param_count()),
            ("vae", self.vae.weights.param_count()),
        ]
    }
    fn native_size(&self) -> usize {
        self.default_size()
    }
    fn settings(&self, req: &super::Request) -> String {
        super::common::diffusion_settings(req)
    }
    fn validate(&self, req: &super::Request) -> Result<()> {
        super::refuse_token_flags(&self.label, req)?;
        StableDiffusion::validate(self, &self.request(req)?)
    }
    fn run_once(
        self: Box<Self>,
        exec: &Executor,
        req: &super::Request,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<super::Generation> {
        let r = self.request(req)?;
        let g = StableDiffusion::generate_once(*self, exec, &r, progress, obs)?;
        Ok(super::Generation {
            media: super::Media::Image(g.image),
            width: r.width,
            height: r.height,
            scheduler: g.scheduler,
            text_time: g.text_time,
            step_times: g.step_times,
            decode_time: g.decode_time,
        })
    }
}

impl DiffusionStages for StableDiffusion {
    type Request = GenerateRequest;
    type Decoded = (RgbImage, Duration);
    fn validate(&self, req: &GenerateRequest) -> Result<()> {
        StableDiffusion::validate(self, req)
    }
    fn scheduler(&self, req: &GenerateRequest) -> Result<Box<dyn Scheduler>> {
        StableDiffusion::scheduler(self, req.scheduler.as_deref(), req.steps)
    }
    fn text(&self) -> (&TextEncoder, &ClipTokenizer) {
        (&self.text_encoder, &self.tokenizer)
    }
    fn denoise_latents(
        &self,
        exec: &Executor,
        req: &GenerateRequest,
        ctx: &Tensor,
        scheduler: &mut dyn Scheduler,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Vec<Duration>)> {
        self.run_denoiser(exec, req, ctx, scheduler, progress, obs)
    }
    fn decode_latents(
        &self,
        exec: &Executor,
        req: &GenerateRequest,
        latents: &Tensor,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(RgbImage, Duration)> {
        self.run_decoder(exec, req, latents, progress, obs)
    }
    fn release_text_encoder(&mut self) {
        self.text_encoder.weights.release();
    }
    fn release_denoiser(&mut self) {
        self.unet.weights.release();
    }
}
