//! `prism suite`: Golden et al.'s characterization as one run — every family's presets analyzed
//! (no weights) on this CPU, an A100 and an H100; profiled with flash and with naive attention;
//! swept over image size, frames and decode length; the UNet's memory traced node by node;
//! the paper's findings computed from those numbers — into a report directory
//! (`index.html`, `suite.json`, CSVs; see `report.rs`).
//!
//! Every unit of work is cached as JSON under `OUT/cache/` keyed by what it ran, so an
//! interrupted suite resumes where it stopped.

use crate::{AnalyzeOutput, Engine, Event, ProfileSpec, StudySpec};
use prism_analyze::{hardware, Report};
use prism_core::{Error, Result};
use prism_models::pipelines::{self, StudyShape};
use prism_models::source::ModelSource;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuiteSpec {
    /// The report directory (created; its files are replaced, its cache reused).
    pub output: PathBuf,
    /// Small sizes, two measured steps: minutes on 2 cores.
    #[serde(default)]
    pub quick: bool,
    /// Only these presets.
    #[serde(default)]
    pub only: Option<Vec<String>>,
    /// Ignore cached results (rerun everything).
    #[serde(default)]
    pub fresh: bool,
}

/// The paper's two families (and the baseline), with a finer model kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    /// Diffusion: a UNet or a transformer denoiser run over many steps (≈ LLM prefill).
    Diffusion,
    /// Transformer TTI/TTV: masked or autoregressive token models (≈ LLM decode).
    Transformer,
    /// The LLM the paper compares with.
    Llm,
}

/// One preset of the suite and how it is measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuiteModel {
    pub name: String,
    pub family: Family,
    /// "UNet TTI", "DiT TTI", "masked TTI", "autoregressive TTI", "UNet TTV", "token TTV", "LLM".
    pub kind: String,
    pub video: bool,
    /// The stage run once per step / token: what the flash speedup is measured on.
    pub step_stage: String,
    /// Measured at (width, frames) — quick and full.
    pub quick: Option<(usize, Option<usize>)>,
    pub full: Option<(usize, Option<usize>)>,
}

fn model(
    name: &str,
    family: Family,
    kind: &str,
    step_stage: &str,
    quick: Option<(usize, Option<usize>)>,
    full: Option<(usize, Option<usize>)>,
) -> SuiteModel {
    SuiteModel {
        name: name.into(),
        family,
        kind: kind.into(),
        video: kind.ends_with("TTV"),
        step_stage: step_stage.into(),
        quick,
        full,
    }
}

/// The suite: every family prism runs (Golden et al.'s eight TTI/TTV models are SD, Imagen,
/// Muse, Parti and video models of both families; these are the open ones of each kind).
pub fn models() -> Vec<SuiteModel> {
    use Family::*;
    vec![
        model(
            "sd15",
            Diffusion,
            "UNet TTI",
            "unet",
            Some((256, None)),
            Some((512, None)),
        ),
        model(
            "sd21",
            Diffusion,
            "UNet TTI",
            "unet",
            Some((256, None)),
            Some((768, None)),
        ),
        model(
            "pixart-alpha-512",
            Diffusion,
            "DiT TTI",
            "transformer",
            None,
            Some((512, None)),
        ),
        model(
            "dit-xl-2-256",
            Diffusion,
            "DiT TTI",
            "transformer",
            Some((256, None)),
            Some((256, None)),
        ),
        model(
            "t2v",
            Diffusion,
            "UNet TTV",
            "unet",
            Some((128, Some(8))),
            Some((256, Some(16))),
        ),
        model(
            "amused-256",
            Transformer,
            "masked TTI",
            "transformer",
            Some((256, None)),
            Some((256, None)),
        ),
        model(
            "amused-512",
            Transformer,
            "masked TTI",
            "transformer",
            None,
            Some((512, None)),
        ),
        model(
            "janus-pro-1b",
            Transformer,
            "autoregressive TTI",
            "decode",
            None,
            Some((384, None)),
        ),
        model(
            "magvit-t2v",
            Transformer,
            "token TTV",
            "transformer",
            Some((64, Some(9))),
            Some((128, Some(17))),
        ),
        model(
            "llama-1b",
            Llm,
            "LLM",
            "decode",
            Some((0, None)),
            Some((0, None)),
        ),
        model("llama2-7b", Llm, "LLM", "decode", None, None),
    ]
}

