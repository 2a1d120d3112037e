//! The `prism` command: parses arguments and calls the library crates. Nothing else.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use prism_analyze::bench::{self, BENCHES};
use prism_analyze::{analyze, hardware, render, Profiler, Stage};
use prism_kernels::attention::AttentionImpl;
use prism_kernels::conv::ConvImpl;
use prism_models::components::LoadOptions;
use prism_models::image::{check_output_path, save_png, write_atomic};
use prism_models::io::{read_tensor, read_tensors_as_stored, write_tensors};
use prism_models::pipelines::forward::{forward, ForwardComponent};
use prism_models::pipelines::sd::{check_image_size, GenerateRequest, StableDiffusion};
use prism_models::pipelines::sd::{generation_graphs, native_size, GenerationShape};
use prism_models::pipelines::t2v::{self as video, TextToVideo, VideoRequest, VideoShape};
use prism_models::pipelines::Progress;
use prism_models::schedulers::SCHEDULER_NAMES;
use prism_models::source::{preset_names, ModelSource};
use prism_runtime::Executor;
use prism_runtime::{KernelChoice, WeightDType};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Large blocks start on cache lines (see `prism_kernels::alloc`).
#[global_allocator]
static ALLOC: prism_kernels::alloc::LineAligned = prism_kernels::alloc::LineAligned;

#[derive(Parser)]
#[command(
    name = "prism",
    version,
    about = "Run text-to-image diffusion models on the CPU and see where their time goes"
)]
struct Cli {
    /// Worker threads (0 = every core).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// A built-in preset (sd15, sd21: real architectures, seeded random weights) or a diffusers folder.
    #[arg(long)]
    model: String,
    /// Weight file variant, e.g. fp16 for diffusion_pytorch_model.fp16.safetensors.
    #[arg(long)]
    variant: Option<String>,
    /// Seed of a preset's random weights.
    #[arg(long, default_value_t = 0)]
    weight_seed: u64,
    /// Keep weight matrices in 16 bits (half the memory; f32 math, f32 accumulation).
    #[arg(long, default_value = "f32", value_parser = clap::builder::PossibleValuesParser::new(WeightDType::NAMES))]
    weights_dtype: String,
}

/// Kernel variants.
#[derive(clap::Args, Clone)]
struct KernelArgs {
    /// Attention implementation (auto: the fastest for each shape).
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(["auto", "naive", "fused-softmax", "flash"]))]
    attention: String,
    /// Convolution implementation for 3x3 stride-1 convolutions (auto: Winograd F(4x4,3x3) or F(2x2,3x3) where accurate and faster, by tile count).
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(["auto", "im2col", "winograd2", "winograd4"]))]
    conv: String,
    /// Run graphs as built, without fusing GroupNorm+SiLU, GEGLU projections and residual adds.
    #[arg(long)]
    no_fuse: bool,
    /// Keep the UNet's Winograd filters once transformed instead of transforming them every step
    /// (f32 weights): later steps 0-7% faster at 512 px in the benchmarks since the transform
    /// streams its stores (0-16% before), for 1.9-4.1 GiB more memory at 256-512 px and a
    /// slower first step.
    #[arg(long)]
    keep_filters: bool,
}

impl KernelArgs {
    /// The choices for weights stored as `dtype`: only f32 weights keep transformed filters.
    fn choice(&self, dtype: WeightDType) -> KernelChoice {
        KernelChoice {
            attention: AttentionImpl::parse(&self.attention),
            conv: ConvImpl::parse(&self.conv),
            no_fuse: self.no_fuse,
            keep_filters: self.keep_filters && dtype == WeightDType::F32,
        }
    }
}

/// What to characterize: a model and the generation it runs.
#[derive(clap::Args)]
struct StudyArgs {
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
    /// Classifier-free guidance scale; above 1 the UNet runs on a doubled batch.
    #[arg(long, default_value_t = 7.5)]
    guidance: f32,
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
    json: bool,
    /// Also write the per-layer table as CSV to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Module-path depth of the per-layer table (2: `down_blocks.0.attentions.0`).
    #[arg(long, default_value_t = 2)]
    layer_depth: usize,
    /// Print the per-layer table too.
    #[arg(long)]
    layers: bool,
    /// Overwrite --csv / --trace files that exist.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    kernels: KernelArgs,
}

