//! The profiler's output is self-consistent, the trace holds every node once per run, and
//! the buffer plan predicts the executor's live set exactly.

use prism_analyze::hardware::builtin;
use prism_analyze::Profiler;
use prism_models::components::LoadOptions;
use prism_models::pipelines::sd::{GenerateRequest, StableDiffusion};
use prism_models::source::ModelSource;
use prism_runtime::{plan, Executor, KernelChoice};
use std::collections::{BTreeMap, BTreeSet};

fn request(steps: usize, size: usize) -> GenerateRequest {
    GenerateRequest {
        prompt: "a lighthouse".into(),
        negative_prompt: String::new(),
        steps,
        guidance: 7.5,
        scheduler: None,
        seed: 1,
        width: size,
        height: size,
        latents: None,
    }
}

fn tiny() -> ModelSource {
    ModelSource::parse(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/sd1_tiny"
    ))
    .unwrap()
}

#[test]
fn trace_has_every_node_once_per_run() {
    let exec = Executor::new(2).unwrap();
    let sd = StableDiffusion::load(&tiny(), &LoadOptions::default()).unwrap();
    let mut prof = Profiler::new(builtin("a100").unwrap(), 2, Default::default(), true);
    let req = request(3, 32);
    sd.generate(&exec, &req, &mut |_| {}, &mut prof).unwrap();
    let trace = prof.trace_json();
    // Round-trips as JSON, as Perfetto reads it.
    let trace: serde_json::Value = serde_json::from_str(&trace.to_string()).unwrap();
    let mut seen: BTreeMap<(String, u64), Vec<u64>> = BTreeMap::new();
    for e in trace["traceEvents"].as_array().unwrap() {
        if e["ph"] == "X" {
            assert!(e["dur"].as_f64().unwrap() >= 0.0);
            let a = &e["args"];
            seen.entry((
                a["stage"].as_str().unwrap().into(),
                a["run"].as_u64().unwrap(),
            ))
            .or_default()
            .push(a["node"].as_u64().unwrap());
        }
    }
    let runs: BTreeSet<(String, u64)> = seen.keys().cloned().collect();
    // PNDM (this model's scheduler) calls the UNet steps + 1 times.
    let unet_runs = sd.scheduler(None, 3).unwrap().timesteps().len() as u64;
    assert_eq!(unet_runs, 4);
    let mut want: BTreeSet<(String, u64)> =
        (0..unet_runs).map(|r| ("unet".to_string(), r)).collect();
    want.insert(("text_encoder".into(), 0));
    want.insert(("vae_decoder".into(), 0));
    assert_eq!(runs, want);
    for ((stage, run), mut nodes) in seen {
        let n = nodes.len();
        nodes.sort_unstable();
        nodes.dedup();
        assert_eq!(nodes.len(), n, "{stage} run {run}: a node appears twice");
    }
    // Every non-input node of the UNet graph appears in each run.
    // The executor runs the fused graph.
    let unet_graph = prism_models::diffusion::unet2d::build(&sd.unet.cfg, 2, 16, 16, 77).unwrap();
    let unet_nodes = KernelChoice::default().prepare(&unet_graph).nodes.len();
    let unet_inputs = 3;
    let report = prof.report("tiny", BTreeMap::new(), "naive", 5, 2);
    let u = report.stages.iter().find(|s| s.name == "unet").unwrap();
    assert_eq!(u.runs, 4);
    let calls: usize = u.layers.iter().map(|l| l.calls).sum();
    assert_eq!(calls, 4 * (unet_nodes - unet_inputs));
}

#[test]
fn category_times_add_up_to_stage_time() {
    // The SD 1.5 architecture at a small size: big enough that per-node bookkeeping is noise.
    let exec = Executor::new(2).unwrap();
    let sd = StableDiffusion::load(
        &ModelSource::parse("sd15").unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let mut prof = Profiler::new(builtin("a100").unwrap(), 2, Default::default(), false);
    sd.generate(&exec, &request(1, 128), &mut |_| {}, &mut prof)
        .unwrap();
    let report = prof.report("sd15", BTreeMap::new(), "naive", 5, 2);
    for s in &report.stages {
        let cat: f64 = s.categories.iter().map(|c| c.time_s).sum();
        let share: f64 = s.categories.iter().map(|c| c.share).sum();
        assert!(
            (share - 1.0).abs() < 1e-9,
            "{}: shares sum to {share}",
            s.name
        );
        assert!((cat - s.nodes_s).abs() <= 1e-9 * s.nodes_s.max(1.0));
        // Node times cover the stage's wall time but for a few percent of executor overhead.
        assert!(
            cat <= s.wall_s * 1.0001 && cat >= 0.95 * s.wall_s,
            "{}: nodes {cat} s of wall {} s",
            s.name,
            s.wall_s
        );
        let layer: f64 = s.layers.iter().map(|l| l.time_s).sum();
        assert!((layer - cat).abs() <= 1e-6 * cat.max(1.0));
    }
}

#[test]
fn buffer_plan_predicts_the_executors_live_set() {
    let exec = Executor::new(2).unwrap();
    let sd = StableDiffusion::load(&tiny(), &LoadOptions::default()).unwrap();
    let g = prism_models::diffusion::unet2d::build(&sd.unet.cfg, 2, 16, 16, 77).unwrap();
    let inputs = vec![
        (
            "sample".to_string(),
            prism_core::Tensor::zeros(&[2, 4, 16, 16]),
        ),
        (
            "timestep".to_string(),
            prism_core::Tensor::new(vec![2], vec![10.0, 10.0]).unwrap(),
        ),
        (
            "encoder_hidden_states".to_string(),
            prism_core::Tensor::zeros(&[2, 77, 32]),
        ),
    ];
    let (_, stats) = exec
        .run_observed(&g, &sd.unet.weights, inputs, &mut |_| {})
        .unwrap();
    let p = plan(&KernelChoice::default().prepare(&g), 2, &Default::default());
    assert_eq!(p.peak_live_bytes, stats.peak_live_bytes);
    assert!(p.peak_bytes >= p.peak_live_bytes);
}
