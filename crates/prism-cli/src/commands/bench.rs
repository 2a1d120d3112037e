//! `prism bench`: kernels against their references and whole components, timed.

use anyhow::Result;
use prism::{BenchSpec, Engine, Event};
use prism_analyze::render;

#[derive(clap::Args)]
pub struct Args {
    /// Benchmarks to run, comma-separated (default: all).
    #[arg(long)]
    only: Option<String>,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print JSON (schema prism.bench/1, as tools/bench_torch.py writes).
    #[arg(long)]
    json: bool,
    /// Before each timed run, print `#pace ready` on stdout and wait for a line on stdin
    /// (tools/bench_compare.py alternates prism's runs with PyTorch's this way).
    #[arg(long)]
    paced: bool,
    /// Tiny sizes (those of tools/bench_torch.py --quick): a smoke test, not a measurement.
    #[arg(long)]
    quick: bool,
}

pub fn run(engine: &Engine, a: Args) -> Result<()> {
    let spec = BenchSpec {
        only: a
            .only
            .map(|o| o.split(',').map(|s| s.trim().to_string()).collect()),
        runs: a.runs,
        paced: a.paced,
        quick: a.quick,
    };
    let report = engine.bench(&spec, &mut |e| match e {
        Event::Bench(n) => eprintln!("bench {n} ..."),
        Event::Benched(r) => eprintln!(
            "  median {:.4}s [{:.4}-{:.4}]{}",
            r.median_s,
            r.min_s,
            r.max_s,
            r.rel_error
                .map_or(String::new(), |e| format!(", rel. error {e:.2e}"))
        ),
        _ => {}
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        let mut t = render::Table::new(&[
            "benchmark",
            "median",
            "min",
            "max",
            "GFLOP/s",
            "rel. error",
            "note",
        ]);
        for r in &report.results {
            t.row(vec![
                r.name.clone(),
                render::secs(r.median_s),
                render::secs(r.min_s),
                render::secs(r.max_s),
                r.flops.map_or(String::new(), |f| {
                    format!("{:.1}", f as f64 / r.median_s / 1e9)
                }),
                r.rel_error.map_or(String::new(), |e| format!("{e:.2e}")),
                r.note.clone().unwrap_or_default(),
            ]);
        }
        print!("{}", t.render(""));
    }
    Ok(())
}
