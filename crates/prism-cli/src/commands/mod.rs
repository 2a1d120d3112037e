//! One file per command: each parses its flags into a request of the `prism` library, calls
//! the engine, and prints what it returns. Nothing else.

pub mod analyze;
pub mod bench;
pub mod calibrate;
pub mod detokenize;
pub mod forward;
pub mod generate;
pub mod profile;
pub mod round_trip;
pub mod suite;
pub mod tokenize;

use prism::{KernelSpec, ModelSpec, StudySpec};
use prism_models::pipelines::t2v as video;
use prism_models::schedulers::SCHEDULER_NAMES;
use prism_runtime::WeightDType;
use std::path::PathBuf;

/// Which model and how to load it.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A built-in preset (sd15, sd21, t2v, janus-pro-1b, amused-256, amused-512,
    /// pixart-alpha-512, pixart-sigma-1024, dit-xl-2-256, llama2-7b, llama-1b, magvit2, magvit-t2v: real
    /// architectures, seeded random weights) or a diffusers / transformers folder (a MAGVIT-v2
    /// tokenizer folder: config.json + model.safetensors).
    #[arg(long)]
    model: String,
    /// Weight file variant, e.g. fp16 for diffusion_pytorch_model.fp16.safetensors.
    #[arg(long)]
    variant: Option<String>,
    /// Seed of a preset's random weights.
    #[arg(long, default_value_t = 0)]
    weight_seed: u64,
    /// Keep weight matrices in 16 bits (half the memory) or in 8 bits with a scale per output
    /// channel (int8: a quarter); f32 math, f32 accumulation.
    #[arg(long, default_value = "f32", value_parser = clap::builder::PossibleValuesParser::new(WeightDType::NAMES))]
    weights_dtype: String,
}

impl ModelArgs {
    pub fn spec(&self, clip_skip: usize) -> ModelSpec {
        ModelSpec {
            model: self.model.clone(),
            variant: self.variant.clone(),
            weight_seed: self.weight_seed,
            weights_dtype: self.weights_dtype.clone(),
            clip_skip,
        }
    }
}

/// Kernel variants.
#[derive(clap::Args, Clone)]
pub struct KernelArgs {
    /// Attention implementation (auto: the fastest for each shape).
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(["auto", "naive", "fused-softmax", "flash"]))]
    attention: String,
    /// Convolution implementation for 3x3 stride-1 convolutions (auto: Winograd F(4x4,3x3) or F(2x2,3x3) where accurate and faster, by tile count).
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(["auto", "im2col", "winograd2", "winograd4"]))]
    conv: String,
    /// Run graphs as built, without fusing GroupNorm+SiLU, GEGLU projections and residual adds.
    #[arg(long)]
    no_fuse: bool,
    /// Keep the UNet's Winograd filters once transformed instead of transforming them every
    /// step (f32 weights): faster later steps for more memory and a slower first step; see
    /// docs/performance.md for what it measured.
    #[arg(long)]
    keep_filters: bool,
}

impl KernelArgs {
    pub fn spec(&self) -> KernelSpec {
        KernelSpec {
            attention: self.attention.clone(),
            conv: self.conv.clone(),
            no_fuse: self.no_fuse,
            keep_filters: self.keep_filters,
        }
    }
}

/// What to characterize: a model and the generation it runs.
#[derive(clap::Args)]
pub struct StudyArgs {
    /// A preset (sd15, sd21) or a diffusers folder (for analyze only its config files are read).
    #[arg(value_name = "MODEL")]
    model_pos: Option<String>,
    #[arg(long, conflicts_with = "model_pos")]
    model: Option<String>,
    /// Image width (default: the model's native size).
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    /// Frame counts, comma-separated (video models only; analyze sweeps them).
    #[arg(long)]
    frames: Option<String>,
    /// Frames per VAE decoder run (video models).
    #[arg(long, default_value_t = video::DEFAULT_DECODE_CHUNK)]
    decode_chunk: usize,
    /// Images per prompt.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Classifier-free guidance scale; above 1 the denoiser (or decoder) runs on a doubled
    /// batch (default: the model's; 7.5 for diffusion models).
    #[arg(long)]
    guidance: Option<f32>,
    /// Decoder models: prompt length in tokens (default: janus-pro-1b 32, llama presets 512).
    #[arg(long)]
    prompt_tokens: Option<usize>,
    /// LLM baseline: tokens generated after the prompt (default 128).
    #[arg(long)]
    new_tokens: Option<usize>,
    /// Run all but the last N text-encoder layers.
    #[arg(long, default_value_t = 0)]
    clip_skip: usize,
    /// Scheduler (default: the model's); decides how many UNet runs the steps take.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(SCHEDULER_NAMES))]
    scheduler: Option<String>,
    /// Roofline hardware: a100, h100, adreno740, cpu (this machine, see `prism calibrate`), or a TOML file.
    #[arg(long, default_value = "cpu")]
    hardware: String,
    /// Print JSON (schema in docs/analyze-json.md) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write the per-layer table as CSV to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Module-path depth of the per-layer table (2: `down_blocks.0.attentions.0`).
    #[arg(long, default_value_t = 2)]
    layer_depth: usize,
    /// Print the per-layer table too.
    #[arg(long)]
    pub layers: bool,
    /// Overwrite --csv / --trace files that exist.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    kernels: KernelArgs,
}

impl StudyArgs {
    pub fn spec(&self, steps: Option<usize>) -> StudySpec {
        StudySpec {
            model: self.model.clone().or_else(|| self.model_pos.clone()),
            width: self.width,
            height: self.height,
            frames: self.frames.clone(),
            decode_chunk: self.decode_chunk,
            batch: self.batch,
            guidance: self.guidance,
            clip_skip: self.clip_skip,
            scheduler: self.scheduler.clone(),
            steps,
            prompt_tokens: self.prompt_tokens,
            new_tokens: self.new_tokens,
            hardware: self.hardware.clone(),
            csv: self.csv.clone(),
            layer_depth: self.layer_depth,
            force: self.force,
            kernels: self.kernels.spec(),
        }
    }
}
