//! What the pipelines share: progress reports, the stage runner ([`run_stages`]: encode,
//! denoise, decode, for `generate` and `generate_once`), the guided denoising loop, the checks
//! of parts and requests, scheduler construction, and the stage graphs `analyze` reads.

use crate::components::{denoiser_inputs, TextEncoder};
use crate::schedulers::{self, GaussianNoise, Scheduler};
use crate::text::tokenizer::ClipTokenizer;
use prism_core::{Error, Result, Tensor};
use prism_runtime::{Executor, Observer, Plan, State, Weights};
use std::time::{Duration, Instant};

/// Progress of a generation, reported as it happens.
pub enum Progress {
    /// Something the user should know about the request (a prompt cut to the model's length).
    Note(String),
    TextEncoded(Duration),
    Step {
        index: usize,
        total: usize,
        time: Duration,
    },
    /// An autoregressive model chose image token `index` of `total`.
    Token {
        index: usize,
        total: usize,
        time: Duration,
    },
    Decoded(Duration),
}

/// The token loop of a decoder model: the `prefill` plan on `prompt` (graph input
/// `input_ids`), then `steps − 1` runs of the `decode` plan, each fed (graph input
/// `step_input`, one column) the tokens `next(i, logits)` chose from step i's `logits` — one per
/// row. Both plans share `weights` and one `State` (the KV caches). Reports
/// [`Progress::Token`] and returns each step's time (the first includes the prefill).
#[allow(clippy::too_many_arguments)]
pub fn decode_steps(
    exec: &Executor,
    (prefill, decode): (&Plan, &Plan),
    weights: &Weights,
    prompt: Tensor,
    step_input: &str,
    steps: usize,
    obs: &mut dyn Observer,
    progress: &mut dyn FnMut(Progress),
    mut next: impl FnMut(usize, &Tensor) -> Result<Vec<i64>>,
) -> Result<Vec<Duration>> {
    let mut state = State::new();
    let mut inputs = vec![("input_ids".to_string(), prompt)];
    let mut times = Vec::with_capacity(steps);
    for i in 0..steps {
        let t0 = Instant::now();
        let (plan, stage, run) = if i == 0 {
            (prefill, "prefill", 0)
        } else {
            (decode, "decode", i - 1)
        };
        let mut o = exec.run_stage_plan(
            obs,
            stage,
            run,
            plan,
            weights,
            &mut state,
            std::mem::take(&mut inputs),
        )?;
        let logits = o
            .remove("logits")
            .ok_or_else(|| Error::invalid(format!("{stage}: no logits output")))?;
        let chosen = next(i, &logits)?;
        if i + 1 < steps {
            let rows = chosen.len();
            inputs = vec![(
                step_input.to_string(),
                Tensor::from_ids(vec![rows, 1], chosen)?,
            )];
        }
        let dt = t0.elapsed();
        times.push(dt);
        progress(Progress::Token {
            index: i,
            total: steps,
            time: dt,
        });
    }
    Ok(times)
}

/// Denoising steps when a request gives none.
pub const DEFAULT_STEPS: usize = 50;
/// Guidance scale of the diffusion pipelines when a request gives none.
pub const DEFAULT_GUIDANCE: f32 = 7.5;

/// "50 steps, guidance 7.5" with a diffusion pipeline's defaults filled in.
pub fn diffusion_settings(r: &super::Request) -> String {
    format!(
        "{} steps, guidance {}",
        r.steps.unwrap_or(DEFAULT_STEPS),
        r.guidance.unwrap_or(DEFAULT_GUIDANCE)
    )
}

/// Refuse the flags of token models on a diffusion pipeline, naming the flag.
pub fn refuse_token_flags(label: &str, r: &super::Request) -> Result<()> {
    let s = &r.sampling;
    let flag = if s.greedy {
        Some("--greedy")
    } else if s.temperature.is_some() {
        Some("--temperature")
    } else if s.top_k.is_some() {
        Some("--top-k")
    } else if s.top_p.is_some() {
        Some("--top-p")
    } else if r.prompt_tokens.is_some() {
        Some("--prompt-tokens")
    } else if r.new_tokens.is_some() {
        Some("--new-tokens")
    } else {
        None
    };
    match flag {
        Some(f) => Err(Error::invalid(format!(
            "{f}: {label} is a diffusion model; token sampling flags apply to token models (such as janus-pro-1b)"
        ))),
        None => Ok(()),
    }
}

