//! `analyze` (FLOPs, bytes, memory, sequence lengths, roofline; from configs alone) and
//! `profile` (a measured generation, every node timed), over any pipeline in the registry.

use crate::{write_text_file, Engine, Event, KernelSpec};
use prism_analyze::{analyze, hardware, render, ProfileReport, Profiler, Report, Stage};
use prism_core::{Error, Result};
use prism_models::components::LoadOptions;
use prism_models::image::check_output_path;
use prism_models::pipelines::{
    self, t2v as video, Entry, MediaKind, Progress, Request, StudyShape,
};
use prism_models::source::{preset_names, ModelSource};
use prism_runtime::WeightDType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn default_one() -> usize {
    1
}
fn default_cpu() -> String {
    "cpu".into()
}
fn default_depth() -> usize {
    2
}
fn default_decode_chunk() -> usize {
    video::DEFAULT_DECODE_CHUNK
}

/// What to characterize: a model and the generation it runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudySpec {
    /// A preset or a diffusers folder (for analyze only its config files are read).
    pub model: Option<String>,
    #[serde(default)]
    pub width: Option<usize>,
    #[serde(default)]
    pub height: Option<usize>,
    /// Frame counts, comma-separated (video models; analyze sweeps them).
    #[serde(default)]
    pub frames: Option<String>,
    #[serde(default = "default_decode_chunk")]
    pub decode_chunk: usize,
    #[serde(default = "default_one")]
    pub batch: usize,
    /// Guidance scale (default: the model's; 7.5 for diffusion models).
    #[serde(default)]
    pub guidance: Option<f32>,
    #[serde(default)]
    pub clip_skip: usize,
    #[serde(default)]
    pub scheduler: Option<String>,
    /// Denoising steps (default: 50 for analyze, 1 for profile; token models take none).
    #[serde(default)]
    pub steps: Option<usize>,
    /// Decoder models: prompt length in tokens (default: Janus 32, the LLM 512).
    #[serde(default)]
    pub prompt_tokens: Option<usize>,
    /// The LLM baseline: tokens generated after the prompt (default 128).
    #[serde(default)]
    pub new_tokens: Option<usize>,
    /// Roofline hardware: a100, h100, adreno740, cpu, or a TOML file.
    #[serde(default = "default_cpu")]
    pub hardware: String,
    /// Also write a CSV table here.
    #[serde(default)]
    pub csv: Option<PathBuf>,
    /// Module-path depth of the per-layer table.
    #[serde(default = "default_depth")]
    pub layer_depth: usize,
    /// Overwrite --csv / --trace files that exist.
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub kernels: KernelSpec,
}

/// A measured generation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProfileSpec {
    pub study: StudySpec,
    /// Write a Chrome / Perfetto trace (JSON) of every node.
    #[serde(default)]
    pub trace: Option<PathBuf>,
    /// Operators listed per stage.
    pub top: usize,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub weights_dtype: Option<String>,
    /// Run even when the predicted peak memory exceeds what is available.
    #[serde(default)]
    pub no_preflight: bool,
}

/// An analysis: one generation, or a sweep over frame counts (video models).
#[derive(Clone, Debug, Serialize)]
pub enum AnalyzeOutput {
    One(Box<Report>),
    Sweep(Vec<(usize, Report)>),
}

