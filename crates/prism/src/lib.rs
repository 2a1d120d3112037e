//! prism's front door: one [`Engine`] for everything the program does — generate, forward,
//! tokenize / detokenize / round-trip (MAGVIT-v2 video tokens), suite (the whole study),
//! analyze, profile, bench, calibrate — with plain request and response types (serde), so a
//! command line, an HTTP server or a Python binding is a thin layer over it.
//!
//! ```no_run
//! let engine = prism::Engine::new(2)?;
//! let spec: prism::GenerateSpec = serde_json::from_str(
//!     r#"{"model": {"model": "sd15"}, "prompt": "a lighthouse", "steps": 2,
//!         "width": 256, "height": 256, "output": "lighthouse.png"}"#,
//! )?;
//! let report = engine.generate(&spec, &mut |e| eprintln!("{e:?}"))?;
//! println!("{}", serde_json::to_string(&report)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Nothing here changes the process: allocator tuning (`prism_runtime::limit_heap_retention`)
//! and the global allocator are the program's choice.

pub mod findings;
mod generate;
pub mod preflight;
mod report;
mod study;
pub mod suite;
mod tools;
mod video;

pub use generate::{GenerateReport, GenerateSpec};
pub use prism_core::{Error, Result};
pub use study::{AnalyzeOutput, ProfileSpec, StudySpec};
pub use suite::{SuiteResults, SuiteSpec};
pub use tools::{BenchReport, BenchSpec, CalibrateReport, ForwardReport, ForwardSpec};
pub use video::{DetokenizeSpec, RoundTripSpec, TokenReport, TokenizeSpec};

use prism_kernels::attention::AttentionImpl;
use prism_kernels::conv::ConvImpl;
use prism_models::components::LoadOptions;
use prism_runtime::{Executor, KernelChoice, WeightDType};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which model and how to load it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelSpec {
    /// A built-in preset (`sd15`, `sd21`, `t2v`) or a diffusers folder.
    pub model: String,
    /// Weight file variant, e.g. `fp16` for `*.fp16.safetensors`.
    #[serde(default)]
    pub variant: Option<String>,
    /// Seed of a preset's random weights.
    #[serde(default)]
    pub weight_seed: u64,
    /// `f32`, `bf16` or `f16`: how weight matrices are kept (f32 math either way).
    #[serde(default = "default_f32")]
    pub weights_dtype: String,
    /// Run all but the last N text-encoder layers.
    #[serde(default)]
    pub clip_skip: usize,
}

fn default_f32() -> String {
    "f32".into()
}
fn default_auto() -> String {
    "auto".into()
}

impl ModelSpec {
    /// A preset or folder with default loading options.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.into(),
            variant: None,
            weight_seed: 0,
            weights_dtype: default_f32(),
            clip_skip: 0,
        }
    }
    fn dtype(&self) -> Result<WeightDType> {
        parse_weights_dtype(&self.weights_dtype)
    }
    /// Loading options with weights laid out for `exec`'s backend.
    fn load_options(&self, exec: &Executor) -> Result<LoadOptions> {
        Ok(LoadOptions {
            variant: self.variant.clone(),
            clip_skip: self.clip_skip,
            weight_seed: self.weight_seed,
            weights_dtype: self.dtype()?,
            backend: Some(exec.backend_arc()),
        })
    }
}

/// A `--weights-dtype` value (`f32`, `bf16`, `f16`).
pub(crate) fn parse_weights_dtype(s: &str) -> Result<WeightDType> {
    WeightDType::parse(s).ok_or_else(|| {
        Error::invalid(format!(
            "--weights-dtype {s}: expected one of {}",
            WeightDType::NAMES.join(", ")
        ))
    })
}

/// Kernel variants (`auto`: the choice per shape).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelSpec {
    /// `auto`, `naive`, `fused-softmax` or `flash`.
    #[serde(default = "default_auto")]
    pub attention: String,
    /// `auto`, `im2col`, `winograd2` or `winograd4` (3×3 stride-1 convolutions).
    #[serde(default = "default_auto")]
    pub conv: String,
    /// Run graphs as built, without the fusion pass.
    #[serde(default)]
    pub no_fuse: bool,
    /// Keep the denoiser's Winograd filters once transformed (f32 weights only).
    #[serde(default)]
    pub keep_filters: bool,
}

impl Default for KernelSpec {
    fn default() -> Self {
        Self {
            attention: default_auto(),
            conv: default_auto(),
            no_fuse: false,
            keep_filters: false,
        }
    }
}

impl KernelSpec {
    /// The choices for weights stored as `dtype`: only f32 weights keep transformed filters.
    pub fn choice(&self, dtype: WeightDType) -> Result<KernelChoice> {
        let attention = match self.attention.as_str() {
            "auto" => None,
            s => Some(AttentionImpl::parse(s).ok_or_else(|| {
                Error::invalid(format!(
                    "--attention {s}: expected auto, {}",
                    AttentionImpl::NAMES.join(", ")
                ))
            })?),
        };
        let conv = match self.conv.as_str() {
            "auto" => None,
            s => Some(ConvImpl::parse(s).ok_or_else(|| {
                Error::invalid(format!(
                    "--conv {s}: expected auto, im2col, winograd2, winograd4"
                ))
            })?),
        };
        Ok(KernelChoice {
            attention,
            conv,
            no_fuse: self.no_fuse,
            keep_filters: self.keep_filters && dtype == WeightDType::F32,
        })
    }
}

/// What the engine reports as it works (the CLI turns these into lines and a progress bar).
#[derive(Clone, Debug, Serialize)]
pub enum Event {
    /// Something the user should know (random weights, a fallback).
    Note(String),
    /// The model is loaded: a one-line summary of the run about to start.
    Loaded(String),
    /// The text encoder ran (seconds).
    TextEncoded(f64),
    /// A denoising step finished: its index from 0, the step count, its seconds.
    Step {
        index: usize,
        total: usize,
        seconds: f64,
    },
    /// An autoregressive model chose image token `index` (from 0) of `total`, in `seconds`
    /// (the first includes the prompt's prefill).
    Token {
        index: usize,
        total: usize,
        seconds: f64,
    },
    /// The decoder ran (seconds).
    Decoded(f64),
    /// A benchmark started.
    Bench(String),
    /// A benchmark finished.
    Benched(prism_analyze::bench::BenchResult),
    /// A unit of work of the suite started (`analyze-sd15-cpu`, `profile-t2v-flash`, ...).
    SuiteUnit(String),
}

/// The engine: a backend (today the CPU, on a fixed number of threads) and the library calls.
pub struct Engine {
    exec: Executor,
}

impl Engine {
    /// The CPU backend on `threads` threads (0: every core).
    pub fn new(threads: usize) -> Result<Self> {
        Ok(Self {
            exec: Executor::new(threads)?,
        })
    }

    /// An engine over an existing executor (another backend, shared threads).
    pub fn with_executor(exec: Executor) -> Self {
        Self { exec }
    }

    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    pub fn threads(&self) -> usize {
        self.exec.threads()
    }
}

/// Write a text file atomically, refusing to overwrite unless `force`.
pub fn write_text_file(path: &Path, text: &str, force: bool) -> Result<()> {
    prism_models::image::check_output_path(path, force)?;
    prism_models::image::write_atomic(path, |w| {
        w.write_all(text.as_bytes())
            .map_err(|e| prism_core::Error::io(path, e))
    })
}

/// An error with the flag or file it came from in front, as the CLI prints chains.
pub(crate) fn context(ctx: String) -> impl FnOnce(Error) -> Error {
    move |e| Error::invalid(format!("{ctx}: {e}"))
}