/// The checks every text-conditioned latent pipeline makes of its parts once loaded: the
/// text encoder's width is the denoiser's cross-attention width, and the VAE's latent channels
/// are the denoiser's input channels.
pub fn check_parts(
    label: &str,
    (text_width, cross_dim): (usize, usize),
    (latent_channels, in_channels): (usize, usize),
) -> Result<()> {
    if text_width != cross_dim {
        return Err(Error::invalid(format!(
            "{label}: text encoder width {text_width} differs from the UNet's cross_attention_dim {cross_dim}"
        )));
    }
    if latent_channels != in_channels {
        return Err(Error::invalid(format!(
            "{label}: the VAE has {latent_channels} latent channels but the UNet takes {in_channels}"
        )));
    }
    Ok(())
}

/// The checks every pipeline makes of a request before any work: sizes (multiples of the
/// VAE's factor `f`), steps, guidance.
pub fn check_request(
    steps: usize,
    guidance: f32,
    width: usize,
    height: usize,
    f: usize,
) -> Result<()> {
    check_multiple("--width", width, f)?;
    check_multiple("--height", height, f)?;
    if steps == 0 {
        return Err(Error::invalid(
            "--steps 0: at least one denoising step is needed",
        ));
    }
    if !guidance.is_finite() {
        return Err(Error::invalid(format!(
            "--guidance {guidance}: must be a finite number"
        )));
    }
    Ok(())
}

/// The scheduler a pipeline runs: the model's config (with `StableDiffusionPipeline`'s
/// fix-ups for old configs where `sd_fixups`: steps_offset 1, no sample clipping; diffusers'
/// `TextToVideoSDPipeline` applies none) or the class override, timesteps set.
pub fn scheduler_for(
    cfg: &crate::config::Cfg,
    name: Option<&str>,
    steps: usize,
    sd_fixups: bool,
) -> Result<Box<dyn Scheduler>> {
    let mut v = cfg.v.clone();
    if sd_fixups {
        if let Some(o) = v.as_object_mut() {
            o.insert("steps_offset".into(), 1.into());
            o.insert("clip_sample".into(), false.into());
        }
    }
    let mut s = schedulers::from_config(&v, name, &cfg.file)?;
    s.set_timesteps(steps)?;
    Ok(s)
}

/// A size flag must be a positive multiple of the VAE's downscale factor.
pub fn check_multiple(flag: &str, v: usize, f: usize) -> Result<()> {
    if v == 0 || v % f != 0 {
        return Err(Error::invalid(format!(
            "{flag} {v}: must be a positive multiple of {f} (the VAE's downscale factor)"
        )));
    }
    if v > MAX_PIXELS {
        return Err(Error::invalid(format!(
            "{flag} {v}: at most {MAX_PIXELS} pixels per side (beyond it a generation's FLOPs do not fit a 64-bit count)"
        )));
    }
    Ok(())
}

/// The shape checks every image pipeline's stage graphs make: no frame counts, at least one
/// image.
pub fn check_image_study(label: &str, s: &super::StudyShape) -> Result<()> {
    if s.frames.is_some() {
        return Err(Error::invalid(format!(
            "--frames: {label} is an image model; frame counts apply to video models (such as t2v)"
        )));
    }
    if s.batch == 0 {
        return Err(Error::invalid("--batch 0: at least one image is needed"));
    }
    Ok(())
}

/// Largest `--width` / `--height` accepted (a 16384² image is 256 megapixels).
pub const MAX_PIXELS: usize = 16384;

/// The guided denoising loop of the image and video pipelines: initial noise (seeded, or
/// `req.latents`) scaled by the scheduler's initial sigma, then per timestep: scale the input,
/// run `graph` on the doubled batch (negative, positive) when guided, combine with the
/// guidance scale, and step. `latent` is one latent's shape without the batch axis. Returns
/// the final latents and the time of each step.
#[allow(clippy::too_many_arguments)]
pub fn denoise(
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
    let loop_ = DenoiseLoop {
        stage: "unet",
        graph,
        weights,
        latent,
        guidance: req.guidance(),
        seed: req.seed(),
        latents: req.latents(),
    };
    loop_.run(exec, obs, scheduler, progress, |sample, t| {
        Ok(denoiser_inputs(sample, t, ctx.clone()))
    })
}