/// Category shares and sizes of one analysis on one hardware.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Analysis {
    /// `cpu`, `a100` or `h100`.
    pub key: String,
    /// The hardware's name ("this CPU (2 threads)", "NVIDIA A100 ...").
    pub hardware: String,
    pub flops: u64,
    pub bytes: u64,
    pub params: u64,
    pub peak_memory_bytes: u64,
    pub predicted_s: f64,
    /// (category, FLOPs, predicted seconds) over the whole generation.
    pub categories: Vec<(String, u64, f64)>,
    /// Per stage: name, runs, FLOPs per run, bytes per run, predicted seconds per run, and the
    /// classes (attention by kind) of one run: (class, FLOPs, predicted seconds).
    pub stages: Vec<StageSummary>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageSummary {
    pub name: String,
    pub runs: usize,
    pub flops: u64,
    pub bytes: u64,
    pub predicted_s: f64,
    pub classes: Vec<(String, u64, f64)>,
    /// Attention sequence lengths: (kind, query length, key length, nodes, FLOPs per run).
    pub attention: Vec<(String, usize, usize, usize, u64)>,
    /// Score-matrix elements (B·H·Lq·Lk) of each attention node of one run.
    pub attention_scores: Vec<u64>,
    /// The buffer plan's peak of one run: activations + pooled buffers + kernel scratch.
    pub peak_activation_bytes: u64,
    /// Live activations alone at their peak.
    pub peak_live_bytes: u64,
}

fn summarize(key: &str, r: &Report) -> Analysis {
    Analysis {
        key: key.into(),
        hardware: r.hardware.name.clone(),
        flops: r.total.flops,
        bytes: r.total.bytes,
        params: r.params,
        peak_memory_bytes: r.peak_memory_bytes,
        predicted_s: r.total.predicted_s,
        categories: r
            .total_categories
            .iter()
            .map(|c| (c.category.clone(), c.costs.flops, c.costs.predicted_s))
            .collect(),
        stages: r
            .stages
            .iter()
            .map(|s| StageSummary {
                name: s.name.clone(),
                runs: s.runs,
                flops: s.per_run.flops,
                bytes: s.per_run.bytes,
                predicted_s: s.per_run.predicted_s,
                classes: s
                    .classes
                    .iter()
                    .map(|c| (c.category.clone(), c.costs.flops, c.costs.predicted_s))
                    .collect(),
                attention: s
                    .attention_buckets
                    .iter()
                    .map(|b| (b.kind.clone(), b.query_len, b.key_len, b.count, b.flops))
                    .collect(),
                attention_scores: s
                    .attention
                    .iter()
                    .map(|a| (a.batch * a.heads * a.query_len * a.key_len) as u64)
                    .collect(),
                peak_activation_bytes: s.memory.peak_activation_bytes,
                peak_live_bytes: s.memory.peak_live_bytes,
            })
            .collect(),
    }
}

/// A profiled stage: name, runs, seconds over all runs, and (class, seconds) of its nodes.
pub type MeasuredStage = (String, usize, f64, Vec<(String, f64)>);

/// One measured generation (profile), reduced to what the report uses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measured {
    pub attention: String,
    pub settings: serde_json::Value,
    pub wall_s: f64,
    /// Per stage: name, runs, seconds (all runs), classes (class, seconds).
    pub stages: Vec<MeasuredStage>,
    pub peak_rss_bytes: Option<u64>,
    pub command: String,
}

/// Everything about one model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelResult {
    pub model: SuiteModel,
    /// At the native size (default steps / frames / lengths): cpu, a100, h100.
    pub analysis: Vec<Analysis>,
    pub analyze_command: String,
    /// With flash attention and with naive attention (absent when not measured).
    pub flash: Option<Measured>,
    pub naive: Option<Measured>,
    /// The buffer plan's live activation bytes through one run of the step stage at the native
    /// size, node by node, reduced to at most 400 points: (fraction of the pass, bytes).
    #[serde(default)]
    pub memory_profile: Vec<(f64, u64)>,
}

