//! `forward` (one component on named inputs), `bench` (kernels and components timed) and
//! `calibrate` (this CPU measured for the roofline).

use crate::{context, Engine, Event, ModelSpec};
use prism_analyze::bench::{self, BenchResult, BENCHES};
use prism_analyze::hardware;
use prism_core::{Error, Result};
use prism_models::image::check_output_path;
use prism_models::io::{read_tensors_as_stored, write_tensors};
use prism_models::pipelines::forward::{forward, ForwardComponent};
use prism_models::source::ModelSource;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One component run on named inputs from a safetensors file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForwardSpec {
    pub model: ModelSpec,
    /// `unet`, `vae-encoder`, `vae-decoder` or `text-encoder`.
    pub component: String,
    pub inputs: PathBuf,
    #[serde(default)]
    pub force: bool,
    pub output: PathBuf,
}

/// The outputs `forward` wrote, by name with their shapes.
#[derive(Clone, Debug, Serialize)]
pub struct ForwardReport {
    pub output: PathBuf,
    pub outputs: Vec<(String, Vec<usize>)>,
}

fn default_runs() -> usize {
    5
}

/// Benchmarks to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchSpec {
    /// Names (default: all of [`BENCHES`]).
    #[serde(default)]
    pub only: Option<Vec<String>>,
    #[serde(default = "default_runs")]
    pub runs: usize,
    /// Wait for a line on stdin before each timed run (`tools/bench_compare.py`).
    #[serde(default)]
    pub paced: bool,
    /// Tiny sizes: a smoke test, not a measurement.
    #[serde(default)]
    pub quick: bool,
}

/// Results in the `prism.bench/1` schema `tools/bench_torch.py` also writes.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub threads: usize,
    pub quick: bool,
    pub results: Vec<BenchResult>,
}

impl BenchReport {
    /// The `prism.bench/1` JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "schema": "prism.bench/1",
            "system": "prism",
            "versions": {"prism": env!("CARGO_PKG_VERSION"), "simd": prism_kernels::simd::level().name()},
            "threads": self.threads,
            "dtype": "f32",
            "quick": self.quick,
            "peak_rss_bytes": prism_runtime::mem::peak_rss_bytes(),
            "results": self.results,
        })
    }
}

/// This CPU as `--hardware cpu` sees it, and where it was saved.
#[derive(Clone, Debug, Serialize)]
pub struct CalibrateReport {
    pub toml: String,
    pub saved_to: Option<PathBuf>,
    pub threads: usize,
}

impl Engine {
    /// Run one component on the named inputs of a safetensors file; write its outputs.
    pub fn forward(&self, spec: &ForwardSpec) -> Result<ForwardReport> {
        check_output_path(&spec.output, spec.force)?;
        if spec.output.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            return Err(prism_core::Error::invalid(format!(
                "-o {}: outputs are written as safetensors; name the file *.safetensors",
                spec.output.display()
            )));
        }
        let comp = ForwardComponent::parse(&spec.component)?;
        let src = ModelSource::parse(&spec.model.model)?;
        let ins = read_tensors_as_stored(&spec.inputs)
            .map_err(context(format!("--inputs {}", spec.inputs.display())))?;
        let outs = forward(
            &src,
            &spec.model.load_options(&self.exec)?,
            &self.exec,
            comp,
            ins,
        )?;
        write_tensors(&spec.output, &outs, spec.force)?;
        Ok(ForwardReport {
            output: spec.output.clone(),
            outputs: outs
                .iter()
                .map(|(n, t)| (n.clone(), t.shape().to_vec()))
                .collect(),
        })
    }

    /// Time benchmarks (median of `runs`), each reported through `events` as it starts.
    pub fn bench(&self, spec: &BenchSpec, events: &mut dyn FnMut(&Event)) -> Result<BenchReport> {
        let names: Vec<String> = match &spec.only {
            Some(o) => o.clone(),
            None => BENCHES.iter().map(|s| s.to_string()).collect(),
        };
        let mut results = Vec::new();
        for n in &names {
            events(&Event::Bench(n.clone()));
            let runs = bench::Runs {
                count: spec.runs,
                paced: spec.paced,
            };
            let r = bench::run(n, &self.exec, runs, spec.quick)?;
            events(&Event::Benched(r.clone()));
            results.push(r);
        }
        Ok(BenchReport {
            threads: self.exec.threads(),
            quick: spec.quick,
            results,
        })
    }

    /// Measure this CPU (a large matrix product and a memory copy) and save it where
    /// `--hardware cpu` looks (`~/.cache/prism/`, named by thread count).
    pub fn calibrate(&self) -> Result<CalibrateReport> {
        // The file is named by the pool's thread count, so ask inside the pool.
        let (hw, file) = self.exec.install(|| {
            (
                hardware::calibrate(2048, 1024, 5),
                hardware::calibration_file(),
            )
        });
        let toml = hw.to_toml();
        if let Some(f) = &file {
            if let Some(d) = f.parent() {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            }
            std::fs::write(f, &toml).map_err(|e| Error::io(f, e))?;
        }
        Ok(CalibrateReport {
            toml,
            saved_to: file,
            threads: self.exec.threads(),
        })
    }
}
