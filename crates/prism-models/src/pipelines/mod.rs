//! Pipelines: host code that runs component graphs step by step, one file per pipeline
//! class, all behind one [`Pipeline`] trait and chosen from one [`REGISTRY`] by the class a
//! model names (`model_index.json`'s `_class_name` for a diffusers folder; a preset's
//! `class_name`).
//!
//! Adding a pipeline: a file here with its loader, request checks, loop and stage graphs, an
//! [`Entry`] for it in [`REGISTRY`]; nothing else (the engine and the CLI go through the
//! registry).

pub mod amused;
pub mod common;
pub mod forward;
pub mod janus;
pub mod llm;
pub mod magvit_t2v;
pub mod pixart;
pub mod sd;
pub mod t2v;

pub use common::{
    check_multiple, check_parts, check_request, denoise, refuse_token_flags, scheduler_for,
    DenoiseRequest, Progress, StageGraph, DEFAULT_GUIDANCE, DEFAULT_STEPS,
};

use crate::components::LoadOptions;
use crate::config::Cfg;
use crate::image::RgbImage;
use crate::source::ModelSource;
use prism_core::{Error, Result, Tensor};
use prism_runtime::{Executor, Observer};
use std::time::Duration;

/// What a pipeline makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    /// Text tokens: the LLM baseline of the study (analyze and profile only).
    Text,
}

impl MediaKind {
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Text => "text",
        }
    }
}

/// What a generation made.
pub enum Media {
    Image(RgbImage),
    Video(Vec<RgbImage>),
    /// Token ids (the LLM baseline).
    Tokens(Vec<i64>),
}

/// Token-sampling flags of a request (token models); unset fields take the model's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplingFlags {
    pub greedy: bool,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
}

/// One generation request, for any pipeline. Fields a pipeline does not use must be left
/// unset (a video field on an image pipeline is an error naming its flag); unset sizes take
/// the model's native size.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub prompt: String,
    pub negative_prompt: String,
    /// Denoising steps (None: the pipeline's default; token models take none).
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (None: the model's default).
    pub guidance: Option<f32>,
    /// Scheduler override (else the model's).
    pub scheduler: Option<String>,
    pub seed: u64,
    /// Token models: how the next token is chosen.
    pub sampling: SamplingFlags,
    /// The LLM baseline: prompt length and tokens to generate.
    pub prompt_tokens: Option<usize>,
    pub new_tokens: Option<usize>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// Video pipelines: frames (default: the pipeline's).
    pub frames: Option<usize>,
    /// Video pipelines: frames per VAE decoder run.
    pub decode_chunk: Option<usize>,
    /// Initial noise, before scaling by the scheduler's initial sigma.
    pub latents: Option<Tensor>,
    /// Class-conditional models (DiT): the class to generate.
    pub class_label: Option<usize>,
}

/// A finished generation.
pub struct Generation {
    pub media: Media,
    pub width: usize,
    pub height: usize,
    pub scheduler: &'static str,
    pub text_time: Duration,
    pub step_times: Vec<Duration>,
    pub decode_time: Duration,
}

/// What `analyze` and `profile` characterize: a generation's shape, from flags.
#[derive(Clone, Debug)]
pub struct StudyShape {
    pub width: usize,
    pub height: usize,
    pub batch: usize,
    pub steps: usize,
    pub guidance: f32,
    pub clip_skip: usize,
    /// Scheduler override (else the model's).
    pub scheduler: Option<String>,
    /// Video pipelines: frames (None: the pipeline's default).
    pub frames: Option<usize>,
    /// Video pipelines: frames per VAE decoder run.
    pub decode_chunk: usize,
    /// Decoder models: prompt length (None: the model's default).
    pub prompt_tokens: Option<usize>,
    /// The LLM baseline: tokens generated after the prompt.
    pub new_tokens: Option<usize>,
}