/// One point of a sweep: the swept value and the CPU / A100 analyses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepPoint {
    pub model: String,
    pub value: usize,
    pub cpu: Analysis,
    pub a100: Analysis,
}

/// The UNet's memory and FLOPs node by node through one forward pass.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemoryTrace {
    pub model: String,
    pub size: usize,
    /// (node path, class, FLOPs, predicted and measured live activation bytes right after it
    /// ran, its inputs not yet released).
    pub nodes: Vec<(String, String, u64, u64, u64)>,
    /// The buffer plan's peak: live activations + pooled buffers + kernel scratch.
    pub predicted_peak_bytes: u64,
    /// The buffer plan's largest set of live activations alone.
    pub predicted_peak_live_bytes: u64,
    pub measured_peak_live_bytes: u64,
    pub rss_growth_bytes: Option<u64>,
}

/// The suite's results (`suite.json`, schema `prism.suite/1`; docs/suite-json.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuiteResults {
    pub schema: String,
    pub quick: bool,
    pub threads: usize,
    pub cpu: String,
    pub simd: String,
    pub hardware: Vec<(String, f64, f64)>,
    pub models: Vec<ModelResult>,
    pub size_sweep: Vec<SweepPoint>,
    pub frame_sweep: Vec<SweepPoint>,
    pub decode_sweep: Vec<SweepPoint>,
    pub memory_trace: Option<MemoryTrace>,
    pub findings: Vec<crate::findings::Finding>,
    /// Profiles that could not run here, with why.
    pub skipped: Vec<String>,
    /// This invocation's wall time.
    pub seconds: f64,
    /// The time every unit took when it ran (cached ones included): the suite from scratch.
    pub compute_seconds: f64,
    /// The part of `compute_seconds` taken from the cache.
    pub cached_seconds: f64,
}

/// The suite's cache: one JSON file per unit of work, with the seconds it took.
struct Cache {
    dir: PathBuf,
    fresh: bool,
    /// Seconds of every unit, cached or run now, and of the cached ones alone.
    seconds: std::cell::Cell<f64>,
    cached_seconds: std::cell::Cell<f64>,
    threads: usize,
}

#[derive(Serialize, Deserialize)]
struct Cached<T> {
    /// `CACHE_VERSION` and the thread count of the run that made it: another version or
    /// thread count reruns the unit.
    #[serde(default)]
    version: String,
    #[serde(default)]
    threads: usize,
    seconds: f64,
    value: T,
}

/// Bumped whenever what a unit of work computes or stores changes.
const CACHE_VERSION: &str = concat!("prism.suite/1 ", env!("CARGO_PKG_VERSION"), " u2");

impl Cache {
    fn get_or<T: Serialize + for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        events: &mut dyn FnMut(&Event),
        f: impl FnOnce(&mut dyn FnMut(&Event)) -> Result<T>,
    ) -> Result<T> {
        let path = self.dir.join(format!("{key}.json"));
        if !self.fresh {
            if let Ok(text) = std::fs::read_to_string(&path) {
                match serde_json::from_str::<Cached<T>>(&text) {
                    Ok(c) if c.version == CACHE_VERSION && c.threads == self.threads => {
                        events(&Event::Note(format!(
                            "{key}: cached ({:.1} s when run)",
                            c.seconds
                        )));
                        self.seconds.set(self.seconds.get() + c.seconds);
                        self.cached_seconds
                            .set(self.cached_seconds.get() + c.seconds);
                        return Ok(c.value);
                    }
                    _ => events(&Event::Note(format!(
                        "{key}: cached by another prism version or thread count; rerunning"
                    ))),
                }
            }
        }
        let t0 = Instant::now();
        events(&Event::SuiteUnit(key.to_string()));
        let value = f(events)?;
        let seconds = t0.elapsed().as_secs_f64();
        let c = Cached {
            version: CACHE_VERSION.into(),
            threads: self.threads,
            seconds,
            value,
        };
        let text = serde_json::to_string(&c).map_err(|e| Error::invalid(format!("{key}: {e}")))?;
        crate::write_text_file(&path, &text, true)?;
        self.seconds.set(self.seconds.get() + seconds);
        events(&Event::Note(format!("{key}: {seconds:.1} s")));
        Ok(c.value)
    }
}

