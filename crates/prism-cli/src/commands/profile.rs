//! `prism profile`: a generation with every node timed, per category, operator and stage.

use super::StudyArgs;
use anyhow::Result;
use prism::{Engine, Event, ProfileSpec};
use prism_analyze::render;
use prism_runtime::WeightDType;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run even when the predicted peak memory exceeds what is available.
    #[arg(long)]
    no_preflight: bool,
    #[command(flatten)]
    study: StudyArgs,
    /// Denoising steps (diffusion models; default 1).
    #[arg(long)]
    steps: Option<usize>,
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
    /// Keep weight matrices in 16 or 8 bits (f32 math).
    #[arg(long, default_value = "f32", value_parser = clap::builder::PossibleValuesParser::new(WeightDType::NAMES))]
    weights_dtype: String,
}

pub fn run(engine: &Engine, a: Args) -> Result<()> {
    let spec = ProfileSpec {
        study: a.study.spec(a.steps),
        trace: a.trace.clone(),
        top: a.top,
        variant: a.variant,
        seed: a.seed,
        weights_dtype: Some(a.weights_dtype),
        no_preflight: a.no_preflight,
    };
    let report = engine.profile(&spec, &mut |e| match e {
        Event::Note(n) => eprintln!("note: {n}"),
        Event::Step {
            index,
            total,
            seconds,
        } => eprintln!("step {}/{}: {:.2}s", index + 1, total, seconds),
        Event::Token { index, total, .. } if (index + 1) % 64 == 0 || index + 1 == *total => {
            eprintln!("token {}/{}", index + 1, total)
        }
        _ => {}
    })?;
    if a.study.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render::profile(&report));
    }
    if let Some(t) = &a.trace {
        eprintln!(
            "wrote trace {} (open in https://ui.perfetto.dev or chrome://tracing)",
            t.display()
        );
    }
    Ok(())
}