/// The guided denoising loop of every latent diffusion pipeline (UNet or transformer): the
/// denoiser `graph` (output `sample`) with its `weights`, named `stage` in reports, over one
/// latent of shape `latent` (no batch axis), from `latents` or seeded noise.
pub struct DenoiseLoop<'a> {
    pub stage: &'static str,
    pub graph: &'a prism_core::Graph,
    pub weights: &'a Weights,
    pub latent: &'a [usize],
    pub guidance: f32,
    pub seed: u64,
    pub latents: Option<&'a Tensor>,
}

impl DenoiseLoop<'_> {
    /// Initial noise (seeded, or the given latents) scaled by the scheduler's initial sigma,
    /// then per timestep: scale the input, run the graph on the doubled batch (negative,
    /// positive) when guided — its inputs from `inputs(sample, timesteps)` —, combine with the
    /// guidance scale, keep the output's first `latent[0]` channels (a learned-sigma model
    /// predicts twice as many), and step. Returns the final latents and each step's time.
    pub fn run(
        &self,
        exec: &Executor,
        obs: &mut dyn Observer,
        scheduler: &mut dyn Scheduler,
        progress: &mut dyn FnMut(Progress),
        mut inputs: impl FnMut(Tensor, Tensor) -> Result<Vec<(String, Tensor)>>,
    ) -> Result<(Vec<f32>, Vec<Duration>)> {
        let n: usize = self.latent.iter().product();
        let guided = self.guidance > 1.0;
        let mut latents: Vec<f32> = match self.latents {
            Some(t) => t.data().to_vec(),
            None => {
                let mut v = vec![0f32; n];
                schedulers::NoiseSource::fill_normal(&mut GaussianNoise::new(self.seed), &mut v);
                v
            }
        };
        let sigma = scheduler.init_noise_sigma();
        latents.iter_mut().for_each(|v| *v *= sigma);
        let mut noise = GaussianNoise::new(self.seed.wrapping_add(1));
        let batch = if guided { 2 } else { 1 };
        let mut shape = vec![batch];
        shape.extend_from_slice(self.latent);
        let timesteps = scheduler.timesteps().to_vec();
        let mut step_times = Vec::with_capacity(timesteps.len());
        // Prepared once (fusion, release table, kernel choices), run every step.
        let plan = exec.prepare(self.graph)?;
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
            let mut out = exec.run_stage_plan(
                obs,
                self.stage,
                i,
                &plan,
                self.weights,
                &mut prism_runtime::State::new(),
                inputs(sample, tt)?,
            )?;
            let eps = out
                .remove("sample")
                .ok_or_else(|| Error::invalid(format!("{}: no sample output", self.stage)))?
                .into_data();
            let row = eps.len() / batch;
            if row < n {
                return Err(Error::invalid(format!(
                    "{}: output of {row} values per row, fewer than the latent's {n}",
                    self.stage
                )));
            }
            let pred: Vec<f32> = if guided {
                let (u, c) = eps.split_at(row);
                u[..n]
                    .iter()
                    .zip(&c[..n])
                    .map(|(u, c)| u + self.guidance * (c - u))
                    .collect()
            } else {
                eps[..n].to_vec()
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
}

/// What the denoising loop and the stage runner need of a request.
pub trait DenoiseRequest {
    fn guidance(&self) -> f32;
    fn seed(&self) -> u64;
    fn latents(&self) -> Option<&Tensor>;
    fn prompt(&self) -> &str;
    fn negative_prompt(&self) -> &str;
    fn steps(&self) -> usize;
    /// Scheduler override (else the model's).
    fn scheduler(&self) -> Option<&str>;
}

/// A text-conditioned latent diffusion pipeline as its three stages; [`run_stages`] runs
/// them, for `generate` (weights kept) and `generate_once` (each component's weights freed
/// once its stage is done) alike.
pub trait DiffusionStages {
    type Request: DenoiseRequest;
    /// What the decoder stage makes (pixels and its time).
    type Decoded;
    /// Check a request before any work.
    fn validate(&self, req: &Self::Request) -> Result<()>;
    /// The scheduler the request runs, timesteps set.
    fn scheduler(&self, req: &Self::Request) -> Result<Box<dyn Scheduler>>;
    /// The text encoder and its tokenizer.
    fn text(&self) -> (&TextEncoder, &ClipTokenizer);
    /// The denoising loop from the initial noise to the final latents.
    fn denoise_latents(
        &self,
        exec: &Executor,
        req: &Self::Request,
        ctx: &Tensor,
        scheduler: &mut dyn Scheduler,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Vec<Duration>)>;
    /// Final latents to pixels.
    fn decode_latents(
        &self,
        exec: &Executor,
        req: &Self::Request,
        latents: &Tensor,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<Self::Decoded>;
    fn release_text_encoder(&mut self);
    fn release_denoiser(&mut self);
}

/// A pipeline as [`run_stages`] holds it: borrowed (weights kept for more requests) or owned
/// for one request (weights freed between stages).
pub enum Held<'a, P> {
    Kept(&'a P),
    Once(&'a mut P),
}

impl<P> Held<'_, P> {
    fn get(&self) -> &P {
        match self {
            Held::Kept(p) => p,
            Held::Once(p) => p,
        }
    }
    fn release(&mut self, f: impl FnOnce(&mut P)) {
        if let Held::Once(p) = self {
            f(p)
        }
    }
}

/// What the three stages produced.
pub struct Stages<D> {
    /// (2 or 1, L, D): negative then positive prompt embeddings with guidance.
    pub prompt_embeds: Tensor,
    pub text_time: Duration,
    pub final_latents: Tensor,
    pub step_times: Vec<Duration>,
    pub scheduler: &'static str,
    pub decoded: D,
}

/// Validate, encode the prompts, denoise, decode.
pub fn run_stages<P: DiffusionStages>(
    mut p: Held<P>,
    exec: &Executor,
    req: &P::Request,
    progress: &mut dyn FnMut(Progress),
    obs: &mut dyn Observer,
) -> Result<Stages<P::Decoded>> {
    p.get().validate(req)?;
    let mut scheduler = p.get().scheduler(req)?;
    let (text_encoder, tokenizer) = p.get().text();
    let text = (req.prompt(), req.negative_prompt(), req.guidance());
    let (prompt_embeds, text_time) =
        text_encoder.encode_prompts(tokenizer, exec, text, progress, obs)?;
    p.release(P::release_text_encoder);
    let (final_latents, step_times) =
        p.get()
            .denoise_latents(exec, req, &prompt_embeds, scheduler.as_mut(), progress, obs)?;
    p.release(P::release_denoiser);
    let decoded = p
        .get()
        .decode_latents(exec, req, &final_latents, progress, obs)?;
    Ok(Stages {
        prompt_embeds,
        text_time,
        final_latents,
        step_times,
        scheduler: scheduler.name(),
        decoded,
    })
}

/// One graph of a generation and how many times it runs.
pub struct StageGraph {
    /// `text_encoder`, `unet`, `vae_decoder`; `prefill`, `decode` for decoder phases.
    pub name: &'static str,
    pub graph: prism_core::Graph,
    pub runs: usize,
    /// A decoder phase: the live key length of its first and last run (one more per run);
    /// its attention reads that much of the KV cache, not the capacity the graph is built
    /// for. None: every run reads what its shapes say.
    pub key_lens: Option<(usize, usize)>,
    /// Weights this stage keeps in a fixed dtype whatever the request's (a preset's T5-XXL in
    /// bf16); None: the request's.
    pub weight_dtype: Option<prism_runtime::WeightDType>,
}

/// "12 steps, guidance 10, temperature 2→0[, greedy]": a MaskGIT request in words.
pub fn maskgit_settings(steps: usize, guidance: f32, temperature: f32, greedy: bool) -> String {
    format!(
        "{steps} steps, guidance {guidance}, temperature {temperature}→0{}",
        if greedy { ", greedy" } else { "" }
    )
}

/// The flags every MaskGIT request shares: at least one step, a finite guidance scale, a finite
/// temperature ≥ 0.
pub fn check_maskgit_flags(steps: usize, guidance: f32, temperature: f32) -> Result<()> {
    if steps == 0 {
        return Err(Error::invalid(
            "--steps 0: at least one unmasking step is needed",
        ));
    }
    if !guidance.is_finite() {
        return Err(Error::invalid(format!(
            "--guidance {guidance}: must be a finite number"
        )));
    }
    if !temperature.is_finite() || temperature < 0.0 {
        return Err(Error::invalid(format!(
            "--temperature {temperature}: must be a finite number ≥ 0 (the first step's confidence temperature, annealed to 0; 0 with --greedy is deterministic)"
        )));
    }
    Ok(())
}
