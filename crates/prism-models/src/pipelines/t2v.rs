//! Text-to-video (diffusers `TextToVideoSDPipeline`, the ModelScope pipeline): tokenizer → CLIP
//! text encoder → guided denoising of the video latent (1, C, F, h, w) with the 3D UNet and a
//! scheduler → VAE decoder frame by frame (chunks of `decode_chunk` frames, so memory does
//! not grow with the frame count) → RGB8 frames → animated GIF or numbered PNGs.
//!
//! Differences from the image pipeline, all as diffusers 0.42.1 does them:
//! - the scheduler config is used as is (`TextToVideoSDPipeline` does not apply
//!   `StableDiffusionPipeline`'s steps_offset / clip_sample fix-ups);
//! - pixels: `VideoProcessor.postprocess_video` gives floats `(x/2 + 0.5).clamp(0, 1)`, and the
//!   documented way to save them (`export_to_video`, like the older `tensor2vid`) converts with
//!   `(frame * 255).astype(np.uint8)`, i.e. **truncation**, where the image path rounds. prism
//!   truncates ([`to_rgb8_frames`]).

use crate::autoencoders::kl::{self as vae, VaeConfig};
use crate::components::{LoadOptions, TextEncoder, Unet3d, VaePart};
use crate::config::Cfg;
use crate::diffusion::unet3d::{self, UNet3DConfig};
use crate::image::{check_output_path, save_png, write_atomic, RgbImage};
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
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Frames the VAE decodes at once unless told otherwise: one, so the decoder's activations
/// stay those of a single image whatever the frame count.
pub const DEFAULT_DECODE_CHUNK: usize = 1;
/// diffusers' `TextToVideoSDPipeline` default `num_frames`.
pub const DEFAULT_FRAMES: usize = 16;
/// diffusers' `export_to_gif` default.
pub const DEFAULT_FPS: u32 = 8;

/// Is this model a text-to-video model (its `unet/config.json` `_class_name` is
/// `UNet3DConditionModel`)? Reads only the UNet config.
pub fn is_video_model(src: &ModelSource) -> Result<bool> {
    Ok(unet3d::is_unet3d_config(&src.config(Component::UNET)?))
}

/// The frame size a video model was trained at (UNet sample size × VAE downscale), from
/// configs alone (the `t2v` preset: 32 × 8 = 256).
pub fn native_size(src: &ModelSource) -> Result<usize> {
    let unet = UNet3DConfig::from_cfg(&src.config(Component::UNET)?)?;
    let vae = VaeConfig::from_cfg(&src.config(Component::VAE)?)?;
    Ok(unet.sample_size * vae.downscale())
}

/// One text-to-video request.
#[derive(Clone, Debug)]
pub struct VideoRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance: f32,
    pub scheduler: Option<String>,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    /// Frames per VAE decoder run (≥ 1; the last run takes the remainder).
    pub decode_chunk: usize,
    /// Initial noise (1, C, F, H/f, W/f), before scaling by the scheduler's initial sigma.
    pub latents: Option<Tensor>,
}

pub struct GeneratedVideo {
    pub frames: Vec<RgbImage>,
    /// Decoder output per frame mapped to [0, 1] (`output_type="np"`), (F, H, W, 3).
    pub frames_f32: Tensor,
    /// (1, C, F, h, w), before `/ scaling_factor` (diffusers' `output_type="latent"`).
    pub final_latents: Tensor,
    /// (2 or 1, L, D): negative then positive with guidance.
    pub prompt_embeds: Tensor,
    pub scheduler: &'static str,
    pub text_time: Duration,
    pub step_times: Vec<Duration>,
    pub decode_time: Duration,
    /// Decoder runs (⌈frames / decode_chunk⌉).
    pub decode_runs: usize,
}

