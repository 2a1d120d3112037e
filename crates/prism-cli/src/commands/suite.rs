//! `prism suite`: the paper's characterization over every family's presets, into a report.

use anyhow::Result;
use prism::{Engine, Event, SuiteSpec};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Small sizes and two measured steps per model (about 2 minutes on 2 cores); without it
    /// the full suite measures at native sizes (about 10 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Only these presets, comma-separated (default: all of the suite).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Rerun everything instead of reusing the results cached in OUT/cache/.
    #[arg(long)]
    fresh: bool,
    /// The report folder: index.html, suite.json, CSVs (created; its files are replaced).
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(engine: &Engine, a: Args) -> Result<()> {
    let spec = SuiteSpec {
        output: a.output.clone(),
        quick: a.quick,
        only: a.only,
        fresh: a.fresh,
    };
    let t0 = std::time::Instant::now();
    let r = engine.suite(&spec, &mut |e| match e {
        Event::SuiteUnit(what) => eprintln!("[{:>6.0} s] {what} ...", t0.elapsed().as_secs_f64()),
        Event::Note(n) => eprintln!("           {n}"),
        _ => {}
    })?;
    for f in &r.findings {
        eprintln!("{:<14} {:<12} {}", f.id, f.verdict, f.measured_cpu);
    }
    eprintln!(
        "wrote {} (index.html, suite.json, CSVs) in {:.0} s",
        a.output.display(),
        r.seconds
    );
    Ok(())
}