impl AnalyzeOutput {
    /// The JSON the CLI prints (`docs/analyze-json.md`), pretty-printed, fields in the
    /// report's order.
    pub fn to_json_string(&self) -> String {
        let text = match self {
            AnalyzeOutput::One(r) => serde_json::to_string_pretty(r),
            AnalyzeOutput::Sweep(runs) => {
                let runs: Vec<&Report> = runs.iter().map(|r| &r.1).collect();
                serde_json::to_string_pretty(
                    &serde_json::json!({"schema": "prism.analyze-sweep/1", "runs": runs}),
                )
            }
        };
        text.expect("reports serialize")
    }
    /// The tables the CLI prints.
    pub fn render(&self, layers: bool) -> String {
        match self {
            AnalyzeOutput::One(r) => render::analysis(r, layers),
            AnalyzeOutput::Sweep(runs) => render::sweep(runs),
        }
    }
    /// The per-layer table as CSV (a sweep adds a leading `frames` column).
    pub fn csv(&self) -> String {
        match self {
            AnalyzeOutput::One(r) => render::analysis_csv(r),
            AnalyzeOutput::Sweep(runs) => {
                let mut csv = String::new();
                for (i, (f, r)) in runs.iter().enumerate() {
                    for (j, line) in render::analysis_csv(r).lines().enumerate() {
                        match (i, j) {
                            (0, 0) => csv += &format!("frames,{line}\n"),
                            (_, 0) => {}
                            _ => csv += &format!("{f},{line}\n"),
                        }
                    }
                }
                csv
            }
        }
    }
}

impl StudySpec {
    fn model(&self) -> Result<&str> {
        self.model.as_deref().ok_or_else(|| {
            Error::invalid(format!(
                "no model: give a preset ({}) or a folder, as the first argument or with --model",
                preset_names()
            ))
        })
    }

    /// The settings a report records.
    fn settings(&self, shape: &StudyShape) -> BTreeMap<String, serde_json::Value> {
        let mut m = BTreeMap::new();
        if shape.width > 0 {
            m.insert("width".into(), shape.width.into());
            m.insert("height".into(), shape.height.into());
        }
        if shape.steps > 0 {
            m.insert("steps".into(), shape.steps.into());
        }
        m.insert("batch".into(), shape.batch.into());
        m.insert("guidance".into(), (shape.guidance as f64).into());
        if let Some(p) = shape.prompt_tokens {
            m.insert("prompt_tokens".into(), p.into());
        }
        if let Some(n) = shape.new_tokens {
            m.insert("new_tokens".into(), n.into());
        }
        if let Some(s) = &shape.scheduler {
            m.insert("scheduler".into(), s.clone().into());
        }
        m
    }

    /// Frame counts for a video model (default: the pipeline's); None for an image model
    /// (where --frames is an error).
    fn frame_counts(&self, src: &ModelSource, entry: &Entry) -> Result<Option<Vec<usize>>> {
        match (&self.frames, entry.media) {
            (Some(_), MediaKind::Image | MediaKind::Text) => Err(Error::invalid(format!(
                "--frames: {} is {} model; frame counts apply to video models (such as t2v)",
                src.label(),
                if entry.media == MediaKind::Text {
                    "a language"
                } else {
                    "an image"
                }
            ))),
            (None, MediaKind::Image | MediaKind::Text) => Ok(None),
            (None, MediaKind::Video) => Ok(Some(vec![entry.default_frames])),
            (Some(list), MediaKind::Video) => {
                let mut v = Vec::new();
                for part in list.split(',') {
                    let f: usize = part.trim().parse().map_err(|_| {
                        Error::invalid(format!(
                            "--frames {list}: expected frame counts such as 16 or 8,16,32"
                        ))
                    })?;
                    video::check_frames_countable(f)?;
                    v.push(f);
                }
                Ok(Some(v))
            }
        }
    }

