//! `prism calibrate`: measure this CPU for `--hardware cpu`.

use anyhow::Result;
use prism::Engine;

pub fn run(engine: &Engine) -> Result<()> {
    let r = engine.calibrate()?;
    print!("{}", r.toml);
    if let Some(f) = &r.saved_to {
        eprintln!(
            "saved to {} (used by --hardware cpu at {} threads)",
            f.display(),
            r.threads
        );
    }
    Ok(())
}