impl StudyArgs {
    fn model(&self) -> Result<String> {
        self.model
            .clone()
            .or_else(|| self.model_pos.clone())
            .ok_or_else(|| anyhow::anyhow!("no model: give a preset ({}) or a folder, as the first argument or with --model", preset_names()))
    }
    fn settings(&self, shape: &GenerationShape) -> BTreeMap<String, serde_json::Value> {
        let mut m = BTreeMap::new();
        m.insert("width".into(), shape.width.into());
        m.insert("height".into(), shape.height.into());
        m.insert("steps".into(), shape.steps.into());
        m.insert("batch".into(), shape.batch.into());
        m.insert("guidance".into(), (shape.guidance as f64).into());
        if let Some(s) = &shape.scheduler {
            m.insert("scheduler".into(), s.clone().into());
        }
        m
    }
    /// Frame counts for a video model (default: one, the model's default); None for an
    /// image model (where --frames is an error).
    fn frame_counts(&self, src: &ModelSource) -> Result<Option<Vec<usize>>> {
        let video = video::is_video_model(src)?;
        match (&self.frames, video) {
            (Some(_), false) => anyhow::bail!(
                "--frames: {} is an image model; frame counts apply to video models (such as t2v)",
                src.label()
            ),
            (None, false) => Ok(None),
            (None, true) => Ok(Some(vec![video::DEFAULT_FRAMES])),
            (Some(list), true) => {
                let mut v = Vec::new();
                for part in list.split(',') {
                    let f: usize = part.trim().parse().map_err(|_| {
                        anyhow::anyhow!(
                            "--frames {list}: expected frame counts such as 16 or 8,16,32"
                        )
                    })?;
                    video::check_frames(f)?;
                    v.push(f);
                }
                Ok(Some(v))
            }
        }
    }
    /// Resolve the model, check flags, and fill defaults.
    fn shape(&self, steps: usize) -> Result<(ModelSource, GenerationShape)> {
        let src = ModelSource::parse(&self.model()?)?;
        let video = self.frame_counts(&src)?.is_some();
        if steps == 0 {
            anyhow::bail!("--steps 0: at least one denoising step is needed");
        }
        check_image_size(&src, self.width, self.height)?;
        let native = if video {
            video::native_size(&src)?
        } else {
            native_size(&src)?
        };
        Ok((
            src,
            GenerationShape {
                width: self.width.unwrap_or(native),
                height: self.height.unwrap_or(native),
                batch: self.batch,
                steps,
                guidance: self.guidance,
                clip_skip: self.clip_skip,
                scheduler: self.scheduler.clone(),
            },
        ))
    }
}

fn write_text_file(path: &std::path::Path, text: &str, force: bool) -> Result<()> {
    check_output_path(path, force)?;
    write_atomic(path, |w| {
        w.write_all(text.as_bytes())
            .map_err(|e| prism_core::Error::io(path, e))
    })?;
    Ok(())
}