fn study(model: &str, hw: &str, extra: serde_json::Value) -> Result<StudySpec> {
    let mut v = json!({"model": model, "hardware": hw});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    serde_json::from_value(v).map_err(|e| Error::invalid(format!("suite study spec: {e}")))
}

fn one_report(out: AnalyzeOutput) -> Report {
    match out {
        AnalyzeOutput::One(r) => *r,
        AnalyzeOutput::Sweep(mut runs) => runs.remove(0).1,
    }
}

/// The flags `prism analyze` / `prism profile` take for `extra` (for the report's provenance).
fn flags(extra: &serde_json::Value) -> String {
    let mut s = String::new();
    if let Some(o) = extra.as_object() {
        for (k, v) in o {
            let flag = k.replace('_', "-");
            match v {
                serde_json::Value::Object(kv) => {
                    for (k2, v2) in kv {
                        s += &format!(" --{} {}", k2.replace('_', "-"), v2.as_str().unwrap_or(""));
                    }
                }
                serde_json::Value::String(x) => s += &format!(" --{flag} {x}"),
                x => s += &format!(" --{flag} {x}"),
            }
        }
    }
    s
}

impl Engine {
    fn suite_analysis(
        &self,
        model: &str,
        (key, hw): (&str, &str),
        extra: &serde_json::Value,
    ) -> Result<Analysis> {
        let spec = study(model, hw, extra.clone())?;
        Ok(summarize(key, &one_report(self.analyze(&spec)?)))
    }

