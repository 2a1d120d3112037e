//! `prism round-trip`: a clip through the MAGVIT-v2 tokenizer and back, with its PSNR.

use super::tokenize::{print_event, print_report};
use super::ModelArgs;
use anyhow::Result;
use prism::{Engine, RoundTripSpec};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The clip: an animated GIF, or a folder of PNG frames numbered in their names.
    #[arg(long)]
    input: PathBuf,
    /// Also keep the tokens in this safetensors file.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// GIF frame rate.
    #[arg(long, default_value_t = 8)]
    fps: u32,
    /// Overwrite output files that exist.
    #[arg(long)]
    force: bool,
    /// The reconstruction (animated GIF).
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(engine: &Engine, a: Args) -> Result<()> {
    let r = engine.round_trip(
        &RoundTripSpec {
            model: a.model.spec(0),
            input: a.input,
            output: a.output.clone(),
            tokens: a.tokens,
            fps: a.fps,
            force: a.force,
        },
        &mut print_event,
    )?;
    print_report(&r);
    eprintln!("wrote {}", a.output.display());
    Ok(())
}
