//! `generate`: a prompt to a PNG (image pipelines) or an animated GIF (video pipelines),
//! through whichever pipeline the model names in the registry.

use crate::{context, Engine, Event, KernelSpec, ModelSpec};
use prism_core::{Error, Result};
use prism_models::image::{check_output_path, save_png};
use prism_models::io::read_tensor;
use prism_models::pipelines::t2v as video;
use prism_models::pipelines::{self, Media, MediaKind, Progress, Request};
use prism_models::source::ModelSource;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

fn default_decode_chunk() -> usize {
    video::DEFAULT_DECODE_CHUNK
}
fn default_fps() -> u32 {
    video::DEFAULT_FPS
}

/// A generation and where to write it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenerateSpec {
    pub model: ModelSpec,
    /// The text prompt (class-conditional models take `class_label` instead).
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    /// Denoising steps (default 50; token models take none).
    #[serde(default)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (≤ 1 disables guidance; default: the model's, 7.5 for
    /// diffusion models).
    #[serde(default)]
    pub guidance: Option<f32>,
    /// Token models: take the most probable token at every step.
    #[serde(default)]
    pub greedy: bool,
    /// Token models: sampling temperature (default: the model's generation config, else 1).
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Scheduler override (default: the model's scheduler config).
    #[serde(default)]
    pub scheduler: Option<String>,
    #[serde(default)]
    pub seed: u64,
    /// Pixels (default: the model's native size).
    #[serde(default)]
    pub width: Option<usize>,
    #[serde(default)]
    pub height: Option<usize>,
    /// Initial noise: a safetensors file with one tensor `latents`.
    #[serde(default)]
    pub latents: Option<PathBuf>,
    /// Class-conditional models (DiT): the class index to generate.
    #[serde(default)]
    pub class_label: Option<usize>,
    /// Video models: frames (default 16).
    #[serde(default)]
    pub frames: Option<usize>,
    /// Video models: frames per VAE decoder run.
    #[serde(default = "default_decode_chunk")]
    pub decode_chunk: usize,
    /// Video models: also write numbered PNGs here.
    #[serde(default)]
    pub frames_dir: Option<PathBuf>,
    /// Video models: GIF frames per second.
    #[serde(default = "default_fps")]
    pub fps: u32,
    #[serde(default)]
    pub kernels: KernelSpec,
    /// Overwrite the output file if it exists.
    #[serde(default)]
    pub force: bool,
    /// Run even when the predicted peak memory exceeds what is available.
    #[serde(default)]
    pub no_preflight: bool,
    /// A `.png` for images, a `.gif` for videos.
    pub output: PathBuf,
}

/// What a generation wrote and how long it took.
#[derive(Clone, Debug, Serialize)]
pub struct GenerateReport {
    pub output: PathBuf,
    /// `image` or `video`.
    pub media: &'static str,
    pub model: String,
    pub random_weights: bool,
    pub frames: usize,
    pub width: usize,
    pub height: usize,
    /// Denoising steps, or image tokens of an autoregressive model.
    pub steps: usize,
    /// Made token by token (`steps` counts image tokens, `scheduler` is the sampling).
    pub autoregressive: bool,
    pub scheduler: String,
    pub text_seconds: f64,
    pub step_seconds: Vec<f64>,
    pub decode_seconds: f64,
    pub load_seconds: f64,
    pub total_seconds: f64,
    pub frames_dir: Option<PathBuf>,
    /// The preflight's predicted peak memory (None with `no_preflight`).
    pub predicted_peak_bytes: Option<u64>,
    /// This process's peak resident memory so far (Linux; None elsewhere).
    pub peak_rss_bytes: Option<u64>,
}

impl GenerateReport {
    /// Mean seconds per denoising step.
    pub fn mean_step_seconds(&self) -> f64 {
        self.step_seconds.iter().sum::<f64>() / self.step_seconds.len().max(1) as f64
    }
}

/// The output's extension names the format prism writes: `.png` for images, `.gif` for
/// videos (any case).
fn check_output_kind(path: &std::path::Path, media: MediaKind) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let (want, what) = match media {
        MediaKind::Video => ("gif", "a video is written as an animated GIF"),
        _ => ("png", "an image is written as a PNG"),
    };
    if ext.as_deref() != Some(want) {
        return Err(Error::invalid(format!(
            "-o {}: {what}; name the file *.{want}",
            path.display()
        )));
    }
    Ok(())
}