    /// Resolve the model, check flags, and fill defaults (`default_steps` for a diffusion
    /// model given no --steps; None: the model's own default).
    pub(crate) fn resolve(&self, default_steps: Option<usize>) -> Result<Resolved> {
        let src = ModelSource::parse(self.model()?)?;
        let entry = pipelines::entry_for(&src)?;
        let frames = self.frame_counts(&src, entry)?;
        let steps = if entry.autoregressive {
            if self.steps.is_some() {
                return Err(Error::invalid(format!(
                    "--steps: {} emits tokens one at a time (a prefill, then decode steps); there are no denoising steps",
                    src.label()
                )));
            }
            0
        } else {
            for (flag, v) in [
                ("--prompt-tokens", self.prompt_tokens),
                ("--new-tokens", self.new_tokens),
            ] {
                if v.is_some() {
                    return Err(Error::invalid(format!(
                        "{flag}: {} is a diffusion model; token counts apply to decoder models (janus-pro-1b, llama2-7b)",
                        src.label()
                    )));
                }
            }
            self.steps
                .unwrap_or(default_steps.unwrap_or(entry.default_steps))
        };
        if !entry.autoregressive && steps == 0 {
            return Err(Error::invalid(
                "--steps 0: at least one denoising step is needed",
            ));
        }
        let guidance = match self.guidance {
            Some(g) if !g.is_finite() => {
                return Err(Error::invalid(format!("--guidance {g}: must be finite")))
            }
            Some(g) => g,
            None => (entry.default_guidance)(&src)?,
        };
        (entry.check_size)(&src, self.width, self.height)?;
        let native = (entry.native_size)(&src)?;
        let shape = StudyShape {
            width: self.width.unwrap_or(native),
            height: self.height.unwrap_or(native),
            batch: self.batch,
            steps,
            guidance,
            clip_skip: self.clip_skip,
            scheduler: self.scheduler.clone(),
            frames: None,
            decode_chunk: self.decode_chunk,
            prompt_tokens: self.prompt_tokens,
            new_tokens: self.new_tokens,
        };
        Ok(Resolved {
            src,
            entry,
            shape,
            frames,
        })
    }
}

pub(crate) struct Resolved {
    pub(crate) src: ModelSource,
    pub(crate) entry: &'static pipelines::Entry,
    pub(crate) shape: StudyShape,
    pub(crate) frames: Option<Vec<usize>>,
}

impl Engine {
    /// Analyze a generation from configs alone (no weights read), or sweep frame counts.
    /// Writes `--csv` if asked.
    pub fn analyze(&self, spec: &StudySpec) -> Result<AnalyzeOutput> {
        let r = spec.resolve(None)?;
        if let Some(c) = &spec.csv {
            check_output_path(c, spec.force)?;
        }
        let hw = self.exec.install(|| hardware::resolve(&spec.hardware))?;
        let kernels = spec.kernels.choice(WeightDType::F32)?;
        let analyze_shape = |shape: &StudyShape, settings| -> Result<Report> {
            let graphs = (r.entry.stage_graphs)(&r.src, shape)?;
            let stages: Vec<Stage> = graphs
                .iter()
                .map(|g| Stage {
                    name: g.name,
                    graph: &g.graph,
                    runs: g.runs,
                    key_lens: g.key_lens,
                    weight_dtype: g.weight_dtype.unwrap_or(WeightDType::F32),
                })
                .collect();
            let report = analyze(
                &r.src.label(),
                settings,
                &stages,
                &hw,
                self.exec.threads(),
                &kernels,
                spec.layer_depth,
            );
            if [
                report.total.flops,
                report.total.bytes,
                report.total.elem_ops,
            ]
            .contains(&u64::MAX)
            {
                return Err(Error::invalid(format!(
                    "{}: this generation's counts do not fit 64 bits; analyze a smaller size, fewer frames or steps",
                    r.src.label()
                )));
            }
            Ok(report)
        };
        let out = match &r.frames {
            Some(frames) => {
                let mut runs = Vec::new();
                for &f in frames {
                    let shape = StudyShape {
                        frames: Some(f),
                        ..r.shape.clone()
                    };
                    let mut settings = spec.settings(&shape);
                    settings.insert("frames".into(), f.into());
                    runs.push((f, analyze_shape(&shape, settings)?));
                }
                AnalyzeOutput::Sweep(runs)
            }
            None => AnalyzeOutput::One(Box::new(analyze_shape(&r.shape, spec.settings(&r.shape))?)),
        };
        if let Some(c) = &spec.csv {
            write_text_file(c, &out.csv(), spec.force)?;
        }
        Ok(out)
    }