#[derive(Subcommand)]
enum Cmd {
    /// FLOPs, bytes, memory, attention sequence lengths and roofline time, from configs alone.
    Analyze {
        #[command(flatten)]
        study: StudyArgs,
        /// Denoising steps.
        #[arg(long, default_value_t = 50)]
        steps: usize,
    },
    /// Run a generation and time every node: per category, per operator, per stage.
    Profile {
        #[command(flatten)]
        study: StudyArgs,
        #[arg(long, default_value_t = 1)]
        steps: usize,
        /// Write a Chrome / Perfetto trace (JSON) of every node.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Operators listed per stage.
        #[arg(long, default_value_t = 12)]
        top: usize,
        #[arg(long)]
        variant: Option<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep weight matrices in 16 bits (f32 math).
        #[arg(long, default_value = "f32", value_parser = clap::builder::PossibleValuesParser::new(WeightDType::NAMES))]
        weights_dtype: String,
    },
    /// Measure this CPU (matrix product and memory copy) for `--hardware cpu`.
    Calibrate,
    /// Time kernels against their references and whole components (median of several runs).
    Bench {
        /// Benchmarks to run, comma-separated (default: all).
        #[arg(long)]
        only: Option<String>,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Print JSON (schema prism.bench/1, as tools/bench_torch.py writes).
        #[arg(long)]
        json: bool,
        /// Before each timed run, print `#pace ready` on stdout and wait for a line on stdin
        /// (tools/bench_compare.py alternates prism's runs with PyTorch's this way).
        #[arg(long)]
        paced: bool,
        /// Tiny sizes (those of tools/bench_torch.py --quick): a smoke test, not a measurement.
        #[arg(long)]
        quick: bool,
    },
    /// Text to image: writes a PNG carrying the generation parameters.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value = "")]
        negative_prompt: String,
        /// Denoising steps.
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// Classifier-free guidance scale (≤ 1 disables guidance).
        #[arg(long, default_value_t = 7.5)]
        guidance: f32,
        /// Scheduler (default: the model's scheduler config).
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(SCHEDULER_NAMES))]
        scheduler: Option<String>,
        /// Seed of the initial noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Image width in pixels (default: the model's native size).
        #[arg(long)]
        width: Option<usize>,
        #[arg(long)]
        height: Option<usize>,
        /// Initial noise: a safetensors file with one tensor `latents` of shape (1, 4, H/8, W/8).
        #[arg(long)]
        latents: Option<PathBuf>,
        /// Run all but the last N text-encoder layers (diffusers' clip_skip).
        #[arg(long, default_value_t = 0)]
        clip_skip: usize,
        /// Frames to generate (video models only; default 16).
        #[arg(long)]
        frames: Option<usize>,
        /// Frames per VAE decoder run: bounds decoder memory (video models).
        #[arg(long, default_value_t = video::DEFAULT_DECODE_CHUNK)]
        decode_chunk: usize,
        /// Also write the frames as numbered PNGs into this folder (video models).
        #[arg(long)]
        frames_dir: Option<PathBuf>,
        /// Frames per second of the GIF (video models).
        #[arg(long, default_value_t = video::DEFAULT_FPS)]
        fps: u32,
        #[command(flatten)]
        kernels: KernelArgs,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Run one component on named inputs from a safetensors file; write its outputs.
    Forward {
        #[command(flatten)]
        model: ModelArgs,
        /// unet | vae-encoder | vae-decoder | text-encoder
        #[arg(long)]
        component: String,
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long, default_value_t = 0)]
        clip_skip: usize,
        #[arg(long)]
        force: bool,
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn load_opts(m: &ModelArgs, clip_skip: usize) -> LoadOptions {
    LoadOptions {
        variant: m.variant.clone(),
        clip_skip,
        weight_seed: m.weight_seed,
        weights_dtype: WeightDType::parse(&m.weights_dtype).unwrap_or_default(),
    }
}

