//! The `prism` command: parses arguments and calls the library crates. Nothing else.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use prism_models::forward::{forward, ForwardComponent};
use prism_models::image::{check_output_path, save_png};
use prism_models::io::{read_tensor, read_tensors, write_tensors};
use prism_models::pipeline::{
    check_image_size, GenerateRequest, LoadOptions, Progress, StableDiffusion,
};
use prism_models::schedulers::SCHEDULER_NAMES;
use prism_models::source::ModelSource;
use prism_runtime::Executor;
use std::path::PathBuf;
use std::time::Instant;

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
}

#[derive(Subcommand)]
enum Cmd {
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
    }
}

fn main() {
    let cli = Cli::parse();
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
            force,
            output,
        } => {
            check_output_path(&output, force)?;
            if steps == 0 {
                anyhow::bail!("--steps 0: at least one denoising step is needed");
            }
            let src = ModelSource::parse(&model.model)?;
            check_image_size(&src, width, height)?;
            let latents = latents
                .map(|p| {
                    read_tensor(&p, "latents").with_context(|| format!("--latents {}", p.display()))
                })
                .transpose()?;
            let t0 = Instant::now();
            let sd = StableDiffusion::load(&src, &load_opts(&model, clip_skip))?;
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
            let gen = sd.generate(&exec, &req, &mut |p| match p {
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
            })?;
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
                sd.label,
                if sd.random_weights { " (random weights)" } else { "" }
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
            let ins =
                read_tensors(&inputs).with_context(|| format!("--inputs {}", inputs.display()))?;
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
