//! `prism forward`: one component on named inputs, outputs to a safetensors file.

use super::ModelArgs;
use anyhow::Result;
use prism::{Engine, ForwardSpec};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The component, by model family: unet | vae-encoder | vae-decoder | text-encoder
    /// (Stable Diffusion, t2v); transformer | text-encoder | vae-decoder | vae-encoder (PixArt,
    /// DiT); transformer | vqvae-decoder | vqvae-encoder | text-encoder (aMUSEd); image-logits |
    /// vq-decoder (Janus-Pro); tokenizer-encoder | tokenizer-decoder (MAGVIT-v2 tokenizers).
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
}

pub fn run(engine: &Engine, a: Args) -> Result<()> {
    let r = engine.forward(&ForwardSpec {
        model: a.model.spec(a.clip_skip),
        component: a.component,
        inputs: a.inputs,
        force: a.force,
        output: a.output,
    })?;
    for (n, s) in &r.outputs {
        eprintln!("{n}: {s:?}");
    }
    eprintln!("wrote {}", r.output.display());
    Ok(())
}
