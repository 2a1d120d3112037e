//! `prism analyze`: FLOPs, bytes, memory, sequence lengths and roofline time from configs.

use super::StudyArgs;
use anyhow::Result;
use prism::Engine;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    study: StudyArgs,
    /// Denoising steps (diffusion models; default 50).
    #[arg(long)]
    steps: Option<usize>,
}

pub fn run(engine: &Engine, a: Args) -> Result<()> {
    let out = engine.analyze(&a.study.spec(a.steps))?;
    if a.study.json {
        println!("{}", out.to_json_string());
    } else {
        print!("{}", out.render(a.study.layers));
    }
    Ok(())
}