fn main() {
    let cli = Cli::parse();
    // Process-wide allocator tuning belongs to the program, not the library.
    prism_runtime::limit_heap_retention();
    if let Err(e) = run(cli) {
        // One line: the error and its causes.
        let msg = e
            .chain()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(": ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let exec = Executor::new(cli.threads)?;
    match cli.cmd {
        Cmd::Analyze { study, steps } => {
            let (src, shape) = study.shape(steps)?;
            if let Some(c) = &study.csv {
                check_output_path(c, study.force)?;
            }
            let hw = exec.install(|| hardware::resolve(&study.hardware))?;
            let analyze_graphs = |graphs: &[prism_models::pipelines::StageGraph], settings| {
                let stages: Vec<Stage> = graphs
                    .iter()
                    .map(|g| Stage {
                        name: g.name,
                        graph: &g.graph,
                        runs: g.runs,
                    })
                    .collect();
                analyze(
                    &src.label(),
                    settings,
                    &stages,
                    &hw,
                    exec.threads(),
                    &study.kernels.choice(WeightDType::F32),
                    study.layer_depth,
                )
            };
            if let Some(frames) = study.frame_counts(&src)? {
                let mut reports = Vec::new();
                for f in frames {
                    let vs = VideoShape {
                        width: shape.width,
                        height: shape.height,
                        frames: f,
                        steps: shape.steps,
                        guidance: shape.guidance,
                        clip_skip: shape.clip_skip,
                        scheduler: shape.scheduler.clone(),
                        decode_chunk: study.decode_chunk,
                    };
                    let mut settings = study.settings(&shape);
                    settings.insert("frames".into(), f.into());
                    reports.push((
                        f,
                        analyze_graphs(&video::video_generation_graphs(&src, &vs)?, settings),
                    ));
                }
                if study.json {
                    let runs: Vec<&prism_analyze::Report> = reports.iter().map(|r| &r.1).collect();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &serde_json::json!({"schema": "prism.analyze-sweep/1", "runs": runs})
                        )?
                    );
                } else {
                    print!("{}", render::sweep(&reports));
                }
                if let Some(c) = &study.csv {
                    let mut csv = String::new();
                    for (i, (f, r)) in reports.iter().enumerate() {
                        for (j, line) in render::analysis_csv(r).lines().enumerate() {
                            match (i, j) {
                                (0, 0) => csv += &format!("frames,{line}\n"),
                                (_, 0) => {}
                                _ => csv += &format!("{f},{line}\n"),
                            }
                        }
                    }
                    write_text_file(c, &csv, study.force)?;
                }
                return Ok(());
            }
            let report = analyze_graphs(&generation_graphs(&src, &shape)?, study.settings(&shape));
            if study.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render::analysis(&report, study.layers));
            }
            if let Some(c) = &study.csv {
                write_text_file(c, &render::analysis_csv(&report), study.force)?;
            }
        }
        Cmd::Profile {
            study,
            steps,
            trace,
            top,
            variant,
            seed,
            weights_dtype,
        } => {
            let (src, shape) = study.shape(steps)?;
            for p in [&study.csv, &trace].into_iter().flatten() {
                check_output_path(p, study.force)?;
            }
            let hw = exec.install(|| hardware::resolve(&study.hardware))?;
            let opts = LoadOptions {
                variant,
                clip_skip: shape.clip_skip,
                weight_seed: 0,
                weights_dtype: WeightDType::parse(&weights_dtype).unwrap_or_default(),
            };
            if shape.batch != 1 {
                anyhow::bail!(
                    "--batch {}: profile runs one image per prompt; use analyze for larger batches",
                    shape.batch
                );
            }
            let kernels = study.kernels.choice(opts.weights_dtype);
            let exec = exec.with_kernels(kernels);
            let mut prof = Profiler::new(hw, exec.threads(), kernels, trace.is_some());
            let mut on_step = |p: Progress| {
                if let Progress::Step { index, total, time } = p {
                    eprintln!("step {}/{}: {:.2}s", index + 1, total, time.as_secs_f64());
                }
            };
            let mut settings = study.settings(&shape);
            if src.is_random() {
                eprintln!(
                    "note: {} runs on seeded random weights; timings are real",
                    src.label()
                );
            }
            if let Some(frames) = study.frame_counts(&src)? {
                let [frames] = frames[..] else {
                    anyhow::bail!(
                        "--frames: profile takes one frame count (analyze sweeps several)"
                    );
                };
                settings.insert("frames".into(), frames.into());
                let tv = TextToVideo::load(&src, &opts)?;
                let req = VideoRequest {
                    prompt: "a boat on a lake".into(),
                    negative_prompt: String::new(),
                    steps,
                    guidance: shape.guidance,
                    scheduler: shape.scheduler.clone(),
                    seed,
                    width: shape.width,
                    height: shape.height,
                    frames,
                    decode_chunk: study.decode_chunk,
                    latents: None,
                };
                tv.generate_once(&exec, &req, &mut on_step, &mut prof)?;
            } else {
                let sd = StableDiffusion::load(&src, &opts)?;
                let req = GenerateRequest {
                    prompt: "a lighthouse at dusk".into(),
                    negative_prompt: String::new(),
                    steps,
                    guidance: shape.guidance,
                    scheduler: shape.scheduler.clone(),
                    seed,
                    width: shape.width,
                    height: shape.height,
                    latents: None,
                };
                sd.generate_once(&exec, &req, &mut on_step, &mut prof)?;
            }
            let report = prof.report(
                &src.label(),
                settings,
                &study.kernels.attention,
                top,
                study.layer_depth,
            );
            if study.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render::profile(&report));
            }
            if let Some(c) = &study.csv {
                write_text_file(c, &render::profile_csv(&report), study.force)?;
            }
            if let Some(t) = &trace {
                write_text_file(t, &serde_json::to_string(&prof.trace_json())?, study.force)?;
                eprintln!(
                    "wrote trace {} (open in https://ui.perfetto.dev or chrome://tracing)",
                    t.display()
                );
            }
        }
        Cmd::Bench {
            only,
            runs,
            json,
            paced,
            quick,
        } => {
            bench::set_paced(paced);
            let names: Vec<String> = match only {
                Some(o) => o.split(',').map(|s| s.trim().to_string()).collect(),
                None => BENCHES.iter().map(|s| s.to_string()).collect(),
            };
            let mut results = Vec::new();
            for n in &names {
                eprintln!("bench {n} ...");
                let r = bench::run(n, &exec, runs, quick)?;
                eprintln!(
                    "  median {:.4}s [{:.4}-{:.4}]{}",
                    r.median_s,
                    r.min_s,
                    r.max_s,
                    r.rel_error
                        .map_or(String::new(), |e| format!(", rel. error {e:.2e}"))
                );
                results.push(r);
            }
            let out = serde_json::json!({
                "schema": "prism.bench/1",
                "system": "prism",
                "versions": {"prism": env!("CARGO_PKG_VERSION"), "simd": prism_kernels::simd::level().name()},
                "threads": exec.threads(),
                "dtype": "f32",
                "quick": quick,
                "peak_rss_bytes": prism_runtime::mem::peak_rss_bytes(),
                "results": results,
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let mut t = render::Table::new(&[
                    "benchmark",
                    "median",
                    "min",
                    "max",
                    "GFLOP/s",
                    "rel. error",
                    "note",
                ]);
                for r in &results {
                    t.row(vec![
                        r.name.clone(),
                        render::secs(r.median_s),
                        render::secs(r.min_s),
                        render::secs(r.max_s),
                        r.flops.map_or(String::new(), |f| {
                            format!("{:.1}", f as f64 / r.median_s / 1e9)
                        }),
                        r.rel_error.map_or(String::new(), |e| format!("{e:.2e}")),
                        r.note.clone().unwrap_or_default(),
                    ]);
                }
                print!("{}", t.render(""));
            }
        }
        Cmd::Calibrate => {
            // The file is named by the pool's thread count, so ask inside the pool.
            let (hw, file) = exec.install(|| {
                (
                    hardware::calibrate(2048, 1024, 5),
                    hardware::calibration_file(),
                )
            });
            print!("{}", hw.to_toml());
            if let Some(f) = file {
                if let Some(d) = f.parent() {
                    std::fs::create_dir_all(d)
                        .with_context(|| format!("creating {}", d.display()))?;
                }
                std::fs::write(&f, hw.to_toml())
                    .with_context(|| format!("writing {}", f.display()))?;
                eprintln!(
                    "saved to {} (used by --hardware cpu at {} threads)",
                    f.display(),
                    exec.threads()
                );
            }
        }
        Cmd::Generate {
            model,
            prompt,
            negative_prompt,
            steps,
            guidance,
            scheduler,
            seed,
            width,
            height,
            latents,
            clip_skip,
            frames,
            decode_chunk,
            frames_dir,
            fps,
            kernels,
            force,
            output,
        } => {
            check_output_path(&output, force)?;
            if steps == 0 {
                anyhow::bail!("--steps 0: at least one denoising step is needed");
            }
            let src = ModelSource::parse(&model.model)?;
            check_image_size(&src, width, height)?;
            let opts = load_opts(&model, clip_skip);
            let exec = exec.with_kernels(kernels.choice(opts.weights_dtype));
            let is_video = video::is_video_model(&src)?;
            if !is_video && (frames.is_some() || frames_dir.is_some()) {
                anyhow::bail!(
                    "--frames: {} is an image model; frames apply to video models (such as t2v)",
                    src.label()
                );
            }
            let latents = latents
                .map(|p| {
                    read_tensor(&p, "latents").with_context(|| format!("--latents {}", p.display()))
                })
                .transpose()?;
            if is_video {
                let frames = frames.unwrap_or(video::DEFAULT_FRAMES);
                video::check_frames(frames)?;
                video::check_decode_chunk(decode_chunk)?;
                if output.extension().and_then(|e| e.to_str()) != Some("gif") {
                    anyhow::bail!(
                        "-o {}: a video is written as an animated GIF; name the file *.gif",
                        output.display()
                    );
                }
                let t0 = Instant::now();
                let tv = TextToVideo::load(&src, &opts)?;
                let size = tv.default_size();
                let req = VideoRequest {
                    prompt,
                    negative_prompt,
                    steps,
                    guidance,
                    scheduler,
                    seed,
                    width: width.unwrap_or(size),
                    height: height.unwrap_or(size),
                    frames,
                    decode_chunk,
                    latents,
                };
                tv.validate(&req)?;
                if tv.random_weights {
                    eprintln!(
                        "note: {} has seeded random weights: the video is noise; timings are real",
                        tv.label
                    );
                }
                eprintln!(
                    "loaded {} in {:.1}s; {} frames of {}x{}, {} steps, guidance {}, {} threads",
                    tv.label,
                    t0.elapsed().as_secs_f64(),
                    frames,
                    req.width,
                    req.height,
                    steps,
                    guidance,
                    exec.threads()
                );
                let gen = tv.generate_once(
                    &exec,
                    &req,
                    &mut |p| match p {
                        Progress::TextEncoded(d) => {
                            eprintln!("text encoder: {:.2}s", d.as_secs_f64())
                        }
                        Progress::Step { index, total, time } => {
                            eprintln!("step {}/{}: {:.2}s", index + 1, total, time.as_secs_f64())
                        }
                        Progress::Decoded(d) => eprintln!("vae decode: {:.2}s", d.as_secs_f64()),
                    },
                    &mut prism_runtime::NoObserver,
                )?;
                video::save_gif(&output, &gen.frames, fps, force)?;
                if let Some(d) = &frames_dir {
                    video::save_frames_dir(d, &gen.frames, force)?;
                    eprintln!("wrote {} frames to {}", gen.frames.len(), d.display());
                }
                eprintln!(
                    "wrote {} ({} frames, {}x{}); total {:.1}s",
                    output.display(),
                    gen.frames.len(),
                    req.width,
                    req.height,
                    t0.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            let t0 = Instant::now();
            let sd = StableDiffusion::load(&src, &opts)?;
            let size = sd.default_size();
            let req = GenerateRequest {
                prompt,
                negative_prompt,
                steps,
                guidance,
                scheduler,
                seed,
                width: width.unwrap_or(size),
                height: height.unwrap_or(size),
                latents,
            };
            sd.validate(&req)?;
            if sd.random_weights {
                eprintln!(
                    "note: {} has seeded random weights (seed {}): the image is noise; timings are real",
                    sd.label, model.weight_seed
                );
            }
            eprintln!(
                "loaded {} in {:.1}s; {}x{}, {} steps, guidance {}, {} threads",
                sd.label,
                t0.elapsed().as_secs_f64(),
                req.width,
                req.height,
                req.steps,
                req.guidance,
                exec.threads()
            );
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template("{spinner} denoising {bar:30} {pos}/{len} {msg}")
                    .expect("static template"),
            );
            let (label, random_weights) = (sd.label.clone(), sd.random_weights);
            let gen = sd.generate_once(
                &exec,
                &req,
                &mut |p| match p {
                    Progress::TextEncoded(d) => {
                        bar.println(format!("text encoder: {:.2}s", d.as_secs_f64()))
                    }
                    Progress::Step { index, total, time } => {
                        bar.set_length(total as u64);
                        bar.set_position(index as u64 + 1);
                        bar.set_message(format!("{:.2}s/step", time.as_secs_f64()));
                    }
                    Progress::Decoded(d) => {
                        bar.finish_and_clear();
                        eprintln!("vae decode: {:.2}s", d.as_secs_f64());
                    }
                },
                &mut prism_runtime::NoObserver,
            )?;
            let mean_step = gen.step_times.iter().map(|d| d.as_secs_f64()).sum::<f64>()
                / gen.step_times.len().max(1) as f64;
            let params = format!(
                "{}\nNegative prompt: {}\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {}{}",
                req.prompt,
                req.negative_prompt,
                req.steps,
                gen.scheduler,
                req.guidance,
                if req.latents.is_some() { "latents file".to_string() } else { seed.to_string() },
                req.width,
                req.height,
                label,
                if random_weights { " (random weights)" } else { "" }
            );
            let text = vec![
                ("parameters".to_string(), params),
                (
                    "Software".to_string(),
                    format!("prism {}", env!("CARGO_PKG_VERSION")),
                ),
            ];
            save_png(&output, &gen.image, &text, force)?;
            eprintln!(
                "wrote {} ({}x{}); {:.2}s per step, total {:.1}s",
                output.display(),
                req.width,
                req.height,
                mean_step,
                t0.elapsed().as_secs_f64()
            );
        }
        Cmd::Forward {
            model,
            component,
            inputs,
            clip_skip,
            force,
            output,
        } => {
            check_output_path(&output, force)?;
            let comp = ForwardComponent::parse(&component)?;
            let src = ModelSource::parse(&model.model)?;
            let ins = read_tensors_as_stored(&inputs)
                .with_context(|| format!("--inputs {}", inputs.display()))?;
            let outs = forward(&src, &load_opts(&model, clip_skip), &exec, comp, ins)?;
            write_tensors(&output, &outs, force)?;
            for (n, t) in &outs {
                eprintln!("{n}: {:?}", t.shape());
            }
            eprintln!("wrote {}", output.display());
        }
    }
    Ok(())
}
