//! The `prism` command: parses arguments (one file per command in `commands/`) and calls the
//! `prism` library's [`prism::Engine`]. Nothing else.

mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand};
use commands::{
    analyze, bench, calibrate, detokenize, forward, generate, profile, round_trip, suite, tokenize,
};

/// Large blocks start on cache lines (see `prism_kernels::alloc`).
#[global_allocator]
static ALLOC: prism_kernels::alloc::LineAligned = prism_kernels::alloc::LineAligned;

#[derive(Parser)]
#[command(
    name = "prism",
    version,
    about = "Run text-to-image and text-to-video models on the CPU and see where their time goes"
)]
struct Cli {
    /// Worker threads (0 = every core).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// FLOPs, bytes, memory, attention sequence lengths and roofline time, from configs alone.
    Analyze(analyze::Args),
    /// Run a generation and time every node: per category, per operator, per stage.
    Profile(profile::Args),
    /// Measure this CPU (matrix product and memory copy) for `--hardware cpu`.
    Calibrate,
    /// Time kernels against their references and whole components (median of several runs).
    Bench(bench::Args),
    /// Text to image (a PNG carrying the generation parameters) or video (an animated GIF).
    Generate(generate::Args),
    /// Run one component on named inputs from a safetensors file; write its outputs.
    Forward(forward::Args),
    /// A clip (GIF or PNG frames folder) to MAGVIT-v2 video tokens (a safetensors file).
    Tokenize(tokenize::Args),
    /// MAGVIT-v2 video tokens back to a clip (GIF, optionally PNG frames).
    Detokenize(detokenize::Args),
    /// A clip through the video tokenizer and back: the reconstruction and its PSNR.
    RoundTrip(round_trip::Args),
    /// Golden et al.'s characterization over every family's presets: a report folder
    /// (index.html with charts, suite.json, CSVs) and the paper's findings checked.
    Suite(suite::Args),
}

fn main() {
    let cli = Cli::parse();
    // Process-wide allocator tuning belongs to the program, not the library.
    prism_runtime::limit_heap_retention();
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
    // More threads than cores only slows a run down (and thousands exhaust thread stacks).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = if cli.threads > cores {
        eprintln!(
            "note: --threads {} is more than the {cores} cores here; using {cores}",
            cli.threads
        );
        cores
    } else {
        cli.threads
    };
    let engine = prism::Engine::new(threads)?;
    match cli.cmd {
        Cmd::Analyze(a) => analyze::run(&engine, a),
        Cmd::Profile(a) => profile::run(&engine, a),
        Cmd::Calibrate => calibrate::run(&engine),
        Cmd::Bench(a) => bench::run(&engine, a),
        Cmd::Generate(a) => generate::run(&engine, a),
        Cmd::Forward(a) => forward::run(&engine, a),
        Cmd::Tokenize(a) => tokenize::run(&engine, a),
        Cmd::Detokenize(a) => detokenize::run(&engine, a),
        Cmd::RoundTrip(a) => round_trip::run(&engine, a),
        Cmd::Suite(a) => suite::run(&engine, a),
    }
}
