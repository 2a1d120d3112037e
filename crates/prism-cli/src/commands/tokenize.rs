//! `prism tokenize`: a clip (GIF or folder of numbered PNG frames) to MAGVIT-v2 token ids.

use super::ModelArgs;
use anyhow::Result;
use prism::{Engine, Event, TokenReport, TokenizeSpec};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The clip: an animated GIF, or a folder of PNG frames numbered in their names.
    #[arg(long)]
    input: PathBuf,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    force: bool,
    /// Token file (safetensors; tensor `ids`, (T', H', W') int64).
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(engine: &Engine, a: Args) -> Result<()> {
    let r = engine.tokenize(
        &TokenizeSpec {
            model: a.model.spec(0),
            input: a.input,
            output: a.output.clone(),
            force: a.force,
        },
        &mut print_event,
    )?;
    print_report(&r);
    eprintln!("wrote {}", a.output.display());
    Ok(())
}

pub fn print_event(e: &Event) {
    if let Event::Note(n) = e {
        eprintln!("note: {n}");
    }
}

pub fn print_report(r: &TokenReport) {
    let [t, h, w] = r.grid;
    eprintln!(
        "{} frames {}x{} <-> {t}x{h}x{w} tokens ({} codebook(s) of 2^{} codes, {} distinct ids)",
        r.frames, r.width, r.height, r.codebooks, r.codebook_bits, r.distinct_ids
    );
    if let Some(s) = r.encode_seconds {
        eprintln!("encoded in {s:.2} s");
    }
    if let Some(s) = r.decode_seconds {
        eprintln!("decoded in {s:.2} s");
    }
    if let Some(p) = r.psnr_db {
        eprintln!("reconstruction PSNR {p:.2} dB");
    }
}
