//! `prism generate`: text to a PNG (image models) or an animated GIF (video models).

use super::{KernelArgs, ModelArgs};
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use prism::{Engine, Event, GenerateSpec};
use prism_models::pipelines::t2v as video;
use prism_models::schedulers::SCHEDULER_NAMES;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run even when the predicted peak memory exceeds what is available.
    #[arg(long)]
    no_preflight: bool,
    #[command(flatten)]
    model: ModelArgs,
    /// The text prompt (class-conditional models such as DiT take --class-label instead).
    #[arg(long, default_value = "")]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Denoising steps (diffusion models; default 50).
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale (≤ 1 disables guidance; default: the model's, 7.5 for
    /// diffusion models, 5 for Janus-Pro).
    #[arg(long)]
    guidance: Option<f32>,
    /// Token models: take the most probable image token at every step (no sampling).
    #[arg(long)]
    greedy: bool,
    /// Token models: sampling temperature (0 = greedy; default: the model's generation config, else 1).
    #[arg(long)]
    temperature: Option<f32>,
    /// Token models: sample among the K most probable tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Token models: sample among the most probable tokens whose probabilities sum to P.
    #[arg(long)]
    top_p: Option<f32>,
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
    /// Initial noise: a safetensors file with one tensor `latents` of shape (1, 4, H/8, W/8)
    /// (aMUSEd: the initial token grid (1, H/16, W/16), int64).
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Class-conditional models (DiT): the class index to generate (ImageNet's 0..999).
    #[arg(long)]
    class_label: Option<usize>,
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
}

pub fn run(engine: &Engine, a: Args) -> Result<()> {
    let spec = GenerateSpec {
        model: a.model.spec(a.clip_skip),
        prompt: a.prompt,
        negative_prompt: a.negative_prompt,
        steps: a.steps,
        guidance: a.guidance,
        greedy: a.greedy,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        scheduler: a.scheduler,
        seed: a.seed,
        width: a.width,
        height: a.height,
        latents: a.latents,
        class_label: a.class_label,
        frames: a.frames,
        decode_chunk: a.decode_chunk,
        frames_dir: a.frames_dir,
        fps: a.fps,
        kernels: a.kernels.spec(),
        force: a.force,
        no_preflight: a.no_preflight,
        output: a.output,
    };
    let bar = ProgressBar::new(spec.steps.unwrap_or(50) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} denoising {bar:30} {pos}/{len} {msg}")
            .expect("static template"),
    );
    let mut token_start: Option<std::time::Instant> = None;
    let r = engine.generate(&spec, &mut |e| match e {
        Event::Note(n) => eprintln!("note: {n}"),
        Event::Loaded(s) => eprintln!("{s}"),
        Event::TextEncoded(s) => bar.println(format!("text encoder: {s:.2}s")),
        Event::Step {
            index,
            total,
            seconds,
        } => {
            bar.set_length(*total as u64);
            bar.set_position(*index as u64 + 1);
            bar.set_message(format!("{seconds:.2}s/step"));
        }
        Event::Token { index, total, .. } => {
            let start = *token_start.get_or_insert_with(std::time::Instant::now);
            if *index == 0 {
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} image tokens {bar:30} {pos}/{len} {msg}",
                    )
                    .expect("static template"),
                );
                bar.set_length(*total as u64);
            }
            bar.set_position(*index as u64 + 1);
            // The first token includes the prompt's prefill: the rate counts decode steps.
            let secs = start.elapsed().as_secs_f64();
            if *index > 0 && secs > 0.0 {
                bar.set_message(format!("{:.1} tokens/s", *index as f64 / secs));
            }
        }
        Event::Decoded(s) => {
            bar.finish_and_clear();
            eprintln!("decode to pixels: {s:.2}s");
        }
        Event::Bench(_) | Event::Benched(_) | Event::SuiteUnit(_) => {}
    })?;
    if let Some(d) = &r.frames_dir {
        eprintln!("wrote {} frames to {}", r.frames, d.display());
    }
    if let Some(rss) = r.peak_rss_bytes {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        match r.predicted_peak_bytes {
            Some(p) => eprintln!("peak RSS {:.2} GiB (predicted {:.2} GiB)", gib(rss), gib(p)),
            None => eprintln!("peak RSS {:.2} GiB", gib(rss)),
        }
    }
    if r.media == "video" {
        eprintln!(
            "wrote {} ({} frames, {}x{}); total {:.1}s",
            r.output.display(),
            r.frames,
            r.width,
            r.height,
            r.total_seconds
        );
    } else if r.autoregressive {
        eprintln!(
            "wrote {} ({}x{}); {} image tokens at {:.1} tokens/s, total {:.1}s",
            r.output.display(),
            r.width,
            r.height,
            r.steps,
            r.steps as f64 / r.step_seconds.iter().sum::<f64>().max(1e-9),
            r.total_seconds
        );
    } else {
        eprintln!(
            "wrote {} ({}x{}); {:.2}s per step, total {:.1}s",
            r.output.display(),
            r.width,
            r.height,
            r.mean_step_seconds(),
            r.total_seconds
        );
    }
    Ok(())
}