    /// Run a generation with every node timed (random weights for presets). Writes `--csv`
    /// and `--trace` if asked.
    pub fn profile(
        &self,
        spec: &ProfileSpec,
        events: &mut dyn FnMut(&Event),
    ) -> Result<ProfileReport> {
        let study = &spec.study;
        let r = study.resolve(Some(1))?;
        for p in [&study.csv, &spec.trace].into_iter().flatten() {
            check_output_path(p, study.force)?;
        }
        let hw = self.exec.install(|| hardware::resolve(&study.hardware))?;
        let weights_dtype = match &spec.weights_dtype {
            None => WeightDType::F32,
            Some(s) => crate::parse_weights_dtype(s)?,
        };
        let opts = LoadOptions {
            variant: spec.variant.clone(),
            clip_skip: r.shape.clip_skip,
            weight_seed: 0,
            weights_dtype,
            backend: Some(self.exec.backend_arc()),
        };
        if r.shape.batch != 1 {
            return Err(Error::invalid(format!(
                "--batch {}: profile runs one image per prompt; use analyze for larger batches",
                r.shape.batch
            )));
        }
        let kernels = study.kernels.choice(opts.weights_dtype)?;
        let exec = self.exec.with_kernels(kernels);
        let mut prof = Profiler::new(hw, exec.threads(), kernels, spec.trace.is_some());
        let mut settings = study.settings(&r.shape);
        if r.src.is_random() {
            events(&Event::Note(format!(
                "{} runs on seeded random weights; timings are real",
                r.src.label()
            )));
        }
        let frames = match &r.frames {
            Some(frames) => {
                let [frames] = frames[..] else {
                    return Err(Error::invalid(
                        "--frames: profile takes one frame count (analyze sweeps several)",
                    ));
                };
                settings.insert("frames".into(), frames.into());
                Some(frames)
            }
            None => None,
        };
        if !spec.no_preflight {
            let shape = StudyShape {
                frames,
                ..r.shape.clone()
            };
            let p = crate::preflight::predict(
                r.entry,
                &r.src,
                &shape,
                opts.weights_dtype,
                exec.threads(),
                &exec.kernels,
            )?;
            crate::preflight::check(&p, "a smaller size")?;
        }
        let pipeline = (r.entry.open)(&r.src, &opts)?;
        let class_conditional = r.entry.class_name == pipelines::pixart::DIT_ENTRY.class_name;
        let req = Request {
            prompt: match r.entry.media {
                _ if class_conditional => String::new(),
                MediaKind::Video => "a boat on a lake".into(),
                MediaKind::Image | MediaKind::Text => "a lighthouse at dusk".into(),
            },
            steps: (!r.entry.autoregressive).then_some(r.shape.steps),
            guidance: Some(r.shape.guidance),
            prompt_tokens: r.shape.prompt_tokens,
            new_tokens: r.shape.new_tokens,
            scheduler: r.shape.scheduler.clone(),
            seed: spec.seed,
            width: Some(r.shape.width),
            height: Some(r.shape.height),
            frames,
            decode_chunk: frames.map(|_| study.decode_chunk),
            // A class-conditional model generates a class (ImageNet's 207, golden retriever).
            class_label: class_conditional.then_some(207),
            ..Request::default()
        };
        pipeline.validate(&req)?;
        pipeline.run_once(
            &exec,
            &req,
            &mut |p| match p {
                Progress::Step { index, total, time } => events(&Event::Step {
                    index,
                    total,
                    seconds: time.as_secs_f64(),
                }),
                Progress::Token { index, total, time } => events(&Event::Token {
                    index,
                    total,
                    seconds: time.as_secs_f64(),
                }),
                _ => {}
            },
            &mut prof,
        )?;
        let report = prof.report(
            &r.src.label(),
            settings,
            &study.kernels.attention,
            spec.top,
            study.layer_depth,
        );
        if let Some(c) = &study.csv {
            write_text_file(c, &render::profile_csv(&report), study.force)?;
        }
        if let Some(t) = &spec.trace {
            let json = serde_json::to_string(&prof.trace_json())
                .map_err(|e| Error::invalid(format!("trace: {e}")))?;
            write_text_file(t, &json, study.force)?;
        }
        Ok(report)
    }
}
