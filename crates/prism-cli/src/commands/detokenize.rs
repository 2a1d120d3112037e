//! `prism detokenize`: MAGVIT-v2 token ids back to a clip (GIF, optionally PNG frames).

use super::tokenize::{print_event, print_report};
use super::ModelArgs;
use anyhow::Result;
use prism::{DetokenizeSpec, Engine};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Token file (safetensors with `ids`, as `prism tokenize` writes).
    #[arg(long)]
    input: PathBuf,
    /// Also write each frame as frame_0000.png, ... in this folder.
    #[arg(long)]
    frames_dir: Option<PathBuf>,
    /// GIF frame rate.
    #[arg(long, default_value_t = 8)]
    fps: u32,
    /// Overwrite output files that exist.
    #[arg(long)]
    force: bool,
    /// The clip (animated GIF).
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(engine: &Engine, a: Args) -> Result<()> {
    let r = engine.detokenize(
        &DetokenizeSpec {
            model: a.model.spec(0),
            input: a.input,
            output: a.output.clone(),
            frames_dir: a.frames_dir,
            fps: a.fps,
            force: a.force,
        },
        &mut print_event,
    )?;
    print_report(&r);
    eprintln!("wrote {}", a.output.display());
    Ok(())
}