impl GeneratedVideo {
    fn from_stages(s: super::common::Stages<(Vec<RgbImage>, Tensor, Duration, usize)>) -> Self {
        Self::new(
            (s.prompt_embeds, s.text_time),
            (s.final_latents, s.step_times, s.scheduler),
            s.decoded,
        )
    }
    /// From the three stages' results: (embeddings, text time), (final latents, step times,
    /// scheduler), (frames, frames as floats, decode time, decoder runs).
    fn new(
        (prompt_embeds, text_time): (Tensor, Duration),
        (final_latents, step_times, scheduler): (Tensor, Vec<Duration>, &'static str),
        (frames, frames_f32, decode_time, decode_runs): (Vec<RgbImage>, Tensor, Duration, usize),
    ) -> Self {
        Self {
            frames,
            frames_f32,
            final_latents,
            prompt_embeds,
            scheduler,
            text_time,
            step_times,
            decode_time,
            decode_runs,
        }
    }
}

/// A text-to-video pipeline: text encoder, 3D UNet, VAE decoder, scheduler config.
pub struct TextToVideo {
    pub label: String,
    pub random_weights: bool,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: TextEncoder,
    pub unet: Unet3d,
    pub vae: VaePart,
    pub scheduler_cfg: Cfg,
}

/// `--frames` / `--decode-chunk` values: positive.
pub fn check_frames(frames: usize) -> Result<()> {
    if frames == 0 {
        return Err(Error::invalid(
            "--frames 0: a video needs at least one frame",
        ));
    }
    Ok(())
}

/// Most frames `analyze` counts: beyond it one temporal attention's FLOPs do not fit a
/// 64-bit count.
pub const MAX_COUNTED_FRAMES: usize = 16384;

/// [`check_frames`], and small enough to count (`analyze`).
pub fn check_frames_countable(frames: usize) -> Result<()> {
    check_frames(frames)?;
    if frames > MAX_COUNTED_FRAMES {
        return Err(Error::invalid(format!(
            "--frames {frames}: analyze counts at most {MAX_COUNTED_FRAMES} frames (beyond it the FLOPs do not fit a 64-bit count)"
        )));
    }
    Ok(())
}

pub fn check_decode_chunk(chunk: usize) -> Result<()> {
    if chunk == 0 {
        return Err(Error::invalid(
            "--decode-chunk 0: the VAE must decode at least one frame per run",
        ));
    }
    Ok(())
}

impl TextToVideo {
    pub fn load(src: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        if !is_video_model(src)? {
            return Err(Error::invalid(format!(
                "{}: not a text-to-video model (its unet is not a {})",
                src.label(),
                unet3d::CLASS_NAME
            )));
        }
        let tokenizer = src.tokenizer()?;
        let text_encoder = TextEncoder::load(src, opts)?;
        let unet = Unet3d::load(
            src,
            opts.variant.as_deref(),
            opts.weight_seed,
            opts.weights_dtype,
        )?;
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

    /// The frame size the model was trained at (UNet sample size × VAE downscale).
    pub fn default_size(&self) -> usize {
        self.unet.cfg.sample_size * self.vae_scale()
    }

    pub fn scheduler(&self, name: Option<&str>, steps: usize) -> Result<Box<dyn Scheduler>> {
        scheduler_for(&self.scheduler_cfg, name, steps, false)
    }

    /// Check a request before any work: frames, chunk, sizes, steps, guidance, latents.
    pub fn validate(&self, req: &VideoRequest) -> Result<()> {
        check_frames(req.frames)?;
        check_decode_chunk(req.decode_chunk)?;
        let f = self.vae_scale();
        check_request(req.steps, req.guidance, req.width, req.height, f)?;
        if let Some(l) = &req.latents {
            let want = [
                1,
                self.unet.cfg.in_channels,
                req.frames,
                req.height / f,
                req.width / f,
            ];
            if l.shape() != want {
                return Err(Error::input(
                    "latents",
                    format!(
                        "shape {:?}; {} frames of {}x{} need {want:?} (--frames, --width/--height over {f})",
                        l.shape(),
                        req.frames,
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
        req: &VideoRequest,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<GeneratedVideo> {
        run_stages(Held::Kept(self), exec, req, progress, obs).map(GeneratedVideo::from_stages)
    }

    /// [`TextToVideo::generate`] for a pipeline used once (the CLI): the text encoder's
    /// weights are freed once the prompts are encoded and the UNet's before the VAE decodes.
    /// Same results as `generate`.
    pub fn generate_once(
        mut self,
        exec: &Executor,
        req: &VideoRequest,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<GeneratedVideo> {
        run_stages(Held::Once(&mut self), exec, req, progress, obs).map(GeneratedVideo::from_stages)
    }

    /// The denoising loop from the initial latents; returns the final latents (1, C, F, h, w).
    fn run_denoiser(
        &self,
        exec: &Executor,
        req: &VideoRequest,
        ctx: &Tensor,
        scheduler: &mut dyn Scheduler,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Vec<Duration>)> {
        let f = self.vae_scale();
        let (lh, lw, nf) = (req.height / f, req.width / f, req.frames);
        let lc = self.unet.cfg.in_channels;
        let batch = if req.guidance > 1.0 { 2 } else { 1 };
        let mut graph = unet3d::build(&self.unet.cfg, batch, nf, lh, lw, ctx.shape()[1])?;
        // The denoiser runs once per timestep (`KernelChoice::keep_filters` may keep its filters).
        graph.repeats = true;
        // diffusers steps on the (F, C, h, w) view; the schedulers are elementwise (ancestral
        // noise aside), so the (C, F, h, w) layout used here gives the same result.
        let (latents, step_times) = denoise(
            exec,
            obs,
            &graph,
            &self.unet.weights,
            scheduler,
            &[lc, nf, lh, lw],
            ctx,
            req,
            progress,
        )?;
        Ok((Tensor::new(vec![1, lc, nf, lh, lw], latents)?, step_times))
    }

    /// Decode (1, C, F, h, w) / scaling_factor → frames (F, C, h, w), `decode_chunk` at a
    /// time: the frames, their [0, 1] floats (F, H, W, 3), the time and the decoder runs.
    fn run_decoder(
        &self,
        exec: &Executor,
        req: &VideoRequest,
        final_latents: &Tensor,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(Vec<RgbImage>, Tensor, Duration, usize)> {
        let f = self.vae_scale();
        let (lh, lw, nf) = (req.height / f, req.width / f, req.frames);
        let lc = self.unet.cfg.in_channels;
        let td = Instant::now();
        let inv = 1.0 / self.vae.cfg.scaling_factor;
        let plane = lh * lw;
        let (hh, ww) = (req.height, req.width);
        let mut frames = Vec::with_capacity(nf);
        let mut frames_f32: Vec<f32> = Vec::with_capacity(nf * hh * ww * 3);
        let mut run = 0;
        let mut start = 0;
        while start < nf {
            let k = req.decode_chunk.min(nf - start);
            let mut z = Vec::with_capacity(k * lc * plane);
            for fr in start..start + k {
                for c in 0..lc {
                    let off = (c * nf + fr) * plane;
                    z.extend(
                        final_latents.data()[off..off + plane]
                            .iter()
                            .map(|v| v * inv),
                    );
                }
            }
            let g = vae::build_decoder(&self.vae.cfg, k, lh, lw)?;
            let mut dec = exec.run_stage(
                obs,
                "vae_decoder",
                run,
                &g,
                &self.vae.weights,
                vec![("latent_sample".into(), Tensor::new(vec![k, lc, lh, lw], z)?)],
            )?;
            let sample = dec.remove("sample").expect("decoder output");
            let per = 3 * hh * ww;
            for i in 0..k {
                let (img, f32s) = frame_to_rgb(&sample.data()[i * per..(i + 1) * per], hh, ww);
                frames.push(img);
                frames_f32.extend(f32s);
            }
            start += k;
            run += 1;
        }
        let decode_time = td.elapsed();
        progress(Progress::Decoded(decode_time));
        Ok((
            frames,
            Tensor::new(vec![nf, hh, ww, 3], frames_f32)?,
            decode_time,
            run,
        ))
    }
}

/// One decoded frame (3, H, W) in [-1, 1] → (RGB8, HWC floats in [0, 1]):
/// `(x/2 + 0.5).clamp(0, 1)`, then `(v·255) as u8` (truncation, as `export_to_video`).
fn frame_to_rgb(sample: &[f32], h: usize, w: usize) -> (RgbImage, Vec<f32>) {
    let plane = h * w;
    let mut data = vec![0u8; plane * 3];
    let mut f = vec![0f32; plane * 3];
    for c in 0..3 {
        for i in 0..plane {
            let v = (sample[c * plane + i] / 2.0 + 0.5).clamp(0.0, 1.0);
            f[i * 3 + c] = v;
            data[i * 3 + c] = (v * 255.0) as u8;
        }
    }
    (
        RgbImage {
            width: w,
            height: h,
            data,
        },
        f,
    )
}

/// Decoder output (F, 3, H, W) in [-1, 1] → F RGB8 frames, as diffusers' video path does
/// (see the module doc: truncation, not rounding).
pub fn to_rgb8_frames(sample: &[f32], frames: usize, h: usize, w: usize) -> Vec<RgbImage> {
    let per = 3 * h * w;
    (0..frames)
        .map(|i| frame_to_rgb(&sample[i * per..(i + 1) * per], h, w).0)
        .collect()
}

/// What a text-to-video generation executes, from configs alone (no weights read).
#[derive(Clone, Debug)]
pub struct VideoShape {
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    pub steps: usize,
    pub guidance: f32,
    pub clip_skip: usize,
    /// Scheduler override (else the model's).
    pub scheduler: Option<String>,
    /// Frames per VAE decoder run.
    pub decode_chunk: usize,
}

/// The graphs of a text-to-video generation: the text encoder once (negative and positive
/// prompts together with guidance), the 3D UNet once per scheduler timestep on the doubled
/// batch (guidance > 1) over all frames, and the VAE decoder **chunked**: a graph of batch
/// `decode_chunk` run ⌊F / chunk⌋ times, plus (when chunk does not divide F) a second
/// `vae_decoder` entry of batch F mod chunk run once. Both decoder entries are named
/// `vae_decoder`.
pub fn video_generation_graphs(src: &ModelSource, s: &VideoShape) -> Result<Vec<StageGraph>> {
    check_frames(s.frames)?;
    check_decode_chunk(s.decode_chunk)?;
    let clip_cfg = ClipConfig::from_cfg(&src.config(Component::TEXT_ENCODER)?)?;
    let unet_cfg = UNet3DConfig::from_cfg(&src.config(Component::UNET)?)?;
    let vae_cfg = VaeConfig::from_cfg(&src.config(Component::VAE)?)?;
    let f = vae_cfg.downscale();
    check_multiple("--width", s.width, f)?;
    check_multiple("--height", s.height, f)?;
    let cfg_mult = if s.guidance > 1.0 { 2 } else { 1 };
    let len = clip_cfg.max_position_embeddings;
    let sched = src.config(Component::SCHEDULER)?;
    let unet_runs = scheduler_for(&sched, s.scheduler.as_deref(), s.steps, false)?
        .timesteps()
        .len();
    let (lh, lw) = (s.height / f, s.width / f);
    let chunk = s.decode_chunk.min(s.frames);
    let mut out = vec![
        StageGraph {
            name: "text_encoder",
            graph: clip::build(&clip_cfg, cfg_mult, len, s.clip_skip)?,
            runs: 1,
            key_lens: None,
            weight_dtype: None,
        },
        StageGraph {
            name: "unet",
            graph: prism_core::Graph {
                repeats: true,
                ..unet3d::build(&unet_cfg, cfg_mult, s.frames, lh, lw, len)?
            },
            runs: unet_runs,
            key_lens: None,
            weight_dtype: None,
        },
        StageGraph {
            name: "vae_decoder",
            graph: vae::build_decoder(&vae_cfg, chunk, lh, lw)?,
            runs: s.frames / chunk,
            key_lens: None,
            weight_dtype: None,
        },
    ];
    let rem = s.frames % chunk;
    if rem > 0 {
        out.push(StageGraph {
            name: "vae_decoder",
            graph: vae::build_decoder(&vae_cfg, rem, lh, lw)?,
            runs: 1,
            key_lens: None,
            weight_dtype: None,
        });
    }
    Ok(out)
}

/// Check frames for writing: at least one, all the same size, GIF-sized.
fn check_frames_for_output(frames: &[RgbImage]) -> Result<(usize, usize)> {
    let first = frames
        .first()
        .ok_or_else(|| Error::invalid("no frames to write"))?;
    let (w, h) = (first.width, first.height);
    if let Some(f) = frames.iter().find(|f| f.width != w || f.height != h) {
        return Err(Error::invalid(format!(
            "frames differ in size: {}x{} and {}x{}",
            w, h, f.width, f.height
        )));
    }
    Ok((w, h))
}

/// Write an animated, looping GIF (each frame with its own 256-colour palette, NeuQuant),
/// `fps` frames per second (GIF delays are in 1/100 s: 100/fps rounded, at least 1). Atomic
/// (temporary file, then rename); refuses to overwrite `path` unless `force`.
pub fn save_gif(path: &Path, frames: &[RgbImage], fps: u32, force: bool) -> Result<()> {
    check_output_path(path, force)?;
    if fps == 0 {
        return Err(Error::invalid("--fps 0: must be at least 1"));
    }
    let (w, h) = check_frames_for_output(frames)?;
    if w > u16::MAX as usize || h > u16::MAX as usize {
        return Err(Error::invalid(format!(
            "{w}x{h} frames are too large for GIF (at most 65535 per side)"
        )));
    }
    let delay = ((100.0 / fps as f64).round() as u16).max(1);
    write_atomic(path, |out| {
        let err = |e: gif::EncodingError| Error::file(path, format!("GIF encoding failed: {e}"));
        let mut enc = gif::Encoder::new(out, w as u16, h as u16, &[]).map_err(err)?;
        enc.set_repeat(gif::Repeat::Infinite).map_err(err)?;
        for f in frames {
            // speed 10: gif's default quality/speed trade-off for NeuQuant.
            let mut frame = gif::Frame::from_rgb_speed(w as u16, h as u16, &f.data, 10);
            frame.delay = delay;
            enc.write_frame(&frame).map_err(err)?;
        }
        Ok(())
    })
}

/// The file name of frame `i` in a frames folder.
pub fn frame_file_name(i: usize) -> String {
    format!("frame_{i:04}.png")
}

/// Write frames as `dir/frame_0000.png`, `frame_0001.png`, ... (PNG, atomic each). Creates
/// `dir` (its parent must exist). Refuses, before writing anything, when any of those files
/// exists, unless `force`. Returns the paths written.
/// Check a `--frames-dir` before any work: an existing folder, or a new one whose parent
/// exists.
pub fn check_frames_dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::file(dir, "--frames-dir exists and is not a folder")),
        Err(_) => {
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if parent.is_dir() {
                Ok(())
            } else {
                Err(Error::file(
                    dir,
                    format!("parent folder {} does not exist", parent.display()),
                ))
            }
        }
    }
}

pub fn save_frames_dir(dir: &Path, frames: &[RgbImage], force: bool) -> Result<Vec<PathBuf>> {
    check_frames_for_output(frames)?;
    check_frames_dir(dir)?;
    if !dir.exists() {
        std::fs::create_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    let paths: Vec<PathBuf> = (0..frames.len())
        .map(|i| dir.join(frame_file_name(i)))
        .collect();
    for p in &paths {
        check_output_path(p, force)?;
    }
    for (p, f) in paths.iter().zip(frames) {
        save_png(p, f, &[], true)?;
    }
    Ok(paths)
}

impl DenoiseRequest for VideoRequest {
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

/// The registry entry of the ModelScope text-to-video pipeline.
pub const ENTRY: super::Entry = super::Entry {
    class_name: "TextToVideoSDPipeline",
    family: "diffusion (UNet3D)",
    media: super::MediaKind::Video,
    autoregressive: false,
    default_steps: super::DEFAULT_STEPS,
    default_frames: DEFAULT_FRAMES,
    default_guidance: |_| Ok(super::DEFAULT_GUIDANCE),
    open: |src, opts| Ok(Box::new(TextToVideo::load(src, opts)?)),
    native_size,
    check_size: crate::pipelines::sd::check_image_size,
    stage_graphs: |src, s| {
        video_generation_graphs(
            src,
            &VideoShape {
                width: s.width,
                height: s.height,
                frames: s.frames.unwrap_or(DEFAULT_FRAMES),
                steps: s.steps,
                guidance: s.guidance,
                clip_skip: s.clip_skip,
                scheduler: s.scheduler.clone(),
                decode_chunk: s.decode_chunk,
            },
        )
    },
};

impl TextToVideo {
    /// The video request a generic request asks for (defaults: 16 frames, one per decoder run).
    pub fn request(&self, r: &super::Request) -> VideoRequest {
        let size = self.default_size();
        VideoRequest {
            prompt: r.prompt.clone(),
            negative_prompt: r.negative_prompt.clone(),
            steps: r.steps.unwrap_or(super::DEFAULT_STEPS),
            guidance: r.guidance.unwrap_or(super::DEFAULT_GUIDANCE),
            scheduler: r.scheduler.clone(),
            seed: r.seed,
            width: r.width.unwrap_or(size),
            height: r.height.unwrap_or(size),
            frames: r.frames.unwrap_or(DEFAULT_FRAMES),
            decode_chunk: r.decode_chunk.unwrap_or(DEFAULT_DECODE_CHUNK),
            latents: r.latents.clone(),
        }
    }
}

impl super::Pipeline for TextToVideo {
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
        TextToVideo::validate(self, &self.request(req))
    }
    fn run_once(
        self: Box<Self>,
        exec: &Executor,
        req: &super::Request,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<super::Generation> {
        let r = self.request(req);
        let g = TextToVideo::generate_once(*self, exec, &r, progress, obs)?;
        Ok(super::Generation {
            media: super::Media::Video(g.frames),
            width: r.width,
            height: r.height,
            scheduler: g.scheduler,
            text_time: g.text_time,
            step_times: g.step_times,
            decode_time: g.decode_time,
        })
    }
}

impl DiffusionStages for TextToVideo {
    type Request = VideoRequest;
    type Decoded = (Vec<RgbImage>, Tensor, Duration, usize);
    fn validate(&self, req: &VideoRequest) -> Result<()> {
        TextToVideo::validate(self, req)
    }
    fn scheduler(&self, req: &VideoRequest) -> Result<Box<dyn Scheduler>> {
        TextToVideo::scheduler(self, req.scheduler.as_deref(), req.steps)
    }
    fn text(&self) -> (&TextEncoder, &ClipTokenizer) {
        (&self.text_encoder, &self.tokenizer)
    }
    fn denoise_latents(
        &self,
        exec: &Executor,
        req: &VideoRequest,
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
        req: &VideoRequest,
        latents: &Tensor,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<(Vec<RgbImage>, Tensor, Duration, usize)> {
        self.run_decoder(exec, req, latents, progress, obs)
    }
    fn release_text_encoder(&mut self) {
        self.text_encoder.weights.release();
    }
    fn release_denoiser(&mut self) {
        self.unet.weights.release();
    }
}