/// A loaded pipeline.
pub trait Pipeline {
    /// The registry entry it was opened from.
    fn entry(&self) -> &'static Entry;
    /// The model's label (preset name or folder).
    fn label(&self) -> &str;
    /// Does it run on a preset's seeded random weights?
    fn random_weights(&self) -> bool;
    /// Its components by name, with their parameter counts.
    fn components(&self) -> Vec<(&'static str, usize)>;
    /// The image (or frame) size it was trained at.
    fn native_size(&self) -> usize;
    /// Check a request before any work: one-line errors naming the flag.
    fn validate(&self, req: &Request) -> Result<()>;
    /// What a request runs, in words, its defaults filled in ("50 steps, guidance 7.5").
    fn settings(&self, req: &Request) -> String;
    /// Run a request once, freeing each component's weights as soon as its stage is done.
    fn run_once(
        self: Box<Self>,
        exec: &Executor,
        req: &Request,
        progress: &mut dyn FnMut(Progress),
        obs: &mut dyn Observer,
    ) -> Result<Generation>;
}

/// A pipeline class prism runs: how to open it and what it runs, from configs alone.
pub struct Entry {
    /// diffusers' pipeline class (`model_index.json` `_class_name`).
    pub class_name: &'static str,
    /// The model family, as the report groups them.
    pub family: &'static str,
    pub media: MediaKind,
    /// A decoder that emits tokens one at a time over a KV cache (prefill, then decode
    /// steps): no denoising steps; `--prompt-tokens` applies.
    pub autoregressive: bool,
    /// Denoising (or unmasking) steps a request without --steps takes (0: a token model).
    pub default_steps: usize,
    /// Frames a video request without --frames makes (0: an image or text model).
    pub default_frames: usize,
    /// Load the components (weights from the folder, or a preset's seeded random ones).
    pub open: fn(&ModelSource, &LoadOptions) -> Result<Box<dyn Pipeline>>,
    /// The guidance scale a request without --guidance uses, from configs.
    pub default_guidance: fn(&ModelSource) -> Result<f32>,
    /// The native image (or frame) size, from configs.
    pub native_size: fn(&ModelSource) -> Result<usize>,
    /// Check `--width` / `--height` against the model (reads only configs).
    pub check_size: fn(&ModelSource, Option<usize>, Option<usize>) -> Result<()>,
    /// Every graph a generation of `shape` runs, with its run count (no weights read).
    pub stage_graphs: fn(&ModelSource, &StudyShape) -> Result<Vec<StageGraph>>,
}

/// Every pipeline prism runs.
pub static REGISTRY: &[Entry] = &[
    sd::ENTRY,
    t2v::ENTRY,
    janus::ENTRY,
    llm::ENTRY,
    amused::ENTRY,
    pixart::ALPHA_ENTRY,
    pixart::SIGMA_ENTRY,
    pixart::DIT_ENTRY,
    magvit_t2v::ENTRY,
];

/// The names [`REGISTRY`] knows, for messages.
pub fn class_names() -> String {
    REGISTRY
        .iter()
        .map(|e| e.class_name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pipeline class a model names: a preset's; a diffusers folder's `model_index.json`
/// `_class_name`; a transformers folder's `config.json` `architectures[0]` (else its
/// `model_type`); for a folder with neither (components saved on their own), the UNet
/// config decides between the 2D and 3D pipelines.
pub fn class_of(src: &ModelSource) -> Result<String> {
    match src {
        ModelSource::Preset(p) => Ok(p.class_name.to_string()),
        ModelSource::Folder(root) => {
            let index = root.join("model_index.json");
            if index.is_file() {
                let cfg = Cfg::from_file(&index)?;
                let name = cfg
                    .v
                    .get("_class_name")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| {
                        Error::config(
                            &cfg.file,
                            "no `_class_name`: is this a diffusers pipeline folder?",
                        )
                    })?;
                return Ok(name.to_string());
            }
            let config = root.join("config.json");
            if config.is_file() {
                let cfg = Cfg::from_file(&config)?;
                let arch = cfg
                    .v
                    .get("architectures")
                    .and_then(|a| a.as_array())
                    .and_then(|a| a.first())
                    .and_then(|a| a.as_str());
                let model_type = cfg.v.get("model_type").and_then(|v| v.as_str());
                return match arch.or(model_type) {
                    Some(name) => Ok(name.to_string()),
                    None => Err(Error::config(
                        &cfg.file,
                        "neither `architectures` nor `model_type`: is this a transformers model folder?",
                    )),
                };
            }
            if t2v::is_video_model(src)? {
                Ok(t2v::ENTRY.class_name.to_string())
            } else {
                Ok(sd::ENTRY.class_name.to_string())
            }
        }
    }
}

/// The registry entry for a model. A folder naming a class prism does not know but holding
/// a `unet/` is run as the pipeline its UNet config implies (as prism did before it read
/// `model_index.json`; the components' configs are still checked key by key).
pub fn entry_for(src: &ModelSource) -> Result<&'static Entry> {
    let class = class_of(src)?;
    if let Some(e) = REGISTRY.iter().find(|e| e.class_name == class) {
        return Ok(e);
    }
    match src {
        ModelSource::Folder(root) if root.join("unet").is_dir() => {
            Ok(if t2v::is_video_model(src)? {
                &t2v::ENTRY
            } else {
                &sd::ENTRY
            })
        }
        _ => Err(Error::invalid(format!(
            "{}: pipeline class {class} is not one prism runs ({})",
            src.label(),
            class_names()
        ))),
    }
}

/// Open a model as its pipeline.
pub fn open(src: &ModelSource, opts: &LoadOptions) -> Result<Box<dyn Pipeline>> {
    (entry_for(src)?.open)(src, opts)
}