impl Engine {
    /// Run a generation and write its output. Every flag is checked before any weight is
    /// read; nothing is written unless the generation succeeds.
    pub fn generate(
        &self,
        spec: &GenerateSpec,
        events: &mut dyn FnMut(&Event),
    ) -> Result<GenerateReport> {
        check_output_path(&spec.output, spec.force)?;
        if spec.steps == Some(0) {
            return Err(Error::invalid(
                "--steps 0: at least one denoising step is needed",
            ));
        }
        let src = ModelSource::parse(&spec.model.model)?;
        let entry = pipelines::entry_for(&src)?;
        if entry.media == MediaKind::Text {
            return Err(Error::invalid(format!(
                "{} is a language model, the study's LLM baseline: analyze or profile it (it makes no image)",
                src.label()
            )));
        }
        check_output_kind(&spec.output, entry.media)?;
        if entry.media == MediaKind::Video {
            if spec.fps == 0 {
                return Err(Error::invalid(
                    "--fps 0: a GIF needs at least one frame per second",
                ));
            }
            if let Some(d) = &spec.frames_dir {
                video::check_frames_dir(d)?;
            }
        }
        (entry.check_size)(&src, spec.width, spec.height)?;
        let opts = spec.model.load_options(&self.exec)?;
        let exec = self
            .exec
            .with_kernels(spec.kernels.choice(opts.weights_dtype)?);
        let is_video = entry.media == MediaKind::Video;
        if !is_video && (spec.frames.is_some() || spec.frames_dir.is_some()) {
            return Err(Error::invalid(format!(
                "--frames: {} is an image model; frames apply to video models (such as t2v)",
                src.label()
            )));
        }
        let latents = spec
            .latents
            .as_ref()
            .map(|p| {
                read_tensor(p, "latents")
                    .and_then(|t| t.check_finite("latents").map(|_| t))
                    .map_err(context(format!("--latents {}", p.display())))
            })
            .transpose()?;
        if is_video {
            video::check_frames(spec.frames.unwrap_or(entry.default_frames))?;
            video::check_decode_chunk(spec.decode_chunk)?;
        }
        let mut predicted_peak_bytes = None;
        if !spec.no_preflight {
            let native = (entry.native_size)(&src)?;
            let shape = prism_models::pipelines::StudyShape {
                width: spec.width.unwrap_or(native),
                height: spec.height.unwrap_or(native),
                batch: 1,
                steps: 1,
                guidance: match spec.guidance {
                    Some(g) => g,
                    None => (entry.default_guidance)(&src)?,
                },
                clip_skip: spec.model.clip_skip,
                scheduler: spec.scheduler.clone(),
                frames: is_video.then(|| spec.frames.unwrap_or(entry.default_frames)),
                decode_chunk: spec.decode_chunk,
                prompt_tokens: None,
                new_tokens: None,
            };
            let p = crate::preflight::predict(
                entry,
                &src,
                &shape,
                opts.weights_dtype,
                exec.threads(),
                &exec.kernels,
            )?;
            events(&Event::Note(p.describe()));
            predicted_peak_bytes = Some(p.total());
            crate::preflight::check(
                &p,
                if is_video {
                    "fewer --frames, a smaller --decode-chunk or size"
                } else {
                    "a smaller --width / --height"
                },
            )?;
        }
        let class_model = entry.class_name == pipelines::pixart::DIT_ENTRY.class_name;
        match (class_model, spec.class_label) {
            (true, None) => {
                return Err(Error::invalid(format!(
                    "--class-label: {} is class-conditional (DiT); give the class index to generate",
                    src.label()
                )))
            }
            (false, Some(_)) => {
                return Err(Error::invalid(format!(
                    "--class-label: {} is not class-conditional; class labels apply to DiT models (such as dit-xl-2-256)",
                    src.label()
                )))
            }
            _ => {}
        }
        let t0 = Instant::now();
        let pipeline = (entry.open)(&src, &opts)?;
        let req = Request {
            prompt: spec.prompt.clone(),
            negative_prompt: spec.negative_prompt.clone(),
            steps: spec.steps,
            guidance: spec.guidance,
            scheduler: spec.scheduler.clone(),
            seed: spec.seed,
            sampling: pipelines::SamplingFlags {
                greedy: spec.greedy,
                temperature: spec.temperature,
                top_k: spec.top_k,
                top_p: spec.top_p,
            },
            prompt_tokens: None,
            new_tokens: None,
            width: spec.width,
            height: spec.height,
            frames: is_video.then(|| spec.frames.unwrap_or(entry.default_frames)),
            decode_chunk: is_video.then_some(spec.decode_chunk),
            latents,
            class_label: spec.class_label,
        };
        pipeline.validate(&req)?;
        let (label, random) = (pipeline.label().to_string(), pipeline.random_weights());
        let size = pipeline.native_size();
        let (w, h) = (spec.width.unwrap_or(size), spec.height.unwrap_or(size));
        if random {
            events(&Event::Note(if is_video {
                format!("{label} has seeded random weights: the video is noise; timings are real")
            } else {
                format!(
                    "{label} has seeded random weights (seed {}): the image is noise; timings are real",
                    spec.model.weight_seed
                )
            }));
        }
        let load_seconds = t0.elapsed().as_secs_f64();
        events(&Event::Loaded(if is_video {
            format!(
                "loaded {label} in {load_seconds:.1}s; {} frames of {w}x{h}, {}, {} threads",
                req.frames.unwrap_or_default(),
                pipeline.settings(&req),
                exec.threads()
            )
        } else {
            format!(
                "loaded {label} in {load_seconds:.1}s; {w}x{h}, {}, {} threads",
                pipeline.settings(&req),
                exec.threads()
            )
        }));
        let settings = pipeline.settings(&req);
        let gen = pipeline.run_once(
            &exec,
            &req,
            &mut |p| {
                events(&match p {
                    Progress::Note(n) => Event::Note(n),
                    Progress::TextEncoded(d) => Event::TextEncoded(d.as_secs_f64()),
                    Progress::Step { index, total, time } => Event::Step {
                        index,
                        total,
                        seconds: time.as_secs_f64(),
                    },
                    Progress::Token { index, total, time } => Event::Token {
                        index,
                        total,
                        seconds: time.as_secs_f64(),
                    },
                    Progress::Decoded(d) => Event::Decoded(d.as_secs_f64()),
                })
            },
            &mut prism_runtime::NoObserver,
        )?;
        let frames = match &gen.media {
            Media::Image(img) => {
                // A1111's layout for diffusion models; the sampling settings for token models.
                let run = if entry.autoregressive {
                    format!("{settings}, Sampler: {}", gen.scheduler)
                } else {
                    format!(
                        "Steps: {}, Sampler: {}, CFG scale: {}",
                        spec.steps.unwrap_or(entry.default_steps),
                        gen.scheduler,
                        match spec.guidance {
                            Some(g) => g,
                            None => (entry.default_guidance)(&src)?,
                        }
                    )
                };
                let params = format!(
                    "{}\nNegative prompt: {}\n{}, Seed: {}, Size: {}x{}, Model: {}{}",
                    spec.prompt,
                    spec.negative_prompt,
                    run,
                    if req.latents.is_some() {
                        "latents file".to_string()
                    } else {
                        spec.seed.to_string()
                    },
                    gen.width,
                    gen.height,
                    label,
                    if random { " (random weights)" } else { "" }
                );
                let text = vec![
                    ("parameters".to_string(), params),
                    (
                        "Software".to_string(),
                        format!("prism {}", env!("CARGO_PKG_VERSION")),
                    ),
                ];
                save_png(&spec.output, img, &text, spec.force)?;
                1
            }
            Media::Video(frames) => {
                video::save_gif(&spec.output, frames, spec.fps, spec.force)?;
                if let Some(d) = &spec.frames_dir {
                    // A run whose frames cannot be written leaves no GIF behind either.
                    if let Err(e) = video::save_frames_dir(d, frames, spec.force) {
                        let _ = std::fs::remove_file(&spec.output);
                        return Err(e);
                    }
                }
                frames.len()
            }
            Media::Tokens(_) => unreachable!("text models were refused above"),
        };
        Ok(GenerateReport {
            output: spec.output.clone(),
            media: entry.media.name(),
            model: label,
            random_weights: random,
            frames,
            width: gen.width,
            height: gen.height,
            steps: gen.step_times.len(),
            autoregressive: entry.autoregressive,
            scheduler: gen.scheduler.to_string(),
            text_seconds: gen.text_time.as_secs_f64(),
            step_seconds: gen.step_times.iter().map(|d| d.as_secs_f64()).collect(),
            decode_seconds: gen.decode_time.as_secs_f64(),
            load_seconds,
            total_seconds: t0.elapsed().as_secs_f64(),
            // An image model with --frames-dir was refused above.
            frames_dir: spec.frames_dir.clone(),
            predicted_peak_bytes,
            peak_rss_bytes: prism_runtime::mem::peak_rss_bytes().map(|b| b as u64),
        })
    }
}