    fn suite_profile(
        &self,
        model: &str,
        (attention, hw): (&str, &str),
        extra: &serde_json::Value,
    ) -> Result<Measured> {
        let mut e = extra.clone();
        e["kernels"] = json!({"attention": attention});
        let spec = ProfileSpec {
            study: study(model, hw, e.clone())?,
            trace: None,
            top: 0,
            variant: None,
            seed: 0,
            weights_dtype: None,
            no_preflight: false,
        };
        let r = self.profile(&spec, &mut |_| {})?;
        Ok(Measured {
            attention: attention.into(),
            settings: serde_json::to_value(&r.settings).unwrap_or_default(),
            wall_s: r.wall_s,
            stages: r
                .stages
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        s.runs,
                        s.nodes_s,
                        s.classes
                            .iter()
                            .map(|c| (c.category.clone(), c.time_s))
                            .collect(),
                    )
                })
                .collect(),
            peak_rss_bytes: r.peak_rss_bytes,
            command: format!("prism profile {model}{}", flags(&e)),
        })
    }

    /// Run the suite; write `index.html`, `suite.json` and the CSVs into `spec.output`.
    pub fn suite(&self, spec: &SuiteSpec, events: &mut dyn FnMut(&Event)) -> Result<SuiteResults> {
        let t0 = Instant::now();
        let out = &spec.output;
        check_output_dir(out)?;
        let all = models();
        if let Some(only) = &spec.only {
            for o in only {
                if !all.iter().any(|m| &m.name == o) {
                    return Err(Error::invalid(format!(
                        "--only {o}: not a suite model ({})",
                        all.iter()
                            .map(|m| m.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
        let cache_dir = out
            .join("cache")
            .join(if spec.quick { "quick" } else { "full" });
        std::fs::create_dir_all(&cache_dir).map_err(|e| Error::io(&cache_dir, e))?;
        let cache = Cache {
            dir: cache_dir,
            fresh: spec.fresh,
            seconds: std::cell::Cell::new(0.0),
            cached_seconds: std::cell::Cell::new(0.0),
            threads: self.threads(),
        };
        let chosen: Vec<SuiteModel> = all
            .into_iter()
            .filter(|m| spec.only.as_ref().is_none_or(|o| o.contains(&m.name)))
            .collect();
        // This CPU's roofline, fixed for the whole run (and its cache): `prism calibrate`'s
        // figures if cached, else one calibration now, written beside the report.
        let cpu_toml = cache.dir.join("cpu.toml");
        if spec.fresh || !cpu_toml.is_file() {
            let hw = self.exec.install(|| hardware::resolve("cpu"))?;
            crate::write_text_file(&cpu_toml, &hw.to_toml(), true)?;
        }
        let cpu_spec = cpu_toml.display().to_string();
        let hw_specs = [
            ("cpu", cpu_spec.as_str()),
            ("a100", "a100"),
            ("h100", "h100"),
        ];
        let hws: Vec<(String, f64, f64)> = hw_specs
            .iter()
            .map(|(name, spec)| {
                let hw = self.exec.install(|| hardware::resolve(spec))?;
                Ok((name.to_string(), hw.peak_flops_f32, hw.mem_bandwidth))
            })
            .collect::<Result<_>>()?;
        let mut results = Vec::new();
        let mut skipped = Vec::new();
        for m in &chosen {
            let name = &m.name;
            let native = json!({});
            let analysis = hw_specs
                .iter()
                .map(|(hw, spec)| {
                    cache.get_or(&format!("analyze-{name}-{hw}"), events, |_| {
                        self.suite_analysis(name, (hw, spec), &native)
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let at = if spec.quick { &m.quick } else { &m.full };
            let (flash, naive) = match at {
                None => (None, None),
                Some((w, frames)) => {
                    // two steps: the first of a fresh pipeline pays page faults and packing
                    let mut e = json!({"steps": 2});
                    if *w > 0 {
                        e["width"] = json!(w);
                        e["height"] = json!(w);
                    }
                    if let Some(f) = frames {
                        e["frames"] = json!(f.to_string());
                    }
                    if m.family == Family::Llm {
                        e = json!({"prompt_tokens": if spec.quick { 128 } else { 512 }, "new_tokens": if spec.quick { 16 } else { 64 }});
                    }
                    if m.kind == "autoregressive TTI" {
                        // a token model: no denoising steps; the image size sets its tokens
                        e.as_object_mut().map(|o| o.remove("steps"));
                    }
                    // A profile that cannot run here (refused by the memory preflight, say) is
                    // reported and the suite goes on without that measurement.
                    let mut measure = |attention: &str| {
                        let key = format!("profile-{name}-{attention}");
                        let run = cache.get_or(&key, events, |_| {
                            self.suite_profile(name, (attention, &cpu_spec), &e)
                        });
                        match run {
                            Ok(m) => Some(m),
                            Err(err) => {
                                events(&Event::Note(format!(
                                    "profile {name} --attention {attention}: {err}; not measured"
                                )));
                                skipped.push(format!("{name} ({attention}): {err}"));
                                None
                            }
                        }
                    };
                    let f = measure("flash");
                    let n = measure("naive");
                    (f, n)
                }
            };
            let memory_profile = cache
                .get_or(&format!("memory-profile-{name}"), events, |_| {
                    self.predicted_memory(name, &m.step_stage)
                })
                .unwrap_or_default();
            results.push(ModelResult {
                memory_profile,
                model: m.clone(),
                analysis,
                analyze_command: format!("prism analyze {name} --hardware {cpu_spec} --json"),
                flash,
                naive,
            });
        }
        // Sweeps (analysis only: FLOPs, bytes, memory and roofline time).
        let mut size_sweep = Vec::new();
        for (name, sizes) in [
            ("sd15", vec![256, 512, 768, 1024]),
            ("pixart-alpha-512", vec![256, 512, 768, 1024]),
            ("amused-256", vec![256, 512, 1024]),
        ] {
            if !chosen.iter().any(|m| m.name == name) {
                continue;
            }
            for s in sizes {
                let e = json!({"width": s, "height": s});
                let p = cache.get_or(&format!("size-{name}-{s}"), events, |_| {
                    Ok(SweepPoint {
                        model: name.into(),
                        value: s,
                        cpu: self.suite_analysis(name, ("cpu", &cpu_spec), &e)?,
                        a100: self.suite_analysis(name, ("a100", "a100"), &e)?,
                    })
                })?;
                size_sweep.push(p);
            }
        }
        let mut frame_sweep = Vec::new();
        for (name, frames) in [
            ("t2v", vec![8, 16, 32, 64]),
            ("magvit-t2v", vec![9, 17, 33, 65]),
        ] {
            if !chosen.iter().any(|m| m.name == name) {
                continue;
            }
            for f in frames {
                let e = json!({"frames": f.to_string()});
                let p = cache.get_or(&format!("frames-{name}-{f}"), events, |_| {
                    Ok(SweepPoint {
                        model: name.into(),
                        value: f,
                        cpu: self.suite_analysis(name, ("cpu", &cpu_spec), &e)?,
                        a100: self.suite_analysis(name, ("a100", "a100"), &e)?,
                    })
                })?;
                frame_sweep.push(p);
            }
        }
        let mut decode_sweep = Vec::new();
        for (name, lens) in [
            ("llama-1b", vec![32, 128, 512, 1024]),
            ("llama2-7b", vec![32, 128, 512, 1024]),
        ] {
            if !chosen.iter().any(|m| m.name == name) {
                continue;
            }
            for n in lens {
                let e = json!({"new_tokens": n});
                let p = cache.get_or(&format!("decode-{name}-{n}"), events, |_| {
                    Ok(SweepPoint {
                        model: name.into(),
                        value: n,
                        cpu: self.suite_analysis(name, ("cpu", &cpu_spec), &e)?,
                        a100: self.suite_analysis(name, ("a100", "a100"), &e)?,
                    })
                })?;
                decode_sweep.push(p);
            }
        }
        let memory_trace = if chosen.iter().any(|m| m.name == "sd15") {
            let size = if spec.quick { 256 } else { 512 };
            Some(cache.get_or(&format!("memory-sd15-{size}"), events, |_| {
                self.memory_trace("sd15", size)
            })?)
        } else {
            None
        };
        let cpu = cpu_name();
        let mut r = SuiteResults {
            schema: "prism.suite/1".into(),
            quick: spec.quick,
            threads: self.threads(),
            cpu,
            simd: format!("{:?}", prism_kernels::simd::level()),
            hardware: hws,
            models: results,
            size_sweep,
            frame_sweep,
            decode_sweep,
            memory_trace,
            findings: Vec::new(),
            skipped,
            seconds: 0.0,
            compute_seconds: 0.0,
            cached_seconds: 0.0,
        };
        r.findings = crate::findings::findings(&r);
        r.seconds = t0.elapsed().as_secs_f64();
        r.compute_seconds = cache.seconds.get();
        r.cached_seconds = cache.cached_seconds.get();
        crate::report::write(out, &r)?;
        Ok(r)
    }

    /// The buffer plan's live bytes after each node of one run of `model`'s `stage` at its
    /// native size and default generation (configs only), at most 400 points, each the largest
    /// of its span of nodes.
    fn predicted_memory(&self, model: &str, stage: &str) -> Result<Vec<(f64, u64)>> {
        let r = study(model, "a100", json!({}))?.resolve(None)?;
        let shape = StudyShape {
            frames: r.frames.as_ref().and_then(|f| f.first().copied()),
            ..r.shape.clone()
        };
        let graphs = (r.entry.stage_graphs)(&r.src, &shape)?;
        let g = graphs
            .into_iter()
            .find(|g| g.name == stage)
            .ok_or_else(|| Error::invalid(format!("{model}: no {stage} stage")))?;
        let prepared = self.exec.kernels.prepare(&g.graph);
        let live = prism_runtime::plan(&prepared, self.threads(), &self.exec.kernels).live_after;
        let n = live.len().max(1);
        let span = n.div_ceil(400);
        Ok(live
            .chunks(span)
            .enumerate()
            .map(|(i, c)| {
                let x = (i * span) as f64 / n as f64;
                (x, c.iter().copied().max().unwrap_or(0) as u64)
            })
            .collect())
    }

    /// The UNet of `model` at `size`: one forward pass on random weights, each node's FLOPs,
    /// the buffer plan's live bytes after it and the executor's measured live bytes.
    fn memory_trace(&self, model: &str, size: usize) -> Result<MemoryTrace> {
        let src = ModelSource::parse(model)?;
        let entry = pipelines::entry_for(&src)?;
        let shape = StudyShape {
            width: size,
            height: size,
            batch: 1,
            steps: 1,
            guidance: 7.5,
            clip_skip: 0,
            scheduler: None,
            frames: None,
            decode_chunk: 1,
            prompt_tokens: None,
            new_tokens: None,
        };
        let graphs = (entry.stage_graphs)(&src, &shape)?;
        let sg = graphs
            .into_iter()
            .find(|g| g.name == "unet")
            .ok_or_else(|| Error::invalid(format!("{model} has no UNet stage")))?;
        let g = sg.graph;
        let weights = prism_models::random::random_weights(&g, 0, prism_runtime::WeightDType::F32)?;
        let inputs: Vec<(String, prism_core::Tensor)> = g
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                prism_core::Op::Input { name } => {
                    let s = &g.values[n.output].shape;
                    let numel: usize = s.iter().product();
                    let data = (0..numel)
                        .map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5)
                        .collect();
                    Some((name.clone(), prism_core::Tensor::new(s.clone(), data).ok()?))
                }
                _ => None,
            })
            .collect();
        let plan = self.exec.prepare(&g)?;
        let mp = prism_runtime::plan(&plan.graph, self.threads(), &self.exec.kernels);
        prism_runtime::observe::mem::reset_peak();
        let rss0 = prism_runtime::observe::mem::rss_bytes();
        let mut obs = NodeRecorder::default();
        self.exec.run_stage_plan(
            &mut obs,
            "unet",
            0,
            &plan,
            &weights,
            &mut prism_runtime::State::new(),
            inputs,
        )?;
        let rss1 = prism_runtime::observe::mem::peak_rss_bytes();
        let pg = &plan.graph;
        // The executor reports live bytes right after a node ran, before its inputs are
        // released: the plan's live bytes after the node before, plus this node's output.
        let out_bytes = |i: usize| -> usize {
            let n = &pg.nodes[i];
            if n.op.moves_no_data() || n.op.is_cache_view() {
                0
            } else {
                let v = &pg.values[n.output];
                v.shape.iter().product::<usize>() * v.dtype.size()
            }
        };
        let nodes = obs
            .events
            .iter()
            .map(|e| {
                let n = &pg.nodes[e.0];
                let before = match e.0 {
                    0 => 0,
                    i => mp.live_after.get(i - 1).copied().unwrap_or(0),
                };
                (
                    n.path.clone(),
                    n.op.class().into_owned(),
                    prism_core::cost::node_cost(pg, e.0, 4).flops,
                    (before + out_bytes(e.0)) as u64,
                    e.1 as u64,
                )
            })
            .collect();
        Ok(MemoryTrace {
            model: model.into(),
            size,
            nodes,
            predicted_peak_bytes: mp.peak_bytes as u64,
            predicted_peak_live_bytes: mp.peak_live_bytes as u64,
            measured_peak_live_bytes: obs.peak as u64,
            rss_growth_bytes: rss0.zip(rss1).map(|(a, b)| b.saturating_sub(a) as u64),
        })
    }
}

/// Records (node, live bytes) of one run.
#[derive(Default)]
struct NodeRecorder {
    events: Vec<(usize, usize)>,
    peak: usize,
}

impl prism_runtime::Observer for NodeRecorder {
    fn after_run(
        &mut self,
        _stage: &str,
        _run: usize,
        _graph: &prism_core::Graph,
        _started: Instant,
        events: &[prism_runtime::NodeEvent],
        stats: &prism_runtime::RunStats,
    ) {
        self.events = events.iter().map(|e| (e.node, e.live_bytes)).collect();
        self.peak = stats.peak_live_bytes;
    }
}

/// This CPU's model name (`/proc/cpuinfo`), or "unknown CPU".
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|x| x.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `p` is a folder, or a new one whose parent exists.
pub fn check_output_dir(p: &Path) -> Result<()> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::file(p, "exists and is not a folder")),
        Err(_) => {
            let parent = p
                .parent()
                .filter(|x| !x.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if parent.is_dir() {
                Ok(())
            } else {
                Err(Error::file(
                    p,
                    format!("parent folder {} does not exist", parent.display()),
                ))
            }
        }
    }
}
